import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, addBackward, createSession, exportOnnx, readFloatWeight, type Feeds } from '@mobillama/core';
import { ClipModel, clipEmbedsInto, loadClip } from '../clip-model.js';
import { clipContrastiveLossInto } from '../contrastive.js';
import { trainClipBpe } from './bpe-train.js';
import { initClipWeights, sincos2d, writeClipModel, type ClipInitConfig } from './init.js';

const CONFIG: ClipInitConfig = {
  text: { vocabSize: 0, hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, maxPositions: 16 },
  vision: { hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, imageSize: 16, patchSize: 8 },
  projectionDim: 8,
};
const CAPTIONS = ['a red square', 'a green square', 'a blue square', 'a white square'];
const COLOURS = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]];

describe('a fresh CLIPModel folder', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'clip-init-'));
    await writeClipModel(dir, CONFIG, trainClipBpe(CAPTIONS, { numMerges: 50 }), { seed: 1 });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('initialises as HF does (statistics) and deterministically', () => {
    const cfg = { ...CONFIG, text: { ...CONFIG.text, vocabSize: 600 } };
    const w = initClipWeights(cfg, 3);
    const std = (name: string) => {
      const d = w[name].data as Float32Array;
      const m = d.reduce((a, b) => a + b, 0) / d.length;
      return Math.sqrt(d.reduce((a, b) => a + (b - m) ** 2, 0) / d.length);
    };
    expect(std('text_model.embeddings.token_embedding.weight')).toBeCloseTo(0.02, 2);
    expect(std('text_model.encoder.layers.0.mlp.fc1.weight')).toBeCloseTo((2 * 16) ** -0.5, 1);
    expect(Array.from(w['text_model.final_layer_norm.weight'].data as Float32Array)).toEqual(Array(16).fill(1));
    expect((w.logit_scale.data as Float32Array)[0]).toBeCloseTo(2.6592, 5);
    expect(w.logit_scale.shape).toEqual([]);
    expect(initClipWeights(cfg, 3)['visual_projection.weight'].data).toEqual(w['visual_projection.weight'].data);
    expect(initClipWeights(cfg, 4)['visual_projection.weight'].data).not.toEqual(w['visual_projection.weight'].data);
  });

  it('can start the patch positions from a scaled 2-D sin/cos table (class row as HF)', () => {
    const cfg = { ...CONFIG, text: { ...CONFIG.text, vocabSize: 600 } };
    const hf = initClipWeights(cfg, 3)['vision_model.embeddings.position_embedding.weight'];
    const w = initClipWeights({ ...cfg, vision: { ...cfg.vision, positionInit: { kind: 'sincos-2d', scale: 0.5 } } }, 3)['vision_model.embeddings.position_embedding.weight'];
    expect(w.shape).toEqual([5, 16]); // 2 x 2 patches + class
    const pe = w.data as Float32Array;
    expect(Array.from(pe.subarray(0, 16))).toEqual(Array.from((hf.data as Float32Array).subarray(0, 16)));
    // Patch (row 1, column 0) is table row 3 (after the class row and row 0): column half sin 0 / cos 0, row half sin(1 * omega_k) / cos(1 * omega_k).
    const q = 4, row = pe.subarray(3 * 16, 4 * 16);
    for (let k = 0; k < q; k++) {
      const omega = 10000 ** (-k / q);
      expect(row[k]).toBeCloseTo(0, 6);
      expect(row[q + k]).toBeCloseTo(0.5, 6);
      expect(row[2 * q + k]).toBeCloseTo(0.5 * Math.sin(omega), 6);
      expect(row[3 * q + k]).toBeCloseTo(0.5 * Math.cos(omega), 6);
    }
    expect(() => sincos2d(2, 18)).toThrow(/divisible by 4/);
  });

  it('loads as a CLIPModel and classifies', async () => {
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { text_config: { vocab_size: number; eos_token_id: number } };
    expect(config.text_config.eos_token_id).toBe(config.text_config.vocab_size - 1);
    const clip = await ClipModel.load(dir, { threads: 1 });
    try {
      expect(clip.tokenizer.maxLength).toBe(16);
      const png = await sharp({ create: { width: 20, height: 16, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toBuffer();
      const r = await clip.classify(png, CAPTIONS);
      expect(r.reduce((s, x) => s + x.prob, 0)).toBeCloseTo(1, 6);
    } finally {
      await clip.dispose();
    }
  });

  it('contrastive training from scratch learns the pairs (Adam, 60 steps on 4 colour/caption pairs)', async () => {
    const clip = await loadClip(dir);
    try {
      const trainable = new Set(Object.keys(initClipWeights({ ...CONFIG, text: { ...CONFIG.text, vocabSize: clip.text.config.vocabSize } })));
      const g = new GraphBuilder('clip_train', trainable);
      const pixels = g.input('pixel_values', 'float32', ['batch', 3, 16, 16]);
      const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
      const { imageEmbeds, textEmbeds } = clipEmbedsInto(g, pixels, ids, clip);
      const { loss } = clipContrastiveLossInto(g, imageEmbeds, textEmbeds, g.param(clip.heads.logitScaleWeight));
      const params = g.inputs.filter((v) => trainable.has(v.name));
      expect(params).toHaveLength(trainable.size);
      const grads = addBackward(g, loss, params);
      g.output(loss, 'loss');
      params.forEach((p, i) => g.output(grads.get(p)!, `g${i}`));
      const session = await createSession(exportOnnx(g.build()), { threads: 1 });
      const px = new Float32Array(4 * 3 * 256);
      COLOURS.forEach((c, b) => c.forEach((v, ch) => px.fill((v - 0.5) * 2, (b * 3 + ch) * 256, (b * 3 + ch + 1) * 256)));
      const tok = clip.tokenizer.encodeBatch(CAPTIONS);
      const state = await Promise.all(params.map(async (p) => {
        const t = await readFloatWeight(clip.source, p.name);
        return { value: Float32Array.from(t.data), dims: t.shape, m: new Float32Array(t.data.length), v: new Float32Array(t.data.length) };
      }));
      const losses: number[] = [];
      const lr = 1e-2, b1 = 0.9, b2 = 0.999;
      for (let step = 1; step <= 60; step++) {
        const feeds: Feeds = {
          pixel_values: { dtype: 'float32', dims: [4, 3, 16, 16], data: px },
          input_ids: { dtype: 'int64', dims: [tok.batch, tok.length], data: tok.ids },
        };
        params.forEach((p, i) => (feeds[p.name] = { dtype: 'float32', dims: state[i].dims, data: state[i].value }));
        const out = await session.run(feeds);
        losses.push((out.loss.data as Float32Array)[0]);
        state.forEach((s, i) => {
          const gr = out[`g${i}`].data as Float32Array;
          for (let j = 0; j < gr.length; j++) {
            s.m[j] = b1 * s.m[j] + (1 - b1) * gr[j];
            s.v[j] = b2 * s.v[j] + (1 - b2) * gr[j] * gr[j];
            s.value[j] -= (lr * (s.m[j] / (1 - b1 ** step))) / (Math.sqrt(s.v[j] / (1 - b2 ** step)) + 1e-8);
          }
        });
      }
      await session.release();
      expect(losses[0]).toBeGreaterThan(1.0); // about ln 4 at initialisation
      expect(losses[losses.length - 1]).toBeLessThan(0.1);
    } finally {
      await clip.source.close();
    }
  });
});
