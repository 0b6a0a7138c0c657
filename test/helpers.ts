// Shared by the tests: the project's copies of the fixtures and small helpers over Generation.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, type EngineOptions, type GenerateParams, type Generation } from '../src/engine/index.ts';

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
