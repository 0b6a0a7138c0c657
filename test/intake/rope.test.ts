// Rope variants through convert-model, held to an independent reference: a numpy forward pass
// written from transformers (reference_forward.py), itself first held to the fixtures' own
// transformers logits. Each variant must also move the numbers away from the default rope, so a
// converter that dropped it (as one spelling of the key once was) fails here.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/index.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { exactNumerics, loadEngine, loadReference, logSoftmax, modelDir, type Fixture } from '../helpers.ts';
import { numpyLogprobs } from './reference.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-rope-'));

/** A copy of a fixture's checkpoint whose config.json has `patch` merged in (null deletes a key). */
function variant(fx: Fixture, name: string, patch: Record<string, unknown>): string {
  const from = path.join(modelDir(fx), 'base-hf');
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(from)) copyFileSync(path.join(from, f), path.join(dir, f));
  const c = JSON.parse(readFileSync(path.join(from, 'config.json'), 'utf8')) as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete c[k];
    else c[k] = v;
  }
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  return dir;
}

// Three prompts of ~45 tokens (three questions each), so positions reach where the variants differ.
const ref = loadReference('tiny-qa');
const base = ref.cases.filter((c) => c.mode === 'base');
const prompts = [0, 1, 2].map((i) => [
  ...base[i]!.prompt_ids,
  ...base[i + 3]!.prompt_ids.slice(1),
  ...base[i + 6]!.prompt_ids.slice(1),
]);

const maxGap = (a: number[], b: number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

describe('rope variants, converted and run, against a numpy forward pass from transformers', () => {
  const engines: Engine[] = [];
  afterAll(async () => {
    for (const e of engines) await e.close();
  });

  it.each(['tiny-qa', 'tiny-qwen2'] as const)('the numpy reference reproduces transformers on %s', (fx) => {
    const cases = loadReference(fx)
      .cases.filter((c) => c.mode === 'base')
      .slice(0, 4);
    const mine = numpyLogprobs(
      path.join(modelDir(fx), 'base-hf'),
      cases.map((c) => c.prompt_ids),
    );
    for (const [i, c] of cases.entries()) expect(maxGap(mine[i]!, logSoftmax(c.first_logits))).toBeLessThan(1e-4);
  });

  const linear = { type: 'linear', factor: 4 };
  it.each([
    ['linear x4, rope_parameters', { rope_parameters: { rope_type: 'linear', factor: 4, rope_theta: 10000 } }],
    ['linear x4, the older rope_scaling.type', { rope_parameters: null, rope_scaling: linear, rope_theta: 10000 }],
    [
      'yarn x4 from 64 positions',
      { rope_parameters: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64, rope_theta: 10000 } },
    ],
    [
      'yarn with its betas, older spelling',
      {
        rope_parameters: null,
        rope_scaling: { type: 'yarn', factor: 2, original_max_position_embeddings: 64, beta_fast: 16, beta_slow: 2 },
      },
    ],
    [
      'llama3 x8 from 64 positions',
      {
        rope_parameters: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
          rope_theta: 10000,
        },
      },
    ],
  ] as const)('%s: within 1e-4 of the reference, and away from the default rope', async (name, patch) => {
    const dir = variant('tiny-qa', name.replace(/\W+/g, '-'), patch);
    const out = path.join(tmp, `${path.basename(dir)}.gguf`);
    await convertHfModel({ dir, out });
    const want = numpyLogprobs(dir, prompts);
    const plain = numpyLogprobs(path.join(modelDir('tiny-qa'), 'base-hf'), prompts);
    const engine = await loadEngine('tiny-qa', { modelPath: out, ...exactNumerics });
    engines.push(engine);
    let moved = 0;
    for (const [i, ids] of prompts.entries()) {
      const r = await engine.generate(ids, { greedy: true, maxTokens: 1, logprobs: 20 }).result;
      const top = r.logprobs![0]!.top;
      expect(top[0]!.token).toBe(want[i]!.indexOf(Math.max(...want[i]!)));
      for (const t of top) expect(Math.abs(t.logprob - want[i]![t.token]!), `token ${t.token}`).toBeLessThan(1e-4);
      moved = Math.max(moved, maxGap(want[i]!, plain[i]!));
    }
    expect(moved).toBeGreaterThan(1e-2); // the variant changes the answer's numbers: the test can fail
    engines.splice(engines.indexOf(engine), 1);
    await engine.close();
  });

  it('both spellings of the key write the same GGUF metadata', async () => {
    const a = path.join(tmp, 'new.gguf');
    const b = path.join(tmp, 'old.gguf');
    await convertHfModel({
      dir: variant('tiny-qa', 'spell-new', { rope_parameters: { rope_type: 'linear', factor: 4 } }),
      out: a,
    });
    await convertHfModel({
      dir: variant('tiny-qa', 'spell-old', { rope_parameters: null, rope_scaling: linear }),
      out: b,
    });
    const meta = async (f: string) =>
      Object.fromEntries([...(await readGgufHeader(f)).metadata].filter(([k]) => k.startsWith('llama.rope')));
    expect(await meta(a)).toEqual(await meta(b));
    expect(await meta(a)).toMatchObject({ 'llama.rope.scaling.type': 'linear', 'llama.rope.scaling.factor': 4 });
  });

  it.each([
    ['dynamic', { rope_parameters: { rope_type: 'dynamic', factor: 2 } }, /rope type 'dynamic' is not supported/],
    [
      'longrope',
      { rope_parameters: null, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] } },
      /'longrope'/,
    ],
    ['an unknown key', { rope_parameters: { rope_type: 'yarn', factor: 4, mscale_all_dim: 1 } }, /mscale_all_dim/],
    [
      'a yarn attention factor llama.cpp ignores',
      { rope_parameters: { rope_type: 'yarn', factor: 4, attention_factor: 2 } },
      /attention_factor/,
    ],
    ['yarn without truncation', { rope_parameters: { rope_type: 'yarn', factor: 4, truncate: false } }, /truncate/],
    ['linear without a factor', { rope_parameters: { rope_type: 'linear' } }, /needs factor/],
    ['per-layer-type parameters', { rope_parameters: { full_attention: { rope_type: 'default' } } }, /full_attention/],
  ] as const)('refused by name: %s', async (_name, patch, why) => {
    const dir = variant('tiny-qa', `refuse-${_name.replace(/\W+/g, '-')}`, patch);
    await expect(convertHfModel({ dir, out: path.join(tmp, 'never.gguf') })).rejects.toThrow(why);
  });

  it('llama3 on a Qwen2 checkpoint is refused (llama.cpp reads rope_freqs only for Llama)', async () => {
    const dir = variant('tiny-qwen2', 'qwen-llama3', { rope_parameters: { rope_type: 'llama3', factor: 8 } });
    await expect(convertHfModel({ dir, out: path.join(tmp, 'never.gguf') })).rejects.toThrow(/llama3' on a qwen2/);
  });
});
