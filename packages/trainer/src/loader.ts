import { isAbsolute, join } from 'node:path';
import type { Tokenizer } from '@mobillama/decoder';
import { preprocessImage, type ClipPreprocessConfig } from '@mobillama/vision';
import type { LoadedSample } from './collate.js';
import type { LlavaDataset } from './dataset.js';
import { DataError } from './errors.js';
import { tokenizeSample, type TrainTemplate } from './masking.js';
import { Rng, type RngState } from './rng.js';

/** Which samples micro-batch `index` of `epoch` holds. */
export interface MicroBatchRef {
  readonly epoch: number;
  readonly index: number;
  readonly samples: readonly number[];
}

/**
 * The sample order: each epoch is a permutation of the data drawn from its own seeded
 * generator (Rng.seeded(seed, "data-order/<epoch>")), cut into micro-batches of batchSize
 * (the last one may be smaller). A step → samples mapping therefore depends only on the
 * seed, the data size and the batch settings: a resumed run sees exactly the batches an
 * uninterrupted one would.
 */
export class DataOrder {
  readonly microBatchesPerEpoch: number;
  private cached: { epoch: number; perm: Uint32Array } | null = null;

  constructor(readonly size: number, readonly batchSize: number, readonly shuffle: boolean, readonly seed: number) {
    this.microBatchesPerEpoch = Math.ceil(size / batchSize);
  }

  /** The generator state the epoch's permutation is drawn from (kept in trainer_state.json). */
  rngState(epoch: number): RngState {
    return Rng.seeded(this.seed, `data-order/${epoch}`).state();
  }

  permutation(epoch: number): Uint32Array {
    if (this.cached?.epoch === epoch) return this.cached.perm;
    const perm = new Uint32Array(this.size);
    for (let i = 0; i < this.size; i++) perm[i] = i;
    if (this.shuffle) new Rng(this.rngState(epoch)).shuffle(perm);
    this.cached = { epoch, perm };
    return perm;
  }

  microBatch(epoch: number, index: number): MicroBatchRef {
    const perm = this.permutation(epoch);
    const start = index * this.batchSize;
    return { epoch, index, samples: Array.from(perm.subarray(start, Math.min(this.size, start + this.batchSize))) };
  }
}

export interface SampleLoaderOptions {
  readonly tokenizer: Tokenizer;
  readonly template: TrainTemplate;
  /** See TrainConfig.independentTurns. */
  readonly independentTurns?: boolean;
  readonly modelMaxLength: number;
  readonly imageFolder?: string;
  readonly preprocess: ClipPreprocessConfig;
  readonly aspect: 'pad' | 'crop';
}

/** Reads, tokenizes and masks one entry, and decodes + preprocesses its image (sharp, off the main thread). */
export async function loadSample(ds: LlavaDataset, index: number, o: SampleLoaderOptions): Promise<LoadedSample> {
  const entry = await ds.get(index);
  const s = tokenizeSample(entry, o.tokenizer, o.template, { modelMaxLength: o.modelMaxLength, independentTurns: o.independentTurns });
  let pixels: Float32Array | null = null;
  if (s.image !== null) {
    const path = isAbsolute(s.image) || !o.imageFolder ? s.image : join(o.imageFolder, s.image);
    try {
      pixels = await preprocessImage(path, o.preprocess, { aspect: o.aspect });
    } catch (e) {
      throw new DataError(`sample ${entry.id}: ${(e as Error).message}`);
    }
  }
  return { ...s, pixels };
}

/**
 * Loads item k + 1 (the next micro-batch: JSON, tokens, image decoding) as soon as item k
 * is taken, so it is read while ORT computes on item k in its worker thread. An error in a
 * prefetched item surfaces when that item is taken.
 */
export class Prefetcher<T> {
  private readonly pending = new Map<number, Promise<T>>();

  constructor(private readonly load: (k: number) => Promise<T>, private readonly depth = 1, private readonly limit = Infinity) {}

  private start(k: number): Promise<T> {
    let p = this.pending.get(k);
    if (!p) {
      p = this.load(k);
      p.catch(() => undefined); // reported by take()
      this.pending.set(k, p);
    }
    return p;
  }

  /** Item k; starts loading k + 1 … k + depth before returning. */
  take(k: number): Promise<T> {
    const p = this.start(k);
    this.pending.delete(k);
    for (const key of this.pending.keys()) if (key < k) this.pending.delete(key);
    for (let j = 1; j <= this.depth && k + j < this.limit; j++) this.start(k + j);
    return p;
  }

  /** Whether item k has been started (tests use it to see the overlap). */
  started(k: number): boolean {
    return this.pending.has(k);
  }
}
