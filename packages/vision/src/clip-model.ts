import {
  ConfigError, GraphBuilder, createSession, createWorkerSession, exportOnnx, nn, openWeights, readJsonFile,
  type Graph, type Session, type SessionOptions, type Value, type WeightSource,
} from '@mobillama/core';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import type { ClipVisionConfig } from './config.js';
import { l2Normalize } from './contrastive.js';
import { clipVisionInto } from './graph.js';
import { preprocessImage, type ImageInput, type PreprocessOptions } from './preprocess.js';
import type { HfClipModelConfigJson, ClipTextConfig } from './text/config.js';
import { clipTextInto } from './text/graph.js';
import { loadClipHeads, type ClipHeads } from './text/projection.js';
import { ClipTokenizer } from './text/tokenizer.js';
import { loadClipText, type LoadedClipText } from './text/weights.js';
import { loadClipVision, type LoadedClipVision } from './weights.js';

export interface ClipModelOptions extends SessionOptions, PreprocessOptions {
  /** Run ORT in worker threads (servers); default in-thread. */
  worker?: boolean;
}

/** One label's zero-shot score. */
export interface ZeroShotResult {
  readonly label: string;
  /** softmax over the labels of `logit`. */
  readonly prob: number;
  /** exp(logit_scale) · cos(image, label). */
  readonly logit: number;
}

/** Graph inputs and outputs of the two CLIP sessions. */
export const CLIP_MODEL_IO = {
  pixels: 'pixel_values', imageEmbeds: 'image_embeds', ids: 'input_ids', textEmbeds: 'text_embeds',
} as const;

/** pixel_values [B, C, S, S] → L2-normalised visual_projection(post_layernorm(CLS)) [B, P]. */
export function buildClipImageEmbedGraph(vision: LoadedClipVision, heads: ClipHeads, g = new GraphBuilder('clip_image_embeds')): Graph {
  const { imageSize: S, numChannels: C } = vision.config;
  const pixels = g.input(CLIP_MODEL_IO.pixels, 'float32', ['batch', C, S, S]);
  const { pooled } = clipVisionInto(g, pixels, vision.config, vision.weights, { pooled: true });
  g.output(l2Normalize(g, nn.linear(g, pooled!, g.param(heads.visualProjection))), CLIP_MODEL_IO.imageEmbeds);
  return g.build();
}

/** input_ids [B, T] → L2-normalised text_projection(pooled) [B, P]. */
export function buildClipTextEmbedGraph(text: LoadedClipText, heads: ClipHeads, g = new GraphBuilder('clip_text_embeds')): Graph {
  const ids = g.input(CLIP_MODEL_IO.ids, 'int64', ['batch', 'seq']);
  const { pooled } = clipTextInto(g, ids, text.config, text.weights);
  g.output(l2Normalize(g, nn.linear(g, pooled, g.param(heads.textProjection))), CLIP_MODEL_IO.textEmbeds);
  return g.build();
}

/** Everything of a CLIPModel folder, for graphs of one's own (training, other heads). */
export interface LoadedClip {
  readonly vision: LoadedClipVision;
  readonly text: LoadedClipText;
  readonly heads: ClipHeads;
  readonly tokenizer: ClipTokenizer;
  /** The one open weight source both towers read; close it when done. */
  readonly source: WeightSource;
}

/** Loads a HF CLIPModel folder: config.json, weights (all vision layers), projections, logit_scale, tokenizer. */
export async function loadClip(dir: string): Promise<LoadedClip> {
  if (!await isDirectory(dir)) throw new ConfigError(`${dir}: no such CLIP model folder`);
  const configJson = await readJsonFile<HfClipModelConfigJson>(join(dir, 'config.json'));
  const source = await openWeights(dir);
  try {
    const vision = await loadClipVision(dir, { source, configJson });
    const text = await loadClipText(dir, { source, configJson });
    if (text.prefix !== vision.prefix) throw new ConfigError(`${dir}: the towers sit under different prefixes (${vision.prefix || "''"}, ${text.prefix || "''"})`);
    const heads = await loadClipHeads(source, vision.prefix, {
      visionHidden: vision.config.hiddenSize, textHidden: text.config.hiddenSize, projectionDim: configJson.projection_dim ?? null,
    });
    const tokenizer = await ClipTokenizer.load(dir, { maxLength: text.config.maxPositions });
    return { vision, text, heads, tokenizer, source };
  } catch (e) {
    await source.close();
    throw e;
  }
}

/**
 * Both towers and projections in one graph: pixel_values [B, C, S, S] and input_ids [B', T]
 * to projected, unnormalised image and text embeddings [B, P], [B', P] (HF
 * get_image_features / get_text_features). With the weights made trainable through the
 * builder and {@link clipContrastiveLossInto} on top, this is CLIP's training graph.
 * `tokens: true` adds the same projections of every token: patchEmbeds [B, N, P] (the last
 * layer's patch tokens through post_layernorm and visual_projection, as the CLS is) and
 * tokenEmbeds [B', T, P] (the text's last hidden states through text_projection), for a
 * token-wise loss (tokenwiseContrastiveLossInto).
 */
export function clipEmbedsInto(
  g: GraphBuilder, pixels: Value, inputIds: Value, clip: Pick<LoadedClip, 'vision' | 'text' | 'heads'>, opts: { tokens?: boolean } = {},
): { imageEmbeds: Value; textEmbeds: Value; patchEmbeds?: Value; tokenEmbeds?: Value } {
  const vcfg = clip.vision.config, vw = clip.vision.weights;
  const { pooled, lastHidden } = clipVisionInto(g, pixels, vcfg, vw, { pooled: true });
  const imageEmbeds = nn.linear(g, pooled!, g.param(clip.heads.visualProjection));
  const text = clipTextInto(g, inputIds, clip.text.config, clip.text.weights);
  const textEmbeds = nn.linear(g, text.pooled, g.param(clip.heads.textProjection));
  if (!opts.tokens) return { imageEmbeds, textEmbeds };
  const patches = g.slice(lastHidden, [1], [vcfg.numPatches + 1], [1]);
  const patchNorm = nn.layerNorm(g, patches, g.param(vw.postLayerNorm.weight), g.param(vw.postLayerNorm.bias), vcfg.layerNormEps);
  return {
    imageEmbeds, textEmbeds,
    patchEmbeds: nn.linear(g, patchNorm, g.param(clip.heads.visualProjection)),
    tokenEmbeds: nn.linear(g, text.embeds, g.param(clip.heads.textProjection)),
  };
}

/**
 * A full CLIP (both towers, projections, temperature, tokenizer) for zero-shot use: a HF
 * CLIPModel folder (openai/clip-vit-*, or the micro model's CLIP).
 */
export class ClipModel {
  private constructor(
    readonly visionConfig: ClipVisionConfig,
    readonly textConfig: ClipTextConfig,
    readonly tokenizer: ClipTokenizer,
    private readonly heads: ClipHeads,
    private readonly source: WeightSource,
    private readonly imageSession: Session,
    private readonly textSession: Session,
    private readonly opts: ClipModelOptions,
  ) {}

  static async load(dir: string, opts: ClipModelOptions = {}): Promise<ClipModel> {
    const parts = await loadClip(dir);
    const sessions: Session[] = [];
    try {
      const { worker, threads, optimizationLevel, allowSpinning } = opts;
      const sessionOpts: SessionOptions = { threads, optimizationLevel, allowSpinning };
      const start = (graph: Graph) => worker ? createWorkerSession(exportOnnx(graph), sessionOpts) : createSession(exportOnnx(graph), sessionOpts);
      sessions.push(await start(buildClipImageEmbedGraph(parts.vision, parts.heads)));
      sessions.push(await start(buildClipTextEmbedGraph(parts.text, parts.heads)));
      return new ClipModel(parts.vision.config, parts.text.config, parts.tokenizer, parts.heads, parts.source, sessions[0], sessions[1], opts);
    } catch (e) {
      for (const s of sessions) await s.release();
      await parts.source.close();
      throw e;
    }
  }

  /** The joint embedding width P. */
  get projectionDim(): number {
    return this.heads.projectionDim;
  }

  /** exp(logit_scale): the factor on cosine similarities. */
  get logitScale(): number {
    return Math.exp(this.heads.logitScale);
  }

  /** L2-normalised image embeddings, Float32Array [N, P]. */
  async encodeImages(images: ImageInput | readonly ImageInput[]): Promise<Float32Array> {
    const list = Array.isArray(images) ? images as readonly ImageInput[] : [images as ImageInput];
    const { imageSize: S, numChannels: C } = this.visionConfig;
    const per = C * S * S;
    const batch = new Float32Array(per * list.length);
    for (const [i, img] of list.entries()) {
      const px = await preprocessImage(img, this.visionConfig.preprocess, this.opts);
      if (px.length !== per) throw new Error(`preprocessing gives ${px.length / C} pixels per channel but the tower takes ${S}x${S}`);
      batch.set(px, i * per);
    }
    return this.encodePixels(batch, list.length);
  }

  /** Image embeddings of ready pixel values [B, C, S, S]. */
  async encodePixels(pixelValues: Float32Array, batch: number): Promise<Float32Array> {
    const { imageSize: S, numChannels: C } = this.visionConfig;
    if (!Number.isInteger(batch) || batch < 1 || pixelValues.length !== batch * C * S * S) {
      throw new Error(`pixel_values have ${pixelValues.length} values, expected ${batch}x${C}x${S}x${S}`);
    }
    const out = await this.imageSession.run({ [CLIP_MODEL_IO.pixels]: { dtype: 'float32', dims: [batch, C, S, S], data: pixelValues } });
    return out[CLIP_MODEL_IO.imageEmbeds].data as Float32Array;
  }

  /** L2-normalised text embeddings, Float32Array [N, P] (texts truncated to max_position_embeddings tokens). */
  async encodeTexts(texts: string | readonly string[]): Promise<Float32Array> {
    const list = typeof texts === 'string' ? [texts] : texts;
    if (list.length === 0) return new Float32Array(0);
    const b = this.tokenizer.encodeBatch(list);
    return this.encodeTokenIds(b.ids, b.batch, b.length);
  }

  /** Text embeddings of token rows [B, T] (BOS … EOS, right-padded). */
  async encodeTokenIds(ids: BigInt64Array, batch: number, length: number): Promise<Float32Array> {
    if (ids.length !== batch * length || length > this.textConfig.maxPositions || length < 1) {
      throw new Error(`input_ids: ${ids.length} ids for [${batch}, ${length}] (at most ${this.textConfig.maxPositions} per row)`);
    }
    for (const id of ids) {
      if (id < 0n || id >= BigInt(this.textConfig.vocabSize)) throw new RangeError(`token id ${id} is outside the vocabulary (${this.textConfig.vocabSize})`);
    }
    const out = await this.textSession.run({ [CLIP_MODEL_IO.ids]: { dtype: 'int64', dims: [batch, length], data: ids } });
    return out[CLIP_MODEL_IO.textEmbeds].data as Float32Array;
  }

  /** logits_per_image [Ni, Nt] = exp(logit_scale) · image · textᵀ for normalised embeddings. */
  logits(imageEmbeds: Float32Array, textEmbeds: Float32Array): Float32Array {
    const P = this.projectionDim, ni = imageEmbeds.length / P, nt = textEmbeds.length / P, s = this.logitScale;
    const out = new Float32Array(ni * nt);
    for (let i = 0; i < ni; i++) {
      for (let j = 0; j < nt; j++) {
        let dot = 0;
        for (let k = 0; k < P; k++) dot += imageEmbeds[i * P + k] * textEmbeds[j * P + k];
        out[i * nt + j] = s * dot;
      }
    }
    return out;
  }

  /** Zero-shot classification: softmax over the labels of the scaled cosine similarities, in label order. */
  async classify(image: ImageInput, labels: readonly string[]): Promise<ZeroShotResult[]> {
    if (labels.length === 0) throw new RangeError('classify needs at least one label');
    const logits = this.logits(await this.encodeImages(image), await this.encodeTexts(labels));
    const max = Math.max(...logits);
    const exps = Array.from(logits, (l) => Math.exp(l - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    return labels.map((label, i) => ({ label, prob: exps[i] / sum, logit: logits[i] }));
  }

  async dispose(): Promise<void> {
    await this.imageSession.release();
    await this.textSession.release();
    await this.source.close();
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
