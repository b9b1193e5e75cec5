import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runTsx } from './cli-helpers.js';

// `pnpm train:micro --smoke`: every stage of the recipe that trains the shipped model (and of
// its --position-drill variant), at toy scale (seconds), so the script cannot rot between the
// (hours-long) real runs.

const trainMicro = (args: readonly string[]) => runTsx(join(ROOT, 'scripts', 'train-micro.ts'), args);

interface PositionEntry { image: string; conversations: { value: string }[] }

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

describe('scripts/train-micro.ts --smoke', () => {
  it('the shipped recipe: data, CLIP, LM, stage 1, stage 2, ship; LLaVA position ids', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'train-micro-'));
    dirs.push(dir);
    const out = join(dir, 'model');
    const r = await trainMicro(['--smoke', '--work', join(dir, 'work'), '--out', out, '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    const training = JSON.parse(await readFile(join(out, 'training.json'), 'utf8')) as { stages: Record<string, unknown> };
    expect(Object.keys(training.stages)).toEqual(['data', 'clip', 'lm', 'stage1', 'stage2']); // written while shipping
    expect(r.stderr).toContain('[ship] ');
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).rope_2d).toBeUndefined();
    expect(existsSync(join(dir, 'work', 'drill'))).toBe(false);
  }, 180_000);

  it('--position-drill: runs every stage, drills position per axis, and ships a loadable model folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'train-micro-'));
    dirs.push(dir);
    const work = join(dir, 'work'), out = join(dir, 'model');
    const r = await trainMicro(['--smoke', '--position-drill', '--work', work, '--out', out, '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    for (const s of ['data', 'clip', 'lm', 'stage1', 'stage2', 'drill', 'recover', 'recover-2', 'ship']) expect(r.stderr).toContain(`[${s}] `);
    for (const f of ['config.json', 'model.safetensors', 'mm_projector.safetensors', 'clip/config.json', 'training.json', 'heldout/data.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const training = JSON.parse(await readFile(join(out, 'training.json'), 'utf8')) as {
      stages: Record<string, { phases?: { name: string; questions: number }[] }>; recipe: { decoder: { rope2d?: boolean } };
    };
    expect(Object.keys(training.stages)).toEqual(['data', 'clip', 'lm', 'stage1', 'stage2', 'drill', 'recover', 'recover-2']); // written while shipping
    expect(training.stages.drill.phases!.map((p) => p.name)).toEqual(['left-right-2', 'left-right', 'above-below-2', 'either-or', 'both']);
    expect(training.recipe.decoder.rope2d).toBe(true);
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).rope_2d).toBe(true);
    // The drill sets ask what their phase says, about the train split's images.
    const lr = JSON.parse(await readFile(join(work, 'drill', 'left-right.json'), 'utf8')) as PositionEntry[];
    const eo = JSON.parse(await readFile(join(work, 'drill', 'either-or.json'), 'utf8')) as PositionEntry[];
    expect(lr.length).toBeGreaterThan(0);
    for (const e of lr) expect(e.conversations[1].value).toMatch(/^(Left|Right)\.$/);
    for (const e of eo) expect(e.conversations[1].value).toMatch(/^(Left|Right|Above|Below)\.$/);
    for (const e of [...lr, ...eo]) expect(existsSync(join(work, 'data', 'train', 'images', e.image)), e.image).toBe(true);
  }, 180_000);
});
