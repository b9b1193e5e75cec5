import { GraphBuilder, nn, type Graph, type Value, type WeightRef } from '@mobillama/core';
import type { ClipLayerWeights, LinearWeights, NormWeights } from '../weights.js';
import type { ClipEosRule, ClipTextConfig } from './config.js';
import type { ClipTextWeights } from './weights.js';

const { activation, attention, layerNorm, linear, mergeHeads, splitHeads } = nn;

/** float32's lowest value: HF fills masked scores with finfo(dtype).min. */
const MASKED = -3.4028234663852886e38;

export interface ClipTextGraphOptions {
  /**
   * Padding mask [B, T] (int64, 1 = token, 0 = pad), as HF's `attention_mask`. Right-padded
   * batches do not need it for the pooled output (the causal mask already hides later
   * positions); it only changes `embeds` at the pad positions.
   */
  attentionMask?: Value | null;
  /** Override the config's pooling rule. */
  eosRule?: ClipEosRule;
  /** Override the config's eos_token_id (the 'first-eos' rule). */
  eosTokenId?: number;
}

/** Graph inputs and outputs of {@link buildClipTextGraph}. */
export const CLIP_TEXT_IO = {
  ids: 'input_ids', mask: 'attention_mask', embeds: 'text_embeds', pooled: 'pooled', hidden: 'last_hidden_state',
} as const;

function norm(g: GraphBuilder, x: Value, w: NormWeights, eps: number): Value {
  return layerNorm(g, x, g.param(w.weight), g.param(w.bias), eps);
}

function proj(g: GraphBuilder, x: Value, w: LinearWeights): Value {
  return linear(g, x, g.param(w.weight), g.param(w.bias));
}

/** Pre-LN layer as the vision tower's, with an additive attention bias (causal + padding). */
function encoderLayer(g: GraphBuilder, x: Value, bias: Value, l: ClipLayerWeights, cfg: ClipTextConfig): Value {
  const { numHeads: H, headDim: Dh, layerNormEps: eps } = cfg;
  const h = norm(g, x, l.layerNorm1, eps);
  const heads = (w: LinearWeights) => splitHeads(g, proj(g, h, w), H, Dh);
  const a = attention(g, heads(l.q), heads(l.k), heads(l.v), bias, { heads: H, kvHeads: H, headDim: Dh });
  x = g.add(x, proj(g, mergeHeads(g, a, H, Dh), l.out));
  const m = proj(g, activation(g, cfg.hiddenAct, proj(g, norm(g, x, l.layerNorm2, eps), l.fc1)), l.fc2);
  return g.add(x, m);
}

/** Dimension `axis` of x's runtime shape as an int64 scalar. */
function dimOf(g: GraphBuilder, x: Value, axis: number): Value {
  return g.squeeze(g.slice(g.shape(x), [axis], [axis + 1], [0]), [0]);
}

/** 0..n-1 as int64 [n] (n an int64 scalar value). */
function range(g: GraphBuilder, n: Value): Value {
  return g.node('Range', [g.scalar(0, 'int64'), n, g.scalar(1, 'int64')], {}, { dtype: 'int64', shape: [null] });
}

/**
 * The additive attention bias: 0 where query t may see key s (s ≤ t and, with a mask, s is
 * a token), float32-lowest elsewhere. [T, T], or [B, 1, T, T] with a mask.
 */
function attentionBias(g: GraphBuilder, positions: Value, mask: Value | null): Value {
  let hidden = g.greater(g.unsqueeze(positions, [0]), g.unsqueeze(positions, [1])); // [T(query), T(key)]: key after query
  if (mask) {
    const pad = g.unsqueeze(g.equal(mask, g.scalar(0, 'int64')), [1, 2]); // [B, 1, 1, T]
    hidden = g.node('Or', [g.unsqueeze(hidden, [0, 1]), pad], {}, { dtype: 'bool', shape: [mask.shape?.[0] ?? null, 1, null, null] });
  }
  return g.where(hidden, g.scalar(MASKED), g.scalar(0));
}

/** Where each row is pooled, int64 [B]: HF's argmax(input_ids) or first position of eos_token_id. */
function eosPositions(g: GraphBuilder, ids: Value, rule: ClipEosRule, eosTokenId: number): Value {
  // ArgMax has no int64 kernel in ORT; ids fit int32. ArgMax picks the first maximum, as torch.
  const scores = rule === 'argmax' ? g.cast(ids, 'int32') : g.cast(g.equal(ids, g.scalar(eosTokenId, 'int64')), 'int32');
  return g.node('ArgMax', [scores], { axis: 1, keepdims: 0 }, { dtype: 'int64', shape: [ids.shape?.[0] ?? null] });
}

/**
 * The CLIP text tower inside an existing graph: HF CLIPTextTransformer. `inputIds` [B, T]
 * int64 with T ≤ maxPositions. Returns `embeds` (last_hidden_state after final_layer_norm,
 * [B, T, D]) and `pooled` (its row at each sequence's EOS, [B, D]). Built from primitives,
 * so core autodiff differentiates it (weights made trainable through the builder).
 */
export function clipTextInto(
  g: GraphBuilder, inputIds: Value, cfg: ClipTextConfig, w: ClipTextWeights, opts: ClipTextGraphOptions = {},
): { pooled: Value; embeds: Value } {
  if (inputIds.dtype !== 'int64') throw new Error(`clipTextInto: input ids must be int64, got ${inputIds.dtype}`);
  if (w.layers.length < cfg.numLayers) throw new Error(`the text graph needs ${cfg.numLayers} encoder layers, ${w.layers.length} were loaded`);
  const positions = range(g, dimOf(g, inputIds, 1));
  let h = g.add(g.gather(g.param(w.tokenEmbedding), inputIds), g.gather(g.param(w.positionEmbedding), positions));
  const bias = attentionBias(g, positions, opts.attentionMask ?? null);
  for (let i = 0; i < cfg.numLayers; i++) h = encoderLayer(g, h, bias, w.layers[i], cfg);
  const embeds = norm(g, h, w.finalLayerNorm, cfg.layerNormEps);
  const eos = eosPositions(g, inputIds, opts.eosRule ?? cfg.eosRule, opts.eosTokenId ?? cfg.eosTokenId);
  // Pick the EOS rows with a one-hot weighting: primitives only, so the rows get gradients.
  const oneHot = g.cast(g.equal(g.unsqueeze(positions, [0]), g.unsqueeze(eos, [1])), 'float32'); // [B, T]
  const pooled = g.reduceSum(g.mul(embeds, g.unsqueeze(oneHot, [2])), [1], false);
  return { pooled, embeds };
}

export interface BuildClipTextGraphOptions extends Omit<ClipTextGraphOptions, 'attentionMask'> {
  /** Add `text_embeds` = text_projection(pooled) (unnormalised, HF get_text_features). */
  projection?: WeightRef | null;
  /** Take an `attention_mask` input. */
  attentionMask?: boolean;
  /** Output `last_hidden_state`. */
  hiddenStates?: boolean;
}

/** A graph from `input_ids` [B, T] (and `attention_mask`) to `pooled` [B, D], `text_embeds` [B, P] and `last_hidden_state`. */
export function buildClipTextGraph(
  cfg: ClipTextConfig, w: ClipTextWeights, opts: BuildClipTextGraphOptions = {}, g = new GraphBuilder('clip_text'),
): Graph {
  const ids = g.input(CLIP_TEXT_IO.ids, 'int64', ['batch', 'seq']);
  const mask = opts.attentionMask ? g.input(CLIP_TEXT_IO.mask, 'int64', ['batch', 'seq']) : null;
  const { pooled, embeds } = clipTextInto(g, ids, cfg, w, { ...opts, attentionMask: mask });
  g.output(pooled, CLIP_TEXT_IO.pooled);
  if (opts.projection) g.output(linear(g, pooled, g.param(opts.projection)), CLIP_TEXT_IO.embeds);
  if (opts.hiddenStates) g.output(embeds, CLIP_TEXT_IO.hidden);
  return g.build();
}
