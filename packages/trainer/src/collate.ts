import type { Feeds } from '@mobillama/core';
import { columnMajorOffset, gridSide } from '@mobillama/decoder';
import { IMAGE_TOKEN_ID } from '@mobillama/pipeline';
import { IGNORE_INDEX, type TokenizedSample } from './masking.js';

/** A sample with its image preprocessed (pixel values [3, S, S]) when it has one. */
export interface LoadedSample extends TokenizedSample {
  readonly pixels: Float32Array | null;
}

/** Graph input names of the training and eval graphs (see graph.ts). */
export const TRAIN_IO = {
  textIds: 'text_ids', pixels: 'pixel_values', splice: 'splice_index', positions: 'position_ids', positions2: 'position_ids_2',
  segments: 'segment_ids', padBias: 'pad_bias', targetIndex: 'target_index', targetIds: 'target_ids', nll: 'nll_sum',
  grad: (name: string) => `grad.${name}`,
} as const;

/** The additive mask value for padded keys (exp() of it is exactly 0 in float32). */
export const MASKED = -1e30;

/** One micro-batch as graph feeds, plus what the loop needs to know about it. */
export interface MicroBatch {
  readonly feeds: Feeds;
  readonly ids: readonly string[];
  /** Positions the model sees (text + image features), summed over the batch: tokens/s counts these. */
  readonly tokens: number;
  /** Supervised (shifted) targets: the denominator of the mean loss. */
  readonly targets: number;
  /** Longest spliced sequence (the padded length T). */
  readonly seq: number;
}

export interface CollateOptions {
  /** Image feature tokens per image (576 for CLIP ViT-L/14-336, patch features). */
  readonly imageTokens: number;
  /** Channels × size × size of one image's pixel values. */
  readonly pixelShape: readonly [number, number, number];
  /** Spliced sequences are cut to this length, as LLaVA cuts them to tokenizer.model_max_length. */
  readonly maxLength: number;
  /** 2-D rotary decoder (DecoderConfig.rope2d): also feed `position_ids_2`, image tokens numbered column by column. */
  readonly rope2d?: boolean;
}

/**
 * Builds the feeds of one micro-batch. The graph embeds all text tokens of the batch with
 * one Gather (`text_ids` [Lt]), runs the images (`pixel_values` [Bi, C, S, S]) through vision
 * and projector to [Bi·N, H] rows, and assembles each padded sequence with a second Gather
 * over concat(text rows, image rows) at `splice_index` [B, T]: the image features replace
 * the marker, as LLaVA's prepare_inputs_labels_for_multimodal splices them. Padding is on the
 * right (LLaVA's training side) and points at row 0; `pad_bias` masks it as a key.
 *
 * The loss needs logits only where a label follows, so the labels are shifted here and the
 * graph gathers just those hidden states (`target_index` into the flattened [B·T] rows,
 * `target_ids`): the same mean loss as HF's shifted cross-entropy over [B, T, V] logits with
 * -100 ignored, without the LM head over every unsupervised position (most of stage 1).
 */
export function collate(samples: readonly LoadedSample[], opts: CollateOptions): MicroBatch {
  const N = opts.imageTokens;
  const side = opts.rope2d ? gridSide(N) : 0;
  const [C, S1, S2] = opts.pixelShape;
  const perImage = C * S1 * S2;
  const B = samples.length;
  const text: number[] = [];
  const rows: number[][] = []; // per sample: row of concat(text, images) per position
  const labels: number[][] = [];
  const segs: number[][] = []; // per sample and position: 0 (prefix, or the whole sequence) or the turn
  const images: Float32Array[] = [];
  for (const s of samples) {
    const r: number[] = [], l: number[] = [], sg: number[] = [];
    const marker = s.ids.indexOf(IMAGE_TOKEN_ID);
    let imageRow = -1;
    if (marker >= 0) {
      if (!s.pixels) throw new Error(`sample ${s.id}: the prompt has an image marker but no image was loaded`);
      if (s.pixels.length !== perImage) throw new Error(`sample ${s.id}: pixel values have ${s.pixels.length} values, expected ${perImage}`);
      imageRow = images.length;
      images.push(s.pixels);
    }
    for (let i = 0; i < s.ids.length && r.length < opts.maxLength; i++) {
      if (i === marker) {
        for (let j = 0; j < N && r.length < opts.maxLength; j++) {
          r.push(-1 - (imageRow * N + j)); // image rows are resolved once Lt is known
          l.push(IGNORE_INDEX);
          sg.push(s.segments?.[i] ?? 0);
        }
        continue;
      }
      r.push(text.length);
      text.push(s.ids[i]);
      l.push(s.labels[i]);
      sg.push(s.segments?.[i] ?? 0);
    }
    rows.push(r);
    labels.push(l);
    segs.push(sg);
  }
  if (text.length === 0) text.push(0);
  const Lt = text.length;
  const T = Math.max(1, ...rows.map((r) => r.length));
  const splice = new BigInt64Array(B * T);
  const positions = new BigInt64Array(B * T);
  const positions2 = opts.rope2d ? new BigInt64Array(B * T) : null;
  const segments = new BigInt64Array(B * T);
  const padBias = new Float32Array(B * T);
  const targetIndex: bigint[] = [], targetIds: bigint[] = [];
  let tokens = 0;
  for (let b = 0; b < B; b++) {
    const r = rows[b], l = labels[b], sg = segs[b];
    tokens += r.length;
    // Independent turns: each turn's positions continue from the end of the shared prefix.
    const prefix = Math.max(0, sg.findIndex((x) => x !== 0));
    let turnStart = 0;
    for (let t = 0; t < T; t++) {
      const k = b * T + t;
      if (t < r.length && sg[t] !== 0 && sg[t] !== sg[t - 1]) turnStart = t;
      positions[k] = BigInt(t < r.length && sg[t] !== 0 ? prefix + t - turnStart : t);
      if (positions2) {
        // Image row j (of its image) keeps its block of ids but is numbered column by column.
        const j = t < r.length && r[t] < 0 ? (-1 - r[t]) % N : -1;
        positions2[k] = j < 0 ? positions[k] : positions[k] - BigInt(j - columnMajorOffset(j, side));
      }
      segments[k] = BigInt(t < r.length ? sg[t] : 0);
      if (t < r.length) splice[k] = BigInt(r[t] >= 0 ? r[t] : Lt + (-1 - r[t]));
      else padBias[k] = MASKED;
      // HF shifts: the logits at t predict the label at t + 1.
      if (t + 1 < r.length && l[t + 1] !== IGNORE_INDEX) {
        targetIndex.push(BigInt(k));
        targetIds.push(BigInt(l[t + 1]));
      }
    }
  }
  // A batch of text-only samples still feeds one (unused) image: the graph has one shape.
  const Bi = Math.max(1, images.length);
  const pixels = new Float32Array(Bi * perImage);
  images.forEach((p, i) => pixels.set(p, i * perImage));
  const feeds: Feeds = {
    [TRAIN_IO.textIds]: { dtype: 'int64', dims: [Lt], data: BigInt64Array.from(text, BigInt) },
    [TRAIN_IO.pixels]: { dtype: 'float32', dims: [Bi, C, S1, S2], data: pixels },
    [TRAIN_IO.splice]: { dtype: 'int64', dims: [B, T], data: splice },
    [TRAIN_IO.positions]: { dtype: 'int64', dims: [B, T], data: positions },
    [TRAIN_IO.segments]: { dtype: 'int64', dims: [B, T], data: segments },
    ...(positions2 ? { [TRAIN_IO.positions2]: { dtype: 'int64' as const, dims: [B, T], data: positions2 } } : {}),
    [TRAIN_IO.padBias]: { dtype: 'float32', dims: [B, 1, 1, T], data: padBias },
    [TRAIN_IO.targetIndex]: { dtype: 'int64', dims: [targetIndex.length], data: BigInt64Array.from(targetIndex) },
    [TRAIN_IO.targetIds]: { dtype: 'int64', dims: [targetIds.length], data: BigInt64Array.from(targetIds) },
  };
  return { feeds, ids: samples.map((s) => s.id), tokens, targets: targetIndex.length, seq: T };
}
