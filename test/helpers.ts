// Shared by the tests: the project's copies of the fixtures and small helpers over Generation.
import { copyFileSync, openSync, readFileSync, readSync, closeSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, type EngineOptions, type GenerateParams, type Generation } from '../src/engine/index.ts';
import { readGgufHeader } from '../src/intake/gguf-header.ts';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const modelDir = (name: Fixture) => path.join(root, 'models', name);

export interface ReferenceCase {
  set: 'train' | 'heldout';
  mode: 'base' | 'adapter' | 'adapter@0.5';
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  greedy_text: string;
  first_logits: number[];
}

export interface Reference {
  vocab_size: number;
  bos: number | null;
  eos: number;
  lora: { r: number; alpha: number; use_rslora?: boolean };
  cases: ReferenceCase[];
}

export function loadReference(name: 'tiny-qa' | 'tiny-qwen2'): Reference {
  return JSON.parse(readFileSync(path.join(modelDir(name), 'reference.json'), 'utf8')) as Reference;
}

/** The backend the engine tests run on: CPU (what CI has), or CML_TEST_BACKEND=cuda on a GPU machine. */
export const testBackend = (process.env.CML_TEST_BACKEND ?? 'cpu') as 'cpu' | 'cuda' | 'auto';

/**
 * Exact numerics: an f32 KV cache and no flash attention (both round through f16), and on a GPU
 * at most 3 rows per step (batchSize 3, with at most 3 slots): ggml-cuda multiplies f32 matrices
 * with its fp32 vector kernel only up to 3 columns on Ampere and later; from 4 it takes TF32
 * tensor-core kernels (about 1e-3 relative, out of reach of NVIDIA_TF32_OVERRIDE, which only
 * governs cuBLAS), and from 17 cuBLAS.
 */
export const exactNumerics: Partial<EngineOptions> = {
  kvCacheType: 'f32',
  flashAttention: 'off',
  ...(testBackend === 'cpu' ? {} : { batchSize: 3 }),
};

/**
 * For tests that hold runs sharing a batch to what each gives alone. ggml's CPU kernels compute a
 * row the same in any batch; CUDA's are chosen by the batch's size, so there a near-tie can go
 * either way. On a GPU these tests therefore run with exactNumerics and 3 slots, so that every
 * step takes the same kernels as a run alone. Spread it after a test's own slots.
 */
export const rowsAsAlone: Partial<EngineOptions> = testBackend === 'cpu' ? {} : { ...exactNumerics, slots: 3 };

/** One llama.cpp thread: CI has 2 cores and runs two test files at a time. */
export function loadEngine(name: 'tiny-qa' | 'tiny-qwen2', opts: Partial<EngineOptions> = {}): Promise<Engine> {
  return Engine.load({
    modelPath: path.join(modelDir(name), 'base-f32.gguf'),
    backend: testBackend,
    threads: 1,
    contextSize: 256,
    ...opts,
  });
}

export async function chunksOf(g: Generation): Promise<string[]> {
  const out: string[] = [];
  for await (const c of g) out.push(c.text);
  return out;
}

export function logSoftmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const z = max + Math.log(logits.reduce((s, x) => s + Math.exp(x - max), 0));
  return logits.map((x) => x - z);
}

export type Fixture = 'tiny-qa' | 'tiny-qwen2';

export function adaptersFor(c: ReferenceCase, unit: number): GenerateParams['adapters'] {
  if (c.mode === 'base') return [];
  return [{ name: 'lora', scale: (c.mode === 'adapter' ? 1 : 0.5) * unit }];
}

/** One reference case, greedy, with the top-20 log-probabilities of its first step. */
export async function runCase(engine: Engine, c: ReferenceCase, eos: number, unit: number) {
  const g = engine.generate(c.prompt, {
    greedy: true,
    maxTokens: c.greedy_ids.length,
    adapters: adaptersFor(c, unit),
    logprobs: 20,
  });
  let first: { token: number; logprob: number }[] | undefined;
  for await (const chunk of g) first ??= chunk.top;
  const r = await g.result;
  first ??= r.logprobs?.[0]?.top; // the first token may have been EOS
  const ids = r.stopReason === 'eos' ? [...r.tokens, eos] : r.tokens;
  return { ids, first, result: r };
}

/**
 * Runs reference cases: how many give the reference's greedy ids exactly, the misses, and the worst
 * gap between our first-step log-probabilities and the reference's (log-softmax of its logits) over
 * its top-5 tokens. Each of those must be in our top-20.
 */
export async function againstReference(engine: Engine, cases: ReferenceCase[], eos: number, unit: number) {
  let exact = 0;
  let worst = 0;
  const misses: string[] = [];
  for (const c of cases) {
    const { ids, first } = await runCase(engine, c, eos, unit);
    if (JSON.stringify(ids) === JSON.stringify(c.greedy_ids)) exact++;
    else misses.push(`${JSON.stringify(c.prompt)}: got ${ids} want ${c.greedy_ids}`);
    const lsm = logSoftmax(c.first_logits);
    for (const { token, lp } of lsm
      .map((lp, token) => ({ token, lp }))
      .sort((a, b) => b.lp - a.lp)
      .slice(0, 5)) {
      const ours = first?.find((t) => t.token === token);
      if (!ours) throw new Error(`token ${token} is not in our top-20 for ${JSON.stringify(c.prompt)}`);
      worst = Math.max(worst, Math.abs(ours.logprob - lp));
    }
  }
  const summary = `${exact}/${cases.length} greedy exact, worst first-step log-probability gap ${worst.toExponential(2)}`;
  return { exact, worst, misses, summary };
}

/**
 * A copy of a GGUF file whose F32 tensors `patch` may change in place (it returns true when it did):
 * the header stays as it was, so llama.cpp loads the copy as it loads the original.
 */
export async function patchGguf(
  src: string,
  out: string,
  patch: (name: string, values: Float32Array) => boolean,
): Promise<string> {
  const { tensors } = await readGgufHeader(src);
  copyFileSync(src, out);
  const fd = openSync(out, 'r+');
  try {
    for (const t of tensors) {
      if (t.type !== 0) continue; // F32 only
      const count = t.ne.reduce((a, b) => a * b, 1);
      const buf = Buffer.alloc(count * 4);
      readSync(fd, buf, 0, buf.length, t.offset);
      const values = new Float32Array(buf.buffer, buf.byteOffset, count);
      if (patch(t.name, values)) writeSync(fd, buf, 0, buf.length, t.offset);
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/**
 * Runs fn with CACHE_DIR (where converted and merged models go) set to cacheDir, a path in dir, then
 * restores it and removes dir.
 */
export async function withCacheDir<T>(dir: string, fn: () => Promise<T>, cacheDir = dir): Promise<T> {
  const saved = process.env.CACHE_DIR;
  process.env.CACHE_DIR = cacheDir;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.CACHE_DIR;
    else process.env.CACHE_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * tiny-qa's real adapter with every lora_b scaled by 1e20: finite weights whose products overflow
 * float32, as an extreme adapter_scale makes them (NaN/inf logits, and poisoned KV cells).
 */
export function writePoisonAdapter(out: string): Promise<string> {
  return patchGguf(path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'), out, (name, v) => {
    if (!name.endsWith('.lora_b')) return false;
    for (let i = 0; i < v.length; i++) v[i]! *= 1e20;
    return true;
  });
}

/** A loopback port nothing listens on (now). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
