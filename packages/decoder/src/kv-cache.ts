import type { RunTensor } from '@mobillama/core';

/** Capacity grows in steps of this many positions (the attention scans at most this many unused slots). */
export const KV_CHUNK = 64;

/**
 * The KV cache of one generation: per layer a key and a value buffer [B, KV, capacity, D]
 * owned here and fed to ORT as they are (no copy). Positions ≥ `length` are scratch. A
 * forward step appends its new rows in place; growing the capacity is the only time rows
 * move (once per KV_CHUNK positions).
 */
export class KvStore {
  capacity = 0;
  length = 0;
  /** Bumped by every write, so a stale KvCache handle (an older step's) is detected. */
  version = 0;
  keys: Float32Array[];
  values: Float32Array[];
  /** Per batch row: position id − cache slot of its tokens (the GQA lowering needs it constant). */
  rowOffsets: (number | null)[];

  constructor(
    readonly layers: number, readonly batch: number, readonly kvHeads: number, readonly headDim: number,
    readonly maxCapacity: number,
  ) {
    this.keys = Array.from({ length: layers }, () => new Float32Array(0));
    this.values = Array.from({ length: layers }, () => new Float32Array(0));
    this.rowOffsets = new Array<number | null>(batch).fill(null);
  }

  /** Makes room for `n` positions, moving the cached rows to the wider row stride. */
  reserve(n: number): void {
    if (n <= this.capacity) return;
    const cap = Math.max(n, Math.min(this.maxCapacity, Math.ceil(n / KV_CHUNK) * KV_CHUNK));
    const rows = this.batch * this.kvHeads, D = this.headDim, C = this.capacity, P = this.length;
    const grow = (old: Float32Array): Float32Array => {
      // In place where the buffer can grow (see growableFloats): rows move back to front to
      // their new stride, and only the pages the cache really uses count as memory.
      const buf = old.buffer as ResizableBuffer;
      if (buf.resizable && buf.maxByteLength >= rows * cap * D * 4) {
        buf.resize(rows * cap * D * 4);
        const next = new Float32Array(buf, 0, rows * cap * D);
        for (let r = rows - 1; r >= 0; r--) {
          if (r > 0) next.copyWithin(r * cap * D, r * C * D, (r * C + P) * D);
          next.fill(0, (r * cap + P) * D, (r + 1) * cap * D); // scratch slots hold zeros, as a new buffer's
        }
        return next;
      }
      const next = growableFloats(rows * cap * D, rows * Math.max(cap, this.maxCapacity) * D);
      for (let r = 0; r < rows; r++) next.set(old.subarray(r * C * D, (r * C + P) * D), r * cap * D);
      return next;
    };
    // One layer at a time: where a buffer must be copied, the old one can go as soon as it is.
    for (let i = 0; i < this.layers; i++) {
      this.keys[i] = grow(this.keys[i]);
      this.values[i] = grow(this.values[i]);
    }
    this.capacity = cap;
  }

  /** Writes new rows [B, KV, T, D] of `layer` at positions [length, length + T). */
  write(layer: number, keys: Float32Array, values: Float32Array, T: number): void {
    const rows = this.batch * this.kvHeads, D = this.headDim, C = this.capacity, P = this.length;
    for (let r = 0; r < rows; r++) {
      this.keys[layer].set(keys.subarray(r * T * D, (r + 1) * T * D), (r * C + P) * D);
      this.values[layer].set(values.subarray(r * T * D, (r + 1) * T * D), (r * C + P) * D);
    }
  }

  tensor(kind: 'keys' | 'values', layer: number): RunTensor {
    return { dtype: 'float32', dims: [this.batch, this.kvHeads, this.capacity, this.headDim], data: this[kind][layer] };
  }

  /** An empty tensor of the cache's shape, for a step that has nothing cached yet. */
  empty(): RunTensor {
    return { dtype: 'float32', dims: [this.batch, this.kvHeads, 0, this.headDim], data: new Float32Array(0) };
  }
}

interface ResizableBuffer extends ArrayBuffer {
  readonly resizable: boolean;
  readonly maxByteLength: number;
  resize(byteLength: number): void;
}

/**
 * `length` zeros in an ArrayBuffer that can later grow in place to `maxLength` floats (ES2024
 * resizable buffers: the rest is reserved address space, not memory), or a plain array where
 * the engine refuses the reservation.
 */
function growableFloats(length: number, maxLength: number): Float32Array {
  try {
    const Buffer = ArrayBuffer as unknown as new (bytes: number, opts: { maxByteLength: number }) => ArrayBuffer;
    return new Float32Array(new Buffer(length * 4, { maxByteLength: Math.max(length, maxLength) * 4 }), 0, length);
  } catch {
    return new Float32Array(length);
  }
}
