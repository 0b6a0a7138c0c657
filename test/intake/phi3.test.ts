// Phi-3 through convert-model: fused qkv and gate_up projections, random weights of real layout
// around tiny-qa's SentencePiece tokenizer, held to the numpy forward pass written from transformers;
// and its sliding window, which llama.cpp does not apply to Phi-3, bounding the trained context.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { exactNumerics, loadEngine, modelDir } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';
import { basePrompts, expectFirstTokens, expectLoraAsMerged, numpyLogprobs } from './reference.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-phi3-'));

function writePhi3(dir: string, slidingWindow: number | null): void {
  mkdirSync(dir, { recursive: true });
  const qa = path.join(modelDir('tiny-qa'), 'base-hf');
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) copyFileSync(path.join(qa, f), path.join(dir, f));
  const H = 64;
  const heads = 4;
  const F = 96;
  const V = 448;
  writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['Phi3ForCausalLM'],
      model_type: 'phi3',
      hidden_size: H,
      intermediate_size: F,
      num_attention_heads: heads,
      num_key_value_heads: heads,
      num_hidden_layers: 2,
      max_position_embeddings: 4096,
      original_max_position_embeddings: 4096,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      rope_scaling: null,
      sliding_window: slidingWindow,
      vocab_size: V,
      bos_token_id: 1,
      eos_token_id: 2,
      tie_word_embeddings: false,
    }),
  );
  let seed = 3;
  const rand = (shape: number[], scale: number, mean = 0) => ({
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return mean + scale * (seed / 2 ** 32 - 0.5);
    }),
  });
  const t: Record<string, { shape: number[]; data: Float32Array }> = {
    'model.embed_tokens.weight': rand([V, H], 2),
    'lm_head.weight': rand([V, H], 1),
    'model.norm.weight': rand([H], 0.4, 1),
  };
  for (let l = 0; l < 2; l++) {
    const p = `model.layers.${l}.`;
    t[`${p}input_layernorm.weight`] = rand([H], 0.4, 1);
    t[`${p}post_attention_layernorm.weight`] = rand([H], 0.4, 1);
    t[`${p}self_attn.qkv_proj.weight`] = rand([3 * H, H], 0.5);
    t[`${p}self_attn.o_proj.weight`] = rand([H, H], 0.4);
    t[`${p}mlp.gate_up_proj.weight`] = rand([2 * F, H], 0.5);
    t[`${p}mlp.down_proj.weight`] = rand([H, F], 0.4);
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
}

describe('Phi-3', () => {
  it('converts (fused qkv and gate_up) and answers within 1e-4 of the reference', async () => {
    // Not named phi3: llama.cpp then sets attributes on Phi-3's own special tokens (<|endoftext|>),
    // which tiny-qa's vocabulary lacks.
    const dir = path.join(tmp, 'p3-tiny');
    writePhi3(dir, null);
    const gguf = path.join(tmp, 'phi3.gguf');
    await convertHfModel({ dir, out: gguf });
    const h = await readGgufHeader(gguf);
    expect(h.metadata.get('general.architecture')).toBe('phi3');
    expect(h.metadata.get('phi3.context_length')).toBe(4096);
    const prompts = basePrompts('tiny-qa', 3);
    const engine = await loadEngine('tiny-qa', { modelPath: gguf, ...exactNumerics });
    try {
      await expectFirstTokens(engine, prompts, numpyLogprobs(dir, prompts), 1e-4);
    } finally {
      await engine.close();
    }
  });

  it('a PEFT LoRA on the fused projections converts and applies as the merged reference answers', async () => {
    const dir = path.join(tmp, 'p3-lora-base');
    writePhi3(dir, null);
    await expectLoraAsMerged({
      dir,
      fixture: 'tiny-qa',
      work: mkdtempSync(path.join(tmp, 'lora-')),
      targets: ['qkv_proj', 'gate_up_proj'],
      modules: (r) =>
        [0, 1].flatMap((l) => [
          { module: `model.layers.${l}.self_attn.qkv_proj`, inDim: 64, outDim: 192, r },
          { module: `model.layers.${l}.mlp.gate_up_proj`, inDim: 64, outDim: 192, r },
        ]),
      tolerance: 1e-4,
    });
  });

  it('a sliding window bounds the trained context (llama.cpp would attend past it), and the engine with it', async () => {
    const dir = path.join(tmp, 'p3-swa');
    writePhi3(dir, 2047);
    const gguf = path.join(tmp, 'phi3-swa.gguf');
    await convertHfModel({ dir, out: gguf });
    const h = await readGgufHeader(gguf);
    expect(h.metadata.get('phi3.context_length')).toBe(2047);
    expect(h.metadata.get('phi3.attention.sliding_window')).toBe(2047);
    const engine = await loadEngine('tiny-qa', { modelPath: gguf, contextSize: 4096 });
    try {
      expect(engine.model).toMatchObject({ trainContext: 2047, contextPerSlot: 2047 });
    } finally {
      await engine.close();
    }
  });
});
