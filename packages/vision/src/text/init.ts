/**
 * A fresh CLIPModel (both towers, projections, logit_scale) initialised as transformers'
 * CLIPPreTrainedModel._init_weights does, written as a HF folder that loadClip / ClipModel
 * read: the starting point of contrastive pretraining from scratch (the micro model's CLIP).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSafetensors, type HostTensor } from '@mobillama/core';
import { OPENAI_CLIP_MEAN, OPENAI_CLIP_STD } from '../config.js';
import { clipTokenizerFiles } from './bpe-train.js';

export interface ClipInitConfig {
  readonly text: {
    readonly vocabSize: number; readonly hiddenSize: number; readonly intermediateSize: number; readonly numLayers: number;
    readonly numHeads: number; readonly maxPositions?: number; readonly hiddenAct?: string;
  };
  readonly vision: {
    readonly hiddenSize: number; readonly intermediateSize: number; readonly numLayers: number; readonly numHeads: number;
    readonly imageSize: number; readonly patchSize: number; readonly hiddenAct?: string;
    /**
     * Patch rows of position_embedding: N(0, 0.02) as HF (default), or a fixed 2-D sin/cos
     * table (MAE's) times `scale`. At N(0, 0.02) the position is ~1/10 of a patch's content and
     * contrastive training on captions that never say where things are leaves it that weak.
     */
    readonly positionInit?: { readonly kind: 'sincos-2d'; readonly scale: number };
  };
  readonly projectionDim: number;
  /** ln(1/0.07) = 2.6592, CLIP's initial temperature. */
  readonly logitScaleInit?: number;
}

/** Deterministic N(0, 1) samples (mulberry32 + Box–Muller). */
function normalSampler(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** config.json for {@link ClipInitConfig} (HF CLIPModel, transformers-4.31 field names). */
export function clipConfigJson(c: ClipInitConfig, bosTokenId: number, eosTokenId: number): Record<string, unknown> {
  const t = c.text, v = c.vision;
  return {
    architectures: ['CLIPModel'], initializer_factor: 1.0, logit_scale_init_value: c.logitScaleInit ?? 2.6592, model_type: 'clip',
    projection_dim: c.projectionDim, torch_dtype: 'float32', transformers_version: '4.31.0',
    text_config: {
      vocab_size: t.vocabSize, hidden_size: t.hiddenSize, intermediate_size: t.intermediateSize, num_hidden_layers: t.numLayers,
      num_attention_heads: t.numHeads, max_position_embeddings: t.maxPositions ?? 77, hidden_act: t.hiddenAct ?? 'quick_gelu',
      layer_norm_eps: 1e-5, projection_dim: c.projectionDim, bos_token_id: bosTokenId, eos_token_id: eosTokenId, pad_token_id: 1,
      model_type: 'clip_text_model',
    },
    vision_config: {
      hidden_size: v.hiddenSize, intermediate_size: v.intermediateSize, num_hidden_layers: v.numLayers, num_attention_heads: v.numHeads,
      image_size: v.imageSize, patch_size: v.patchSize, num_channels: 3, hidden_act: v.hiddenAct ?? 'quick_gelu', layer_norm_eps: 1e-5,
      projection_dim: c.projectionDim, model_type: 'clip_vision_model',
    },
  };
}

/**
 * HF-named F32 tensors of a freshly initialised CLIPModel (initializer_factor 1,
 * initializer_range 0.02): embeddings N(0, 0.02) (class embedding N(0, D^-½)), q/k/v and fc2
 * N(0, D^-½ (2L)^-½), out_proj N(0, D^-½), fc1 N(0, (2D)^-½), projections N(0, D^-½),
 * biases 0, LayerNorms 1/0, logit_scale = logitScaleInit.
 */
export function initClipWeights(c: ClipInitConfig, seed = 0): Record<string, HostTensor> {
  const randn = normalSampler(seed);
  const out: Record<string, HostTensor> = {};
  const put = (name: string, shape: number[], fill: (i: number) => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    out[name] = { dtype: 'F32', shape, data: Float32Array.from({ length: n }, (_, i) => fill(i)) };
  };
  const normal = (name: string, shape: number[], std: number) => put(name, shape, () => randn() * std);
  const zeros = (name: string, shape: number[]) => put(name, shape, () => 0);
  const ones = (name: string, shape: number[]) => put(name, shape, () => 1);
  const encoder = (p: string, d: number, inter: number, layers: number) => {
    const inStd = d ** -0.5 * (2 * layers) ** -0.5;
    for (let l = 0; l < layers; l++) {
      const k = `${p}.encoder.layers.${l}`;
      for (const n of ['q_proj', 'k_proj', 'v_proj']) {
        normal(`${k}.self_attn.${n}.weight`, [d, d], inStd);
        zeros(`${k}.self_attn.${n}.bias`, [d]);
      }
      normal(`${k}.self_attn.out_proj.weight`, [d, d], d ** -0.5);
      zeros(`${k}.self_attn.out_proj.bias`, [d]);
      ones(`${k}.layer_norm1.weight`, [d]);
      zeros(`${k}.layer_norm1.bias`, [d]);
      normal(`${k}.mlp.fc1.weight`, [inter, d], (2 * d) ** -0.5);
      zeros(`${k}.mlp.fc1.bias`, [inter]);
      normal(`${k}.mlp.fc2.weight`, [d, inter], inStd);
      zeros(`${k}.mlp.fc2.bias`, [d]);
      ones(`${k}.layer_norm2.weight`, [d]);
      zeros(`${k}.layer_norm2.bias`, [d]);
    }
  };
  const t = c.text, v = c.vision;
  put('logit_scale', [], () => c.logitScaleInit ?? 2.6592);
  normal('text_model.embeddings.token_embedding.weight', [t.vocabSize, t.hiddenSize], 0.02);
  normal('text_model.embeddings.position_embedding.weight', [t.maxPositions ?? 77, t.hiddenSize], 0.02);
  encoder('text_model', t.hiddenSize, t.intermediateSize, t.numLayers);
  ones('text_model.final_layer_norm.weight', [t.hiddenSize]);
  zeros('text_model.final_layer_norm.bias', [t.hiddenSize]);
  normal('text_projection.weight', [c.projectionDim, t.hiddenSize], t.hiddenSize ** -0.5);
  const grid = v.imageSize / v.patchSize;
  if (!Number.isInteger(grid)) throw new RangeError(`image size ${v.imageSize} is not a multiple of patch size ${v.patchSize}`);
  normal('vision_model.embeddings.class_embedding', [v.hiddenSize], v.hiddenSize ** -0.5);
  normal('vision_model.embeddings.patch_embedding.weight', [v.hiddenSize, 3, v.patchSize, v.patchSize], 0.02);
  normal('vision_model.embeddings.position_embedding.weight', [grid * grid + 1, v.hiddenSize], 0.02);
  if (v.positionInit) {
    const table = sincos2d(grid, v.hiddenSize);
    const pe = out['vision_model.embeddings.position_embedding.weight'].data as Float32Array;
    for (let i = 0; i < table.length; i++) pe[v.hiddenSize + i] = v.positionInit.scale * table[i];
  }
  ones('vision_model.pre_layrnorm.weight', [v.hiddenSize]);
  zeros('vision_model.pre_layrnorm.bias', [v.hiddenSize]);
  encoder('vision_model', v.hiddenSize, v.intermediateSize, v.numLayers);
  ones('vision_model.post_layernorm.weight', [v.hiddenSize]);
  zeros('vision_model.post_layernorm.bias', [v.hiddenSize]);
  normal('visual_projection.weight', [c.projectionDim, v.hiddenSize], v.hiddenSize ** -0.5);
  return out;
}

/**
 * MAE's 2-D sin/cos position table, [grid * grid, dim] row-major over the patch grid: the first
 * half of each row encodes the patch's column, the second its row, each as sin | cos of the
 * coordinate at dim/4 frequencies 10000^(-k / (dim/4)).
 */
export function sincos2d(grid: number, dim: number): Float32Array {
  if (dim % 4 !== 0) throw new RangeError(`sin/cos position table needs a hidden size divisible by 4, got ${dim}`);
  const q = dim / 4, out = new Float32Array(grid * grid * dim);
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      const row = out.subarray((r * grid + c) * dim, (r * grid + c + 1) * dim);
      for (let k = 0; k < q; k++) {
        const omega = 10000 ** (-k / q);
        row[k] = Math.sin(c * omega); row[q + k] = Math.cos(c * omega);
        row[2 * q + k] = Math.sin(r * omega); row[3 * q + k] = Math.cos(r * omega);
      }
    }
  }
  return out;
}

/**
 * Writes a complete CLIPModel folder: config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json (from `merges`, see trainClipBpe) and preprocessor_config.json
 * (OpenAI normalisation, shortest edge = crop = image size). `weights` default: a fresh
 * {@link initClipWeights}; trained weights (same names) can be passed instead.
 * The text vocabulary size is 512 + merges + 2 and overrides `config.text.vocabSize`.
 */
export async function writeClipModel(
  dir: string, config: ClipInitConfig, merges: ReadonlyArray<readonly [string, string]>,
  opts: { weights?: Record<string, HostTensor>; seed?: number } = {},
): Promise<void> {
  const vocabSize = 512 + merges.length + 2;
  const cfg: ClipInitConfig = { ...config, text: { ...config.text, vocabSize } };
  const { tokenizerJson, tokenizerConfig } = clipTokenizerFiles(merges, { maxLength: cfg.text.maxPositions ?? 77 });
  await mkdir(dir, { recursive: true });
  const json = (name: string, obj: unknown) => writeFile(join(dir, name), `${JSON.stringify(obj, null, 2)}\n`);
  await json('config.json', clipConfigJson(cfg, vocabSize - 2, vocabSize - 1));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  await json('tokenizer_config.json', tokenizerConfig);
  const s = cfg.vision.imageSize;
  await json('preprocessor_config.json', {
    crop_size: { height: s, width: s }, do_center_crop: true, do_convert_rgb: true, do_normalize: true, do_rescale: true,
    do_resize: true, image_mean: OPENAI_CLIP_MEAN, image_processor_type: 'CLIPImageProcessor', image_std: OPENAI_CLIP_STD,
    resample: 3, rescale_factor: 1 / 255, size: { shortest_edge: s },
  });
  await writeSafetensors(join(dir, 'model.safetensors'), opts.weights ?? initClipWeights(cfg, opts.seed ?? 0), { format: 'pt' });
}
