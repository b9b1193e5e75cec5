/**
 * A streaming GGUF v3 writer (the container llama.cpp loads; spec: ggml docs/gguf.md).
 *
 * Layout: magic "GGUF", version 3, tensor count (u64), metadata count (u64); the metadata
 * key/value pairs; one info per tensor (name, dims in ggml order, type, offset into the
 * data section); padding to the alignment; the tensor data, each tensor starting at a
 * multiple of the alignment. All little-endian.
 *
 * Tensor bytes are produced one tensor at a time while writing, so a multi-GB model never
 * sits in memory; the file appears atomically (temp file, fsync, rename).
 */
import { writeAll, writeFileAtomicWith } from '@mobillama/core';
import { GGML_TYPE_ID, ggmlNBytes, type GgmlType } from './ggml-types.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_metadata_value_type. */
export const GGUF_VALUE_TYPE = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7,
  string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, 'array'>;

/** A metadata value with its GGUF type (JS numbers alone cannot say u32 vs f32). */
export type GgufValue =
  | { readonly type: 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64'; readonly value: number }
  | { readonly type: 'uint64' | 'int64'; readonly value: bigint }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'array'; readonly itemType: 'string'; readonly value: readonly string[] }
  | { readonly type: 'array'; readonly itemType: 'float32'; readonly value: Float32Array }
  | { readonly type: 'array'; readonly itemType: 'int32'; readonly value: Int32Array }
  | { readonly type: 'array'; readonly itemType: 'uint32'; readonly value: Uint32Array };

/** Constructors for typed metadata values. */
export const gguf = {
  u32: (value: number): GgufValue => ({ type: 'uint32', value }),
  i32: (value: number): GgufValue => ({ type: 'int32', value }),
  f32: (value: number): GgufValue => ({ type: 'float32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  str: (value: string): GgufValue => ({ type: 'string', value }),
  strings: (value: readonly string[]): GgufValue => ({ type: 'array', itemType: 'string', value }),
  f32s: (value: Float32Array): GgufValue => ({ type: 'array', itemType: 'float32', value }),
  i32s: (value: Int32Array): GgufValue => ({ type: 'array', itemType: 'int32', value }),
};

export interface GgufTensorSpec {
  readonly name: string;
  /** ggml order: ne[0] is the row length (a PyTorch [out, in] weight is ne = [in, out]). */
  readonly ne: readonly number[];
  readonly type: GgmlType;
  /** The tensor's bytes, called once, in file order, while the file is written. */
  readonly data: () => Promise<Uint8Array> | Uint8Array;
}

export interface GgufWriteOptions {
  /** Data alignment; also written as general.alignment when not the default 32. */
  readonly alignment?: number;
  /** Called after each tensor is written. */
  readonly onTensor?: (index: number, count: number, name: string) => void;
}

export interface GgufWriteResult {
  readonly path: string;
  readonly bytes: number;
  /** Byte offset of the tensor data section. */
  readonly dataOffset: number;
}

/** Growable little-endian byte buffer for the header. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number): void { this.reserve(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: number | bigint): void { this.reserve(8); this.buf.writeBigUInt64LE(BigInt(v), this.length); this.length += 8; }
  i64(v: bigint): void { this.reserve(8); this.buf.writeBigInt64LE(v, this.length); this.length += 8; }
  bytes(b: Uint8Array): void { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  /** gguf_string_t: u64 byte length, then UTF-8 bytes (no terminator). */
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  zeros(n: number): void { this.reserve(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  view(): Buffer { return this.buf.subarray(0, this.length); }
}

function writeValue(sink: ByteSink, v: GgufValue): void {
  switch (v.type) {
    case 'uint8': sink.u8(v.value); break;
    case 'int8': sink.i8(v.value); break;
    case 'uint16': sink.u16(v.value); break;
    case 'int16': sink.i16(v.value); break;
    case 'uint32': sink.u32(v.value); break;
    case 'int32': sink.i32(v.value); break;
    case 'float32': sink.f32(v.value); break;
    case 'float64': sink.f64(v.value); break;
    case 'uint64': sink.u64(v.value); break;
    case 'int64': sink.i64(v.value); break;
    case 'bool': sink.u8(v.value ? 1 : 0); break;
    case 'string': sink.str(v.value); break;
    case 'array':
      sink.u32(GGUF_VALUE_TYPE[v.itemType]);
      sink.u64(v.value.length);
      switch (v.itemType) {
        case 'string': for (const s of v.value) sink.str(s); break;
        case 'float32': for (const x of v.value) sink.f32(x); break;
        case 'int32': for (const x of v.value) sink.i32(x); break;
        case 'uint32': for (const x of v.value) sink.u32(x); break;
      }
      break;
  }
}

const pad = (n: number, a: number): number => (a - (n % a)) % a;

/** The header (everything before the tensor data, padded) and each tensor's data offset. */
export function encodeGgufHeader(
  metadata: ReadonlyMap<string, GgufValue> | readonly (readonly [string, GgufValue])[],
  tensors: readonly Pick<GgufTensorSpec, 'name' | 'ne' | 'type'>[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): { header: Buffer; offsets: number[]; sizes: number[] } {
  if (!Number.isInteger(alignment) || alignment < 1 || alignment % 8 !== 0) throw new RangeError(`GGUF alignment must be a positive multiple of 8, got ${alignment}`);
  const kv = new Map(metadata);
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) kv.set('general.alignment', gguf.u32(alignment));
  const names = new Set<string>();
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(kv.size);
  for (const [key, value] of kv) {
    sink.str(key);
    sink.u32(GGUF_VALUE_TYPE[value.type]);
    writeValue(sink, value);
  }
  const offsets: number[] = [], sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`GGUF: tensor ${t.name} appears twice`);
    names.add(t.name);
    // llama.cpp reads at most GGML_MAX_DIMS (4) dims and names up to 63 bytes.
    if (t.ne.length < 1 || t.ne.length > 4) throw new RangeError(`GGUF: tensor ${t.name} has ${t.ne.length} dims (1..4 allowed)`);
    if (Buffer.byteLength(t.name) >= 64) throw new RangeError(`GGUF: tensor name ${t.name} is longer than 63 bytes`);
    const size = ggmlNBytes(t.type, t.ne);
    sink.str(t.name);
    sink.u32(t.ne.length);
    for (const d of t.ne) sink.u64(d);
    sink.u32(GGML_TYPE_ID[t.type]);
    sink.u64(offset);
    offsets.push(offset);
    sizes.push(size);
    offset += size + pad(size, alignment);
  }
  sink.zeros(pad(sink.length, alignment));
  return { header: Buffer.from(sink.view()), offsets, sizes };
}

/**
 * Writes a GGUF file: metadata in the order given, tensors in the order given, each
 * tensor's bytes requested from its `data()` just before they are written.
 */
export async function writeGguf(
  path: string,
  metadata: ReadonlyMap<string, GgufValue> | readonly (readonly [string, GgufValue])[],
  tensors: readonly GgufTensorSpec[],
  opts: GgufWriteOptions = {},
): Promise<GgufWriteResult> {
  const alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const { header, sizes } = encodeGgufHeader(metadata, tensors, alignment);
  let bytes = 0;
  await writeFileAtomicWith(path, async (fh) => {
    const put = async (b: Uint8Array): Promise<void> => {
      await writeAll(fh, b);
      bytes += b.length;
    };
    await put(header);
    const zeros = new Uint8Array(alignment);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const data = await t.data();
      if (data.length !== sizes[i]) throw new Error(`GGUF: tensor ${t.name} produced ${data.length} bytes, expected ${sizes[i]} for ${t.type} [${t.ne.join(', ')}]`);
      await put(data);
      const p = pad(data.length, alignment);
      if (p) await put(zeros.subarray(0, p));
      opts.onTensor?.(i, tensors.length, t.name);
    }
  });
  return { path, bytes, dataOffset: header.length };
}
