import { describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from '@mobillama/core';
import { decodeGgml, encodeGgml, ggmlNBytes, quantizeQ4_0, quantizeQ8_0 } from './ggml-types.js';

/** Seeded values with a spread of magnitudes, as float32. */
function randomValues(n: number, seed: number): Float32Array {
  let x = seed;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const u = x / 2 ** 32 - 0.5;
    out[i] = u * (1 + (i % 7)) * 0.1;
  }
  return out;
}

describe('ggml block types', () => {
  it('sizes rows by blocks', () => {
    expect(ggmlNBytes('F32', [64, 3])).toBe(64 * 3 * 4);
    expect(ggmlNBytes('F16', [64, 3])).toBe(64 * 3 * 2);
    expect(ggmlNBytes('Q8_0', [64, 3])).toBe(2 * 34 * 3);
    expect(ggmlNBytes('Q4_0', [64, 3])).toBe(2 * 18 * 3);
    expect(() => ggmlNBytes('Q4_0', [48, 2])).toThrow(/multiple of 32/);
  });

  it('Q8_0: d = amax/127 as f16, q = roundf(x/d) (half away from zero)', () => {
    const x = new Float32Array(32);
    x.set([127, 2.5, -2.5, 0.5, -0.5, 1.49, -126.6]);
    const b = quantizeQ8_0(x);
    expect(b.length).toBe(34);
    const view = new DataView(b.buffer);
    expect(view.getUint16(0, true)).toBe(floatToHalf(1)); // 0x3c00
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((j) => view.getInt8(2 + j))).toEqual([127, 3, -3, 1, -1, 1, -127, 0]);
  });

  it('Q8_0 block for x = j - 16 matches the reference arithmetic', () => {
    const x = Float32Array.from({ length: 32 }, (_, j) => j - 16);
    const b = quantizeQ8_0(x);
    const view = new DataView(b.buffer);
    const d = Math.fround(16 / 127);
    const id = Math.fround(1 / d);
    expect(view.getUint16(0, true)).toBe(floatToHalf(d));
    for (let j = 0; j < 32; j++) {
      const v = Math.fround((j - 16) * id);
      expect(view.getInt8(2 + j)).toBe(Math.sign(v) * Math.round(Math.abs(v)));
    }
  });

  it('Q4_0: d = max/-8 (signed), q = min(15, trunc(x/d + 8.5)), low nibble j, high nibble j+16', () => {
    // max magnitude value is -16 → d = 2, id = 0.5.
    const x = Float32Array.from({ length: 32 }, (_, j) => j - 16);
    const b = quantizeQ4_0(x);
    expect(b.length).toBe(18);
    expect(new DataView(b.buffer).getUint16(0, true)).toBe(0x4000); // f16 2.0
    for (let j = 0; j < 16; j++) {
      const lo = Math.trunc((j - 16) / 2 + 8.5);
      const hi = Math.min(15, Math.trunc(j / 2 + 8.5));
      expect(b[2 + j]).toBe(lo | (hi << 4));
    }
    // A positive extreme gives a negative scale: the extreme itself is exact (-8·d).
    const y = new Float32Array(32);
    y.set([8, -7.4, -7.6, 0.5, 0.6]);
    const c = quantizeQ4_0(y);
    expect(halfToFloat(new DataView(c.buffer).getUint16(0, true))).toBe(-1);
    const back = decodeGgml('Q4_0', c, 32);
    expect(Array.from(back.subarray(0, 5), (v) => v + 0)).toEqual([8, -7, -7, 0, 1]);
  });

  it('round-trips within the block error bounds', () => {
    const x = randomValues(32 * 64, 7);
    const q8 = decodeGgml('Q8_0', encodeGgml('Q8_0', x), x.length);
    const q4 = decodeGgml('Q4_0', encodeGgml('Q4_0', x), x.length);
    const f16 = decodeGgml('F16', encodeGgml('F16', x), x.length);
    const f32 = decodeGgml('F32', encodeGgml('F32', x), x.length);
    expect(Array.from(f32)).toEqual(Array.from(x));
    for (let blk = 0; blk < 64; blk++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[blk * 32 + j]));
      for (let j = 0; j < 32; j++) {
        const i = blk * 32 + j;
        // Half a step, plus the f16 rounding of the scale over up to 127 (8) steps.
        expect(Math.abs(q8[i] - x[i])).toBeLessThanOrEqual((amax / 127) * (0.5 + 127 * 2 ** -11) + 1e-12);
        // Q4_0's positive side stops at 7·d, so the far end can be off by a whole step.
        expect(Math.abs(q4[i] - x[i])).toBeLessThanOrEqual((amax / 8) * (1 + 8 * 2 ** -11) + 1e-12);
        expect(Math.abs(f16[i] - x[i])).toBeLessThanOrEqual(Math.abs(x[i]) * 2 ** -11 + 2 ** -24);
      }
    }
  });

  it('an all-zero block has scale 0 and decodes to zeros', () => {
    const z = new Float32Array(32);
    expect(Array.from(decodeGgml('Q8_0', quantizeQ8_0(z), 32))).toEqual(Array.from(z));
    expect(Array.from(decodeGgml('Q4_0', quantizeQ4_0(z), 32), (v) => v + 0)).toEqual(Array.from(z));
  });
});
