// Gemma 2 and Gemma 3 through convert-model: random weights of their layouts around tiny-qa's
// SentencePiece tokenizer, held to the numpy forward pass written from transformers' Gemma2 and
// Gemma3 (reference_forward.py); and the configs llama.cpp would compute differently, refused by name.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { exactNumerics, loadEngine, modelDir } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';
import { basePrompts, expectFirstTokens, expectLoraAsMerged, numpyLogprobs } from './reference.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-gemma2-'));
const H = 64;
const HEADS = 4;
const KV = 2;
const HD = 16;
const F = 96;
const V = 448;

function writeGemma(dir: string, patch: Record<string, unknown> = {}, gemma3 = false): void {
  mkdirSync(dir, { recursive: true });
  const qa = path.join(modelDir('tiny-qa'), 'base-hf');
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) copyFileSync(path.join(qa, f), path.join(dir, f));
  const config = {
    architectures: ['Gemma2ForCausalLM'],
    model_type: 'gemma2',
    hidden_size: H,
    intermediate_size: F,
    num_attention_heads: HEADS,
    num_key_value_heads: KV,
    head_dim: HD,
    num_hidden_layers: gemma3 ? 6 : 2,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: HD,
    attn_logit_softcapping: 50,
    final_logit_softcapping: 30,
    sliding_window: 4096,
    vocab_size: V,
    bos_token_id: 1,
    eos_token_id: 2,
    tie_word_embeddings: true,
    ...patch,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  let seed = 9;
  const rand = (shape: number[], scale: number, mean = 0) => ({
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return mean + scale * (seed / 2 ** 32 - 0.5);
    }),
  });
  const t: Record<string, { shape: number[]; data: Float32Array }> = {
    'model.embed_tokens.weight': rand([V, H], 0.4),
    'model.norm.weight': rand([H], 0.4),
  };
  for (let l = 0; l < (gemma3 ? 6 : 2); l++) {
    const p = `model.layers.${l}.`;
    if (gemma3) {
      t[`${p}self_attn.q_norm.weight`] = rand([HD], 0.4);
      t[`${p}self_attn.k_norm.weight`] = rand([HD], 0.4);
    }
    for (const n of [
      'input_layernorm',
      'post_attention_layernorm',
      'pre_feedforward_layernorm',
      'post_feedforward_layernorm',
    ]) {
      t[`${p}${n}.weight`] = rand([H], 0.4); // stored as w - 1, as Gemma's are
    }
    t[`${p}self_attn.q_proj.weight`] = rand([HEADS * HD, H], 0.5);
    t[`${p}self_attn.k_proj.weight`] = rand([KV * HD, H], 0.5);
    t[`${p}self_attn.v_proj.weight`] = rand([KV * HD, H], 0.5);
    t[`${p}self_attn.o_proj.weight`] = rand([H, HEADS * HD], 0.4);
    t[`${p}mlp.gate_proj.weight`] = rand([F, H], 0.5);
    t[`${p}mlp.up_proj.weight`] = rand([F, H], 0.5);
    t[`${p}mlp.down_proj.weight`] = rand([H, F], 0.4);
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
}

describe('Gemma 2', () => {
  it('converts (norms + 1, soft-capping, no lm_head) and answers within 1e-4 of the reference', async () => {
    const dir = path.join(tmp, 'g2-tiny');
    writeGemma(dir);
    const gguf = path.join(tmp, 'g2.gguf');
    await convertHfModel({ dir, out: gguf });
    const m = (await readGgufHeader(gguf)).metadata;
    expect(m.get('general.architecture')).toBe('gemma2');
    expect(m.get('gemma2.final_logit_softcapping')).toBe(30);
    expect(m.get('tokenizer.ggml.add_space_prefix')).toBe(false);
    const prompts = basePrompts('tiny-qa', 3);
    // ggml's CPU GELU goes through a float16 table: the reference rounds alike (see bloom.test.ts).
    // Measured: 8.4e-6 from that reference, 6.0e-4 from transformers' own GELU.
    const engine = await loadEngine('tiny-qa', { modelPath: gguf, ...exactNumerics });
    try {
      const { moved } = await expectFirstTokens(engine, prompts, numpyLogprobs(dir, prompts, 'ggml-f16'), 1e-4, {
        other: numpyLogprobs(dir, prompts),
      });
      expect(moved).toBeLessThan(2e-2); // the float16 rounding alone
    } finally {
      await engine.close();
    }
  });

  it.each([
    ['an attention scale llama.cpp would not use', { query_pre_attn_scalar: 32 }, /query_pre_attn_scalar 32/],
    ['another rope base', { rope_theta: 1e6 }, /rope_theta 10000/],
    ['another activation', { hidden_activation: 'gelu' }, /activation "gelu"/],
  ])('refused by name: %s', async (_name, patch, why) => {
    const dir = path.join(tmp, `g2-${_name.replace(/\W+/g, '-')}`);
    writeGemma(dir, patch);
    await expect(convertHfModel({ dir, out: path.join(tmp, 'never.gguf') })).rejects.toThrow(why);
  });
});

// Gemma 3 as transformers 5 writes it: a rope per layer type, and the layer types.
const GEMMA3 = {
  architectures: ['Gemma3ForCausalLM'],
  model_type: 'gemma3_text',
  attn_logit_softcapping: null,
  final_logit_softcapping: null,
  sliding_window: 512,
  layer_types: [
    'sliding_attention',
    'sliding_attention',
    'sliding_attention',
    'sliding_attention',
    'sliding_attention',
    'full_attention',
  ],
  rope_theta: undefined,
  rope_parameters: {
    full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 },
    sliding_attention: { rope_type: 'default', rope_theta: 10000 },
  },
};

describe('Gemma 3', () => {
  it('converts (q/k norms, a rope per layer type) and answers within 1e-3 of the reference', async () => {
    const dir = path.join(tmp, 'g3-tiny');
    writeGemma(dir, GEMMA3, true);
    const gguf = path.join(tmp, 'g3.gguf');
    await convertHfModel({ dir, out: gguf });
    const m = (await readGgufHeader(gguf)).metadata;
    expect(Object.fromEntries([...m].filter(([k]) => k.startsWith('gemma3.rope')))).toEqual({
      'gemma3.rope.freq_base': 1e6,
      'gemma3.rope.scaling.type': 'linear',
      'gemma3.rope.scaling.factor': 8,
      'gemma3.rope.freq_base_swa': 10000,
    });
    const prompts = basePrompts('tiny-qa', 3);
    const want = numpyLogprobs(dir, prompts, 'ggml-f16');
    // The same model with one rope everywhere: the test can tell the two ropes apart.
    const oneRope = path.join(tmp, 'g3-one-rope');
    writeGemma(
      oneRope,
      {
        ...GEMMA3,
        rope_parameters: {
          full_attention: { rope_type: 'default', rope_theta: 10000 },
          sliding_attention: { rope_type: 'default', rope_theta: 10000 },
        },
      },
      true,
    );
    const plain = numpyLogprobs(oneRope, prompts, 'ggml-f16');
    const engine = await loadEngine('tiny-qa', { modelPath: gguf, ...exactNumerics });
    try {
      // Six GELU layers through ggml's float16 table: an activation landing near a rounding boundary
      // can round one ulp apart from the float64 reference (see bloom.test.ts); measured 2.2e-4 at worst.
      const { moved } = await expectFirstTokens(engine, prompts, want, 1e-3, { other: plain });
      expect(moved).toBeGreaterThan(1e-2);
    } finally {
      await engine.close();
    }
  });

  it('a PEFT LoRA on all seven projections converts and applies as the merged reference answers', async () => {
    const dir = path.join(tmp, 'g3-lora-base');
    writeGemma(dir, GEMMA3, true);
    const shapes: [string, number, number][] = [
      ['self_attn.q_proj', H, HEADS * HD],
      ['self_attn.k_proj', H, KV * HD],
      ['self_attn.v_proj', H, KV * HD],
      ['self_attn.o_proj', HEADS * HD, H],
      ['mlp.gate_proj', H, F],
      ['mlp.up_proj', H, F],
      ['mlp.down_proj', F, H],
    ];
    await expectLoraAsMerged({
      dir,
      fixture: 'tiny-qa',
      work: mkdtempSync(path.join(tmp, 'lora-')),
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      modules: (r) =>
        [0, 1, 2, 3, 4, 5].flatMap((l) =>
          shapes.map(([m, inDim, outDim]) => ({ module: `model.layers.${l}.${m}`, inDim, outDim, r })),
        ),
      tolerance: 1e-3,
      gelu: 'ggml-f16',
    });
  });

  it('the older spelling (rope_theta, rope_scaling, rope_local_base_freq, sliding_window_pattern) writes the same', async () => {
    const a = path.join(tmp, 'g3-new.gguf');
    const b = path.join(tmp, 'g3-old.gguf');
    writeGemma(path.join(tmp, 'g3-new'), GEMMA3, true);
    writeGemma(
      path.join(tmp, 'g3-old'),
      {
        ...GEMMA3,
        layer_types: undefined,
        rope_parameters: undefined,
        rope_theta: 1e6,
        rope_scaling: { rope_type: 'linear', factor: 8 },
        rope_local_base_freq: 10000,
        sliding_window_pattern: 6,
      },
      true,
    );
    await convertHfModel({ dir: path.join(tmp, 'g3-new'), out: a });
    await convertHfModel({ dir: path.join(tmp, 'g3-old'), out: b });
    const meta = async (f: string) =>
      Object.fromEntries([...(await readGgufHeader(f)).metadata].filter(([k]) => k.startsWith('gemma3.')));
    expect(await meta(b)).toEqual(await meta(a));
  });

  it.each([
    [
      'a layer pattern other than 5 + 1',
      {
        layer_types: [
          'full_attention',
          'sliding_attention',
          'sliding_attention',
          'sliding_attention',
          'sliding_attention',
          'sliding_attention',
        ],
      },
      /layer pattern/,
    ],
    [
      'scaling on the sliding layers',
      {
        rope_parameters: {
          full_attention: { rope_type: 'default', rope_theta: 1e6 },
          sliding_attention: { rope_type: 'linear', factor: 2, rope_theta: 10000 },
        },
      },
      /sliding layers/,
    ],
    ['attention soft-capping', { attn_logit_softcapping: 50 }, /attn_logit_softcapping/],
  ])('refused by name: %s', async (_name, patch, why) => {
    const dir = path.join(tmp, `g3-${_name.replace(/\W+/g, '-')}`);
    writeGemma(dir, { ...GEMMA3, ...patch }, true);
    await expect(convertHfModel({ dir, out: path.join(tmp, 'never.gguf') })).rejects.toThrow(why);
  });
});
