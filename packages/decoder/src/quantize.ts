import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  convertWeights, copyNonWeightFiles, linearPlan, openWeights, quantizationField, readJsonFile, writeFileAtomic,
  type ConvertStats, type Q4Options, type TensorPlan, type WeightFormat, type WeightSource,
} from '@mobillama/core';
import { ConfigError, type HfLlamaConfigJson } from './config.js';
import { decoderModulePatterns } from './inference-weights.js';
import { detectFfnSharing, findDecoderPrefix } from './weights.js';

// Writing a decoder checkpoint in another weight format (f16, q8, q4) in the mobillama-v
// layout (core/quant/layout.ts): linear layers quantized, each shared FFN stored once with
// `ffn_groups` in config.json saying which layers use it, embeddings as F16.

export interface DecoderPlan {
  /** The plan for a stored tensor name, or null when the name is not the decoder's. */
  readonly plan: (name: string) => TensorPlan | null;
  readonly ffnOfLayer: readonly number[];
  readonly prefix: string;
}

/** How each decoder tensor of `src` is written in `format`; duplicate FFN copies are dropped. */
export async function decoderTensorPlan(src: WeightSource, cfgJson: HfLlamaConfigJson, format: WeightFormat): Promise<DecoderPlan> {
  const p = findDecoderPrefix(src.names());
  const numLayers = cfgJson.num_hidden_layers;
  if (typeof numLayers !== 'number') throw new ConfigError('config.json: missing num_hidden_layers');
  const ffnOfLayer = cfgJson.ffn_groups ?? (await detectFfnSharing(src, p, numLayers)).ffnOfLayer;
  const layer = new RegExp(`^${p.replace(/[.]/g, '\\.')}model\\.layers\\.(\\d+)\\.(self_attn\\.[qkvo]_proj|mlp\\.(gate|up|down)_proj)\\.weight$`);
  const plan = (name: string): TensorPlan | null => {
    if (!name.startsWith(`${p}model.`) && !name.startsWith(`${p}lm_head.`)) return null;
    const m = layer.exec(name);
    if (m) {
      const i = Number(m[1]);
      // A shared FFN is written once, under the first layer that uses it.
      if (m[3] && ffnOfLayer.indexOf(ffnOfLayer[i]) !== i) return { kind: 'drop' };
      return linearPlan(name, format);
    }
    if (name === `${p}lm_head.weight`) return linearPlan(name, format);
    if (name === `${p}model.embed_tokens.weight`) return { kind: 'float', dtype: format === 'f32' ? 'F32' : 'F16' };
    return { kind: 'float', dtype: 'F32' };
  };
  return { plan, ffnOfLayer, prefix: p };
}

export interface QuantizeFolderResult {
  readonly out: string;
  readonly stats: ConvertStats;
  readonly copied: readonly string[];
}

/**
 * Writes a decoder folder (any layout loadDecoder reads) in `format` to `out`:
 * model.safetensors, config.json with `quantization` and `ffn_groups`, and the other files.
 */
export async function quantizeDecoderFolder(dir: string, out: string, format: WeightFormat, q4: Q4Options = {}): Promise<QuantizeFolderResult> {
  const cfgJson = await readJsonFile<HfLlamaConfigJson & Record<string, unknown>>(join(dir, 'config.json'));
  if (cfgJson.quantization) throw new ConfigError(`${dir} is already quantized; convert from the float checkpoint`);
  const src = await openWeights(dir);
  try {
    const { plan, ffnOfLayer, prefix } = await decoderTensorPlan(src, cfgJson, format);
    await mkdir(out, { recursive: true });
    const stats = await convertWeights(src, join(out, 'model.safetensors'), (n) => plan(n) ?? { kind: 'copy' }, q4, { format: 'pt' });
    const config = { ...cfgJson, ffn_groups: ffnOfLayer, quantization: quantizationField(format, decoderModulePatterns(prefix), q4) };
    await writeFileAtomic(join(out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    return { out, stats, copied: await copyNonWeightFiles(dir, out) };
  } finally {
    await src.close();
  }
}
