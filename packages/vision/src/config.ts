import { ConfigError, readJsonFile } from '@mobillama/core';
import { join } from 'node:path';

/** OpenAI CLIP's normalization constants (CLIPImageProcessor's defaults). */
export const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** PIL resampling filters as preprocessor_config.json numbers them. */
export const PIL_RESAMPLE = { nearest: 0, lanczos: 1, bilinear: 2, bicubic: 3, box: 4, hamming: 5 } as const;

/** CLIPImageProcessor settings (preprocessor_config.json), HF defaults filled in. */
export interface ClipPreprocessConfig {
  readonly doConvertRgb: boolean;
  readonly doResize: boolean;
  /** `shortestEdge`: keep the aspect ratio (CLIP); `height`/`width`: resize to exactly that. */
  readonly size: { readonly shortestEdge: number } | { readonly height: number; readonly width: number };
  /** PIL filter number (3 = bicubic). */
  readonly resample: number;
  readonly doCenterCrop: boolean;
  readonly cropSize: { readonly height: number; readonly width: number };
  readonly doRescale: boolean;
  readonly rescaleFactor: number;
  readonly doNormalize: boolean;
  readonly imageMean: readonly [number, number, number];
  readonly imageStd: readonly [number, number, number];
}

/** Hyper-parameters of a CLIP ViT vision tower (HF CLIPVisionConfig), checked against the weights. */
export interface ClipVisionConfig {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly imageSize: number;
  readonly patchSize: number;
  readonly numChannels: number;
  /** Patches per image, (imageSize / patchSize)²; the tower sees numPatches + 1 tokens (CLS first). */
  readonly numPatches: number;
  /** 'quick_gelu' (OpenAI CLIP) or 'gelu' (exact). */
  readonly hiddenAct: string;
  readonly layerNormEps: number;
  /** CLIP's joint embedding width (visual_projection), when the config names it. */
  readonly projectionDim: number | null;
  readonly preprocess: ClipPreprocessConfig;
}

/** The vision fields of a HF config.json (CLIPVisionConfig names). */
export interface HfClipVisionConfigJson {
  model_type?: string;
  hidden_size?: number;
  intermediate_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  image_size?: number;
  patch_size?: number;
  num_channels?: number;
  hidden_act?: string;
  layer_norm_eps?: number;
  projection_dim?: number;
}

/** A CLIPModel / LLaVA-HF config.json (vision_config inside) or a CLIPVisionModel one (fields at the top). */
export interface HfClipConfigJson extends HfClipVisionConfigJson {
  vision_config?: HfClipVisionConfigJson & { quantization?: unknown };
  /** A quantized checkpoint's layout (core/quant/layout.ts). */
  quantization?: unknown;
  /** LLaVA's own configs name the tower instead of describing it. */
  mm_vision_tower?: string;
}

type SizeJson = number | { shortest_edge?: number; height?: number; width?: number };

/** preprocessor_config.json as CLIPImageProcessor / CLIPFeatureExtractor write it. */
export interface HfClipPreprocessorJson {
  do_convert_rgb?: boolean;
  do_resize?: boolean;
  size?: SizeJson;
  resample?: number;
  do_center_crop?: boolean;
  crop_size?: SizeJson;
  do_rescale?: boolean;
  rescale_factor?: number;
  do_normalize?: boolean;
  image_mean?: number[];
  image_std?: number[];
}

/** A vision config problem; a ConfigError, so the CLI reports it as bad input. */
export class VisionConfigError extends ConfigError {}

/** HF CLIPVisionConfig defaults (what a field missing from config.json means). */
const VISION_DEFAULTS = {
  hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, image_size: 224,
  patch_size: 32, num_channels: 3, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
} as const;

/** The object holding the vision fields: `vision_config`, or the top level of a CLIPVisionModel config. */
export function visionSection(c: HfClipConfigJson, file = 'config.json'): HfClipVisionConfigJson {
  if (c.vision_config && c.model_type !== 'clip_vision_model') return c.vision_config;
  if (c.model_type === 'clip_vision_model' || c.hidden_size !== undefined && c.patch_size !== undefined) return c;
  const hint = c.mm_vision_tower ? ` (it names the tower ${c.mm_vision_tower}: load that CLIP folder, or pass its config)` : '';
  throw new VisionConfigError(`${file}: no vision_config and no CLIPVisionModel fields${hint}`);
}

/** Shapes read from the weights, which decide where config.json could be wrong. */
export interface ClipVisionShapes {
  /** class_embedding length. */
  hidden: number;
  /** patch_embedding.weight [D, C, P, P]. */
  patch: readonly number[];
  /** position_embedding rows (numPatches + 1). */
  positions: number;
  /** fc1 rows. */
  intermediate: number;
}

function positiveInt(v: unknown, what: string, file: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new VisionConfigError(`${file}: ${what} must be a positive integer (got ${JSON.stringify(v)})`);
  return v;
}

/** Reconciles config.json with the weight shapes: every size must agree (HF would refuse to load otherwise). */
export function clipVisionConfigFrom(
  json: HfClipConfigJson, shapes: ClipVisionShapes, preprocessor: HfClipPreprocessorJson | null, file = 'config.json',
): ClipVisionConfig {
  const v = visionSection(json, file);
  const get = (k: keyof typeof VISION_DEFAULTS): unknown => v[k] ?? VISION_DEFAULTS[k];
  const hiddenSize = positiveInt(get('hidden_size'), 'hidden_size', file);
  const numHeads = positiveInt(get('num_attention_heads'), 'num_attention_heads', file);
  const imageSize = positiveInt(get('image_size'), 'image_size', file);
  const patchSize = positiveInt(get('patch_size'), 'patch_size', file);
  const numChannels = positiveInt(get('num_channels'), 'num_channels', file);
  const intermediateSize = positiveInt(get('intermediate_size'), 'intermediate_size', file);
  const hiddenAct = String(get('hidden_act'));
  if (hiddenAct !== 'quick_gelu' && hiddenAct !== 'gelu') throw new VisionConfigError(`${file}: hidden_act ${hiddenAct} is not supported (quick_gelu or gelu)`);
  const headDim = hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new VisionConfigError(`${file}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  if (imageSize % patchSize !== 0) throw new VisionConfigError(`${file}: image_size ${imageSize} is not a multiple of patch_size ${patchSize}`);
  const numPatches = (imageSize / patchSize) ** 2;
  const [pd, pc, ph, pw] = shapes.patch;
  const mismatch = (what: string, cfg: string, w: string) => new VisionConfigError(`${file}: ${what} is ${cfg} but the weights have ${w}`);
  if (shapes.hidden !== hiddenSize || pd !== hiddenSize) throw mismatch('hidden_size', String(hiddenSize), `class_embedding ${shapes.hidden}, patch_embedding rows ${pd}`);
  if (pc !== numChannels) throw mismatch('num_channels', String(numChannels), `patch_embedding ${shapes.patch.join('x')}`);
  if (ph !== patchSize || pw !== patchSize) throw mismatch('patch_size', String(patchSize), `patch_embedding ${shapes.patch.join('x')}`);
  if (shapes.positions !== numPatches + 1) throw mismatch('image_size', `${imageSize} (${numPatches}+1 positions)`, `${shapes.positions} position embeddings`);
  if (shapes.intermediate !== intermediateSize) throw mismatch('intermediate_size', String(intermediateSize), `fc1 rows ${shapes.intermediate}`);
  return {
    hiddenSize, intermediateSize, numHeads, headDim, imageSize, patchSize, numChannels, numPatches, hiddenAct,
    numLayers: positiveInt(get('num_hidden_layers'), 'num_hidden_layers', file),
    layerNormEps: typeof v.layer_norm_eps === 'number' ? v.layer_norm_eps : VISION_DEFAULTS.layer_norm_eps,
    projectionDim: v.projection_dim ?? json.projection_dim ?? null,
    preprocess: clipPreprocessConfigFrom(preprocessor, imageSize),
  };
}

function rgbTriple(v: unknown, what: string, fallback: readonly number[]): [number, number, number] {
  if (v === undefined || v === null) return [fallback[0], fallback[1], fallback[2]];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) return [v[0], v[1], v[2]];
  throw new VisionConfigError(`preprocessor_config.json: ${what} must be 3 numbers`);
}

/**
 * CLIPImageProcessor's settings with its defaults, except that a missing size or crop
 * defaults to the model's image_size (CLIPImageProcessor's 224 would not fit a 336 tower).
 * Sizes may be ints (CLIPFeatureExtractor era) or dicts.
 */
export function clipPreprocessConfigFrom(p: HfClipPreprocessorJson | null, imageSize: number): ClipPreprocessConfig {
  const j = p ?? {};
  const file = 'preprocessor_config.json';
  let size: ClipPreprocessConfig['size'];
  const s = j.size ?? imageSize;
  if (typeof s === 'number') size = { shortestEdge: positiveInt(s, 'size', file) };
  else if (s.shortest_edge !== undefined) size = { shortestEdge: positiveInt(s.shortest_edge, 'size.shortest_edge', file) };
  else size = { height: positiveInt(s.height, 'size.height', file), width: positiveInt(s.width, 'size.width', file) };
  const c = j.crop_size ?? imageSize;
  const cropSize = typeof c === 'number'
    ? { height: positiveInt(c, 'crop_size', file), width: c }
    : { height: positiveInt(c.height, 'crop_size.height', file), width: positiveInt(c.width, 'crop_size.width', file) };
  const std = rgbTriple(j.image_std, 'image_std', OPENAI_CLIP_STD);
  if (std.some((x) => x === 0)) throw new VisionConfigError(`${file}: image_std has a zero`);
  return {
    doConvertRgb: j.do_convert_rgb ?? true,
    doResize: j.do_resize ?? true,
    size,
    resample: j.resample ?? PIL_RESAMPLE.bicubic,
    doCenterCrop: j.do_center_crop ?? true,
    cropSize,
    doRescale: j.do_rescale ?? true,
    rescaleFactor: j.rescale_factor ?? 1 / 255,
    doNormalize: j.do_normalize ?? true,
    imageMean: rgbTriple(j.image_mean, 'image_mean', OPENAI_CLIP_MEAN),
    imageStd: std,
  };
}

/** preprocessor_config.json of a folder, or null when it has none. */
export async function readPreprocessorJson(dir: string): Promise<HfClipPreprocessorJson | null> {
  try {
    return await readJsonFile<HfClipPreprocessorJson>(join(dir, 'preprocessor_config.json'));
  } catch (e) {
    if (e instanceof ConfigError && e.message.includes('ENOENT')) return null;
    throw e;
  }
}
