/**
 * Hugging Face sharded checkpoints: `*.index.json` = {"metadata": {...}, "weight_map":
 * {tensor name: shard file}}. The shard format is the caller's business (`openShard`
 * opens one .bin or .safetensors file), so one merge serves both formats.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import type { HostTensor } from '../tensor.js';
import { WeightFileError, type TensorInfo, type WeightSource } from './types.js';

/** Parse and validate the weight_map: tensor name -> shard file name, in index order. */
function parseWeightMap(text: string, indexPath: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new WeightFileError(`${indexPath}: not valid JSON: ${(e as Error).message}`);
  }
  const weightMap = typeof json === 'object' && json !== null ? (json as { weight_map?: unknown }).weight_map : undefined;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new WeightFileError(`${indexPath}: no "weight_map" object (expected a Hugging Face *.index.json)`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new WeightFileError(`${indexPath}: weight_map entry "${name}" is not a file name`);
    }
    map.set(name, shard);
  }
  return map;
}

/**
 * Open a sharded checkpoint from its index. Every shard is opened once, up front (so
 * `info` can stay synchronous and a broken index fails here, not mid-load); the merged
 * source lists exactly the weight_map's tensors and closes all shards on close().
 */
export async function openShardedIndex(
  indexPath: string,
  openShard: (file: string) => Promise<WeightSource>,
): Promise<WeightSource> {
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (e) {
    throw new WeightFileError(`${indexPath}: cannot read index: ${(e as Error).message}`);
  }
  const weightMap = parseWeightMap(text, indexPath);
  const dir = dirname(resolve(indexPath));

  // First tensor of each shard, to name it in a "shard missing" error.
  const shardFiles = new Map<string, string>();
  for (const [name, shard] of weightMap) if (!shardFiles.has(shard)) shardFiles.set(shard, name);

  const shards = new Map<string, WeightSource>();
  try {
    for (const [shard, firstTensor] of shardFiles) {
      const full = resolve(dir, shard);
      const rel = relative(dir, full);
      if (isAbsolute(shard) || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
        throw new WeightFileError(`${indexPath}: shard ${shard} (for tensor "${firstTensor}") is outside the index's folder`);
      }
      try {
        await stat(full);
      } catch {
        throw new WeightFileError(`${indexPath}: shard file ${shard} (holding tensor "${firstTensor}") is missing`);
      }
      shards.set(shard, await openShard(full));
    }
    for (const [name, shard] of weightMap) {
      if (!shards.get(shard)?.has(name)) {
        throw new WeightFileError(`${indexPath}: maps tensor "${name}" to ${shard}, but ${shard} has no tensor "${name}"`);
      }
    }
  } catch (e) {
    await Promise.allSettled([...shards.values()].map((s) => s.close()));
    throw e;
  }
  return new ShardedSource(indexPath, weightMap, shards);
}

class ShardedSource implements WeightSource {
  constructor(
    readonly path: string,
    private readonly weightMap: Map<string, string>,
    private readonly shards: Map<string, WeightSource>,
  ) {}

  private shardOf(name: string): WeightSource {
    const shard = this.weightMap.get(name);
    if (shard === undefined) throw new WeightFileError(`${this.path}: no tensor named "${name}"`);
    return this.shards.get(shard) as WeightSource;
  }

  names(): string[] { return [...this.weightMap.keys()]; }

  has(name: string): boolean { return this.weightMap.has(name); }

  info(name: string): TensorInfo { return this.shardOf(name).info(name); }

  read(name: string): Promise<HostTensor> { return this.shardOf(name).read(name); }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].map((s) => s.close()));
  }
}
