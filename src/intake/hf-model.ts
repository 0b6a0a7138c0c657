// Hugging Face checkpoint (config.json + safetensors + tokenizer) -> GGUF model, streamed tensor by
// tensor. Hyperparameters, tensor names and reordered rows follow llama.cpp's convert_hf_to_gguf.py
// for the Llama, Mistral, Qwen2 and Bloom families (model-families.ts).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { HF_ARCH } from './architectures.ts';
import { IntakeError } from './errors.ts';
import { FAMILIES } from './model-families.ts';
import { GgufWriter, type KvValue, type OutType } from './gguf-writer.ts';
import { SafetensorsFile, type TensorEntry } from './safetensors.ts';
import { readVocab } from './tokenizer.ts';

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
  const family = arch && FAMILIES[arch];
  if (!arch || !family) {
    throw new IntakeError(`unsupported architecture '${archName}' (supported: ${Object.keys(HF_ARCH).join(', ')})`);
  }
  const plan = family.plan(c, arch);
  const vocab = readVocab(o.dir, c);

  const shards = await openShards(o.dir);
  try {
    const names = [...shards.entries.keys()].filter((n) => family.tensorName(n) !== null);
    const dtypes = new Set(names.map((n) => shards.entries.get(n)![1].dtype));
    const outtype: OutType =
      o.outtype && o.outtype !== 'auto' ? o.outtype : dtypes.has('BF16') ? 'bf16' : dtypes.has('F16') ? 'f16' : 'f32';
    const params = names.reduce((s, n) => s + shards.entries.get(n)![1].shape.reduce((a, b) => a * b, 1), 0);
    const name = path
      .basename(path.resolve(o.dir))
      .split(/[-_]/)
      .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
      .join(' ');
    const kv: [string, KvValue][] = [
      ['general.architecture', { type: 'string', value: arch }],
      ['general.type', { type: 'string', value: 'model' }],
      ['general.name', { type: 'string', value: name }],
      ['general.size_label', { type: 'string', value: sizeLabel(params) }],
      ...plan.kv.map(([k, v]): [string, KvValue] => [`${arch}.${k}`, v]),
      ['general.file_type', { type: 'u32', value: { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 }[outtype] }],
      ['general.quantization_version', { type: 'u32', value: 2 }],
      ...(plan.globalKv ?? []),
    ];
    const writer = new GgufWriter();
    for (const [k, v] of [...kv, ...vocab]) writer.kv(k, v);

    let bytesTotal = 0;
    for (const n of names) bytesTotal += shards.entries.get(n)![1].end - shards.entries.get(n)![1].start;
    let bytesDone = 0;
    for (const n of names) {
      const [st, e] = shards.entries.get(n)!;
      const dest = family.tensorName(n)!;
      // 1-D tensors (norms, biases) stay f32, as llama.cpp's converter keeps them.
      const type: OutType =
        e.shape.length === 1 ? 'f32' : outtype === 'q8_0' && e.shape.at(-1)! % 32 !== 0 ? 'f16' : outtype;
      const source = plan.rowSource(dest, e.shape[0]!);
      const map = plan.valueMap?.(dest) ?? null;
      // Same precision in and out: copy the bytes (rows reordered where needed), converting nothing.
      const passThrough =
        !map && ({ F32: 'f32', F16: 'f16', BF16: 'bf16' } as Record<string, OutType>)[e.dtype] === type;
      writer.tensor(dest, e.shape, type, async () => {
        let v: Float32Array | Uint8Array = passThrough ? await st.readRaw(n) : await st.readF32(n);
        if (map && v instanceof Float32Array) v = v.map(map);
        if (source) v = reorderRows(v, e.shape[0]!, source);
        bytesDone += e.end - e.start;
        o.onProgress?.(bytesDone, bytesTotal);
        return v;
      });
    }
    for (const x of plan.extra) writer.tensor(x.name, [x.data.length], 'f32', async () => x.data);
    await writer.write(o.out);
    return { tensors: names.length + plan.extra.length, bytes: bytesTotal, outtype };
  } finally {
    await shards.close();
  }
}
