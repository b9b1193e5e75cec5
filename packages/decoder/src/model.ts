import {
  InputError, createSession, createWorkerSession, exportOnnx, halfToFloat,
  type Q4Options, type QuantizeMode, type RunTensor, type Session, type SessionOptions, type WeightFormat, type WeightSource,
} from '@mobillama/core';
import type { DecoderConfig, HfLlamaConfigJson } from './config.js';
import { FAST_IO, buildFastDecoderGraph, gqaSupported, type AttentionLowering } from './graph-fast.js';
import { loadInferenceDecoder, toInference, type InferenceDecoder } from './inference-weights.js';
import { KvStore } from './kv-cache.js';
import type { LoadedDecoder } from './weights.js';

/** Prompt tokens per forward step (DecoderLoadOptions.prefillChunk). */
export const DEFAULT_PREFILL_CHUNK = 512;

/** HF's masking value (torch.finfo(float32).min): finite, so fully padded rows stay NaN-free. */
const MASKED = -3.4028234663852886e38;

/**
 * Keys and values of every layer for a batch: each a buffer [B, KV, capacity, D] whose first
 * `length` positions are the cache (the rest is scratch). A forward step appends to these
 * buffers in place and returns a new handle; pass that one to the next step (an older
 * handle of the same generation is refused).
 */
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
  /** [B, T] second rotary ids of a 2-D rotary model (config.rope2d; rope-2d.ts); default positionIds. */
  readonly positionIds2?: readonly (readonly number[])[];
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
  /** Quantize a float checkpoint's linear layers at load (q8: int8 per channel, q4: int4 blocks of 32). */
  quantize?: QuantizeMode;
  /** q4 details for quantizing at load (block size, zero points). */
  q4?: Q4Options;
  /**
   * Attention lowering (graph-fast.ts): 'capacity' (default: zero-copy KV cache), 'auto' (an
   * If per layer: GroupQueryAttention for a prompt with an empty cache, 'capacity' otherwise;
   * ~10% faster prompts, ~6% slower decode steps here), or 'gqa' (GroupQueryAttention with
   * its shared KV buffer; copies the cache every step; needs an in-thread session and
   * head_dim % 16 == 0, else 'capacity' runs: see `model.attention`).
   */
  attention?: AttentionLowering;
  /**
   * MatMulNBits accuracy_level for q4 weights (default 4: int8 activations, the fastest
   * one-row kernel here).
   */
  accuracyLevel?: number;
  /** config.json contents, when they come from elsewhere (a VLM's text_config). */
  configJson?: HfLlamaConfigJson & { quantization?: unknown };
  /** An open weight source holding the decoder (a combined VLM checkpoint). */
  source?: WeightSource;
  /**
   * Longer prompts run in chunks of this many tokens (not with 'gqa'). Activations, and so
   * ORT's arena, scale with the chunk (attention scores grow with its square): at
   * MobiLlama-0.5B size a 512-token prompt in chunks of 128 peaks ~470 MB lower than whole,
   * but prefills ~20% slower (smaller GEMMs). Default 512: the usual prompt runs whole, long
   * ones stay bounded; Infinity never chunks.
   */
  prefillChunk?: number;
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

interface CacheTag {
  readonly store: KvStore;
  readonly version: number;
}

/**
 * A loaded decoder ready to run: one ORT session serves prefill and decode (one copy of
 * the weights, in the format they were loaded in); the token-embedding lookup happens here
 * so callers can splice in features; the KV cache lives in JS buffers fed to ORT as they are.
 */
export class DecoderModel {
  private readonly tags = new WeakMap<KvCache, CacheTag>();

  private constructor(
    readonly config: DecoderConfig,
    /** The linear layers' format as loaded (f32 also for bf16/f16 checkpoints widened at load). */
    readonly format: WeightFormat,
    readonly attention: AttentionLowering,
    readonly dir: string,
    private readonly embedTable: Float32Array | Uint16Array,
    private readonly source: WeightSource,
    private readonly session: Session,
    private readonly inThread: boolean,
    private readonly ownsSource: boolean,
    private readonly prefillChunk: number,
  ) {}

  static async load(dir: string, opts: DecoderLoadOptions = {}): Promise<DecoderModel> {
    const inf = await loadInferenceDecoder(dir, { quantize: opts.quantize, q4: opts.q4, configJson: opts.configJson, source: opts.source });
    try {
      return await DecoderModel.fromInference(inf, opts, !opts.source);
    } catch (e) {
      if (!opts.source) await inf.source.close();
      throw e;
    }
  }

  /** From loadDecoder's float weights (quantized at load when `opts.quantize` is set). */
  static async fromLoaded(loaded: LoadedDecoder, opts: DecoderLoadOptions = {}): Promise<DecoderModel> {
    return DecoderModel.fromInference(await toInference(loaded, opts.quantize, opts.q4), opts, true);
  }

  static async fromInference(inf: InferenceDecoder, opts: DecoderLoadOptions = {}, ownsSource = true): Promise<DecoderModel> {
    const { worker, quantize: _q, q4: _q4, attention: want, accuracyLevel, configJson: _c, source: _s, prefillChunk, ...sessionOpts } = opts;
    if (prefillChunk !== undefined && prefillChunk !== Infinity && (!Number.isInteger(prefillChunk) || prefillChunk < 1)) {
      throw new InputError(`prefillChunk must be a positive integer (or Infinity), got ${prefillChunk}`);
    }
    // GQA's shared buffer needs preallocated outputs, which only an in-thread session takes,
    // and its rotary head_dim % 16 == 0; otherwise the primitive (capacity) lowering runs.
    // `model.attention` says which one did.
    const attention: AttentionLowering = want === 'gqa' ? (!worker && gqaSupported(inf.config) ? 'gqa' : 'capacity') : want ?? 'capacity';
    const artifact = exportOnnx(buildFastDecoderGraph(inf.config, inf.weights, { attention, accuracyLevel }));
    const session = worker ? await createWorkerSession(artifact, sessionOpts) : await createSession(artifact, sessionOpts);
    // Only the embeddings are kept: ORT holds its own copy of every weight from here on, so
    // in-memory (quantized-at-load) tensors can be collected.
    return new DecoderModel(inf.config, inf.format, attention, inf.dir, inf.weights.embedTokens.data, inf.source, session, !worker, ownsSource, prefillChunk ?? DEFAULT_PREFILL_CHUNK);
  }

  /** Embedding rows for token ids, [ids.length, H]. */
  embed(ids: readonly number[]): Float32Array {
    const H = this.config.hiddenSize, V = this.config.vocabSize;
    const table = this.embedTable;
    const out = new Float32Array(ids.length * H);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`token id ${id} is outside the model's vocabulary (0..${V - 1}); does the tokenizer belong to this model?`);
      if (table instanceof Float32Array) out.set(table.subarray(id * H, (id + 1) * H), i * H);
      else {
        const half = halfTable();
        for (let j = 0; j < H; j++) out[i * H + j] = half[table[id * H + j]];
      }
    });
    return out;
  }

  emptyCache(batch: number): KvCache {
    const { numKvHeads: KV, headDim: D, numLayers, maxPositions } = this.config;
    return this.handle(new KvStore(numLayers, batch, KV, D, maxPositions));
  }

  private handle(store: KvStore): KvCache {
    const n = this.config.numLayers;
    const cache: KvCache = {
      batch: store.batch, length: store.length,
      keys: Array.from({ length: n }, (_, i) => store.tensor('keys', i)),
      values: Array.from({ length: n }, (_, i) => store.tensor('values', i)),
    };
    this.tags.set(cache, { store, version: store.version });
    return cache;
  }

  /** The store behind a cache handle; a cache built elsewhere ([B, KV, length, D] tensors) is copied in once. */
  private storeOf(past: KvCache): KvStore {
    const tag = this.tags.get(past);
    if (tag) {
      if (tag.version !== tag.store.version) {
        throw new Error('this KV cache was already extended by a later forward() call; pass the cache that call returned');
      }
      return tag.store;
    }
    const { numKvHeads: KV, headDim: D, numLayers, maxPositions } = this.config;
    const store = new KvStore(numLayers, past.batch, KV, D, maxPositions);
    store.reserve(past.length);
    past.keys.forEach((k, i) => {
      const cap = k.dims[2];
      if (k.dims[0] !== past.batch || k.dims[1] !== KV || k.dims[3] !== D || cap < past.length) throw new Error(`KV cache layer ${i} has dims [${k.dims.join(', ')}]`);
      for (let r = 0; r < past.batch * KV; r++) {
        store.keys[i].set((k.data as Float32Array).subarray(r * cap * D, (r * cap + past.length) * D), r * store.capacity * D);
        store.values[i].set((past.values[i].data as Float32Array).subarray(r * cap * D, (r * cap + past.length) * D), r * store.capacity * D);
      }
    });
    store.length = past.length;
    return store;
  }

  async forward(input: ForwardInput): Promise<ForwardOutput> {
    if (input.seq > this.prefillChunk && this.attention !== 'gqa') return this.forwardChunked(input, this.prefillChunk);
    return this.forwardOnce(input);
  }

  /** A long prompt as consecutive steps of `chunk` tokens; the logits asked for are gathered in order. */
  private async forwardChunked(input: ForwardInput, chunk: number): Promise<ForwardOutput> {
    const { batch: B, seq: T } = input;
    const H = this.config.hiddenSize, V = this.config.vocabSize;
    if (input.embeds.length !== B * T * H) throw new Error(`embeds have ${input.embeds.length} values, expected ${B}x${T}x${H}`);
    const want = input.logitsIndex ?? [T - 1];
    const P0 = input.past?.length ?? 0;
    const logits = new Float32Array(B * want.length * V);
    let past = input.past ?? this.emptyCache(B);
    // The cache grows chunk by chunk (in place), so each chunk scores only the slots before
    // it, not the whole prompt's capacity.
    for (let s = 0; s < T; s += chunk) {
      const e = Math.min(T, s + chunk), n = e - s;
      const embeds = new Float32Array(B * n * H);
      for (let b = 0; b < B; b++) embeds.set(input.embeds.subarray((b * T + s) * H, (b * T + e) * H), b * n * H);
      const slots = want.map((t, k) => [t, k]).filter(([t]) => t >= s && t < e);
      const out = await this.forwardOnce({
        embeds, batch: B, seq: n, past,
        positionIds: input.positionIds.map((r) => r.slice(s, e)),
        ...(input.positionIds2 ? { positionIds2: input.positionIds2.map((r) => r.slice(s, e)) } : {}),
        attentionMask: input.attentionMask.map((r) => r.slice(0, P0 + e)),
        logitsIndex: slots.length ? slots.map(([t]) => t - s) : [n - 1],
      });
      slots.forEach(([, k], j) => {
        for (let b = 0; b < B; b++) logits.set(out.logits.subarray((b * slots.length + j) * V, (b * slots.length + j + 1) * V), (b * want.length + k) * V);
      });
      past = out.cache;
    }
    return { logits, cache: past };
  }

  private async forwardOnce(input: ForwardInput): Promise<ForwardOutput> {
    const { batch: B, seq: T } = input;
    const { hiddenSize: H, numLayers: L } = this.config;
    if (input.embeds.length !== B * T * H) throw new Error(`embeds have ${input.embeds.length} values, expected ${B}x${T}x${H}`);
    const store = input.past ? this.storeOf(input.past) : new KvStore(L, B, this.config.numKvHeads, this.config.headDim, this.config.maxPositions);
    if (store.batch !== B) throw new Error(`cache batch ${store.batch} differs from input batch ${B}`);
    const P = store.length;
    if (input.attentionMask.length !== B) throw new Error(`attention mask has ${input.attentionMask.length} rows, expected ${B}`);
    input.attentionMask.forEach((m, b) => {
      if (m.length !== P + T) throw new Error(`attention mask row ${b} has ${m.length} entries, expected ${P + T}`);
    });
    const index = input.logitsIndex ?? [T - 1];
    const io = FAST_IO;
    const feeds: Record<string, RunTensor> = {
      [io.embeds]: { dtype: 'float32', dims: [B, T, H], data: input.embeds },
      [io.positions]: { dtype: 'int64', dims: [B, T], data: BigInt64Array.from(input.positionIds.flat(), (p) => BigInt(p)) },
      [io.logitsIndex]: { dtype: 'int64', dims: [index.length], data: BigInt64Array.from(index, (i) => BigInt(i)) },
    };
    if (this.config.rope2d) {
      const second = input.positionIds2 ?? input.positionIds;
      if (second.length !== B || second.some((r) => r.length !== T)) throw new Error(`second position ids must be ${B}x${T}`);
      feeds[io.positions2] = { dtype: 'int64', dims: [B, T], data: BigInt64Array.from(second.flat(), (p) => BigInt(p)) };
    }
    let out: Record<string, RunTensor>;
    if (this.attention === 'gqa') {
      this.checkGqaPositions(store, input, P);
      store.reserve(P + T);
      feeds[io.bias] = { dtype: 'float32', dims: [B, 1, T, P + T], data: attentionBias(input.attentionMask, P, T) };
      feeds[io.seqlensK] = { dtype: 'int32', dims: [B], data: new Int32Array(B).fill(P + T - 1) };
      feeds[io.totalLength] = { dtype: 'int32', dims: [], data: Int32Array.of(P + T) };
      const shared: Record<string, RunTensor> = {};
      for (let i = 0; i < L; i++) {
        feeds[io.pastKey(i)] = shared[io.presentKey(i)] = store.tensor('keys', i);
        feeds[io.pastValue(i)] = shared[io.presentValue(i)] = store.tensor('values', i);
      }
      // ORT writes the new rows into the shared buffers; the copies the binding returns are dropped.
      out = await this.session.run(feeds, this.session.outputNames, shared);
    } else {
      // An empty cache goes in as zero-length tensors, so a prefill scores no unused slots.
      const C = P > 0 ? store.capacity : 0;
      feeds[io.bias] = { dtype: 'float32', dims: [B, 1, T, C + T], data: capacityBias(input.attentionMask, P, C, T) };
      for (let i = 0; i < L; i++) {
        // A worker session takes its feeds by transfer: give it copies, the store keeps its buffers.
        const k = C > 0 ? store.tensor('keys', i) : store.empty(), v = C > 0 ? store.tensor('values', i) : store.empty();
        feeds[io.pastKey(i)] = this.inThread ? k : { ...k, data: (k.data as Float32Array).slice() };
        feeds[io.pastValue(i)] = this.inThread ? v : { ...v, data: (v.data as Float32Array).slice() };
      }
      out = await this.session.run(feeds);
      store.reserve(P + T);
      for (let i = 0; i < L; i++) store.write(i, out[io.newKey(i)].data as Float32Array, out[io.newValue(i)].data as Float32Array, T);
    }
    store.length = P + T;
    store.version++;
    return { logits: out[io.logits].data as Float32Array, cache: this.handle(store) };
  }

  /**
   * GroupQueryAttention rotates by cache slot, not by position id. That equals HF's position
   * ids when, in each row, position − slot is the same for every real token (left padding;
   * RoPE scores depend only on position differences). Anything else is refused.
   */
  private checkGqaPositions(store: KvStore, input: ForwardInput, P: number): void {
    for (let b = 0; b < input.batch; b++) {
      for (let t = 0; t < input.seq; t++) {
        if (input.attentionMask[b][P + t] === 0) continue;
        const off = input.positionIds[b][t] - (P + t);
        if (store.rowOffsets[b] === null) store.rowOffsets[b] = off;
        else if (store.rowOffsets[b] !== off) {
          throw new InputError('the gqa attention lowering needs position ids that advance with the cache (left padding); use attention "capacity" for others');
        }
      }
    }
    if (input.seq > 1 && P > 0 && input.batch > 1) throw new InputError('the gqa attention lowering extends a cache by several tokens only for batch size 1');
  }

  async dispose(): Promise<void> {
    await this.session.release();
    if (this.ownsSource) await this.source.close();
  }
}

let halfLookup: Float32Array | null = null;
/** float16 bits → float32, all 65536 of them (F16 embedding rows are widened through it). */
function halfTable(): Float32Array {
  halfLookup ??= Float32Array.from({ length: 65536 }, (_, h) => halfToFloat(h));
  return halfLookup;
}

/**
 * The additive bias [B, 1, T, C + T] of the capacity lowering: columns [0, C) are cache
 * slots (valid below P, by the mask), then the T new positions (causal, by the mask).
 */
export function capacityBias(mask: readonly number[][], past: number, capacity: number, seq: number): Float32Array {
  const batch = mask.length, width = capacity + seq;
  const bias = new Float32Array(batch * seq * width);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      const row = (b * seq + t) * width;
      for (let j = 0; j < capacity; j++) if (j >= past || mask[b][j] === 0) bias[row + j] = MASKED;
      for (let j = 0; j < seq; j++) if (j > t || mask[b][past + j] === 0) bias[row + capacity + j] = MASKED;
    }
  }
  return bias;
}
