/**
 * Writes PyTorch `.bin` checkpoints in the zip layout torch.save uses (the counterpart of
 * torch-bin.ts): `<stem>/data.pkl` (a protocol-2 pickle of an OrderedDict of
 * `torch._utils._rebuild_tensor_v2(...)` calls whose storages are persistent ids
 * `('storage', torch.FloatStorage, key, 'cpu', numel)`), `<stem>/data/<key>` with each
 * storage's raw little-endian bytes STORED and 64-byte aligned (torch pads with an "FB"
 * extra field), and `<stem>/version` = "3". ZIP64 records appear once offsets or sizes
 * pass 4 GiB.
 *
 * Tensor bytes are streamed to a temp file one tensor at a time (an iterable can produce
 * them lazily, so a 5 GB checkpoint never sits in memory), then fsync'd and renamed over
 * the target. Storages are written in iteration order, before data.pkl: that is the only
 * way to stream without knowing every tensor up front. Readers (torch, zipfile, ours) find
 * records through the central directory, which lists them in torch's order.
 */
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { crc32 } from 'node:zlib';
import { DTYPE_BYTES, bytesOf, numel, type DType, type HostTensor, type TypedData } from '../tensor.js';
import { STORAGE_DTYPES } from './pickle.js';
import { writeFileAtomicWith } from '../fs/atomic-write.js';

export type TorchBinTensors =
  | Iterable<readonly [string, HostTensor]>
  | AsyncIterable<readonly [string, HostTensor]>
  | Readonly<Record<string, HostTensor>>;

export interface WriteTorchBinOptions {
  /**
   * Tensors that share an earlier tensor's storage, as torch.save writes a module shared
   * by several layers (MobiLlama's FFN: one storage, 22 names) or `sd['b'] = sd['a']`:
   * alias name → name of an earlier tensor. The alias must have the same dtype and shape;
   * its bytes are not written (not even read). Tensors not listed are written as separate
   * storages even when they are the very same JS object (identical copies).
   */
  readonly shareStorageOf?: Readonly<Record<string, string>> | ((name: string) => string | undefined);
  /** 'always' writes ZIP64 records for every entry even in a small file (tests, compat); default 'auto'. */
  readonly zip64?: 'auto' | 'always';
}

export interface TorchBinWriteResult {
  /** Size of the written file in bytes. */
  readonly bytes: number;
  readonly tensors: number;
  /** Distinct storages written (data/0 … data/N-1). */
  readonly storages: number;
  readonly zip64: boolean;
}

const DTYPE_STORAGE: Partial<Record<DType, string>> = Object.fromEntries(
  Object.entries(STORAGE_DTYPES).map(([cls, dtype]) => [dtype, cls]),
);

const U32_MAX = 0xffffffff;
/** torch aligns every record's data to 64 bytes (kFieldAlignment in inline_container.cc). */
const ALIGN = 64;
/** Node caps one write call just under 2 GiB. */
const MAX_WRITE = 1 << 30;

/** The archive folder torch 1.x names after the file: its base name up to the last dot. */
export function torchArchiveName(path: string): string {
  const base = basename(path);
  const dot = base.lastIndexOf('.');
  const stem = dot > 0 ? base.slice(0, dot) : base;
  // torch would write an empty folder name for ".bin"; "archive" is what torch 2.x uses.
  return stem === '' || dot === 0 ? 'archive' : stem;
}

/** Row-major strides as torch computes them (a size-0 dim counts as 1). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= Math.max(shape[i], 1);
  }
  return strides;
}

interface CentralRecord {
  readonly name: Buffer;
  readonly crc: number;
  readonly size: number;
  readonly offset: number;
  readonly zip64Local: boolean;
}

interface PickledTensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly key: string;
  readonly storageNumel: number;
}

/** Sequential zip writer over a file handle: STORED entries only, data 64-byte aligned. */
class ZipStreamWriter {
  private pos = 0;
  private readonly records: CentralRecord[] = [];

  constructor(private readonly fh: FileHandle, private readonly forceZip64: boolean) {}

  get size(): number { return this.pos; }

  private async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.byteLength; off += MAX_WRITE) {
      const n = Math.min(MAX_WRITE, bytes.byteLength - off);
      let done = 0;
      while (done < n) {
        const { bytesWritten } = await this.fh.write(bytes, off + done, n - done, this.pos + off + done);
        done += bytesWritten;
      }
    }
    this.pos += bytes.byteLength;
  }

  /** One STORED entry whose bytes are `chunks`, in order. */
  async addEntry(name: string, chunks: readonly Uint8Array[]): Promise<void> {
    const nameBytes = Buffer.from(name, 'utf8');
    let size = 0;
    let crc = 0;
    for (const c of chunks) {
      size += c.byteLength;
      crc = crc32(c, crc);
    }
    const zip64Local = this.forceZip64 || size >= U32_MAX;
    const z64Len = zip64Local ? 20 : 0;
    // Pad so the data starts on a 64-byte boundary; the "FB" extra field carries the pad.
    const start = this.pos + 30 + nameBytes.length + z64Len + 4;
    const pad = (ALIGN - (start % ALIGN)) % ALIGN;
    const extraLen = z64Len + 4 + pad;
    const hdr = Buffer.alloc(30 + nameBytes.length + extraLen);
    hdr.writeUInt32LE(0x04034b50, 0);
    hdr.writeUInt16LE(zip64Local ? 45 : 20, 4); // version needed
    hdr.writeUInt16LE(0x0800, 6); // flags: names are UTF-8
    hdr.writeUInt16LE(0, 8); // method: stored
    hdr.writeUInt16LE(0, 10); // time and date 0, as torch writes them
    hdr.writeUInt16LE(0, 12);
    hdr.writeUInt32LE(crc >>> 0, 14);
    hdr.writeUInt32LE(zip64Local ? U32_MAX : size, 18);
    hdr.writeUInt32LE(zip64Local ? U32_MAX : size, 22);
    hdr.writeUInt16LE(nameBytes.length, 26);
    hdr.writeUInt16LE(extraLen, 28);
    nameBytes.copy(hdr, 30);
    let e = 30 + nameBytes.length;
    if (zip64Local) {
      hdr.writeUInt16LE(1, e);
      hdr.writeUInt16LE(16, e + 2);
      hdr.writeBigUInt64LE(BigInt(size), e + 4);
      hdr.writeBigUInt64LE(BigInt(size), e + 12);
      e += 20;
    }
    hdr.writeUInt16LE(0x4246, e); // 'F','B'
    hdr.writeUInt16LE(pad, e + 2);
    hdr.fill('Z', e + 4);
    const offset = this.pos;
    await this.write(hdr);
    for (const c of chunks) await this.write(c);
    this.records.push({ name: nameBytes, crc: crc >>> 0, size, offset, zip64Local });
  }

  /** Central directory in `order` (names), then the (ZIP64) end records. */
  async finish(order: readonly string[]): Promise<boolean> {
    const byName = new Map(this.records.map((r) => [r.name.toString('utf8'), r]));
    const parts: Buffer[] = [];
    for (const n of order) {
      const r = byName.get(n);
      if (!r) throw new Error(`internal: no zip record ${n}`);
      const bigSize = this.forceZip64 || r.size >= U32_MAX;
      const bigOffset = this.forceZip64 || r.offset >= U32_MAX;
      const z64Len = bigSize || bigOffset ? 4 + (bigSize ? 16 : 0) + (bigOffset ? 8 : 0) : 0;
      const rec = Buffer.alloc(46 + r.name.length + z64Len);
      rec.writeUInt32LE(0x02014b50, 0);
      rec.writeUInt16LE(z64Len || r.zip64Local ? 45 : 20, 4); // made by
      rec.writeUInt16LE(z64Len || r.zip64Local ? 45 : 20, 6); // needed
      rec.writeUInt16LE(0x0800, 8);
      rec.writeUInt16LE(0, 10);
      rec.writeUInt32LE(0, 12); // time, date
      rec.writeUInt32LE(r.crc, 16);
      rec.writeUInt32LE(bigSize ? U32_MAX : r.size, 20);
      rec.writeUInt32LE(bigSize ? U32_MAX : r.size, 24);
      rec.writeUInt16LE(r.name.length, 28);
      rec.writeUInt16LE(z64Len, 30);
      // comment length, disk start, internal and external attributes: 0
      rec.writeUInt32LE(bigOffset ? U32_MAX : r.offset, 42);
      r.name.copy(rec, 46);
      if (z64Len) {
        let e = 46 + r.name.length;
        rec.writeUInt16LE(1, e);
        rec.writeUInt16LE(z64Len - 4, e + 2);
        e += 4;
        if (bigSize) {
          rec.writeBigUInt64LE(BigInt(r.size), e);
          rec.writeBigUInt64LE(BigInt(r.size), e + 8);
          e += 16;
        }
        if (bigOffset) rec.writeBigUInt64LE(BigInt(r.offset), e);
      }
      parts.push(rec);
    }
    const cd = Buffer.concat(parts);
    const cdOffset = this.pos;
    const count = order.length;
    const zip64 = this.forceZip64 || count >= 0xffff || cd.length >= U32_MAX || cdOffset >= U32_MAX;
    const tail: Buffer[] = [cd];
    if (zip64) {
      const eocd64Offset = cdOffset + cd.length;
      const rec = Buffer.alloc(56);
      rec.writeUInt32LE(0x06064b50, 0);
      rec.writeBigUInt64LE(44n, 4); // size of the rest of this record
      rec.writeUInt16LE(45, 12);
      rec.writeUInt16LE(45, 14);
      // disk numbers (16, 20): 0
      rec.writeBigUInt64LE(BigInt(count), 24);
      rec.writeBigUInt64LE(BigInt(count), 32);
      rec.writeBigUInt64LE(BigInt(cd.length), 40);
      rec.writeBigUInt64LE(BigInt(cdOffset), 48);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0);
      loc.writeBigUInt64LE(BigInt(eocd64Offset), 8);
      loc.writeUInt32LE(1, 16);
      tail.push(rec, loc);
    }
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    eocd.writeUInt16LE(zip64 ? 0xffff : count, 8);
    eocd.writeUInt16LE(zip64 ? 0xffff : count, 10);
    eocd.writeUInt32LE(zip64 ? U32_MAX : cd.length, 12);
    eocd.writeUInt32LE(zip64 ? U32_MAX : cdOffset, 16);
    tail.push(eocd);
    await this.write(Buffer.concat(tail));
    return zip64;
  }
}

/** Just enough of pickle protocol 2 to write a state dict the way torch.save does. */
class StateDictPickler {
  private readonly out: number[] = [];
  private readonly memo = new Map<string, number>();

  private op(...bytes: number[]): void { for (const b of bytes) this.out.push(b); }

  private u32(n: number): void { this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff); }

  private put(key: string): void {
    const i = this.memo.size;
    this.memo.set(key, i);
    if (i < 256) this.op(0x71, i); // BINPUT
    else { this.op(0x72); this.u32(i); } // LONG_BINPUT
  }

  /** Push a memoized value (BINGET), or emit it with `write` and memoize it. */
  private memoized(key: string, write: () => void): void {
    const i = this.memo.get(key);
    if (i === undefined) { write(); this.put(key); return; }
    if (i < 256) this.op(0x68, i); // BINGET
    else { this.op(0x6a); this.u32(i); } // LONG_BINGET
  }

  private global(module: string, name: string): void {
    this.memoized(`g:${module}.${name}`, () => {
      this.op(0x63, ...Buffer.from(`${module}\n${name}\n`, 'utf8')); // GLOBAL
    });
  }

  private str(s: string, memo = false): void {
    const write = (): void => {
      const b = Buffer.from(s, 'utf8');
      this.op(0x58); // BINUNICODE
      this.u32(b.length);
      this.op(...b);
    };
    if (memo) this.memoized(`s:${s}`, write);
    else write();
  }

  int(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`pickle: cannot write ${v}`);
    if (v < 0x100) this.op(0x4b, v); // BININT1
    else if (v < 0x10000) this.op(0x4d, v & 0xff, v >>> 8); // BININT2
    else if (v < 0x80000000) { this.op(0x4a); this.u32(v); } // BININT
    else {
      // LONG1: little-endian two's complement, with a 0 byte when the top bit is set.
      const bytes: number[] = [];
      let x = BigInt(v);
      while (x > 0n) { bytes.push(Number(x & 0xffn)); x >>= 8n; }
      if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
      this.op(0x8a, bytes.length, ...bytes);
    }
  }

  private tuple(items: readonly (() => void)[]): void {
    if (items.length === 0) { this.op(0x29); return; } // EMPTY_TUPLE
    if (items.length > 3) this.op(0x28); // MARK
    for (const w of items) w();
    this.op(items.length === 1 ? 0x85 : items.length === 2 ? 0x86 : items.length === 3 ? 0x87 : 0x74);
  }

  private emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.op(0x29, 0x52); // EMPTY_TUPLE, REDUCE
  }

  private tensor(t: PickledTensor): void {
    const cls = DTYPE_STORAGE[t.dtype];
    if (!cls) throw new Error(`torch .bin: no storage class for dtype ${t.dtype}`);
    this.global('torch._utils', '_rebuild_tensor_v2');
    this.op(0x28); // MARK: the argument tuple
    // Persistent id ('storage', torch.<Cls>Storage, key, 'cpu', numel): torch.load maps
    // equal keys to one storage, so aliases share memory after loading.
    this.op(0x28);
    this.str('storage', true);
    this.global('torch', cls);
    this.str(t.key, true);
    this.str('cpu', true);
    this.int(t.storageNumel);
    this.op(0x74, 0x51); // TUPLE, BINPERSID
    this.int(0); // storage offset
    this.tuple(t.shape.map((d) => () => this.int(d)));
    this.tuple(contiguousStrides(t.shape).map((d) => () => this.int(d)));
    this.op(0x89); // requires_grad False
    this.emptyOrderedDict(); // backward hooks
    this.op(0x74, 0x52); // TUPLE, REDUCE
  }

  /** OrderedDict(name → tensor), SETITEMS in batches of 1000 as Python's pickler does. */
  stateDict(tensors: readonly PickledTensor[]): Uint8Array {
    this.op(0x80, 2); // PROTO 2
    this.emptyOrderedDict();
    for (let i = 0; i < tensors.length; i += 1000) {
      this.op(0x28); // MARK
      for (const t of tensors.slice(i, i + 1000)) {
        this.str(t.name);
        this.tensor(t);
      }
      this.op(0x75); // SETITEMS
    }
    this.op(0x2e); // STOP
    return Uint8Array.from(this.out);
  }
}

/**
 * A tensor's bytes as views of at most MAX_WRITE bytes: a byte view of a whole tensor
 * over 4 GiB is not even possible (typed arrays cap their length), a view per slice is.
 */
function byteChunks(data: TypedData): Uint8Array[] {
  const per = Math.max(1, Math.floor(MAX_WRITE / data.BYTES_PER_ELEMENT));
  const out: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += per) out.push(bytesOf(data.subarray(i, Math.min(data.length, i + per))));
  return out;
}

function isRecord(t: TorchBinTensors): t is Readonly<Record<string, HostTensor>> {
  return !(Symbol.iterator in t) && !(Symbol.asyncIterator in t);
}

/**
 * Writes tensors as a torch.save zip checkpoint at `path`, atomically (temp file in the
 * same folder, fsync, rename). Each tensor is contiguous with storage offset 0.
 */
export async function writeTorchBin(
  path: string, tensors: TorchBinTensors, opts: WriteTorchBinOptions = {},
): Promise<TorchBinWriteResult> {
  const archive = torchArchiveName(path);
  const share = opts.shareStorageOf;
  const aliasOf = typeof share === 'function' ? share : (n: string) => (share && Object.hasOwn(share, n) ? share[n] : undefined);
  const source: Iterable<readonly [string, HostTensor]> | AsyncIterable<readonly [string, HostTensor]> =
    isRecord(tensors) ? Object.entries(tensors) : tensors;

  return writeFileAtomicWith(path, async (fh) => {
    const zip = new ZipStreamWriter(fh, opts.zip64 === 'always');
    const pickled: PickledTensor[] = [];
    const byName = new Map<string, PickledTensor>();
    const order = [`${archive}/data.pkl`];
    let storages = 0;
    for await (const [name, t] of source) {
      if (byName.has(name)) throw new Error(`writeTorchBin ${path}: tensor ${name} given twice`);
      if (!DTYPE_STORAGE[t.dtype]) throw new Error(`writeTorchBin ${path}: tensor ${name}: dtype ${t.dtype} has no torch storage class`);
      const n = numel(t.shape);
      if (!t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`writeTorchBin ${path}: tensor ${name}: bad shape ${JSON.stringify(t.shape)}`);
      let entry: PickledTensor;
      const target = aliasOf(name);
      if (target !== undefined) {
        const base = byName.get(target);
        if (!base) throw new Error(`writeTorchBin ${path}: ${name} shares the storage of ${target}, which was not written before it`);
        if (base.dtype !== t.dtype || base.shape.length !== t.shape.length || base.shape.some((d, i) => d !== t.shape[i])) {
          throw new Error(`writeTorchBin ${path}: ${name} (${t.dtype}[${t.shape.join(',')}]) cannot share the storage of ${target} (${base.dtype}[${base.shape.join(',')}])`);
        }
        entry = { ...base, name };
      } else {
        if (t.data.byteLength !== n * DTYPE_BYTES[t.dtype]) {
          throw new Error(`writeTorchBin ${path}: tensor ${name}: ${t.data.byteLength} bytes do not match ${t.dtype}[${t.shape.join(',')}]`);
        }
        const key = String(storages++);
        await zip.addEntry(`${archive}/data/${key}`, byteChunks(t.data));
        order.push(`${archive}/data/${key}`);
        entry = { name, dtype: t.dtype, shape: [...t.shape], key, storageNumel: n };
      }
      byName.set(name, entry);
      pickled.push(entry);
    }
    await zip.addEntry(`${archive}/data.pkl`, [new StateDictPickler().stateDict(pickled)]);
    await zip.addEntry(`${archive}/version`, [Buffer.from('3\n')]);
    order.push(`${archive}/version`);
    const zip64 = await zip.finish(order);
    return { bytes: zip.size, tensors: pickled.length, storages, zip64 };
  });
}
