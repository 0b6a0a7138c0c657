// Where a Hub id's files sit in a local Hugging Face cache (HF_HUB_CACHE, HF_HOME, ~/.cache):
// models--org--name/snapshots/<revision>/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The hub folder of the HF cache, as huggingface_hub finds it: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub. */
export function hfHubCache(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(
    env.HF_HUB_CACHE ?? path.join(env.HF_HOME ?? path.join(os.homedir(), '.cache/huggingface'), 'hub'),
  );
}

export function hfCacheSnapshots(id: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const snaps = path.join(hfHubCache(env), `models--${id.replaceAll('/', '--')}`, 'snapshots');
  return existsSync(snaps) && statSync(snaps).isDirectory() ? readdirSync(snaps).map((s) => path.join(snaps, s)) : [];
}
