import { crossEntropy, type GraphBuilder, type Value } from '@mobillama/core';

// CLIP's joint embedding space: L2-normalised projections, scaled cosine logits and the
// symmetric InfoNCE loss (HF modeling_clip.clip_loss, open_clip ClipLoss without gathering or
// label smoothing). All primitives, so core autodiff differentiates every piece.

/** x / ‖x‖₂ over the last axis (HF divides by the norm with no epsilon). */
export function l2Normalize(g: GraphBuilder, x: Value): Value {
  return g.div(x, g.sqrt(g.reduceSum(g.mul(x, x), [-1])));
}

export interface ClipLogitsOptions {
  /** L2-normalise the embeddings first (default true: CLIPModel's forward does). */
  normalize?: boolean;
}

/**
 * logits_per_text = exp(logitScale) · text · imageᵀ [Bt, Bi] and its transpose
 * logits_per_image [Bi, Bt]. `logitScale` is CLIP's `logit_scale` parameter (a log;
 * scalar or [1]).
 */
export function clipLogitsInto(
  g: GraphBuilder, imageEmbeds: Value, textEmbeds: Value, logitScale: Value, opts: ClipLogitsOptions = {},
): { logitsPerImage: Value; logitsPerText: Value } {
  const norm = opts.normalize ?? true;
  const img = norm ? l2Normalize(g, imageEmbeds) : imageEmbeds;
  const txt = norm ? l2Normalize(g, textEmbeds) : textEmbeds;
  const logitsPerText = g.mul(g.matmul(txt, g.transpose(img, [1, 0])), g.exp(logitScale));
  return { logitsPerText, logitsPerImage: g.transpose(logitsPerText, [1, 0]) };
}

/**
 * CLIP's contrastive loss for B matching (image, text) pairs, row i of each being a pair:
 * (CE(logits_per_text, arange B) + CE(logits_per_image, arange B)) / 2, a scalar.
 * imageEmbeds, textEmbeds [B, P] (projected, normalised here unless `normalize: false`).
 * Clamping logit_scale (open_clip keeps it ≤ ln 100) is the optimizer's job, as in open_clip.
 */
export function clipContrastiveLossInto(
  g: GraphBuilder, imageEmbeds: Value, textEmbeds: Value, logitScale: Value, opts: ClipLogitsOptions = {},
): { loss: Value; logitsPerImage: Value; logitsPerText: Value } {
  const { logitsPerImage, logitsPerText } = clipLogitsInto(g, imageEmbeds, textEmbeds, logitScale, opts);
  const b = g.slice(g.shape(logitsPerText), [0], [1], [0]); // int64 [1]
  const targets = g.node('Range', [g.scalar(0, 'int64'), g.squeeze(b, [0]), g.scalar(1, 'int64')], {}, { dtype: 'int64', shape: [null] });
  // core's crossEntropy reads [batch, tokens, classes]: one "sequence" of B rows.
  const labels = g.unsqueeze(targets, [0]);
  const ce = (logits: Value) => crossEntropy(g, g.unsqueeze(logits, [0]), labels);
  const loss = g.mul(g.add(ce(logitsPerText), ce(logitsPerImage)), g.scalar(0.5));
  return { loss, logitsPerImage, logitsPerText };
}
