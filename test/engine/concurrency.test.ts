// Continuous batching: requests decoded together, with different adapter sets, give what each gives alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, GenerateParams } from '../../src/engine/index.ts';
import { chunksOf, loadEngine, loadReference, modelDir, rowsAsAlone, testBackend } from '../helpers.ts';

const ref = loadReference('tiny-qa');
const prompts = [...new Set(ref.cases.map((c) => c.prompt))];
const adapterSets: GenerateParams['adapters'][] = [[], [{ name: 'qa', scale: 1 }], [{ name: 'qa', scale: 0.5 }]];

// Eight requests, mixed prompts and adapter sets; long enough (no EOS) to overlap for many steps.
const requests = Array.from({ length: 8 }, (_, i) => ({
  prompt: prompts[(i * 5) % prompts.length]!,
  params: { greedy: true, maxTokens: 40 + 3 * i, ignoreEos: true, adapters: adapterSets[i % 3] } as GenerateParams,
}));

// With the adapter bank (the default: every set in one decode) and without (sets take turns).
describe.each([{ adapterBank: 8 }, { adapterBank: 0 }])(
  'concurrent requests (adapterBank $adapterBank)',
  ({ adapterBank }) => {
    let engine: Engine;
    const alone: number[][] = [];

    beforeAll(async () => {
      // Serving defaults (f16 KV cache, flash attention auto) on the CPU, rowsAsAlone on a GPU.
      engine = await loadEngine('tiny-qa', { slots: 8, samplingThreads: 2, adapterBank, ...rowsAsAlone });
      expect(engine.model.adapterBank.enabled).toBe(adapterBank > 0);
      await engine.loadAdapter('qa', `${modelDir('tiny-qa')}/adapter-f32.gguf`);
      for (const r of requests) alone.push((await engine.generate(r.prompt, r.params).result).tokens);
    });
    afterAll(() => engine?.close());

    it('8 at once give the same greedy ids as each alone', async () => {
      const before = engine.stats().profile!;
      const together = await Promise.all(requests.map((r) => engine.generate(r.prompt, r.params).result));
      expect(together.map((r) => r.tokens)).toEqual(alone);
      expect(together.map((r) => r.stopReason)).toEqual(requests.map(() => 'length'));
      const switches = engine.stats().profile!.adapterSwitches - before.adapterSwitches;
      if (adapterBank > 0) {
        // One decode for all three sets: the bank already held 'qa' from the runs alone.
        expect(switches).toBe(0);
      } else {
        // The three sets took turns: the two that did not hold the context got it.
        expect(switches).toBeGreaterThanOrEqual(2);
      }
    });

    it('more requests than slots queue and still match', async () => {
      const twice = [...requests, ...requests];
      const results = await Promise.all(twice.map((r) => engine.generate(r.prompt, r.params).result));
      expect(results.map((r) => r.tokens)).toEqual([...alone, ...alone]);
    });

    it('cancelling one mid-stream leaves the others unchanged and frees its slot', async () => {
      const gens = requests.map((r, i) =>
        engine.generate(r.prompt, i === 3 ? { ...r.params, maxTokens: 200 } : r.params),
      );
      let seen = 0;
      for await (const _ of gens[3]!) {
        if (++seen === 5) gens[3]!.cancel();
      }
      const results = await Promise.all(gens.map((g) => g.result));
      expect(results[3]!.stopReason).toBe('cancelled');
      expect(results[3]!.tokens.length).toBeLessThan(200);
      expect(results[3]!.tokens).toEqual(alone[3]!.slice(0, results[3]!.tokens.length));
      results.forEach((r, i) => {
        if (i !== 3) expect(r.tokens).toEqual(alone[i]);
      });
      expect(engine.stats()).toMatchObject({ busySlots: 0, queued: 0, inFlight: 0 });
    });

    it('an AbortSignal cancels a queued or running request', async () => {
      const ac = new AbortController();
      const g = engine.generate(requests[0]!.prompt, { ...requests[0]!.params, maxTokens: 200 }, { signal: ac.signal });
      ac.abort();
      const r = await g.result;
      expect(r.stopReason).toBe('cancelled');
      expect(r.tokens.length).toBeLessThan(200);
    });

    it('the adapter set holding the context yields its turn: a request of another set does not wait for it', async () => {
      // A long adapter request holds the context; a short base request arrives. Turns last 8 steps
      // or 200 ms, so the short one finishes long before the long one: a set that never yielded
      // would make it wait all 200 tokens.
      const long = engine.generate(prompts[0]!, {
        greedy: true,
        maxTokens: 200,
        ignoreEos: true,
        adapters: [{ name: 'qa', scale: 1 }],
      });
      let streamed = 0;
      const counting = (async () => {
        for await (const c of long) if (c.token !== null) streamed++;
      })();
      while (streamed < 3) await new Promise((r) => setTimeout(r, 1));
      const short = await engine.generate(prompts[1]!, { greedy: true, maxTokens: 8, ignoreEos: true }).result;
      const longAtShortsEnd = streamed;
      await counting;
      expect(short.usage.generatedTokens).toBe(8);
      expect(longAtShortsEnd).toBeLessThan(150);
      expect((await long.result).usage.generatedTokens).toBe(200);
    });

    it('adapters can be unloaded and reloaded while requests run', async () => {
      const running = engine.generate(requests[1]!.prompt, requests[1]!.params); // uses 'qa'
      expect(engine.unloadAdapter('qa')).toBe(true);
      expect(() => engine.generate('x', { adapters: [{ name: 'qa' }] })).toThrow(/no adapter named 'qa'/);
      expect((await running.result).tokens).toEqual(alone[1]);
      await engine.loadAdapter('qa', `${modelDir('tiny-qa')}/adapter-f32.gguf`, 0.5);
      // The default scale applies when a request names no scale: 0.5 here, so it equals request 2.
      const r = await engine.generate(requests[2]!.prompt, { ...requests[2]!.params, adapters: [{ name: 'qa' }] })
        .result;
      expect(r.tokens).toEqual(alone[2]);
      expect(engine.setAdapterScale('qa', 1)).toBe(true);
      expect(engine.adapters()).toMatchObject([{ name: 'qa', scale: 1, alpha: 16 }]);
    });

    it('seeded sampling is reproducible, alone or batched with others', async () => {
      const sampled = {
        temperature: 0.9,
        topK: 40,
        topP: 0.95,
        repetitionPenalty: 1.1,
        maxTokens: 30,
        ignoreEos: true,
      };
      const alone = (await engine.generate(prompts[0]!, { ...sampled, seed: 7 }).result).tokens;
      const seeds = [7, 8, 7, 9, 7, 10];
      const batch = await Promise.all(seeds.map((seed) => engine.generate(prompts[0]!, { ...sampled, seed }).result));
      for (const [i, seed] of seeds.entries()) {
        if (seed === 7) expect(batch[i]!.tokens).toEqual(alone);
        else expect(batch[i]!.tokens).not.toEqual(alone);
      }
    });

    it('stats() profiles the scheduler thread: one step per decode, its time split', async () => {
      const before = engine.stats().profile!;
      const r = await engine.generate(requests[0]!.prompt, { ...requests[0]!.params, maxTokens: 10 }).result;
      const after = engine.stats().profile!;
      // One step per generated token: the prompt fits one batch, whose step samples the first.
      expect(after.steps - before.steps).toBe(r.tokens.length);
      expect(after.decodeUs - before.decodeUs).toBeGreaterThan(0);
      expect(after.loopUs - before.loopUs).toBeGreaterThanOrEqual(
        after.decodeUs - before.decodeUs + after.sampleUs - before.sampleUs,
      );
    });

    it('the text streamed equals the final text', async () => {
      const g = engine.generate(requests[4]!.prompt, requests[4]!.params);
      const chunks = await chunksOf(g);
      expect(chunks.join('')).toBe((await g.result).text);
    });
  },
);

describe('a random mix of arrivals, lengths, adapter sets and cancels', () => {
  // fillGap 32 is the GPU's default: here it fills every gap, the CPU's 2 only short ones.
  it.each([
    { fillGap: undefined, adapterBank: 8 },
    { fillGap: 32, adapterBank: 8 },
    { fillGap: undefined, adapterBank: 0 },
  ])(
    'gives every request what it gives alone (fillers, the bank or turns, the prompt cache at work; fillGap $fillGap, adapterBank $adapterBank)',
    async ({ fillGap, adapterBank }) => {
      // The queue takes every arrival: this checks outputs, not how fast the slots drain (a GPU's
      // turns can outlast many arrivals).
      const engine = await loadEngine('tiny-qa', {
        slots: 6,
        samplingThreads: 2,
        maxQueue: 200,
        adapterBank,
        ...rowsAsAlone,
        ...(fillGap !== undefined ? { fillGap } : {}),
      });
      expect(engine.model.fillGap).toBe(fillGap ?? (testBackend === 'cuda' ? 32 : 2));
      const runs: Promise<{ key: string; cancelled: boolean; tokens: number[]; want: number }>[] = [];
      try {
        await engine.loadAdapter('qa', `${modelDir('tiny-qa')}/adapter-f32.gguf`);
        const few = prompts.slice(0, 8);
        const solo = new Map<string, number[]>();
        for (const [p, prompt] of few.entries()) {
          for (const [s, adapters] of adapterSets.entries()) {
            solo.set(
              `${p}/${s}`,
              (await engine.generate(prompt, { greedy: true, maxTokens: 40, ignoreEos: true, adapters }).result).tokens,
            );
          }
        }
        let seed = 12345; // a fixed sequence of choices; only the timing varies between runs
        const rnd = (n: number) => {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          return Math.floor((seed / 2 ** 31) * n);
        };
        const before = engine.stats().profile!;
        for (let k = 0; k < 120; k++) {
          await new Promise((r) => setTimeout(r, rnd(12)));
          const p = rnd(few.length),
            s = rnd(adapterSets.length),
            n = 5 + rnd(36);
          const cancelAt = rnd(5) === 0 ? rnd(n) : -1;
          const g = engine.generate(few[p]!, { greedy: true, maxTokens: n, ignoreEos: true, adapters: adapterSets[s] });
          runs.push(
            (async () => {
              let i = 0;
              for await (const _ of g) if (i++ === cancelAt) g.cancel();
              const r = await g.result;
              return { key: `${p}/${s}`, cancelled: r.stopReason === 'cancelled', tokens: r.tokens, want: n };
            })(),
          );
        }
        const results = await Promise.all(runs);
        for (const r of results) {
          expect(r.tokens, r.key).toEqual(solo.get(r.key)!.slice(0, r.tokens.length));
          if (!r.cancelled) expect(r.tokens).toHaveLength(r.want);
        }
        expect(results.filter((r) => r.cancelled).length).toBeGreaterThan(5);
        const after = engine.stats().profile!;
        // The bank took every set at once (it held 'qa' since the runs alone); turns changed often.
        if (adapterBank > 0) expect(after.adapterSwitches - before.adapterSwitches).toBe(0);
        else expect(after.adapterSwitches - before.adapterSwitches).toBeGreaterThan(10);
        expect(after.fillerTokens - before.fillerTokens).toBeGreaterThan(0);
      } finally {
        await Promise.allSettled(runs); // a failure above leaves none of them to reject unheard
        await engine.close();
      }
    },
  );
});
