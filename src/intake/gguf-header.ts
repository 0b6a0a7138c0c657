// Reads a GGUF file's header and metadata (not the tensors) to tell models from adapters and to
// report what a file is before llama.cpp loads it. Spec: ggml/docs/gguf.md (versions 2 and 3).
import { open } from 'node:fs/promises';

export type GgufValue = string | number | bigint | boolean | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** ggml order: innermost dimension first */
  ne: number[];
  type: number;
  /** absolute offset of the data in the file */
  offset: number;
}

export interface GgufHeader {
  version: number;
  tensorCount: bigint;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
}

export class GgufFormatError extends Error {}

const MAX_HEADER = 64 * 1024 * 1024; // metadata with a full vocabulary stays well below this

enum T {
  U8,
  I8,
  U16,
  I16,
  U32,
  I32,
  F32,
  BOOL,
  STRING,
  ARRAY,
  U64,
  I64,
  F64,
}

class Cursor {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  need(n: number): void {
    if (this.off + n > this.buf.length) throw new RangeError('short');
  }
  get offset(): number {
    return this.off;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.off);
    this.off += 8;
    return v;
  }
  str(): string {
    const n = Number(this.u64());
    this.need(n);
    const s = this.buf.toString('utf8', this.off, this.off + n);
    this.off += n;
    return s;
  }
  value(type: number): GgufValue {
    const b = this.buf;
    const take = <V>(n: number, read: (o: number) => V): V => {
      this.need(n);
      const v = read(this.off);
      this.off += n;
      return v;
    };
    switch (type) {
      case T.U8:
        return take(1, (o) => b.readUInt8(o));
      case T.I8:
        return take(1, (o) => b.readInt8(o));
      case T.U16:
        return take(2, (o) => b.readUInt16LE(o));
      case T.I16:
        return take(2, (o) => b.readInt16LE(o));
      case T.U32:
        return take(4, (o) => b.readUInt32LE(o));
      case T.I32:
        return take(4, (o) => b.readInt32LE(o));
      case T.F32:
        return take(4, (o) => b.readFloatLE(o));
      case T.BOOL:
        return take(1, (o) => b.readUInt8(o) !== 0);
      case T.STRING:
        return this.str();
      case T.U64:
        return take(8, (o) => b.readBigUInt64LE(o));
      case T.I64:
        return take(8, (o) => b.readBigInt64LE(o));
      case T.F64:
        return take(8, (o) => b.readDoubleLE(o));
      case T.ARRAY: {
        const inner = this.u32();
        const n = Number(this.u64());
        const out: GgufValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(inner));
        return out;
      }
      default:
        throw new GgufFormatError(`unknown metadata value type ${type}`);
    }
  }
}

export async function readGgufHeader(path: string): Promise<GgufHeader> {
  const fh = await open(path, 'r');
  try {
    let size = 1 << 20;
    for (;;) {
      const buf = Buffer.alloc(size);
      const { bytesRead } = await fh.read(buf, 0, size, 0);
      const data = buf.subarray(0, bytesRead);
      try {
        return parse(data, path);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        if (bytesRead < size || size >= MAX_HEADER) throw new GgufFormatError(`${path}: GGUF metadata is truncated`);
        size *= 4;
      }
    }
  } finally {
    await fh.close();
  }
}

function parse(data: Buffer, path: string): GgufHeader {
  if (data.length < 4 || data.toString('latin1', 0, 4) !== 'GGUF')
    throw new GgufFormatError(`${path}: not a GGUF file`);
  const c = new Cursor(data.subarray(4));
  const version = c.u32();
  if (version < 2 || version > 3) throw new GgufFormatError(`${path}: unsupported GGUF version ${version}`);
  const tensorCount = c.u64();
  const kvCount = Number(c.u64());
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.str();
    metadata.set(key, c.value(c.u32()));
  }
  const infos: Omit<GgufTensorInfo, 'offset'>[] = [];
  const rel: number[] = [];
  for (let i = 0; i < Number(tensorCount); i++) {
    const name = c.str();
    const nDims = c.u32();
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(Number(c.u64()));
    infos.push({ name, ne, type: c.u32() });
    rel.push(Number(c.u64()));
  }
  const align = Number(metadata.get('general.alignment') ?? 32);
  const dataStart = Math.ceil((4 + c.offset) / align) * align;
  const tensors = infos.map((t, i) => ({ ...t, offset: dataStart + rel[i]! }));
  return { version, tensorCount, metadata, tensors };
}

/** 'adapter' for LoRA files (general.type), else 'model'. */
export function ggufKind(h: GgufHeader): 'model' | 'adapter' {
  return h.metadata.get('general.type') === 'adapter' ? 'adapter' : 'model';
}
