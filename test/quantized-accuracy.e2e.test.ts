import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { quantizedAccuracyDrops } from '../packages/pipeline/src/testing/quantized-accuracy.js';
import { MICRO_MODEL, ROOT, microDataRecipe, runCli, writeMicroWorldShapes } from './cli-helpers.js';

// Quantized at load, the shipped micro model may lose at most 1 point of held-out exact-match
// accuracy at int8 and 3 at int4. The held-out split is regenerated exactly as the recipe made
// it (seed, size and world from the model's training.json): 600 questions about images it
// never trained on. (On the 150 that ship in heldout/, one question is 0.67 points: too
// coarse for a 1-point floor.)

describe('the shipped micro model, quantized at load', () => {
  it('loses ≤ 1 point at int8 (q8) and ≤ 3 points at int4 (q4) on the held-out split', async () => {
    const d = await microDataRecipe();
    const dir = await mkdtemp(join(tmpdir(), 'micro-heldout-'));
    try {
      await writeMicroWorldShapes(dir, d.heldoutImages, d.heldoutSeed, d.heldoutQaPerImage);
      const r = await quantizedAccuracyDrops({ model: MICRO_MODEL, threads: 2 }, { data: join(dir, 'qa.json'), imageFolder: join(dir, 'images') });
      console.info(r.map((x) => `${x.format} ${(100 * x.accuracy).toFixed(1)}% (drop ${x.dropPoints.toFixed(1)})`).join(', '));
      expect(r.map((x) => x.count)).toEqual([600, 600, 600]);
      expect(r[1].dropPoints).toBeLessThanOrEqual(1);
      expect(r[2].dropPoints).toBeLessThanOrEqual(3);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 600_000);
});

describe('quantizedAccuracyDrops (on the tiny fixture, no floors: its weights are random)', () => {
  it('evaluates fp32, int8 and int4 on the same items', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qacc-'));
    expect((await runCli(['data', 'shapes', '--out', dir, '--count', '2', '--seed', '5', '--size', '32'])).code).toBe(0);
    const r = await quantizedAccuracyDrops(
      { model: `${ROOT}packages/pipeline/fixtures/tiny-llava`, template: 'mobillama_chat', threads: 1 },
      { data: join(dir, 'qa.json'), imageFolder: join(dir, 'images'), maxNewTokens: 4 },
    );
    expect(r.map((x) => x.format)).toEqual(['f32', 'q8', 'q4']);
    for (const x of r) {
      expect(x.count).toBeGreaterThan(0);
      expect(x.dropPoints).toBeCloseTo(100 * (r[0].accuracy - x.accuracy), 9);
    }
  }, 120_000);
});
