// Writes small synthetic PEFT adapter directories (safetensors + adapter_config.json) for the tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function writeSafetensors(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name]!;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...names.map((n) => Buffer.from(tensors[n]!.data.buffer))]));
}

/** Deterministic pseudo-random values in [-1, 1). */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out[i] = x / 2 ** 30 - 1;
  }
  return out;
}

export interface SyntheticModule {
  module: string; // e.g. model.layers.0.self_attn.q_proj
  inDim: number;
  outDim: number;
  r: number;
}

export function writePeft(
  dir: string,
  config: Record<string, unknown>,
  modules: SyntheticModule[],
  extra: Record<string, { shape: number[]; data: Float32Array }> = {},
) {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = { ...extra };
  modules.forEach((m, i) => {
    tensors[`base_model.model.${m.module}.lora_A.weight`] = {
      shape: [m.r, m.inDim],
      data: values(m.r * m.inDim, 2 * i + 1),
    };
    tensors[`base_model.model.${m.module}.lora_B.weight`] = {
      shape: [m.outDim, m.r],
      data: values(m.outDim * m.r, 2 * i + 2),
    };
  });
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors);
  writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', bias: 'none', ...config }));
  return tensors;
}

/**
 * A copy of a checkpoint directory with a PEFT adapter's LoRA folded into its weights,
 * W + scale·B·A (scale = lora_alpha / r), for a reference that knows nothing of adapters.
 */
export async function writeMergedCheckpoint(
  base: string,
  out: string,
  lora: Record<string, { shape: number[]; data: Float32Array }>,
  scale: number,
): Promise<void> {
  const { SafetensorsFile } = await import('../../src/intake/safetensors.ts');
  const { copyFileSync, readdirSync } = await import('node:fs');
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(base)) if (f !== 'model.safetensors') copyFileSync(path.join(base, f), path.join(out, f));
  const st = await SafetensorsFile.open(path.join(base, 'model.safetensors'));
  const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, e] of st.tensors) weights[name] = { shape: e.shape, data: await st.readF32(name) };
  await st.close();
  for (const [name, a] of Object.entries(lora)) {
    if (!name.endsWith('.lora_A.weight')) continue;
    const module = name.slice('base_model.model.'.length, -'.lora_A.weight'.length);
    const b = lora[name.replace('lora_A', 'lora_B')]!;
    const w = weights[`${module}.weight`]!;
    const [rows, cols] = w.shape as [number, number];
    const r = a.shape[0]!;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += b.data[i * r + k]! * a.data[k * cols + j]!;
        w.data[i * cols + j] = w.data[i * cols + j]! + scale * s;
      }
    }
  }
  writeSafetensors(path.join(out, 'model.safetensors'), weights);
}
