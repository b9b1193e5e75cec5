import { InputError, createSession, createWorkerSession, exportOnnx, type RunTensor, type Session, type SessionOptions } from '@mobillama/core';
import type { DecoderConfig } from './config.js';
import { DECODER_IO, buildDecoderGraph } from './graph.js';
import { loadDecoder, type LoadedDecoder } from './weights.js';

/** HF's masking value (torch.finfo(float32).min): finite, so fully padded rows stay NaN-free. */
const MASKED = -3.4028234663852886e38;

/** Keys and values of every layer for a batch: each [B, KV, length, D]. */
export interface KvCache {
  readonly batch: number;
  readonly length: number;
  readonly keys: readonly RunTensor[];
  readonly values: readonly RunTensor[];
}

export interface ForwardInput {
  /** [B, T, H] row-major. */
  readonly embeds: Float32Array;
  readonly batch: number;
  readonly seq: number;
  /** [B, T] positions (HF generate: cumsum(mask) - 1). */
  readonly positionIds: readonly number[][];
  /** [B, P + T]: 1 for real tokens, 0 for padding, over cached and new positions. */
  readonly attentionMask: readonly number[][];
  readonly past?: KvCache;
  /** Positions in [0, T) whose logits are wanted (default: the last). */
  readonly logitsIndex?: readonly number[];
}

export interface ForwardOutput {
  /** [B, N, V]. */
  readonly logits: Float32Array;
  readonly cache: KvCache;
}

export interface DecoderLoadOptions extends SessionOptions {
  /** Run ORT in a worker thread (servers); default in-thread. */
  worker?: boolean;
}

/** The additive attention bias [B, 1, T, P+T]: causal within the new tokens, padding from the mask. */
export function attentionBias(mask: readonly number[][], past: number, seq: number): Float32Array {
  const batch = mask.length, total = past + seq;
  const bias = new Float32Array(batch * seq * total);
  for (let b = 0; b < batch; b++) {
    if (mask[b].length !== total) throw new Error(`attention mask row ${b} has ${mask[b].length} entries, expected ${total}`);
    for (let t = 0; t < seq; t++) {
      const row = (b * seq + t) * total;
      for (let j = 0; j < total; j++) if (mask[b][j] === 0 || j > past + t) bias[row + j] = MASKED;
    }
  }
  return bias;
}

/**
 * A loaded decoder ready to run: one ORT session serves prefill and decode (one copy of
 * the weights); the token-embedding lookup happens here so callers can splice in features.
 */
export class DecoderModel {
  private constructor(
    readonly config: DecoderConfig,
    private readonly loaded: LoadedDecoder,
    private readonly session: Session,
  ) {}

  static async load(dir: string, opts: DecoderLoadOptions = {}): Promise<DecoderModel> {
    return DecoderModel.fromLoaded(await loadDecoder(dir), opts);
  }

  static async fromLoaded(loaded: LoadedDecoder, opts: DecoderLoadOptions = {}): Promise<DecoderModel> {
    const artifact = exportOnnx(buildDecoderGraph(loaded.config, loaded.weights));
    const { worker, ...sessionOpts } = opts;
    const session = worker ? await createWorkerSession(artifact, sessionOpts) : await createSession(artifact, sessionOpts);
    return new DecoderModel(loaded.config, loaded, session);
  }

  get dir(): string {
    return this.loaded.dir;
  }

  /** Embedding rows for token ids, [ids.length, H]. */
  embed(ids: readonly number[]): Float32Array {
    const H = this.config.hiddenSize, V = this.config.vocabSize;
    const table = this.loaded.weights.embedTokens.data;
    const out = new Float32Array(ids.length * H);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`token id ${id} is outside the model's vocabulary (0..${V - 1}); does the tokenizer belong to this model?`);
      out.set(table.subarray(id * H, (id + 1) * H), i * H);
    });
    return out;
  }

  emptyCache(batch: number): KvCache {
    const { numKvHeads: KV, headDim: D, numLayers } = this.config;
    const empty = (): RunTensor => ({ dtype: 'float32', dims: [batch, KV, 0, D], data: new Float32Array(0) });
    return { batch, length: 0, keys: Array.from({ length: numLayers }, empty), values: Array.from({ length: numLayers }, empty) };
  }

  async forward(input: ForwardInput): Promise<ForwardOutput> {
    const { batch: B, seq: T } = input;
    const H = this.config.hiddenSize;
    if (input.embeds.length !== B * T * H) throw new Error(`embeds have ${input.embeds.length} values, expected ${B}x${T}x${H}`);
    const past = input.past ?? this.emptyCache(B);
    if (past.batch !== B) throw new Error(`cache batch ${past.batch} differs from input batch ${B}`);
    const index = input.logitsIndex ?? [T - 1];
    const io = DECODER_IO;
    const feeds: Record<string, RunTensor> = {
      [io.embeds]: { dtype: 'float32', dims: [B, T, H], data: input.embeds },
      [io.positions]: { dtype: 'int64', dims: [B, T], data: BigInt64Array.from(input.positionIds.flat(), (p) => BigInt(p)) },
      [io.bias]: { dtype: 'float32', dims: [B, 1, T, past.length + T], data: attentionBias(input.attentionMask, past.length, T) },
      [io.logitsIndex]: { dtype: 'int64', dims: [index.length], data: BigInt64Array.from(index, (i) => BigInt(i)) },
    };
    for (let i = 0; i < this.config.numLayers; i++) {
      feeds[io.pastKey(i)] = past.keys[i];
      feeds[io.pastValue(i)] = past.values[i];
    }
    const out = await this.session.run(feeds);
    const keys: RunTensor[] = [], values: RunTensor[] = [];
    for (let i = 0; i < this.config.numLayers; i++) {
      keys.push(out[io.presentKey(i)]);
      values.push(out[io.presentValue(i)]);
    }
    return { logits: out[io.logits].data as Float32Array, cache: { batch: B, length: past.length + T, keys, values } };
  }

  async dispose(): Promise<void> {
    await this.session.release();
    await this.loaded.source.close();
  }
}
