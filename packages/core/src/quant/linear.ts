import { open } from 'node:fs/promises';
import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/types.js';
import { toFloat32, type HostTensor } from '../tensor.js';
import type { WeightRef } from '../weights/refs.js';
import { WeightFileError, type WeightSource } from '../weights/types.js';
import { blocksOf, dequantizeQ4, dequantizeQ8, quantizeQ4, quantizeQ8, type Q4Options } from './block.js';
import { int8WeightEncoding, type Int8WeightEncoding } from './int8-encoding.js';
import { quantizedNames, type QuantizeMode } from './layout.js';

/**
 * A linear layer's weight in one of the runtime formats. Each lowers to one ORT kernel:
 * float → FusedMatMul(transB) on the PyTorch [out, in] matrix (no transposed copy);
 * q8 → DynamicQuantizeMatMul (int8 GEMM, the fast many-row kernel here);
 * q4 → MatMulNBits (4-bit, the fast one-row kernel here).
 */
export type LinearWeight =
  | { readonly kind: 'float'; readonly outFeatures: number; readonly inFeatures: number; readonly weight: WeightRef }
  | { readonly kind: 'q8'; readonly outFeatures: number; readonly inFeatures: number; readonly qweight: WeightRef; readonly scales: WeightRef }
  | {
    readonly kind: 'q4'; readonly outFeatures: number; readonly inFeatures: number; readonly blockSize: number;
    readonly qweight: WeightRef; readonly scales: WeightRef; readonly zeros?: WeightRef;
  };

export interface LinearLowering {
  /**
   * MatMulNBits accuracy_level: 4 quantizes activations to int8 per block and uses int8 dot
   * products (fastest for one-row decode here); 0/1 compute in fp32. Default 4.
   */
  accuracyLevel?: number;
  /** How q8 weights reach DynamicQuantizeMatMul; default: what this CPU multiplies exactly (int8-encoding.ts). */
  int8Weights?: Int8WeightEncoding;
}

function outShape(x: Value, n: number): Value['shape'] {
  return x.shape ? [...x.shape.slice(0, -1), n] : null;
}

/** y = x Wᵀ (+ b) with the kernel of the weight's format. */
export function linearInto(g: GraphBuilder, x: Value, w: LinearWeight, bias?: Value | null, opts: LinearLowering = {}): Value {
  const shape = outShape(x, w.outFeatures);
  const ms = { dtype: 'float32' as const, shape, domain: 'com.microsoft' };
  let y: Value;
  switch (w.kind) {
    case 'float':
      y = g.node('FusedMatMul', [x, g.param(w.weight)], { transB: 1, alpha: { float: 1 } }, ms);
      break;
    case 'q8': {
      // On CPUs where int8 weights would saturate (int8-encoding.ts) they go in as uint8 with
      // zero point 128: q + 128 is q's two's-complement bits with the top one flipped. Both ops
      // are on initializers, so ORT folds them once at load; they stay 8-bit (an int32 detour
      // had the folding hold 4× the weights: 6.3 GB peak for a 0.6 GB q8 model).
      const unsigned = (opts.int8Weights ?? int8WeightEncoding()) === 'u8';
      const qweight = g.param(w.qweight);
      const b = unsigned ? g.node('BitwiseXor', [g.cast(qweight, 'uint8'), g.scalar(0x80, 'uint8')], {}, { dtype: 'uint8', shape: qweight.shape }) : qweight;
      const zeroPoint = unsigned ? g.scalar(128, 'uint8') : null;
      return g.node('DynamicQuantizeMatMul', [x, b, g.param(w.scales), zeroPoint, bias ?? null], {}, ms);
    }
    case 'q4':
      y = g.node('MatMulNBits', [x, g.param(w.qweight), g.param(w.scales), w.zeros ? g.param(w.zeros) : null], {
        K: w.inFeatures, N: w.outFeatures, bits: 4, block_size: w.blockSize, accuracy_level: opts.accuracyLevel ?? 4,
      }, ms);
      break;
  }
  return bias ? g.add(y, bias) : y;
}

/** A float linear weight [out, in] as it is (the float kernel). */
export function floatLinear(weight: WeightRef): LinearWeight {
  if (weight.shape.length !== 2 || weight.dtype !== 'float32') throw new Error(`${weight.name}: a linear weight must be float32 [out, in]`);
  return { kind: 'float', outFeatures: weight.shape[0], inFeatures: weight.shape[1], weight };
}

/** The values of a float32 weight ref, read from its file when it is file-backed. */
export async function readRefFloat32(ref: WeightRef): Promise<Float32Array> {
  if (ref.data.kind === 'tensor') return toFloat32(ref.data.tensor).data;
  if (ref.dtype !== 'float32') throw new Error(`${ref.name}: expected a float32 weight, got ${ref.dtype}`);
  const { file, byteOffset, byteLength } = ref.data.location;
  const buf = new Uint8Array(byteLength);
  const fh = await open(file, 'r');
  try {
    let done = 0;
    while (done < byteLength) {
      const { bytesRead } = await fh.read(buf, done, byteLength - done, byteOffset + done);
      if (bytesRead === 0) throw new WeightFileError(`${file}: ${ref.name}: file truncated`);
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return new Float32Array(buf.buffer, 0, byteLength / 4);
}

const mem = (name: string, t: HostTensor, dtype: WeightRef['dtype'], shape: readonly number[] = t.shape): WeightRef =>
  ({ name, dtype, shape, data: { kind: 'tensor', tensor: { ...t, shape } } });

/** Quantized tensors of a linear weight held in memory, named as the file layout names them. */
export function quantizedLinearFrom(prefix: string, w: Float32Array, out: number, inn: number, mode: QuantizeMode, q4: Q4Options = {}): LinearWeight {
  const n = quantizedNames(prefix);
  if (mode === 'q8') {
    const q = quantizeQ8(w, out, inn);
    return {
      kind: 'q8', outFeatures: out, inFeatures: inn,
      qweight: mem(n.qweight, { dtype: 'I8', shape: [inn, out], data: q.qweight }, 'int8'),
      scales: mem(n.scales, { dtype: 'F32', shape: [out], data: q.scales }, 'float32'),
    };
  }
  const q = quantizeQ4(w, out, inn, q4);
  const nb = blocksOf(inn, q.blockSize);
  return {
    kind: 'q4', outFeatures: out, inFeatures: inn, blockSize: q.blockSize,
    qweight: mem(n.qweight, { dtype: 'U8', shape: [out, nb, q.blockSize / 2], data: q.qweight }, 'uint8'),
    scales: mem(n.scales, { dtype: 'F32', shape: [out, nb], data: q.scales }, 'float32'),
    ...(q.zeros ? { zeros: mem(n.qzeros, { dtype: 'U8', shape: [out, Math.ceil(nb / 2)], data: q.zeros }, 'uint8') } : {}),
  };
}

/**
 * Quantizes a float linear weight at load time (`prefix` names it, e.g.
 * `model.layers.0.self_attn.q_proj`). The result lives in memory; the float one is not kept.
 */
export async function quantizeLinear(prefix: string, weight: WeightRef, mode: QuantizeMode, q4: Q4Options = {}): Promise<LinearWeight> {
  const [out, inn] = weight.shape;
  return quantizedLinearFrom(prefix, await readRefFloat32(weight), out, inn, mode, q4);
}

/** The float [out, in] matrix of any linear weight (for graphs that need plain MatMuls, e.g. training). */
export async function dequantizeLinear(w: LinearWeight): Promise<Float32Array> {
  if (w.kind === 'float') return readRefFloat32(w.weight);
  const bytes = async (r: WeightRef): Promise<Uint8Array> => {
    if (r.data.kind === 'tensor') {
      const d = r.data.tensor.data;
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    }
    const { file, byteOffset, byteLength } = r.data.location;
    const buf = new Uint8Array(byteLength);
    const fh = await open(file, 'r');
    try { await fh.read(buf, 0, byteLength, byteOffset); } finally { await fh.close(); }
    return buf;
  };
  const f32 = async (r: WeightRef) => { const b = await bytes(r); return new Float32Array(b.slice().buffer); };
  if (w.kind === 'q8') {
    const q = await bytes(w.qweight);
    return dequantizeQ8({ qweight: new Int8Array(q.buffer, q.byteOffset, q.byteLength), scales: await f32(w.scales) }, w.outFeatures, w.inFeatures);
  }
  return dequantizeQ4({
    qweight: await bytes(w.qweight), scales: await f32(w.scales), zeros: w.zeros ? await bytes(w.zeros) : undefined, blockSize: w.blockSize,
  }, w.outFeatures, w.inFeatures);
}

/** A ref to a stored tensor: file-backed when its bytes are contiguous in the file, else read into memory. */
async function storedRef(src: WeightSource, name: string, dtype: WeightRef['dtype']): Promise<WeightRef> {
  if (!src.has(name)) throw new WeightFileError(`${src.path}: missing tensor ${name}`);
  const info = src.info(name);
  const want = { int8: 'I8', uint8: 'U8', float32: 'F32' }[dtype as 'int8' | 'uint8' | 'float32'];
  if (info.dtype !== want) throw new WeightFileError(`${src.path}: ${name} is ${info.dtype}, the quantized layout stores ${want}`);
  if (info.location) return { name, dtype, shape: info.shape, data: { kind: 'file', location: info.location } };
  return { name, dtype, shape: info.shape, data: { kind: 'tensor', tensor: await src.read(name) } };
}

/**
 * Reads quantized linear `prefix` from a checkpoint in the mobillama-v layout (see
 * layout.ts); `inFeatures` comes from the model's config (a q4 row is padded to whole
 * blocks, so its stored shape does not say). Its tensors stay in the file: the graph
 * points at them.
 */
export async function loadQuantizedLinear(src: WeightSource, prefix: string, mode: QuantizeMode, inFeatures: number): Promise<LinearWeight> {
  const n = quantizedNames(prefix);
  const qweight = await storedRef(src, n.qweight, mode === 'q8' ? 'int8' : 'uint8');
  const scales = await storedRef(src, n.scales, 'float32');
  const bad = (why: string): never => { throw new WeightFileError(`${src.path}: ${prefix}: ${why}`); };
  if (mode === 'q8') {
    if (qweight.shape.length !== 2 || qweight.shape[0] !== inFeatures) bad(`qweight must be [${inFeatures}, out], got [${qweight.shape.join(', ')}]`);
    const out = qweight.shape[1];
    if (scales.shape.length !== 1 || scales.shape[0] !== out) bad(`scales must be [${out}], got [${scales.shape.join(', ')}]`);
    return { kind: 'q8', outFeatures: out, inFeatures, qweight, scales };
  }
  if (qweight.shape.length !== 3) bad(`qweight must be [out, blocks, block_size/2], got [${qweight.shape.join(', ')}]`);
  const [out, nb, halfBs] = qweight.shape;
  if (nb !== blocksOf(inFeatures, halfBs * 2)) bad(`qweight has ${nb} blocks of ${halfBs * 2}, but the input width is ${inFeatures}`);
  if (scales.shape.length !== 2 || scales.shape[0] !== out || scales.shape[1] !== nb) bad(`scales must be [${out}, ${nb}], got [${scales.shape.join(', ')}]`);
  const zeros = src.has(n.qzeros) ? await storedRef(src, n.qzeros, 'uint8') : undefined;
  if (zeros && (zeros.shape.length !== 2 || zeros.shape[0] !== out || zeros.shape[1] !== Math.ceil(nb / 2))) {
    bad(`qzeros must be [${out}, ${Math.ceil(nb / 2)}], got [${zeros.shape.join(', ')}]`);
  }
  return { kind: 'q4', outFeatures: out, inFeatures, blockSize: halfBs * 2, qweight, scales, ...(zeros ? { zeros } : {}) };
}

/** The tensors a linear weight is stored as, for writing a quantized checkpoint (float: `<prefix>.weight`). */
export function linearTensors(prefix: string, w: LinearWeight): Record<string, HostTensor> {
  const t = (r: WeightRef): HostTensor => {
    if (r.data.kind !== 'tensor') throw new Error(`${r.name}: only in-memory weights can be written`);
    return r.data.tensor;
  };
  if (w.kind === 'float') return { [`${prefix}.weight`]: t(w.weight) };
  const n = quantizedNames(prefix);
  return {
    [n.qweight]: t(w.qweight), [n.scales]: t(w.scales),
    ...(w.kind === 'q4' && w.zeros ? { [n.qzeros]: t(w.zeros) } : {}),
  };
}
