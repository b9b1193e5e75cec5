import { copyFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { float32ToF16, toFloat32, type HostTensor } from '../tensor.js';
import { writeSafetensors } from '../weights/safetensors.js';
import type { WeightSource } from '../weights/types.js';
import type { Q4Options } from './block.js';
import { blocksOf } from './block.js';
import type { QuantizationConfig, QuantizeMode, WeightFormat } from './layout.js';
import { linearTensors, quantizedLinearFrom } from './linear.js';

/** What to write for one stored tensor. */
export type TensorPlan =
  /** As stored (dtype and values). */
  | { readonly kind: 'copy' }
  /** Not written (a duplicate of another tensor, e.g. a shared FFN stored per layer). */
  | { readonly kind: 'drop' }
  /** Float, as F16 or F32. */
  | { readonly kind: 'float'; readonly dtype: 'F16' | 'F32' }
  /** A linear weight [out, in] named `<prefix>.weight`, written in `mode`'s layout. */
  | { readonly kind: 'linear'; readonly mode: QuantizeMode; readonly prefix: string };

export interface ConvertStats {
  readonly tensors: number;
  readonly bytes: number;
  readonly quantized: number;
}

/**
 * Writes the tensors of `src` into one safetensors file following `plan`, reading and
 * converting one tensor at a time (a multi-GB fp32 source never sits in memory whole; the
 * converted output does).
 */
export async function convertWeights(
  src: WeightSource, outFile: string, plan: (name: string) => TensorPlan, q4: Q4Options = {}, metadata?: Record<string, string>,
): Promise<ConvertStats> {
  const out: Record<string, HostTensor> = {};
  let quantized = 0;
  for (const name of src.names()) {
    const p = plan(name);
    if (p.kind === 'drop') continue;
    const t = await src.read(name);
    if (p.kind === 'copy') out[name] = t;
    else if (p.kind === 'float') {
      const f = toFloat32(t);
      out[name] = p.dtype === 'F32' ? f : { dtype: 'F16', shape: f.shape, data: float32ToF16(f.data) };
    } else {
      if (t.shape.length !== 2) throw new Error(`${src.path}: ${name} is not a matrix, cannot quantize it as a linear weight`);
      const [o, i] = t.shape;
      Object.assign(out, linearTensors(p.prefix, quantizedLinearFrom(p.prefix, toFloat32(t).data, o, i, p.mode, q4)));
      quantized++;
    }
  }
  await writeSafetensors(outFile, out, metadata);
  const bytes = Object.values(out).reduce((n, t) => n + t.data.byteLength, 0);
  return { tensors: Object.keys(out).length, bytes, quantized };
}

/** The plan for a float linear weight named `<prefix>.weight` in a target format. */
export function linearPlan(name: string, format: WeightFormat): TensorPlan {
  if (format === 'q8' || format === 'q4') return { kind: 'linear', mode: format, prefix: name.replace(/\.weight$/, '') };
  return { kind: 'float', dtype: format === 'f16' ? 'F16' : 'F32' };
}

/** Bytes a linear weight [out, in] takes in a format (for size estimates and reports). */
export function linearBytes(out: number, inn: number, format: WeightFormat, blockSize = 32): number {
  switch (format) {
    case 'f32': return 4 * out * inn;
    case 'f16': return 2 * out * inn;
    case 'q8': return out * inn + 4 * out;
    case 'q4': return out * blocksOf(inn, blockSize) * (blockSize / 2 + 4);
  }
}

/** The `quantization` config field for a checkpoint written in `format`. */
export function quantizationField(format: WeightFormat, modules: readonly string[], q4: Q4Options = {}): QuantizationConfig {
  return {
    format: 'mobillama-v', version: 1, weights: format,
    ...(format === 'q4' ? { block_size: q4.blockSize ?? 32, zero_points: q4.zeroPoints ?? false } : {}),
    ...(format === 'q8' || format === 'q4' ? { modules } : {}),
  };
}

const WEIGHT_FILE = /(\.safetensors|\.bin|\.pt|\.pth|\.index\.json)$/;

/** Copies a folder's files other than weights and config.json (tokenizer, preprocessor config, …). */
export async function copyNonWeightFiles(dir: string, out: string, skip: readonly string[] = []): Promise<string[]> {
  const copied: string[] = [];
  for (const f of await readdir(dir)) {
    if (f === 'config.json' || WEIGHT_FILE.test(f) || skip.includes(f) || f.startsWith('.')) continue;
    if (!(await stat(join(dir, f))).isFile()) continue;
    await copyFile(join(dir, f), join(out, f));
    copied.push(f);
  }
  return copied;
}
