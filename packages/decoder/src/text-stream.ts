/**
 * Streaming detokenization for generate(): turns token ids into text chunks that are safe to
 * show as they come (never half a UTF-8 character, spaces as a full decode gives them), and
 * holds back text that may turn out to be a stop string.
 */
import type { Tokenizer } from './tokenizer/tokenizer.js';

export interface TextStreamerOptions {
  /** Leave special tokens (`</s>`, …) out of the text. Default true. */
  skipSpecialTokens?: boolean;
}

/** Prompt tokens kept as decoding context: enough to settle the first token's leading space. */
const CONTEXT_TOKENS = 5;
/**
 * A UTF-8 character has at most 4 bytes and each token adds at least one, so once the text
 * has ended in U+FFFD for this many tokens in a row, the bytes are invalid, not partial.
 */
const MAX_PARTIAL_TOKENS = 4;

/**
 * Incremental detokenizer. Each push decodes a small window of recent tokens twice — up to
 * the last emitted token and up to the new one — and emits the difference (the scheme of
 * vLLM's incremental detokenizer), so the decoder's own space and byte handling apply.
 * Output is held back while it ends in U+FFFD (an incomplete byte-fallback character).
 *
 * Without `promptIds`, the concatenated output equals `tokenizer.decode(generated)` (the
 * first token's leading space dropped). With them, the output is the exact continuation of
 * the prompt's text (e.g. " Hello" after "ASSISTANT:").
 */
export class TextStreamer {
  private readonly ids: number[];
  /** Start of the decode window; tokens before it are settled. */
  private prefixOffset = 0;
  /** Tokens before this have been emitted. */
  private readOffset: number;
  /** Index of the first token of the current run ending the text in U+FFFD, or -1. */
  private partialSince = -1;
  private emitted = '';
  private readonly skipSpecialTokens: boolean;

  constructor(
    private readonly tokenizer: Tokenizer,
    promptIds: readonly number[] = [],
    opts: TextStreamerOptions = {},
  ) {
    this.ids = promptIds.slice(Math.max(0, promptIds.length - CONTEXT_TOKENS));
    this.readOffset = this.ids.length;
    this.skipSpecialTokens = opts.skipSpecialTokens ?? true;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** Adds one generated token; returns the new text that is now safe to emit (maybe ""). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    if (full.length <= prefix.length) return '';
    if (full.endsWith('\uFFFD')) {
      if (this.partialSince < 0) this.partialSince = this.ids.length - 1;
      if (this.ids.length - this.partialSince < MAX_PARTIAL_TOKENS) return '';
    }
    return this.advance(full.slice(prefix.length));
  }

  /** Emits whatever is still held back (at the end of generation). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    return this.advance(full.length > prefix.length ? full.slice(prefix.length) : '');
  }

  private advance(text: string): string {
    this.partialSince = -1;
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += text;
    return text;
  }

  private decode(from: number, to: number): string {
    if (to <= from) return '';
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecialTokens });
  }
}

/** The earliest occurrence of any stop string in `text` (the longest stop on a tie), or null. */
export function findStopString(text: string, stops: readonly string[]): { index: number; stop: string } | null {
  let best: { index: number; stop: string } | null = null;
  for (const stop of stops) {
    if (stop.length === 0) continue;
    const index = text.indexOf(stop);
    if (index < 0) continue;
    if (best === null || index < best.index || (index === best.index && stop.length > best.stop.length)) {
      best = { index, stop };
    }
  }
  return best;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function partialStopLength(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, text.length); k > longest; k--) {
      if (text.endsWith(stop.slice(0, k))) {
        longest = k;
        break;
      }
    }
  }
  return longest;
}

export interface StopStringResult {
  /** Text safe to emit now: never part of a stop string. */
  readonly text: string;
  /** True once a stop string has been seen; the stop string and what follows are dropped. */
  readonly stopped: boolean;
}

/**
 * Filters streamed text so that a stop string is never emitted, even when it arrives split
 * across chunks: text that could be the start of a stop string is held until it is either
 * completed (generation should stop) or ruled out.
 */
export class StopStringMatcher {
  private pending = '';
  private done = false;
  private readonly stops: readonly string[];

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.done;
  }

  push(chunk: string): StopStringResult {
    if (this.done) return { text: '', stopped: true };
    const text = this.pending + chunk;
    const hit = findStopString(text, this.stops);
    if (hit !== null) {
      this.done = true;
      this.pending = '';
      return { text: text.slice(0, hit.index), stopped: true };
    }
    const hold = partialStopLength(text, this.stops);
    this.pending = text.slice(text.length - hold);
    return { text: text.slice(0, text.length - hold), stopped: false };
  }

  /** At the end of generation: the held text was not a stop string after all. */
  flush(): string {
    const out = this.done ? '' : this.pending;
    this.pending = '';
    return out;
  }
}
