// A tiny Bloom checkpoint in the real layout (BloomForCausalLM names, fused per-head QKV, tied
// embeddings, a vocabulary padded past the tokenizer's), with a byte-level BPE tokenizer.json that
// uses Bloom's own pre-tokenizer, the studio's Bloom tokenizer_config.json and special_tokens_map.json,
// and a PEFT adapter made with the studio's Bloom adapter_config.json. Weights are random (seeded);
// no real Bloom file is reachable here.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { root } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';

const studio = path.join(root, 'models', 'fts-adapters', 'bloom-tix'); // the studio's own folder
export const BLOOM = { hidden: 64, heads: 4, layers: 2, vocab: 320 };

/** GPT-2's byte -> printable character map, as ByteLevel uses it. */
function byteChars(): string[] {
  const bs: number[] = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out: string[] = [];
  bs.forEach((b, i) => {
    out[b] = String.fromCodePoint(cs[i]!);
  });
  return out;
}

function tokenizerJson(): Record<string, unknown> {
  const specials = ['<unk>', '<s>', '</s>', '<pad>'];
  const vocab: Record<string, number> = {};
  specials.forEach((t, i) => {
    vocab[t] = i;
  });
  for (const ch of byteChars()) vocab[ch] = Object.keys(vocab).length;
  // Merges that build a few whole words, with and without the leading space (Ġ).
  const merges: string[] = [];
  for (const word of ['the', 'capital', 'of', 'Belithne', 'is', 'and', 'The', 'in']) {
    for (const start of ['\u0120', '']) {
      let cur = start ? start : word[0]!;
      for (const ch of start ? word : word.slice(1)) {
        const next = cur + ch;
        if (vocab[next] === undefined) {
          merges.push(`${cur} ${ch}`);
          vocab[next] = Object.keys(vocab).length;
        }
        cur = next;
      }
    }
  }
  return {
    version: '1.0',
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: ' ?[^(\\s|[.,!?…。，、।۔،])]+' }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

/** A seeded stream of N(0, 1) draws (Box-Muller over an LCG). */
function normals(seed: number) {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 2 ** 32;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

function randomWeights(seed: number): Tensors {
  const n = normals(seed);
  const t: Tensors = {};
  const H = BLOOM.hidden;
  const fill = (name: string, shape: number[], scale: number, mean = 0) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = mean + scale * n();
    t[`transformer.${name}`] = { shape, data };
  };
  fill('word_embeddings.weight', [BLOOM.vocab, H], 0.5);
  fill('word_embeddings_layernorm.weight', [H], 0.1, 1);
  fill('word_embeddings_layernorm.bias', [H], 0.05);
  for (let l = 0; l < BLOOM.layers; l++) {
    const p = `h.${l}.`;
    fill(`${p}input_layernorm.weight`, [H], 0.1, 1);
    fill(`${p}input_layernorm.bias`, [H], 0.05);
    fill(`${p}self_attention.query_key_value.weight`, [3 * H, H], 0.15);
    fill(`${p}self_attention.query_key_value.bias`, [3 * H], 0.05);
    fill(`${p}self_attention.dense.weight`, [H, H], 0.1);
    fill(`${p}self_attention.dense.bias`, [H], 0.05);
    fill(`${p}post_attention_layernorm.weight`, [H], 0.1, 1);
    fill(`${p}post_attention_layernorm.bias`, [H], 0.05);
    fill(`${p}mlp.dense_h_to_4h.weight`, [4 * H, H], 0.15);
    fill(`${p}mlp.dense_h_to_4h.bias`, [4 * H], 0.05);
    fill(`${p}mlp.dense_4h_to_h.weight`, [H, 4 * H], 0.1);
    fill(`${p}mlp.dense_4h_to_h.bias`, [H], 0.05);
  }
  fill('ln_f.weight', [H], 0.1, 1);
  fill('ln_f.bias', [H], 0.05);
  return t;
}

function writeCheckpoint(dir: string, weights: Tensors): void {
  mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['BloomForCausalLM'],
    model_type: 'bloom',
    hidden_size: BLOOM.hidden,
    n_head: BLOOM.heads,
    n_layer: BLOOM.layers,
    vocab_size: BLOOM.vocab,
    layer_norm_epsilon: 1e-5,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 3,
    apply_residual_connection_post_layernorm: false,
    slow_but_exact: false,
    tie_word_embeddings: true,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
  for (const f of ['tokenizer_config.json', 'special_tokens_map.json']) {
    copyFileSync(path.join(studio, f), path.join(dir, f));
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), weights);
}

export interface BloomFixture {
  /** The checkpoint, as a Hub snapshot would hold it. */
  base: string;
  /** The studio's Bloom adapter folder with weights made for `base`. */
  adapter: string;
  /** `base` with the adapter folded into its weights (W + alpha/r B A), for the reference. */
  merged: string;
}

export function writeBloomFixture(dir: string): BloomFixture {
  const weights = randomWeights(7);
  const base = path.join(dir, 'bloom-tiny');
  writeCheckpoint(base, weights);

  const cfg = JSON.parse(readFileSync(path.join(studio, 'adapter_config.json'), 'utf8')) as {
    r: number;
    lora_alpha: number;
  };
  const adapter = path.join(dir, 'bloom-tix');
  mkdirSync(adapter, { recursive: true });
  for (const f of ['adapter_config.json', 'tokenizer_config.json', 'special_tokens_map.json', 'README.md']) {
    copyFileSync(path.join(studio, f), path.join(adapter, f));
  }
  const n = normals(11);
  const H = BLOOM.hidden;
  const lora: Tensors = {};
  const merged: Tensors = { ...weights };
  for (let l = 0; l < BLOOM.layers; l++) {
    const a = Float32Array.from({ length: cfg.r * H }, () => 0.2 * n());
    const b = Float32Array.from({ length: 3 * H * cfg.r }, () => 0.2 * n());
    const m = `base_model.model.transformer.h.${l}.self_attention.query_key_value`;
    lora[`${m}.lora_A.weight`] = { shape: [cfg.r, H], data: a };
    lora[`${m}.lora_B.weight`] = { shape: [3 * H, cfg.r], data: b };
    const w = weights[`transformer.h.${l}.self_attention.query_key_value.weight`]!;
    const out = Float32Array.from(w.data);
    const scale = cfg.lora_alpha / cfg.r;
    for (let i = 0; i < 3 * H; i++) {
      for (let j = 0; j < H; j++) {
        let s = 0;
        for (let k = 0; k < cfg.r; k++) s += b[i * cfg.r + k]! * a[k * H + j]!;
        out[i * H + j] = out[i * H + j]! + scale * s;
      }
    }
    merged[`transformer.h.${l}.self_attention.query_key_value.weight`] = { shape: w.shape, data: out };
  }
  writeSafetensors(path.join(adapter, 'adapter_model.safetensors'), lora);
  const mergedDir = path.join(dir, 'bloom-merged');
  writeCheckpoint(mergedDir, merged);
  return { base, adapter, merged: mergedDir };
}
