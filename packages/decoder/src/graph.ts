import { GraphBuilder, nn, type Graph, type Value } from '@mobillama/core';
import type { DecoderConfig } from './config.js';
import type { DecoderWeights, FfnWeights } from './weights.js';

const { applyRope, attention, linear, mergeHeads, rmsNorm, ropeTables, silu, splitHeads } = nn;

/**
 * Graph inputs: `inputs_embeds` [B, T, H] (the token lookup is done by the caller so image
 * features can be spliced in), `position_ids` [B, T], `attention_bias` [B, 1, T, P+T]
 * (0 or -inf-ish: causal and padding mask together), `logits_index` [N] (the positions
 * whose logits are wanted: the last one when generating, all when scoring), with 2-D rotary
 * (cfg.rope2d) `position_ids_2` [B, T], and per layer
 * `past_key.i` / `past_value.i` [B, KV, P, D] (P may be 0).
 * Outputs: `logits` [B, N, V] and `present_key.i` / `present_value.i` [B, KV, P+T, D].
 */
export const DECODER_IO = {
  embeds: 'inputs_embeds', positions: 'position_ids', positions2: 'position_ids_2', bias: 'attention_bias', logitsIndex: 'logits_index',
  pastKey: (i: number) => `past_key.${i}`, pastValue: (i: number) => `past_value.${i}`,
  presentKey: (i: number) => `present_key.${i}`, presentValue: (i: number) => `present_value.${i}`,
  logits: 'logits',
} as const;

/** SwiGLU feed-forward: down(silu(gate x) ⊙ up x). */
function feedForward(g: GraphBuilder, x: Value, ffn: FfnWeights): Value {
  const gate = silu(g, linear(g, x, g.param(ffn.gate)));
  return linear(g, g.mul(gate, linear(g, x, g.param(ffn.up))), g.param(ffn.down));
}

export interface DecoderInputs {
  /** [B, T, H]. */
  readonly embeds: Value;
  /** [B, T] int64. */
  readonly positionIds: Value;
  /** [B, T] int64, the second rotary ids; required when cfg.rope2d. */
  readonly positionIds2?: Value;
  /** Additive attention bias, broadcastable to [B, 1, T, P+T]. */
  readonly bias: Value;
  /** Per layer [B, KV, P, D] caches; omitted for training (no cache). */
  readonly past?: readonly { key: Value; value: Value }[];
}

export interface DecoderOutputs {
  /** Final-normed hidden states [B, T, H]. */
  readonly hidden: Value;
  /** Per layer keys/values including the new positions [B, KV, P+T, D]. */
  readonly present: readonly { key: Value; value: Value }[];
}

/**
 * MobiLlama: LLaMA decoder layers with pre-RMSNorm, RoPE attention and (shared) SwiGLU
 * FFNs, written into `g`. Inference and training graphs both use it.
 */
export function decoderInto(g: GraphBuilder, cfg: DecoderConfig, w: DecoderWeights, x: DecoderInputs): DecoderOutputs {
  const { numHeads, numKvHeads, headDim: D, rmsNormEps: eps } = cfg;
  if (cfg.rope2d && !x.positionIds2) throw new Error('a 2-D rotary decoder needs positionIds2');
  const { cos, sin } = ropeTables(g, x.positionIds, D, cfg.ropeTheta, cfg.rope2d ? x.positionIds2 : undefined);
  const present: { key: Value; value: Value }[] = [];
  let h = x.embeds;
  w.layers.forEach((layer, i) => {
    const a = rmsNorm(g, h, g.param(layer.inputNorm), eps);
    const q = applyRope(g, splitHeads(g, linear(g, a, g.param(layer.attn.q)), numHeads, D), cos, sin, D);
    let k = applyRope(g, splitHeads(g, linear(g, a, g.param(layer.attn.k)), numKvHeads, D), cos, sin, D);
    let v = splitHeads(g, linear(g, a, g.param(layer.attn.v)), numKvHeads, D);
    const past = x.past?.[i];
    if (past) {
      k = g.concat([past.key, k], 2);
      v = g.concat([past.value, v], 2);
    }
    present.push({ key: k, value: v });
    const attn = attention(g, q, k, v, x.bias, { heads: numHeads, kvHeads: numKvHeads, headDim: D });
    h = g.add(h, linear(g, mergeHeads(g, attn, numHeads, D), g.param(layer.attn.o)));
    const ffn = w.ffns[cfg.ffnOfLayer[i]];
    h = g.add(h, feedForward(g, rmsNorm(g, h, g.param(layer.postAttentionNorm), eps), ffn));
  });
  return { hidden: rmsNorm(g, h, g.param(w.finalNorm), eps), present };
}

/** The LM head: logits [.., V] from final hidden states. */
export function lmHeadInto(g: GraphBuilder, w: DecoderWeights, hidden: Value): Value {
  return linear(g, hidden, g.param(w.lmHead));
}

/** The inference graph: see DECODER_IO for its inputs and outputs. */
export function buildDecoderGraph(cfg: DecoderConfig, w: DecoderWeights, g = new GraphBuilder('mobillama_decoder')): Graph {
  const { hiddenSize: H, numKvHeads, headDim: D } = cfg;
  const io = DECODER_IO;
  const embeds = g.input(io.embeds, 'float32', ['batch', 'seq', H]);
  const positionIds = g.input(io.positions, 'int64', ['batch', 'seq']);
  const positionIds2 = cfg.rope2d ? g.input(io.positions2, 'int64', ['batch', 'seq']) : undefined;
  const bias = g.input(io.bias, 'float32', ['batch', 1, 'seq', 'total']);
  const logitsIndex = g.input(io.logitsIndex, 'int64', ['n_logits']);
  const past = w.layers.map((_, i) => ({
    key: g.input(io.pastKey(i), 'float32', ['batch', numKvHeads, 'past', D]),
    value: g.input(io.pastValue(i), 'float32', ['batch', numKvHeads, 'past', D]),
  }));
  const { hidden, present } = decoderInto(g, cfg, w, { embeds, positionIds, positionIds2, bias, past });
  present.forEach((p, i) => {
    g.output(p.key, io.presentKey(i));
    g.output(p.value, io.presentValue(i));
  });
  g.output(lmHeadInto(g, w, g.gather(hidden, logitsIndex, 1)), io.logits);
  return g.build();
}
