import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GraphBuilder, addBackward, createSession, exportOnnx, gradcheck, readFloatWeight,
  type Feeds, type HostTensor, type WeightSource,
} from '@mobillama/core';
import { clipEmbedsInto, loadClip } from './clip-model.js';
import { clipContrastiveLossInto, clipLogitsInto, tokenwiseContrastiveLossInto } from './contrastive.js';
import { CLIP_TEXT_FIXTURE, readGolden, relErr } from './text/testing.js';

let golden: Record<string, HostTensor>;
beforeAll(async () => {
  golden = await readGolden();
});

const f32 = (name: string) => golden[name].data as Float32Array;

describe('clipContrastiveLossInto', () => {
  it('equals HF clip_loss on random embeddings (PyTorch golden)', async () => {
    const g = new GraphBuilder('clip_loss');
    const img = g.input('img', 'float32', ['b', 16]);
    const txt = g.input('txt', 'float32', ['b', 16]);
    const scale = g.input('scale', 'float32', []);
    const { loss, logitsPerImage, logitsPerText } = clipContrastiveLossInto(g, img, txt, scale);
    g.output(loss, 'loss');
    g.output(logitsPerImage, 'lpi');
    g.output(logitsPerText, 'lpt');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const out = await s.run({
      img: { dtype: 'float32', dims: [4, 16], data: f32('loss_image_embeds') },
      txt: { dtype: 'float32', dims: [4, 16], data: f32('loss_text_embeds') },
      scale: { dtype: 'float32', dims: [], data: f32('loss_logit_scale') },
    });
    await s.release();
    expect(out.loss.dims).toEqual([]);
    expect(Math.abs((out.loss.data as Float32Array)[0] - f32('loss')[0])).toBeLessThan(1e-5);
    // logits_per_image is logits_per_text transposed.
    const lpi = out.lpi.data as Float32Array, lpt = out.lpt.data as Float32Array;
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) expect(lpi[i * 4 + j]).toBe(lpt[j * 4 + i]);
  });

  it('gradients match finite differences (embeddings and logit scale, float64)', async () => {
    const r = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 1.3);
    const results = await gradcheck((g) => {
      const img = g.input('img', 'float32', [3, 5]);
      const txt = g.input('txt', 'float32', [3, 5]);
      const scale = g.input('scale', 'float32', [1]);
      return { loss: clipContrastiveLossInto(g, img, txt, scale).loss, wrt: [img, txt, scale] };
    }, {
      img: { dims: [3, 5], data: r(15, 1) },
      txt: { dims: [3, 5], data: r(15, 2) },
      scale: { dims: [1], data: [0.8] },
    });
    for (const res of results) expect(res.relError, res.name).toBeLessThan(1e-6);
    // and without normalisation (embeddings already on the sphere)
    const raw = await gradcheck((g) => {
      const img = g.input('img', 'float32', [2, 3]);
      const txt = g.input('txt', 'float32', [2, 3]);
      const scale = g.input('scale', 'float32', []);
      return { loss: clipContrastiveLossInto(g, img, txt, scale, { normalize: false }).loss, wrt: [img, txt, scale] };
    }, { img: { dims: [2, 3], data: r(6, 3) }, txt: { dims: [2, 3], data: r(6, 4) }, scale: { dims: [], data: [0.3] } });
    for (const res of raw) expect(res.relError, res.name).toBeLessThan(1e-6);
  });

  it('clipLogitsInto works for unequal image and text counts (zero-shot)', async () => {
    const g = new GraphBuilder('logits');
    const img = g.input('img', 'float32', [1, 16]);
    const txt = g.input('txt', 'float32', [4, 16]);
    g.output(clipLogitsInto(g, img, txt, g.scalar(Math.log(2))).logitsPerImage, 'lpi');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const out = await s.run({
      img: { dtype: 'float32', dims: [1, 16], data: f32('image_embeds') },
      txt: { dtype: 'float32', dims: [4, 16], data: f32('text_embeds') },
    });
    await s.release();
    const want = Array.from(f32('logits_per_image'), (x) => (x / Math.exp(2.6592)) * 2);
    expect(relErr(out.lpi.data as Float32Array, want)).toBeLessThan(1e-5);
  });
});

describe('tokenwiseContrastiveLossInto (FILIP)', () => {
  const B = 3, N = 4, T = 5, P = 6;
  const r = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 1.7);
  const mask = [0, 1, 1, 1, 0, /**/ 0, 1, 0, 0, 0, /**/ 0, 1, 1, 0, 0];

  /** The paper's equations, written out in plain loops. */
  function reference(patches: number[], tokens: number[], words: number[], logScale: number): number {
    const unit = (x: number[], rows: number) => {
      const out = x.slice();
      for (let k = 0; k < rows; k++) {
        const n = Math.hypot(...x.slice(k * P, (k + 1) * P));
        for (let d = 0; d < P; d++) out[k * P + d] /= n;
      }
      return out;
    };
    const v = unit(patches, B * N), w = unit(tokens, B * T);
    const dot = (i: number, p: number, j: number, t: number) => { let s = 0; for (let d = 0; d < P; d++) s += v[(i * N + p) * P + d] * w[(j * T + t) * P + d]; return s; };
    const i2t: number[][] = [], t2i: number[][] = [];
    for (let i = 0; i < B; i++) {
      i2t.push([]); t2i.push([]);
      for (let j = 0; j < B; j++) {
        let a = 0;
        for (let p = 0; p < N; p++) { let m = -Infinity; for (let t = 0; t < T; t++) if (words[j * T + t]) m = Math.max(m, dot(i, p, j, t)); a += m / N; }
        let b = 0, nw = 0;
        for (let t = 0; t < T; t++) if (words[j * T + t]) { let m = -Infinity; for (let p = 0; p < N; p++) m = Math.max(m, dot(i, p, j, t)); b += m; nw++; }
        i2t[i].push(a); t2i[i].push(b / nw);
      }
    }
    const sc = Math.exp(logScale);
    const ce = (row: number[], k: number) => { const z = row.map((x) => x * sc), mx = Math.max(...z); return Math.log(z.reduce((s, x) => s + Math.exp(x - mx), 0)) + mx - z[k]; };
    let li = 0, lt = 0;
    for (let i = 0; i < B; i++) li += ce(i2t[i], i) / B;
    for (let j = 0; j < B; j++) lt += ce(i2t.map((_, i) => t2i[i][j]), j) / B;
    return (li + lt) / 2;
  }

  it('loss and gradients equal the PyTorch reference (clip_text.filip_loss_from_embeds, golden)', async () => {
    const g = new GraphBuilder('filip_golden');
    const pe = g.input('pe', 'float32', [3, 4, 6]), te = g.input('te', 'float32', [3, 5, 6]);
    const m = g.input('m', 'float32', [3, 5]), sc = g.input('sc', 'float32', []);
    const { loss } = tokenwiseContrastiveLossInto(g, pe, te, m, sc);
    const grads = addBackward(g, loss, [pe, te]);
    g.output(loss, 'loss');
    g.output(grads.get(pe)!, 'gp');
    g.output(grads.get(te)!, 'gt');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const out = await s.run({
      pe: { dtype: 'float32', dims: [3, 4, 6], data: f32('filip_patch_embeds') },
      te: { dtype: 'float32', dims: [3, 5, 6], data: f32('filip_token_embeds') },
      m: { dtype: 'float32', dims: [3, 5], data: f32('filip_token_mask') },
      sc: { dtype: 'float32', dims: [], data: f32('filip_logit_scale') },
    });
    await s.release();
    expect(Math.abs((out.loss.data as Float32Array)[0] - f32('filip_loss')[0])).toBeLessThan(1e-5);
    expect(relErr(out.gp.data as Float32Array, f32('filip_grad_patch'))).toBeLessThan(1e-4);
    expect(relErr(out.gt.data as Float32Array, f32('filip_grad_token'))).toBeLessThan(1e-4);
  });

  it('equals the token-wise similarity and symmetric InfoNCE written out in loops; padding plays no part', async () => {
    const g = new GraphBuilder('filip');
    const pe = g.input('pe', 'float32', [B, N, P]), te = g.input('te', 'float32', [B, T, P]);
    const m = g.input('m', 'float32', [B, T]), sc = g.input('sc', 'float32', [1]);
    g.output(tokenwiseContrastiveLossInto(g, pe, te, m, sc).loss, 'loss');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const run = async (pd: number[], td: number[]) => (await s.run({
      pe: { dtype: 'float32', dims: [B, N, P], data: Float32Array.from(pd) },
      te: { dtype: 'float32', dims: [B, T, P], data: Float32Array.from(td) },
      m: { dtype: 'float32', dims: [B, T], data: Float32Array.from(mask) },
      sc: { dtype: 'float32', dims: [1], data: Float32Array.of(1.5) },
    })).loss.data[0] as number;
    const pd = r(B * N * P, 5), td = r(B * T * P, 6);
    const want = reference(pd, td, mask, 1.5);
    expect(Math.abs(await run(pd, td) - want)).toBeLessThan(1e-5);
    // A masked token (text 1, position 3) set to a strong match for every patch changes nothing.
    const td2 = td.slice();
    for (let d = 0; d < P; d++) td2[(1 * T + 3) * P + d] = pd[d] * 10;
    expect(Math.abs(await run(pd, td2) - want)).toBeLessThan(1e-5);
    await s.release();
  });

  it('gradients match finite differences (patches, tokens, logit scale; float64)', async () => {
    const results = await gradcheck((g) => {
      const pe = g.input('pe', 'float32', [B, N, P]), te = g.input('te', 'float32', [B, T, P]);
      const m = g.input('m', 'float32', [B, T]), sc = g.input('sc', 'float32', [1]);
      return { loss: tokenwiseContrastiveLossInto(g, pe, te, m, sc).loss, wrt: [pe, te, sc] };
    }, {
      pe: { dims: [B, N, P], data: r(B * N * P, 7) },
      te: { dims: [B, T, P], data: r(B * T * P, 8) },
      m: { dims: [B, T], data: mask },
      sc: { dims: [1], data: [0.9] },
    });
    for (const res of results) expect(res.relError, res.name).toBeLessThan(1e-6);
  });
});

describe('a CLIP contrastive training step on the clip-text fixture', () => {
  let src: WeightSource;
  afterAll(async () => {
    await src?.close();
  });

  it('loss and weight gradients through both towers match PyTorch autograd', async () => {
    const clip = await loadClip(CLIP_TEXT_FIXTURE);
    src = clip.source;
    const checked: Record<string, string> = {
      grad_text_projection: 'text_projection.weight',
      grad_visual_projection: 'visual_projection.weight',
      grad_logit_scale: 'logit_scale',
      grad_text_q_proj0: 'text_model.encoder.layers.0.self_attn.q_proj.weight',
      grad_text_final_ln: 'text_model.final_layer_norm.weight',
      grad_class_embedding: 'vision_model.embeddings.class_embedding',
    };
    // Everything trainable, as contrastive pretraining from scratch trains it.
    const trainable = new Set(src.names().filter((n) => !n.endsWith('position_ids')));
    const g = new GraphBuilder('clip_train', trainable);
    const pixels = g.input('pixel_values', 'float32', ['batch', 3, 32, 32]);
    const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
    const { imageEmbeds, textEmbeds } = clipEmbedsInto(g, pixels, ids, clip);
    const { loss } = clipContrastiveLossInto(g, imageEmbeds, textEmbeds, g.param(clip.heads.logitScaleWeight));
    const params = g.inputs.filter((v) => trainable.has(v.name));
    expect(params.length).toBe(trainable.size);
    const grads = addBackward(g, loss, params);
    g.output(loss, 'loss');
    for (const name of Object.values(checked)) g.output(grads.get(params.find((p) => p.name === name)!)!, `grad:${name}`);
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const feeds: Feeds = {
      pixel_values: { dtype: 'float32', dims: golden.train_pixel_values.shape, data: f32('train_pixel_values') },
      input_ids: { dtype: 'int64', dims: golden.train_ids.shape, data: golden.train_ids.data as BigInt64Array },
    };
    for (const p of params) {
      const t = await readFloatWeight(src, p.name);
      feeds[p.name] = { dtype: 'float32', dims: t.shape, data: t.data };
    }
    const out = await s.run(feeds);
    await s.release();
    expect(Math.abs((out.loss.data as Float32Array)[0] - f32('train_loss')[0])).toBeLessThan(1e-5);
    for (const [k, name] of Object.entries(checked)) {
      expect(relErr(out[`grad:${name}`].data as Float32Array, f32(k)), name).toBeLessThan(1e-4);
    }
  });
});
