// Reads safetensors files one tensor at a time (bounded memory): an 8-byte header length, a JSON
// header of {name: {dtype, shape, data_offsets}}, then the raw little-endian data.
import { open, type FileHandle } from 'node:fs/promises';

export class SafetensorsError extends Error {}

export type Dtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  start: number; // absolute file offsets
  end: number;
}

const BYTES: Record<string, number> = {
  F64: 8,
  I64: 8,
  F32: 4,
  I32: 4,
  F16: 2,
  BF16: 2,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly tensors: Map<string, TensorEntry>,
    readonly metadata: Record<string, string>,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await open(path, 'r');
    try {
      const size = (await fh.stat()).size;
      const lenBuf = Buffer.alloc(8);
      if ((await fh.read(lenBuf, 0, 8, 0)).bytesRead < 8) throw new SafetensorsError(`${path}: truncated (no header)`);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen <= 0 || 8 + headerLen > size || headerLen > 100 * 1024 * 1024) {
        throw new SafetensorsError(
          `${path}: truncated or not a safetensors file (header length ${headerLen}, file ${size} bytes)`,
        );
      }
      const hb = Buffer.alloc(headerLen);
      await fh.read(hb, 0, headerLen, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
      } catch {
        throw new SafetensorsError(`${path}: the header is not JSON`);
      }
      const dataStart = 8 + headerLen;
      const tensors = new Map<string, TensorEntry>();
      for (const [name, v] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const t = v as { dtype: Dtype; shape: number[]; data_offsets: [number, number] };
        const width = BYTES[t.dtype];
        if (!width) throw new SafetensorsError(`${path}: tensor ${name} has unsupported dtype ${t.dtype}`);
        const [a, b] = t.data_offsets;
        const count = t.shape.reduce((x, y) => x * y, 1);
        if (b - a !== count * width)
          throw new SafetensorsError(`${path}: tensor ${name} has ${b - a} bytes for shape ${t.shape}`);
        if (dataStart + b > size)
          throw new SafetensorsError(`${path}: truncated (tensor ${name} ends past the end of the file)`);
        tensors.set(name, { name, dtype: t.dtype, shape: t.shape, start: dataStart + a, end: dataStart + b });
      }
      return new SafetensorsFile(path, fh, tensors, (header.__metadata__ ?? {}) as Record<string, string>);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** The tensor's bytes as stored, in a buffer of their own (so typed views are aligned). */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor ${name}`);
    const bytes = t.end - t.start;
    const raw = new Uint8Array(new ArrayBuffer(bytes));
    const { bytesRead } = await this.fh.read(raw, 0, bytes, t.start);
    if (bytesRead !== bytes) throw new SafetensorsError(`${this.path}: truncated while reading ${name}`);
    return raw;
  }

  /** The tensor's values as float32 (F32, F16 and BF16 inputs). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.tensors.get(name)!;
    return toF32(await this.readRaw(name), t?.dtype, `${this.path}: ${name}`);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

let halfTable: Float32Array | null = null;

/** raw must start at offset 0 of its own ArrayBuffer (as readF32 allocates it). */
export function toF32(raw: Uint8Array, dtype: Dtype, what: string): Float32Array {
  const n = raw.length / (BYTES[dtype] ?? 1);
  if (dtype === 'F32') return new Float32Array(raw.buffer, raw.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    const src = new Uint16Array(raw.buffer, raw.byteOffset, n);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
  } else if (dtype === 'F16') {
    if (!halfTable) {
      halfTable = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
    }
    const src = new Uint16Array(raw.buffer, raw.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = halfTable[src[i]!]!;
  } else {
    throw new SafetensorsError(`${what}: dtype ${dtype} is not a floating-point type`);
  }
  return out;
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
