import type { GraphBuilder } from './builder.js';
import type { Value } from './types.js';

// Composite layers written with the builder's primitives. They read like the equations,
// and because they are compositions, autodiff needs no rules of its own for them.

/** y = x Wᵀ + b with W in PyTorch's [out, in] layout (ORT folds the transpose of a constant). */
export function linear(g: GraphBuilder, x: Value, w: Value, b?: Value | null): Value {
  const y = g.matmul(x, g.transpose(w, [1, 0]));
  return b ? g.add(y, b) : y;
}

/** RMSNorm as LLaMA: x / sqrt(mean(x²) + eps) * w. */
export function rmsNorm(g: GraphBuilder, x: Value, w: Value, eps: number): Value {
  const variance = g.reduceMean(g.mul(x, x), [-1]);
  const inv = g.reciprocal(g.sqrt(g.add(variance, g.scalar(eps))));
  return g.mul(g.mul(x, inv), w);
}

/** LayerNorm over the last axis: (x - μ) / sqrt(σ² + eps) * w + b. */
export function layerNorm(g: GraphBuilder, x: Value, w: Value, b: Value, eps: number): Value {
  const centered = g.sub(x, g.reduceMean(x, [-1]));
  const variance = g.reduceMean(g.mul(centered, centered), [-1]);
  const normed = g.div(centered, g.sqrt(g.add(variance, g.scalar(eps))));
  return g.add(g.mul(normed, w), b);
}

/** Exact GELU: x/2 · (1 + erf(x/√2)). */
export function gelu(g: GraphBuilder, x: Value): Value {
  return g.mul(g.mul(x, g.scalar(0.5)), g.add(g.scalar(1), g.erf(g.mul(x, g.scalar(Math.SQRT1_2)))));
}

/** OpenAI CLIP's activation: x · σ(1.702x). */
export function quickGelu(g: GraphBuilder, x: Value): Value {
  return g.mul(x, g.sigmoid(g.mul(x, g.scalar(1.702))));
}

export function silu(g: GraphBuilder, x: Value): Value {
  return g.mul(x, g.sigmoid(x));
}

export type Activation = 'gelu' | 'quick_gelu' | 'silu' | 'relu';

export function activation(g: GraphBuilder, name: string, x: Value): Value {
  switch (name) {
    case 'gelu': return gelu(g, x);
    case 'quick_gelu': return quickGelu(g, x);
    case 'silu': case 'swish': return silu(g, x);
    case 'relu': return g.relu(x);
    default: throw new Error(`unsupported activation ${name}`);
  }
}

/** cos/sin tables for rotary embeddings at `positionIds` [B, T] (int64): each [B, 1, T, headDim]. */
export function ropeTables(g: GraphBuilder, positionIds: Value, headDim: number, theta: number, secondIds?: Value): { cos: Value; sin: Value } {
  const half = headDim / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / theta ** ((2 * i) / headDim);
  const angles = (ids: Value, f: Float32Array) => g.mul(g.unsqueeze(g.cast(ids, 'float32'), [-1]), g.constant({ dtype: 'F32', shape: [half], data: f }));
  let freqs: Value;
  if (secondIds) {
    // 2-D rotary: even frequency pairs turn by positionIds, odd ones by secondIds. Each angle is
    // one product plus an exact zero, so a token with equal ids gets LLaMA's angles bit for bit.
    const even = invFreq.map((f, i) => (i % 2 === 0 ? f : 0)), odd = invFreq.map((f, i) => (i % 2 === 1 ? f : 0));
    freqs = g.add(angles(positionIds, even), angles(secondIds, odd));
  } else freqs = angles(positionIds, invFreq);
  const emb = g.unsqueeze(g.concat([freqs, freqs], -1), [1]);
  return { cos: g.cos(emb), sin: g.sin(emb) };
}

/** LLaMA rotary embedding (rotate_half convention) of x [B, H, T, D]. */
export function applyRope(g: GraphBuilder, x: Value, cos: Value, sin: Value, headDim: number): Value {
  const half = headDim / 2;
  const x1 = g.slice(x, [0], [half], [-1]);
  const x2 = g.slice(x, [half], [headDim], [-1]);
  const rotated = g.concat([g.neg(x2), x1], -1);
  return g.add(g.mul(x, cos), g.mul(rotated, sin));
}

/** [B, T, H·D] → [B, H, T, D]. */
export function splitHeads(g: GraphBuilder, x: Value, heads: number, headDim: number): Value {
  return g.transpose(g.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
}

/** [B, H, T, D] → [B, T, H·D]. */
export function mergeHeads(g: GraphBuilder, x: Value, heads: number, headDim: number): Value {
  return g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, heads * headDim]);
}

/**
 * Scaled dot-product attention. q [B, H, T, D]; k, v [B, KV, S, D] with H a multiple of KV
 * (grouped-query attention shares each KV head among H/KV query heads); `bias` is added to
 * the scores (0 where allowed, a large negative number where masked), broadcastable to
 * [B, H, T, S]. Returns [B, H, T, D].
 */
export function attention(
  g: GraphBuilder, q: Value, k: Value, v: Value, bias: Value | null,
  opts: { heads: number; kvHeads: number; headDim: number },
): Value {
  const { heads, kvHeads, headDim } = opts;
  const scale = g.scalar(1 / Math.sqrt(headDim));
  if (heads === kvHeads) {
    let scores = g.mul(g.matmul(q, g.transpose(k, [0, 1, 3, 2])), scale);
    if (bias) scores = g.add(scores, bias);
    return g.matmul(g.softmax(scores, -1), v);
  }
  const rep = heads / kvHeads;
  if (!Number.isInteger(rep)) throw new Error(`attention: ${heads} heads are not a multiple of ${kvHeads} KV heads`);
  // Group the query heads by the KV head they share, so one broadcasting MatMul does GQA.
  const q5 = g.reshape(q, [0, kvHeads, rep, -1, headDim]);
  const k5 = g.unsqueeze(k, [2]);
  const v5 = g.unsqueeze(v, [2]);
  let scores = g.mul(g.matmul(q5, g.transpose(k5, [0, 1, 2, 4, 3])), scale);
  if (bias) scores = g.add(scores, g.unsqueeze(bias, [2]));
  const out = g.matmul(g.softmax(scores, -1), v5);
  return g.reshape(out, [0, heads, -1, headDim]);
}
