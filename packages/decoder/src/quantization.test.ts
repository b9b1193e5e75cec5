import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, readJsonFile, type WeightFormat } from '@mobillama/core';
import { loadInferenceDecoder } from './inference-weights.js';
import { KV_CHUNK } from './kv-cache.js';
import { DecoderModel, type DecoderLoadOptions } from './model.js';
import { quantizeDecoderFolder } from './quantize.js';
import { writeRandomDecoderCheckpoint } from './testing/random-checkpoint.js';
import { nextTokenAgreement, seededPrompts, type AgreementReport } from './testing/quant-quality.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const DIRS = ['mobillama-tiny-bin', 'llama-gqa-st', 'mobillama-bf16-sharded'] as const;

let tmp: string;
beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'mobillama-quant-')); });
afterAll(() => rm(tmp, { recursive: true, force: true }));

/**
 * Floors for next-token agreement with fp32 on the golden checkpoints. These are random
 * tiny models (hidden 64, vocab 320) whose next-token distributions are nearly flat, so a
 * small perturbation flips the top token: the floors are loose for int4 (weights error
 * ≈ 1/8 of a block's range) and say more as regression guards than as quality claims.
 * 128 positions per case, so top-1 moves by a few points with the sample. Measured (README
 * "Quantization"): f16 1.00 / KL ≤ 4e-6; q8 0.84–0.92 / 5e-3; q4 0.38–0.48 / 0.24–0.36.
 */
const FLOORS: Record<string, { top1: number; meanKl: number }> = {
  'f32, gqa attention': { top1: 1, meanKl: 1e-9 },
  'f32, auto attention (If)': { top1: 1, meanKl: 1e-9 },
  'f16 checkpoint': { top1: 0.98, meanKl: 1e-4 },
  'q8 checkpoint': { top1: 0.78, meanKl: 0.012 },
  'q8 at load': { top1: 0.78, meanKl: 0.012 },
  'q4 checkpoint': { top1: 0.33, meanKl: 0.45 },
  'q4 at load': { top1: 0.33, meanKl: 0.45 },
  'q4 at load, zero points': { top1: 0.3, meanKl: 0.45 },
};

describe.each(DIRS)('quantized paths against fp32: %s', (dir) => {
  const path = `${FIXTURES}${dir}`;
  let reference: DecoderModel;
  const report: Record<string, AgreementReport> = {};
  beforeAll(async () => { reference = await DecoderModel.load(path, { threads: 1 }); });
  afterAll(async () => {
    await reference.dispose();
    const rows = Object.entries(report).map(([k, r]) => `  ${k.padEnd(26)} top-1 ${r.top1.toFixed(3)}  mean KL ${r.meanKl.toExponential(2)}  (${r.positions} positions)`);
    console.info(`${dir}: next-token agreement with fp32\n${rows.join('\n')}`);
  });

  const checkpoint = async (format: WeightFormat) => {
    const out = join(tmp, `${dir}-${format}`);
    await quantizeDecoderFolder(path, out, format);
    return out;
  };
  const variants: [string, () => Promise<[string, DecoderLoadOptions]>][] = [
    ['f32, gqa attention', async () => [path, { attention: 'gqa' }]],
    ['f32, auto attention (If)', async () => [path, { attention: 'auto' }]],
    ['f16 checkpoint', async () => [await checkpoint('f16'), {}]],
    ['q8 checkpoint', async () => [await checkpoint('q8'), {}]],
    ['q8 at load', async () => [path, { quantize: 'q8' }]],
    ['q4 checkpoint', async () => [await checkpoint('q4'), {}]],
    ['q4 at load', async () => [path, { quantize: 'q4' }]],
    ['q4 at load, zero points', async () => [path, { quantize: 'q4', q4: { zeroPoints: true } }]],
  ];
  it.each(variants)('%s holds its floors', async (name, make) => {
    const [p, opts] = await make();
    const model = await DecoderModel.load(p, { threads: 1, ...opts });
    try {
      const r = await nextTokenAgreement(reference, model, seededPrompts(4, 20, reference.config.vocabSize, 7), 12);
      report[name] = r;
      expect(r.top1).toBeGreaterThanOrEqual(FLOORS[name].top1);
      expect(r.meanKl).toBeLessThanOrEqual(FLOORS[name].meanKl);
    } finally {
      await model.dispose();
    }
  });
});

/** Largest |x − ref| over the largest |ref|. */
function maxRelativeDiff(x: Float32Array, ref: Float32Array): number {
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(x[i] - ref[i]));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  return maxDiff / maxRef;
}

describe('quantized checkpoints', () => {
  const src = `${FIXTURES}mobillama-tiny-bin`;

  it.each(['q8', 'q4'] as const)('%s: the layout, the config field, the shared FFN once, weights left in the file', async (format) => {
    const out = join(tmp, `layout-${format}`);
    await quantizeDecoderFolder(src, out, format);
    const cfg = await readJsonFile<{ quantization: { weights: string; block_size?: number }; ffn_groups: number[] }>(join(out, 'config.json'));
    expect(cfg.quantization.weights).toBe(format);
    expect(cfg.ffn_groups).toEqual([0, 0, 0]);
    const st = await openSafetensors(join(out, 'model.safetensors'));
    const names = st.names();
    expect(names.filter((n) => n.includes('mlp.gate_proj'))).toEqual(['model.layers.0.mlp.gate_proj.qweight', 'model.layers.0.mlp.gate_proj.scales']);
    expect(names.some((n) => n.endsWith('proj.weight'))).toBe(false);
    const q = st.info('model.layers.0.self_attn.q_proj.qweight');
    expect(q.dtype).toBe(format === 'q8' ? 'I8' : 'U8');
    expect(q.shape).toEqual(format === 'q8' ? [64, 64] : [64, 2, 16]);
    expect(st.info('model.embed_tokens.weight').dtype).toBe('F16');
    await st.close();
    const inf = await loadInferenceDecoder(out);
    expect(inf.format).toBe(format);
    expect(inf.config.ffnOfLayer).toEqual([0, 0, 0]);
    const q0 = inf.weights.layers[0].q;
    expect(q0.kind).toBe(format);
    if (q0.kind !== 'float') expect(q0.qweight.data.kind).toBe('file');
    await inf.source.close();
  });

  it.each(['q8', 'q4'] as const)('%s: the written checkpoint and quantizing at load are the same model (same logits)', async (format) => {
    const out = join(tmp, `same-${format}`);
    await quantizeDecoderFolder(src, out, format);
    const ids = [1, 73, 5, 38, 193, 231, 87];
    const run = async (m: DecoderModel) => {
      const r = await m.forward({ embeds: m.embed(ids), batch: 1, seq: 7, positionIds: [[0, 1, 2, 3, 4, 5, 6]], attentionMask: [[1, 1, 1, 1, 1, 1, 1]], logitsIndex: [0, 3, 6] });
      await m.dispose();
      return Array.from(r.logits);
    };
    expect(await run(await DecoderModel.load(out, { threads: 1 }))).toEqual(await run(await DecoderModel.load(src, { threads: 1, quantize: format })));
  });

  it('a checkpoint quantized to a format loads as stored; converting it again is refused', async () => {
    const out = join(tmp, 'again-q4');
    await quantizeDecoderFolder(src, out, 'q4');
    await expect(DecoderModel.load(out, { quantize: 'q8' })).rejects.toThrow(/already quantized \(q4\)/);
    await expect(quantizeDecoderFolder(out, join(tmp, 'again-q4-q8'), 'q8')).rejects.toThrow(/already quantized/);
    const m = await DecoderModel.load(out, { quantize: 'q4', threads: 1 });
    expect(m.format).toBe('q4');
    await m.dispose();
  });
});

describe('attention lowerings by head size', () => {
  it('head_dim 8: gqa falls back to the capacity lowering, auto runs its If without rotary in GQA, all agree', async () => {
    const dir = join(tmp, 'head8');
    await writeRandomDecoderCheckpoint(dir, {
      hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 96, ffnLayout: 'once', format: 'safetensors', dtype: 'F32', seed: 3, maxPositions: 64,
    });
    const ids = [1, 7, 8, 9, 10];
    const run = async (attention: 'capacity' | 'gqa' | 'auto') => {
      const m = await DecoderModel.load(dir, { threads: 1, attention });
      const a = await m.forward({ embeds: m.embed(ids), batch: 1, seq: 5, positionIds: [[0, 1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1, 1]], logitsIndex: [0, 4] });
      const b = await m.forward({ embeds: m.embed([11]), batch: 1, seq: 1, positionIds: [[5]], attentionMask: [[1, 1, 1, 1, 1, 1]], past: a.cache });
      const ran = m.attention;
      await m.dispose();
      return { ran, logits: [...a.logits, ...b.logits] };
    };
    const cap = await run('capacity'), gqa = await run('gqa'), auto = await run('auto');
    expect(gqa.ran).toBe('capacity');
    expect(auto.ran).toBe('auto');
    expect(gqa.logits).toEqual(cap.logits);
    auto.logits.forEach((x, i) => expect(x).toBeCloseTo(cap.logits[i], 4));
  });
});

describe('KV cache in capacity buffers', () => {
  let model: DecoderModel;
  beforeAll(async () => { model = await DecoderModel.load(`${FIXTURES}llama-gqa-st`, { threads: 1 }); });
  afterAll(() => model.dispose());
  const V = () => model.config.vocabSize;

  it('decoding token by token past a capacity step gives the logits of one prefill', async () => {
    const ids = seededPrompts(1, KV_CHUNK + 10, V(), 3)[0];
    const full = await model.forward({
      embeds: model.embed(ids), batch: 1, seq: ids.length, positionIds: [ids.map((_, i) => i)],
      attentionMask: [new Array<number>(ids.length).fill(1)], logitsIndex: ids.map((_, i) => i),
    });
    let cache = model.emptyCache(1);
    let maxDiff = 0, maxRef = 0;
    for (let t = 0; t < ids.length; t++) {
      const out = await model.forward({
        embeds: model.embed([ids[t]]), batch: 1, seq: 1, positionIds: [[t]], attentionMask: [new Array<number>(t + 1).fill(1)], past: cache,
      });
      cache = out.cache;
      for (let j = 0; j < V(); j++) {
        maxDiff = Math.max(maxDiff, Math.abs(out.logits[j] - full.logits[t * V() + j]));
        maxRef = Math.max(maxRef, Math.abs(full.logits[t * V() + j]));
      }
    }
    expect(cache.length).toBe(ids.length);
    expect(cache.keys[0].dims[2]).toBe(2 * KV_CHUNK);
    expect(maxDiff / maxRef).toBeLessThan(1e-5);
  });

  it('a padded batch prompt in chunks that grow the cache past a capacity step gives the logits of one prefill', async () => {
    // The cache grows in place chunk by chunk (kv-cache.ts): after the second chunk of 40 it
    // grows 64 → 128 slots, rows of both batch entries and all KV heads moving to the wider
    // stride, and the third chunk reads it there.
    const chunked = await DecoderModel.load(`${FIXTURES}llama-gqa-st`, { threads: 1, prefillChunk: 40 });
    try {
      const T = KV_CHUNK + 20;
      const ids = seededPrompts(2, T, V(), 13);
      const mask = [[0, 0, 0, ...new Array<number>(T - 3).fill(1)], new Array<number>(T).fill(1)];
      const pos = [[1, 1, 1, ...Array.from({ length: T - 3 }, (_, i) => i)], Array.from({ length: T }, (_, i) => i)];
      const input = { batch: 2, seq: T, positionIds: pos, attentionMask: mask, logitsIndex: [T - 1, 10, 39, 40, KV_CHUNK, 80, T - 2] };
      const a = await model.forward({ ...input, embeds: model.embed(ids.flat()) });
      const b = await chunked.forward({ ...input, embeds: chunked.embed(ids.flat()) });
      expect(b.cache.length).toBe(T);
      expect(b.cache.keys[0].dims[2]).toBe(2 * KV_CHUNK);
      expect(maxRelativeDiff(b.logits, a.logits)).toBeLessThan(1e-5);
    } finally {
      await chunked.dispose();
    }
  });

  it('a prompt run in chunks (prefillChunk) gives the logits of one prefill, padded batch included', async () => {
    const chunked = await DecoderModel.load(`${FIXTURES}llama-gqa-st`, { threads: 1, prefillChunk: 3 });
    try {
      const ids = seededPrompts(2, 9, V(), 11);
      const mask = [[0, 0, 1, 1, 1, 1, 1, 1, 1], new Array<number>(9).fill(1)];
      const pos = [[1, 1, 0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6, 7, 8]];
      const input = { batch: 2, seq: 9, positionIds: pos, attentionMask: mask, logitsIndex: [8, 2, 5, 6] };
      const a = await model.forward({ ...input, embeds: model.embed(ids.flat()) });
      const b = await chunked.forward({ ...input, embeds: chunked.embed(ids.flat()) });
      expect(b.cache.length).toBe(9);
      expect(maxRelativeDiff(b.logits, a.logits)).toBeLessThan(1e-5);
    } finally {
      await chunked.dispose();
    }
  });

  it('refuses a handle that a later step has already extended', async () => {
    const step = (past: ReturnType<DecoderModel['emptyCache']>, id: number) => model.forward({
      embeds: model.embed([id]), batch: 1, seq: 1, positionIds: [[past.length]], attentionMask: [new Array<number>(past.length + 1).fill(1)], past,
    });
    const a = await step(model.emptyCache(1), 5);
    await step(a.cache, 6);
    await expect(step(a.cache, 7)).rejects.toThrow(/already extended/);
  });

  it('accepts a cache built elsewhere ([B, KV, length, D] tensors) and a worker session gives the same logits', async () => {
    const ids = [1, 40, 41, 42, 43];
    const pre = await model.forward({ embeds: model.embed(ids), batch: 1, seq: 5, positionIds: [[0, 1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1, 1]] });
    const { numKvHeads: KV, headDim: D } = model.config;
    const cap = pre.cache.keys[0].dims[2];
    const trim = (t: (typeof pre.cache.keys)[number]) => {
      const data = new Float32Array(KV * 5 * D);
      for (let h = 0; h < KV; h++) data.set((t.data as Float32Array).subarray(h * cap * D, (h * cap + 5) * D), h * 5 * D);
      return { dtype: 'float32' as const, dims: [1, KV, 5, D], data };
    };
    const foreign = { batch: 1, length: 5, keys: pre.cache.keys.map(trim), values: pre.cache.values.map(trim) };
    const next = { embeds: model.embed([44]), batch: 1, seq: 1, positionIds: [[5]], attentionMask: [[1, 1, 1, 1, 1, 1]] };
    const a = await model.forward({ ...next, past: foreign });
    const worker = await DecoderModel.load(`${FIXTURES}llama-gqa-st`, { threads: 1, worker: true });
    try {
      const w0 = await worker.forward({ embeds: worker.embed(ids), batch: 1, seq: 5, positionIds: [[0, 1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1, 1]] });
      const w1 = await worker.forward({ ...next, embeds: worker.embed([44]), past: w0.cache });
      expect(Array.from(w1.logits)).toEqual(Array.from(a.logits));
    } finally {
      await worker.dispose();
    }
  });
});
