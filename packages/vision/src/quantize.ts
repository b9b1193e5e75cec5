import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ConfigError, convertWeights, copyNonWeightFiles, linearPlan, openWeights, quantizationField, readJsonFile, writeFileAtomic,
  type ConvertStats, type Q4Options, type TensorPlan, type WeightFormat,
} from '@mobillama/core';
import type { HfClipConfigJson } from './config.js';
import { findVisionPrefix } from './weights.js';

/** Name patterns of the encoder's linear layers (`*` = one name component), for the config field. */
export function visionModulePatterns(prefix: string): string[] {
  const l = `${prefix}vision_model.encoder.layers.*`;
  return [...['q_proj', 'k_proj', 'v_proj', 'out_proj'].map((m) => `${l}.self_attn.${m}`), `${l}.mlp.fc1`, `${l}.mlp.fc2`];
}

/**
 * How each vision-tower tensor is written in `format`: the encoder's linear layers in the
 * format's layout, everything else under `…vision_model.` as float32; null for other names
 * (a text tower or projector is the caller's business). The tower runs int8 whatever the
 * stored format (it is many-row work); q4 halves the file only.
 */
export function visionTensorPlan(names: readonly string[], format: WeightFormat): { plan: (name: string) => TensorPlan | null; prefix: string } {
  const prefix = findVisionPrefix(names);
  const esc = prefix.replace(/[.]/g, '\\.');
  const linear = new RegExp(`^${esc}vision_model\\.encoder\\.layers\\.\\d+\\.(self_attn\\.(q|k|v|out)_proj|mlp\\.fc[12])\\.weight$`);
  const plan = (name: string): TensorPlan | null => {
    if (!name.startsWith(`${prefix}vision_model.`)) return null;
    if (linear.test(name)) return linearPlan(name, format);
    return { kind: 'float', dtype: 'F32' };
  };
  return { plan, prefix };
}

export interface QuantizeVisionResult {
  readonly out: string;
  readonly stats: ConvertStats;
  readonly copied: readonly string[];
}

/**
 * Writes a CLIP folder in `format` to `out` (model.safetensors, config.json with
 * `quantization`, preprocessor config and other files). Tensors outside the vision tower (a
 * CLIPModel's text tower) are copied as they are.
 */
export async function quantizeVisionFolder(dir: string, out: string, format: WeightFormat, q4: Q4Options = {}): Promise<QuantizeVisionResult> {
  const cfgJson = await readJsonFile<HfClipConfigJson & Record<string, unknown>>(join(dir, 'config.json'));
  if (cfgJson.quantization || cfgJson.vision_config?.quantization) throw new ConfigError(`${dir} is already quantized; convert from the float checkpoint`);
  const src = await openWeights(dir);
  try {
    const { plan, prefix } = visionTensorPlan(src.names(), format);
    await mkdir(out, { recursive: true });
    const stats = await convertWeights(src, join(out, 'model.safetensors'), (n) => plan(n) ?? { kind: 'copy' }, q4, { format: 'pt' });
    const quantization = quantizationField(format, visionModulePatterns(prefix), q4);
    const config = { ...cfgJson, quantization, ...(cfgJson.vision_config ? { vision_config: { ...cfgJson.vision_config, quantization } } : {}) };
    await writeFileAtomic(join(out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    return { out, stats, copied: await copyNonWeightFiles(dir, out) };
  } finally {
    await src.close();
  }
}
