// Turns Fine Tuning Studio's model and adapter locations into GGUF files, saying which rule won and,
// when none did, every place that was tried. No network: a Hub id must already be on disk.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { cacheDir, cached, inputKey } from '../intake/cache.ts';
import { ggufKind, readGgufHeader } from '../intake/gguf-header.ts';
import { convertHfModel } from '../intake/hf-model.ts';
import { hfCacheSnapshots, hfHubCache } from '../intake/hf-cache.ts';
import { downloadHfModel, hubEnv } from '../intake/hub-download.ts';
import { convertPeftAdapter } from '../intake/peft.ts';

export class LocateError extends Error {}

export interface Located {
  path: string;
  /** Which rule matched, for the start-up log. */
  rule: string;
  /** The Hugging Face checkpoint directory the GGUF was converted from (its tokenizer.json serves prompts). */
  checkpoint?: string;
}

const isFile = (p: string) => existsSync(p) && statSync(p).isFile();
const isDir = (p: string) => existsSync(p) && statSync(p).isDirectory();
const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/;

/** The GGUF files of one kind in dir: a single file, or the first part of one split set. */
async function ggufIn(dir: string, kind: 'model' | 'adapter'): Promise<string | string[]> {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.gguf'))
    .sort();
  const matching: string[] = [];
  for (const f of files) {
    const split = SPLIT.exec(f);
    if (split && split[1] !== '00001') continue; // llama.cpp loads the rest of a split set from part 1
    try {
      if (ggufKind(await readGgufHeader(path.join(dir, f))) === kind) matching.push(path.join(dir, f));
    } catch {
      // not a readable GGUF: not a candidate
    }
  }
  return matching.length === 1 ? matching[0]! : matching;
}

async function fromDir(dir: string, kind: 'model' | 'adapter', rule: string, tried: string[]): Promise<Located | null> {
  if (!isDir(dir)) {
    tried.push(`${dir} (no such directory)`);
    return null;
  }
  const found = await ggufIn(dir, kind);
  if (typeof found === 'string') return { path: found, rule };
  if (found.length > 1) {
    throw new LocateError(
      `${dir} holds several ${kind} GGUF files (${found.map((f) => path.basename(f)).join(', ')}); name one`,
    );
  }
  tried.push(`${dir} (no ${kind} GGUF inside)`);
  return null;
}

/** A Hugging Face checkpoint becomes a GGUF in the cache once; later starts reuse it. */
async function converted(dir: string, what: string, cache: string): Promise<Located> {
  const key = inputKey([dir], { outtype: 'auto', converter: 1 });
  const made = await cached(cache, `model-${key}.gguf`, (out) => convertHfModel({ dir, out }));
  return {
    path: made.path,
    rule: `${what}, ${made.reused ? 'reused from' : 'converted into'} the cache`,
    checkpoint: dir,
  };
}

/**
 * FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME → a GGUF model file. Relative paths are the project's:
 * they resolve against `projectRoot` (see ServeConfig.projectRoot), never against this checkout.
 */
export async function locateBaseModel(
  value: string,
  modelsDir: string,
  cache = cacheDir(),
  projectRoot = process.cwd(),
  onDownload?: (done: number, total: number) => void,
): Promise<Located> {
  const tried: string[] = [];
  const p = path.resolve(projectRoot, value);
  if (value.endsWith('.gguf')) {
    if (isFile(p)) return { path: p, rule: 'a .gguf file path' };
    tried.push(`${p} (no such file)`);
  } else if (isDir(p)) {
    const hit = await fromDir(p, 'model', 'a directory holding one GGUF', tried);
    if (hit) return hit;
    if (isFile(path.join(p, 'config.json'))) return converted(p, 'a Hugging Face checkpoint directory', cache);
  } else {
    tried.push(`${p} (no such file or directory)`);
  }
  if (!path.isAbsolute(value)) {
    const hit = await fromDir(path.join(modelsDir, value), 'model', `MODELS_DIR/${value}`, tried);
    if (hit) return hit;
    const snaps = hfCacheSnapshots(value);
    for (const s of snaps) {
      const inSnap = await fromDir(s, 'model', 'a Hugging Face cache snapshot holding a GGUF', tried);
      if (inSnap) return inSnap;
      if (isFile(path.join(s, 'config.json'))) return converted(s, 'a Hugging Face cache snapshot', cache);
    }
    if (snaps.length === 0) tried.push(`the Hugging Face cache ${hfHubCache()} (no snapshot of ${value})`);
    // org/name, not a file name: a missing local models/x.gguf must not become a Hub request.
    if (HUB_ID.test(value) && !value.endsWith('.gguf')) return fromHub(value, cache, tried, onDownload);
  }
  throw new LocateError(`base model '${value}' not found; tried: ${tried.join('; ')}`);
}

const HUB_ID = /^[\w.-]+\/[\w.-]+$/;

/** A Hub id found nowhere on disk: fetched into the HF cache (unless HF_HUB_OFFLINE), then converted. */
async function fromHub(
  id: string,
  cache: string,
  tried: string[],
  onDownload?: (done: number, total: number) => void,
): Promise<Located> {
  const hub = hubEnv();
  if (hub.offline) {
    throw new LocateError(
      `base model '${id}' not found, and HF_HUB_OFFLINE=1 forbids fetching it from the Hub; tried: ${tried.join('; ')}`,
    );
  }
  let snapshot: string;
  try {
    snapshot = await downloadHfModel(id, {
      endpoint: hub.endpoint,
      ...(hub.token ? { token: hub.token } : {}),
      cacheDir: hfHubCache(),
      ...(onDownload ? { onProgress: onDownload } : {}),
    });
  } catch (e) {
    throw new LocateError(
      `base model '${id}' not found on disk (tried: ${tried.join('; ')}), and fetching it failed: ${(e as Error).message}`,
    );
  }
  return converted(snapshot, `fetched from ${hub.endpoint} into the Hugging Face cache`, cache);
}

/** FINE_TUNING_STUDIO_ADAPTER_LOCATION → a GGUF LoRA file; a PEFT directory is converted (cached). */
export async function locateAdapter(
  value: string,
  baseGguf?: string,
  cache = cacheDir(),
  projectRoot = process.cwd(),
): Promise<Located> {
  const p = path.resolve(projectRoot, value);
  if (isFile(p)) {
    if (!value.endsWith('.gguf')) throw new LocateError(`adapter ${p} is not a .gguf file`);
    return { path: p, rule: 'a GGUF LoRA file' };
  }
  if (isDir(p)) {
    const tried: string[] = [];
    const hit = await fromDir(p, 'adapter', 'a directory holding one GGUF LoRA', tried);
    if (hit) return hit;
    if (isFile(path.join(p, 'adapter_config.json'))) {
      if (!baseGguf) throw new LocateError(`${p} is a PEFT adapter directory; converting it needs the base model`);
      const key = inputKey([p, baseGguf], { outtype: 'f32', converter: 1 });
      const made = await cached(cache, `adapter-${key}.gguf`, (out) =>
        convertPeftAdapter({ peftDir: p, base: baseGguf, out }),
      );
      return {
        path: made.path,
        rule: `a PEFT adapter directory, ${made.reused ? 'reused from' : 'converted into'} the cache`,
      };
    }
    throw new LocateError(`adapter directory ${p} holds no GGUF LoRA and no PEFT adapter`);
  }
  if (/^[\w.-]+\/[\w.-]+$/.test(value)) {
    throw new LocateError(
      `adapter '${value}' is not on disk and looks like a Hugging Face Hub id: download it first ` +
        '(this server, like the studio, serves adapters stored with the project)',
    );
  }
  throw new LocateError(`adapter location ${p} does not exist`);
}
