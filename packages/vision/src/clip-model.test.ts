import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostTensor } from '@mobillama/core';
import { ClipModel } from './clip-model.js';
import { CLIP_TEXT_FIXTURE, LABELS, readGolden, relErr } from './text/testing.js';

describe('ClipModel: zero-shot classification against the PyTorch reference', () => {
  let golden: Record<string, HostTensor>;
  let clip: ClipModel;
  const f32 = (name: string) => golden[name].data as Float32Array;

  beforeAll(async () => {
    golden = await readGolden();
    clip = await ClipModel.load(CLIP_TEXT_FIXTURE, { threads: 1 });
  });
  afterAll(async () => {
    await clip?.dispose();
  });

  it('loads both towers, the heads and the tokenizer', () => {
    expect(clip.projectionDim).toBe(16);
    expect(clip.logitScale).toBeCloseTo(Math.exp(2.6592), 4);
    expect(clip.textConfig.maxPositions).toBe(77);
    expect(clip.tokenizer.maxLength).toBe(77);
    expect(clip.visionConfig.hiddenSize).toBe(32);
  });

  it('encodeTexts: normalised projected text embeddings', async () => {
    const e = await clip.encodeTexts(LABELS);
    expect(e.length).toBe(4 * 16);
    expect(relErr(e, f32('text_embeds'))).toBeLessThan(1e-5);
    // one at a time (no padding) gives the same rows
    const one = await clip.encodeTexts(LABELS[2]);
    expect(relErr(one, f32('text_embeds').subarray(32, 48))).toBeLessThan(1e-5);
    expect(await clip.encodeTexts([])).toHaveLength(0);
  });

  it('encodeImages: normalised projected image embeddings, from a path or bytes', async () => {
    expect(relErr(await clip.encodeImages(`${CLIP_TEXT_FIXTURE}/image.png`), f32('image_embeds'))).toBeLessThan(1e-5);
    const bytes = await readFile(`${CLIP_TEXT_FIXTURE}/image.png`);
    const two = await clip.encodeImages([bytes, bytes]);
    expect(relErr(two.subarray(16), f32('image_embeds'))).toBeLessThan(1e-5);
    expect(relErr(await clip.encodePixels(f32('pixel_values'), 1), f32('image_embeds'))).toBeLessThan(1e-5);
  });

  it('classify: softmax(exp(logit_scale) · cos) over the labels, in label order', async () => {
    const r = await clip.classify(`${CLIP_TEXT_FIXTURE}/image.png`, LABELS);
    expect(r.map((x) => x.label)).toEqual(LABELS);
    expect(r.reduce((s, x) => s + x.prob, 0)).toBeCloseTo(1, 6);
    expect(relErr(r.map((x) => x.prob), f32('probs'))).toBeLessThan(1e-5);
    expect(relErr(r.map((x) => x.logit), f32('logits_per_image'))).toBeLessThan(1e-5);
    await expect(clip.classify(`${CLIP_TEXT_FIXTURE}/image.png`, [])).rejects.toThrow(/at least one label/);
  });

  it('long texts are truncated to 77 tokens; bad ids are refused', async () => {
    const long = Array(40).fill('a big purple star').join(' ');
    expect((await clip.encodeTexts(long)).length).toBe(16);
    await expect(clip.encodeTokenIds(BigInt64Array.from([627n, 9999n, 628n]), 1, 3)).rejects.toThrow(/outside the vocabulary/);
    await expect(clip.encodeTokenIds(new BigInt64Array(78), 1, 78)).rejects.toThrow(/at most 77/);
  });

  it('refuses folders that are not a full CLIPModel', async () => {
    await expect(ClipModel.load('/no/such/clip')).rejects.toThrow(/no such CLIP model folder/);
    await expect(ClipModel.load(`${CLIP_TEXT_FIXTURE}/../clip-vision-bin`)).rejects.toThrow(/no text_config|not a CLIP text checkpoint/);
    await expect(ClipModel.load(`${CLIP_TEXT_FIXTURE}/../clip-tiny`)).rejects.toThrow(/missing tensor text_model/);
  });
});
