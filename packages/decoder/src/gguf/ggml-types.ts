/**
 * The ggml tensor types a GGUF export writes (F32, F16, Q8_0, Q4_0) and their block
 * encodings, bit for bit as ggml's reference quantizers (`quantize_row_q8_0_ref`,
 * `quantize_row_q4_0_ref` in ggml-quants.c) produce them, plus the inverse for checks.
 */
import { floatToHalf, halfToFloat } from '@mobillama/core';

export type GgmlType = 'F32' | 'F16' | 'Q4_0' | 'Q8_0';

/** enum ggml_type values (ggml.h). */
export const GGML_TYPE_ID: Readonly<Record<GgmlType, number>> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 };

export interface GgmlTypeTraits {
  /** Elements per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

export const GGML_TYPE_TRAITS: Readonly<Record<GgmlType, GgmlTypeTraits>> = {
  F32: { blockSize: 1, typeSize: 4 },
  F16: { blockSize: 1, typeSize: 2 },
  // block_q4_0: ggml_half d; uint8_t qs[16] (two 4-bit values a byte).
  Q4_0: { blockSize: 32, typeSize: 2 + 16 },
  // block_q8_0: ggml_half d; int8_t qs[32].
  Q8_0: { blockSize: 32, typeSize: 2 + 32 },
};

export function ggmlTypeFromId(id: number): GgmlType | undefined {
  return (Object.keys(GGML_TYPE_ID) as GgmlType[]).find((t) => GGML_TYPE_ID[t] === id);
}

/** Bytes of a tensor with `ne` (ggml order: ne[0] is the row length) stored as `type`. */
export function ggmlNBytes(type: GgmlType, ne: readonly number[]): number {
  const { blockSize, typeSize } = GGML_TYPE_TRAITS[type];
  if (ne.length === 0 || ne[0] % blockSize !== 0) throw new RangeError(`${type} needs rows that are a multiple of ${blockSize} elements, got ${ne[0]}`);
  let rows = 1;
  for (let i = 1; i < ne.length; i++) rows *= ne[i];
  return (ne[0] / blockSize) * typeSize * rows;
}

const fround = Math.fround;

/**
 * Q8_0, as quantize_row_q8_0_ref: d = amax/127 (float), q = roundf(x·(1/d)), d stored as
 * f16. Arithmetic is done in float32 (Math.fround) so the bytes match the C code.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q8_0: ${x.length} values are not whole blocks of 32`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const view = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    const o = i * 34;
    view.setUint16(o, floatToHalf(d), true);
    for (let j = 0; j < 32; j++) {
      const v = fround(x[base + j] * id);
      // roundf: half away from zero.
      view.setInt8(o + 2 + j, Math.sign(v) * Math.floor(Math.abs(v) + 0.5));
    }
  }
  return out;
}

/**
 * Q4_0, as quantize_row_q4_0_ref: d = max/-8 where max is the value of largest magnitude,
 * q = min(15, trunc(x·(1/d) + 8.5)); byte j holds element j (low nibble) and j+16 (high).
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q4_0: ${x.length} values are not whole blocks of 32`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const view = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[base + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fround(max / -8);
    const id = d ? fround(1 / d) : 0;
    const o = i * 18;
    view.setUint16(o, floatToHalf(d), true);
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x + 8.5f) truncates toward zero; the value is in [0.5, 16.5] here.
      const q0 = Math.min(15, Math.trunc(fround(fround(x[base + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fround(fround(x[base + 16 + j] * id) + 8.5)));
      out[o + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** float32 → float16 bits (round to nearest even), little-endian bytes. */
export function encodeF16(x: Float32Array): Uint8Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = floatToHalf(x[i]);
  return new Uint8Array(out.buffer);
}

/** Encodes float32 values as `type` (row length must be whole blocks for the quantized types). */
export function encodeGgml(type: GgmlType, x: Float32Array): Uint8Array {
  switch (type) {
    case 'F32': return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    case 'F16': return encodeF16(x);
    case 'Q8_0': return quantizeQ8_0(x);
    case 'Q4_0': return quantizeQ4_0(x);
  }
}

/** The inverse of encodeGgml (dequantize_row_q8_0 / q4_0): `n` float32 values. */
export function decodeGgml(type: GgmlType, bytes: Uint8Array, n: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (type) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    case 'Q8_0':
      for (let i = 0; i < n / 32; i++) {
        const d = halfToFloat(view.getUint16(i * 34, true));
        for (let j = 0; j < 32; j++) out[i * 32 + j] = view.getInt8(i * 34 + 2 + j) * d;
      }
      return out;
    case 'Q4_0':
      for (let i = 0; i < n / 32; i++) {
        const d = halfToFloat(view.getUint16(i * 18, true));
        for (let j = 0; j < 16; j++) {
          const b = bytes[i * 18 + 2 + j];
          out[i * 32 + j] = ((b & 0x0f) - 8) * d;
          out[i * 32 + 16 + j] = ((b >> 4) - 8) * d;
        }
      }
      return out;
  }
}
