import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { openSafetensors, writeFileAtomic, writeSafetensors, type HostTensor } from '@mobillama/core';
import type { AdamWState } from './optimizer.js';
import type { Param } from './params.js';
import type { RngState } from './rng.js';

/** A safetensors file holding trainable params under export keys (LLaVA / PEFT / HF names). */
export interface ParamFile {
  /** Relative to the checkpoint folder. */
  readonly path: string;
  /** param name → key in the file. */
  readonly keys: ReadonlyMap<string, string>;
  readonly metadata?: Record<string, string>;
  /** Frozen tensors written beside the params (a full vision tower when only part of it trains). */
  readonly extra?: () => Promise<Record<string, HostTensor>>;
}

/** A small file written beside the weights: text, or a copy of a source file (configs, tokenizer). */
export interface SideFile {
  readonly path: string;
  readonly text?: string;
  readonly copyFrom?: string;
}

/** What a checkpoint holds of the model, besides the optimizer: built once per run (export.ts). */
export interface ModelExport {
  readonly paramFiles: readonly ParamFile[];
  readonly sideFiles: readonly SideFile[];
}

/** trainer_state.json: everything besides tensors that a resumed run needs to continue exactly. */
export interface TrainerState {
  readonly format: 'mobillama-v-trainer/1';
  /** Optimizer steps done. */
  readonly global_step: number;
  readonly total_steps: number;
  /** The epoch and micro-batch (0-based, within the epoch) the next step starts at. */
  readonly epoch: number;
  readonly micro_batch: number;
  /** State of the generator the epoch's sample order is drawn from (before drawing it). */
  readonly data_rng: RngState;
  readonly seed: number;
  /** Settings that must not change on --resume (the step → data mapping depends on them). */
  readonly fingerprint: Record<string, string | number | boolean>;
  /** The last logged step's loss, for a quick look. */
  readonly last_loss: number | null;
}

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer_state.json';
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

function tensorOf(p: Param): HostTensor {
  return { dtype: 'F32', shape: p.shape, data: p.data };
}

/** Writes the model files (param files and side files) into `dir`, each atomically. */
export async function writeModelFiles(dir: string, exp: ModelExport, params: ReadonlyMap<string, Param>): Promise<void> {
  for (const f of exp.paramFiles) {
    const tensors: Record<string, HostTensor> = f.extra ? await f.extra() : {};
    for (const [name, key] of f.keys) {
      const p = params.get(name);
      if (!p) throw new Error(`checkpoint: no param ${name} for ${f.path}`);
      tensors[key] = tensorOf(p);
    }
    const path = join(dir, f.path);
    await mkdir(dirname(path), { recursive: true });
    await writeSafetensors(path, tensors, f.metadata);
  }
  for (const s of exp.sideFiles) {
    const path = join(dir, s.path);
    await mkdir(dirname(path), { recursive: true });
    if (s.text !== undefined) await writeFileAtomic(path, s.text);
    else if (s.copyFrom !== undefined) {
      const tmp = `${path}.${process.pid}.tmp`;
      await copyFile(s.copyFrom, tmp);
      await rename(tmp, path);
    }
  }
}

/**
 * Writes `checkpoint-<step>` in `outputDir`: model files, optimizer moments and
 * trainer_state.json go into a temporary folder, fsync'd, which is then renamed into place,
 * so a run killed at any moment leaves either the whole checkpoint or none of it.
 */
export async function writeCheckpoint(
  outputDir: string, step: number, exp: ModelExport, params: ReadonlyMap<string, Param>, opt: AdamWState, state: TrainerState,
): Promise<string> {
  const final = join(outputDir, `checkpoint-${step}`);
  const tmp = join(outputDir, `.tmp-checkpoint-${step}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeModelFiles(tmp, exp, params);
  const moments: Record<string, HostTensor> = {};
  for (const p of params.values()) {
    moments[`exp_avg.${p.name}`] = { dtype: 'F32', shape: p.shape, data: opt.expAvg.get(p.name)! };
    moments[`exp_avg_sq.${p.name}`] = { dtype: 'F32', shape: p.shape, data: opt.expAvgSq.get(p.name)! };
  }
  await writeSafetensors(join(tmp, OPTIMIZER_FILE), moments, { step: String(opt.step) });
  await writeFileAtomic(join(tmp, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  await fsyncDir(tmp);
  await rm(final, { recursive: true, force: true });
  await rename(tmp, final);
  await fsyncDir(outputDir);
  return final;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  } finally {
    await fh.close();
  }
}

/** Removes half-written checkpoint folders a killed run left behind. */
export async function removeStaleTemps(outputDir: string): Promise<void> {
  for (const e of await readdir(outputDir).catch(() => [] as string[])) {
    if (e.startsWith('.tmp-checkpoint-')) await rm(join(outputDir, e), { recursive: true, force: true });
  }
}

/** The complete checkpoint folders in `outputDir` (those with their trainer state), oldest first. */
async function completeCheckpoints(outputDir: string): Promise<{ step: number; dir: string }[]> {
  const out: { step: number; dir: string }[] = [];
  for (const e of await readdir(outputDir).catch(() => [] as string[])) {
    const m = CHECKPOINT_RE.exec(e);
    if (!m) continue;
    const dir = join(outputDir, e);
    if (await stat(join(dir, STATE_FILE)).then((s) => s.isFile(), () => false)) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint folder in `outputDir`, or null. */
export async function findLatestCheckpoint(outputDir: string): Promise<string | null> {
  return (await completeCheckpoints(outputDir)).at(-1)?.dir ?? null;
}

/**
 * Deletes all but the newest `keep` complete checkpoints (HF's save_total_limit; 0 keeps all)
 * and returns what it deleted. Called after a checkpoint is in place, so one always survives.
 */
export async function pruneCheckpoints(outputDir: string, keep: number): Promise<string[]> {
  if (keep <= 0) return [];
  const old = (await completeCheckpoints(outputDir)).slice(0, -keep).map((c) => c.dir);
  for (const dir of old) await rm(dir, { recursive: true, force: true });
  return old;
}

/** Loads params (through the export's key maps), optimizer moments and the trainer state of a checkpoint. */
export async function readCheckpoint(dir: string, exp: ModelExport, params: ReadonlyMap<string, Param>, opt: AdamWState): Promise<TrainerState> {
  const state = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as TrainerState;
  if (state.format !== 'mobillama-v-trainer/1') throw new Error(`${join(dir, STATE_FILE)}: unknown format ${String(state.format)}`);
  for (const f of exp.paramFiles) {
    const src = await openSafetensors(join(dir, f.path));
    try {
      for (const [name, key] of f.keys) params.get(name)!.data.set(await readF32(src, key, params.get(name)!));
    } finally {
      await src.close();
    }
  }
  const src = await openSafetensors(join(dir, OPTIMIZER_FILE));
  try {
    for (const p of params.values()) {
      opt.expAvg.get(p.name)!.set(await readF32(src, `exp_avg.${p.name}`, p));
      opt.expAvgSq.get(p.name)!.set(await readF32(src, `exp_avg_sq.${p.name}`, p));
    }
  } finally {
    await src.close();
  }
  opt.step = state.global_step;
  return state;
}

async function readF32(src: Awaited<ReturnType<typeof openSafetensors>>, key: string, p: Param): Promise<Float32Array> {
  const t = await src.read(key);
  if (t.dtype !== 'F32' || t.shape.join('x') !== p.shape.join('x')) {
    throw new Error(`${src.path}: ${key} is ${t.dtype}[${t.shape.join(', ')}], expected F32[${p.shape.join(', ')}]`);
  }
  return t.data as Float32Array;
}
