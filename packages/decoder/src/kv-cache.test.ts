import { describe, expect, it } from 'vitest';
import { KV_CHUNK, KvStore } from './kv-cache.js';

// Rows (batch × kv heads) of a layer are strided by the capacity, so growing moves every
// row but the first; the cached positions must come through unchanged and the new slots be 0.
function filled(store: KvStore, P: number): void {
  const rows = store.batch * store.kvHeads, D = store.headDim;
  for (let layer = 0; layer < store.layers; layer++) {
    const k = new Float32Array(rows * P * D), v = new Float32Array(rows * P * D);
    for (let i = 0; i < k.length; i++) { k[i] = 1 + layer * 1e4 + i; v[i] = -k[i]; }
    store.write(layer, k, v, P);
  }
  store.length = P;
}

function expectRows(store: KvStore, P: number): void {
  const rows = store.batch * store.kvHeads, D = store.headDim, C = store.capacity;
  for (let layer = 0; layer < store.layers; layer++) {
    const k = store.keys[layer], v = store.values[layer];
    expect(k.length).toBe(rows * C * D);
    for (let r = 0; r < rows; r++) {
      for (let p = 0; p < C; p++) {
        for (let d = 0; d < D; d++) {
          const want = p < P ? 1 + layer * 1e4 + (r * P + p) * D + d : 0;
          const at = (r * C + p) * D + d;
          if (k[at] !== want || v[at] !== (want === 0 ? 0 : -want)) {
            throw new Error(`layer ${layer} row ${r} position ${p} dim ${d}: ${k[at]} / ${v[at]}, expected ±${want}`);
          }
        }
      }
    }
  }
}

describe('KvStore', () => {
  it('keeps every cached row when it grows, chunk by chunk, in the buffers it first allocated', () => {
    const store = new KvStore(2, 2, 3, 4, 8 * KV_CHUNK);
    store.reserve(5);
    expect(store.capacity).toBe(KV_CHUNK);
    const buffers = store.keys.map((k) => k.buffer);
    filled(store, 5);
    store.reserve(KV_CHUNK + 1);
    expect(store.capacity).toBe(2 * KV_CHUNK);
    expectRows(store, 5);
    store.reserve(3 * KV_CHUNK + 7);
    expect(store.capacity).toBe(4 * KV_CHUNK);
    expectRows(store, 5);
    // Grown in place: the same ArrayBuffers (resizable), no second copy of the cache.
    expect(store.keys.every((k, i) => k.buffer === buffers[i])).toBe(true);
  });

  it('rows written after a growth land at the new stride', () => {
    const store = new KvStore(1, 1, 2, 3, 4 * KV_CHUNK);
    store.reserve(KV_CHUNK);
    filled(store, KV_CHUNK);
    store.reserve(KV_CHUNK + 2);
    const rows = 2, D = 3, C = store.capacity;
    store.write(0, Float32Array.from({ length: rows * 2 * D }, (_, i) => 1000 + i), new Float32Array(rows * 2 * D), 2);
    for (let r = 0; r < rows; r++) {
      expect(store.keys[0][(r * C + KV_CHUNK) * D]).toBe(1000 + r * 2 * D);
      expect(store.keys[0][(r * C + KV_CHUNK - 1) * D]).toBe(1 + (r * KV_CHUNK + KV_CHUNK - 1) * D);
    }
  });

  it('past its maximum capacity it still grows, by copying', () => {
    const store = new KvStore(1, 1, 2, 2, KV_CHUNK);
    store.reserve(3);
    filled(store, 3);
    const before = store.keys[0].buffer;
    store.reserve(KV_CHUNK + 5);
    expect(store.capacity).toBe(KV_CHUNK + 5);
    expect(store.keys[0].buffer).not.toBe(before);
    expectRows(store, 3);
  });
});
