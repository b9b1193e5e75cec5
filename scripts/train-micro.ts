/**
 * `pnpm train:micro`: builds and trains the micro MobiLlama-V from nothing and ships it to
 * models/mobillama-v-micro. Every step takes its data, initial weights and sample order from
 * the seeds below (the float sums of 2-thread training still differ in the last bits from run
 * to run, which the drill's plateaus amplify) and uses the project's own code:
 *
 *   1. data      synthetic shapes: train split (seed 1), held-out split (seed 2), LM text (seed 3)
 *   2. clip      micro CLIP (ViT + text transformer), BPE on the captions, contrastive pretraining
 *   3. lm        micro MobiLlama (one shared FFN, LLaMA tokenizer), causal-LM pretraining on the text
 *   4. stage1    LLaVA stage 1: projector only, plain template, captions (trainer `train()`)
 *   5. stage2    LLaVA stage 2: projector + whole decoder, vicuna_v1, an image's questions as independent turns (trainer `train()`)
 *   6. drill     (--position-drill only) relative position alone: either-or left/right (two shapes first), then above/below, then both forms
 *   7. recover   (--position-drill only) stage 2's data again from the drilled model (recover, recover-2)
 *   8. ship      fp16 LLaVA-layout folder, held-out exact-match eval, atomic rename into models/
 *
 * Work goes to .tmp/micro/; a stage whose output is complete is skipped, so an interrupted
 * run continues where it stopped, stage 2 from its last checkpoint unless a stage before it
 * had to run again (`--fresh` starts over). Timings and the eval report land in
 * .tmp/micro/report.json and models/mobillama-v-micro/training.json.
 *
 *   tsx scripts/train-micro.ts [--fresh] [--work DIR] [--out DIR] [--threads N] [--smoke] [--position-drill [--from-model DIR]]
 *
 * --smoke runs every stage at toy scale (seconds; the model is useless), for checking the pipeline.
 * --position-drill trains the recipe variant with 2-D rotary positions and the position drill
 * (MICRO_POSITION_RECIPE; work in .tmp/micro-position, model to .tmp/micro-position-model
 * unless --out); the shipped model is the plain recipe's. --from-model DIR (with
 * --position-drill) takes the CLIP and the stage-2 decoder and projector from a model the plain
 * recipe trained (fp16 as shipped, e.g. models/mobillama-v-micro) and runs the variant's drill,
 * recovery and ship from there, the image tokens switched to 2-D rotary ids at the drill.
 */
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { evaluate, MobiLlamaV, type EvalReport } from '@mobillama/pipeline';
import { train, type TrainResult } from '../packages/trainer/src/index.js';
import { conversationsPerImage, positionQuestionEntries, writeShapesDataset, type LlavaEntry, type SceneRecord } from '../packages/trainer/src/synthetic/index.js';
import { pretrainLm } from '../packages/trainer/src/lm-pretrain.js';
import { assembleMicroModel } from '../packages/trainer/src/micro/assemble.js';
import { pretrainClip } from '../packages/trainer/src/micro/clip-pretrain.js';
import { writeMicroDecoder } from '../packages/trainer/src/micro/decoder-init.js';
import { MICRO_POSITION_RECIPE, MICRO_POSITION_SMOKE_RECIPE, MICRO_RECIPE, MICRO_SMOKE_RECIPE, lmDocuments } from '../packages/trainer/src/micro/recipe.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: args } = parseArgs({
  options: {
    fresh: { type: 'boolean', default: false },
    work: { type: 'string' },
    out: { type: 'string' },
    threads: { type: 'string', default: '2' },
    smoke: { type: 'boolean', default: false },
    'position-drill': { type: 'boolean', default: false },
    'from-model': { type: 'string' },
  },
});
if (args['from-model'] !== undefined && !args['position-drill']) {
  process.stderr.write('error: --from-model needs --position-drill (it starts the drill from that model)\n');
  process.exit(2);
}
const drillRecipe = args['position-drill'];
const R = args.smoke ? (drillRecipe ? MICRO_POSITION_SMOKE_RECIPE : MICRO_SMOKE_RECIPE) : drillRecipe ? MICRO_POSITION_RECIPE : MICRO_RECIPE;
const WORK = resolve(args.work ?? join(ROOT, drillRecipe ? '.tmp/micro-position' : '.tmp/micro'));
// The variant never replaces the shipped model unless --out says so.
const OUT = resolve(args.out ?? join(ROOT, drillRecipe ? '.tmp/micro-position-model' : 'models/mobillama-v-micro'));
const THREADS = Number(args.threads);
const P = (...p: string[]) => join(WORK, ...p);
const log = (s: string) => process.stderr.write(`${s}\n`);

if (args.fresh) await rm(WORK, { recursive: true, force: true });
await mkdir(WORK, { recursive: true });

interface Report { stages: Record<string, { seconds: number; [k: string]: unknown }>; eval?: EvalReport }
const reportFile = P('report.json');
const report: Report = existsSync(reportFile) ? JSON.parse(await readFile(reportFile, 'utf8')) as Report : { stages: {} };
const saveReport = () => writeFile(reportFile, `${JSON.stringify(report, null, 2)}\n`);

/** Whether a stage ran in this invocation (rather than being skipped as done). */
let ranBefore = false;

/** Runs a stage unless its marker file exists; the marker is written last. */
async function stage(name: string, marker: string, body: () => Promise<Record<string, unknown> | void>): Promise<void> {
  if (existsSync(marker) && report.stages[name]) {
    log(`[${name}] done before (${report.stages[name].seconds.toFixed(0)} s), skipped`);
    return;
  }
  log(`[${name}] …`);
  const t0 = performance.now();
  const extra = (await body()) ?? {};
  // A resumed stage reports the seconds of the part that ran before too.
  const before = typeof extra.seconds_before_resume === 'number' ? extra.seconds_before_resume : 0;
  const seconds = (performance.now() - t0) / 1000 + before;
  report.stages[name] = { ...extra, seconds };
  ranBefore = true;
  await saveReport();
  await writeFile(marker, `${seconds}\n`);
  log(`[${name}] ${seconds.toFixed(1)} s`);
}

const every = (n: number, f: (s: { step: number }) => string) => (s: { step: number }) => {
  if (s.step === 1 || s.step % n === 0) log(`  ${f(s)}`);
};

// Stages 2–5 from a model the plain recipe trained (--from-model) ------------------------------
if (args['from-model'] !== undefined) {
  if (existsSync(P('stage2', 'DONE'))) {
    log(`[from-model] ${WORK} already holds stage 2's output (--fresh starts over), kept`);
  } else {
    await seedFromModel(resolve(args['from-model'])).catch((e: unknown) => {
      process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(2);
    });
  }
}

// 1. Data ------------------------------------------------------------------------------------
await stage('data', P('data', 'DONE'), async () => {
  await rm(P('data'), { recursive: true, force: true });
  const vocab = { kinds: R.data.kinds, colors: R.data.colors };
  const train = await writeShapesDataset({ out: P('data', 'train'), count: R.data.trainImages, seed: R.data.trainSeed, qaPerImage: 6, ...vocab });
  const held = await writeShapesDataset({ out: P('data', 'heldout'), count: R.data.heldoutImages, seed: R.data.heldoutSeed, qaPerImage: R.data.heldoutQaPerImage, ...vocab });
  await writeFile(P('data', 'lm.json'), `${JSON.stringify(lmDocuments(R.data.lmDocuments, R.data.lmSeed, vocab))}\n`);
  return { train_images: train.images, train_questions: train.questions, heldout_questions: held.questions };
});

// 2. Micro CLIP ------------------------------------------------------------------------------
await stage('clip', P('clip', 'DONE'), async () => {
  const caps = JSON.parse(await readFile(P('data', 'train', 'captions.json'), 'utf8')) as LlavaEntry[];
  const scenes = JSON.parse(await readFile(P('data', 'train', 'scenes.json'), 'utf8')) as { shapes: { color: string }[] }[];
  // Hard negatives: pairs with the same colours are batched together, so captions must be told apart by their shapes.
  const pairs = caps.slice(0, R.clip.images).map((e, i) => ({
    image: P('data', 'train', 'images', e.image!), caption: e.conversations[1].value, group: scenes[i].shapes.map((s) => s.color).sort().join(','),
  }));
  const r = await pretrainClip({
    config: R.clip.config, pairs, out: P('clip'), steps: R.clip.steps, batchSize: R.clip.batchSize, learningRate: R.clip.learningRate,
    weightDecay: R.clip.weightDecay, hardNegatives: R.clip.hardNegatives, seed: R.clip.seed, threads: THREADS,
    onStep: every(100, (s) => { const x = s as unknown as { step: number; loss: number; logitScale: number; seconds: number }; return `clip step ${x.step}/${R.clip.steps} loss ${x.loss.toFixed(4)} scale ${x.logitScale.toFixed(1)} ${x.seconds.toFixed(2)} s`; }),
  });
  return { steps: R.clip.steps, first_loss: r.losses[0], final_loss: mean(r.losses.slice(-10)), text_vocab: r.vocabSize };
});

// 3. Micro MobiLlama, LM pretraining --------------------------------------------------------
await stage('lm', P('decoder-lm', 'DONE'), async () => {
  await rm(P('decoder-init'), { recursive: true, force: true });
  await writeMicroDecoder(P('decoder-init'), R.decoder, R.decoder.seed);
  const texts = JSON.parse(await readFile(P('data', 'lm.json'), 'utf8')) as string[];
  const r = await pretrainLm({
    decoder: P('decoder-init'), texts, output: P('decoder-lm'), steps: R.lm.steps, batchSize: R.lm.batchSize,
    learningRate: R.lm.learningRate, warmupRatio: 0.05, seed: R.lm.seed, threads: THREADS,
    onStep: every(100, (s) => { const x = s as unknown as { step: number; loss: number; seconds: number }; return `lm step ${x.step}/${R.lm.steps} loss ${x.loss.toFixed(4)} ${x.seconds.toFixed(2)} s`; }),
  });
  return { steps: R.lm.steps, first_loss: r.losses[0], final_loss: mean(r.losses.slice(-10)) };
});

const quiet = { write: () => true };
const stepLog = (name: string, total: number, n: number) => ({
  onStep: every(n, (s) => { const x = s as unknown as { step: number; loss: number; tokens_per_s: number }; return `${name} step ${x.step}/${total} loss ${x.loss.toFixed(4)} ${x.tokens_per_s.toFixed(0)} tok/s`; }),
  progress: quiet,
});

// 4. Stage 1: projector ---------------------------------------------------------------------
await stage('stage1', P('stage1', 'DONE'), async () => {
  await rm(P('stage1'), { recursive: true, force: true });
  const r = await train({
    stage: 'pretrain', vision: P('clip'), decoder: P('decoder-lm'), data: P('data', 'train', 'captions.json'), imageFolder: P('data', 'train', 'images'),
    output: P('stage1'), batchSize: R.stage1.batchSize, maxSteps: R.stage1.steps, learningRate: R.stage1.learningRate, saveSteps: 0,
    seed: R.stage1.seed, threads: THREADS,
  }, stepLog('stage1', R.stage1.steps, 20));
  return { steps: r.steps, first_loss: r.records[0]?.loss, final_loss: mean(r.records.slice(-10).map((x) => x.loss)) };
});

// 5. Stage 2: instruction tuning ------------------------------------------------------------
await stage('stage2', P('stage2', 'DONE'), async () => {
  // A run killed here resumes from the last checkpoint (every 250 steps, ~2 min; only the
  // newest kept: ~100 MB); the report then adds the logged seconds of the steps before it. If
  // an earlier stage just ran again, that checkpoint was trained on its old output: start over.
  if (ranBefore) await rm(P('stage2'), { recursive: true, force: true });
  // Each image's questions as one conversation, trained as independent turns: the system
  // prompt and the 64 image tokens once per image instead of once per question.
  const r = await train({
    stage: 'finetune', vision: P('clip'), decoder: P('decoder-lm'), projector: P('stage1', 'mm_projector.safetensors'),
    data: await conversationsData(), independentTurns: true, imageFolder: P('data', 'train', 'images'), output: P('stage2'),
    batchSize: R.stage2.batchSize, maxSteps: R.stage2.steps, learningRate: R.stage2.learningRate, warmupRatio: 0.03,
    saveSteps: 250, saveTotalLimit: 1, resume: true, seed: R.stage2.seed, threads: THREADS,
  }, stepLog('stage2', R.stage2.steps, 100));
  return resumableResult(r);
});

// 6–7. Position drill from stage 2's model, then recovery (MICRO_POSITION_RECIPE only) -----
const D = R.positionDrill;
let final = P('stage2');
if (D) {
  await stage('drill', P('drill', 'DONE'), async () => {
    // Each finished phase leaves its record; a run interrupted in the drill continues at the
    // first phase without one (unless stage 2 just ran again).
    if (ranBefore) await rm(P('drill'), { recursive: true, force: true });
    await mkdir(P('drill'), { recursive: true });
    const scenes = (JSON.parse(await readFile(P('data', 'train', 'scenes.json'), 'utf8')) as SceneRecord[]).slice(0, D.images);
    let from = P('stage2');
    // A stage 2 trained with LLaVA's ids (--from-model): the variant's 2-D ids from here on.
    if (R.decoder.rope2d && !(await readJson(join(from, 'decoder', 'config.json'))).rope_2d) {
      from = P('drill', 'start');
      await cp(P('stage2', 'decoder'), join(from, 'decoder'), { recursive: true });
      await cp(P('stage2', 'mm_projector.safetensors'), join(from, 'mm_projector.safetensors'));
      await writeFile(join(from, 'decoder', 'config.json'), `${JSON.stringify({ ...(await readJson(join(from, 'decoder', 'config.json'))), rope_2d: true }, null, 2)}\n`);
      log('  drill: 2-D rotary ids for the image tokens from here on');
    }
    const phases: Record<string, unknown>[] = [];
    let secondsBefore = 0; // the logged step seconds of phases an earlier run finished
    for (const [i, phase] of D.phases.entries()) {
      const done = P('drill', `${phase.name}.phase.json`);
      if (existsSync(done)) {
        const record = await readJson(done);
        phases.push(record);
        secondsBefore += typeof record.seconds === 'number' ? record.seconds : 0;
        from = P('drill', phase.name);
        log(`  drill ${phase.name}: done before, skipped`);
        continue;
      }
      await rm(P('drill', phase.name), { recursive: true, force: true });
      const questions = positionQuestionEntries(scenes.filter((s) => s.shapes.length <= phase.maxShapes), D.seed + i, phase.questions);
      const data = P('drill', `${phase.name}.json`);
      await writeFile(data, `${JSON.stringify(questions)}\n`);
      const until = phase.untilLoss;
      const r = await train({
        stage: 'finetune', vision: P('clip'), decoder: join(from, 'decoder'), projector: join(from, 'mm_projector.safetensors'), data,
        imageFolder: P('data', 'train', 'images'), output: P('drill', phase.name), batchSize: D.batchSize, maxSteps: phase.steps,
        learningRate: D.learningRate, lrScheduler: 'constant', warmupRatio: 0.03, saveSteps: 0, seed: D.seed + i, threads: THREADS,
      }, {
        ...stepLog(`drill ${phase.name}`, phase.steps, 100),
        shouldStop: (_rec, records) => until !== undefined && records.length >= 50 && mean(records.slice(-50).map((x) => x.loss)) < until,
      });
      from = P('drill', phase.name);
      const last50 = mean(r.records.slice(-50).map((x) => x.loss));
      const record = { name: phase.name, questions: questions.length, steps: r.steps, first_loss: r.records[0]?.loss, final_loss: last50, seconds: sum(r.records.map((x) => x.seconds ?? 0)) };
      await writeFile(done, `${JSON.stringify(record)}\n`);
      phases.push(record);
      log(`  drill ${phase.name}: ${r.steps} steps, mean loss of the last 50 ${last50.toFixed(4)}`);
    }
    return { phases, ...(secondsBefore > 0 ? { seconds_before_resume: secondsBefore } : {}) };
  });
  // Stage names: recover, recover-2, …: a run interrupted after the first keeps it.
  final = P('drill', D.phases[D.phases.length - 1].name);
  for (const [i, rc] of D.recover.entries()) {
    const name = i === 0 ? 'recover' : `recover-${i + 1}`;
    const from = final;
    await stage(name, P(name, 'DONE'), async () => {
      // Resumable like stage 2 (checkpoints every 250 steps), unless a stage before just ran.
      if (ranBefore) await rm(P(name), { recursive: true, force: true });
      let data = await conversationsData();
      if (rc.images !== undefined) {
        // One conversation per image, in image order: the first N entries are the first N images.
        const all = JSON.parse(await readFile(data, 'utf8')) as LlavaEntry[];
        data = P('data', 'train', `qa-turns-${rc.images}.json`);
        await writeFile(data, `${JSON.stringify(all.slice(0, rc.images))}\n`);
      }
      const r = await train({
        stage: 'finetune', vision: P('clip'), decoder: join(from, 'decoder'), projector: join(from, 'mm_projector.safetensors'),
        data, independentTurns: true, imageFolder: P('data', 'train', 'images'), output: P(name),
        batchSize: rc.batchSize, maxSteps: rc.steps, learningRate: rc.learningRate, warmupRatio: 0.03,
        saveSteps: 250, saveTotalLimit: 1, resume: true, seed: rc.seed, threads: THREADS,
      }, stepLog(name, rc.steps, 100));
      return resumableResult(r);
    });
    final = P(name);
  }
}

// 8. Assemble (fp16), evaluate on the held-out split, ship atomically -----------------------
await stage('ship', P('SHIPPED'), async () => {
  const tmp = `${OUT}.partial`;
  await rm(tmp, { recursive: true, force: true });
  await assembleMicroModel({
    decoder: join(final, 'decoder'), projector: join(final, 'mm_projector.safetensors'), clip: P('clip'), out: tmp, convTemplate: 'vicuna_v1',
  });
  const t0 = performance.now();
  const m = await MobiLlamaV.load({ model: tmp, threads: THREADS });
  let ev: EvalReport;
  try {
    let n = 0;
    ev = await evaluate(m, {
      data: P('data', 'heldout', 'qa.json'), imageFolder: P('data', 'heldout', 'images'),
      onPrediction: (_p, run) => { if (++n % 100 === 0) log(`  eval ${n}: ${(100 * run.accuracy).toFixed(1)}%`); },
    });
  } finally {
    await m.dispose();
  }
  const evalSeconds = (performance.now() - t0) / 1000;
  report.eval = ev;
  log(`held-out exact match: ${(100 * ev.accuracy).toFixed(1)}% of ${ev.count}`);
  for (const [t, s] of Object.entries(ev.byType)) log(`  ${t.padEnd(9)} ${(100 * s.accuracy).toFixed(1)}% (${s.correct}/${s.count})`);
  // A small held-out sample ships with the model (the quantized-accuracy floors run on it).
  const qa = JSON.parse(await readFile(P('data', 'heldout', 'qa.json'), 'utf8')) as LlavaEntry[];
  const sample = qa.slice(0, R.data.shippedHeldoutQuestions);
  await mkdir(join(tmp, 'heldout', 'images'), { recursive: true });
  for (const img of new Set(sample.map((e) => e.image!))) await cp(P('data', 'heldout', 'images', img), join(tmp, 'heldout', 'images', img));
  await writeFile(join(tmp, 'heldout', 'data.json'), `[\n${sample.map((e) => JSON.stringify(e)).join(',\n')}\n]\n`);
  const training = {
    recipe: R, stages: report.stages, eval: { ...ev, seconds: evalSeconds, data: `shapes seed ${R.data.heldoutSeed}, ${R.data.heldoutImages} images` },
    wall_seconds: Object.values(report.stages).reduce((a, s) => a + s.seconds, 0) + evalSeconds,
  };
  await writeFile(join(tmp, 'training.json'), `${JSON.stringify(training, null, 2)}\n`);
  // Swap in: the old model (if any) moves aside, the new one takes its name, the old one goes.
  const old = `${OUT}.old`;
  await rm(old, { recursive: true, force: true });
  if (existsSync(OUT)) await rename(OUT, old);
  await rename(tmp, OUT);
  await rm(old, { recursive: true, force: true });
  return { eval_seconds: evalSeconds, accuracy: ev.accuracy };
});

const total = Object.values(report.stages).reduce((a, s) => a + s.seconds, 0);
log(`wall time: ${(total / 60).toFixed(1)} min (${Object.entries(report.stages).map(([k, v]) => `${k} ${v.seconds.toFixed(0)} s`).join(', ')})`);
if (report.eval) log(`held-out accuracy ${(100 * report.eval.accuracy).toFixed(1)}% → ${OUT}`);

/**
 * Puts a shipped model's parts where stages 2–5 leave theirs (clip/, stage2/decoder,
 * stage2/mm_projector.safetensors; fp16 as shipped, read as fp32 by the trainer) and takes
 * those stages' report entries from its training.json.
 */
async function seedFromModel(dir: string): Promise<void> {
  if (!existsSync(join(dir, 'training.json'))) throw new Error(`--from-model: ${dir} is not a model folder train:micro wrote (no training.json)`);
  const shipped = (await readJson(join(dir, 'training.json'))) as unknown as { stages: Report['stages'] };
  const config = await readJson(join(dir, 'config.json'));
  if (config.rope_2d === true) throw new Error(`--from-model: ${dir} has 2-D rotary ids; it must come from the plain recipe`);
  await rm(P('clip'), { recursive: true, force: true });
  await cp(join(dir, 'clip'), P('clip'), { recursive: true });
  await rm(P('stage2'), { recursive: true, force: true });
  await mkdir(P('stage2', 'decoder'), { recursive: true });
  for (const f of ['model.safetensors', 'tokenizer.model', 'tokenizer_config.json']) await cp(join(dir, f), P('stage2', 'decoder', f));
  await cp(join(dir, 'mm_projector.safetensors'), P('stage2', 'mm_projector.safetensors'));
  await writeFile(P('stage2', 'decoder', 'config.json'), `${JSON.stringify({ ...config, torch_dtype: 'float32' }, null, 2)}\n`);
  for (const [name, marker] of [['clip', P('clip', 'DONE')], ['lm', P('decoder-lm', 'DONE')], ['stage1', P('stage1', 'DONE')], ['stage2', P('stage2', 'DONE')]] as const) {
    const measured = shipped.stages[name];
    if (measured === undefined) throw new Error(`--from-model: ${dir}/training.json has no '${name}' stage`);
    report.stages[name] = { ...measured, from_model: dir };
    await mkdir(dirname(marker), { recursive: true });
    await writeFile(marker, `${measured.seconds}\n`);
  }
  await saveReport();
  log(`[from-model] stages clip, lm, stage1 and stage2 from ${dir}`);
}

/** Stage 2's data: each image's questions as one conversation (written once, from qa.json). */
async function conversationsData(): Promise<string> {
  const file = P('data', 'train', 'qa-turns.json');
  if (!existsSync(file)) {
    const qa = JSON.parse(await readFile(P('data', 'train', 'qa.json'), 'utf8')) as LlavaEntry[];
    await writeFile(`${file}.partial`, `${JSON.stringify(conversationsPerImage(qa))}\n`);
    await rename(`${file}.partial`, file);
  }
  return file;
}

/** A resumable training stage's report entry; steps logged before a resume ran in an earlier invocation. */
function resumableResult(r: TrainResult): Record<string, unknown> {
  const resumedAt = r.resumedFrom === null ? 0 : Number(/checkpoint-(\d+)$/.exec(r.resumedFrom)?.[1] ?? 0);
  const earlier = sum(r.records.filter((x) => x.step <= resumedAt).map((x) => x.seconds ?? 0));
  return {
    steps: r.steps, first_loss: r.records[0]?.loss, final_loss: mean(r.records.slice(-10).map((x) => x.loss)),
    ...(earlier > 0 ? { seconds_before_resume: earlier } : {}),
  };
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function mean(xs: readonly number[]): number {
  return sum(xs) / Math.max(1, xs.length);
}
