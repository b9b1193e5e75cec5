/**
 * A minimal zip reader for torch.save archives: it reads the central directory (ZIP64
 * included, which torch writes for big checkpoints) and local headers through a file
 * handle, and hands out the absolute byte range of each STORED entry, so tensor bytes can
 * be read (or referenced by ONNX external data) in place. It never reads the whole file
 * and never inflates anything: torch stores entries uncompressed.
 */
import type { FileHandle } from 'node:fs/promises';
import { WeightFileError } from './types.js';

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored; anything else is compressed and refused by `dataRange`. */
  readonly method: number;
  readonly flags: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

/** Where an entry's bytes are in the archive file. */
export interface ZipDataRange {
  readonly offset: number;
  readonly size: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** Largest single read (Node caps one read call just under 2 GiB). */
const MAX_READ = 1 << 30;

/**
 * Read exactly `length` bytes at `position`, looping over short reads. Hitting end of
 * file means the file is truncated: the error names the file and what was being read.
 */
export async function readExactly(
  handle: FileHandle, position: number, length: number, file: string, what: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const chunk = Math.min(length - done, MAX_READ);
    const { bytesRead } = await handle.read(out, done, chunk, position + done);
    if (bytesRead === 0) {
      throw new WeightFileError(
        `${file}: file is truncated: ${what} needs bytes ${position}..${position + length} but the file ends at ${position + done}`,
      );
    }
    done += bytesRead;
  }
  return out;
}

function u64(view: DataView, at: number, file: string, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WeightFileError(`${file}: corrupt zip: ${what} ${v} is too large`);
  }
  return Number(v);
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class ZipReader {
  private constructor(
    private readonly handle: FileHandle,
    /** File name used in error messages. */
    readonly file: string,
    readonly fileSize: number,
    /** Entries in central-directory order. */
    readonly entries: ReadonlyMap<string, ZipEntry>,
  ) {}

  /** Parse the central directory. Throws WeightFileError when there is no valid one. */
  static async open(handle: FileHandle, file: string): Promise<ZipReader> {
    const fileSize = (await handle.stat()).size;
    const tailLen = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT);
    const tailStart = fileSize - tailLen;
    const tail = await readExactly(handle, tailStart, tailLen, file, 'zip end record');
    const tv = viewOf(tail);
    let eocd = -1;
    for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      throw new WeightFileError(
        `${file}: not a zip archive, or truncated (no zip end-of-central-directory record found)`,
      );
    }
    const diskNo = tv.getUint16(eocd + 4, true);
    const cdDisk = tv.getUint16(eocd + 6, true);
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);

    // ZIP64: a locator sits right before the classic end record and points at the
    // zip64 end record, which holds the real 64-bit counts and offsets.
    const locAt = eocd - 20;
    if (locAt >= 0 && tv.getUint32(locAt, true) === SIG_EOCD64_LOCATOR) {
      const eocd64Offset = u64(tv, locAt + 8, file, 'zip64 end record offset');
      const rec = viewOf(await readExactly(handle, eocd64Offset, 56, file, 'zip64 end record'));
      if (rec.getUint32(0, true) !== SIG_EOCD64) {
        throw new WeightFileError(`${file}: corrupt zip: bad zip64 end-of-central-directory record`);
      }
      if (rec.getUint32(16, true) !== 0 || rec.getUint32(20, true) !== 0) {
        throw new WeightFileError(`${file}: multi-disk zip archives are not supported`);
      }
      count = u64(rec, 32, file, 'entry count');
      cdSize = u64(rec, 40, file, 'central directory size');
      cdOffset = u64(rec, 48, file, 'central directory offset');
    } else if (diskNo !== 0 || cdDisk !== 0) {
      throw new WeightFileError(`${file}: multi-disk zip archives are not supported`);
    }

    if (cdOffset + cdSize > fileSize) {
      throw new WeightFileError(
        `${file}: corrupt or truncated zip: central directory (${cdOffset}+${cdSize}) lies beyond the end of the file (${fileSize} bytes)`,
      );
    }
    const cd = await readExactly(handle, cdOffset, cdSize, file, 'zip central directory');
    const entries = parseCentralDirectory(cd, cdOffset, count, file, fileSize);
    return new ZipReader(handle, file, fileSize, entries);
  }

  /**
   * Absolute data range of a STORED entry (reads its local header, whose extra field —
   * torch pads it for alignment — can differ from the central one).
   */
  async dataRange(entry: ZipEntry): Promise<ZipDataRange> {
    if (entry.flags & 1) {
      throw new WeightFileError(`${this.file}: zip entry ${entry.name} is encrypted`);
    }
    if (entry.method !== 0) {
      throw new WeightFileError(
        `${this.file}: zip entry ${entry.name} is compressed (method ${entry.method}); torch.save stores ` +
        'entries uncompressed, so this file was rewritten by another tool — re-save it with torch.save',
      );
    }
    if (entry.compressedSize !== entry.size) {
      throw new WeightFileError(`${this.file}: corrupt zip: stored entry ${entry.name} has differing sizes`);
    }
    const hdr = viewOf(await readExactly(this.handle, entry.localHeaderOffset, 30, this.file, `zip entry ${entry.name}`));
    if (hdr.getUint32(0, true) !== SIG_LOCAL) {
      throw new WeightFileError(`${this.file}: corrupt zip: bad local header for entry ${entry.name}`);
    }
    const offset = entry.localHeaderOffset + 30 + hdr.getUint16(26, true) + hdr.getUint16(28, true);
    if (offset + entry.size > this.fileSize) {
      throw new WeightFileError(
        `${this.file}: file is truncated: zip entry ${entry.name} needs bytes ${offset}..${offset + entry.size} but the file has ${this.fileSize}`,
      );
    }
    return { offset, size: entry.size };
  }

  /** Read a whole (small) stored entry into memory. */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    const { offset, size } = await this.dataRange(entry);
    return readExactly(this.handle, offset, size, this.file, `zip entry ${entry.name}`);
  }
}

function parseCentralDirectory(
  cd: Uint8Array, cdOffset: number, count: number, file: string, fileSize: number,
): Map<string, ZipEntry> {
  const v = viewOf(cd);
  const decoder = new TextDecoder('utf-8');
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== SIG_CENTRAL) {
      throw new WeightFileError(`${file}: corrupt zip: bad central directory record #${i} at file offset ${cdOffset + p}`);
    }
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    let compressedSize = v.getUint32(p + 20, true);
    let size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    const diskStart = v.getUint16(p + 34, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) {
      throw new WeightFileError(`${file}: corrupt zip: central directory record #${i} overruns the directory`);
    }
    const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));

    // ZIP64 extra (id 1): the 64-bit values, in this order, for each field saturated at 0xFFFFFFFF.
    const extraStart = p + 46 + nameLen;
    for (let e = extraStart; e + 4 <= extraStart + extraLen;) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 1) {
        let q = e + 4;
        const take = (what: string): number => {
          if (q + 8 > e + 4 + len) throw new WeightFileError(`${file}: corrupt zip: short zip64 field for ${name}`);
          const n = u64(v, q, file, what);
          q += 8;
          return n;
        };
        if (size === 0xffffffff) size = take('entry size');
        if (compressedSize === 0xffffffff) compressedSize = take('entry compressed size');
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('local header offset');
      }
      e += 4 + len;
    }
    if (diskStart !== 0 && diskStart !== 0xffff) {
      throw new WeightFileError(`${file}: multi-disk zip archives are not supported`);
    }
    if (localHeaderOffset + 30 > fileSize) {
      throw new WeightFileError(`${file}: corrupt or truncated zip: entry ${name} starts beyond the end of the file`);
    }
    entries.set(name, { name, method, flags, compressedSize, size, localHeaderOffset });
    p = end;
  }
  return entries;
}
