import { GraphBuilder, nn, type Graph, type Value } from '@mobillama/core';
import type { DecoderConfig } from './config.js';
import type { DecoderWeights, FfnWeights } from './weights.js';

const { applyRope, attention, linear, mergeHeads, rmsNorm, ropeTables, silu, splitHeads } = nn;

/**
 * Graph inputs: `inputs_embeds` [B, T, H] (the token lookup is done by the caller so image
 * features can be spliced in), `position_ids` [B, T], `attention_bias` [B, 1, T, P+T]
 * (0 or -inf-ish: causal and padding mask together), `logits_index` [N] (the positions
 * whose logits are wanted: the last one when generating, all when scoring), and per layer
 * `past_key.i` / `past_value.i` [B, KV, P, D] (P may be 0).
 * Outputs: `logits` [B, N, V] and `present_key.i` / `present_value.i` [B, KV, P+T, D].
 */
export const DECODER_IO = {
  embeds: 'inputs_embeds', positions: 'position_ids', bias: 'attention_bias', logitsIndex: 'logits_index',
  pastKey: (i: number) => `past_key.${i}`, pastValue: (i: number) => `past_value.${i}`,
  presentKey: (i: number) => `present_key.${i}`, presentValue: (i: number) => `present_value.${i}`,
  logits: 'logits',
} as const;

/** SwiGLU feed-forward: down(silu(gate x) ⊙ up x). */
function feedForward(g: GraphBuilder, x: Value, ffn: FfnWeights): Value {
  const gate = silu(g, linear(g, x, g.param(ffn.gate)));
  return linear(g, g.mul(gate, linear(g, x, g.param(ffn.up))), g.param(ffn.down));
}

/** MobiLlama: LLaMA decoder layers with pre-RMSNorm, RoPE attention and (shared) SwiGLU FFNs. */
export function buildDecoderGraph(cfg: DecoderConfig, w: DecoderWeights, g = new GraphBuilder('mobillama_decoder')): Graph {
  const { hiddenSize: H, numHeads, numKvHeads, headDim: D, rmsNormEps: eps } = cfg;
  const io = DECODER_IO;
  const embeds = g.input(io.embeds, 'float32', ['batch', 'seq', H]);
  const positionIds = g.input(io.positions, 'int64', ['batch', 'seq']);
  const bias = g.input(io.bias, 'float32', ['batch', 1, 'seq', 'total']);
  const logitsIndex = g.input(io.logitsIndex, 'int64', ['n_logits']);
  const { cos, sin } = ropeTables(g, positionIds, D, cfg.ropeTheta);

  let h = embeds;
  w.layers.forEach((layer, i) => {
    const pastK = g.input(io.pastKey(i), 'float32', ['batch', numKvHeads, 'past', D]);
    const pastV = g.input(io.pastValue(i), 'float32', ['batch', numKvHeads, 'past', D]);
    const x = rmsNorm(g, h, g.param(layer.inputNorm), eps);
    const q = applyRope(g, splitHeads(g, linear(g, x, g.param(layer.attn.q)), numHeads, D), cos, sin, D);
    const kNew = applyRope(g, splitHeads(g, linear(g, x, g.param(layer.attn.k)), numKvHeads, D), cos, sin, D);
    const vNew = splitHeads(g, linear(g, x, g.param(layer.attn.v)), numKvHeads, D);
    const k = g.output(g.concat([pastK, kNew], 2), io.presentKey(i));
    const v = g.output(g.concat([pastV, vNew], 2), io.presentValue(i));
    const attn = attention(g, q, k, v, bias, { heads: numHeads, kvHeads: numKvHeads, headDim: D });
    h = g.add(h, linear(g, mergeHeads(g, attn, numHeads, D), g.param(layer.attn.o)));
    const ffn = w.ffns[cfg.ffnOfLayer[i]];
    h = g.add(h, feedForward(g, rmsNorm(g, h, g.param(layer.postAttentionNorm), eps), ffn));
  });
  h = rmsNorm(g, h, g.param(w.finalNorm), eps);
  g.output(linear(g, g.gather(h, logitsIndex, 1), g.param(w.lmHead)), io.logits);
  return g.build();
}
