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
