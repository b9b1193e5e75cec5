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
  return { loss: symmetricInfoNceInto(g, logitsPerImage, logitsPerText), logitsPerImage, logitsPerText };
}

/** (CE(logitsPerText, arange B) + CE(logitsPerImage, arange B)) / 2 for [B, B] logits whose row i matches column i. */
function symmetricInfoNceInto(g: GraphBuilder, logitsPerImage: Value, logitsPerText: Value): Value {
  const b = g.slice(g.shape(logitsPerText), [0], [1], [0]); // int64 [1]
  const targets = g.node('Range', [g.scalar(0, 'int64'), g.squeeze(b, [0]), g.scalar(1, 'int64')], {}, { dtype: 'int64', shape: [null] });
  // core's crossEntropy reads [batch, tokens, classes]: one "sequence" of B rows.
  const labels = g.unsqueeze(targets, [0]);
  const ce = (logits: Value) => crossEntropy(g, g.unsqueeze(logits, [0]), labels);
  return g.mul(g.add(ce(logitsPerText), ce(logitsPerImage)), g.scalar(0.5));
}

/**
 * FILIP's token-wise contrastive loss (Yao et al. 2021, eq. 4–5): an image and a text are as
 * similar as each image patch is to its best-matching word, averaged over the patches
 * (image → text), and as each word is to its best-matching patch, averaged over the words
 * (text → image); the symmetric InfoNCE over those, with CLIP's temperature. It makes every
 * patch's embedding carry what the words say about its part of the image, which the
 * pooled loss leaves in the CLS token.
 * patchEmbeds [Bi, N, P], tokenEmbeds [B, T, P] (normalised here), tokenMask [B, T] (1: a
 * word to match, 0: padding, BOS, EOS), row i of each a pair (Bi = B).
 */
export function tokenwiseContrastiveLossInto(
  g: GraphBuilder, patchEmbeds: Value, tokenEmbeds: Value, tokenMask: Value, logitScale: Value,
): { loss: Value; logitsPerImage: Value; logitsPerText: Value } {
  const v = g.unsqueeze(l2Normalize(g, patchEmbeds), [1]); // [Bi, 1, N, P]
  const w = g.unsqueeze(g.transpose(l2Normalize(g, tokenEmbeds), [0, 2, 1]), [0]); // [1, B, P, T]
  const sim = g.matmul(v, w); // [Bi, B, N, T]
  // Patch → best word (padding pushed out of the max), mean over patches.
  const notWord = g.mul(g.sub(g.scalar(1), g.unsqueeze(tokenMask, [0, 2])), g.scalar(-1e4)); // [1, B, 1, T]
  const imageToText = g.reduceMean(g.reduceMax(g.add(sim, notWord), [3], false), [2], false); // [Bi, B]
  // Word → best patch, mean over the words.
  const best = g.reduceMax(sim, [2], false); // [Bi, B, T]
  const words = g.unsqueeze(tokenMask, [0]); // [1, B, T]
  const textToImage = g.div(g.reduceSum(g.mul(best, words), [2], false), g.reduceSum(words, [2], false)); // [Bi, B]
  const scale = g.exp(logitScale);
  const logitsPerImage = g.mul(imageToText, scale);
  const logitsPerText = g.mul(g.transpose(textToImage, [1, 0]), scale);
  return { loss: symmetricInfoNceInto(g, logitsPerImage, logitsPerText), logitsPerImage, logitsPerText };
}
