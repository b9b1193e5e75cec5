import { InputError } from '@mobillama/core';
import { Sampler, type SamplingOptions } from './sampling.js';
import { StopStringMatcher, TextStreamer } from './text-stream.js';
import type { Tokenizer } from './tokenizer/tokenizer.js';
import type { DecoderModel, KvCache } from './model.js';

export interface GenerateOptions extends SamplingOptions {
  /** Default: 256, or fewer if the context window has less room. */
  maxNewTokens?: number;
  /** Generation ends before any of these strings; they are not part of the text. */
  stop?: readonly string[];
  /** Keep going past EOS (benchmarks, as llama.cpp's --ignore-eos). */
  ignoreEos?: boolean;
  /** Aborting ends generation after the current step, with finishReason 'abort'. */
  signal?: AbortSignal;
}

/** A prompt as token ids, or as ready embeddings (image features spliced in) plus the ids around them. */
export type GenerationPrompt =
  | { readonly ids: readonly number[] }
  | {
    readonly embeds: Float32Array; readonly seq: number; readonly contextIds: readonly number[];
    /** The second rotary ids of a 2-D rotary model's prompt (rope-2d.ts); default 0..seq-1. */
    readonly positionIds2?: readonly number[];
  };

export interface GenerationTimings {
  readonly promptTokens: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  /** Time to first token: the prefill plus choosing the first token. */
  readonly ttftMs: number;
  readonly prefillTokS: number;
  readonly decodeTokS: number;
}

export interface GenerationResult {
  readonly tokens: number[];
  readonly text: string;
  readonly finishReason: 'stop' | 'length' | 'abort';
  readonly timings: GenerationTimings;
}

export interface GenerationPiece {
  readonly token: number;
  /** New text that is safe to show (may be empty while a character or stop string is pending). */
  readonly text: string;
}

/**
 * Autoregressive generation with a KV cache: one prefill over the prompt, then one decode
 * step per token. Yields each token with the text it completes; returns the whole result.
 */
export async function* generateStream(
  model: DecoderModel, tokenizer: Tokenizer, prompt: GenerationPrompt, opts: GenerateOptions = {},
): AsyncGenerator<GenerationPiece, GenerationResult> {
  const V = model.config.vocabSize;
  const contextIds = 'ids' in prompt ? prompt.ids : prompt.contextIds;
  const seq = 'ids' in prompt ? prompt.ids.length : prompt.seq;
  if (seq === 0) throw new InputError('the prompt is empty');
  // Without an explicit limit, generate up to 256 tokens or as many as the context has room for.
  const maxNew = opts.maxNewTokens ?? Math.max(1, Math.min(256, model.config.maxPositions - seq));
  if (seq + maxNew > model.config.maxPositions) {
    throw new InputError(`prompt (${seq} tokens) + max new tokens (${maxNew}) exceed the model's ${model.config.maxPositions} positions`);
  }
  const embeds = 'ids' in prompt ? model.embed(prompt.ids) : prompt.embeds;
  const eos = new Set(opts.ignoreEos ? [] : [...model.config.eosIds, ...(tokenizer.eosId !== null ? [tokenizer.eosId] : [])]);
  const sampler = new Sampler(opts);
  const streamer = new TextStreamer(tokenizer, contextIds.filter((i) => i >= 0));
  const stops = new StopStringMatcher(opts.stop ?? []);
  const history = contextIds.filter((i) => i >= 0);
  const tokens: number[] = [];
  let text = '';
  let finishReason: GenerationResult['finishReason'] = 'length';

  const t0 = performance.now();
  let out = await model.forward({
    embeds, batch: 1, seq, positionIds: [Array.from({ length: seq }, (_, i) => i)], attentionMask: [new Array(seq).fill(1)],
    ...('positionIds2' in prompt && prompt.positionIds2 ? { positionIds2: [prompt.positionIds2] } : {}),
  });
  const tPrefill = performance.now();
  let ttft = 0;
  let cache: KvCache = out.cache;
  for (let step = 0; step < maxNew; step++) {
    if (opts.signal?.aborted) { finishReason = 'abort'; break; }
    const token = sampler.next(out.logits.subarray(0, V), history);
    if (step === 0) ttft = performance.now() - t0;
    if (eos.has(token)) { finishReason = 'stop'; break; }
    tokens.push(token);
    history.push(token);
    const filtered = stops.push(streamer.push(token));
    text += filtered.text;
    yield { token, text: filtered.text };
    if (filtered.stopped) { finishReason = 'stop'; break; }
    if (step === maxNew - 1) break;
    out = await model.forward({
      embeds: model.embed([token]), batch: 1, seq: 1, positionIds: [[cache.length]],
      attentionMask: [new Array(cache.length + 1).fill(1)], past: cache,
    });
    cache = out.cache;
  }
  if (!stops.stopped) {
    const tail = stops.push(streamer.flush());
    const rest = tail.text + (tail.stopped ? '' : stops.flush());
    if (tail.stopped) finishReason = 'stop';
    if (rest) {
      text += rest;
      yield { token: -1, text: rest };
    }
  }
  const tEnd = performance.now();
  const prefillMs = tPrefill - t0, decodeMs = tEnd - tPrefill;
  return {
    tokens, text, finishReason,
    timings: {
      promptTokens: seq, prefillMs, decodeMs, ttftMs: ttft,
      prefillTokS: seq / (prefillMs / 1000),
      decodeTokS: tokens.length > 1 ? (tokens.length - 1) / (decodeMs / 1000) : 0,
    },
  };
}

/** Runs generateStream to the end. */
export async function generate(
  model: DecoderModel, tokenizer: Tokenizer, prompt: GenerationPrompt, opts: GenerateOptions = {},
): Promise<GenerationResult> {
  const it = generateStream(model, tokenizer, prompt, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
