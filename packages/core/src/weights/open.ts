import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { openSafetensors } from './safetensors.js';
import { openShardedIndex } from './sharded.js';
import { openTorchBin } from './torch-bin.js';
import { WeightFileError, type WeightSource } from './types.js';

/** Opens one weight file by its extension (.safetensors, .bin/.pt/.pth, or a *.index.json). */
export async function openWeightFile(path: string): Promise<WeightSource> {
  const name = basename(path);
  if (name.endsWith('.index.json')) {
    const open = name.includes('safetensors') ? openSafetensors : openTorchBin;
    return openShardedIndex(path, open);
  }
  if (name.endsWith('.safetensors')) return openSafetensors(path);
  if (/\.(bin|pt|pth)$/.test(name)) return openTorchBin(path);
  throw new WeightFileError(`${path}: not a weight file (expected .safetensors, .bin, .pt, .pth or *.index.json)`);
}

/** The weight files of a checkpoint folder, in HF's order of preference. */
export async function findWeightFiles(dir: string, prefixes: readonly string[] = ['model', 'pytorch_model']): Promise<string | null> {
  const files = new Set(await readdir(dir));
  for (const p of prefixes) {
    const st = p === 'pytorch_model' ? 'bin' : 'safetensors';
    for (const f of [`${p}.${st}.index.json`, `${p}.${st}`]) if (files.has(f)) return join(dir, f);
  }
  for (const f of [...files].sort()) if (f.endsWith('.safetensors.index.json') || f.endsWith('.bin.index.json')) return join(dir, f);
  const single = [...files].filter((f) => f.endsWith('.safetensors')).sort();
  if (single.length === 1) return join(dir, single[0]);
  const bins = [...files].filter((f) => /\.(bin|pt|pth)$/.test(f)).sort();
  if (single.length === 0 && bins.length === 1) return join(dir, bins[0]);
  return null;
}

/**
 * Opens a weight file, or a checkpoint folder (model.safetensors, a sharded index,
 * pytorch_model.bin, …).
 */
export async function openWeights(path: string): Promise<WeightSource> {
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (e) {
    throw new WeightFileError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (!isDir) return openWeightFile(path);
  const file = await findWeightFiles(path);
  if (!file) throw new WeightFileError(`${path}: no weight files found (model.safetensors, pytorch_model.bin or a *.index.json)`);
  return openWeightFile(file);
}
