import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/types.js';

export interface CrossEntropyOptions {
  /** Label value that marks a token as unsupervised (default -100, as PyTorch and LLaVA). */
  ignoreIndex?: number;
  /**
   * Predict token t+1 from position t: drop the last logit and the first label, as
   * HF's LlamaForCausalLM does before its loss. Default false (labels already aligned).
   */
  shift?: boolean;
}

/**
 * Summed token negative log-likelihood and the number of supervised tokens, for callers that
 * accumulate over micro-batches. logits [B, T, V] float, labels [B, T] int64. Built from
 * primitives (LogSoftmax, GatherElements, Where, ReduceSum) so autodiff differentiates it.
 */
export function tokenNll(
  g: GraphBuilder, logits: Value, labels: Value, opts: CrossEntropyOptions = {},
): { sum: Value; count: Value } {
  if (labels.dtype !== 'int64') throw new Error(`crossEntropy: labels must be int64, got ${labels.dtype}`);
  let lg = logits, lb = labels;
  if (opts.shift) {
    lg = g.slice(lg, [0], [-1], [1]);
    lb = g.slice(lb, [1], [Number.MAX_SAFE_INTEGER], [1]);
  }
  const ignore = g.scalar(opts.ignoreIndex ?? -100, 'int64');
  const valid = g.not(g.equal(lb, ignore));
  // Ignored labels may be out of range for GatherElements: read class 0 there, then mask it out.
  const safe = g.where(valid, lb, g.scalar(0, 'int64'));
  const logp = g.logSoftmax(lg, -1);
  const picked = g.squeeze(g.gatherElements(logp, g.unsqueeze(safe, [-1]), -1), [-1]);
  const zero = g.scalar(0, logits.dtype);
  const sum = g.neg(g.reduceSum(g.where(valid, picked, zero), [0, 1], false));
  const count = g.reduceSum(g.cast(valid, logits.dtype), [0, 1], false);
  return { sum, count };
}

/**
 * Mean cross-entropy over supervised tokens: Σ −log p(label) / #(labels ≠ ignoreIndex),
 * as torch's cross_entropy(reduction='mean', ignore_index) and so HF/LLaVA compute it.
 * Returns a scalar. One deviation: with no supervised token at all the result is 0 (and so
 * are its gradients) instead of PyTorch's NaN, so such a batch cannot poison optimizer state.
 */
export function crossEntropy(g: GraphBuilder, logits: Value, labels: Value, opts: CrossEntropyOptions = {}): Value {
  const { sum, count } = tokenNll(g, logits, labels, opts);
  return g.div(sum, g.max(count, g.scalar(1, logits.dtype)));
}
