// The numpy reference forward (reference_forward.py) and the comparisons the conversion tests make
// against it: the engine's first-token log-probabilities beside the reference's, and a PEFT LoRA
// applied by the engine beside the reference of the checkpoint with that LoRA folded in.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { expect } from 'vitest';
import type { GenerateParams } from '../../src/engine/index.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { convertPeftAdapter } from '../../src/intake/peft.ts';
import { exactNumerics, loadEngine, loadReference, type Fixture } from '../helpers.ts';
import { type SyntheticModule, writeMergedCheckpoint, writePeft } from './peft-fixture.ts';

const script = path.join(path.dirname(new URL(import.meta.url).pathname), 'reference_forward.py');

export interface ForwardRequest {
  dir: string;
  prompts: number[][];
  /** 'ggml-f16': GELU as ggml's CPU backend computes it (see reference_forward.py). */
  gelu?: 'ggml-f16';
  /** Up to this many greedy tokens per prompt instead of log-probabilities. */
  greedy?: number;
}

export function numpyForward(req: ForwardRequest): { logprobs?: number[][]; greedy?: number[][] } {
  return JSON.parse(execFileSync('python3', [script], { input: JSON.stringify(req), maxBuffer: 64 << 20 }).toString());
}

export const numpyLogprobs = (dir: string, prompts: number[][], gelu?: 'ggml-f16') =>
  numpyForward({ dir, prompts, ...(gelu ? { gelu } : {}) }).logprobs!;

/** The first `n` base-mode prompts of a fixture's reference, as ids. */
export const basePrompts = (fx: Fixture, n: number) =>
  loadReference(fx)
    .cases.filter((c) => c.mode === 'base')
    .slice(0, n)
    .map((c) => c.prompt_ids);

/**
 * The engine's top-20 first-token log-probabilities each within `tolerance` of `want` (and its top
 * token the reference's best). Returns the largest gap, and how far `want` is from `other` on those
 * tokens (0 without one): a reference that must differ, so that the test can fail.
 */
export async function expectFirstTokens(
  engine: {
    generate: (
      ids: number[],
      p: GenerateParams,
    ) => { result: Promise<{ logprobs?: { top: { token: number; logprob: number }[] }[] }> };
  },
  prompts: number[][],
  want: number[][],
  tolerance: number,
  o: { params?: GenerateParams; other?: number[][] } = {},
): Promise<{ worst: number; moved: number }> {
  let worst = 0;
  let moved = 0;
  for (const [i, ids] of prompts.entries()) {
    const r = await engine.generate(ids, { greedy: true, maxTokens: 1, logprobs: 20, ...o.params }).result;
    const top = r.logprobs![0]!.top;
    expect(top[0]!.token, `prompt ${i}`).toBe(want[i]!.indexOf(Math.max(...want[i]!)));
    for (const t of top) {
      const gap = Math.abs(t.logprob - want[i]![t.token]!);
      expect(gap, `prompt ${i} token ${t.token}`).toBeLessThan(tolerance);
      worst = Math.max(worst, gap);
      if (o.other) moved = Math.max(moved, Math.abs(want[i]![t.token]! - o.other[i]![t.token]!));
    }
  }
  return { worst, moved };
}

/**
 * A PEFT LoRA (random A and B of `modules`, r 4, alpha 0.2: a modest change) converted for the
 * checkpoint `dir` and applied by the engine, held within `tolerance` of the reference with the LoRA
 * folded into the weights, and more than 1e-2 from the plain checkpoint.
 */
export async function expectLoraAsMerged(o: {
  dir: string;
  fixture: Fixture;
  work: string;
  modules: (r: number) => SyntheticModule[];
  targets: string[];
  tolerance: number;
  gelu?: 'ggml-f16';
}): Promise<void> {
  const r = 4;
  const alpha = 0.2;
  const gguf = path.join(o.work, 'base.gguf');
  await convertHfModel({ dir: o.dir, out: gguf });
  const peft = path.join(o.work, 'peft');
  const lora = writePeft(peft, { r, lora_alpha: alpha, target_modules: o.targets }, o.modules(r));
  const merged = path.join(o.work, 'merged');
  await writeMergedCheckpoint(o.dir, merged, lora, alpha / r);
  const adapter = path.join(o.work, 'lora.gguf');
  await convertPeftAdapter({ peftDir: peft, base: o.dir, out: adapter });
  const prompts = basePrompts(o.fixture, 2);
  const want = numpyLogprobs(merged, prompts, o.gelu);
  const plain = numpyLogprobs(o.dir, prompts, o.gelu);
  const engine = await loadEngine(o.fixture, { modelPath: gguf, ...exactNumerics });
  try {
    await engine.loadAdapter('a', adapter);
    const { moved } = await expectFirstTokens(engine, prompts, want, o.tolerance, {
      params: { adapters: [{ name: 'a' }] },
      other: plain,
    });
    expect(moved).toBeGreaterThan(1e-2); // the adapter changes the numbers: the test can fail
  } finally {
    await engine.close();
  }
}
