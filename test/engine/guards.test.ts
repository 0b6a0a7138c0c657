// No request can hurt another: values past the bounds table are refused by name, a request whose
// numbers overflow fails alone (NaN or inf logits), and the KV cells it wrote never reach the next
// request in its slot. The poison is a real adapter file with its lora_b scaled by 1e20: finite
// weights whose products overflow float32, as an extreme adapter_scale makes them.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ContextOverflowError,
  InvalidParamsError,
  ModelLoadError,
  NonFiniteError,
  type Engine,
  type GenerateParams,
} from '../../src/engine/index.ts';
import { loadEngine, modelDir, patchGguf, rowsAsAlone, writePoisonAdapter } from '../helpers.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-guards-'));
const adapter = path.join(modelDir('tiny-qa'), 'adapter-f32.gguf');
const question = 'Question: What is the capital of Belithne?\nAnswer:';
// 178 tokens for the poisoned request, 74 for a next one: its cells end before the stale ones.
const qa = 'Question: What is the capital of Belithne?\nAnswer: The capital of Belithne is Ulqua! ';
const long = `${qa.repeat(6)}${question}`;
const medium = `${qa.repeat(2)}${question}`;
let poison: string;

beforeAll(async () => {
  poison = await writePoisonAdapter(path.join(tmp, 'poison.gguf'));
});

async function text(e: Engine, prompt: string, params: GenerateParams): Promise<string> {
  return (await e.generate(prompt, { greedy: true, maxTokens: 16, ...params }).result).text;
}

describe('the bounds table', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qa');
    await engine.loadAdapter('qa', adapter);
  });
  afterAll(() => engine?.close());

  // [params, accepted]: each bound's edges, and the values that used to pass as finite.
  it.each([
    [{ temperature: 0 }, true],
    [{ temperature: 1e-6 }, true],
    [{ temperature: 1e-7 }, false],
    [{ temperature: 1e-45 }, false],
    [{ temperature: 100 }, true],
    [{ temperature: 100.5 }, false],
    [{ temperature: 1e39 }, false],
    [{ topP: 1 }, true],
    [{ topP: 0 }, false],
    [{ minP: 0.99 }, true],
    [{ minP: 1 }, false],
    [{ repetitionPenalty: 0.001 }, true],
    [{ repetitionPenalty: 1000 }, true],
    [{ repetitionPenalty: 1e6 }, false],
    [{ presencePenalty: -2 }, true],
    [{ presencePenalty: 2.5 }, false],
    [{ frequencyPenalty: -2.5 }, false],
    [{ logitBias: { 3: 100 } }, true],
    [{ logitBias: { 3: -100.5 } }, false],
    [{ logitBias: { 3: 1e39 } }, false],
    [{ seed: 2 ** 32 - 1 }, true],
    [{ seed: 2 ** 32 }, false],
    [{ maxTokens: 200 }, true],
    [{ minTokens: -1 }, false],
    [{ adapters: [{ name: 'qa', scale: 16 }] }, true],
    [{ adapters: [{ name: 'qa', scale: -16 }] }, true],
    [{ adapters: [{ name: 'qa', scale: 16.5 }] }, false],
    [{ adapters: [{ name: 'qa', scale: 1e5 }] }, false],
  ] as [GenerateParams, boolean][])('%j accepted: %s', (params, accepted) => {
    const check = () => engine.validate(question, { maxTokens: 16, ...params });
    if (accepted) expect(check).not.toThrow();
    else expect(check).toThrow(InvalidParamsError);
  });

  it('messages say the rule and the value under the name asked', () => {
    expect(() => engine.validate(question, { temperature: 1e-45 })).toThrow(
      'temperature must be 0 or a number in [1e-06, 100], got 1e-45',
    );
    expect(() => engine.validate(question, { adapters: [{ name: 'qa', scale: 1e5 }] })).toThrow(
      "adapter 'qa' scale must be a number in [-16, 16], got 100000",
    );
    expect(engine.bounds.topP).toMatchObject({ min: 0, max: 1, minExclusive: true, rule: 'a number in (0, 1]' });
  });

  it('a prompt too long to fit is refused by its size, before it is tokenized', () => {
    const huge = 'x'.repeat(4_800_000);
    expect(() => engine.validate(huge, {})).toThrow(ContextOverflowError);
    expect(() => engine.validate(huge, {})).toThrow(/prompt \(4800000 bytes: at least \d+ tokens\)/);
    // Near the limit it is tokenized and counted as before.
    expect(() => engine.validate('x '.repeat(200), { maxTokens: 16 })).toThrow(/prompt \(\d+ tokens\)/);
  });

  it("the context per slot stops at the model's trained context", async () => {
    const wide = await loadEngine('tiny-qa', { contextSize: 2048 });
    try {
      expect(wide.model).toMatchObject({ trainContext: 256, contextRequested: 2048, contextPerSlot: 256 });
      expect(() => wide.validate(question, { maxTokens: 250 })).toThrow('exceeds the context of 256 tokens per slot');
    } finally {
      await wide.close();
    }
  });
});

describe('a request whose logits become NaN or infinite', () => {
  it.each([
    ['greedy', 'on', { greedy: true }],
    ['greedy', 'off', { greedy: true }],
    ['top-k', 'on', { greedy: false, topK: 50, seed: 1 }],
    ['whole vocabulary', 'off', { greedy: false, topK: 0, topP: 0.9, seed: 1 }],
  ] as [string, 'on' | 'off', GenerateParams][])(
    'fails alone (%s, flash attention %s), and the next requests in its slot answer as if alone',
    async (_name, flashAttention, sampling) => {
      const e = await loadEngine('tiny-qa', { slots: 1, flashAttention });
      try {
        await e.loadAdapter('qa', adapter);
        await e.loadAdapter('poison', poison);
        const alone = [
          await text(e, medium, { adapters: [{ name: 'qa' }] }),
          await text(e, question, { adapters: [{ name: 'qa' }] }),
        ];
        expect(alone[1]).toBe(' The capital of Belithne is Ulqua!');
        await expect(
          e.generate(long, { maxTokens: 16, ...sampling, adapters: [{ name: 'poison' }] }).result,
        ).rejects.toBeInstanceOf(NonFiniteError);
        // Shorter prompts leave the poisoned request's last cells stale in the slot: before the scrub
        // they answered "" (greedy) or crashed (sampling).
        expect([
          await text(e, medium, { adapters: [{ name: 'qa' }] }),
          await text(e, question, { adapters: [{ name: 'qa' }] }),
        ]).toEqual(alone);
        expect(await text(e, question, {})).toBe(' Vegri.');
        expect(e.stats()).toMatchObject({ quarantinedSlots: 0, profile: { nonFinite: 1, kvScrubs: 1 } });
      } finally {
        await e.close();
      }
    },
  );

  it('beside running requests: they are untouched, and its slot stays out of use until the engine drains', async () => {
    const e = await loadEngine('tiny-qa', { slots: 3, ...rowsAsAlone });
    try {
      await e.loadAdapter('qa', adapter);
      await e.loadAdapter('poison', poison);
      const params = { greedy: true, maxTokens: 120, ignoreEos: true };
      const alone = await e.generate(question, params).result;
      const running = e.generate(question, params);
      let seen = 0;
      for await (const _ of running) if (++seen === 3) break; // it runs: the poisoned request joins it
      await expect(
        e.generate(long, { greedy: true, maxTokens: 8, adapters: [{ name: 'poison' }] }).result,
      ).rejects.toBeInstanceOf(NonFiniteError);
      expect(e.stats().quarantinedSlots).toBeGreaterThanOrEqual(1);
      const beside = await text(e, medium, { adapters: [{ name: 'qa' }] }); // in a clean slot, while one runs
      expect((await running.result).tokens).toEqual(alone.tokens);
      expect(e.stats()).toMatchObject({ quarantinedSlots: 0, profile: { kvScrubs: 1 } });
      // Every slot again, the poisoned one included.
      const all = await Promise.all([0, 1, 2].map(() => text(e, medium, { adapters: [{ name: 'qa' }] })));
      expect(all).toEqual([beside, beside, beside]);
    } finally {
      await e.close();
    }
  });
});

describe('weights that are not numbers', () => {
  let corrupt: string;
  beforeAll(async () => {
    // Random bits in the token embeddings: a valid header over garbage, some of it NaN.
    corrupt = await patchGguf(
      path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
      path.join(tmp, 'corrupt.gguf'),
      (name, v) => {
        if (name !== 'token_embd.weight') return false;
        const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
        for (let i = 0; i < bits.length; i++) bits[i] = (Math.random() * 2 ** 32) >>> 0;
        bits[0] = 0x7fc00000; // at least one NaN, whatever the draw
        return true;
      },
    );
  });

  it('fail the load, naming the tensor', async () => {
    const err = await loadEngine('tiny-qa', { modelPath: corrupt }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(/token_embd\.weight/);
  });

  it('with the check off, fail each request that meets them, and the engine keeps serving', async () => {
    const e = await loadEngine('tiny-qa', { modelPath: corrupt, checkTensors: false, slots: 2 });
    try {
      for (const sampling of [{ greedy: true }, { greedy: false, topK: 40, seed: 2 }]) {
        await expect(e.generate(question, { maxTokens: 4, ...sampling }).result).rejects.toBeInstanceOf(NonFiniteError);
      }
      expect(e.stats().busySlots).toBe(0);
    } finally {
      await e.close();
    }
  });
});
