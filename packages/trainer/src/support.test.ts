import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLatestCheckpoint, pruneCheckpoints, readCheckpoint, removeStaleTemps, writeCheckpoint, type ModelExport, type TrainerState } from './checkpoint.js';
import { resolveConfig } from './config.js';
import { DataOrder, Prefetcher } from './loader.js';
import { JsonlLog, Progress, lossCurveSvg, type StepRecord } from './logging.js';
import { newAdamWState } from './optimizer.js';
import type { Param } from './params.js';
import { Rng } from './rng.js';
import { stepPlan } from './trainer.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'trainer-support-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

describe('data order', () => {
  it('is a seeded permutation per epoch, the same every time, different across epochs', () => {
    const a = new DataOrder(10, 3, true, 42), b = new DataOrder(10, 3, true, 42);
    expect(a.microBatchesPerEpoch).toBe(4);
    const e0 = [0, 1, 2, 3].flatMap((i) => a.microBatch(0, i).samples);
    expect([...e0].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(b.microBatch(0, 1).samples).toEqual(a.microBatch(0, 1).samples);
    expect(a.microBatch(0, 3).samples).toHaveLength(1);
    expect([0, 1, 2, 3].flatMap((i) => a.microBatch(1, i).samples)).not.toEqual(e0);
    expect(new DataOrder(10, 3, false, 42).microBatch(0, 1).samples).toEqual([3, 4, 5]);
  });

  it('the Rng resumes from its state exactly', () => {
    const r = Rng.seeded(5, 'x');
    r.next();
    const copy = new Rng(r.state());
    expect(Array.from({ length: 5 }, () => copy.nextU32())).toEqual(Array.from({ length: 5 }, () => r.nextU32()));
  });

  it('steps take accumulation-steps micro-batches; an epoch\'s last step takes what is left', () => {
    // 5 micro-batches per epoch, accumulation 2: steps of 2, 2, 1, then the next epoch.
    expect([0, 1, 2, 3].map((s) => stepPlan(s, 5, 2))).toEqual([
      { epoch: 0, start: 0, count: 2 }, { epoch: 0, start: 2, count: 2 }, { epoch: 0, start: 4, count: 1 }, { epoch: 1, start: 0, count: 2 },
    ]);
  });
});

describe('Prefetcher', () => {
  it('starts item k + 1 when item k is taken, before k is awaited', async () => {
    const started: number[] = [];
    const resolvers = new Map<number, (v: number) => void>();
    const pf = new Prefetcher<number>((k) => { started.push(k); return new Promise((r) => resolvers.set(k, r)); }, 1, 3);
    const p0 = pf.take(0);
    expect(started).toEqual([0, 1]); // item 1 loads while the consumer works on item 0
    resolvers.get(0)!(10);
    expect(await p0).toBe(10);
    const p1 = pf.take(1);
    expect(started).toEqual([0, 1, 2]);
    resolvers.get(1)!(11);
    expect(await p1).toBe(11);
    pf.take(2);
    expect(started).toEqual([0, 1, 2]); // not past the limit
  });

  it('an error in a prefetched item surfaces when it is taken', async () => {
    const pf = new Prefetcher<number>(async (k) => { if (k === 1) throw new Error('bad image'); return k; }, 1);
    expect(await pf.take(0)).toBe(0);
    await expect(pf.take(1)).rejects.toThrow('bad image');
  });
});

describe('checkpoints', () => {
  const params = (): Map<string, Param> => new Map([
    ['model.mm_projector.0.weight', { name: 'model.mm_projector.0.weight', shape: [2, 2], data: Float32Array.of(1, 2, 3, 4), decay: true }],
  ]);
  const exp: ModelExport = {
    paramFiles: [{ path: 'mm_projector.safetensors', keys: new Map([['model.mm_projector.0.weight', 'model.mm_projector.0.weight']]) }],
    sideFiles: [{ path: 'note.txt', text: 'hi\n' }],
  };
  const state = (step: number): TrainerState => ({
    format: 'mobillama-v-trainer/1', global_step: step, total_steps: 10, epoch: 0, micro_batch: step, data_rng: [1, 2, 3, 4], seed: 1,
    fingerprint: { a: 1 }, last_loss: 0.5,
  });

  it('round-trips params, moments and state; the newest complete checkpoint wins; temp folders are removed', async () => {
    const out = join(dir, 'ck');
    await mkdir(out, { recursive: true });
    const ps = params();
    const opt = newAdamWState([...ps.values()]);
    opt.expAvg.get('model.mm_projector.0.weight')!.set([0.1, 0.2, 0.3, 0.4]);
    opt.step = 3;
    await writeCheckpoint(out, 3, exp, ps, opt, state(3));
    ps.get('model.mm_projector.0.weight')!.data.set([9, 9, 9, 9]);
    await writeCheckpoint(out, 6, exp, ps, opt, state(6));
    // What a kill leaves: a half-written temp folder and a checkpoint folder without its state.
    await mkdir(join(out, '.tmp-checkpoint-9-123'));
    await mkdir(join(out, 'checkpoint-9'));
    await writeFile(join(out, 'checkpoint-9', 'mm_projector.safetensors'), 'partial');
    expect(await findLatestCheckpoint(out)).toBe(join(out, 'checkpoint-6'));
    await removeStaleTemps(out);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-3', 'checkpoint-6', 'checkpoint-9']);

    const back = params();
    const opt2 = newAdamWState([...back.values()]);
    const st = await readCheckpoint(join(out, 'checkpoint-3'), exp, back, opt2);
    expect(st.global_step).toBe(3);
    expect(opt2.step).toBe(3);
    expect(Array.from(back.get('model.mm_projector.0.weight')!.data)).toEqual([1, 2, 3, 4]);
    expect(Array.from(opt2.expAvg.get('model.mm_projector.0.weight')!)).toEqual([0.1, 0.2, 0.3, 0.4].map(Math.fround));

    // --save-total-limit: the oldest complete ones go; the incomplete folder is not counted or touched.
    expect(await pruneCheckpoints(out, 0)).toEqual([]);
    expect(await pruneCheckpoints(out, 2)).toEqual([]);
    expect(await pruneCheckpoints(out, 1)).toEqual([join(out, 'checkpoint-3')]);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-6', 'checkpoint-9']);
  });
});

describe('logging', () => {
  const rec = (step: number, loss: number): StepRecord => ({ step, loss, lr: 1e-3, grad_norm: 0.5, tokens_per_s: 100, seconds: 0.1 });

  it('log.jsonl is cut back to a checkpoint step (a cut last line dropped too)', async () => {
    const log = new JsonlLog<StepRecord>(join(dir, 'log.jsonl'));
    for (let s = 1; s <= 5; s++) await log.append(rec(s, 1 / s));
    await writeFile(join(dir, 'log.jsonl'), `${(await log.read()).map((r) => JSON.stringify(r)).join('\n')}\n{"step":6,"lo`);
    expect((await log.read()).map((r) => r.step)).toEqual([1, 2, 3, 4, 5]);
    expect((await log.truncate(3)).map((r) => r.step)).toEqual([1, 2, 3]);
    expect((await log.read()).map((r) => r.step)).toEqual([1, 2, 3]);
  });

  it('progress: a redrawn bar on a TTY, plain lines otherwise', () => {
    let tty = '', plain = '';
    const a = new Progress(4, { write: (s: string) => (tty += s), isTTY: true, columns: 200 });
    const b = new Progress(4, { write: (s: string) => (plain += s), isTTY: false });
    for (const p of [a, b]) { p.step(rec(1, 2)); p.step(rec(2, 1.5)); p.done(); }
    expect(tty).toMatch(/^\r\[=====>\s+\] step 1\/4 loss 2\.0000 lr 1\.00e-3 grad_norm 0\.500 100 tok\/s ETA/);
    expect(tty.split('\r')).toHaveLength(3);
    expect(plain.trimEnd().split('\n')).toEqual([expect.stringMatching(/^step 1\/4 loss 2\.0000/), expect.stringMatching(/^step 2\/4 loss 1\.5000/)]);
  });

  it('the loss curve is an SVG with one path point per step and eval dots', () => {
    const svg = lossCurveSvg([rec(1, 3), rec(2, 2), rec(3, 1.5)], [{ step: 3, eval_loss: 1.8, eval_tokens: 10 }]);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<path d="([^"]+)"/)![1].split(' ')).toHaveLength(3);
    expect(svg).toContain('<circle');
  });
});

describe('config', () => {
  const base = { stage: 'pretrain' as const, vision: 'v', decoder: 'd', data: 'x.json', output: 'o' };
  it('fills LLaVA-1.5 defaults per stage', () => {
    expect(resolveConfig(base)).toMatchObject({ learningRate: 1e-3, template: 'plain', lrScheduler: 'cosine', warmupRatio: 0.03, weightDecay: 0, maxGradNorm: 1 });
    expect(resolveConfig({ ...base, stage: 'lora' })).toMatchObject({ learningRate: 2e-4, template: 'vicuna_v1', loraR: 128, loraAlpha: 256 });
    expect(resolveConfig({ ...base, stage: 'finetune' }).learningRate).toBe(2e-5);
  });
  it.each([
    [{ stage: 'stage3' }, /--stage must be/],
    [{ learningRate: -1 }, /--learning-rate must be a positive number/],
    [{ batchSize: 0 }, /--batch-size must be a positive integer/],
    [{ warmupRatio: 2 }, /--warmup-ratio/],
    [{ lrScheduler: 'exp' }, /--lr-scheduler/],
    [{ evalSteps: 5 }, /--eval-steps needs --eval-data/],
    [{ visionLearningRate: 1e-4 }, /--vision-learning-rate needs --tune-vision/],
    [{ tuneVision: true, visionLearningRate: 0 }, /--vision-learning-rate must be a positive number/],
  ])('refuses %j', (bad, msg) => {
    expect(() => resolveConfig({ ...base, ...bad } as never)).toThrow(msg);
  });
});
