/**
 * Byte-level BPE as CLIP (and GPT-2) use it: bytes become printable characters through a
 * fixed table, and merges join adjacent symbols in rank order. CLIP marks the end of a word
 * by appending `</w>` to its last symbol.
 */

let byteTable: readonly string[] | undefined;

/** GPT-2's byte → character table (printable bytes map to themselves, the rest to U+0100…). */
export function bytesToUnicode(): readonly string[] {
  if (byteTable) return byteTable;
  const table = new Array<string>(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  byteTable = table;
  return table;
}

const encoder = new TextEncoder();

/** A text's UTF-8 bytes as byte-level characters. */
export function toByteLevel(text: string): string {
  const table = bytesToUnicode();
  let out = '';
  for (const b of encoder.encode(text)) out += table[b];
  return out;
}

/** The inverse of {@link toByteLevel} (characters outside the table are dropped). */
export function fromByteLevel(chars: string): string {
  const table = bytesToUnicode();
  const inverse = new Map(table.map((c, b) => [c, b]));
  const bytes: number[] = [];
  for (const c of chars) {
    const b = inverse.get(c);
    if (b !== undefined) bytes.push(b);
  }
  return new TextDecoder('utf-8', { fatal: false }).decode(Uint8Array.from(bytes));
}

export interface BpeOptions {
  /** Appended to a word's last symbol (CLIP: '</w>'). */
  readonly endOfWordSuffix?: string;
  /** Prepended to every symbol but the first (CLIP: ''). */
  readonly continuingSubwordPrefix?: string;
  /** Id for symbols missing from the vocabulary; with none, such a word is an error. */
  readonly unkId?: number | null;
}

/** Merges a pre-tokenized word into vocabulary ids. */
export class BytePairEncoder {
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, readonly number[]>();
  private readonly suffix: string;
  private readonly prefix: string;

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    merges: readonly (readonly [string, string])[],
    private readonly opts: BpeOptions = {},
  ) {
    // '\u0000' cannot occur in a byte-level symbol, so it separates the pair unambiguously.
    merges.forEach(([a, b], i) => {
      const key = `${a}\u0000${b}`;
      if (!this.ranks.has(key)) this.ranks.set(key, i);
    });
    this.suffix = opts.endOfWordSuffix ?? '';
    this.prefix = opts.continuingSubwordPrefix ?? '';
  }

  /** The ids of one word (no spaces inside). */
  encodeWord(word: string): readonly number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const chars = [...word];
    if (chars.length === 0) return [];
    let symbols = chars.map((c, i) => (i > 0 ? this.prefix : '') + c + (i === chars.length - 1 ? this.suffix : ''));
    // openai's simple_tokenizer: merge the lowest-ranked adjacent pair everywhere, left to right, until none is ranked.
    for (;;) {
      let best = Infinity, first = '', second = '';
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.ranks.get(`${symbols[i]}\u0000${symbols[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          first = symbols[i];
          second = symbols[i + 1];
        }
      }
      if (best === Infinity) break;
      const next: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
          next.push(first + this.unprefixed(second));
          i++;
        } else next.push(symbols[i]);
      }
      symbols = next;
    }
    const ids = symbols.map((s) => {
      const id = this.vocab.get(s);
      if (id !== undefined) return id;
      if (this.opts.unkId !== undefined && this.opts.unkId !== null) return this.opts.unkId;
      throw new RangeError(`BPE: ${JSON.stringify(s)} is not in the vocabulary and there is no unk token`);
    });
    if (this.cache.size < 65536) this.cache.set(word, ids);
    return ids;
  }

  /** Merges list the right symbol with its continuing prefix; the merged piece drops it (HF's BPE). */
  private unprefixed(s: string): string {
    return this.prefix && s.startsWith(this.prefix) ? s.slice(this.prefix.length) : s;
  }
}
