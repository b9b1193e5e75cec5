import { GraphBuilder, linearInto, nn, type Graph, type Value } from '@mobillama/core';
import type { ClipVisionConfig } from './config.js';
import type { ClipLayerWeights, ClipVisionWeights, LinearWeights, NormWeights } from './weights.js';

const { activation, attention, layerNorm, linear, mergeHeads, splitHeads } = nn;

/** LLaVA's select_feature: 'patch' drops the CLS token, 'cls_patch' keeps it. */
export type FeatureKind = 'patch' | 'cls_patch';

export interface ClipGraphOptions {
  /**
   * Index into HF's hidden_states (L + 1 entries: [0] is the pre_layrnorm output, [i] the
   * output of layer i); negative counts from the end. Default -2 (LLaVA's mm_vision_select_layer).
   */
  featureLayer?: number;
  /** Default 'patch'. */
  featureKind?: FeatureKind;
  /** Also output post_layernorm(CLS of the last layer), CLIPVisionModel's pooler_output (runs all layers). */
  pooled?: boolean;
}

/** Graph input `pixel_values` [B, C, S, S]; outputs `image_features` [B, N or N+1, D] and optionally `pooled` [B, D]. */
export const CLIP_IO = { pixels: 'pixel_values', features: 'image_features', pooled: 'pooled' } as const;

/** hidden_states index of a feature layer, checked against the tower's depth. */
export function hiddenStateIndex(cfg: ClipVisionConfig, featureLayer: number): number {
  const n = cfg.numLayers + 1;
  const j = featureLayer < 0 ? n + featureLayer : featureLayer;
  if (!Number.isInteger(featureLayer) || j < 0 || j >= n) {
    throw new RangeError(`feature layer ${featureLayer} is outside hidden_states of a ${cfg.numLayers}-layer tower (${-n}..${n - 1})`);
  }
  return j;
}

/** How many encoder layers a graph with these options computes (and so must be loaded). */
export function layersNeeded(cfg: ClipVisionConfig, opts: ClipGraphOptions = {}): number {
  return opts.pooled ? cfg.numLayers : hiddenStateIndex(cfg, opts.featureLayer ?? -2);
}

function norm(g: GraphBuilder, x: Value, w: NormWeights, eps: number): Value {
  return layerNorm(g, x, g.param(w.weight), g.param(w.bias), eps);
}

function proj(g: GraphBuilder, x: Value, w: LinearWeights): Value {
  // A quantized layer runs on its kernel (int8 DynamicQuantizeMatMul for the encoder's many rows).
  return w.kernel ? linearInto(g, x, w.kernel, g.param(w.bias)) : linear(g, x, g.param(w.weight), g.param(w.bias));
}

/** Pre-LN transformer layer: x + out(MHA(LN1 x)), then x + fc2(act(fc1(LN2 x))). */
function encoderLayer(g: GraphBuilder, x: Value, l: ClipLayerWeights, cfg: ClipVisionConfig): Value {
  const { numHeads: H, headDim: Dh, layerNormEps: eps } = cfg;
  const h = norm(g, x, l.layerNorm1, eps);
  const heads = (w: LinearWeights) => splitHeads(g, proj(g, h, w), H, Dh);
  // Full bidirectional attention, scale 1/sqrt(head_dim) (HF scales q first: same value).
  const a = attention(g, heads(l.q), heads(l.k), heads(l.v), null, { heads: H, kvHeads: H, headDim: Dh });
  x = g.add(x, proj(g, mergeHeads(g, a, H, Dh), l.out));
  const m = proj(g, activation(g, cfg.hiddenAct, proj(g, norm(g, x, l.layerNorm2, eps), l.fc1)), l.fc2);
  return g.add(x, m);
}

/**
 * Patch + class + position embeddings of pixels [B, C, S, S] → [B, N + 1, D]. The stride-P
 * conv is a matmul over non-overlapping patches: cut the image into [B, N, C·P·P] rows
 * (channel, then row, then column within a patch: the conv weight's order) and multiply by
 * the weight viewed as [D, C·P·P].
 */
function embeddings(g: GraphBuilder, pixels: Value, cfg: ClipVisionConfig, w: ClipVisionWeights): Value {
  const { numChannels: C, patchSize: P, imageSize: S, hiddenSize: D } = cfg;
  const G = S / P;
  const grid = g.reshape(pixels, [0, C, G, P, G, P]); // b, c, gy, py, gx, px
  const patches = g.reshape(g.transpose(grid, [0, 2, 4, 1, 3, 5]), [0, G * G, C * P * P]);
  const patchEmb = linear(g, patches, g.reshape(g.param(w.patchEmbedding), [D, C * P * P]));
  // The class token, broadcast over the batch: Expand to [B, 1, D] (B from the input's shape).
  const batch = g.slice(g.node('Shape', [pixels], {}, { dtype: 'int64', shape: [4] }), [0], [1], [0]);
  const cls = g.node('Expand', [g.reshape(g.param(w.classEmbedding), [1, 1, D]), g.concat([batch, g.ints([1, 1])], 0)], {},
    { dtype: 'float32', shape: [pixels.shape?.[0] ?? null, 1, D] });
  return g.add(g.concat([cls, patchEmb], 1), g.param(w.positionEmbedding));
}

/**
 * The CLIP vision tower inside an existing graph (so the pipeline can feed the features
 * straight into the projector): HF CLIPVisionTransformer up to the selected hidden state.
 */
export function clipVisionInto(
  g: GraphBuilder, pixels: Value, cfg: ClipVisionConfig, w: ClipVisionWeights, opts: ClipGraphOptions = {},
): { features: Value; pooled: Value | null; lastHidden: Value } {
  const j = hiddenStateIndex(cfg, opts.featureLayer ?? -2);
  const depth = opts.pooled ? cfg.numLayers : j;
  if (w.layers.length < depth) throw new Error(`the graph needs ${depth} encoder layers, ${w.layers.length} were loaded`);
  let h = norm(g, embeddings(g, pixels, cfg, w), w.preLayerNorm, cfg.layerNormEps); // hidden_states[0]
  let selected = h;
  for (let i = 0; i < depth; i++) {
    h = encoderLayer(g, h, w.layers[i], cfg); // hidden_states[i + 1]
    if (i + 1 === j) selected = h;
  }
  const features = (opts.featureKind ?? 'patch') === 'patch' ? g.slice(selected, [1], [cfg.numPatches + 1], [1]) : selected;
  const pooled = opts.pooled ? norm(g, g.squeeze(g.slice(h, [0], [1], [1]), [1]), w.postLayerNorm, cfg.layerNormEps) : null;
  // lastHidden: the deepest hidden state computed (the last layer's when pooled).
  return { features, pooled, lastHidden: h };
}

/** A graph from `pixel_values` [B, C, S, S] to `image_features` (and `pooled` when asked). */
export function buildClipVisionGraph(
  cfg: ClipVisionConfig, w: ClipVisionWeights, opts: ClipGraphOptions = {}, g = new GraphBuilder('clip_vision'),
): Graph {
  const { imageSize: S, numChannels: C } = cfg;
  const pixels = g.input(CLIP_IO.pixels, 'float32', ['batch', C, S, S]);
  const { features, pooled } = clipVisionInto(g, pixels, cfg, w, opts);
  g.output(features, CLIP_IO.features);
  if (pooled) g.output(pooled, CLIP_IO.pooled);
  return g.build();
}
