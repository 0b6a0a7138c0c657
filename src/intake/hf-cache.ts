// Where a Hub id's files sit in a local Hugging Face cache (HF_HUB_CACHE, HF_HOME, ~/.cache):
// models--org--name/snapshots/<revision>/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function hfCacheSnapshots(id: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const hub = env.HF_HUB_CACHE ?? path.join(env.HF_HOME ?? path.join(os.homedir(), '.cache/huggingface'), 'hub');
  const snaps = path.join(hub, `models--${id.replaceAll('/', '--')}`, 'snapshots');
  return existsSync(snaps) && statSync(snaps).isDirectory() ? readdirSync(snaps).map((s) => path.join(snaps, s)) : [];
}
