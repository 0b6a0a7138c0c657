// A slot keeps its KV cells after a request: a next prompt that starts the same way (the same
// adapters) prefills only the rest, and generates exactly what it would from scratch.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, GenerateParams } from '../../src/engine/index.ts';
import { loadEngine, loadReference, modelDir } from '../helpers.ts';

const ref = loadReference('tiny-qa');
const prompts = [...new Set(ref.cases.map((c) => c.prompt))].slice(0, 6);
const greedy: GenerateParams = { greedy: true, maxTokens: 12, ignoreEos: true };
const adapter = `${modelDir('tiny-qa')}/adapter-f32.gguf`;

describe('prompt cache', () => {
  let cached: Engine;
  let fresh: Engine;
  beforeAll(async () => {
    cached = await loadEngine('tiny-qa', { slots: 1 });
    fresh = await loadEngine('tiny-qa', { slots: 1, promptCache: false });
    for (const e of [cached, fresh]) await e.loadAdapter('qa', adapter);
  });
  afterAll(async () => {
    await cached?.close();
    await fresh?.close();
  });

  const common = (a: number[], b: number[]) => {
    let n = 0;
    while (n < a.length && n < b.length && a[n] === b[n]) n++;
    return n;
  };

  it('the same prompt again prefills only its last token, and generates the same', async () => {
    const first = await cached.generate(prompts[0]!, greedy).result;
    const again = await cached.generate(prompts[0]!, greedy).result;
    expect(again.usage.cachedPromptTokens).toBe(first.usage.promptTokens - 1);
    expect(again.tokens).toEqual(first.tokens);
  });

  it('a prompt sharing a start reuses exactly that start; outputs equal a cache-less engine', async () => {
    let previous = cached.tokenize(prompts[0]!);
    let reused = 0;
    for (const p of prompts.slice(1)) {
      const ids = cached.tokenize(p);
      const r = await cached.generate(p, greedy).result;
      // The cells hold the previous prompt and all but the last of its generated tokens.
      const held = [
        ...previous,
        ...(await fresh.generate(previous, { ...greedy, addSpecial: false }).result).tokens.slice(0, -1),
      ];
      expect(r.usage.cachedPromptTokens).toBe(Math.min(common(held, ids), ids.length - 1));
      reused += r.usage.cachedPromptTokens;
      expect(r.tokens).toEqual((await fresh.generate(p, greedy).result).tokens);
      expect((await fresh.generate(p, greedy).result).usage.cachedPromptTokens).toBe(0);
      previous = ids;
    }
    expect(reused).toBeGreaterThan(prompts.length); // the fixture's prompts share "Question:" and more
  });

  it('cells made with other adapters are not reused', async () => {
    await cached.generate(prompts[2]!, greedy).result;
    const withAdapter = await cached.generate(prompts[2]!, { ...greedy, adapters: [{ name: 'qa' }] }).result;
    expect(withAdapter.usage.cachedPromptTokens).toBe(0);
    expect(withAdapter.tokens).toEqual(
      (await fresh.generate(prompts[2]!, { ...greedy, adapters: [{ name: 'qa' }] }).result).tokens,
    );
    const half = await cached.generate(prompts[2]!, { ...greedy, adapters: [{ name: 'qa', scale: 0.5 }] }).result;
    expect(half.usage.cachedPromptTokens).toBe(0);
    const again = await cached.generate(prompts[2]!, { ...greedy, adapters: [{ name: 'qa', scale: 0.5 }] }).result;
    expect(again.usage.cachedPromptTokens).toBeGreaterThan(0);
  });

  it('an idle slot between two running ones lends them a throwaway token each step and keeps its cells', async () => {
    // llama.cpp decodes consecutive sequences in one pass; the idle slot in the middle is filled
    // for that (on the CPU, gaps of up to 2 slots) and must come out as it was.
    const three = await loadEngine('tiny-qa', { slots: 3 });
    try {
      const fillers = three.stats().profile!.fillerTokens;
      let longEnded = false;
      const long = three.generate(prompts[0]!, { greedy: true, maxTokens: 230, ignoreEos: true }); // slot 0
      void long.result.then(() => (longEnded = true));
      const b = await three.generate(prompts[1]!, greedy).result; // slot 1, done while slot 0 runs
      // Its start is only the BOS, so it takes slot 2, the emptiest: slot 1 idles between.
      const other = 'The capital of Belithne is';
      const c = await three.generate(other, greedy).result;
      expect(longEnded).toBe(false);
      expect(three.stats().profile!.fillerTokens).toBeGreaterThan(fillers);
      long.cancel();
      await long.result;
      expect(c.tokens).toEqual((await fresh.generate(other, greedy).result).tokens);
      const again = await three.generate(prompts[1]!, greedy).result;
      expect(again.usage.cachedPromptTokens).toBe(b.usage.promptTokens - 1);
      expect(again.tokens).toEqual(b.tokens);
    } finally {
      await three.close();
    }
  });

  it('cells computed with an adapter that was unloaded are never reused, even by its reload', async () => {
    const two = await loadEngine('tiny-qa', { slots: 2 });
    try {
      await two.loadAdapter('qa', adapter);
      const params = { ...greedy, adapters: [{ name: 'qa' }] };
      await two.generate(prompts[3]!, params).result; // one slot now holds cells made with 'qa'
      expect(two.unloadAdapter('qa')).toBe(true);
      await two.generate(prompts[4]!, greedy).result; // takes the other slot; the step frees 'qa'
      await two.loadAdapter('qa', adapter); // may land where the freed one was
      const r = await two.generate(prompts[3]!, params).result;
      expect(r.usage.cachedPromptTokens).toBe(0);
      expect(r.tokens).toEqual((await fresh.generate(prompts[3]!, params).result).tokens);
    } finally {
      await two.close();
    }
  });
});
