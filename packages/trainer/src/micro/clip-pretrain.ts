/**
 * Contrastive pretraining of a micro CLIP from scratch (the micro model's vision tower):
 * both towers and projections in one graph (`clipEmbedsInto`), CLIP's symmetric InfoNCE
 * loss (`clipContrastiveLossInto`), the generated backward pass, AdamW in JS with the
 * trainer's optimizer and schedule, `logit_scale` clamped to ln 100 as open_clip does.
 * Batches are drawn from a seeded permutation per epoch, so a run is deterministic.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { GraphBuilder, addBackward, createSession, exportOnnx, readFloatWeight, type Feeds, type HostTensor } from '@mobillama/core';
import {
  clipContrastiveLossInto, clipEmbedsInto, initClipWeights, loadClip, preprocessImage, tokenwiseContrastiveLossInto, trainClipBpe, writeClipModel,
  type ClipInitConfig,
} from '@mobillama/vision';
import { adamwStep, clipCoefficient, globalGradNorm, newAdamWState } from '../optimizer.js';
import { decays, type Param } from '../params.js';
import { Rng } from '../rng.js';
import { lrAt, warmupStepsFor } from '../schedule.js';

export interface ClipPretrainOptions {
  /** Dims of both towers (text vocabSize is set from the merges). */
  readonly config: ClipInitConfig;
  /** (image path, caption) pairs; `group` (optional) names a set of look-alikes (see hardNegatives). */
  readonly pairs: readonly { readonly image: string; readonly caption: string; readonly group?: string }[];
  /**
   * Hard negatives: batches are filled with up to this many pairs of one group at a time
   * (pairs with the same `group` key: for the shapes data, the same colours), each caption
   * once per batch, so the loss cannot be met by the easy cue alone. 0 (default): plain
   * random batches.
   */
  readonly hardNegatives?: number;
  /**
   * Weight of FILIP's token-wise contrastive loss added to CLIP's (0, default: CLIP's alone).
   * It puts what the captions say about each shape into that shape's patch tokens, which
   * are what LLaVA feeds the decoder.
   */
  readonly tokenLossWeight?: number;
  /** Folder to write the trained CLIPModel to (replaced atomically). */
  readonly out: string;
  readonly steps: number;
  readonly batchSize: number;
  readonly learningRate: number;
  readonly weightDecay?: number;
  readonly warmupRatio?: number;
  readonly seed: number;
  /** BPE merges learned on the captions (default 400; stops early when pairs run out). */
  readonly numMerges?: number;
  readonly threads?: number;
  readonly onStep?: (r: { step: number; loss: number; lr: number; logitScale: number; seconds: number }) => void;
}

export interface ClipPretrainResult {
  readonly losses: readonly number[];
  readonly vocabSize: number;
  readonly seconds: number;
}

const MAX_LOGIT_SCALE = Math.log(100);

type GroupedPair = { readonly caption: string; readonly group?: string };

/** Pair indices by `group` (a pair without one is its own group). */
export function groupPairs(pairs: readonly GroupedPair[]): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  pairs.forEach((p, i) => {
    const k = p.group ?? String(i);
    const g = groups.get(k);
    if (g) g.push(i);
    else groups.set(k, [i]);
  });
  return groups;
}

/**
 * A batch of look-alikes: each pass draws a random pair, then up to `perGroup` pairs of its
 * group in random order, skipping captions already in the batch (a duplicate caption would
 * be a false negative for the contrastive loss). Gives up after 50 passes per slot, so a
 * batch can come out short when there are too few distinct captions.
 */
export function hardNegativeBatch(
  pairs: readonly GroupedPair[], groups: ReadonlyMap<string, readonly number[]>, batchSize: number, perGroup: number, rng: Rng,
): number[] {
  const idx: number[] = [], seen = new Set<string>();
  for (let tries = 0; idx.length < batchSize && tries < 50 * batchSize; tries++) {
    const a = rng.int(pairs.length);
    const mates = groups.get(pairs[a].group ?? String(a))!.slice();
    rng.shuffle(mates);
    let taken = 0;
    for (const i of [a, ...mates]) {
      if (taken >= perGroup || idx.length >= batchSize) break;
      if (seen.has(pairs[i].caption)) continue;
      seen.add(pairs[i].caption);
      idx.push(i);
      taken++;
    }
  }
  return idx;
}

/** 1 at each caption's word tokens (between BOS and EOS), 0 at those two and the padding: [B, T] row-major. */
export function wordMask(lengths: readonly number[], width: number): Float32Array {
  const m = new Float32Array(lengths.length * width);
  lengths.forEach((n, r) => m.fill(1, r * width + 1, r * width + Math.max(1, n - 1)));
  return m;
}

export async function pretrainClip(o: ClipPretrainOptions): Promise<ClipPretrainResult> {
  const t0 = performance.now();
  const tokenWeight = o.tokenLossWeight ?? 0;
  if (!(tokenWeight >= 0) || !Number.isFinite(tokenWeight)) throw new RangeError(`tokenLossWeight must be a number ≥ 0, got ${o.tokenLossWeight}`);
  const merges = trainClipBpe(o.pairs.map((p) => p.caption), { numMerges: o.numMerges ?? 400 });
  const tmp = `${o.out}.partial`;
  await rm(tmp, { recursive: true, force: true });
  await writeClipModel(tmp, o.config, merges, { seed: o.seed });
  const clip = await loadClip(tmp);
  let losses: number[] = [];
  let weights: Record<string, HostTensor>;
  try {
    const cfg: ClipInitConfig = { ...o.config, text: { ...o.config.text, vocabSize: clip.text.config.vocabSize } };
    const names = Object.keys(initClipWeights(cfg, o.seed));
    const trainable = new Set(names);
    const { imageSize: S, numChannels: C } = clip.vision.config;
    const g = new GraphBuilder('clip_pretrain', trainable);
    const pixels = g.input('pixel_values', 'float32', ['batch', C, S, S]);
    const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
    const { imageEmbeds, textEmbeds, patchEmbeds, tokenEmbeds } = clipEmbedsInto(g, pixels, ids, clip, { tokens: tokenWeight > 0 });
    const scale = g.param(clip.heads.logitScaleWeight);
    let { loss } = clipContrastiveLossInto(g, imageEmbeds, textEmbeds, scale);
    if (patchEmbeds && tokenEmbeds) {
      const words = g.input('token_mask', 'float32', ['batch', 'seq']);
      const token = tokenwiseContrastiveLossInto(g, patchEmbeds, tokenEmbeds, words, scale).loss;
      loss = g.add(loss, g.mul(token, g.scalar(tokenWeight)));
    }
    const inputs = g.inputs.filter((v) => trainable.has(v.name));
    const grads = addBackward(g, loss, inputs);
    g.output(loss, 'loss');
    inputs.forEach((p) => g.output(grads.get(p)!, `grad.${p.name}`));
    const session = await createSession(exportOnnx(g.build()), { threads: o.threads });
    try {
      const params: Param[] = await Promise.all(inputs.map(async (v) => {
        const t = await readFloatWeight(clip.source, v.name);
        return { name: v.name, shape: t.shape, data: Float32Array.from(t.data as Float32Array), decay: decays(v.name) && !v.name.includes('embedding') && v.name !== 'logit_scale' };
      }));
      // Every image preprocessed once (the micro images are small), every caption tokenized once.
      const per = C * S * S;
      const allPixels = new Float32Array(o.pairs.length * per);
      for (let i = 0; i < o.pairs.length; i += 64) {
        const chunk = o.pairs.slice(i, i + 64);
        const px = await Promise.all(chunk.map((p) => preprocessImage(p.image, clip.vision.config.preprocess, { aspect: 'pad' })));
        px.forEach((x, j) => allPixels.set(x, (i + j) * per));
      }
      const captions = o.pairs.map((p) => p.caption);
      const opt = newAdamWState(params);
      const schedule = { kind: 'cosine' as const, baseLr: o.learningRate, totalSteps: o.steps, warmupSteps: warmupStepsFor(o.steps, 0, o.warmupRatio ?? 0.05) };
      const perEpoch = Math.floor(o.pairs.length / o.batchSize);
      if (perEpoch < 1) throw new RangeError(`${o.pairs.length} pairs are fewer than one batch of ${o.batchSize}`);
      let perm: Uint32Array | null = null;
      const hard = o.hardNegatives ?? 0;
      const groups = groupPairs(o.pairs);
      const hardRng = Rng.seeded(o.seed, 'clip-hard');
      const scaleParam = params.find((p) => p.name === clip.heads.logitScaleWeight.name)!;
      for (let s = 0; s < o.steps; s++) {
        const ts = performance.now();
        const epoch = Math.floor(s / perEpoch), k = s % perEpoch;
        if (k === 0 || !perm) {
          perm = Uint32Array.from({ length: o.pairs.length }, (_, i) => i);
          Rng.seeded(o.seed, `clip-order/${epoch}`).shuffle(perm);
        }
        const idx = hard > 0 ? hardNegativeBatch(o.pairs, groups, o.batchSize, hard, hardRng) : Array.from(perm.subarray(k * o.batchSize, (k + 1) * o.batchSize));
        const px = new Float32Array(idx.length * per);
        idx.forEach((i, j) => px.set(allPixels.subarray(i * per, (i + 1) * per), j * per));
        const tok = clip.tokenizer.encodeBatch(idx.map((i) => captions[i]));
        const feeds: Feeds = {
          pixel_values: { dtype: 'float32', dims: [idx.length, C, S, S], data: px },
          input_ids: { dtype: 'int64', dims: [tok.batch, tok.length], data: tok.ids },
        };
        if (tokenWeight > 0) {
          // A caption without words (BOS and EOS only) has nothing to match: its mean would be 0/0.
          const empty = tok.lengths.findIndex((n) => n < 3);
          if (empty >= 0) throw new RangeError(`caption ${JSON.stringify(captions[idx[empty]])} has no words for the token-wise loss`);
          feeds.token_mask = { dtype: 'float32', dims: [tok.batch, tok.length], data: wordMask(tok.lengths, tok.length) };
        }
        for (const p of params) feeds[p.name] = { dtype: 'float32', dims: p.shape, data: p.data };
        const out = await session.run(feeds);
        const l = (out.loss.data as Float32Array)[0];
        if (!Number.isFinite(l)) throw new Error(`CLIP pretraining: loss ${l} at step ${s + 1}; lower the learning rate`);
        losses.push(l);
        const gm = new Map(params.map((p) => [p.name, out[`grad.${p.name}`].data as Float32Array]));
        const norm = globalGradNorm(gm);
        const lr = lrAt(s + 1, schedule);
        adamwStep(params, gm, opt, lr, { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: o.weightDecay ?? 0.1 }, clipCoefficient(norm, 1));
        if (scaleParam.data[0] > MAX_LOGIT_SCALE) scaleParam.data[0] = MAX_LOGIT_SCALE;
        o.onStep?.({ step: s + 1, loss: l, lr, logitScale: Math.exp(scaleParam.data[0]), seconds: (performance.now() - ts) / 1000 });
      }
      weights = Object.fromEntries(params.map((p) => [p.name, { dtype: 'F32', shape: p.shape, data: p.data } as HostTensor]));
      // Weights the graph does not use (none expected) keep their initial values.
      for (const n of names) if (!weights[n]) weights[n] = await readFloatWeight(clip.source, n);
    } finally {
      await session.release();
    }
  } finally {
    await clip.source.close();
  }
  await writeClipModel(tmp, o.config, merges, { weights });
  await rm(o.out, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await rename(tmp, o.out);
  losses = losses.slice();
  return { losses, vocabSize: 512 + merges.length + 2, seconds: (performance.now() - t0) / 1000 };
}
