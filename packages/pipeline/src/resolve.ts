import { existsSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { ConfigError, readJsonFile } from '@mobillama/core';
import type { HfLlamaConfigJson } from '@mobillama/decoder';
import type { ModelOptions } from './types.js';

/** Vision settings a VLM config carries (LLaVA's mm_* fields, or llava-hf's vision_feature_*). */
export interface VisionSelection {
  featureLayer: number;
  featureKind: 'patch' | 'cls_patch';
  aspect: 'pad' | 'crop';
}

/** Where each part of a VLM comes from, after reading the folder(s). */
export interface ResolvedModel {
  readonly id: string;
  readonly layout: 'components' | 'llava' | 'llava-hf';
  /** Folder holding config.json/tokenizer of the decoder. */
  readonly decoderDir: string;
  readonly decoderConfig?: HfLlamaConfigJson;
  readonly visionDir: string;
  /** For llava-hf: the vision config section, read from the combined config. */
  readonly visionConfigJson?: Record<string, unknown>;
  /** A projector file or folder; or the combined folder whose weights hold the projector keys. */
  readonly projectorPath: string;
  readonly projectorType?: string;
  readonly template: string;
  readonly selection: VisionSelection;
}

interface LlavaConfigJson extends HfLlamaConfigJson {
  mm_vision_tower?: string;
  mm_projector_type?: string;
  mm_vision_select_layer?: number;
  mm_vision_select_feature?: string;
  image_aspect_ratio?: string;
  conv_template?: string;
  vision_config?: Record<string, unknown>;
  text_config?: HfLlamaConfigJson;
  vision_feature_layer?: number;
  vision_feature_select_strategy?: string;
  projector_hidden_act?: string;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function mustExist(p: string, what: string): string {
  if (!existsSync(p)) throw new ConfigError(`${what} ${p} does not exist`);
  return p;
}

/** Reads a model folder (or component paths) and says where each part is. */
export async function resolveModel(opts: ModelOptions): Promise<ResolvedModel> {
  if (!opts.model) {
    if (!opts.decoder || !opts.vision || !opts.projector) {
      throw new ConfigError('give a model folder (--model DIR), or all three of --decoder DIR --vision DIR --projector FILE');
    }
    return {
      id: opts.decoder.replace(/\/+$/, '').split('/').pop() ?? 'model',
      layout: 'components',
      decoderDir: mustExist(opts.decoder, 'decoder folder'),
      visionDir: mustExist(opts.vision, 'vision folder'),
      projectorPath: mustExist(opts.projector, 'projector'),
      template: opts.template ?? 'vicuna_v1',
      selection: { featureLayer: -2, featureKind: 'patch', aspect: 'pad' },
    };
  }
  const dir = opts.model;
  if (!isDir(dir)) throw new ConfigError(`model folder ${dir} does not exist or is not a folder`);
  const cfg = await readJsonFile<LlavaConfigJson>(join(dir, 'config.json'));
  const id = dir.replace(/\/+$/, '').split('/').pop() ?? 'model';
  if (cfg.vision_config && cfg.text_config) {
    return {
      id, layout: 'llava-hf',
      decoderDir: dir,
      decoderConfig: cfg.text_config,
      visionDir: opts.vision ?? dir,
      visionConfigJson: opts.vision ? undefined : { vision_config: cfg.vision_config },
      projectorPath: opts.projector ?? dir,
      template: opts.template ?? cfg.conv_template ?? 'vicuna_v1',
      selection: {
        featureLayer: cfg.vision_feature_layer ?? -2,
        featureKind: cfg.vision_feature_select_strategy === 'full' ? 'cls_patch' : 'patch',
        aspect: 'crop',
      },
    };
  }
  if (cfg.mm_vision_tower !== undefined || cfg.mm_projector_type !== undefined) {
    let visionDir = opts.vision;
    if (!visionDir) {
      const tower = cfg.mm_vision_tower ?? '';
      // A LLaVA config names the tower by hub id; we can only use a local folder, given as
      // an absolute path or one relative to the model folder.
      const candidate = isAbsolute(tower) ? tower : resolve(dir, tower);
      if (!tower || !isDir(candidate)) {
        throw new ConfigError(`the vision tower "${tower}" named in ${join(dir, 'config.json')} is not a local folder; pass --vision DIR`);
      }
      visionDir = candidate;
    }
    const projectorFile = ['mm_projector.safetensors', 'mm_projector.bin'].map((f) => join(dir, f)).find(existsSync);
    return {
      id, layout: 'llava',
      decoderDir: dir,
      visionDir,
      projectorPath: opts.projector ?? projectorFile ?? dir,
      projectorType: cfg.mm_projector_type,
      template: opts.template ?? cfg.conv_template ?? 'vicuna_v1',
      selection: {
        featureLayer: cfg.mm_vision_select_layer ?? -2,
        featureKind: cfg.mm_vision_select_feature === 'cls_patch' ? 'cls_patch' : 'patch',
        aspect: cfg.image_aspect_ratio === 'pad' ? 'pad' : 'crop',
      },
    };
  }
  throw new ConfigError(`${join(dir, 'config.json')} describes no vision-language model (no vision_config/text_config, no mm_* fields); for a text-only decoder use \`generate --decoder\``);
}
