/** Helpers shared by the SentencePiece-style tokenizers: byte pieces, decoding, added-token splitting. */

/** SentencePiece's name for the escaped space, U+2581 LOWER ONE EIGHTH BLOCK. */
export const SPACE_PIECE = '\u2581';

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** The byte a byte-fallback piece such as `<0x0A>` stands for, else null. */
export function bytePieceValue(piece: string): number | null {
  const m = BYTE_PIECE.exec(piece);
  return m ? parseInt(m[1], 16) : null;
}

/** The byte-fallback piece of byte `b`: upper-case hex, as sentencepiece writes it. */
export function bytePiece(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

const utf8 = new TextEncoder();
// Non-fatal: invalid or truncated byte runs become U+FFFD, as HF decoders do.
const utf8Decoder = new TextDecoder('utf-8');

/**
 * Pieces → text the way LLaMA's tokenizer.json decoder does (Replace "▁"→" ", ByteFallback,
 * Fuse, Strip one leading space). Byte pieces are joined into UTF-8 across piece boundaries.
 * `stripLeadingSpace` false is for models without the dummy prefix.
 */
export function decodeMetaspacePieces(pieces: readonly string[], stripLeadingSpace = true): string {
  const bytes: number[] = [];
  for (const piece of pieces) {
    const b = bytePieceValue(piece);
    if (b !== null) {
      bytes.push(b);
    } else {
      for (const x of utf8.encode(piece.replaceAll(SPACE_PIECE, ' '))) bytes.push(x);
    }
  }
  const text = utf8Decoder.decode(Uint8Array.from(bytes));
  // The dummy prefix: only the very first space of the whole text goes.
  return stripLeadingSpace && text.startsWith(' ') ? text.slice(1) : text;
}

export interface TextSegment {
  readonly text: string;
  /** True when `text` is exactly one of the added tokens. */
  readonly added: boolean;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Splits `text` around occurrences of `tokens`, longest token first at each position
 * (as HF's added-token splitter does). Empty text segments are dropped.
 */
export function splitOnAddedTokens(text: string, tokens: readonly string[]): TextSegment[] {
  const nonEmpty = tokens.filter((t) => t.length > 0);
  if (nonEmpty.length === 0) return text.length > 0 ? [{ text, added: false }] : [];
  // Regex alternation takes the first alternative that matches, so longer tokens go first.
  const sorted = [...new Set(nonEmpty)].sort((a, b) => b.length - a.length);
  const re = new RegExp(`(${sorted.map(escapeRegExp).join('|')})`, 'u');
  // split() with one capturing group alternates text, token, text, token, …
  const parts = text.split(re);
  const out: TextSegment[] = [];
  parts.forEach((part, i) => {
    if (part.length > 0) out.push({ text: part, added: i % 2 === 1 });
  });
  return out;
}
