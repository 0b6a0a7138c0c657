// Hugging Face checkpoint (config.json + safetensors + tokenizer) -> GGUF model, streamed tensor by
// tensor. Hyperparameters, tensor names and the Llama q/k permutation follow llama.cpp's
// convert_hf_to_gguf.py for the Llama, Mistral and Qwen2 families.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { HF_ARCH, LAYERS, literal, permutesQK, type Arch } from './architectures.ts';
import { IntakeError } from './errors.ts';
import { ropeFromConfig } from './rope.ts';
import { GgufWriter, type KvValue, type OutType } from './gguf-writer.ts';
import { SafetensorsFile, type TensorEntry } from './safetensors.ts';
import { readVocab } from './tokenizer.ts';

/** The families this converter writes (Bloom's model layout is not done yet; its LoRA is, in peft.ts). */
const CONVERTS: Arch[] = ['llama', 'qwen2'];

/** A layer's tensors: the linear modules (attention with an optional bias, as Qwen2 has) and the norms. */
const LAYER: [RegExp, string][] = [
  ...Object.entries(LAYERS.llama.linear).map(
    ([hf, gguf]) =>
      [new RegExp(`^${literal(hf)}\\.(weight${gguf.startsWith('attn_') ? '|bias' : ''})$`), gguf] as [RegExp, string],
  ),
  [/^input_layernorm\.(weight)$/, 'attn_norm'],
  [/^post_attention_layernorm\.(weight)$/, 'ffn_norm'],
];

const LAYER_TENSOR = new RegExp(`^${literal(LAYERS.llama.prefix)}\\.(\\d+)\\.(.+)$`);

function ggufName(hf: string): string | null {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = LAYER_TENSOR.exec(hf);
  if (m) {
    if (m[2]!.endsWith('rotary_emb.inv_freq')) return null; // recomputed by llama.cpp
    for (const [re, name] of LAYER) {
      const k = re.exec(m[2]!);
      if (k) return `blk.${m[1]}.${name}.${k[1]}`;
    }
  }
  throw new IntakeError(`tensor '${hf}' has no llama.cpp counterpart`);
}

/**
 * LlamaModel.permute (rows (n_head, 2, half) -> (n_head, half, 2)): the source row of output row i.
 * The converter applies it to q/k weights, so their LoRA lora_b rows need it too.
 */
export function llamaPermutedRow(i: number, rows: number, nHead: number): number {
  const half = rows / nHead / 2;
  const h = Math.floor(i / (2 * half)),
    j = Math.floor((i % (2 * half)) / 2),
    k = i % 2;
  return h * 2 * half + k * half + j;
}

/** Reorders whole rows (values or raw bytes): output row i is input row source(i). */
export function reorderRows<A extends Float32Array | Uint8Array>(v: A, rows: number, source: (i: number) => number): A {
  const cols = v.length / rows;
  const out = new (v.constructor as new (n: number) => A)(v.length);
  for (let i = 0; i < rows; i++) {
    const src = source(i);
    out.set(v.subarray(src * cols, src * cols + cols), i * cols);
  }
  return out;
}

/** gguf-py's size label: 853120 -> "853K", 1.1e9 -> "1.1B". */
export function sizeLabel(n: number): string {
  const [scale, suffix] = n > 1e12 ? [1e-12, 'T'] : n > 1e9 ? [1e-9, 'B'] : n > 1e6 ? [1e-6, 'M'] : [1e-3, 'K'];
  const scaled = n * scale;
  const fix = Math.max(2 - String(Math.round(scaled)).replace(/^0+/, '').length, 0);
  return `${scaled.toFixed(fix)}${suffix}`;
}

async function openShards(
  dir: string,
): Promise<{ entries: Map<string, [SafetensorsFile, TensorEntry]>; close: () => Promise<void> }> {
  const index = path.join(dir, 'model.safetensors.index.json');
  let files: string[];
  if (existsSync(index)) {
    const map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
    files = [...new Set(Object.values(map))].sort();
  } else {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.safetensors'))
      .sort();
  }
  if (files.length === 0) {
    const bin = readdirSync(dir).some((f) => f.endsWith('.bin') || f.endsWith('.pt'));
    throw new IntakeError(
      `${dir}: no safetensors weights${bin ? ' (PyTorch .bin pickles are not read: save with safetensors)' : ''}`,
    );
  }
  const opened: SafetensorsFile[] = [];
  const entries = new Map<string, [SafetensorsFile, TensorEntry]>();
  try {
    for (const f of files) {
      const st = await SafetensorsFile.open(path.join(dir, f));
      opened.push(st);
      for (const [name, e] of st.tensors) entries.set(name, [st, e]);
    }
  } catch (e) {
    await Promise.all(opened.map((s) => s.close()));
    throw e;
  }
  return { entries, close: async () => void (await Promise.all(opened.map((s) => s.close()))) };
}

export interface ConvertModelOptions {
  dir: string;
  out: string;
  /** 'auto' keeps the checkpoint's own precision (f32, f16 or bf16). */
  outtype?: OutType | 'auto';
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

export async function convertHfModel(
  o: ConvertModelOptions,
): Promise<{ tensors: number; bytes: number; outtype: OutType }> {
  const cfgFile = path.join(o.dir, 'config.json');
  if (!existsSync(cfgFile) || !statSync(o.dir).isDirectory())
    throw new IntakeError(`${o.dir}: no config.json (not a Hugging Face checkpoint)`);
  const c = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  const archName = (c.architectures as string[] | undefined)?.[0] ?? String(c.model_type);
  const arch = HF_ARCH[archName];
  if (!arch || !CONVERTS.includes(arch)) {
    const supported = Object.keys(HF_ARCH).filter((k) => CONVERTS.includes(HF_ARCH[k]!));
    throw new IntakeError(`unsupported architecture '${archName}' (supported: ${supported.join(', ')})`);
  }
  const num = (k: string) => Number(c[k]);
  const nHead = num('num_attention_heads');
  const nHeadKv = Number(c.num_key_value_heads ?? nHead);
  const nEmbd = num('hidden_size');
  const headDim = Number(c.head_dim ?? nEmbd / nHead);
  const rope = ropeFromConfig(c, headDim);
  if (rope.freqFactors && arch !== 'llama')
    throw new IntakeError(`config.json: rope 'llama3' on a ${arch} model is not supported`);
  const vocab = readVocab(o.dir, c);

  const shards = await openShards(o.dir);
  try {
    const names = [...shards.entries.keys()].filter((n) => ggufName(n) !== null);
    const dtypes = new Set(names.map((n) => shards.entries.get(n)![1].dtype));
    const outtype: OutType =
      o.outtype && o.outtype !== 'auto' ? o.outtype : dtypes.has('BF16') ? 'bf16' : dtypes.has('F16') ? 'f16' : 'f32';
    const params = names.reduce((s, n) => s + shards.entries.get(n)![1].shape.reduce((a, b) => a * b, 1), 0);
    const a = arch;
    const kv: [string, KvValue][] = [
      ['general.architecture', { type: 'string', value: a }],
      ['general.type', { type: 'string', value: 'model' }],
      [
        'general.name',
        {
          type: 'string',
          value: path
            .basename(path.resolve(o.dir))
            .split(/[-_]/)
            .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
            .join(' '),
        },
      ],
      ['general.size_label', { type: 'string', value: sizeLabel(params) }],
      [`${a}.block_count`, { type: 'u32', value: num('num_hidden_layers') }],
      [`${a}.context_length`, { type: 'u32', value: num('max_position_embeddings') }],
      [`${a}.embedding_length`, { type: 'u32', value: nEmbd }],
      [`${a}.feed_forward_length`, { type: 'u32', value: num('intermediate_size') }],
      [`${a}.attention.head_count`, { type: 'u32', value: nHead }],
      [`${a}.attention.head_count_kv`, { type: 'u32', value: nHeadKv }],
      [`${a}.rope.freq_base`, { type: 'f32', value: rope.freqBase }],
      ...rope.kv.map(([k, v]): [string, KvValue] => [`${a}.${k}`, v]),
      [`${a}.attention.layer_norm_rms_epsilon`, { type: 'f32', value: num('rms_norm_eps') }],
    ];
    if (arch === 'llama') {
      kv.push(
        [`${a}.attention.key_length`, { type: 'u32', value: headDim }],
        [`${a}.attention.value_length`, { type: 'u32', value: headDim }],
      );
      kv.push(
        [`${a}.vocab_size`, { type: 'u32', value: num('vocab_size') }],
        [`${a}.rope.dimension_count`, { type: 'u32', value: headDim }],
      );
    }
    kv.push(['general.file_type', { type: 'u32', value: { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 }[outtype] }]);
    kv.push(['general.quantization_version', { type: 'u32', value: 2 }]);
    const writer = new GgufWriter();
    for (const [k, v] of [...kv, ...vocab]) writer.kv(k, v);

    let bytesTotal = 0;
    for (const n of names) bytesTotal += shards.entries.get(n)![1].end - shards.entries.get(n)![1].start;
    let bytesDone = 0;
    for (const n of names) {
      const [st, e] = shards.entries.get(n)!;
      const dest = ggufName(n)!;
      // 1-D tensors (norms, biases) stay f32, as llama.cpp's converter keeps them.
      const type: OutType =
        e.shape.length === 1 ? 'f32' : outtype === 'q8_0' && e.shape.at(-1)! % 32 !== 0 ? 'f16' : outtype;
      const permuteHeads = permutesQK(arch)
        ? dest.includes('.attn_q.')
          ? nHead
          : dest.includes('.attn_k.')
            ? nHeadKv
            : 0
        : 0;
      // Same precision in and out: copy the bytes (rows permuted where needed), converting nothing.
      const passThrough = ({ F32: 'f32', F16: 'f16', BF16: 'bf16' } as Record<string, OutType>)[e.dtype] === type;
      writer.tensor(dest, e.shape, type, async () => {
        let v: Float32Array | Uint8Array = passThrough ? await st.readRaw(n) : await st.readF32(n);
        if (permuteHeads) v = reorderRows(v, e.shape[0]!, (i) => llamaPermutedRow(i, e.shape[0]!, permuteHeads));
        bytesDone += e.end - e.start;
        o.onProgress?.(bytesDone, bytesTotal);
        return v;
      });
    }
    // llama.cpp's converter writes llama3's frequency divisors as one more tensor.
    const factors = rope.freqFactors;
    if (factors) writer.tensor('rope_freqs.weight', [factors.length], 'f32', async () => factors);
    await writer.write(o.out);
    return { tensors: names.length + (factors ? 1 : 0), bytes: bytesTotal, outtype };
  } finally {
    await shards.close();
  }
}
