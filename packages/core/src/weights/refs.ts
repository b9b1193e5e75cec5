import type { ElemType } from '../graph/types.js';
import { toFloat32, type HostTensor } from '../tensor.js';
import type { InitializerData } from '../graph/types.js';
import type { WeightSource } from './types.js';

/**
 * A named weight as a graph wants it: its graph dtype and shape, and where its bytes are
 * (a file region, so fp32 checkpoints are used in place; or memory, after a conversion).
 */
export interface WeightRef {
  readonly name: string;
  readonly dtype: ElemType;
  readonly shape: readonly number[];
  readonly data: InitializerData;
}

/**
 * Loads a float weight as F32 for a graph. F32 tensors stored contiguously stay on disk
 * (the graph points at them); F16/BF16 are read and widened, since ORT has no bf16.
 */
export async function loadFloatWeight(src: WeightSource, name: string): Promise<WeightRef> {
  const info = src.info(name);
  if (info.dtype === 'F32' && info.location) {
    return { name, dtype: 'float32', shape: info.shape, data: { kind: 'file', location: info.location } };
  }
  const t = toFloat32(await src.read(name));
  return { name, dtype: 'float32', shape: t.shape, data: { kind: 'tensor', tensor: t } };
}

/** The tensor of a weight, read into memory as F32 (for weights used from JS, like embeddings). */
export async function readFloatWeight(src: WeightSource, name: string): Promise<HostTensor & { data: Float32Array }> {
  return toFloat32(await src.read(name));
}

/** A WeightRef for a tensor already in memory. */
export function memoryWeight(name: string, tensor: HostTensor & { data: Float32Array }): WeightRef {
  return { name, dtype: 'float32', shape: tensor.shape, data: { kind: 'tensor', tensor } };
}
