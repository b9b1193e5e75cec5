import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipModel } from '@mobillama/vision';
import { Rng } from '../rng.js';
import { writeShapesDataset, type LlavaEntry } from '../synthetic/index.js';
import { groupPairs, hardNegativeBatch, pretrainClip, wordMask } from './clip-pretrain.js';

// 5 colour groups of 8 pairs; captions unique except one duplicate pair in group "g0".
const pairs = Array.from({ length: 40 }, (_, i) => ({ caption: i === 1 ? 'caption 0' : `caption ${i}`, group: `g${i % 5}` }));

describe('hard-negative CLIP batches', () => {
  it('groupPairs keeps each group in index order; a pair without a group is its own', () => {
    const g = groupPairs([...pairs, { caption: 'lonely' }]);
    expect(g.get('g0')).toEqual([0, 5, 10, 15, 20, 25, 30, 35]);
    expect(g.get('40')).toEqual([40]);
    expect(g.size).toBe(6);
  });

  it('fills a batch with runs of ≤ perGroup look-alikes, no caption twice, deterministically', () => {
    const groups = groupPairs(pairs);
    const a = hardNegativeBatch(pairs, groups, 16, 4, Rng.seeded(7, 'clip-hard'));
    const b = hardNegativeBatch(pairs, groups, 16, 4, Rng.seeded(7, 'clip-hard'));
    expect(a).toEqual(b);
    expect(a).toHaveLength(16);
    expect(new Set(a.map((i) => pairs[i].caption)).size).toBe(16);
    // Look-alikes sit together: the batch is runs of one group, each pass adding ≤ 4 (two
    // passes on the same group can join into one run of ≤ 8).
    const runs: number[] = [];
    a.forEach((i, j) => { if (j > 0 && pairs[i].group === pairs[a[j - 1]].group) runs[runs.length - 1]++; else runs.push(1); });
    expect(Math.max(...runs)).toBeGreaterThanOrEqual(4);
    expect(Math.max(...runs)).toBeLessThanOrEqual(8);
  });

  it('comes out short, not stuck, when there are fewer distinct captions than the batch', () => {
    const few = Array.from({ length: 10 }, (_, i) => ({ caption: `c${i % 3}`, group: 'all' }));
    expect(hardNegativeBatch(few, groupPairs(few), 8, 4, Rng.seeded(1)).map((i) => few[i].caption).sort()).toEqual(['c0', 'c1', 'c2']);
  });
});

describe('pretrainClip', () => {
  const dirs: string[] = [];
  afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

  it('fits a few image-caption pairs contrastively and writes a CLIPModel folder that loads and tells them apart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clip-pretrain-'));
    dirs.push(dir);
    await writeShapesDataset({ out: join(dir, 'data'), count: 8, seed: 5, qaPerImage: 0 });
    const caps = JSON.parse(await readFile(join(dir, 'data', 'captions.json'), 'utf8')) as LlavaEntry[];
    const pairs = caps.map((e) => ({ image: join(dir, 'data', 'images', e.image!), caption: e.conversations[1].value }));
    const config = {
      text: { vocabSize: 0, hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, maxPositions: 32 },
      vision: { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, imageSize: 64, patchSize: 16 },
      projectionDim: 32,
    };
    const run = (out: string, tokenLossWeight = 0) => pretrainClip({ config, pairs, out, steps: 80, batchSize: 8, learningRate: 5e-3, seed: 3, threads: 2, tokenLossWeight });
    const r = await run(join(dir, 'clip'));
    expect(r.losses).toHaveLength(80);
    const first = r.losses[0], last = r.losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
    expect(first).toBeCloseTo(Math.log(8), 0); // 8 pairs in a batch, untrained: chance
    expect(last).toBeLessThan(0.25 * first);
    expect((await run(join(dir, 'again'))).losses).toEqual(r.losses); // deterministic from the seed
    // The folder is a CLIPModel: zero-shot over the training captions picks each image's own.
    const m = await ClipModel.load(join(dir, 'clip'), { threads: 1 });
    try {
      const labels = pairs.map((p) => p.caption);
      let right = 0;
      for (const p of pairs) {
        const best = (await m.classify(p.image, labels)).reduce((a, b) => (b.prob > a.prob ? b : a));
        if (best.label === p.caption) right++;
      }
      expect(right).toBeGreaterThanOrEqual(6);
    } finally {
      await m.dispose();
    }
    // With FILIP's token-wise loss added: the same start plus a second InfoNCE (~ln 8 more), fitted too.
    const t = await run(join(dir, 'token'), 1);
    expect(t.losses[0] - first).toBeGreaterThan(1);
    expect(t.losses[0] - first).toBeLessThan(3);
    expect(t.losses.slice(-5).reduce((a, b) => a + b, 0) / 5).toBeLessThan(0.25 * t.losses[0]);
    // Bad inputs: a negative weight, and a caption with no words to match.
    await expect(run(join(dir, 'bad'), -1)).rejects.toThrow(/tokenLossWeight must be a number ≥ 0, got -1/);
    await expect(pretrainClip({ config, pairs: pairs.map((p, i) => (i === 3 ? { ...p, caption: '' } : p)), out: join(dir, 'bad'), steps: 1, batchSize: 8,
      learningRate: 5e-3, seed: 3, threads: 2, tokenLossWeight: 1 })).rejects.toThrow(/caption "" has no words for the token-wise loss/);
  });

  it('the token-wise loss matches the words only: not BOS, EOS or padding', () => {
    expect(Array.from(wordMask([4, 2, 5], 5))).toEqual([0, 1, 1, 0, 0, /**/ 0, 0, 0, 0, 0, /**/ 0, 1, 1, 1, 0]);
  });
});
