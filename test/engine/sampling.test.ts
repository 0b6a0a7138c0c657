// What each sampling parameter guarantees, checked against the model's own distribution (the
// top-20 log-probabilities of every step) on the tiny-qa fixture: top-k, top-p and min-p keep the
// draw inside their sets, penalties and bias move the tokens they name, and nothing else changes.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticModel } from '../../scripts/bench/synth.ts';
import { Engine, type GenerateParams, type GenerationResult } from '../../src/engine/index.ts';
import { loadEngine, loadReference, rowsAsAlone, testBackend } from '../helpers.ts';

const prompts = [...new Set(loadReference('tiny-qa').cases.map((c) => c.prompt))].slice(0, 4);

/**
 * Each step as the sampler saw it: ignoreEos masks the end-of-sequence token after the
 * log-probabilities are taken, so it leaves the top list and the rest renormalizes.
 */
function steps(r: GenerationResult, eos: number) {
  return r.logprobs!.map((l) => {
    const masked = l.top.filter((t) => t.token === eos).reduce((s, t) => s + Math.exp(t.logprob), 0);
    const shift = Math.log1p(-Math.min(masked, 1 - 1e-12));
    const top = l.top.filter((t) => t.token !== eos).map((t) => ({ token: t.token, logprob: t.logprob - shift }));
    return { chosen: l.token, logprob: l.logprob - shift, top };
  });
}

describe('sampling', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qa', { slots: 8, samplingThreads: 2, ...rowsAsAlone });
  });
  afterAll(() => engine?.close());

  const run = (prompt: string, p: GenerateParams) =>
    engine.generate(prompt, { maxTokens: 30, ignoreEos: true, logprobs: 20, ...p }).result;

  it('top-k 1 is greedy at any temperature', async () => {
    for (const prompt of prompts) {
      const greedy = await run(prompt, { greedy: true });
      const k1 = await run(prompt, { temperature: 1.7, topK: 1, seed: 3 });
      expect(k1.tokens).toEqual(greedy.tokens);
    }
  });

  it('top-k draws only among the k most likely tokens, and not always the first', async () => {
    let offTop = 0;
    for (const [i, prompt] of prompts.entries()) {
      const r = await run(prompt, { temperature: 3, topK: 5, seed: 11 + i });
      for (const s of steps(r, engine.model.eos)) {
        const rank = s.top.findIndex((t) => t.token === s.chosen);
        expect(rank).toBeGreaterThanOrEqual(0);
        expect(rank).toBeLessThan(5);
        if (rank > 0) offTop++;
      }
    }
    expect(offTop).toBeGreaterThan(10);
  });

  it('top-p over the whole vocabulary keeps the draw in the nucleus', async () => {
    for (const [i, prompt] of prompts.entries()) {
      const r = await run(prompt, { temperature: 1, topK: 0, topP: 0.3, seed: 5 + i });
      for (const s of steps(r, engine.model.eos)) {
        const rank = s.top.findIndex((t) => t.token === s.chosen);
        expect(rank).toBeGreaterThanOrEqual(0);
        const before = s.top.slice(0, rank).reduce((sum, t) => sum + Math.exp(t.logprob), 0);
        expect(before).toBeLessThan(0.3 + 1e-4);
      }
    }
  });

  it('min-p keeps the draw within min_p of the most likely token', async () => {
    for (const [i, prompt] of prompts.entries()) {
      const r = await run(prompt, { temperature: 1, topK: 0, minP: 0.4, seed: 21 + i });
      for (const s of steps(r, engine.model.eos))
        expect(s.logprob).toBeGreaterThanOrEqual(s.top[0]!.logprob + Math.log(0.4) - 1e-4);
    }
  });

  it('a strong repetition penalty never repeats a prompt or generated token', async () => {
    for (const prompt of prompts) {
      const r = await run(prompt, { greedy: true, repetitionPenalty: 1000 });
      const seen = new Set(engine.tokenize(prompt));
      for (const t of r.tokens) {
        expect(seen.has(t)).toBe(false);
        seen.add(t);
      }
    }
  });

  it('logit bias moves the tokens it names, on top of the penalties', async () => {
    const [a, b] = [300, 350]; // ordinary SentencePiece pieces (the byte tokens are 3-258)
    const r = await run(prompts[0]!, {
      greedy: true,
      maxTokens: 6,
      logitBias: { [a]: 100, [b]: 90 },
      repetitionPenalty: 1000,
    });
    // a wins once; the penalty then sinks it below b, and b below everything else after its turn.
    expect(r.tokens.slice(0, 2)).toEqual([a, b]);
    expect(r.tokens.slice(2)).not.toContain(a);
    expect(r.tokens.slice(2)).not.toContain(b);
  });

  it('the same seed gives the same draw, whatever else is batched with it', async () => {
    const p: GenerateParams = {
      temperature: 1.2,
      topK: 0,
      topP: 0.9,
      minP: 0.02,
      frequencyPenalty: 0.5,
      presencePenalty: 0.3,
    };
    const alone = await run(prompts[1]!, { ...p, seed: 42 });
    const batch = await Promise.all(
      prompts.flatMap((q) => [run(q, { ...p, seed: 42 }), run(prompts[1]!, { ...p, seed: 42 })]),
    );
    for (const [i, r] of batch.entries()) if (i % 2 === 1) expect(r.tokens).toEqual(alone.tokens);
  });
});

describe('sampling many streams side by side', () => {
  // The fixtures' vocabularies (448 and 600 tokens) are too small for the scheduler to hand a step's
  // sampling to its pool; 16 streams of a synthetic model with llama.cpp's 32 000-token vocabulary
  // are not (the pool takes steps from 12 such rows).
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-sampling-'));
  const modelPath = path.join(dir, 'tiny-32k.gguf');
  const load = (samplingThreads: number) =>
    Engine.load({
      modelPath,
      backend: testBackend,
      threads: 1,
      samplingThreads,
      slots: 16,
      contextSize: 128,
      ...rowsAsAlone,
    });
  beforeAll(async () => {
    await writeSyntheticModel({
      shape: { hidden: 128, layers: 2, ffn: 256, heads: 4, kvHeads: 2 },
      type: 'q8_0',
      out: modelPath,
    });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const mixes: GenerateParams[] = [
    { greedy: true },
    { temperature: 0.8, topK: 50, topP: 1, repetitionPenalty: 1.1, seed: 1 },
    { temperature: 1.2, topK: 0, topP: 0.9, seed: 2 },
    { temperature: 1, topK: 10, minP: 0.05, presencePenalty: 0.5, frequencyPenalty: 0.3, seed: 3 },
    { greedy: true, repetitionPenalty: 1.3, logitBias: { 29900: 2 } },
    { temperature: 0.7, topK: 20, logitBias: { 100: 1, 200: -1 }, seed: 4 },
    { temperature: 2, topK: 3, repetitionPenalty: 0.9, seed: 5 },
    { temperature: 0.8, topK: 50, topP: 1, repetitionPenalty: 1.1, seed: 6, logprobs: 3 },
  ];
  const requests = [...mixes, ...mixes].map((p, i) => ({
    prompt: `Stream ${i}: the quick brown fox`,
    params: { ...p, maxTokens: 24, ignoreEos: true },
  }));

  it('sixteen streams sampled on two threads give what each gives alone on one', async () => {
    const one = await load(1);
    const alone = [];
    for (const r of requests) alone.push(await one.generate(r.prompt, r.params).result);
    await one.close();
    const two = await load(2);
    const together = await Promise.all(requests.map((r) => two.generate(r.prompt, r.params).result));
    await two.close();
    expect(together.map((r) => r.tokens)).toEqual(alone.map((r) => r.tokens));
    expect(together[15]!.logprobs).toEqual(alone[15]!.logprobs);
  });
});
