// Qwen3 through convert-model: tiny-qwen2's checkpoint made a Qwen3 (per-head q/k RMSNorm, a head
// width of 48 where hidden / heads is 32, no attention biases), converted and run, held to the
// numpy forward pass written from transformers (reference_forward.py).
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { SafetensorsFile } from '../../src/intake/safetensors.ts';
import { exactNumerics, loadEngine, modelDir } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';
import { basePrompts, expectFirstTokens, expectLoraAsMerged, numpyLogprobs } from './reference.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-qwen3-'));
const HEAD = 48;

async function writeQwen3(dir: string): Promise<void> {
  const from = path.join(modelDir('tiny-qwen2'), 'base-hf');
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(from)) if (f !== 'model.safetensors') copyFileSync(path.join(from, f), path.join(dir, f));
  const c = JSON.parse(readFileSync(path.join(from, 'config.json'), 'utf8')) as Record<string, unknown>;
  Object.assign(c, { architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', head_dim: HEAD, attention_bias: false });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  const H = c.hidden_size as number;
  const heads = c.num_attention_heads as number;
  const kv = c.num_key_value_heads as number;
  let seed = 5;
  const rand = (n: number, scale: number, mean = 0) =>
    Float32Array.from({ length: n }, () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return mean + scale * (seed / 2 ** 32 - 0.5);
    });
  const st = await SafetensorsFile.open(path.join(from, 'model.safetensors'));
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, e] of st.tensors) {
    if (/self_attn\.(q|k|v|o)_proj/.test(name)) continue; // remade at the new head width, no biases
    out[name] = { shape: e.shape, data: await st.readF32(name) };
  }
  await st.close();
  for (let l = 0; l < (c.num_hidden_layers as number); l++) {
    const p = `model.layers.${l}.self_attn.`;
    out[`${p}q_proj.weight`] = { shape: [heads * HEAD, H], data: rand(heads * HEAD * H, 0.3) };
    out[`${p}k_proj.weight`] = { shape: [kv * HEAD, H], data: rand(kv * HEAD * H, 0.3) };
    out[`${p}v_proj.weight`] = { shape: [kv * HEAD, H], data: rand(kv * HEAD * H, 0.3) };
    out[`${p}o_proj.weight`] = { shape: [H, heads * HEAD], data: rand(H * heads * HEAD, 0.2) };
    out[`${p}q_norm.weight`] = { shape: [HEAD], data: rand(HEAD, 0.5, 1) };
    out[`${p}k_norm.weight`] = { shape: [HEAD], data: rand(HEAD, 0.5, 1) };
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), out);
}

describe('Qwen3', () => {
  it('converts with its q/k norms and head width, and answers within 1e-4 of the reference', async () => {
    const dir = path.join(tmp, 'qwen3-tiny');
    await writeQwen3(dir);
    const gguf = path.join(tmp, 'qwen3.gguf');
    await convertHfModel({ dir, out: gguf });
    const h = await readGgufHeader(gguf);
    expect(h.metadata.get('general.architecture')).toBe('qwen3');
    expect(h.metadata.get('qwen3.attention.key_length')).toBe(HEAD);
    expect(h.tensors.map((t) => t.name)).toContain('blk.0.attn_q_norm.weight');

    const prompts = basePrompts('tiny-qwen2', 3);
    const engine = await loadEngine('tiny-qwen2', { modelPath: gguf, ...exactNumerics });
    try {
      await expectFirstTokens(engine, prompts, numpyLogprobs(dir, prompts), 1e-4);
    } finally {
      await engine.close();
    }
  });

  it('a PEFT LoRA on q/k/v/o at that head width converts and applies as the merged reference answers', async () => {
    const dir = path.join(tmp, 'qwen3-lora-base');
    await writeQwen3(dir);
    await expectLoraAsMerged({
      dir,
      fixture: 'tiny-qwen2',
      work: mkdtempSync(path.join(tmp, 'lora-')),
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      modules: (r) =>
        [0, 1, 2, 3].flatMap((l) => [
          { module: `model.layers.${l}.self_attn.q_proj`, inDim: 128, outDim: 4 * HEAD, r },
          { module: `model.layers.${l}.self_attn.k_proj`, inDim: 128, outDim: 2 * HEAD, r },
          { module: `model.layers.${l}.self_attn.v_proj`, inDim: 128, outDim: 2 * HEAD, r },
          { module: `model.layers.${l}.self_attn.o_proj`, inDim: 4 * HEAD, outDim: 128, r },
        ]),
      tolerance: 1e-4,
    });
  });
});
