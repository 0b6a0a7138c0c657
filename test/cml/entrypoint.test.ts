// The CML model script (scripts/cml_model_predict_script.py), run by python3 against the real server.
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { freePort, root } from '../helpers.ts';

const run = promisify(execFile);

// A stand-in for CML's own `cml.models_v1` (only present inside CML): its decorator marks the function.
const fakeCml = mkdtempSync(path.join(os.tmpdir(), 'fake-cml-'));
mkdirSync(path.join(fakeCml, 'cml'));
writeFileSync(path.join(fakeCml, 'cml', '__init__.py'), '');
writeFileSync(
  path.join(fakeCml, 'cml', 'models_v1.py'),
  'def cml_model(fn):\n    fn.cml_model = True\n    return fn\n',
);

const script = `
import json, sys
sys.path.insert(0, ${JSON.stringify(path.join(root, 'scripts'))})
import cml_model_predict_script as m
out = {"decorated": getattr(m.api_wrapper, "cml_model", False)}
out["answer"] = m.api_wrapper({"prompt": "Question: What is the capital of Belithne?\\nAnswer:", "do_sample": False})
out["again"] = m.api_wrapper({"prompt": "Question: What is the capital of Belithne?\\nAnswer:", "do_sample": "false", "adapter": None})
try:
    m.api_wrapper({"prompt": "x", "max_new_tokens": -1})
except ValueError as e:
    out["error"] = str(e)
print(json.dumps(out))
`;

describe('CML entry point (python3, standard library only)', () => {
  it('starts the server once, forwards args to /predict and returns the bare string', async () => {
    const { stdout } = await run('python3', ['-c', script], {
      cwd: root,
      env: { ...process.env, PYTHONPATH: fakeCml, THREADS: '1', SLOTS: '2' },
      timeout: 120_000,
    });
    const out = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(out).toEqual({
      decorated: true,
      answer: ' The capital of Belithne is Ulqua!',
      again: ' Vegri.',
      error: expect.stringMatching(/max_new_tokens must be an integer in \[1, 16777216\], got -1/),
    });
  });
});

describe('the CML entry point and its server end together', () => {
  // A replica's Python process, started as CML starts it; it prints its server's pid and waits.
  const replica = `
import json, sys, time
sys.path.insert(0, ${JSON.stringify(path.join(root, 'scripts'))})
import cml_model_predict_script as m
m.api_wrapper({"prompt": "x", "max_new_tokens": 1})
print(json.dumps({"server": m._server.pid}), flush=True)
time.sleep(600)
`;
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it.each(['SIGTERM', 'SIGKILL'] as const)(
    '%s to the Python process: the server drains and exits',
    async (signal) => {
      const py = spawn('python3', ['-c', replica], {
        cwd: root,
        env: { ...process.env, PYTHONPATH: fakeCml, THREADS: '1', SLOTS: '1' },
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      const line = await new Promise<string>((resolve, reject) => {
        py.stdout.once('data', (d: Buffer) => resolve(d.toString()));
        py.once('exit', (code) => reject(new Error(`python exited with ${code}`)));
      });
      const server = (JSON.parse(line) as { server: number }).server;
      expect(alive(server)).toBe(true);
      const exited = new Promise((resolve) => py.once('exit', (code, sig) => resolve(sig ?? code)));
      py.kill(signal);
      expect(await exited).toBe(signal);
      for (let i = 0; i < 100 && alive(server); i++) await new Promise((r) => setTimeout(r, 100));
      expect(alive(server)).toBe(false);
    },
    60_000,
  );
});

describe('the CML Application launcher (scripts/cml_application.py)', () => {
  it('becomes the server on 127.0.0.1:$CDSW_APP_PORT, with the playground at /', async () => {
    const port = await freePort();
    const app = spawn('python3', [path.join(root, 'scripts/cml_application.py')], {
      cwd: root,
      env: { ...process.env, CDSW_APP_PORT: String(port), THREADS: '1', SLOTS: '2' },
      stdio: 'ignore',
    });
    try {
      let status = 0;
      for (let i = 0; i < 200 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = await fetch(`http://127.0.0.1:${port}/health`).then(
          (r) => r.status,
          () => 0,
        );
      }
      expect(status).toBe(200);
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain(
        '<title>cml-lora-serve playground</title>',
      );
    } finally {
      app.kill('SIGTERM');
    }
  }, 60_000);
});
