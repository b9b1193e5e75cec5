import { createReadStream } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { AnswerRequest, AnswerResult } from './types.js';

/**
 * Exact-match VQA evaluation over a LLaVA instruct-format file: for each entry, the first
 * human turn is the question (with its `<image>` marker), the first gpt turn after it the
 * reference answer, and the entry's `type` field (our extension; "other" when absent)
 * groups the scores. The model answers greedily.
 */

/** A malformed data file or entry: the user can fix it (the CLI exits 2). */
export class EvalDataError extends Error {
  constructor(message: string) {
    super(message.split('\n')[0]);
    this.name = 'DataError';
  }
}

/**
 * The exact-match normalisation: trim, collapse runs of whitespace to one space, drop
 * trailing full stops, lower-case. So "Red." = "red" = "  RED " but "Red!" ≠ "red",
 * "2" ≠ "two" and "a red circle" ≠ "red circle": answers are meant to be canonical.
 */
export function normalizeAnswer(s: string): string {
  return s.trim().replace(/\s+/g, ' ').replace(/[\s.]+$/, '').toLowerCase();
}

export function exactMatch(prediction: string, reference: string): boolean {
  return normalizeAnswer(prediction) === normalizeAnswer(reference);
}

// ---- Streaming a JSON array -------------------------------------------------------------------

/** Before '[', after '[', inside an element, after ',', after ']'. */
type State = 'before' | 'first' | 'item' | 'next' | 'done';

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0xfeff;

/**
 * The elements of a top-level JSON array, parsed one at a time from text chunks, so a
 * large data file is never held whole in memory. Only element boundaries are found here
 * (string- and nesting-aware); each element is then parsed with JSON.parse.
 * `where` names the source in error messages.
 */
export async function* jsonArrayElements(chunks: AsyncIterable<string>, where: string): AsyncGenerator<unknown> {
  let state: State = 'before';
  let depth = 0, inString = false, escaped = false;
  let carried = ''; // the current element's text from earlier chunks
  let index = 0;
  const parse = (text: string): unknown => {
    try {
      return JSON.parse(text);
    } catch {
      throw new EvalDataError(`${where}: entry ${index} is not valid JSON`);
    }
  };
  for await (const chunk of chunks) {
    let start = 0; // where the current element starts in this chunk
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      switch (state) {
        case 'before':
          if (isSpace(c)) continue;
          if (c !== 0x5b /* [ */) throw new EvalDataError(`${where}: not a JSON array of entries`);
          state = 'first';
          continue;
        case 'done':
          if (!isSpace(c)) throw new EvalDataError(`${where}: text after the closing ]`);
          continue;
        case 'first':
        case 'next':
          if (isSpace(c)) continue;
          if (c === 0x5d /* ] */ && state === 'first') {
            state = 'done';
            continue;
          }
          state = 'item';
          start = i;
          depth = 0;
          carried = '';
          break; // this character is the element's first: fall to the scan below
        default:
          break;
      }
      // 'item': find the ',' or ']' that ends the element at depth 0, outside strings.
      if (inString) {
        if (escaped) escaped = false;
        else if (c === 0x5c /* \ */) escaped = true;
        else if (c === 0x22 /* " */) inString = false;
      } else if (c === 0x22) inString = true;
      else if (c === 0x7b || c === 0x5b) depth++;
      else if ((c === 0x7d || c === 0x5d) && depth > 0) depth--;
      else if (depth === 0 && (c === 0x2c /* , */ || c === 0x5d)) {
        yield parse(carried + chunk.slice(start, i));
        index++;
        carried = '';
        state = c === 0x2c ? 'next' : 'done';
      }
    }
    if (state === 'item') carried += chunk.slice(start);
  }
  const end = state as State; // (TS narrows `state` across the loop as if it never changed)
  if (end === 'before') throw new EvalDataError(`${where}: empty file, expected a JSON array`);
  if (end !== 'done') throw new EvalDataError(`${where}: ends before the array is closed (entry ${index})`);
}

// ---- Reading eval items ------------------------------------------------------------------------

export interface EvalItem {
  /** Position in the file (0-based). */
  readonly index: number;
  readonly id: string;
  /** The entry's `type`, or "other". */
  readonly type: string;
  /** The image path (image folder + the entry's `image`), if the entry has one. */
  readonly image?: string;
  /** The first human turn, as written (with its `<image>` marker). */
  readonly question: string;
  /** The first gpt turn after it. */
  readonly reference: string;
}

export interface ReadEvalOptions {
  /** Folder the entries' `image` paths are relative to. */
  readonly imageFolder: string;
  /** Stop after this many entries. */
  readonly limit?: number;
}

function toItem(e: unknown, index: number, where: string, imageFolder: string): EvalItem {
  const at = `${where}: entry ${index}`;
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new EvalDataError(`${at} is not an object`);
  const o = e as Record<string, unknown>;
  const id = typeof o.id === 'string' || typeof o.id === 'number' ? String(o.id) : `#${index}`;
  const conv = o.conversations;
  if (!Array.isArray(conv)) throw new EvalDataError(`${at} (${id}) has no conversations list`);
  const turn = (t: unknown): { from?: unknown; value?: unknown } => (typeof t === 'object' && t !== null ? t : {});
  const q = conv.findIndex((t) => turn(t).from === 'human');
  const a = conv.findIndex((t, i) => i > q && turn(t).from === 'gpt');
  if (q < 0 || a < 0) throw new EvalDataError(`${at} (${id}) needs a human turn followed by a gpt turn`);
  const question = turn(conv[q]).value, reference = turn(conv[a]).value;
  if (typeof question !== 'string' || typeof reference !== 'string') throw new EvalDataError(`${at} (${id}): turn values must be strings`);
  if (o.image !== undefined && (typeof o.image !== 'string' || o.image === '')) throw new EvalDataError(`${at} (${id}): image must be a file name`);
  if (o.image === undefined && question.includes('<image>')) throw new EvalDataError(`${at} (${id}): the question has <image> but the entry no image`);
  const type = typeof o.type === 'string' && o.type !== '' ? o.type : 'other';
  const image = typeof o.image === 'string' ? (isAbsolute(o.image) ? o.image : join(imageFolder, o.image)) : undefined;
  return { index, id, type, question, reference, ...(image !== undefined ? { image } : {}) };
}

/** The question/answer items of an instruct-format file, streamed. */
export async function* readEvalItems(file: string, opts: ReadEvalOptions): AsyncGenerator<EvalItem> {
  const stream = createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 16 });
  // Surface a missing or unreadable file as a data error, not a raw ENOENT.
  const chunks = (async function* () {
    try {
      for await (const c of stream) yield c as string;
    } catch (e) {
      throw new EvalDataError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  })();
  let index = 0;
  try {
    for await (const e of jsonArrayElements(chunks, file)) {
      if (opts.limit !== undefined && index >= opts.limit) return;
      yield toItem(e, index++, file, opts.imageFolder);
    }
  } finally {
    stream.destroy();
  }
}

// ---- Scoring -----------------------------------------------------------------------------------

export interface TypeScore {
  readonly count: number;
  readonly correct: number;
  readonly accuracy: number;
}

export interface EvalReport extends TypeScore {
  /** Per question type, in alphabetical order. */
  readonly byType: Readonly<Record<string, TypeScore>>;
}

/** Running counts, overall and per type. */
export class EvalTally {
  private readonly types = new Map<string, { count: number; correct: number }>();
  private count = 0;
  private correct = 0;

  add(type: string, correct: boolean): void {
    const t = this.types.get(type) ?? { count: 0, correct: 0 };
    t.count++;
    this.count++;
    if (correct) {
      t.correct++;
      this.correct++;
    }
    this.types.set(type, t);
  }

  report(): EvalReport {
    const score = (count: number, correct: number): TypeScore => ({ count, correct, accuracy: count === 0 ? 0 : correct / count });
    const byType: Record<string, TypeScore> = {};
    for (const k of [...this.types.keys()].sort()) byType[k] = score(this.types.get(k)!.count, this.types.get(k)!.correct);
    return { ...score(this.count, this.correct), byType };
  }
}

export interface EvalPrediction extends EvalItem {
  readonly prediction: string;
  readonly correct: boolean;
}

/** The part of a VQA model the evaluation uses. */
export interface Answerer {
  answer(req: AnswerRequest): Promise<AnswerResult>;
}

export interface EvalOptions extends ReadEvalOptions {
  readonly data: string;
  /** Most tokens per answer (default 32: answers are short). */
  readonly maxNewTokens?: number;
  /** Called after each answer, with the running report. */
  readonly onPrediction?: (p: EvalPrediction, running: EvalReport) => void | Promise<void>;
}

export const DEFAULT_EVAL_MAX_NEW_TOKENS = 32;

/** Answers every item greedily and scores it by exact match. */
export async function evaluate(model: Answerer, opts: EvalOptions): Promise<EvalReport> {
  const tally = new EvalTally();
  for await (const item of readEvalItems(opts.data, opts)) {
    const r = await model.answer({
      question: item.question, image: item.image, temperature: 0, maxNewTokens: opts.maxNewTokens ?? DEFAULT_EVAL_MAX_NEW_TOKENS,
    });
    const correct = exactMatch(r.text, item.reference);
    tally.add(item.type, correct);
    await opts.onPrediction?.({ ...item, prediction: r.text, correct }, tally.report());
  }
  const report = tally.report();
  if (report.count === 0) throw new EvalDataError(`${opts.data}: no entries to evaluate`);
  return report;
}
