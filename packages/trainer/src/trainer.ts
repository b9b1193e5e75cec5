import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createSession, createWorkerSession, exportOnnx, writeFileAtomic, type Feeds, type Session } from '@mobillama/core';
import { findLatestCheckpoint, pruneCheckpoints, readCheckpoint, removeStaleTemps, writeCheckpoint, writeModelFiles, type TrainerState } from './checkpoint.js';
import { TRAIN_IO, collate, type MicroBatch } from './collate.js';
import { resolveConfig, type TrainConfig, type TrainConfigInput } from './config.js';
import { LlavaDataset } from './dataset.js';
import { TrainConfigError } from './errors.js';
import { buildTrainGraph } from './graph.js';
import { DataOrder, Prefetcher, loadSample, type SampleLoaderOptions } from './loader.js';
import { withEncodeCache } from './encode-cache.js';
import { JsonlLog, Progress, fmtLr, lossCurveSvg, type EvalRecord, type StepRecord } from './logging.js';
import { loadTrainModel, materializeParams, modelExport, type TrainModel } from './model.js';
import { adamwStep, clipCoefficient, globalGradNorm, newAdamWState } from './optimizer.js';
import { lrAt, warmupStepsFor } from './schedule.js';

export interface TrainHooks {
  /** Called after each optimizer step (after log.jsonl got the line). */
  onStep?(r: StepRecord): void | Promise<void>;
  /**
   * Asked after each step (after onStep): true ends the run there, as if max_steps had been
   * that step (final checkpoint, model files, last eval). The lr schedule is not rescaled, so
   * this suits a constant schedule: "train until the loss is below x".
   */
  shouldStop?(r: StepRecord, records: readonly StepRecord[]): boolean;
  onEval?(r: EvalRecord): void;
  /** Where progress goes (default process.stderr; a TTY gets a redrawn bar). */
  progress?: { write(s: string): unknown; isTTY?: boolean; columns?: number };
}

export interface TrainResult {
  readonly config: TrainConfig;
  /** Optimizer steps done in total (including those before a resume; fewer than totalSteps when shouldStop ended it). */
  readonly steps: number;
  readonly totalSteps: number;
  /** The checkpoint this run resumed from, if any. */
  readonly resumedFrom: string | null;
  /** Every step record in log.jsonl (a resumed run's earlier ones included). */
  readonly records: readonly StepRecord[];
  readonly evals: readonly EvalRecord[];
  readonly params: readonly { name: string; numel: number }[];
}

/** The micro-batches of optimizer step s (0-based): an epoch's last step may have fewer than accumulation-steps. */
export function stepPlan(s: number, microPerEpoch: number, accum: number): { epoch: number; start: number; count: number } {
  const stepsPerEpoch = Math.ceil(microPerEpoch / accum);
  const epoch = Math.floor(s / stepsPerEpoch);
  const start = (s % stepsPerEpoch) * accum;
  return { epoch, start, count: Math.min(accum, microPerEpoch - start) };
}

/**
 * Trains a MobiLlama-V model as LLaVA does (see the package README): one ORT session runs
 * the forward and generated backward pass of the whole model, JS accumulates gradients over
 * micro-batches, clips, and applies AdamW; data for the next micro-batch is read while ORT
 * computes. Checkpoints every `saveSteps` steps and at the end; `resume` continues from the
 * newest one so the logged losses match an uninterrupted run.
 */
export async function train(input: TrainConfigInput, hooks: TrainHooks = {}): Promise<TrainResult> {
  const cfg = resolveConfig(input);
  await mkdir(cfg.output, { recursive: true });
  const ds = await LlavaDataset.open(cfg.data);
  const closers: (() => Promise<void>)[] = [() => ds.close()];
  try {
    const evalDs = cfg.evalData ? await LlavaDataset.open(cfg.evalData) : null;
    if (evalDs) closers.push(() => evalDs.close());
    const model = await loadTrainModel(cfg);
    closers.push(() => model.close());
    return await run(cfg, model, ds, evalDs, hooks, closers);
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}

/** Settings added to the fingerprint after checkpoints were written: their value in a checkpoint that predates them. */
const FINGERPRINT_DEFAULTS: Readonly<Record<string, string | number | boolean>> = { independent_turns: false };

async function run(
  cfg: TrainConfig, model: TrainModel, ds: LlavaDataset, evalDs: LlavaDataset | null, hooks: TrainHooks,
  closers: (() => Promise<void>)[],
): Promise<TrainResult> {
  const progressOut = hooks.progress ?? process.stderr;
  const accum = cfg.gradientAccumulationSteps;
  const order = new DataOrder(ds.length, cfg.batchSize, cfg.shuffle, cfg.seed);
  const mbpe = order.microBatchesPerEpoch;
  const stepsPerEpoch = Math.ceil(mbpe / accum);
  const totalSteps = cfg.maxSteps > 0 ? cfg.maxSteps : Math.ceil(cfg.epochs * stepsPerEpoch);
  const schedule = { kind: cfg.lrScheduler, baseLr: cfg.learningRate, totalSteps, warmupSteps: warmupStepsFor(totalSteps, cfg.warmupSteps, cfg.warmupRatio) };

  // The session is built once per run: trainable weights are inputs, the rest initializers.
  const { graph, params: names } = buildTrainGraph(model.parts, { trainable: model.trainable, lora: model.lora ?? undefined, backward: true });
  const params = await materializeParams(model, names, (cfg.visionLearningRate ?? cfg.learningRate) / cfg.learningRate);
  const byName = new Map(params.map((p) => [p.name, p]));
  const exp = modelExport(model, cfg, params);
  const opt = newAdamWState(params);
  const sessionOpts = { threads: cfg.threads };
  const artifact = exportOnnx(graph);
  const session = cfg.worker ? await createWorkerSession(artifact, sessionOpts) : await createSession(artifact, sessionOpts);
  closers.push(() => session.release());
  let evalSession: Session | null = null;

  const fingerprint = {
    stage: cfg.stage, data_entries: ds.length, batch_size: cfg.batchSize, gradient_accumulation_steps: accum, seed: cfg.seed,
    shuffle: cfg.shuffle, total_steps: totalSteps, template: cfg.template, independent_turns: cfg.independentTurns, tune_vision: cfg.tuneVision,
    trainable_params: params.reduce((n, p) => n + p.data.length, 0),
  };
  const stateAt = (s: number, lastLoss: number | null): TrainerState => {
    const next = s < totalSteps ? stepPlan(s, mbpe, accum) : { epoch: Math.floor(s / stepsPerEpoch), start: 0 };
    return {
      format: 'mobillama-v-trainer/1', global_step: s, total_steps: totalSteps, epoch: next.epoch, micro_batch: next.start,
      data_rng: order.rngState(next.epoch), seed: cfg.seed, fingerprint, last_loss: lastLoss,
    };
  };
  const log = new JsonlLog<StepRecord>(join(cfg.output, 'log.jsonl'));
  const evalLog = new JsonlLog<EvalRecord>(join(cfg.output, 'eval.jsonl'));
  await removeStaleTemps(cfg.output);
  let step = 0;
  let resumedFrom: string | null = null;
  let records: StepRecord[] = [];
  let evals: EvalRecord[] = [];
  const latest = await findLatestCheckpoint(cfg.output);
  if (cfg.resume && latest) {
    const state = await readCheckpoint(latest, exp, byName, opt);
    for (const [k, v] of Object.entries(fingerprint)) {
      const was = state.fingerprint[k] ?? FINGERPRINT_DEFAULTS[k];
      if (was !== v) throw new TrainConfigError(`--resume: ${k} was ${JSON.stringify(was)} in ${latest}, now ${JSON.stringify(v)}; resume with the same settings`);
    }
    step = state.global_step;
    // The step → batch mapping is recomputed from the seed; the stored position and generator
    // state must agree with it (they would not if the data order code had changed).
    const next = stateAt(step, null);
    if (state.epoch !== next.epoch || state.micro_batch !== next.micro_batch || state.data_rng.join() !== next.data_rng.join()) {
      throw new TrainConfigError(`--resume: ${latest} stopped at epoch ${state.epoch} micro-batch ${state.micro_batch}, which this version maps differently; start a new run`);
    }
    resumedFrom = latest;
    records = await log.truncate(step);
    evals = await evalLog.truncate(step);
  } else {
    if (latest && !cfg.resume) throw new TrainConfigError(`${cfg.output} already holds ${latest.slice(cfg.output.length + 1)}: pass --resume to continue it, or choose another --output`);
    await log.truncate(0);
    await evalLog.truncate(0);
  }
  await writeFileAtomic(join(cfg.output, 'train_config.json'), `${JSON.stringify({ ...cfg, total_steps: totalSteps, warmup_steps: schedule.warmupSteps }, null, 2)}\n`);

  const { preprocess } = model.vision.config;
  const loaderOpts: SampleLoaderOptions = {
    tokenizer: withEncodeCache(model.tokenizer), template: cfg.template, independentTurns: cfg.independentTurns, modelMaxLength: model.maxLength,
    imageFolder: cfg.imageFolder, preprocess, aspect: cfg.imageAspectRatio,
  };
  const collateOpts = {
    imageTokens: model.imageTokens, maxLength: model.maxLength, rope2d: model.decoder.config.rope2d,
    pixelShape: [model.vision.config.numChannels, model.vision.config.imageSize, model.vision.config.imageSize] as const,
  };
  const loadMicro = async (dataset: LlavaDataset, samples: readonly number[]): Promise<MicroBatch> =>
    collate(await Promise.all(samples.map((i) => loadSample(dataset, i, loaderOpts))), collateOpts);
  const last = totalSteps > 0 ? stepPlan(totalSteps - 1, mbpe, accum) : { epoch: 0, start: 0, count: 0 };
  const limit = last.epoch * mbpe + last.start + last.count;
  const prefetch = new Prefetcher<MicroBatch>((k) => {
    const ref = order.microBatch(Math.floor(k / mbpe), k % mbpe);
    return loadMicro(ds, ref.samples);
  }, 1, limit);

  const feedsWith = (mb: MicroBatch): Feeds => {
    const f: Feeds = { ...mb.feeds };
    // A worker session takes its feeds' buffers (transferred): give it copies of the params.
    for (const p of params) f[p.name] = { dtype: 'float32', dims: p.shape, data: cfg.worker ? p.data.slice() : p.data };
    return f;
  };

  const evaluate = async (atStep: number): Promise<EvalRecord | null> => {
    if (!evalDs) return null;
    if (!evalSession) {
      const eg = buildTrainGraph(model.parts, { trainable: new Set(names), lora: model.lora ?? undefined, backward: false });
      const ea = exportOnnx(eg.graph);
      const es = cfg.worker ? await createWorkerSession(ea, sessionOpts) : await createSession(ea, sessionOpts);
      evalSession = es;
      closers.push(() => es.release());
    }
    const evalOrder = new DataOrder(evalDs.length, cfg.batchSize, false, cfg.seed);
    const ep = new Prefetcher<MicroBatch>((k) => loadMicro(evalDs, evalOrder.microBatch(0, k).samples), 1, evalOrder.microBatchesPerEpoch);
    let nll = 0, count = 0;
    for (let k = 0; k < evalOrder.microBatchesPerEpoch; k++) {
      const mb = await ep.take(k);
      if (mb.targets === 0) continue;
      const out = await evalSession.run(feedsWith(mb), [TRAIN_IO.nll]);
      nll += (out[TRAIN_IO.nll].data as Float32Array)[0];
      count += mb.targets;
    }
    const rec: EvalRecord = { step: atStep, eval_loss: count ? nll / count : 0, eval_tokens: count };
    await evalLog.append(rec);
    evals.push(rec);
    hooks.onEval?.(rec);
    return rec;
  };

  const progress = new Progress(totalSteps, progressOut);
  if (resumedFrom) progress.note(`resuming from ${resumedFrom} at step ${step}/${totalSteps}`);
  else if (cfg.resume) progress.note(`--resume: no checkpoint in ${cfg.output} yet; starting at step 0`);
  const saveCheckpoint = async (s: number, lastLoss: number | null) => {
    const dir = await writeCheckpoint(cfg.output, s, exp, byName, opt, stateAt(s, lastLoss));
    progress.note(`saved ${dir}`);
    for (const gone of await pruneCheckpoints(cfg.output, cfg.saveTotalLimit)) progress.note(`removed ${gone} (--save-total-limit ${cfg.saveTotalLimit})`);
  };

  let end = totalSteps;
  for (let s = step; s < totalSteps; s++) {
    const t0 = performance.now();
    const plan = stepPlan(s, mbpe, accum);
    let grads: Map<string, Float32Array> | null = null;
    let nll = 0, targets = 0, tokens = 0;
    for (let j = 0; j < plan.count; j++) {
      const mb = await prefetch.take(plan.epoch * mbpe + plan.start + j);
      tokens += mb.tokens;
      if (mb.targets === 0) continue; // nothing supervised (e.g. cut by model_max_length): no gradient
      const out = await session.run(feedsWith(mb));
      nll += (out[TRAIN_IO.nll].data as Float32Array)[0];
      targets += mb.targets;
      if (!grads) grads = new Map(params.map((p) => [p.name, out[TRAIN_IO.grad(p.name)].data as Float32Array]));
      else for (const p of params) addInto(grads.get(p.name)!, out[TRAIN_IO.grad(p.name)].data as Float32Array);
    }
    const lr = lrAt(s + 1, schedule);
    let loss = 0, norm = 0;
    if (grads && targets > 0) {
      // Mean over every supervised token of the step, across its micro-batches (HF's
      // num_items_in_batch): the graph gives sums, one scale turns them into the mean.
      const scale = 1 / targets;
      norm = globalGradNorm(grads, scale);
      if (!Number.isFinite(norm)) throw new Error(`step ${s + 1}: the gradient norm is ${norm} (loss ${nll / targets}); lower the learning rate`);
      adamwStep(params, grads, opt, lr, { beta1: cfg.adamBeta1, beta2: cfg.adamBeta2, eps: cfg.adamEpsilon, weightDecay: cfg.weightDecay }, scale * clipCoefficient(norm, cfg.maxGradNorm));
      loss = nll / targets;
    } else {
      progress.note(`step ${s + 1}: no supervised tokens in its batch (all labels masked or cut); no update`);
    }
    const secs = (performance.now() - t0) / 1000;
    const rec: StepRecord = { step: s + 1, loss, lr, grad_norm: norm, tokens_per_s: secs > 0 ? tokens / secs : 0, seconds: secs };
    await log.append(rec);
    records.push(rec);
    progress.step(rec);
    await hooks.onStep?.(rec);
    const done = s + 1;
    if (done < totalSteps && hooks.shouldStop?.(rec, records)) {
      end = done;
      progress.note(`stopped at step ${done} (shouldStop)`);
      break;
    }
    if (cfg.evalSteps > 0 && done % cfg.evalSteps === 0 && done < totalSteps) {
      const e = await evaluate(done);
      if (e) progress.note(`eval step ${done}: loss ${e.eval_loss.toFixed(4)} over ${e.eval_tokens} tokens`);
    }
    if (cfg.saveSteps > 0 && done % cfg.saveSteps === 0 && done < totalSteps) await saveCheckpoint(done, loss);
  }
  progress.done();

  // The end: a final checkpoint (so --resume of a finished run is a no-op), the model files
  // at the top of the output folder, a last eval, and the loss curve.
  const lastLoss = records.length ? records[records.length - 1].loss : null;
  if (!resumedFrom || step < end) {
    if (!(await hasCheckpoint(cfg.output, end))) await saveCheckpoint(end, lastLoss);
  }
  await writeModelFiles(cfg.output, exp, byName);
  if (evalDs && !evals.some((e) => e.step === end)) {
    const e = await evaluate(end);
    if (e) progress.note(`eval: loss ${e.eval_loss.toFixed(4)} over ${e.eval_tokens} tokens`);
  }
  await writeFileAtomic(join(cfg.output, 'loss.svg'), lossCurveSvg(records, evals));
  if (lastLoss !== null) progress.note(`done: ${end} steps, last loss ${lastLoss.toFixed(4)}, lr ${fmtLr(records[records.length - 1].lr)}; model files in ${cfg.output}`);
  return {
    config: cfg, steps: end, totalSteps, resumedFrom, records, evals,
    params: params.map((p) => ({ name: p.name, numel: p.data.length })),
  };
}

async function hasCheckpoint(dir: string, step: number): Promise<boolean> {
  return (await readdir(dir)).includes(`checkpoint-${step}`);
}

function addInto(acc: Float32Array, x: Float32Array): void {
  for (let i = 0; i < acc.length; i++) acc[i] += x[i];
}
