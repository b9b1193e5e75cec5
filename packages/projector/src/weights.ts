import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadFloatWeight, openWeights, type WeightRef, type WeightSource } from '@mobillama/core';
import {
  ProjectorError, projectorDepth, projectorTypeOf, type HfProjectorConfigJson, type ProjectorConfig, type ProjectorType,
} from './config.js';

/** One Linear, PyTorch layout: weight [out, in], bias [out] (absent when the checkpoint has none). */
export interface ProjectorLinear {
  readonly weight: WeightRef;
  readonly bias: WeightRef | null;
}

export interface ProjectorWeights {
  /** In order; an exact GELU sits between consecutive Linears. */
  readonly linears: readonly ProjectorLinear[];
}

export interface LoadedProjector {
  readonly config: ProjectorConfig;
  readonly weights: ProjectorWeights;
  /** 'llava' (mm_projector.N / mm_projector) or 'llava-hf' (multi_modal_projector.linear_N). */
  readonly naming: 'llava' | 'llava-hf';
  readonly source: WeightSource;
}

export interface LoadProjectorOptions {
  /** Expected type; default: config.json's mm_projector_type when there is one, else inferred from the keys. */
  type?: ProjectorType;
  /** An already open weight source (a combined checkpoint); not closed on failure. */
  source?: WeightSource;
  /** config.json contents; default: the folder's, when present. */
  configJson?: HfProjectorConfigJson | null;
}

export interface FoundProjectorWeights { naming: LoadedProjector['naming']; weightNames: string[] }

/**
 * Finds the projector's Linear weights by name, under any prefix: LLaVA's
 * `…mm_projector.{0,2,4…}.weight` (Sequential: Linears at even indices, GELUs between) or
 * `…mm_projector.weight` (linear), llava-hf's `…multi_modal_projector.linear_{1,2…}.weight`.
 */
export function findProjectorWeights(names: readonly string[]): FoundProjectorWeights {
  const seq = new Map<string, Map<number, string>>();
  const add = (prefix: string, i: number, n: string) => {
    if (!seq.has(prefix)) seq.set(prefix, new Map());
    seq.get(prefix)!.set(i, n);
  };
  const single: string[] = [];
  let hfSeen = false;
  for (const n of names) {
    let m = /^(.*\.)?mm_projector\.(\d+)\.weight$/.exec(n);
    if (m) { add(`llava:${m[1] ?? ''}`, Number(m[2]), n); continue; }
    m = /^(.*\.)?multi_modal_projector\.linear_(\d+)\.weight$/.exec(n);
    if (m) { add(`llava-hf:${m[1] ?? ''}`, Number(m[2]), n); hfSeen = true; continue; }
    if (/^(.*\.)?mm_projector\.weight$/.test(n)) single.push(n);
  }
  const candidates = seq.size + single.length;
  if (candidates === 0) throw new ProjectorError('no projector weights (mm_projector.* or multi_modal_projector.*) in the checkpoint');
  if (candidates > 1) throw new ProjectorError(`several projectors in the checkpoint: ${[...seq.keys(), ...single].join(', ')}`);
  if (single.length) return { naming: 'llava', weightNames: single };
  const [key, byIndex] = [...seq][0];
  const naming = hfSeen ? 'llava-hf' : 'llava';
  // LLaVA's Sequential puts Linears at 0, 2, 4, …; llava-hf numbers them 1, 2, ….
  const expected = (k: number) => (naming === 'llava' ? 2 * k : k + 1);
  const idx = [...byIndex.keys()].sort((a, b) => a - b);
  idx.forEach((i, k) => {
    if (i !== expected(k)) throw new ProjectorError(`projector ${key.split(':')[1]}: unexpected layer numbering ${idx.join(', ')}`);
  });
  return { naming, weightNames: idx.map((i) => byIndex.get(i)!) };
}

const MM_PROJECTOR_FILE = 'mm_projector.bin';

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}

async function readConfigJson(dir: string): Promise<HfProjectorConfigJson | null> {
  let text: string;
  try {
    text = await readFile(join(dir, 'config.json'), 'utf8');
  } catch {
    return null; // a bare mm_projector.bin folder has none
  }
  try {
    return JSON.parse(text) as HfProjectorConfigJson;
  } catch {
    throw new ProjectorError(`${join(dir, 'config.json')}: not valid JSON`);
  }
}

/**
 * Loads a projector from LLaVA's `mm_projector.bin`, a folder holding it (preferred over
 * the folder's other weight files), or any
 * checkpoint (safetensors, .bin, sharded) that contains projector keys in LLaVA or
 * llava-hf naming. The type is checked against (or inferred from) the keys.
 */
export async function loadProjector(pathOrDir: string, opts: LoadProjectorOptions = {}): Promise<LoadedProjector> {
  let dir = pathOrDir, weightsPath = pathOrDir;
  try {
    if (!(await stat(pathOrDir)).isDirectory()) dir = dirname(pathOrDir);
    // LLaVA's stage-1 output: the folder's projector file, whatever else is there.
    else if (await isFile(join(dir, MM_PROJECTOR_FILE))) weightsPath = join(dir, MM_PROJECTOR_FILE);
  } catch {
    // openWeights reports the missing path
  }
  const cfg = opts.configJson !== undefined ? opts.configJson : await readConfigJson(dir);
  const src = opts.source ?? await openWeights(weightsPath);
  try {
    const found = findProjectorWeights(src.names());
    const depth = found.weightNames.length;
    const expectedType = opts.type ?? cfg?.mm_projector_type;
    if (expectedType !== undefined && projectorDepth(expectedType) !== depth) {
      throw new ProjectorError(`${src.path}: projector type ${expectedType} needs ${projectorDepth(expectedType)} Linear layers, the weights have ${depth}`);
    }
    const act = cfg?.projector_hidden_act;
    if (act !== undefined && act !== 'gelu') throw new ProjectorError(`projector_hidden_act ${act} is not supported (gelu)`);
    const linears: ProjectorLinear[] = [];
    let prevOut: number | null = null;
    for (const wName of found.weightNames) {
      const shape = src.info(wName).shape;
      if (shape.length !== 2) throw new ProjectorError(`${src.path}: ${wName} is not a matrix (${shape.join('x')})`);
      if (prevOut !== null && shape[1] !== prevOut) throw new ProjectorError(`${src.path}: ${wName} takes ${shape[1]} inputs, the previous layer gives ${prevOut}`);
      prevOut = shape[0];
      const bName = wName.replace(/weight$/, 'bias');
      linears.push({ weight: await loadFloatWeight(src, wName), bias: src.has(bName) ? await loadFloatWeight(src, bName) : null });
    }
    const config: ProjectorConfig = {
      type: projectorTypeOf(depth),
      inDim: linears[0].weight.shape[1],
      outDim: linears[depth - 1].weight.shape[0],
    };
    const cfgIn = cfg?.mm_hidden_size ?? cfg?.vision_config?.hidden_size;
    if (cfgIn !== undefined && cfgIn !== config.inDim) throw new ProjectorError(`${src.path}: the config says ${cfgIn} vision features, the projector takes ${config.inDim}`);
    return { config, weights: { linears }, naming: found.naming, source: src };
  } catch (e) {
    if (!opts.source) await src.close();
    throw e;
  }
}
