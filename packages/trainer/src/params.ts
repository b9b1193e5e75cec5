import { open } from 'node:fs/promises';
import { memoryWeight, toFloat32, typedFromBytes, type WeightRef } from '@mobillama/core';

/** A trainable tensor: its values live in JS and are fed to the graph every step. */
export interface Param {
  /** The graph input name (the weight's name in its source checkpoint, or ours for new tensors). */
  readonly name: string;
  readonly shape: readonly number[];
  data: Float32Array;
  /** Whether AdamW decays it: HF's Trainer exempts biases and norm weights. */
  readonly decay: boolean;
  /**
   * Its learning rate as a multiple of the run's (a torch param group with its own lr; the
   * schedule scales every group alike, as LambdaLR does). Absent: 1. LLaVA's
   * mm_vision_tower_lr makes one such group.
   */
  readonly lrScale?: number;
}

/**
 * HF Trainer's get_decay_parameter_names: every parameter except biases and the weights of
 * LayerNorm / RMSNorm modules (transformers lists LlamaRMSNorm among ALL_LAYERNORM_LAYERS).
 */
export function decays(name: string): boolean {
  if (name.endsWith('.bias') || name.endsWith('bias')) return false;
  return !/(^|\.)(input_layernorm|post_attention_layernorm|norm|layer_norm1|layer_norm2|pre_layrnorm|post_layernorm)\.weight$/.test(name);
}

/** The values of a weight as a fresh Float32Array (read from its file, or copied from memory). */
export async function materialize(ref: WeightRef): Promise<Float32Array> {
  if (ref.data.kind === 'tensor') return toFloat32(ref.data.tensor).data.slice();
  const { file, byteOffset, byteLength } = ref.data.location;
  const fh = await open(file, 'r');
  try {
    const buf = new Uint8Array(byteLength);
    const { bytesRead } = await fh.read(buf, 0, byteLength, byteOffset);
    if (bytesRead !== byteLength) throw new Error(`${file}: ${ref.name}: short read`);
    return typedFromBytes('F32', buf) as Float32Array;
  } finally {
    await fh.close();
  }
}

export async function paramFrom(ref: WeightRef): Promise<Param> {
  if (ref.dtype !== 'float32') throw new Error(`${ref.name}: only float32 weights can be trained (got ${ref.dtype})`);
  return { name: ref.name, shape: ref.shape, data: await materialize(ref), decay: decays(ref.name) };
}

/** A WeightRef standing for a trainable param (the graph makes it an input; the data is not used there). */
export function paramRef(p: Param): WeightRef {
  return memoryWeight(p.name, { dtype: 'F32', shape: p.shape, data: p.data });
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
