// A base model named by its Hub id and not on disk (a CML replica has no HF cache) is fetched from
// the Hub into the HF cache layout (models--org--name/blobs + snapshots/<commit>/), with
// @huggingface/hub: only what serving needs (config, tokenizer, safetensors weights), never the
// pickles or the duplicate "original/" checkpoints many repos also carry.
import path from 'node:path';
import { IntakeError } from './errors.ts';

export interface HubOptions {
  /** HF_ENDPOINT: the Hub (or a mirror) to fetch from. */
  endpoint: string;
  /** HF_TOKEN, for gated and private repos. */
  token?: string;
  /** The HF cache's hub folder the files land in (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub). */
  cacheDir: string;
  revision?: string;
  /** Bytes of weights and files fetched so far, of the total. */
  onProgress?: (done: number, total: number) => void;
}

const NEEDED =
  /^(config\.json|generation_config\.json|tokenizer\.json|tokenizer\.model|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|model\.safetensors\.index\.json|[^/]+\.safetensors)$/;

export function hubEnv(env: NodeJS.ProcessEnv = process.env): { endpoint: string; token?: string; offline: boolean } {
  const token = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  return {
    endpoint: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    ...(token ? { token } : {}),
    offline: /^(1|true|yes|on)$/i.test(env.HF_HUB_OFFLINE ?? ''),
  };
}

/** Fetches what serving `id` needs; returns the snapshot folder holding it. */
export async function downloadHfModel(id: string, o: HubOptions): Promise<string> {
  // Loaded only for a fetch: the client is large, and most starts find the model on disk.
  const { downloadFileToCacheDir, listFiles } = await import('@huggingface/hub');
  const common = {
    repo: { type: 'model' as const, name: id },
    hubUrl: o.endpoint,
    ...(o.token ? { accessToken: o.token } : {}),
    revision: o.revision ?? 'main',
  };
  const files: { path: string; size: number }[] = [];
  try {
    for await (const f of listFiles({ ...common, recursive: true })) {
      if (f.type === 'file' && NEEDED.test(f.path)) files.push({ path: f.path, size: f.lfs?.size ?? f.size });
    }
  } catch (e) {
    throw new IntakeError(
      `cannot list '${id}' on ${o.endpoint}: ${(e as Error).message}${o.token ? '' : ' (a gated or private repo needs HF_TOKEN)'}`,
    );
  }
  if (!files.some((f) => f.path === 'config.json'))
    throw new IntakeError(`'${id}' on ${o.endpoint} has no config.json: not a transformers model`);
  if (!files.some((f) => f.path.endsWith('.safetensors'))) {
    throw new IntakeError(`'${id}' on ${o.endpoint} has no safetensors weights (pickled .bin files are never loaded)`);
  }
  const total = files.reduce((s, f) => s + f.size, 0);
  let done = 0;
  // Counts the bytes of file bodies as they stream into the cache (the probes' one byte aside).
  const counting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (res.status !== 200 || !res.body || !o.onProgress) return res;
    const counted = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          done += chunk.byteLength;
          o.onProgress!(Math.min(done, total), total);
          ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  let snapshot = '';
  for (const f of files) {
    try {
      const pointer = await downloadFileToCacheDir({ ...common, path: f.path, cacheDir: o.cacheDir, fetch: counting });
      if (f.path === 'config.json') snapshot = path.dirname(pointer);
    } catch (e) {
      throw new IntakeError(`cannot download ${f.path} of '${id}' from ${o.endpoint}: ${(e as Error).message}`);
    }
  }
  return snapshot;
}
