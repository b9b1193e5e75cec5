import { existsSync, statSync } from 'node:fs';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { basename, isAbsolute, join, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  ConfigError, convertWeights, copyNonWeightFiles, openWeights, quantizationField, readJsonFile, writeFileAtomic,
  type ConvertStats, type Q4Options, type TensorPlan, type WeightFormat,
} from '@mobillama/core';
import { decoderModulePatterns, decoderTensorPlan, quantizeDecoderFolder, type HfLlamaConfigJson } from '@mobillama/decoder';
import { quantizeVisionFolder, visionModulePatterns, visionTensorPlan } from '@mobillama/vision';
import { UsageError } from '../errors.js';

interface QuantizeFlags {
  decoder?: string;
  vision?: string;
  model?: string;
  bits: string;
  out: string;
  zeroPoints?: boolean;
  blockSize?: string;
}

const FORMAT_OF_BITS: Record<string, WeightFormat> = { 16: 'f16', 8: 'q8', 4: 'q4' };

type Json = Record<string, unknown>;

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * A combined VLM folder: llava-hf (text_config + vision_config, one weight set) or LLaVA
 * (the decoder's config with mm_* fields; the tower in its own folder, named by
 * mm_vision_tower; the projector in mm_projector.* or in the decoder's weights).
 */
async function quantizeModelFolder(dir: string, out: string, format: WeightFormat, q4: Q4Options): Promise<{ stats: ConvertStats; notes: string[] }> {
  const cfg = await readJsonFile<Json>(join(dir, 'config.json'));
  if (cfg.quantization) throw new ConfigError(`${dir} is already quantized; convert from the float checkpoint`);
  const hf = cfg.text_config !== undefined && cfg.vision_config !== undefined;
  if (!hf && cfg.mm_vision_tower === undefined && cfg.mm_projector_type === undefined) {
    throw new ConfigError(`${join(dir, 'config.json')} describes no vision-language model; use --decoder or --vision for a single part`);
  }
  const notes: string[] = [];
  const src = await openWeights(dir);
  let stats: ConvertStats;
  const config: Json = { ...cfg };
  try {
    const textCfg = (hf ? cfg.text_config : cfg) as HfLlamaConfigJson;
    const dec = await decoderTensorPlan(src, textCfg, format);
    // The tower may live in the same weights (llava-hf, some LLaVA checkpoints) or not.
    let vis: ReturnType<typeof visionTensorPlan> | null = null;
    try {
      vis = visionTensorPlan(src.names(), format);
    } catch {
      vis = null;
    }
    const plan = (n: string): TensorPlan => dec.plan(n) ?? vis?.plan(n) ?? { kind: 'copy' };
    await mkdir(out, { recursive: true });
    stats = await convertWeights(src, join(out, 'model.safetensors'), plan, q4, { format: 'pt' });
    const modules = [...decoderModulePatterns(dec.prefix), ...(vis ? visionModulePatterns(vis.prefix) : [])];
    const quantization = quantizationField(format, modules, q4);
    config.quantization = quantization;
    if (hf) {
      config.text_config = { ...(cfg.text_config as Json), ffn_groups: dec.ffnOfLayer, quantization };
      config.vision_config = { ...(cfg.vision_config as Json), quantization };
    } else config.ffn_groups = dec.ffnOfLayer;
  } finally {
    await src.close();
  }
  // LLaVA layout: a local tower folder is converted beside the model and pointed to.
  const tower = typeof cfg.mm_vision_tower === 'string' ? cfg.mm_vision_tower : undefined;
  if (!hf && tower) {
    const towerDir = isAbsolute(tower) ? tower : resolve(dir, tower);
    if (isDir(towerDir)) {
      const name = basename(towerDir);
      await quantizeVisionFolder(towerDir, join(out, name), format, q4);
      config.mm_vision_tower = name;
      notes.push(`vision tower ${towerDir} → ${join(out, name)}`);
    } else notes.push(`vision tower "${tower}" is not a local folder: left as is (quantize it with --vision)`);
  }
  for (const f of await readdir(dir)) {
    if (/^mm_projector\.(bin|safetensors)$/.test(f)) await copyFile(join(dir, f), join(out, f));
  }
  await writeFileAtomic(join(out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await copyNonWeightFiles(dir, out);
  return { stats, notes };
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('write a checkpoint with its linear layers in another format (f16, int8, int4 blocks) in the mobillama-v safetensors layout')
    .option('--decoder <dir>', 'a LLaMA/MobiLlama decoder folder')
    .option('--vision <dir>', 'a CLIP vision folder')
    .option('--model <dir>', 'a VLM folder (llava-hf or LLaVA layout)')
    .requiredOption('--bits <n>', '8 (int8 per output channel), 4 (int4, blocks of 32) or 16 (float16)')
    .requiredOption('--out <dir>', 'output folder (must not hold a model yet)')
    .option('--zero-points', 'int4: asymmetric blocks with 4-bit zero points (default symmetric)')
    .option('--block-size <n>', 'int4 block size (power of two >= 16, default 32)')
    .action(async (f: QuantizeFlags) => {
      const given = [f.decoder, f.vision, f.model].filter((x) => x !== undefined).length;
      if (given !== 1) throw new UsageError('give exactly one of --decoder DIR, --vision DIR and --model DIR');
      const format = FORMAT_OF_BITS[f.bits];
      if (!format) throw new UsageError(`--bits must be 8, 4 or 16, got ${JSON.stringify(f.bits)}`);
      const blockSize = f.blockSize === undefined ? undefined : Number(f.blockSize);
      if (blockSize !== undefined && (!Number.isInteger(blockSize) || blockSize < 16 || !Number.isInteger(Math.log2(blockSize)))) {
        throw new UsageError(`--block-size must be a power of two >= 16, got ${JSON.stringify(f.blockSize)}`);
      }
      if ((f.zeroPoints || blockSize !== undefined) && format !== 'q4') throw new UsageError('--zero-points and --block-size apply to --bits 4');
      const src = (f.decoder ?? f.vision ?? f.model)!;
      if (!isDir(src)) throw new ConfigError(`${src} is not a folder`);
      if (resolve(src) === resolve(f.out)) throw new UsageError('--out must be a new folder, not the source');
      if (existsSync(join(f.out, 'config.json'))) throw new UsageError(`${f.out} already holds a model (config.json); choose a new --out`);
      const q4: Q4Options = { blockSize, zeroPoints: f.zeroPoints };
      const t0 = performance.now();
      let stats: ConvertStats, notes: string[] = [];
      if (f.decoder) stats = (await quantizeDecoderFolder(src, f.out, format, q4)).stats;
      else if (f.vision) stats = (await quantizeVisionFolder(src, f.out, format, q4)).stats;
      else ({ stats, notes } = await quantizeModelFolder(src, f.out, format, q4));
      const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      process.stdout.write(`wrote ${f.out}: ${format}, ${stats.tensors} tensors (${stats.quantized} linear layers quantized), ${mb(stats.bytes)} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      for (const n of notes) process.stdout.write(`${n}\n`);
    });
}
