import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { quantizedAccuracyDrops } from '../packages/pipeline/src/testing/quantized-accuracy.js';

// The floors on the shipped micro model: held-out accuracy drops ≤ 1 point at int8
// and ≤ 3 at int4. The micro model (models/mobillama-v-micro, from `pnpm train:micro`) and
// its held-out set do not exist yet; this runs once they do. Override the paths with
// MOBILLAMA_MICRO_MODEL and MOBILLAMA_MICRO_HELDOUT (a LLaVA-format eval file with images/ beside it).
const MODEL = process.env.MOBILLAMA_MICRO_MODEL ?? fileURLToPath(new URL('../models/mobillama-v-micro', import.meta.url));
const HELDOUT = process.env.MOBILLAMA_MICRO_HELDOUT ?? join(MODEL, 'heldout', 'data.json');
const ready = existsSync(join(MODEL, 'config.json')) && existsSync(HELDOUT);

describe.skipIf(!ready)('quantized micro model: held-out accuracy floors', () => {
  it('drops at most 1 point at int8 and 3 at int4', async () => {
    const r = await quantizedAccuracyDrops({ model: MODEL, threads: 2 }, { data: HELDOUT, imageFolder: join(HELDOUT, '..', 'images') });
    console.info(r.map((x) => `${x.format}: ${(100 * x.accuracy).toFixed(1)}% (drop ${x.dropPoints.toFixed(1)} points, n=${x.count})`).join('\n'));
    expect(r.find((x) => x.format === 'q8')!.dropPoints).toBeLessThanOrEqual(1);
    expect(r.find((x) => x.format === 'q4')!.dropPoints).toBeLessThanOrEqual(3);
  }, 1_800_000);
});

describe('quantizedAccuracyDrops (on the tiny fixture, no floors: its weights are random)', () => {
  it('evaluates fp32, int8 and int4 on the same items', async () => {
    const { mkdtemp } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { ROOT, runCli } = await import('./cli-helpers.js');
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
