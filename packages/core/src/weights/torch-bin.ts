/**
 * Lazy, safe reader for PyTorch `.bin` checkpoints (the zip that torch.save writes:
 * `<archive>/data.pkl` describes the state dict, `<archive>/data/<key>` holds each
 * storage's raw little-endian bytes, uncompressed).
 *
 * Opening reads only the zip directory, data.pkl and the storages' local headers; tensor
 * bytes are read on demand, and contiguous tensors expose their absolute file location so
 * ONNX external data can point straight into the checkpoint. data.pkl goes through the
 * restricted unpickler in pickle.ts, so a hostile checkpoint cannot run code.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DTYPE_BYTES, numel, typedFromBytes, type DType, type HostTensor } from '../tensor.js';
import { PyDict, TensorRef, unpickle, type PickleValue } from './pickle.js';
import { WeightFileError, type TensorInfo, type TensorLocation, type WeightSource } from './types.js';
import { readExactly, ZipReader, type ZipDataRange } from './zip.js';

/** The pickled magic number that starts the legacy (pre-1.6, non-zip) torch format. */
const LEGACY_MAGIC = Uint8Array.of(0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19);

interface TorchTensor {
  readonly info: TensorInfo;
  readonly storageEntry: string;
  /** Absolute file offset of the storage's first byte. */
  readonly storageStart: number;
  readonly storageOffset: number;
  readonly strides: readonly number[];
}

export async function openTorchBin(path: string): Promise<WeightSource> {
  const file = resolve(path);
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (e) {
    throw new WeightFileError(`${path}: cannot open: ${(e as Error).message}`);
  }
  try {
    const tensors = await readIndex(handle, path, file);
    return new TorchBinSource(path, handle, tensors);
  } catch (e) {
    await handle.close();
    throw e;
  }
}

function startsWithLegacyMagic(head: Uint8Array): boolean {
  // PROTO n, then LONG1 of the 10-byte magic number (maybe after a FRAME).
  for (let i = 0; i + LEGACY_MAGIC.length <= head.length && i <= 16; i++) {
    if (LEGACY_MAGIC.every((b, j) => head[i + j] === b)) return true;
  }
  return false;
}

async function readIndex(handle: FileHandle, path: string, file: string): Promise<Map<string, TorchTensor>> {
  const size = (await handle.stat()).size;
  if (size === 0) throw new WeightFileError(`${path}: file is empty`);
  const head = await readExactly(handle, 0, Math.min(size, 32), path, 'file header');
  if (head[0] === 0x80 && startsWithLegacyMagic(head)) {
    throw new WeightFileError(
      `${path}: this is the legacy (pre-zip) PyTorch checkpoint format, which is not supported; ` +
      're-save it with a current torch: torch.save(torch.load(path), path)',
    );
  }
  const zip = await ZipReader.open(handle, path);

  // torch names every record `<archive>/...`: the archive name is the first entry's
  // folder (the file's stem in torch 1.x, "archive" in 2.x); failing that, any
  // top-level folder holding a data.pkl.
  const first = zip.entries.keys().next();
  let prefix = first.done ? '' : first.value.split('/')[0];
  if (!zip.entries.has(`${prefix}/data.pkl`)) {
    const other = [...zip.entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (other) prefix = other.split('/')[0];
  }
  const pklEntry = zip.entries.get(`${prefix}/data.pkl`);
  if (!pklEntry) {
    throw new WeightFileError(`${path}: zip archive is not a torch.save checkpoint (no <archive>/data.pkl)`);
  }
  const byteorder = zip.entries.get(`${prefix}/byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(await zip.read(byteorder)).trim();
    if (order !== 'little') {
      throw new WeightFileError(
        `${path}: checkpoint was written with ${order}-endian byte order; only little-endian checkpoints are supported`,
      );
    }
  }

  const root = unpickle(await zip.read(pklEntry), { source: path });
  const dict = findStateDict(root, path);

  // Resolve each storage's data range once; views of one storage share it.
  const ranges = new Map<string, Promise<ZipDataRange>>();
  const rangeOf = (entryName: string, tensor: string): Promise<ZipDataRange> => {
    let r = ranges.get(entryName);
    if (!r) {
      const entry = zip.entries.get(entryName);
      if (!entry) {
        return Promise.reject(new WeightFileError(`${path}: tensor "${tensor}": storage entry ${entryName} is missing`));
      }
      r = zip.dataRange(entry);
      ranges.set(entryName, r);
    }
    return r;
  };

  const tensors = new Map<string, TorchTensor>();
  for (const [key, value] of dict.map) {
    if (!(value instanceof TensorRef)) continue; // e.g. a non-tensor entry next to the weights
    if (typeof key !== 'string') {
      throw new WeightFileError(`${path}: state dict has a tensor under a non-string key (${String(key)})`);
    }
    const storageEntry = `${prefix}/data/${value.storage.key}`;
    tensors.set(key, describeTensor(key, value, storageEntry, await rangeOf(storageEntry, key), file, path));
  }
  return tensors;
}

/** The state dict: the top-level dict, or its `state_dict` / `model` entry when that holds the tensors. */
function findStateDict(root: PickleValue, path: string): PyDict {
  if (!(root instanceof PyDict)) {
    throw new WeightFileError(`${path}: data.pkl does not hold a state dict (a dict of tensors)`);
  }
  const hasTensors = (d: PyDict): boolean => [...d.map.values()].some((v) => v instanceof TensorRef);
  if (hasTensors(root)) return root;
  for (const k of ['state_dict', 'model']) {
    const inner = root.map.get(k);
    if (inner instanceof PyDict && hasTensors(inner)) return inner;
  }
  return root;
}

function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 0) return true;
    if (shape[i] !== 1 && strides[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

function describeTensor(
  name: string, t: TensorRef, storageEntry: string, range: ZipDataRange, file: string, path: string,
): TorchTensor {
  const dtype: DType = t.storage.dtype;
  const es = DTYPE_BYTES[dtype];
  const n = numel(t.shape);
  const storageBytes = t.storage.numel * es;
  if (range.size < storageBytes) {
    throw new WeightFileError(
      `${path}: tensor "${name}": storage entry ${storageEntry} holds ${range.size} bytes but its ${dtype} storage needs ${storageBytes}`,
    );
  }
  if (n > 0) {
    let last = t.storageOffset;
    t.shape.forEach((d, i) => { last += (d - 1) * t.strides[i]; });
    if (last >= t.storage.numel) {
      throw new WeightFileError(
        `${path}: tensor "${name}": view (offset ${t.storageOffset}, shape [${t.shape.join(', ')}], strides [${t.strides.join(', ')}]) ` +
        `reaches element ${last} of storage ${storageEntry}, which has ${t.storage.numel}`,
      );
    }
  }
  const start = range.offset + t.storageOffset * es;
  const contiguous = isContiguous(t.shape, t.strides);
  const location: TensorLocation | undefined = contiguous ? { file, byteOffset: start, byteLength: n * es } : undefined;
  // Strides of size-1 (and empty) dims do not change which bytes are meant, so leave them out.
  const keyStrides = t.shape.map((d, i) => (d === 1 || n === 0 ? 0 : t.strides[i]));
  const storageKey = `${file}@${start}:${dtype}:[${t.shape.join(',')}]:[${keyStrides.join(',')}]`;
  const info: TensorInfo = { name, dtype, shape: t.shape, storageKey, ...(location ? { location } : {}) };
  return { info, storageEntry, storageStart: range.offset, storageOffset: t.storageOffset, strides: t.strides };
}

class TorchBinSource implements WeightSource {
  private closed = false;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly tensors: Map<string, TorchTensor>,
  ) {}

  names(): string[] { return [...this.tensors.keys()]; }

  has(name: string): boolean { return this.tensors.has(name); }

  info(name: string): TensorInfo { return this.get(name).info; }

  private get(name: string): TorchTensor {
    const t = this.tensors.get(name);
    if (!t) throw new WeightFileError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  async read(name: string): Promise<HostTensor> {
    const t = this.get(name);
    if (this.closed) throw new WeightFileError(`${this.path}: read of "${name}" after close()`);
    const { dtype, shape, location } = t.info;
    const what = `tensor "${name}" (${t.storageEntry})`;
    if (location) {
      const bytes = await readExactly(this.handle, location.byteOffset, location.byteLength, this.path, what);
      return { dtype, shape, data: typedFromBytes(dtype, bytes) };
    }
    return { dtype, shape, data: typedFromBytes(dtype, await this.gather(t, what)) };
  }

  /** Materialize a strided view: read the span it touches, then copy it out row-major. */
  private async gather(t: TorchTensor, what: string): Promise<Uint8Array> {
    const { shape } = t.info;
    const es = DTYPE_BYTES[t.info.dtype];
    const n = numel(shape);
    const out = new Uint8Array(n * es);
    if (n === 0) return out;
    let span = 1;
    shape.forEach((d, i) => { span += (d - 1) * t.strides[i]; });
    const src = await readExactly(this.handle, t.storageStart + t.storageOffset * es, span * es, this.path, what);

    // Odometer over all dims but the last; the last dim is one run (copied at once when
    // its stride is 1) per step.
    const rank = shape.length;
    const inner = shape[rank - 1];
    const innerStride = t.strides[rank - 1];
    const idx = new Array<number>(rank - 1).fill(0);
    let base = 0;
    for (let o = 0; o < n; o += inner) {
      if (innerStride === 1) {
        out.set(src.subarray(base * es, (base + inner) * es), o * es);
      } else {
        for (let j = 0; j < inner; j++) {
          const s = (base + j * innerStride) * es;
          out.set(src.subarray(s, s + es), (o + j) * es);
        }
      }
      for (let d = rank - 2; d >= 0; d--) {
        idx[d]++;
        base += t.strides[d];
        if (idx[d] < shape[d]) break;
        base -= idx[d] * t.strides[d];
        idx[d] = 0;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
