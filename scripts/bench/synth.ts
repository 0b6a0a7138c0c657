// Synthetic Llama models and LoRAs for the benchmark: real shapes and a real vocabulary, weights from
// one random block tiled (decode speed does not depend on weight values), written at disk speed.
import path from 'node:path';
import { readGgufHeader, type GgufValue } from '../../src/intake/gguf-header.ts';
import { GgufWriter, byteSize, encodeTensor, type KvValue, type OutType } from '../../src/intake/gguf-writer.ts';

export interface Shape {
  hidden: number;
  layers: number;
  ffn: number;
  heads: number;
  kvHeads: number;
}

export const SHAPES: Record<string, Shape> = {
  '1b': { hidden: 2048, layers: 16, ffn: 8192, heads: 32, kvHeads: 8 },
  '8b': { hidden: 4096, layers: 32, ffn: 14336, heads: 32, kvHeads: 8 },
  // small enough for a CPU smoke run
  '60m': { hidden: 512, layers: 8, ffn: 1536, heads: 8, kvHeads: 4 },
};

export const PROJECTIONS = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** [rows, cols] (row-major, PyTorch's [out, in]) of each projection. */
function projectionShape(s: Shape, p: Projection): [number, number] {
  const kv = (s.hidden / s.heads) * s.kvHeads;
  switch (p) {
    case 'attn_q':
    case 'attn_output':
      return [s.hidden, s.hidden];
    case 'attn_k':
    case 'attn_v':
      return [kv, s.hidden];
    case 'ffn_gate':
    case 'ffn_up':
      return [s.ffn, s.hidden];
    case 'ffn_down':
      return [s.hidden, s.ffn];
  }
}

/** llama.cpp's SentencePiece test vocabulary (32000 tokens), shipped in node-llama-cpp's checkout. */
export const DEFAULT_VOCAB = path.resolve(
  'node_modules/node-llama-cpp/llama/llama.cpp/models/ggml-vocab-llama-spm.gguf',
);

async function vocabKvs(file: string): Promise<{ kv: [string, KvValue][]; size: number; types: number[] }> {
  const h = await readGgufHeader(file);
  const get = (k: string) => h.metadata.get(k);
  const tokens = get('tokenizer.ggml.tokens') as string[];
  const kv: [string, KvValue][] = [
    ['tokenizer.ggml.model', { type: 'string', value: String(get('tokenizer.ggml.model')) }],
    ['tokenizer.ggml.pre', { type: 'string', value: String(get('tokenizer.ggml.pre') ?? 'default') }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
  ];
  const scores = get('tokenizer.ggml.scores') as number[] | undefined;
  if (scores) kv.push(['tokenizer.ggml.scores', { type: 'f32[]', value: scores }]);
  const types = (get('tokenizer.ggml.token_type') as number[] | undefined) ?? tokens.map(() => 1);
  kv.push(['tokenizer.ggml.token_type', { type: 'i32[]', value: types }]);
  for (const k of ['bos', 'eos', 'unknown', 'padding']) {
    const v: GgufValue | undefined = get(`tokenizer.ggml.${k}_token_id`);
    if (v !== undefined) kv.push([`tokenizer.ggml.${k}_token_id`, { type: 'u32', value: Number(v) }]);
  }
  const merges = get('tokenizer.ggml.merges') as string[] | undefined;
  if (merges) kv.push(['tokenizer.ggml.merges', { type: 'string[]', value: merges }]);
  return { kv, size: tokens.length, types };
}

function gaussianish(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = 0; k < 4; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      sum += x / 2 ** 32;
    }
    out[i] = (sum - 2) * std * 1.7;
  }
  return out;
}

/** Bytes of `rows x cols` in `type`, tiled from one encoded random row block (cols multiple of 32). */
function tiled(rows: number, cols: number, type: OutType, std: number, seed: number): () => Promise<Uint8Array> {
  return async () => {
    const blockRows = Math.min(rows, Math.max(1, Math.floor(65536 / cols)));
    const block = encodeTensor(gaussianish(blockRows * cols, std, seed), type);
    const total = byteSize(rows * cols, type);
    const out = new Uint8Array(total);
    for (let off = 0; off < total; off += block.length)
      out.set(block.subarray(0, Math.min(block.length, total - off)), off);
    return out;
  };
}

/**
 * IQ2_XXS blocks (an f16 scale, then 32 u16 of grid indices, signs and sub-scales: any bits decode)
 * from random bytes. ggml makes this type only with an importance matrix; tests need it as a base
 * that merging cannot re-quantize.
 */
function iq2xxs(rows: number, cols: number, seed: number): () => Promise<Uint8Array> {
  return async () => {
    const out = new Uint8Array(byteSize(rows * cols, 'iq2_xxs'));
    let x = seed >>> 0 || 1;
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
    // d = 0.001: weights of about 0.02, like the other types' (|grid| 8..43, sub-scale 0.125..3.9)
    for (let b = 0; b < out.length; b += 66) {
      out[b] = 0x19;
      out[b + 1] = 0x14;
    }
    return out;
  };
}

/** `type` applies to every matrix; 'iq2_xxs' to the projections only (embeddings and output stay F16). */
export async function writeSyntheticModel(o: {
  shape: Shape;
  type: 'f16' | 'q8_0' | 'q4_0' | 'iq2_xxs';
  out: string;
  vocab?: string;
}): Promise<void> {
  const { shape: s } = o;
  const type = o.type === 'iq2_xxs' ? 'f16' : o.type;
  const { kv, size: vocab, types } = await vocabKvs(o.vocab ?? DEFAULT_VOCAB);
  const headDim = s.hidden / s.heads;
  const w = new GgufWriter()
    .kv('general.architecture', { type: 'string', value: 'llama' })
    .kv('general.type', { type: 'string', value: 'model' })
    .kv('general.name', { type: 'string', value: 'synthetic' })
    .kv('llama.block_count', { type: 'u32', value: s.layers })
    .kv('llama.context_length', { type: 'u32', value: 8192 })
    .kv('llama.embedding_length', { type: 'u32', value: s.hidden })
    .kv('llama.feed_forward_length', { type: 'u32', value: s.ffn })
    .kv('llama.attention.head_count', { type: 'u32', value: s.heads })
    .kv('llama.attention.head_count_kv', { type: 'u32', value: s.kvHeads })
    .kv('llama.rope.freq_base', { type: 'f32', value: 10000 })
    .kv('llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 })
    .kv('llama.rope.dimension_count', { type: 'u32', value: headDim })
    .kv('llama.vocab_size', { type: 'u32', value: vocab })
    .kv('general.file_type', { type: 'u32', value: { f16: 1, q8_0: 7, q4_0: 2, iq2_xxs: 19 }[o.type] })
    .kv('general.quantization_version', { type: 'u32', value: 2 });
  for (const [k, v] of kv) w.kv(k, v);
  const ones = (n: number) => async () => new Float32Array(n).fill(1);
  let seed = 1;
  w.tensor('token_embd.weight', [vocab, s.hidden], type, tiled(vocab, s.hidden, type, 0.02, seed++));
  for (let l = 0; l < s.layers; l++) {
    w.tensor(`blk.${l}.attn_norm.weight`, [s.hidden], 'f32', ones(s.hidden));
    for (const p of PROJECTIONS) {
      const [rows, cols] = projectionShape(s, p);
      if (o.type === 'iq2_xxs') w.tensor(`blk.${l}.${p}.weight`, [rows, cols], 'iq2_xxs', iq2xxs(rows, cols, seed++));
      else w.tensor(`blk.${l}.${p}.weight`, [rows, cols], type, tiled(rows, cols, type, 0.02, seed++));
      if (p === 'attn_output') w.tensor(`blk.${l}.ffn_norm.weight`, [s.hidden], 'f32', ones(s.hidden));
    }
  }
  w.tensor('output_norm.weight', [s.hidden], 'f32', ones(s.hidden));
  // Tiled rows make the logits periodic, so greedy would always pick a low id: a control or byte
  // token, which streams no text. Zero rows (logit 0, below each period's maximum) for every token
  // that is not a normal one make it pick text, which the HTTP measure needs to time.
  const output = tiled(vocab, s.hidden, type, 0.02, seed++);
  const rowBytes = byteSize(s.hidden, type);
  w.tensor('output.weight', [vocab, s.hidden], type, async () => {
    const bytes = await output();
    types.forEach((t, id) => {
      if (t !== 1) bytes.fill(0, id * rowBytes, (id + 1) * rowBytes);
    });
    return bytes;
  });
  await w.write(o.out);
}

/** `std`: of A's and B's entries (default 0.01: a small change to the model, as training makes). */
export async function writeSyntheticLora(o: {
  shape: Shape;
  rank: number;
  alpha?: number;
  targets: readonly Projection[];
  out: string;
  seed?: number;
  std?: number;
}): Promise<void> {
  const std = o.std ?? 0.01;
  const w = new GgufWriter()
    .kv('general.architecture', { type: 'string', value: 'llama' })
    .kv('general.type', { type: 'string', value: 'adapter' })
    .kv('adapter.type', { type: 'string', value: 'lora' })
    .kv('adapter.lora.alpha', { type: 'f32', value: o.alpha ?? 2 * o.rank });
  let seed = o.seed ?? 100;
  for (let l = 0; l < o.shape.layers; l++) {
    for (const p of o.targets) {
      const [rows, cols] = projectionShape(o.shape, p);
      w.tensor(`blk.${l}.${p}.weight.lora_a`, [o.rank, cols], 'f16', tiled(o.rank, cols, 'f16', std, seed++));
      w.tensor(`blk.${l}.${p}.weight.lora_b`, [rows, o.rank], 'f16', async () =>
        encodeTensor(gaussianish(rows * o.rank, std, seed++), 'f16'),
      );
    }
  }
  await w.write(o.out);
}
