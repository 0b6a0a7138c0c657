// The served adapter merged into the weights (mergeAdapter + Engine's mergedAdapter): the merged
// model must give what transformers + PEFT give for the adapter, and the base model and other
// scales must still be served exactly as before, through the adapter applied at the difference.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticLora, writeSyntheticModel } from '../../scripts/bench/synth.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import {
  AdapterError,
  InvalidParamsError,
  MergeError,
  mergeAdapter,
  ModelLoadError,
  type Engine,
} from '../../src/engine/index.ts';
import {
  againstReference,
  exactNumerics,
  loadEngine,
  loadReference,
  modelDir,
  testBackend,
  type Fixture,
} from '../helpers.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-merge-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each([
  { fixture: 'tiny-qa' as Fixture, unit: 1 },
  { fixture: 'tiny-qwen2' as Fixture, unit: Math.sqrt(8) }, // llama.cpp's file needs sqrt(8): see parity.test.ts
])('$fixture with its adapter merged', ({ fixture, unit }) => {
  const ref = loadReference(fixture);
  const merged = path.join(dir, `${fixture}-merged.gguf`);
  const adapter = `${modelDir(fixture)}/adapter-f32.gguf`;
  let engine: Engine;

  beforeAll(async () => {
    const info = await mergeAdapter({
      modelPath: `${modelDir(fixture)}/base-f32.gguf`,
      adapterPath: adapter,
      out: merged,
      scale: unit,
      threads: 2,
      backend: testBackend,
    });
    expect(info.merged).toBeGreaterThan(0);
    expect(info.widened).toBe(0);
    engine = await loadEngine(fixture, {
      modelPath: merged,
      slots: 3,
      ...exactNumerics,
      mergedAdapter: { name: 'lora', path: adapter, scale: unit },
    });
  });
  afterAll(() => engine?.close());

  it('keeps every tensor, name and type of the base', async () => {
    const [a, b] = await Promise.all([readGgufHeader(`${modelDir(fixture)}/base-f32.gguf`), readGgufHeader(merged)]);
    expect(b.tensors.map((t) => [t.name, t.type, t.ne])).toEqual(a.tensors.map((t) => [t.name, t.type, t.ne]));
  });

  for (const mode of ['adapter', 'adapter@0.5', 'base'] as const) {
    it(`matches transformers + PEFT (${mode})`, async () => {
      const cases = ref.cases.filter((c) => c.mode === mode);
      const r = await againstReference(engine, cases, ref.eos, unit);
      expect(r.worst, r.summary).toBeLessThan(1e-3);
      expect(r.exact / cases.length, `${r.summary}\n${r.misses.join('\n')}`).toBeGreaterThanOrEqual(
        Math.min(0.97, (cases.length - 1) / cases.length),
      );
    });
  }

  it('lists the adapter as merged and refuses to unload or replace it', async () => {
    expect(engine.adapters()).toMatchObject([{ name: 'lora', merged: true }]);
    expect(engine.adapters()[0]!.scale).toBeCloseTo(unit, 6);
    expect(() => engine.unloadAdapter('lora')).toThrow(AdapterError);
    await expect(engine.loadAdapter('lora', adapter)).rejects.toThrow(/merged into the model/);
    // Bad adapter lists still reach the addon's own checks as typed errors.
    expect(() => engine.generate('x', { adapters: 'lora' as never })).toThrow(/adapters must be an array/);
    expect(() => engine.generate('x', { adapters: [{ name: 'lora', scale: 'big' as never }] })).toThrow(/scale/);
  });
});

describe('merging errors and quantized weights', () => {
  it('an adapter for another model, a non-GGUF or truncated base, a missing adapter, an unwritable output: typed errors', async () => {
    const base = `${modelDir('tiny-qa')}/base-f32.gguf`;
    const out = path.join(dir, 'never.gguf');
    await expect(
      mergeAdapter({
        modelPath: base,
        adapterPath: `${modelDir('tiny-qwen2')}/adapter-f32.gguf`,
        out,
        backend: testBackend,
      }),
    ).rejects.toThrow(AdapterError);
    await expect(
      mergeAdapter({
        modelPath: `${modelDir('tiny-qa')}/reference.json`,
        adapterPath: `${modelDir('tiny-qa')}/adapter-f32.gguf`,
        out,
        backend: testBackend,
      }),
    ).rejects.toThrow(ModelLoadError);
    await expect(
      mergeAdapter({ modelPath: base, adapterPath: path.join(dir, 'none.gguf'), out, backend: testBackend }),
    ).rejects.toThrow(AdapterError);
    await expect(mergeAdapter({ modelPath: base, adapterPath: base, out, backend: testBackend })).rejects.toThrow(
      /not a LoRA adapter/,
    );
    const truncated = path.join(dir, 'truncated.gguf');
    writeFileSync(truncated, readFileSync(base).subarray(0, 2_000_000));
    await expect(
      mergeAdapter({
        modelPath: truncated,
        adapterPath: `${modelDir('tiny-qa')}/adapter-f32.gguf`,
        out,
        backend: testBackend,
      }),
    ).rejects.toThrow(/truncated/);
    await expect(
      mergeAdapter({
        modelPath: base,
        adapterPath: `${modelDir('tiny-qa')}/adapter-f32.gguf`,
        out: path.join(dir, 'no/such/dir/m.gguf'),
        backend: testBackend,
      }),
    ).rejects.toThrow(MergeError);
    // Options are checked as an engine's are: 1.5 threads is not 1, a scale past the bounds table's
    // adapterScale (or a string) is refused, not merged.
    const good = { modelPath: base, adapterPath: `${modelDir('tiny-qa')}/adapter-f32.gguf`, out, backend: testBackend };
    for (const bad of [
      { threads: 1.5 },
      { threads: 0 },
      { threads: '2' },
      { scale: 1e5 },
      { scale: '1' },
      { scale: Number.NaN },
    ]) {
      await expect(mergeAdapter({ ...good, ...bad } as never), JSON.stringify(bad)).rejects.toThrow(InvalidParamsError);
    }
    await expect(mergeAdapter({ ...good, backend: 'tpu' as never })).rejects.toThrow(
      /backend must be cpu, cuda or auto/,
    );
    expect(readdirSync(dir).filter((f) => f.startsWith('never.gguf'))).toEqual([]); // nothing left behind
  });

  it('a Q8_0 base stays Q8_0 and serves', async () => {
    const shape = { hidden: 128, layers: 2, ffn: 256, heads: 4, kvHeads: 2 };
    const base = path.join(dir, 'q8.gguf');
    const lora = path.join(dir, 'q8-lora.gguf');
    await writeSyntheticModel({ shape, type: 'q8_0', out: base });
    await writeSyntheticLora({ shape, rank: 4, targets: ['attn_q', 'attn_v', 'ffn_down'], out: lora, seed: 3 });
    const out = path.join(dir, 'q8-merged.gguf');
    const info = await mergeAdapter({ modelPath: base, adapterPath: lora, out, backend: testBackend });
    expect(info.merged).toBe(6);
    const [a, b] = await Promise.all([readGgufHeader(base), readGgufHeader(out)]);
    expect(b.tensors.map((t) => t.type)).toEqual(a.tensors.map((t) => t.type));
    const e = await loadEngine('tiny-qa', { modelPath: out, mergedAdapter: { name: 'a', path: lora, scale: 1 } });
    try {
      const r = await e.generate('hello', { greedy: true, maxTokens: 4, ignoreEos: true }).result;
      expect(r.tokens).toHaveLength(4);
    } finally {
      await e.close();
    }
  });

  it('a base type ggml cannot re-quantize (IQ2_XXS) widens the adapted tensors to F16 and serves what the unmerged adapter does', async () => {
    const shape = { hidden: 256, layers: 2, ffn: 512, heads: 4, kvHeads: 2 }; // IQ2_XXS rows: multiples of 256
    const base = path.join(dir, 'iq2.gguf');
    const lora = path.join(dir, 'iq2-lora.gguf');
    await writeSyntheticModel({ shape, type: 'iq2_xxs', out: base });
    // A LoRA strong enough to change the greedy path, so that a merge that lost it cannot pass.
    await writeSyntheticLora({
      shape,
      rank: 4,
      targets: ['attn_q', 'attn_v', 'ffn_down'],
      out: lora,
      seed: 3,
      std: 0.05,
    });
    const out = path.join(dir, 'iq2-merged.gguf');
    const info = await mergeAdapter({ modelPath: base, adapterPath: lora, out, backend: testBackend });
    expect(info).toMatchObject({ merged: 6, widened: 6 });
    const [a, b] = await Promise.all([readGgufHeader(base), readGgufHeader(out)]);
    const adapted = (n: string) => /\.(attn_q|attn_v|ffn_down)\.weight$/.test(n);
    expect(b.tensors.map((t) => t.name)).toEqual(a.tensors.map((t) => t.name));
    for (const [i, t] of b.tensors.entries())
      expect([t.name, t.type]).toEqual([t.name, adapted(t.name) ? 1 : a.tensors[i]!.type]);

    const unmerged = await loadEngine('tiny-qa', { modelPath: base });
    const merged = await loadEngine('tiny-qa', { modelPath: out, mergedAdapter: { name: 'a', path: lora, scale: 1 } });
    try {
      await unmerged.loadAdapter('a', lora);
      const paths: number[][] = [];
      for (const scale of [1, 0.5, 0]) {
        const p = {
          greedy: true,
          maxTokens: 8,
          ignoreEos: true,
          logprobs: 1,
          adapters: scale ? [{ name: 'a', scale }] : [],
        };
        const [x, y] = [
          await unmerged.generate('The capital of France is', p).result,
          await merged.generate('The capital of France is', p).result,
        ];
        expect(y.tokens, `scale ${scale}`).toEqual(x.tokens);
        // IQ2_XXS matmuls round activations to 8 bits; the widened F16 ones do not: ~1e-2 apart.
        expect(Math.abs(y.logprobs![0]!.logprob - x.logprobs![0]!.logprob), `scale ${scale}`).toBeLessThan(0.03);
        paths.push(x.tokens);
      }
      expect(new Set(paths.map((t) => t.join())).size).toBe(3); // each scale takes its own path
    } finally {
      await Promise.all([unmerged.close(), merged.close()]);
    }
  });
});
