// Writes GGUF v3 files tensor by tensor: the header and tensor infos first (shapes are known up
// front), then each tensor's data as it is produced, into a temporary file renamed at the end so a
// killed conversion leaves no half file behind.
import { open, rename, rm } from 'node:fs/promises';

export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, IQ2_XXS: 16, BF16: 30 } as const;
export type OutType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
/** Types written only from bytes already encoded (IQ2_XXS: a type that needs an importance matrix to make). */
export type BytesOnlyType = 'iq2_xxs';
const TYPE_OF: Record<OutType | BytesOnlyType, number> = {
  f32: GGML_TYPE.F32,
  f16: GGML_TYPE.F16,
  bf16: GGML_TYPE.BF16,
  q8_0: GGML_TYPE.Q8_0,
  q4_0: GGML_TYPE.Q4_0,
  iq2_xxs: GGML_TYPE.IQ2_XXS,
};

/** Bytes of a tensor of `count` values (Q8_0 / Q4_0: blocks of 32 values with an f16 scale; IQ2_XXS: 66 bytes per 256). */
export function byteSize(count: number, t: OutType | BytesOnlyType): number {
  if (t === 'q8_0') return (count / 32) * 34;
  if (t === 'q4_0') return (count / 32) * 18;
  if (t === 'iq2_xxs') return (count / 256) * 66;
  return count * (t === 'f32' ? 4 : 2);
}

const ALIGN = 32;
enum V {
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
}

export type KvValue =
  | { type: 'string'; value: string }
  | { type: 'u32' | 'i32' | 'f32' | 'u64'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string[]'; value: string[] }
  | { type: 'i32[]' | 'f32[]'; value: number[] };

interface PendingTensor {
  name: string;
  shape: number[]; // row-major (numpy) order
  outType: OutType | BytesOnlyType;
  /** Float32 values to encode, or bytes already in outType's encoding (a pass-through copy). */
  produce: () => Promise<Float32Array | Uint8Array>;
}

class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer) {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  f32(v: number) {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  u64(v: number | bigint) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  concat() {
    return Buffer.concat(this.parts);
  }
}

export function encodeTensor(values: Float32Array, t: OutType): Buffer {
  if (t === 'q8_0') return quantizeQ80(values);
  if (t === 'q4_0') return quantizeQ40(values);
  if (t === 'f32') return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  // Typed-array loops over the raw bits: per-value Buffer calls would cap conversion far below disk speed.
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  if (t === 'bf16') for (let i = 0; i < bits.length; i++) out[i] = bf16Bits(bits[i]!);
  else for (let i = 0; i < bits.length; i++) out[i] = f16Bits(bits[i]!);
  return Buffer.from(out.buffer);
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** A block's f16 scale, little-endian. */
function putF16(out: Buffer, at: number, v: number): void {
  scratch[0] = v;
  const h = f16Bits(scratchBits[0]!);
  out[at] = h & 0xff;
  out[at + 1] = h >> 8;
}

/** ggml's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127, q = round(x / d). */
function quantizeQ80(x: Float32Array): Buffer {
  if (x.length % 32 !== 0) throw new Error('Q8_0 needs a multiple of 32 values per row');
  const out = Buffer.alloc((x.length / 32) * 34);
  const q = new Int8Array(out.buffer, out.byteOffset, out.length);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    putF16(out, b * 34, d);
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j]! * id;
      q[b * 34 + 2 + j] = v < 0 ? -Math.round(-v) : Math.round(v); // roundf: half away from zero
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref: d = (signed max-magnitude value) / -8, nibbles = min(15, x/d + 8.5). */
function quantizeQ40(x: Float32Array): Buffer {
  if (x.length % 32 !== 0) throw new Error('Q4_0 needs a multiple of 32 values per row');
  const out = Buffer.alloc((x.length / 32) * 18);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0,
      max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j]!;
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    putF16(out, b * 18, d);
    for (let j = 0; j < 16; j++) {
      const lo = Math.min(15, Math.trunc(x[b * 32 + j]! * id + 8.5));
      const hi = Math.min(15, Math.trunc(x[b * 32 + 16 + j]! * id + 8.5));
      out[b * 18 + 2 + j] = lo | (hi << 4);
    }
  }
  return out;
}

/** Round to nearest even, as torch does; NaN stays NaN. */
function bf16Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half from the bits of a float32, rounding to nearest even. */
function f16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export class GgufWriter {
  private readonly kvs: [string, KvValue][] = [];
  private readonly tensors: PendingTensor[] = [];

  kv(key: string, v: KvValue): this {
    this.kvs.push([key, v]);
    return this;
  }

  tensor(name: string, shape: number[], outType: OutType, produce: () => Promise<Float32Array | Uint8Array>): this;
  tensor(name: string, shape: number[], outType: BytesOnlyType, produce: () => Promise<Uint8Array>): this;
  tensor(
    name: string,
    shape: number[],
    outType: OutType | BytesOnlyType,
    produce: () => Promise<Float32Array | Uint8Array>,
  ): this {
    this.tensors.push({ name, shape, outType, produce });
    return this;
  }

  private header(): { head: Buffer; offsets: number[] } {
    const b = new Bytes();
    b.push(Buffer.from('GGUF', 'latin1'));
    b.u32(3);
    b.u64(this.tensors.length);
    b.u64(this.kvs.length);
    for (const [key, v] of this.kvs) {
      b.str(key);
      switch (v.type) {
        case 'string':
          b.u32(V.STRING);
          b.str(v.value);
          break;
        case 'u32':
          b.u32(V.U32);
          b.u32(v.value);
          break;
        case 'i32':
          b.u32(V.I32);
          b.i32(v.value);
          break;
        case 'f32':
          b.u32(V.F32);
          b.f32(v.value);
          break;
        case 'u64':
          b.u32(V.U64);
          b.u64(v.value);
          break;
        case 'bool':
          b.u32(V.BOOL);
          b.push(Buffer.from([v.value ? 1 : 0]));
          break;
        case 'string[]':
          b.u32(V.ARRAY);
          b.u32(V.STRING);
          b.u64(v.value.length);
          for (const s of v.value) b.str(s);
          break;
        case 'i32[]':
          b.u32(V.ARRAY);
          b.u32(V.I32);
          b.u64(v.value.length);
          for (const x of v.value) b.i32(x);
          break;
        case 'f32[]':
          b.u32(V.ARRAY);
          b.u32(V.F32);
          b.u64(v.value.length);
          for (const x of v.value) b.f32(x);
          break;
      }
    }
    const offsets: number[] = [];
    let offset = 0;
    for (const t of this.tensors) {
      b.str(t.name);
      b.u32(t.shape.length);
      for (const d of [...t.shape].reverse()) b.u64(d); // ggml's ne: innermost dimension first
      b.u32(TYPE_OF[t.outType]);
      b.u64(offset);
      offsets.push(offset);
      offset += pad(
        byteSize(
          t.shape.reduce((x, y) => x * y, 1),
          t.outType,
        ),
      );
    }
    const head = b.concat();
    return { head: Buffer.concat([head, Buffer.alloc(pad(head.length) - head.length)]), offsets };
  }

  /** Writes everything to `path` (via `path.tmp-<pid>` and a rename). */
  async write(path: string, onTensor?: (done: number, total: number) => void): Promise<void> {
    const tmp = `${path}.tmp-${process.pid}`;
    const fh = await open(tmp, 'w');
    try {
      const { head } = this.header();
      await fh.write(head);
      let done = 0;
      // The next tensor is read while this one is written: I/O and conversion overlap, and memory
      // stays bounded by two tensors.
      const start = (i: number) => {
        const p = this.tensors[i]?.produce();
        p?.catch(() => {}); // a failure surfaces where it is awaited, never as an unhandled rejection
        return p;
      };
      let next = start(0);
      for (const [i, t] of this.tensors.entries()) {
        const values = await next!;
        next = start(i + 1);
        const count = t.shape.reduce((x, y) => x * y, 1);
        if (values instanceof Float32Array && t.outType === 'iq2_xxs')
          throw new Error(`tensor ${t.name}: ${t.outType} is written from bytes only`);
        const data = values instanceof Float32Array ? encodeTensor(values, t.outType as OutType) : values;
        if (values instanceof Float32Array ? values.length !== count : data.length !== byteSize(count, t.outType)) {
          throw new Error(`tensor ${t.name}: wrong amount of data for shape ${t.shape}`);
        }
        await fh.write(data);
        await fh.write(Buffer.alloc(pad(data.length) - data.length));
        onTensor?.(++done, this.tensors.length);
      }
      await fh.close();
      await rename(tmp, path);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }
}

const pad = (n: number) => Math.ceil(n / ALIGN) * ALIGN;
