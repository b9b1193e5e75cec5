// How quantized weights are stored in safetensors files, and the config.json field that
// says so. The layout (version 1):
//
// config.json gets a `quantization` object:
//   { "format": "mobillama-v", "version": 1, "weights": "q4", "block_size": 32,
//     "zero_points": false, "modules": ["model.layers.*.self_attn.q_proj", ...] }
// `weights` is one of f32 | f16 | q8 | q4. f32 and f16 checkpoints are plain Hugging Face
// checkpoints (F32/F16 `.weight` tensors); the field only records what they hold.
//
// For a quantized linear layer `P` (PyTorch weight `P.weight` of shape [out, in]):
//   q8: P.qweight  I8  [in, out]            int8, transposed (DynamicQuantizeMatMul's B)
//       P.scales   F32 [out]                symmetric: w[o][i] = qweight[i][o] · scales[o]
//   q4: P.qweight  U8  [out, blocks, bs/2]  two 4-bit values per byte, low nibble first
//                                           (MatMulNBits' B; blocks = ceil(in / bs))
//       P.scales   F32 [out, blocks]
//       P.qzeros   U8  [out, ceil(blocks/2)] optional 4-bit zero points, low nibble first;
//                                           absent: 8. w = (q − zero) · scale
// `P.bias`, norms and embeddings keep their names and stay float (embeddings F16 in
// quantized checkpoints: they are looked up, not multiplied, and are widened at load).
// A q4 row is padded to whole blocks; its true width comes from the model config.

import { ConfigError } from '../config-file.js';

export type WeightFormat = 'f32' | 'f16' | 'q8' | 'q4';
/** The formats a float checkpoint can be quantized to at load time. */
export type QuantizeMode = 'q8' | 'q4';

export interface QuantizationConfig {
  readonly format: 'mobillama-v';
  readonly version: 1;
  readonly weights: WeightFormat;
  /** q4 only. */
  readonly block_size?: number;
  /** q4 only: whether blocks carry zero points. */
  readonly zero_points?: boolean;
  /** Name patterns (`*` = one name component) of the linear layers stored quantized. */
  readonly modules?: readonly string[];
}

export const QUANT_SUFFIX = { qweight: 'qweight', scales: 'scales', qzeros: 'qzeros' } as const;

/** Tensor names of quantized linear `prefix` (e.g. `model.layers.0.self_attn.q_proj`). */
export function quantizedNames(prefix: string): { qweight: string; scales: string; qzeros: string } {
  return { qweight: `${prefix}.${QUANT_SUFFIX.qweight}`, scales: `${prefix}.${QUANT_SUFFIX.scales}`, qzeros: `${prefix}.${QUANT_SUFFIX.qzeros}` };
}

export const isQuantized = (f: WeightFormat): f is QuantizeMode => f === 'q8' || f === 'q4';

/** The `quantization` field of a config.json, validated; null when absent. */
export function readQuantizationConfig(json: unknown, file = 'config.json'): QuantizationConfig | null {
  if (json === undefined || json === null) return null;
  const q = json as Partial<QuantizationConfig>;
  const bad = (why: string): never => { throw new ConfigError(`${file}: quantization: ${why}`); };
  if (typeof q !== 'object' || Array.isArray(q)) bad('not an object');
  if (q.format !== 'mobillama-v') bad(`format ${JSON.stringify(q.format)} is not "mobillama-v" (other quantized layouts, e.g. GPTQ or AWQ, are not supported)`);
  if (q.version !== 1) bad(`version ${JSON.stringify(q.version)} is not supported (this build reads version 1)`);
  if (!['f32', 'f16', 'q8', 'q4'].includes(q.weights as string)) bad(`weights ${JSON.stringify(q.weights)} is not one of f32, f16, q8, q4`);
  if (q.weights === 'q4') {
    const bs = q.block_size ?? 32;
    if (!Number.isInteger(bs) || bs < 16 || !Number.isInteger(Math.log2(bs))) bad(`block_size ${bs} is not a power of two ≥ 16`);
  }
  return q as QuantizationConfig;
}

/** Whether `name` matches a module pattern (`*` stands for one dot-free component). */
export function matchesModule(name: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]+')}$`).test(name));
}

/** Parses a CLI/API quantization mode ('q8' | 'q4', also 'int8' | 'int4' | '8' | '4'). */
export function parseQuantizeMode(s: string): QuantizeMode {
  const m = s.trim().toLowerCase();
  if (m === 'q8' || m === 'int8' || m === '8') return 'q8';
  if (m === 'q4' || m === 'int4' || m === '4') return 'q4';
  throw new Error(`quantization ${JSON.stringify(s)} is not q8 or q4`);
}
