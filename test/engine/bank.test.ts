// The adapter bank (native/adapter_bank.h): requests of different adapters and scales share one
// decode, and each gets what it gets alone through the context's own adapter set (adapterBank: 0,
// llama.cpp's way). Two adapters: tiny-qa's trained one, and a second made from it with every
// other value of each lora_b negated (same shapes, different outputs).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, GenerateParams } from '../../src/engine/index.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { GgufWriter } from '../../src/intake/gguf-writer.ts';
import { loadEngine, loadReference, modelDir, patchGguf, rowsAsAlone, testBackend } from '../helpers.ts';

const prompts = [...new Set(loadReference('tiny-qa').cases.map((c) => c.prompt))];
const adapterA = path.join(modelDir('tiny-qa'), 'adapter-f32.gguf');
const dir = mkdtempSync(path.join(os.tmpdir(), 'bank-'));
const writeVariant = (name: string, every: number) =>
  patchGguf(adapterA, path.join(dir, name), (tensor, v) => {
    if (!tensor.endsWith('.lora_b')) return false;
    for (let i = 0; i < v.length; i += every) v[i] = -v[i]!;
    return true;
  });

// The same adapter with every tensor in F16 (the bank's gathered copies then stay F16).
async function writeF16Copy(src: string, out: string): Promise<string> {
  const h = await readGgufHeader(src);
  const bytes = readFileSync(src);
  const w = new GgufWriter()
    .kv('general.architecture', { type: 'string', value: String(h.metadata.get('general.architecture')) })
    .kv('general.type', { type: 'string', value: 'adapter' })
    .kv('adapter.type', { type: 'string', value: 'lora' })
    .kv('adapter.lora.alpha', { type: 'f32', value: Number(h.metadata.get('adapter.lora.alpha')) });
  for (const t of h.tensors) {
    const count = t.ne.reduce((x, y) => x * y, 1);
    const values = new Float32Array(
      bytes.buffer.slice(bytes.byteOffset + t.offset, bytes.byteOffset + t.offset + count * 4),
    );
    w.tensor(t.name, [...t.ne].reverse(), 'f16', async () => values);
  }
  await w.write(out);
  return out;
}

type Sets = GenerateParams['adapters'][];
// Base, each adapter at several scales, both at once, and a negative scale (a merged model's base).
const mixedSets: Sets = [
  [],
  [{ name: 'a', scale: 1 }],
  [{ name: 'b', scale: 0.5 }],
  [{ name: 'a', scale: 0.3 }],
  [
    { name: 'a', scale: 1 },
    { name: 'b', scale: -0.7 },
  ],
  [{ name: 'b', scale: 1 }],
];
const params = (adapters: GenerateParams['adapters'], maxTokens = 32): GenerateParams => ({
  greedy: true,
  maxTokens,
  ignoreEos: true,
  adapters,
});

async function aloneThroughTurns(turns: Engine, sets: Sets, maxTokens?: number): Promise<number[][]> {
  const out: number[][] = [];
  for (const [i, adapters] of sets.entries()) {
    out.push((await turns.generate(prompts[i % prompts.length]!, params(adapters, maxTokens)).result).tokens);
  }
  return out;
}

// Both layouts on the CPU: gathered is its default there, stacked a GPU's (each must give every
// stream what it gives alone). On a GPU, stacked alone: gathered is refused there (below).
const layouts = testBackend === 'cpu' ? (['gathered', 'stacked'] as const) : (['stacked'] as const);
describe.each(layouts)('the adapter bank, %s', (adapterBankLayout) => {
  let bank: Engine, turns: Engine;
  let alone: number[][];

  beforeAll(async () => {
    const b = await writeVariant('b.gguf', 2);
    bank = await loadEngine('tiny-qa', { slots: 6, adapterBankLayout });
    turns = await loadEngine('tiny-qa', { slots: 6, adapterBank: 0 });
    for (const e of [bank, turns]) {
      await e.loadAdapter('a', adapterA);
      await e.loadAdapter('b', b);
    }
    alone = await aloneThroughTurns(turns, mixedSets);
  });
  afterAll(async () => {
    await bank?.close();
    await turns?.close();
  });

  it('passes its check at load: two made-up adapters mixed in one batch give their rows alone', () => {
    // CI runs this on the prebuilt CPU llama.cpp: a llama.cpp update that stops calling our
    // build_lora_mm, or changes the internals it reads, fails here, not in production.
    expect(bank.model.adapterBank).toMatchObject({ enabled: true, size: 8, layout: adapterBankLayout, reason: null });
    const { checkError, checkEffect } = bank.model.adapterBank;
    expect(checkEffect).toBeGreaterThan(0.1);
    expect(checkError).toBeLessThanOrEqual(0.02 * checkEffect);
    expect(turns.model.adapterBank).toMatchObject({ enabled: false, size: 0, reason: 'off (adapterBank: 0)' });
  });

  it('every stream of a mixed batch gives the greedy ids it gives alone, in one decode per token', async () => {
    // The sets really differ, so a bank that applied one stream's adapters to another would show.
    expect(new Set(alone.map((t) => t.join())).size).toBe(mixedSets.length);
    const before = bank.stats().profile!;
    const mixed = await Promise.all(
      mixedSets.map((adapters, i) => bank.generate(prompts[i % prompts.length]!, params(adapters)).result),
    );
    expect(mixed.map((r) => r.tokens)).toEqual(alone);
    const after = bank.stats().profile!;
    // All six sets in each step: one bank change at most (its first members), and about one step
    // per token (32, plus the steps before the last request joins: up to 40 seen under CI's load),
    // where taking turns costs one step per token per set (6 x 32).
    expect(after.adapterSwitches - before.adapterSwitches).toBeLessThanOrEqual(1);
    expect(after.steps - before.steps).toBeLessThan(2 * 32);
    // ...and the graph is reused while the members mix: builds only where the batch's shape
    // changes (4 of 33 steps here), where a mask input that refused reuse would rebuild every step.
    const built = after.steps - before.steps - (after.graphsReused - before.graphsReused);
    expect(built).toBeLessThan(16);
    expect(after.bankMembers).toBe(2);
    expect(after.bankBytes).toBeGreaterThan(0); // the members' copies
  });

  it('base and adapter requests one after another: an idle graph (base alone) never serves an adapter', async () => {
    // Base alone leaves the deltas out of the graph; a graph kept for that must not be reused for
    // the next batch that needs an adapter (nor a full one for base: that only costs time).
    for (const i of [0, 1, 0, 2, 0, 5]) {
      const r = await bank.generate(prompts[i % prompts.length]!, params(mixedSets[i])).result;
      expect(r.tokens, `set ${i}`).toEqual(alone[i]);
    }
  });

  it('a graph built idle is not reused when an adapter request takes the next step of the same shape', async () => {
    // Two base streams decode (an idle step: 2 tokens, sequences 0 and 1); the short one ends and a
    // queued one-token adapter prompt takes its slot: 2 tokens again, the same sequences, which
    // llama.cpp would reuse the idle graph for unless the bank's input refuses.
    const two = await loadEngine('tiny-qa', { slots: 2, promptCache: false, adapterBankLayout });
    try {
      await two.loadAdapter('a', adapterA);
      const bos = [two.model.bos];
      const want = (await turns.generate(bos, params([{ name: 'a', scale: 1 }], 20)).result).tokens;
      const baseToo = (await turns.generate(bos, params([], 20)).result).tokens;
      expect(want).not.toEqual(baseToo);
      await two.generate(prompts[0]!, params([{ name: 'a', scale: 1 }], 3)).result; // 'a' joins the bank now
      const long = two.generate(prompts[0]!, params([], 120));
      const short = two.generate(prompts[1]!, params([], 4));
      const q = two.generate(bos, params([{ name: 'a', scale: 1 }], 20));
      expect((await q.result).tokens).toEqual(want);
      await Promise.all([long.result, short.result]);
    } finally {
      await two.close();
    }
  });

  it('adapters join and leave the bank while requests run; a member unloaded leaves once unused', async () => {
    const c = await writeVariant('c.gguf', 3);
    const sets: Sets = [[{ name: 'a', scale: 1 }], [{ name: 'b', scale: 0.5 }], [{ name: 'c', scale: 1 }]];
    await turns.loadAdapter('c', c);
    // Long enough that the first two still run when the third comes.
    const want = await aloneThroughTurns(turns, sets, 200);
    const running = [0, 1].map((i) => bank.generate(prompts[i]!, params(sets[i], 200)));
    await bank.loadAdapter('c', c); // joins once its request comes, beside the running ones
    const third = bank.generate(prompts[2]!, params(sets[2], 200));
    while (bank.stats().profile!.bankMembers < 3) await new Promise((r) => setTimeout(r, 1));
    const withA = bank.stats().profile!.bankBytes;
    expect(bank.unloadAdapter('a')).toBe(true); // its running request keeps it
    const got = await Promise.all([...running, third].map((g) => g.result));
    expect(got.map((r) => r.tokens)).toEqual(want);
    // Once its request is done 'a' goes: the bank then holds b and c, in fewer bytes.
    await bank.generate(prompts[0]!, params([{ name: 'b', scale: 1 }])).result;
    const after = bank.stats().profile!;
    expect(after.bankMembers).toBe(2);
    expect(after.bankBytes).toBeLessThan(withA);
    await bank.loadAdapter('a', adapterA);
    const again = await Promise.all(
      mixedSets.map((adapters, i) => bank.generate(prompts[i % prompts.length]!, params(adapters)).result),
    );
    expect(again.map((r) => r.tokens)).toEqual(alone);
  });

  it('a bank too small for every set waiting fills by turns, each stream still as alone', async () => {
    const small = await loadEngine('tiny-qa', { slots: 6, adapterBank: 1, adapterBankLayout });
    try {
      await small.loadAdapter('a', adapterA);
      await small.loadAdapter('b', path.join(dir, 'b.gguf'));
      const before = small.stats().profile!;
      // Both adapters at once can never be banked in one: that set takes turns of its own.
      const mixed = await Promise.all(
        mixedSets.map((adapters, i) => small.generate(prompts[i % prompts.length]!, params(adapters)).result),
      );
      expect(mixed.map((r) => r.tokens)).toEqual(alone);
      expect(small.stats().profile!.adapterSwitches - before.adapterSwitches).toBeGreaterThanOrEqual(2);
    } finally {
      await small.close();
    }
  });
});

describe('the adapter bank at load', () => {
  it('engines loading at once each pass their own check (each makes up its own adapter files)', async () => {
    const engines = await Promise.all(Array.from({ length: 4 }, () => loadEngine('tiny-qa', { slots: 2 })));
    try {
      expect(engines.map((e) => e.model.adapterBank.reason)).toEqual([null, null, null, null]);
    } finally {
      await Promise.all(engines.map((e) => e.close()));
    }
  });

  it('one slot has nothing to mix: no bank, and the reason says so', async () => {
    const one = await loadEngine('tiny-qa', { slots: 1 });
    try {
      expect(one.model.adapterBank).toMatchObject({ enabled: false, reason: 'one slot: nothing to mix' });
    } finally {
      await one.close();
    }
  });
});

describe('an adapter the bank cannot hold', () => {
  it('a token-embedding LoRA takes turns, and gives what llama.cpp gives it', async () => {
    // llama.cpp applies an embedding LoRA outside build_lora_mm, to every token of the batch: in
    // the bank it would reach every stream. So it must stay out, and take turns.
    const h = await readGgufHeader(path.join(modelDir('tiny-qa'), 'base-f32.gguf'));
    const [nEmbd, nVocab] = h.tensors.find((t) => t.name === 'token_embd.weight')!.ne;
    const rank = 4;
    let seed = 7;
    const random = (n: number) =>
      Float32Array.from({ length: n }, () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return (seed / 2 ** 31 - 0.5) * 0.5;
      });
    const embd = path.join(dir, 'embd.gguf');
    await new GgufWriter()
      .kv('general.architecture', { type: 'string', value: 'llama' })
      .kv('general.type', { type: 'string', value: 'adapter' })
      .kv('adapter.type', { type: 'string', value: 'lora' })
      .kv('adapter.lora.alpha', { type: 'f32', value: rank })
      // llama.cpp's layout for embeddings: A [rank, vocab] and B [rank, embd] (ggml order).
      .tensor('token_embd.weight.lora_a', [nVocab!, rank], 'f32', async () => random(nVocab! * rank))
      .tensor('token_embd.weight.lora_b', [nEmbd!, rank], 'f32', async () => random(nEmbd! * rank))
      .write(embd);
    const bank = await loadEngine('tiny-qa', { slots: 4 });
    const turns = await loadEngine('tiny-qa', { slots: 4, adapterBank: 0 });
    try {
      const sets: Sets = [[], [{ name: 'e', scale: 1 }], [{ name: 'a', scale: 1 }]];
      for (const e of [bank, turns]) {
        await e.loadAdapter('e', embd);
        await e.loadAdapter('a', adapterA);
      }
      const want = await aloneThroughTurns(turns, sets);
      expect(want[1]).not.toEqual(want[0]); // the embedding LoRA changes the output
      const before = bank.stats().profile!;
      const got = await Promise.all(sets.map((a, i) => bank.generate(prompts[i]!, params(a)).result));
      expect(got.map((r) => r.tokens)).toEqual(want);
      const after = bank.stats().profile!;
      expect(after.adapterSwitches - before.adapterSwitches).toBeGreaterThanOrEqual(2); // in and out of its turn
      expect(after.bankMembers).toBe(1); // 'a' only
    } finally {
      await bank.close();
      await turns.close();
    }
  });
});

// Gathered beside stacked: the CPU's (a GPU refuses gathered).
describe.runIf(testBackend === 'cpu')('the adapter bank with an F16 adapter', () => {
  it('gathered keeps F16 copies (half the bytes) and gives every stream what stacked F32 copies give', async () => {
    const f16 = await writeF16Copy(adapterA, path.join(dir, 'a-f16.gguf'));
    const b16 = await writeF16Copy(await writeVariant('b32.gguf', 2), path.join(dir, 'b-f16.gguf'));
    const engines = await Promise.all(
      (['gathered', 'stacked'] as const).map((adapterBankLayout) =>
        loadEngine('tiny-qa', { slots: 6, adapterBankLayout }),
      ),
    );
    try {
      const out = [];
      for (const e of engines) {
        await e.loadAdapter('a', f16);
        await e.loadAdapter('b', b16);
        const mixed = await Promise.all(
          mixedSets.map((adapters, i) => e.generate(prompts[i % prompts.length]!, params(adapters)).result),
        );
        out.push({ tokens: mixed.map((r) => r.tokens), bytes: e.stats().profile!.bankBytes });
      }
      const [gathered, stacked] = out;
      // Both loaded, and checked, at once: each check's made-up adapters are files of their own.
      expect(engines.map((e) => e.model.adapterBank.enabled)).toEqual([true, true]);
      expect(gathered!.tokens).toEqual(stacked!.tokens);
      expect(new Set(gathered!.tokens.map((t) => t.join())).size).toBe(mixedSets.length);
      expect(gathered!.bytes).toBeLessThan(0.6 * stacked!.bytes);
    } finally {
      await Promise.all(engines.map((e) => e.close()));
    }
  });
});

// Run by the GPU check (npm run test:gpu); CI has no GPU.
describe.runIf(testBackend !== 'cpu')('the gathered layout on a GPU', () => {
  it('is refused by name at load (its kernel reads host memory): the bank is off, requests take turns', async () => {
    const e = await loadEngine('tiny-qa', { ...rowsAsAlone, adapterBankLayout: 'gathered' });
    const turns = await loadEngine('tiny-qa', { ...rowsAsAlone, adapterBank: 0 });
    try {
      expect(e.model.adapterBank).toMatchObject({ enabled: false, layout: 'gathered' });
      expect(e.model.adapterBank.reason).toMatch(/'gathered' needs its weights in host memory, and \S+ is in CUDA/);
      const sets: Sets = [[], [{ name: 'a', scale: 1 }], [{ name: 'a', scale: 0.5 }]];
      for (const x of [e, turns]) await x.loadAdapter('a', adapterA);
      const served = await Promise.all(
        sets.map((adapters, i) => e.generate(prompts[i % prompts.length]!, params(adapters)).result),
      );
      expect(served.map((r) => r.tokens)).toEqual(await aloneThroughTurns(turns, sets));
    } finally {
      await e.close();
      await turns.close();
    }
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
