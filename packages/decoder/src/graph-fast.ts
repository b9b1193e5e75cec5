import { GraphBuilder, linearInto, nn, type Graph, type LinearLowering, type Value } from '@mobillama/core';
import type { DecoderConfig } from './config.js';
import type { InferenceFfn, InferenceWeights } from './inference-weights.js';

// The inference lowering of the decoder with ORT's fused CPU ops: SimplifiedLayerNormalization
// and SkipSimplifiedLayerNormalization (residual add + RMSNorm in one kernel), RotaryEmbedding
// or GroupQueryAttention's own rotary, and each linear layer on the kernel of its weight
// format (core/quant/linear.ts). decoderInto (graph.ts) stays the primitive lowering that
// training differentiates; both compute the same function.
//
// Attention has three lowerings, all with the KV cache in caller-owned buffers of a fixed
// capacity C per layer ([B, KV, C, D], positions ≥ the cached length are scratch):
// - 'auto': an If node per layer routes by whether anything is cached. A prompt with an
//   empty cache runs GroupQueryAttention (fused causal attention: ~10% faster 512-token
//   prompts here); steps with a cache run 'capacity'. Both branches get queries and keys
//   already rotated by RotaryEmbedding at the caller's position ids, and the projections sit
//   outside the If, so there is one copy of the weights. Each If costs ~0.3 ms per step,
//   ~6% of a decode step at MobiLlama-0.5B size, so this is not the default.
// - 'capacity': the graph reads the buffers as they are (zero-copy inputs) and scores the
//   new queries against all C slots plus the new keys; the bias masks unused slots. Only
//   the new rows come out (new_key.i / new_value.i, [B, KV, T, D]) and the caller writes
//   them into its buffers. No step copies the cache.
// - 'gqa': com.microsoft GroupQueryAttention with do_rotary, past and present sharing one
//   buffer (the buffers go in as past_key.i and as preallocated present_key.i outputs, so ORT
//   writes the new rows in place). onnxruntime-node still copies every fetched output back
//   into a new ArrayBuffer, so each step copies the whole cache once (measured in the
//   README). Needs head_dim % 16 == 0 and positions that follow the cache slots.

export type AttentionLowering = 'auto' | 'capacity' | 'gqa';

/** Graph inputs and outputs of the fused decoder graph. */
export const FAST_IO = {
  embeds: 'inputs_embeds',
  positions: 'position_ids',
  /** 2-D rotary models only (cfg.rope2d): the second rotary ids [B, T]. */
  positions2: 'position_ids_2',
  /** capacity: [B, 1, T, C + T] (C = 0 when the cache is empty); gqa: [B, 1, T, P + T]. */
  bias: 'attention_bias',
  logitsIndex: 'logits_index',
  /** gqa only: int32 [B], total length − 1 per row; and the int32 scalar total length. */
  seqlensK: 'seqlens_k',
  totalLength: 'total_sequence_length',
  pastKey: (i: number) => `past_key.${i}`,
  pastValue: (i: number) => `past_value.${i}`,
  /** capacity only: the new rows, [B, KV, T, D]. */
  newKey: (i: number) => `new_key.${i}`,
  newValue: (i: number) => `new_value.${i}`,
  /** gqa only: the shared buffers, [B, KV, C, D]. */
  presentKey: (i: number) => `present_key.${i}`,
  presentValue: (i: number) => `present_value.${i}`,
  logits: 'logits',
} as const;

export interface FastGraphOptions extends LinearLowering {
  attention: AttentionLowering;
}

/**
 * Whether GroupQueryAttention's rotary can run this model: ORT requires head_size % 16 == 0,
 * and it turns by cache slot, one id per token, so not 2-D rotary.
 */
export function gqaSupported(cfg: DecoderConfig): boolean {
  return cfg.headDim % 16 === 0 && !cfg.rope2d;
}

/** Whether GroupQueryAttention without its rotary can run this model (head_size % 8 == 0). */
export function gqaPromptSupported(cfg: DecoderConfig): boolean {
  return cfg.headDim % 8 === 0;
}

/**
 * cos/sin caches [maxPositions, D/2] (rotate_half convention), computed in float64. With
 * `parity` only the even (0) or odd (1) frequency pairs turn; the others get the identity
 * (cos 1, sin 0), so rotating by both tables in turn is 2-D rotary exactly.
 */
export function rotaryCaches(cfg: DecoderConfig, parity?: 0 | 1): { cos: Float32Array; sin: Float32Array } {
  const half = cfg.headDim / 2, n = cfg.maxPositions;
  const cos = new Float32Array(n * half).fill(1), sin = new Float32Array(n * half);
  for (let i = 0; i < half; i++) {
    if (parity !== undefined && i % 2 !== parity) continue;
    // HF computes inv_freq in float32; round it the same way before multiplying.
    const invFreq = Math.fround(1 / cfg.ropeTheta ** ((2 * i) / cfg.headDim));
    for (let p = 0; p < n; p++) {
      const a = Math.fround(p * invFreq);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

const MS = 'com.microsoft';

function skipNorm(g: GraphBuilder, x: Value, skip: Value, w: Value, eps: number): { normed: Value; sum: Value } {
  const f = { dtype: 'float32' as const, shape: skip.shape };
  const [normed, , , sum] = g.nodeMulti('SkipSimplifiedLayerNormalization', [x, skip, w], { epsilon: { float: eps } }, [f, f, f, f], MS);
  return { normed, sum };
}

function feedForward(g: GraphBuilder, x: Value, ffn: InferenceFfn, lo: LinearLowering): Value {
  const gate = linearInto(g, x, ffn.gate, null, lo);
  return linearInto(g, g.mul(g.mul(gate, g.sigmoid(gate)), linearInto(g, x, ffn.up, null, lo)), ffn.down, null, lo);
}

/** The fused inference graph; see FAST_IO for its inputs and outputs. */
export function buildFastDecoderGraph(cfg: DecoderConfig, w: InferenceWeights, opts: FastGraphOptions, g = new GraphBuilder('mobillama_decoder_fast')): Graph {
  const { hiddenSize: H, numHeads: NH, numKvHeads: KV, headDim: D, rmsNormEps: eps } = cfg;
  if (opts.attention === 'gqa' && !gqaSupported(cfg)) throw new Error(`GroupQueryAttention's rotary needs head_dim % 16 == 0 (this model has ${D}) and one position id per token`);
  const io = FAST_IO;
  const rep = NH / KV;
  const embeds = g.input(io.embeds, 'float32', ['batch', 'seq', H]);
  const positions = g.input(io.positions, 'int64', ['batch', 'seq']);
  const bias = g.input(io.bias, 'float32', ['batch', 1, 'seq', 'total']);
  const logitsIndex = g.input(io.logitsIndex, 'int64', ['n_logits']);
  const gqa = opts.attention === 'gqa';
  const seqlensK = gqa ? g.input(io.seqlensK, 'int32', ['batch']) : null;
  const totalLength = gqa ? g.input(io.totalLength, 'int32', []) : null;
  const half = D / 2;
  const caches = (name: string, parity?: 0 | 1) => {
    const t = rotaryCaches(cfg, parity);
    return {
      cos: g.weight(`rotary_cos${name}`, { dtype: 'F32', shape: [cfg.maxPositions, half], data: t.cos }),
      sin: g.weight(`rotary_sin${name}`, { dtype: 'F32', shape: [cfg.maxPositions, half], data: t.sin }),
    };
  };
  const scale = 1 / Math.sqrt(D);
  const rotateBy = (x: Value, heads: number, ids: Value, c: { cos: Value; sin: Value }) =>
    g.node('RotaryEmbedding', [x, ids, c.cos, c.sin], { num_heads: heads }, { dtype: 'float32', shape: x.shape, domain: MS });
  let rotary: (x: Value, heads: number) => Value;
  let cos: Value | null = null, sin: Value | null = null;
  if (cfg.rope2d) {
    // Two rotations that each leave the other's frequency pairs alone (rotaryCaches' parity).
    const positions2 = g.input(io.positions2, 'int64', ['batch', 'seq']);
    const even = caches('_even', 0), odd = caches('_odd', 1);
    rotary = (x, heads) => rotateBy(rotateBy(x, heads, positions, even), heads, positions2, odd);
  } else {
    ({ cos, sin } = caches(''));
    rotary = (x, heads) => rotateBy(x, heads, positions, { cos: cos!, sin: sin! });
  }
  const past = w.layers.map((_, i) => ({
    key: g.input(io.pastKey(i), 'float32', ['batch', KV, 'capacity', D]),
    value: g.input(io.pastValue(i), 'float32', ['batch', KV, 'capacity', D]),
  }));
  // The cache capacity C, for splitting the attention weights into cached and new columns.
  const capacity = gqa ? null : g.slice(g.shape(past[0].key), [2], [3], [0]);
  // 'auto': prompts with an empty cache take GroupQueryAttention (int32 lengths derived here).
  const routed = opts.attention === 'auto' && gqaPromptSupported(cfg);
  let promptRoute: { cond: Value; seqlens: Value; total: Value } | null = null;
  if (routed) {
    const qShape = g.shape(embeds);
    const total = g.cast(g.reshape(g.slice(qShape, [1], [2], [0]), []), 'int32');
    const seqlens = g.expand(g.unsqueeze(g.sub(total, g.scalar(1, 'int32')), [0]), g.slice(qShape, [0], [1], [0]), ['batch']);
    promptRoute = { cond: g.equal(g.reshape(capacity!, []), g.constant({ dtype: 'I64', shape: [], data: BigInt64Array.of(0n) })), seqlens, total };
  }
  const lo: LinearLowering = { accuracyLevel: opts.accuracyLevel };
  const norm = (x: Value, wv: Value) =>
    g.nodeMulti('SimplifiedLayerNormalization', [x, wv], { axis: -1, epsilon: { float: eps } }, [{ dtype: 'float32', shape: x.shape }])[0];

  let h = embeds;
  let a = norm(h, g.param(w.layers[0].inputNorm));
  w.layers.forEach((layer, i) => {
    const q = linearInto(g, a, layer.q, null, lo);
    const k = linearInto(g, a, layer.k, null, lo);
    const v = linearInto(g, a, layer.v, null, lo);
    let attn: Value;
    if (gqa) {
      const f = { dtype: 'float32' as const, shape: null };
      const [o, presentK, presentV] = g.nodeMulti('GroupQueryAttention',
        [q, k, v, past[i].key, past[i].value, seqlensK, totalLength, cos!, sin!, null, bias],
        { num_heads: NH, kv_num_heads: KV, do_rotary: 1, scale: { float: scale } },
        [{ dtype: 'float32', shape: q.shape }, { ...f, name: io.presentKey(i) }, { ...f, name: io.presentValue(i) }], MS);
      g.outputs.push(presentK, presentV);
      attn = o;
    } else {
      const kRot = rotary(k, KV), qRot = rotary(q, NH);
      const kh = nn.splitHeads(g, kRot, KV, D);
      const vh = nn.splitHeads(g, v, KV, D);
      g.output(kh, io.newKey(i));
      g.output(vh, io.newValue(i));
      const capacityAttention = (sg: GraphBuilder): Value => {
        // Query heads grouped by the KV head they share: [B, KV, rep, T, D] against [B, KV, 1, S, D].
        const q5 = sg.reshape(nn.splitHeads(sg, qRot, NH, D), [0, KV, rep, -1, D]);
        const scores = (keys: Value) => sg.node('FusedMatMul', [q5, sg.unsqueeze(keys, [2])], { transB: 1, alpha: { float: scale } },
          { dtype: 'float32', shape: null, domain: MS });
        const probs = sg.softmax(sg.add(sg.concat([scores(past[i].key), scores(kh)], -1), sg.unsqueeze(bias, [2])), -1);
        const cached = sg.node('Slice', [probs, sg.ints([0]), capacity!, sg.ints([-1])], {}, { dtype: 'float32', shape: null });
        const fresh = sg.node('Slice', [probs, capacity!, sg.ints([2 ** 62]), sg.ints([-1])], {}, { dtype: 'float32', shape: null });
        const o5 = sg.add(sg.matmul(cached, sg.unsqueeze(past[i].value, [2])), sg.matmul(fresh, sg.unsqueeze(vh, [2])));
        return nn.mergeHeads(sg, sg.reshape(o5, [0, NH, -1, D]), NH, D);
      };
      if (promptRoute) {
        const { cond, seqlens, total } = promptRoute;
        // Nothing cached: the bias is [B, 1, T, T] for both branches, and GQA's present is kh/vh.
        const prompt = g.subgraph(`prompt_attention_${i}`, (sg) => {
          const f = { dtype: 'float32' as const, shape: null };
          const [o] = sg.nodeMulti('GroupQueryAttention', [qRot, kRot, v, null, null, seqlens, total, null, null, null, bias],
            { num_heads: NH, kv_num_heads: KV, scale: { float: scale } }, [{ dtype: 'float32', shape: qRot.shape }, f, f], MS);
          return [o];
        });
        const cachedStep = g.subgraph(`cached_attention_${i}`, (sg) => [capacityAttention(sg)]);
        [attn] = g.nodeMulti('If', [cond], { then_branch: { graph: prompt }, else_branch: { graph: cachedStep } }, [{ dtype: 'float32', shape: qRot.shape }]);
      } else attn = capacityAttention(g);
    }
    const post = skipNorm(g, linearInto(g, attn, layer.o, null, lo), h, g.param(layer.postAttentionNorm), eps);
    const f = feedForward(g, post.normed, w.ffns[cfg.ffnOfLayer[i]], lo);
    const nextNorm = i + 1 < w.layers.length ? w.layers[i + 1].inputNorm : w.finalNorm;
    const next = skipNorm(g, f, post.sum, g.param(nextNorm), eps);
    a = next.normed;
    h = next.sum;
  });
  g.output(linearInto(g, g.gather(a, logitsIndex, 1), w.lmHead, null, lo), io.logits);
  return g.build();
}
