import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { writeFileAtomic } from '../fs/atomic-write.js';
import { DTYPE_BYTES, bytesOf, isDType, numel, typedFromBytes, type HostTensor } from '../tensor.js';
import { WeightFileError, type TensorInfo, type WeightSource } from './types.js';

/** Headers above this are refused: real ones are a few hundred KB even for 70B models. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/**
 * Opens a .safetensors file lazily: only the header is read here; tensor bytes are read
 * on demand, so a multi-GB checkpoint never has to fit in memory.
 */
export async function openSafetensors(path: string): Promise<WeightSource> {
  const file = basename(path);
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new WeightFileError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const size = (await fh.stat()).size;
    if (size < 8) throw new WeightFileError(`${file}: not a safetensors file (${size} bytes, too short for a header)`);
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES || headerLen > size - 8) {
      throw new WeightFileError(`${file}: header length ${headerLen} is absurd for a ${size}-byte file (corrupt or not safetensors)`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    await fh.read(headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new WeightFileError(`${file}: header is not valid JSON (corrupt or not safetensors)`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new WeightFileError(`${file}: header is not a JSON object`);
    }
    const dataStart = 8 + headerLen;
    const dataLen = size - dataStart;
    const infos = new Map<string, TensorInfo>();
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const e = raw as HeaderEntry;
      if (!e || typeof e !== 'object' || !Array.isArray(e.shape) || !Array.isArray(e.data_offsets)) {
        throw new WeightFileError(`${file}: tensor ${name}: malformed header entry`);
      }
      if (!isDType(e.dtype)) throw new WeightFileError(`${file}: tensor ${name}: unknown dtype ${JSON.stringify(e.dtype)}`);
      if (!e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new WeightFileError(`${file}: tensor ${name}: invalid shape ${JSON.stringify(e.shape)}`);
      }
      const [begin, end] = e.data_offsets;
      const expected = numel(e.shape) * DTYPE_BYTES[e.dtype];
      if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end < begin) {
        throw new WeightFileError(`${file}: tensor ${name}: invalid data_offsets ${JSON.stringify(e.data_offsets)}`);
      }
      if (end - begin !== expected) {
        throw new WeightFileError(`${file}: tensor ${name}: ${end - begin} bytes stored but ${e.dtype}${JSON.stringify(e.shape)} needs ${expected}`);
      }
      if (end > dataLen) {
        throw new WeightFileError(`${file}: tensor ${name}: data_offsets end ${end} past the end of the data (${dataLen} bytes; file truncated?)`);
      }
      spans.push({ name, begin, end });
      infos.set(name, {
        name,
        dtype: e.dtype,
        shape: e.shape,
        location: { file: path, byteOffset: dataStart + begin, byteLength: end - begin },
        storageKey: `${path}@${begin}:${end}:${e.dtype}:${e.shape.join('x')}`,
      });
    }
    spans.sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i].begin < spans[i - 1].end && spans[i].end > spans[i].begin) {
        throw new WeightFileError(`${file}: tensors ${spans[i - 1].name} and ${spans[i].name} overlap`);
      }
    }
    return new SafetensorsSource(path, fh, infos);
  } catch (e) {
    await fh.close();
    throw e;
  }
}

class SafetensorsSource implements WeightSource {
  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly infos: Map<string, TensorInfo>,
  ) {}

  names(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): TensorInfo {
    const i = this.infos.get(name);
    if (!i) throw new WeightFileError(`${basename(this.path)}: no tensor named ${name}`);
    return i;
  }

  async read(name: string): Promise<HostTensor> {
    const info = this.info(name);
    const loc = info.location!;
    const buf = new Uint8Array(loc.byteLength);
    const { bytesRead } = await this.fh.read(buf, 0, loc.byteLength, loc.byteOffset);
    if (bytesRead !== loc.byteLength) {
      throw new WeightFileError(`${basename(this.path)}: tensor ${name}: file truncated (read ${bytesRead} of ${loc.byteLength} bytes)`);
    }
    return { dtype: info.dtype, shape: info.shape, data: typedFromBytes(info.dtype, buf) };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Writes tensors as a .safetensors file atomically: a temp file in the same folder,
 * fsync'd, then renamed over the target, so a crash never leaves a half-written file.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, HostTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name];
    const len = t.data.byteLength;
    if (len !== numel(t.shape) * DTYPE_BYTES[t.dtype]) {
      throw new Error(`writeSafetensors: tensor ${name}: ${len} bytes do not match ${t.dtype}${JSON.stringify(t.shape)}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  // Pad so tensor data starts 8-byte aligned, as the reference implementation does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  await writeFileAtomic(path, [lenBytes, headerBytes, ...names.map((n) => bytesOf(tensors[n].data))]);
}
