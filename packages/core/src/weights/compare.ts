import { open } from 'node:fs/promises';
import type { WeightSource } from './types.js';

const CHUNK = 8 << 20;

/**
 * Whether two named tensors hold identical values, streaming the bytes in chunks so that
 * comparing multi-GB checkpoints (22 copies of a shared FFN) keeps memory flat.
 */
export async function sameTensor(src: WeightSource, a: string, b: string): Promise<boolean> {
  const ia = src.info(a), ib = src.info(b);
  if (ia.storageKey === ib.storageKey) return true;
  if (ia.dtype !== ib.dtype || ia.shape.length !== ib.shape.length || ia.shape.some((d, i) => d !== ib.shape[i])) return false;
  const la = ia.location, lb = ib.location;
  if (!la || !lb) {
    const [ta, tb] = await Promise.all([src.read(a), src.read(b)]);
    return Buffer.compare(Buffer.from(ta.data.buffer, ta.data.byteOffset, ta.data.byteLength), Buffer.from(tb.data.buffer, tb.data.byteOffset, tb.data.byteLength)) === 0;
  }
  const [fa, fb] = await Promise.all([open(la.file, 'r'), open(lb.file, 'r')]);
  try {
    const ba = Buffer.alloc(Math.min(CHUNK, la.byteLength)), bb = Buffer.alloc(Math.min(CHUNK, la.byteLength));
    for (let off = 0; off < la.byteLength; off += CHUNK) {
      const n = Math.min(CHUNK, la.byteLength - off);
      await Promise.all([fa.read(ba, 0, n, la.byteOffset + off), fb.read(bb, 0, n, lb.byteOffset + off)]);
      if (ba.compare(bb, 0, n, 0, n) !== 0) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}
