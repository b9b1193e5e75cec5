import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { parseQuantizeMode } from '@mobillama/core';
import type { ModelOptions } from '@mobillama/pipeline';
import { UsageError } from '../errors.js';

/** Where `pnpm train:micro` puts the shipped micro model, used when no model flag is given. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../../../models/mobillama-v-micro', import.meta.url));

export interface ModelFlags {
  model?: string;
  decoder?: string;
  vision?: string;
  projector?: string;
  template?: string;
  quantize?: string;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'a VLM folder (llava-hf or LLaVA layout); default: the shipped micro model')
    .option('--decoder <dir>', 'decoder folder (with --vision and --projector)')
    .option('--vision <dir>', 'CLIP vision folder')
    .option('--projector <file>', 'projector weights (mm_projector.bin/.safetensors) or a folder')
    .option('--template <name>', 'conversation template: vicuna_v1, plain, mobillama_chat')
    .option('--quantize <q8|q4>', 'quantize float weights at load (decoder: q4 = 4-bit MatMulNBits, q8 = int8; vision: int8)');
}

/** --quantize as a mode (undefined when not given). */
export function quantizeFlag(v: string | undefined): ModelOptions['quantize'] {
  if (v === undefined) return undefined;
  try {
    return parseQuantizeMode(v);
  } catch {
    throw new UsageError(`--quantize must be q8 or q4, got ${JSON.stringify(v)}`);
  }
}

export function modelOptionsFrom(f: ModelFlags, threads?: number): ModelOptions {
  const quantize = quantizeFlag(f.quantize);
  const components = f.decoder !== undefined || f.projector !== undefined || (f.vision !== undefined && f.model === undefined);
  if (f.model === undefined && !components) {
    if (!existsSync(DEFAULT_MODEL_DIR)) {
      throw new UsageError(`no model given and no default model at ${DEFAULT_MODEL_DIR}: pass --model DIR (or --decoder, --vision and --projector)`);
    }
    return { model: DEFAULT_MODEL_DIR, template: f.template, threads, quantize };
  }
  if (f.model !== undefined && (f.decoder !== undefined)) throw new UsageError('give --model or --decoder/--vision/--projector, not both');
  return { model: f.model, decoder: f.decoder, vision: f.vision, projector: f.projector, template: f.template, threads, quantize };
}
