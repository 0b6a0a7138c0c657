// Every temporary file of a test run goes into one folder, removed when the run ends: many tests
// make temp folders (copies of models, caches, fake Hubs) and not all of them remove theirs, which
// left ~8 GB in this VM's /tmp over a few dozen runs. os.tmpdir() reads TMPDIR, and the test
// workers and every process they start inherit it.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-test-run-'));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return () => {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    rmSync(dir, { recursive: true, force: true });
  };
}
