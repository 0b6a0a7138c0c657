// What differs between the model families convert-model writes, following llama.cpp's
// convert_hf_to_gguf.py (LlamaModel, Qwen2Model, BloomModel): the tensor names, the
// `{arch}.*` hyperparameters, and rows the converter reorders. hf-model.ts does the rest alike.
import { bloomQkvSource, LAYERS, literal, llamaPermutedRow, type Arch } from './architectures.ts';
import { IntakeError } from './errors.ts';
import type { KvValue } from './gguf-writer.ts';
import { ropeFromConfig } from './rope.ts';

export interface FamilyPlan {
  /** `{arch}.*` entries, keys without the prefix. */
  kv: [string, KvValue][];
  /** The source row of each output row of a tensor the converter reorders; null for the others. */
  rowSource(dest: string, rows: number): ((i: number) => number) | null;
  /** Tensors the converter computes (llama3's rope_freqs). */
  extra: { name: string; data: Float32Array }[];
  /** A change of every value of a tensor (Gemma's norms are stored as w - 1); null for none. */
  valueMap?(dest: string): ((x: number) => number) | null;
  /** Entries outside `{arch}.*` (tokenizer flags the family's converter sets). */
  globalKv?: [string, KvValue][];
}

export interface ModelFamily {
  /** llama.cpp's name of a checkpoint tensor; null for one it recomputes; throws for one with no place. */
  tensorName(hf: string): string | null;
  plan(c: Record<string, unknown>, arch: Arch): FamilyPlan;
}

const u32 = (value: number): KvValue => ({ type: 'u32', value });
const f32 = (value: number): KvValue => ({ type: 'f32', value });
const noName = (hf: string) => new IntakeError(`tensor '${hf}' has no llama.cpp counterpart`);

/** A config number under any of its names (Bloom's config spells them several ways). */
function hparam(c: Record<string, unknown>, ...keys: string[]): number {
  for (const k of keys) if (typeof c[k] === 'number') return c[k] as number;
  throw new IntakeError(`config.json: no ${keys.join(' or ')}`);
}

// Llama, Mistral, Qwen2, Qwen3: the linear modules (attention with an optional bias, as Qwen2 has)
// and the norms; Qwen3 adds an RMSNorm of each head's queries and keys.
const llamaLayer = (arch: Arch): [RegExp, string][] => [
  ...Object.entries(LAYERS.llama.linear).map(
    ([hf, gguf]) =>
      [new RegExp(`^${literal(hf)}\\.(weight${gguf.startsWith('attn_') ? '|bias' : ''})$`), gguf] as [RegExp, string],
  ),
  [/^input_layernorm\.(weight)$/, 'attn_norm'],
  [/^post_attention_layernorm\.(weight)$/, 'ffn_norm'],
  ...(arch === 'qwen3'
    ? ([
        [/^self_attn\.q_norm\.(weight)$/, 'attn_q_norm'],
        [/^self_attn\.k_norm\.(weight)$/, 'attn_k_norm'],
      ] as [RegExp, string][])
    : []),
];
const LLAMA_TENSOR = new RegExp(`^${literal(LAYERS.llama.prefix)}\\.(\\d+)\\.(.+)$`);

const llamaFamily = (arch: Arch): ModelFamily => ({
  tensorName(hf) {
    if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
    if (hf === 'model.norm.weight') return 'output_norm.weight';
    if (hf === 'lm_head.weight') return 'output.weight';
    const m = LLAMA_TENSOR.exec(hf);
    if (m) {
      if (m[2]!.endsWith('rotary_emb.inv_freq')) return null; // recomputed by llama.cpp
      for (const [re, name] of llamaLayer(arch)) {
        const k = re.exec(m[2]!);
        if (k) return `blk.${m[1]}.${name}.${k[1]}`;
      }
    }
    throw noName(hf);
  },
  plan(c, arch) {
    const nHead = hparam(c, 'num_attention_heads');
    const nHeadKv = typeof c.num_key_value_heads === 'number' ? c.num_key_value_heads : nHead;
    const nEmbd = hparam(c, 'hidden_size');
    const headDim = typeof c.head_dim === 'number' ? c.head_dim : nEmbd / nHead;
    const rope = ropeFromConfig(c, headDim);
    if (rope.freqFactors && arch !== 'llama') {
      throw new IntakeError(`config.json: rope 'llama3' on a ${arch} model is not supported`);
    }
    const kv: [string, KvValue][] = [
      ['block_count', u32(hparam(c, 'num_hidden_layers'))],
      ['context_length', u32(hparam(c, 'max_position_embeddings'))],
      ['embedding_length', u32(nEmbd)],
      ['feed_forward_length', u32(hparam(c, 'intermediate_size'))],
      ['attention.head_count', u32(nHead)],
      ['attention.head_count_kv', u32(nHeadKv)],
      ['rope.freq_base', f32(rope.freqBase)],
      ...rope.kv,
      ['attention.layer_norm_rms_epsilon', f32(hparam(c, 'rms_norm_eps'))],
    ];
    // TextModel writes the head width whenever config.json gives it (Qwen3's differs from
    // hidden / heads); LlamaModel always, with the vocabulary size and the rope width.
    if (arch === 'llama' || typeof c.head_dim === 'number') {
      kv.push(['attention.key_length', u32(headDim)], ['attention.value_length', u32(headDim)]);
    }
    if (arch === 'llama') kv.push(['vocab_size', u32(hparam(c, 'vocab_size'))], ['rope.dimension_count', u32(headDim)]);
    return {
      kv,
      // LlamaModel permutes q/k rows for llama.cpp's rope layout.
      rowSource: (dest, rows) => {
        if (arch !== 'llama') return null;
        const heads = dest.includes('.attn_q.') ? nHead : dest.includes('.attn_k.') ? nHeadKv : 0;
        return heads ? (i) => llamaPermutedRow(i, rows, heads) : null;
      },
      extra: rope.freqFactors ? [{ name: 'rope_freqs.weight', data: rope.freqFactors }] : [],
    };
  },
});

// Bloom: names with or without the `transformer.` prefix (BloomModel saves without it).
const BLOOM_LAYER: Record<string, string> = {
  input_layernorm: 'attn_norm',
  post_attention_layernorm: 'ffn_norm',
  ...LAYERS.bloom.linear,
};
const BLOOM_TENSOR = /^(?:transformer\.)?h\.(\d+)\.(.+)\.(weight|bias)$/;

const bloomFamily: ModelFamily = {
  tensorName(hf) {
    const top: Record<string, string> = {
      word_embeddings: 'token_embd',
      word_embeddings_layernorm: 'token_embd_norm',
      ln_f: 'output_norm',
    };
    const t = /^(?:transformer\.)?(word_embeddings|word_embeddings_layernorm|ln_f)\.(weight|bias)$/.exec(hf);
    if (t) return `${top[t[1]!]}.${t[2]}`;
    if (hf === 'lm_head.weight') return 'output.weight';
    const m = BLOOM_TENSOR.exec(hf);
    const name = m && BLOOM_LAYER[m[2]!];
    if (m && name) return `blk.${m[1]}.${name}.${m[3]}`;
    throw noName(hf);
  },
  plan(c) {
    for (const k of ['alibi', 'apply_residual_connection_post_layernorm', 'slow_but_exact']) {
      if (c[k] === true) throw new IntakeError(`config.json: Bloom with ${k}: true is not supported`);
    }
    const nEmbd = hparam(c, 'hidden_size', 'n_embed');
    const nHead = hparam(c, 'n_head', 'num_attention_heads');
    // BloomModel's choices: the context length is seq_length, else the embedding width (Bloom uses
    // ALiBi, which has no trained length), and the feed-forward width 4 x n_embd.
    return {
      kv: [
        ['context_length', u32(typeof c.seq_length === 'number' ? c.seq_length : nEmbd)],
        ['embedding_length', u32(nEmbd)],
        ['feed_forward_length', u32(4 * nEmbd)],
        ['block_count', u32(hparam(c, 'n_layer', 'num_hidden_layers'))],
        ['attention.head_count', u32(nHead)],
        ['attention.head_count_kv', u32(nHead)],
        ['attention.layer_norm_epsilon', f32(hparam(c, 'layer_norm_epsilon'))],
      ],
      rowSource: (dest) => (dest.includes('.attn_qkv.') ? (i) => bloomQkvSource(i, nEmbd, nHead) : null),
      extra: [],
    };
  },
};

// Phi-3 (Phi3MiniModel): fused qkv and gate_up projections, the rope width from the partial rotary
// factor, and a sliding window, which llama.cpp does not apply to Phi-3 ("Phi SWA is currently
// disabled"): the trained context is written as at most the window, so that no prompt reaches past
// it and every answer is what transformers' windowed attention gives.
const PHI3_LAYER: Record<string, string> = {
  input_layernorm: 'attn_norm',
  post_attention_layernorm: 'ffn_norm',
  ...LAYERS.phi3.linear,
};
const LAYER_WEIGHT = new RegExp(`^${literal(LAYERS.phi3.prefix)}\\.(\\d+)\\.(.+)\\.weight$`);

/**
 * Names for the families whose every tensor is a weight under model.layers.<n> (Phi-3, Gemma): the
 * embeddings, the final norm, lm_head (null: not read, tied), and a layer table.
 */
function layerWeights(table: Record<string, string>, lmHead: string | null): ModelFamily['tensorName'] {
  return (hf) => {
    if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
    if (hf === 'model.norm.weight') return 'output_norm.weight';
    if (hf === 'lm_head.weight') return lmHead;
    const m = LAYER_WEIGHT.exec(hf);
    const name = m && table[m[2]!];
    if (m && name) return `blk.${m[1]}.${name}.weight`;
    throw noName(hf);
  };
}

const phi3Family: ModelFamily = {
  tensorName: layerWeights(PHI3_LAYER, 'output.weight'),
  plan(c) {
    const nEmbd = hparam(c, 'hidden_size');
    const nHead = hparam(c, 'num_attention_heads');
    const rope = ropeFromConfig(c, nEmbd / nHead);
    if (rope.kv.length || rope.freqFactors)
      throw new IntakeError('config.json: Phi-3 with rope scaling is not supported');
    const maxPos = hparam(c, 'max_position_embeddings');
    const window = typeof c.sliding_window === 'number' && c.sliding_window > 0 ? c.sliding_window : 0;
    const p = (c.rope_parameters ?? c.rope_scaling ?? {}) as Record<string, unknown>;
    const orig = p.original_max_position_embeddings ?? c.original_max_position_embeddings;
    const kv: [string, KvValue][] = [
      ['context_length', u32(window ? Math.min(maxPos, window) : maxPos)],
      ...(typeof orig === 'number' ? [['rope.scaling.original_context_length', u32(orig)] as [string, KvValue]] : []),
      ['embedding_length', u32(nEmbd)],
      ['feed_forward_length', u32(hparam(c, 'intermediate_size'))],
      ['block_count', u32(hparam(c, 'num_hidden_layers'))],
      ['attention.head_count', u32(nHead)],
      ['attention.head_count_kv', u32(hparam(c, 'num_key_value_heads'))],
      ['attention.layer_norm_rms_epsilon', f32(hparam(c, 'rms_norm_eps'))],
      ['rope.dimension_count', u32(Math.floor(nEmbd / nHead))],
      ['rope.freq_base', f32(rope.freqBase)],
      ['attention.sliding_window', u32(window)],
    ];
    return { kv, rowSource: () => null, extra: [] };
  },
};

// Gemma 2 (Gemma2Model): pre and post norms around attention and the feed-forward, stored as w - 1
// (the converter adds 1), logit soft-capping, alternating sliding-window layers, no lm_head (tied).
// llama.cpp takes the attention scale from the model size, not from query_pre_attn_scalar, and
// writes no rope base: a config that differs from what llama.cpp assumes is refused by name.
const GEMMA2_LAYER: Record<string, string> = {
  input_layernorm: 'attn_norm',
  post_attention_layernorm: 'post_attention_norm',
  pre_feedforward_layernorm: 'ffn_norm',
  post_feedforward_layernorm: 'post_ffw_norm',
  ...LAYERS.gemma2.linear,
};

/**
 * What both Gemmas need, checked against what llama.cpp computes: its GELU, and its attention scale,
 * which it takes from the model size (the 27B, `layers27B` layers deep: hidden / heads; else the head
 * width) rather than from query_pre_attn_scalar.
 */
function gemmaShape(c: Record<string, unknown>, family: string, headDim: number, layers27B: number) {
  const nEmbd = hparam(c, 'hidden_size');
  const nHead = hparam(c, 'num_attention_heads');
  const nLayer = hparam(c, 'num_hidden_layers');
  const act = c.hidden_activation ?? c.hidden_act;
  if (act !== 'gelu_pytorch_tanh') {
    throw new IntakeError(
      `config.json: ${family} with activation ${JSON.stringify(act)} is not supported (llama.cpp uses gelu_pytorch_tanh)`,
    );
  }
  const scale = typeof c.query_pre_attn_scalar === 'number' ? c.query_pre_attn_scalar : headDim;
  const llamaScale = nLayer === layers27B ? nEmbd / nHead : headDim;
  if (scale !== llamaScale) {
    throw new IntakeError(
      `config.json: ${family} with query_pre_attn_scalar ${scale} is not supported (llama.cpp scales by ${llamaScale} for ${nLayer} layers)`,
    );
  }
  return { nEmbd, nHead, nLayer, headDim };
}

const gemma2Family: ModelFamily = {
  tensorName: layerWeights(GEMMA2_LAYER, null),
  plan(c) {
    const { nEmbd, nHead, nLayer, headDim } = gemmaShape(c, 'Gemma 2', hparam(c, 'head_dim'), 46);
    const rope = ropeFromConfig(c, headDim);
    if (rope.kv.length || rope.freqFactors || rope.freqBase !== 10000) {
      throw new IntakeError(
        'config.json: Gemma 2 with a rope other than the default at rope_theta 10000 is not supported (llama.cpp assumes it)',
      );
    }
    return {
      kv: [
        ['context_length', u32(hparam(c, 'max_position_embeddings'))],
        ['embedding_length', u32(nEmbd)],
        ['block_count', u32(nLayer)],
        ['feed_forward_length', u32(hparam(c, 'intermediate_size'))],
        ['attention.head_count', u32(nHead)],
        ['attention.head_count_kv', u32(typeof c.num_key_value_heads === 'number' ? c.num_key_value_heads : nHead)],
        ['attention.layer_norm_rms_epsilon', f32(hparam(c, 'rms_norm_eps'))],
        ['attention.key_length', u32(headDim)],
        ['attention.value_length', u32(headDim)],
        ['attn_logit_softcapping', f32(hparam(c, 'attn_logit_softcapping'))],
        ['final_logit_softcapping', f32(hparam(c, 'final_logit_softcapping'))],
        ['attention.sliding_window', u32(hparam(c, 'sliding_window'))],
      ],
      rowSource: () => null,
      extra: [],
      valueMap: (dest) => (dest.endsWith('norm.weight') ? (x) => x + 1 : null),
      globalKv: [['tokenizer.ggml.add_space_prefix', { type: 'bool', value: false }]],
    };
  },
};

// Gemma 3 (Gemma3Model): Gemma 2's layout with per-head q/k norms (also stored as w - 1), no
// attention soft-capping, and two ropes: full-attention layers at rope_theta with their scaling
// (linear x8 on 4B and up), sliding layers at the local base unscaled, every sixth layer full. In
// transformers 5 the ropes are rope_parameters.full_attention / sliding_attention; before, rope_theta
// + rope_scaling and rope_local_base_freq. llama.cpp fixes the period at 6 and scales attention by
// model size: other layer patterns, or another query_pre_attn_scalar, are refused by name.
const GEMMA3_LAYER: Record<string, string> = {
  ...GEMMA2_LAYER,
  'self_attn.q_norm': 'attn_q_norm',
  'self_attn.k_norm': 'attn_k_norm',
};

const gemma3Family: ModelFamily = {
  tensorName: layerWeights(GEMMA3_LAYER, null),
  plan(c) {
    const { nEmbd, nHead, nLayer, headDim } = gemmaShape(
      c,
      'Gemma 3',
      typeof c.head_dim === 'number' ? c.head_dim : 256,
      62,
    );
    if (c.attn_logit_softcapping != null)
      throw new IntakeError('config.json: Gemma 3 with attn_logit_softcapping is not supported');
    const types = Array.isArray(c.layer_types)
      ? (c.layer_types as string[])
      : Array.from({ length: nLayer }, (_, i) =>
          (i + 1) % Number(c.sliding_window_pattern ?? 6) === 0 ? 'full_attention' : 'sliding_attention',
        );
    const period6 = types.every((t, i) => t === ((i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention'));
    if (!period6)
      throw new IntakeError(
        'config.json: Gemma 3 with a layer pattern other than five sliding layers then one full is not supported',
      );
    const rp = (c.rope_parameters ?? {}) as Record<string, Record<string, unknown> | undefined>;
    const full = rp.full_attention ?? {
      ...((c.rope_scaling as Record<string, unknown> | null) ?? {}),
      rope_theta: c.rope_theta ?? 1e6,
    };
    const sliding = rp.sliding_attention ?? { rope_type: 'default', rope_theta: c.rope_local_base_freq ?? 10000 };
    const global = ropeFromConfig({ rope_parameters: full }, headDim);
    const local = ropeFromConfig({ rope_parameters: sliding }, headDim);
    if (global.freqFactors || local.kv.length || local.freqFactors) {
      throw new IntakeError(
        'config.json: Gemma 3 rope: scaling other than linear on full layers, or any on sliding layers, is not supported',
      );
    }
    const kv: [string, KvValue][] = [
      ['context_length', u32(typeof c.max_position_embeddings === 'number' ? c.max_position_embeddings : 131072)],
      ['embedding_length', u32(nEmbd)],
      ['block_count', u32(nLayer)],
      ['feed_forward_length', u32(hparam(c, 'intermediate_size'))],
      ['attention.head_count', u32(nHead)],
      ['attention.head_count_kv', u32(typeof c.num_key_value_heads === 'number' ? c.num_key_value_heads : 4)],
      ['attention.layer_norm_rms_epsilon', f32(typeof c.rms_norm_eps === 'number' ? c.rms_norm_eps : 1e-6)],
      ['attention.key_length', u32(headDim)],
      ['attention.value_length', u32(headDim)],
      ['rope.freq_base', f32(global.freqBase)],
      ...global.kv,
      ['rope.freq_base_swa', f32(local.freqBase)],
      ['attention.sliding_window', u32(hparam(c, 'sliding_window'))],
    ];
    if (typeof c.final_logit_softcapping === 'number')
      kv.push(['final_logit_softcapping', f32(c.final_logit_softcapping)]);
    return {
      kv,
      rowSource: () => null,
      extra: [],
      valueMap: (dest) => (dest.endsWith('norm.weight') ? (x) => x + 1 : null),
      globalKv: [['tokenizer.ggml.add_space_prefix', { type: 'bool', value: false }]],
    };
  },
};

export const FAMILIES: Partial<Record<Arch, ModelFamily>> = {
  gemma2: gemma2Family,
  gemma3: gemma3Family,
  phi3: phi3Family,
  llama: llamaFamily('llama'),
  qwen2: llamaFamily('qwen2'),
  qwen3: llamaFamily('qwen3'),
  bloom: bloomFamily,
};
