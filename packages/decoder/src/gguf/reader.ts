/**
 * A small GGUF reader, written to check what the writer produced (tests, diagnostics):
 * the header, metadata and tensor infos, and tensors read back as float32.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { decodeGgml, ggmlNBytes, ggmlTypeFromId, type GgmlType } from './ggml-types.js';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPE, type GgufScalarType } from './writer.js';

/** A metadata value as read: scalars as JS values (u64/i64 as bigint), arrays as JS arrays. */
export type GgufReadValue = number | bigint | boolean | string | GgufReadValue[];

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order (ne[0] = row length). */
  readonly ne: readonly number[];
  readonly type: GgmlType;
  /** Absolute offset of the data in the file. */
  readonly fileOffset: number;
  readonly byteLength: number;
}

export interface GgufFile {
  readonly path: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufReadValue>;
  /** The GGUF type of each metadata value ('array' for arrays). */
  readonly metadataTypes: ReadonlyMap<string, keyof typeof GGUF_VALUE_TYPE>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly alignment: number;
  readonly dataOffset: number;
  /** The tensor's values as float32, dequantized; its shape is `ne`. */
  readTensor(name: string): Promise<Float32Array>;
  /** The tensor's stored bytes. */
  readTensorBytes(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

class NeedMore extends Error {}

const TYPE_NAME = Object.fromEntries(Object.entries(GGUF_VALUE_TYPE).map(([k, v]) => [v, k])) as Record<number, keyof typeof GGUF_VALUE_TYPE>;

class Cursor {
  pos = 0;
  constructor(private readonly buf: Buffer, private readonly complete: boolean) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      if (this.complete) throw new Error('GGUF: file ends inside the header');
      throw new NeedMore();
    }
  }
  u8(): number { this.need(1); return this.buf.readUInt8(this.pos++); }
  i8(): number { this.need(1); return this.buf.readInt8(this.pos++); }
  u16(): number { this.need(2); const v = this.buf.readUInt16LE(this.pos); this.pos += 2; return v; }
  i16(): number { this.need(2); const v = this.buf.readInt16LE(this.pos); this.pos += 2; return v; }
  u32(): number { this.need(4); const v = this.buf.readUInt32LE(this.pos); this.pos += 4; return v; }
  i32(): number { this.need(4); const v = this.buf.readInt32LE(this.pos); this.pos += 4; return v; }
  f32(): number { this.need(4); const v = this.buf.readFloatLE(this.pos); this.pos += 4; return v; }
  f64(): number { this.need(8); const v = this.buf.readDoubleLE(this.pos); this.pos += 8; return v; }
  u64(): bigint { this.need(8); const v = this.buf.readBigUInt64LE(this.pos); this.pos += 8; return v; }
  i64(): bigint { this.need(8); const v = this.buf.readBigInt64LE(this.pos); this.pos += 8; return v; }
  /** A u64 that must fit a JS number (counts, sizes, offsets). */
  size(): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`GGUF: size ${v} is out of range`);
    return Number(v);
  }
  str(): string {
    const n = this.size();
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  value(type: number): GgufReadValue {
    switch (TYPE_NAME[type] as GgufScalarType | 'array' | undefined) {
      case 'uint8': return this.u8();
      case 'int8': return this.i8();
      case 'uint16': return this.u16();
      case 'int16': return this.i16();
      case 'uint32': return this.u32();
      case 'int32': return this.i32();
      case 'float32': return this.f32();
      case 'float64': return this.f64();
      case 'uint64': return this.u64();
      case 'int64': return this.i64();
      case 'bool': {
        const b = this.u8();
        if (b > 1) throw new Error(`GGUF: bool value ${b}`);
        return b === 1;
      }
      case 'string': return this.str();
      case 'array': {
        const itemType = this.u32();
        const n = this.size();
        const out: GgufReadValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(itemType));
        return out;
      }
      default: throw new Error(`GGUF: unknown metadata value type ${type}`);
    }
  }
}

interface Parsed {
  version: number;
  metadata: Map<string, GgufReadValue>;
  metadataTypes: Map<string, keyof typeof GGUF_VALUE_TYPE>;
  tensors: { name: string; ne: number[]; type: GgmlType; offset: number }[];
  alignment: number;
  dataOffset: number;
}

function parseHeader(buf: Buffer, complete: boolean): Parsed {
  const c = new Cursor(buf, complete);
  if (c.u32() !== GGUF_MAGIC) throw new Error('not a GGUF file (bad magic)');
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new Error(`GGUF version ${version} is not supported`);
  const nTensors = c.size();
  const nKv = c.size();
  const metadata = new Map<string, GgufReadValue>();
  const metadataTypes = new Map<string, keyof typeof GGUF_VALUE_TYPE>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str();
    const type = c.u32();
    if (metadata.has(key)) throw new Error(`GGUF: duplicate metadata key ${key}`);
    metadata.set(key, c.value(type));
    metadataTypes.set(key, TYPE_NAME[type]);
  }
  const tensors: Parsed['tensors'] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = c.str();
    const nDims = c.u32();
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(c.size());
    const typeId = c.u32();
    const type = ggmlTypeFromId(typeId);
    if (!type) throw new Error(`GGUF: tensor ${name} has ggml type ${typeId}, which this reader does not decode`);
    tensors.push({ name, ne, type, offset: c.size() });
  }
  const alignment = typeof metadata.get('general.alignment') === 'number' ? metadata.get('general.alignment') as number : GGUF_DEFAULT_ALIGNMENT;
  const dataOffset = c.pos + ((alignment - (c.pos % alignment)) % alignment);
  return { version, metadata, metadataTypes, tensors, alignment, dataOffset };
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`GGUF: file ends at ${position + done}, wanted ${position + length}`);
    done += bytesRead;
  }
  return buf;
}

export async function openGguf(path: string): Promise<GgufFile> {
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    let parsed: Parsed | undefined;
    // The header holds the whole vocabulary: read a growing prefix until it parses.
    for (let len = Math.min(1 << 20, fileSize); !parsed; len = Math.min(len * 4, fileSize)) {
      try {
        parsed = parseHeader(await readAt(fh, 0, len), len === fileSize);
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e;
      }
    }
    const p = parsed;
    const tensors: GgufTensorInfo[] = p.tensors.map((t) => {
      if (t.offset % p.alignment !== 0) throw new Error(`GGUF: tensor ${t.name} offset ${t.offset} is not aligned to ${p.alignment}`);
      const byteLength = ggmlNBytes(t.type, t.ne);
      const fileOffset = p.dataOffset + t.offset;
      if (fileOffset + byteLength > fileSize) throw new Error(`GGUF: tensor ${t.name} runs past the end of the file`);
      return { name: t.name, ne: t.ne, type: t.type, fileOffset, byteLength };
    });
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const info = (name: string): GgufTensorInfo => {
      const t = byName.get(name);
      if (!t) throw new Error(`GGUF: no tensor ${name}`);
      return t;
    };
    const readTensorBytes = async (name: string): Promise<Uint8Array> => {
      const t = info(name);
      return readAt(fh, t.fileOffset, t.byteLength);
    };
    return {
      path, version: p.version, metadata: p.metadata, metadataTypes: p.metadataTypes, tensors,
      alignment: p.alignment, dataOffset: p.dataOffset,
      readTensorBytes,
      async readTensor(name: string): Promise<Float32Array> {
        const t = info(name);
        return decodeGgml(t.type, await readTensorBytes(name), t.ne.reduce((a, b) => a * b, 1));
      },
      close: () => fh.close(),
    };
  } catch (e) {
    await fh.close();
    throw e;
  }
}
