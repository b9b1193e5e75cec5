// Weight quantization over Float32Arrays, done once at convert or load time (O(params)).
// The layouts are the ones the ORT kernels take as they are, so a quantized file's bytes
// become graph initializers without any repacking:
// - q8: symmetric int8 per output channel, stored TRANSPOSED as [in, out] because
//   com.microsoft DynamicQuantizeMatMul takes B as [K, N] with one scale per column.
// - q4: 4-bit blocks of `blockSize` along the input dimension, one fp32 scale per block and
//   optionally one 4-bit zero point per block, in com.microsoft MatMulNBits' layout.

/** An int8 linear weight: w[o][i] ≈ qweight[i][o] · scales[o]. */
export interface Q8Weight {
  /** [in, out], row-major. */
  readonly qweight: Int8Array;
  /** [out]. */
  readonly scales: Float32Array;
}

/**
 * A 4-bit linear weight: w[o][i] ≈ (q − z) · scale of block (o, i / blockSize), with z = 8
 * when there are no zero points.
 */
export interface Q4Weight {
  /** [out, blocks, blockSize / 2] bytes; element 2j of a block in the low nibble of byte j. */
  readonly qweight: Uint8Array;
  /** [out, blocks]. */
  readonly scales: Float32Array;
  /** [out, ceil(blocks / 2)] bytes, block 2j's zero point in the low nibble of byte j; absent: symmetric. */
  readonly zeros?: Uint8Array;
  readonly blockSize: number;
}

export interface Q4Options {
  /** Default 32. A power of two ≥ 16 (MatMulNBits' constraint). */
  blockSize?: number;
  /** Asymmetric blocks (min..max mapped onto 0..15 with a zero point); default symmetric. */
  zeroPoints?: boolean;
}

export const blocksOf = (inFeatures: number, blockSize: number): number => Math.ceil(inFeatures / blockSize);

function checkShape(w: Float32Array, out: number, inn: number): void {
  if (!Number.isInteger(out) || !Number.isInteger(inn) || out < 1 || inn < 1 || w.length !== out * inn) {
    throw new Error(`quantize: ${w.length} values do not make a [${out}, ${inn}] matrix`);
  }
}

/** Symmetric per-output-channel int8 of w [out, in] (PyTorch's Linear layout). */
export function quantizeQ8(w: Float32Array, out: number, inn: number): Q8Weight {
  checkShape(w, out, inn);
  const qweight = new Int8Array(inn * out);
  const scales = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const row = o * inn;
    let amax = 0;
    for (let i = 0; i < inn; i++) amax = Math.max(amax, Math.abs(w[row + i]));
    const s = amax / 127;
    scales[o] = s;
    if (s === 0) continue;
    const inv = 1 / s;
    for (let i = 0; i < inn; i++) qweight[i * out + o] = Math.round(w[row + i] * inv);
  }
  return { qweight, scales };
}

/** w [out, in] from a q8 weight. */
export function dequantizeQ8(q: Q8Weight, out: number, inn: number): Float32Array {
  const w = new Float32Array(out * inn);
  for (let i = 0; i < inn; i++) {
    for (let o = 0; o < out; o++) w[o * inn + i] = q.qweight[i * out + o] * q.scales[o];
  }
  return w;
}

/**
 * 4-bit block quantization of w [out, in]. Symmetric blocks follow llama.cpp's Q4_0 (the
 * value of largest magnitude maps to −8, so the full 16 levels are used); asymmetric blocks
 * its Q4_1 (min..max over 0..15). The last block of a row is zero-padded when `in` is not a
 * multiple of the block size (MatMulNBits reads it that way, with K = in).
 */
export function quantizeQ4(w: Float32Array, out: number, inn: number, opts: Q4Options = {}): Q4Weight {
  checkShape(w, out, inn);
  const bs = opts.blockSize ?? 32;
  if (!Number.isInteger(Math.log2(bs)) || bs < 16) throw new Error(`quantize: block size ${bs} is not a power of two ≥ 16`);
  const nb = blocksOf(inn, bs);
  const half = bs / 2;
  const qweight = new Uint8Array(out * nb * half);
  const scales = new Float32Array(out * nb);
  const zeros = opts.zeroPoints ? new Uint8Array(out * Math.ceil(nb / 2)) : undefined;
  const q = new Uint8Array(bs);
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < nb; b++) {
      const start = o * inn + b * bs;
      const n = Math.min(bs, inn - b * bs);
      let scale: number, zp: number;
      if (zeros) {
        let lo = 0, hi = 0; // include 0 so padding and all-positive blocks stay exact at zero
        for (let i = 0; i < n; i++) { const x = w[start + i]; if (x < lo) lo = x; if (x > hi) hi = x; }
        scale = (hi - lo) / 15;
        zp = scale === 0 ? 8 : Math.min(15, Math.max(0, Math.round(-lo / scale)));
      } else {
        let m = 0;
        for (let i = 0; i < n; i++) { const x = w[start + i]; if (Math.abs(x) > Math.abs(m)) m = x; }
        scale = -m / 8;
        zp = 8;
      }
      scales[o * nb + b] = scale;
      const inv = scale === 0 ? 0 : 1 / scale;
      q.fill(zp);
      for (let i = 0; i < n; i++) q[i] = Math.min(15, Math.max(0, Math.round(w[start + i] * inv) + zp));
      const dst = (o * nb + b) * half;
      for (let j = 0; j < half; j++) qweight[dst + j] = q[2 * j] | (q[2 * j + 1] << 4);
      if (zeros) zeros[o * Math.ceil(nb / 2) + (b >> 1)] |= zp << ((b & 1) * 4);
    }
  }
  return { qweight, scales, zeros, blockSize: bs };
}

/** w [out, in] from a q4 weight. */
export function dequantizeQ4(q: Q4Weight, out: number, inn: number): Float32Array {
  const bs = q.blockSize, nb = blocksOf(inn, bs), half = bs / 2, zRow = Math.ceil(nb / 2);
  const w = new Float32Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < nb; b++) {
      const s = q.scales[o * nb + b];
      const zp = q.zeros ? (q.zeros[o * zRow + (b >> 1)] >> ((b & 1) * 4)) & 15 : 8;
      const src = (o * nb + b) * half;
      const n = Math.min(bs, inn - b * bs);
      for (let i = 0; i < n; i++) {
        const byte = q.qweight[src + (i >> 1)];
        w[o * inn + b * bs + i] = (((i & 1) ? byte >> 4 : byte & 15) - zp) * s;
      }
    }
  }
  return w;
}
