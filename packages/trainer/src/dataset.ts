import { open, type FileHandle } from 'node:fs/promises';
import { DataError } from './errors.js';

/** One turn of a LLaVA conversation as the data files write it. */
export interface LlavaTurn {
  readonly from: string;
  readonly value: string;
}

/** One LLaVA training example (pretrain-558k and instruct-665k files alike). */
export interface LlavaEntry {
  /** `id` from the file (stringified), or `#<index>` when the entry has none. */
  readonly id: string;
  /** Image path relative to the image folder; absent for text-only samples. */
  readonly image?: string;
  readonly conversations: readonly LlavaTurn[];
}

const CHUNK = 1 << 20;
const enum B { Quote = 0x22, Backslash = 0x5c, OpenBrace = 0x7b, CloseBrace = 0x7d, OpenBracket = 0x5b, CloseBracket = 0x5d }

/**
 * A LLaVA data file (a JSON array of entries, or JSON Lines) opened lazily: one streaming
 * pass records where each entry's bytes start and end (16 bytes per entry: the 665k-entry
 * instruct mix, ~1 GB of JSON, indexes into ~11 MB), and `get(i)` reads and parses just that
 * entry. Nothing else of the file stays in memory.
 */
export class LlavaDataset {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly starts: Float64Array,
    private readonly ends: Float64Array,
    readonly length: number,
  ) {}

  static async open(path: string): Promise<LlavaDataset> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new DataError(`cannot open data file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const { starts, ends, count } = await indexEntries(fh, path);
      return new LlavaDataset(path, fh, starts, ends, count);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** The raw JSON text of entry `i`. */
  async raw(i: number): Promise<string> {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`entry ${i} is outside 0..${this.length - 1}`);
    const start = this.starts[i], len = this.ends[i] - start;
    const buf = Buffer.alloc(len);
    const { bytesRead } = await this.fh.read(buf, 0, len, start);
    if (bytesRead !== len) throw new DataError(`${this.path}: entry ${i}: the file changed while training (short read)`);
    return buf.toString('utf8');
  }

  /** Entry `i`, parsed and checked. */
  async get(i: number): Promise<LlavaEntry> {
    const text = await this.raw(i);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new DataError(`${this.path}: entry ${i} is not valid JSON (${(e as Error).message})`);
    }
    return checkEntry(json, i, this.path);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

function checkEntry(json: unknown, index: number, file: string): LlavaEntry {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new DataError(`${file}: entry ${index} is not an object`);
  const o = json as Record<string, unknown>;
  const id = o.id === undefined || o.id === null ? `#${index}` : String(o.id);
  const where = `${file}: sample ${id}`;
  if (o.image !== undefined && o.image !== null && typeof o.image !== 'string') throw new DataError(`${where}: "image" must be a string path`);
  if (!Array.isArray(o.conversations) || o.conversations.length === 0) throw new DataError(`${where}: "conversations" must be a non-empty array`);
  const conversations = o.conversations.map((t: unknown, k: number) => {
    const turn = t as Record<string, unknown> | null;
    if (!turn || typeof turn !== 'object' || typeof turn.from !== 'string' || typeof turn.value !== 'string') {
      throw new DataError(`${where}: conversations[${k}] needs string "from" and "value"`);
    }
    return { from: turn.from, value: turn.value };
  });
  return { id, ...(typeof o.image === 'string' ? { image: o.image } : {}), conversations };
}

/**
 * One pass over the bytes with a tiny JSON scanner (strings, escapes, nesting depth): the
 * objects at the top level of an array (or, for JSON Lines, at the top level) are entries.
 */
async function indexEntries(fh: FileHandle, path: string): Promise<{ starts: Float64Array; ends: Float64Array; count: number }> {
  let starts = new Float64Array(1024), ends = new Float64Array(1024), count = 0;
  const buf = Buffer.alloc(CHUNK);
  let pos = 0;
  let depth = 0, inString = false, escape = false;
  let mode: 'unknown' | 'array' | 'lines' = 'unknown';
  let base = 0; // depth at which entries sit
  let entryStart = -1, closed = false;
  const fail = (msg: string) => new DataError(`${path}: ${msg}`);
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
    if (bytesRead === 0) break;
    for (let i = 0; i < bytesRead; i++) {
      const c = buf[i];
      if (inString) {
        if (escape) escape = false;
        else if (c === B.Backslash) escape = true;
        else if (c === B.Quote) inString = false;
        continue;
      }
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
      const at = pos + i;
      if (mode === 'unknown') {
        if (at === 0 && c === 0xef) { i += 2; continue; } // UTF-8 BOM
        if (c === B.OpenBracket) { mode = 'array'; base = 1; depth = 1; continue; }
        if (c === B.OpenBrace) { mode = 'lines'; base = 0; }
        else throw fail('not a JSON array of samples (nor JSON Lines)');
      }
      if (closed) throw fail(`unexpected data after the closing ] (byte ${at})`);
      if (c === B.Quote) {
        if (depth === base) throw fail(`entry ${count} is not an object (byte ${at})`);
        inString = true;
      } else if (c === B.OpenBrace || c === B.OpenBracket) {
        if (depth === base) {
          if (c !== B.OpenBrace) throw fail(`entry ${count} is not an object (byte ${at})`);
          entryStart = at;
        }
        depth++;
      } else if (c === B.CloseBrace || c === B.CloseBracket) {
        depth--;
        if (depth < base) {
          if (mode === 'array' && depth === 0 && c === B.CloseBracket) { closed = true; continue; }
          throw fail(`unbalanced ${String.fromCharCode(c)} at byte ${at}`);
        }
        if (depth === base) {
          if (count === starts.length) {
            const grow = (a: Float64Array) => { const b = new Float64Array(a.length * 2); b.set(a); return b; };
            starts = grow(starts);
            ends = grow(ends);
          }
          starts[count] = entryStart;
          ends[count] = at + 1;
          count++;
        }
      } else if (depth === base && c !== 0x2c) {
        throw fail(`entry ${count} is not an object (byte ${at})`);
      }
    }
    pos += bytesRead;
  }
  if (mode === 'unknown') throw fail('the file is empty');
  if (inString || (mode === 'array' ? !closed : depth !== 0)) throw fail('truncated JSON (the file ends inside an entry)');
  if (count === 0) throw fail('no samples in the file');
  return { starts: starts.subarray(0, count), ends: ends.subarray(0, count), count };
}
