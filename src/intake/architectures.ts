// The model families intake knows, in one table: which Hugging Face architectures belong to each
// llama.cpp architecture, and each family's per-layer linear modules (the Hugging Face module path
// inside a layer -> llama.cpp's tensor name), which both the model converter (hf-model.ts) and the
// PEFT converter (peft.ts) map by. Names follow llama.cpp's convert_hf_to_gguf.py.

export const ARCHS = ['llama', 'qwen2', 'qwen3', 'phi3', 'gemma2', 'gemma3', 'bloom'] as const;
export type Arch = (typeof ARCHS)[number];

export function isArch(a: unknown): a is Arch {
  return (ARCHS as readonly unknown[]).includes(a);
}

/** Hugging Face architectures (config.json's `architectures[0]`) → the llama.cpp architecture of their GGUF. */
export const HF_ARCH: Record<string, Arch> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  Phi3ForCausalLM: 'phi3',
  Gemma2ForCausalLM: 'gemma2',
  Gemma3ForCausalLM: 'gemma3',
  BloomForCausalLM: 'bloom',
};

interface Layers {
  /** What precedes the layer number in a tensor or module name. */
  prefix: string;
  /** Linear modules inside a layer → llama.cpp's tensor name. */
  linear: Record<string, string>;
}

const LLAMA_LAYERS: Layers = {
  prefix: 'model.layers',
  linear: {
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  },
};

export const LAYERS: Record<Arch, Layers> = {
  llama: LLAMA_LAYERS,
  qwen2: LLAMA_LAYERS,
  qwen3: LLAMA_LAYERS,
  gemma2: LLAMA_LAYERS,
  gemma3: LLAMA_LAYERS,
  // Phi-3 fuses q, k and v into one projection, and gate and up into another (gate first).
  phi3: {
    prefix: 'model.layers',
    linear: {
      'self_attn.qkv_proj': 'attn_qkv',
      'self_attn.o_proj': 'attn_output',
      'mlp.gate_up_proj': 'ffn_up',
      'mlp.down_proj': 'ffn_down',
    },
  },
  bloom: {
    prefix: 'transformer.h',
    linear: {
      'self_attention.query_key_value': 'attn_qkv',
      'self_attention.dense': 'attn_output',
      'mlp.dense_h_to_4h': 'ffn_up',
      'mlp.dense_4h_to_h': 'ffn_down',
    },
  },
};

/**
 * LlamaModel.permute (rows (n_head, 2, half) -> (n_head, half, 2)): the source row of output row i.
 * The converter applies it to q/k weights, so their LoRA lora_b rows need it too.
 */
export function llamaPermutedRow(i: number, rows: number, nHead: number): number {
  const half = rows / nHead / 2;
  const h = Math.floor(i / (2 * half));
  const j = Math.floor((i % (2 * half)) / 2);
  const k = i % 2;
  return h * 2 * half + k * half + j;
}

/**
 * Bloom's fused query_key_value rows are grouped per head, (n_head, 3, head_dim); llama.cpp's
 * converter regroups them as all q, then all k, then all v. The source row of output row i (for the
 * weight, its bias, and a LoRA's lora_b alike).
 */
export function bloomQkvSource(i: number, nEmbd: number, nHead: number): number {
  const hd = nEmbd / nHead;
  const part = Math.floor(i / nEmbd);
  const head = Math.floor((i % nEmbd) / hd);
  return head * 3 * hd + part * hd + (i % hd);
}

/** A module or tensor name as a literal inside a RegExp. */
export const literal = (name: string) => name.replaceAll('.', '\\.');

/** Llama-family q/k weights are permuted by llama.cpp's converter (and so must their LoRA's be). */
export const permutesQK = (a: Arch) => a === 'llama';
