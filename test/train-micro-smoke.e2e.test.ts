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
const readJson = async <T>(file: string) => JSON.parse(await readFile(file, 'utf8')) as T;
/** stderr without npm's config warnings. */
const errorLines = (stderr: string) => stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'));
const SHIPPED = join(ROOT, 'models', 'mobillama-v-micro');

interface PositionEntry { image: string; conversations: { value: string }[] }
interface Training { stages: Record<string, { seconds: number; seconds_before_resume?: number; from_model?: string; phases?: { name: string; questions: number; seconds: number }[] }>; recipe: { decoder: { rope2d?: boolean } } }

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

describe('scripts/train-micro.ts --smoke', () => {
  it('the shipped recipe: data, CLIP, LM, stage 1, stage 2, ship; LLaVA position ids', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'train-micro-'));
    dirs.push(dir);
    const out = join(dir, 'model');
    const r = await trainMicro(['--smoke', '--work', join(dir, 'work'), '--out', out, '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    const training = await readJson<Training>(join(out, 'training.json'));
    expect(Object.keys(training.stages)).toEqual(['data', 'clip', 'lm', 'stage1', 'stage2']); // written while shipping
    expect(r.stderr).toContain('[ship] ');
    expect((await readJson<Record<string, unknown>>(join(out, 'config.json'))).rope_2d).toBeUndefined();
    expect(existsSync(join(dir, 'work', 'drill'))).toBe(false);
  }, 180_000);

  it('--position-drill: runs every stage, drills position per axis, ships a loadable model folder, and continues an interrupted drill', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'train-micro-'));
    dirs.push(dir);
    const work = join(dir, 'work'), out = join(dir, 'model');
    const r = await trainMicro(['--smoke', '--position-drill', '--work', work, '--out', out, '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    for (const s of ['data', 'clip', 'lm', 'stage1', 'stage2', 'drill', 'recover', 'recover-2', 'ship']) expect(r.stderr).toContain(`[${s}] `);
    for (const f of ['config.json', 'model.safetensors', 'mm_projector.safetensors', 'clip/config.json', 'training.json', 'heldout/data.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const training = await readJson<Training>(join(out, 'training.json'));
    expect(Object.keys(training.stages)).toEqual(['data', 'clip', 'lm', 'stage1', 'stage2', 'drill', 'recover', 'recover-2']); // written while shipping
    expect(training.stages.drill.phases!.map((p) => p.name)).toEqual(['left-right-2', 'left-right', 'above-below-2', 'either-or', 'both']);
    expect(training.recipe.decoder.rope2d).toBe(true);
    expect((await readJson<Record<string, unknown>>(join(out, 'config.json'))).rope_2d).toBe(true);
    // The drill sets ask what their phase says, about the train split's images.
    const lr = await readJson<PositionEntry[]>(join(work, 'drill', 'left-right.json'));
    const eo = await readJson<PositionEntry[]>(join(work, 'drill', 'either-or.json'));
    expect(lr.length).toBeGreaterThan(0);
    for (const e of lr) expect(e.conversations[1].value).toMatch(/^(Left|Right)\.$/);
    for (const e of eo) expect(e.conversations[1].value).toMatch(/^(Left|Right|Above|Below)\.$/);
    for (const e of [...lr, ...eo]) expect(existsSync(join(work, 'data', 'train', 'images', e.image)), e.image).toBe(true);

    // Interrupted in the drill: a run continues at the first phase that has no record.
    for (const f of ['drill/DONE', 'drill/either-or.phase.json', 'drill/both.phase.json', 'recover/DONE', 'recover-2/DONE', 'SHIPPED']) await rm(join(work, f));
    const again = await trainMicro(['--smoke', '--position-drill', '--work', work, '--out', out, '--threads', '1']);
    expect(again.code, again.stderr).toBe(0);
    for (const p of ['left-right-2', 'left-right', 'above-below-2']) expect(again.stderr).toContain(`drill ${p}: done before, skipped`);
    expect(again.stderr).toContain('drill either-or step 1/1');
    const resumed = (await readJson<Training>(join(out, 'training.json'))).stages.drill;
    expect(resumed.phases!.map((p) => p.name)).toEqual(['left-right-2', 'left-right', 'above-below-2', 'either-or', 'both']);
    // The stage's time counts the phases the first run finished.
    expect(resumed.seconds_before_resume).toBeCloseTo(resumed.phases!.slice(0, 3).reduce((t, p) => t + p.seconds, 0), 9);
    expect(resumed.seconds).toBeGreaterThan(resumed.seconds_before_resume!);
  }, 240_000);

  it('--position-drill --from-model: the drill starts from the shipped model, with 2-D rotary ids from there on', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'train-micro-'));
    dirs.push(dir);
    const work = join(dir, 'work'), out = join(dir, 'model');
    const r = await trainMicro(['--smoke', '--position-drill', '--from-model', SHIPPED, '--work', work, '--out', out, '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('[from-model] ');
    for (const s of ['clip', 'lm', 'stage1', 'stage2']) expect(r.stderr).toContain(`[${s}] done before`);
    const training = await readJson<Training>(join(out, 'training.json'));
    const shipped = await readJson<Training>(join(SHIPPED, 'training.json'));
    expect(training.stages.stage2).toEqual({ ...shipped.stages.stage2, from_model: SHIPPED });
    expect(training.stages.drill.from_model).toBeUndefined();
    // Stage 2's decoder is the shipped one, read as fp32 with LLaVA's ids; the drill switches to the variant's 2-D ones.
    const stage2 = await readJson<Record<string, unknown>>(join(work, 'stage2', 'decoder', 'config.json'));
    expect(stage2).toMatchObject({ torch_dtype: 'float32', hidden_size: 128 });
    expect(stage2.rope_2d).toBeUndefined();
    expect(r.stderr).toContain('2-D rotary ids for the image tokens from here on');
    expect((await readJson<Record<string, unknown>>(join(out, 'config.json'))).rope_2d).toBe(true);

    // Bad starts: one line, exit code 2.
    const noDrill = await trainMicro(['--smoke', '--from-model', SHIPPED, '--work', join(dir, 'bad')]);
    expect(noDrill.code).toBe(2);
    expect(errorLines(noDrill.stderr)).toEqual(['error: --from-model needs --position-drill (it starts the drill from that model)']);
    const drilled = await trainMicro(['--smoke', '--position-drill', '--from-model', out, '--work', join(dir, 'bad2')]);
    expect(drilled.code).toBe(2);
    expect(errorLines(drilled.stderr).at(-1)).toMatch(/^error: --from-model: .* has 2-D rotary ids; it must come from the plain recipe$/);
    const missing = await trainMicro(['--smoke', '--position-drill', '--from-model', join(dir, 'nowhere'), '--work', join(dir, 'bad3')]);
    expect(missing.code).toBe(2);
    expect(errorLines(missing.stderr)).toEqual([`error: --from-model: ${join(dir, 'nowhere')} is not a model folder train:micro wrote (no training.json)`]);
    // A work folder that already holds stage 2's output keeps it.
    const kept = await trainMicro(['--smoke', '--position-drill', '--from-model', join(dir, 'nowhere'), '--work', work, '--out', out, '--threads', '1']);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stderr).toContain(`[from-model] ${work} already holds stage 2's output (--fresh starts over), kept`);
  }, 240_000);
});
