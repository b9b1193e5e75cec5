/**
 * A SentencePiece BPE tokenizer over a parsed `tokenizer.model`, encoding as sentencepiece's
 * bpe::Model does (LLaMA-style) and decoding as HF's LLaMA fast tokenizer does.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';
import type { AddedTokenSpec } from './tokenizer-config.js';
import { readTokenizerConfig } from './tokenizer-config.js';
import { parseSentencePieceModel } from './sentencepiece-model.js';
import type { PieceType, SentencePieceModel } from './sentencepiece-model.js';
import { SPACE_PIECE, decodeMetaspacePieces, splitOnAddedTokens } from './pieces.js';

export interface SentencePieceTokenizerOptions {
  /** Default true, as HF LlamaTokenizer. */
  readonly addBosByDefault?: boolean;
  /** Override the trainer_spec bos/eos by piece text (from tokenizer_config.json). */
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** Extra tokens (HF added tokens); ids may extend past the model's pieces. */
  readonly addedTokens?: readonly AddedTokenSpec[];
}

/** A candidate merge of two adjacent symbols, ordered as sentencepiece's agenda. */
interface SymbolPair {
  readonly left: number;
  readonly right: number;
  readonly score: number;
  /** Length of the merged string, to detect stale pairs (symbols only ever grow). */
  readonly size: number;
}

/** Higher score first; equal scores: leftmost first (sentencepiece's SymbolPairComparator). */
function before(a: SymbolPair, b: SymbolPair): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

class PairHeap {
  private readonly items: SymbolPair[] = [];
  get size(): number {
    return this.items.length;
  }
  push(p: SymbolPair): void {
    const h = this.items;
    h.push(p);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }
  pop(): SymbolPair {
    const h = this.items;
    const top = h[0];
    const last = h.pop() as SymbolPair;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < h.length && before(h[l], h[best])) best = l;
        if (r < h.length && before(h[r], h[best])) best = r;
        if (best === i) break;
        [h[i], h[best]] = [h[best], h[i]];
        i = best;
      }
    }
    return top;
  }
}

const utf8 = new TextEncoder();

export class SentencePieceTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number | null;
  readonly addBosByDefault: boolean;

  private readonly pieces: string[];
  private readonly types: PieceType[];
  private readonly scores: Float32Array;
  /** Every piece and added token → id (the first id wins on duplicates). */
  private readonly idOf = new Map<string, number>();
  /** Pieces that BPE may produce: NORMAL, USER_DEFINED, UNUSED (sentencepiece's `pieces_`). */
  private readonly mergeable = new Map<string, number>();
  /** USER_DEFINED pieces, matched whole before BPE and never merged further. */
  private readonly userDefined: string[];
  /** Text that is split out before normalization and mapped straight to its id. */
  private readonly splitTokens: string[];
  private readonly specialIds = new Set<number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly byteFallback: boolean;
  private readonly normalizerName: string;
  private readonly addDummyPrefix: boolean;
  private readonly removeExtraWhitespaces: boolean;
  private readonly escapeWhitespaces: boolean;
  private readonly dummySuffix: boolean;

  constructor(model: SentencePieceModel, opts: SentencePieceTokenizerOptions = {}) {
    const t = model.trainerSpec;
    const n = model.normalizerSpec;
    if (t.modelType !== 'BPE') {
      throw new Error(`tokenizer.model: model_type ${t.modelType} is not supported (only BPE, as LLaMA uses)`);
    }
    this.pieces = model.pieces.map((p) => p.piece);
    this.types = model.pieces.map((p) => p.type);
    this.scores = Float32Array.from(model.pieces, (p) => p.score);
    const userDefined: string[] = [];
    const splitTokens: string[] = [];
    model.pieces.forEach((p, id) => {
      if (!this.idOf.has(p.piece)) this.idOf.set(p.piece, id);
      switch (p.type) {
        case 'NORMAL': case 'UNUSED':
          if (!this.mergeable.has(p.piece)) this.mergeable.set(p.piece, id);
          break;
        case 'USER_DEFINED':
          if (!this.mergeable.has(p.piece)) this.mergeable.set(p.piece, id);
          userDefined.push(p.piece);
          break;
        case 'CONTROL': case 'UNKNOWN':
          // HF registers these as special added tokens: found in text, skipped on request.
          this.specialIds.add(id);
          splitTokens.push(p.piece);
          break;
        case 'BYTE': {
          const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
          if (m) this.byteIds[parseInt(m[1], 16)] = id;
          break;
        }
      }
    });
    const extraPieces = new Map<number, string>();
    for (const a of opts.addedTokens ?? []) {
      if (a.id < this.pieces.length && this.pieces[a.id] !== a.content) {
        throw new Error(`added token ${JSON.stringify(a.content)} claims id ${a.id}, which is ${JSON.stringify(this.pieces[a.id])}`);
      }
      if (a.id >= this.pieces.length) extraPieces.set(a.id, a.content);
      this.idOf.set(a.content, a.id);
      splitTokens.push(a.content);
      if (a.special) this.specialIds.add(a.id);
    }
    const maxExtra = extraPieces.size > 0 ? Math.max(...extraPieces.keys()) : -1;
    this.vocabSize = Math.max(this.pieces.length, maxExtra + 1);
    for (let id = this.pieces.length; id < this.vocabSize; id++) {
      // Gaps in added ids would be holes; keep them decodable as nothing.
      this.pieces.push(extraPieces.get(id) ?? '');
      this.types.push(extraPieces.has(id) ? 'USER_DEFINED' : 'UNUSED');
    }
    this.userDefined = userDefined.sort((a, b) => b.length - a.length);
    this.splitTokens = splitTokens;

    const idOrNull = (id: number): number | null => (id >= 0 && id < this.vocabSize ? id : null);
    const byPiece = (piece: string | undefined): number | null | undefined =>
      piece === undefined ? undefined : (this.idOf.get(piece) ?? null);
    this.unkId = idOrNull(t.unkId);
    this.bosId = byPiece(opts.bosToken) ?? idOrNull(t.bosId);
    this.eosId = byPiece(opts.eosToken) ?? idOrNull(t.eosId);
    this.addBosByDefault = opts.addBosByDefault ?? true;
    this.byteFallback = t.byteFallback;
    this.normalizerName = n.name;
    this.addDummyPrefix = n.addDummyPrefix;
    this.removeExtraWhitespaces = n.removeExtraWhitespaces;
    this.escapeWhitespaces = n.escapeWhitespaces;
    this.dummySuffix = t.treatWhitespaceAsSuffix;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if ((opts.addBos ?? this.addBosByDefault) && this.bosId !== null) ids.push(this.bosId);
    // Each plain segment gets its own dummy prefix, as LLaMA's tokenizer.json (legacy) does.
    for (const seg of splitOnAddedTokens(text, this.splitTokens)) {
      if (seg.added) ids.push(this.idOf.get(seg.text) as number);
      else this.encodeSegment(seg.text, ids);
    }
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const pieces: string[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) continue;
      if (opts.skipSpecialTokens && this.specialIds.has(id)) continue;
      pieces.push(this.pieces[id]);
    }
    return decodeMetaspacePieces(pieces, this.addDummyPrefix && this.escapeWhitespaces && !this.dummySuffix);
  }

  idToPiece(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return this.pieces[id];
  }

  tokenId(piece: string): number | undefined {
    return this.idOf.get(piece);
  }

  /** Piece types, e.g. to tell byte-fallback pieces from text. */
  pieceType(id: number): PieceType {
    this.idToPiece(id);
    return this.types[id];
  }

  private normalize(text: string): string {
    let s = text;
    // Only the NFKC family is reproduced; other precompiled charsmaps are not interpreted.
    if (/nfkc/i.test(this.normalizerName)) s = s.normalize('NFKC');
    if (/_cf$/i.test(this.normalizerName)) s = s.toLowerCase();
    if (this.removeExtraWhitespaces) s = s.replace(/ +/g, ' ').replace(/^ | $/g, '');
    if (s.length === 0) return s;
    if (this.addDummyPrefix) s = this.dummySuffix ? s + ' ' : ' ' + s;
    if (this.escapeWhitespaces) s = s.replaceAll(' ', SPACE_PIECE);
    return s;
  }

  private encodeSegment(raw: string, out: number[]): void {
    const text = this.normalize(raw);
    if (text.length === 0) return;

    // Initial symbols: user-defined pieces whole (frozen), otherwise one code point each.
    const sym: string[] = [];
    const frozen: boolean[] = [];
    for (let i = 0; i < text.length;) {
      const ud = this.userDefined.find((u) => text.startsWith(u, i));
      if (ud !== undefined) {
        sym.push(ud);
        frozen.push(true);
        i += ud.length;
      } else {
        const cp = text.codePointAt(i) as number;
        const ch = String.fromCodePoint(cp);
        sym.push(ch);
        frozen.push(false);
        i += ch.length;
      }
    }
    const n = sym.length;
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));

    const heap = new PairHeap();
    // Merged UNUSED pieces are split back into what formed them (sentencepiece's rev_merge).
    const revMerge = new Map<string, [string, string]>();
    const maybeAdd = (left: number, right: number): void => {
      if (left === -1 || right === -1 || frozen[left] || frozen[right]) return;
      const merged = sym[left] + sym[right];
      const id = this.mergeable.get(merged);
      if (id === undefined) return;
      heap.push({ left, right, score: this.scores[id], size: merged.length });
      if (this.types[id] === 'UNUSED') revMerge.set(merged, [sym[left], sym[right]]);
    };
    for (let i = 1; i < n; i++) maybeAdd(i - 1, i);

    while (heap.size > 0) {
      const top = heap.pop();
      const l = sym[top.left];
      const r = sym[top.right];
      if (l.length === 0 || r.length === 0 || l.length + r.length !== top.size) continue;
      sym[top.left] = l + r;
      sym[top.right] = '';
      next[top.left] = next[top.right];
      if (next[top.right] >= 0) prev[next[top.right]] = top.left;
      maybeAdd(prev[top.left], top.left);
      maybeAdd(top.left, next[top.left]);
    }

    let lastWasUnk = false;
    const emit = (piece: string): void => {
      const id = this.idOf.get(piece);
      if (id !== undefined && this.types[id] === 'UNUSED') {
        const parts = revMerge.get(piece);
        if (parts) {
          emit(parts[0]);
          emit(parts[1]);
          return;
        }
      }
      if (id !== undefined) {
        out.push(id);
        lastWasUnk = false;
        return;
      }
      if (this.byteFallback) {
        const bytes = utf8.encode(piece);
        if (bytes.every((b) => this.byteIds[b] >= 0)) {
          for (const b of bytes) out.push(this.byteIds[b]);
          lastWasUnk = false;
          return;
        }
      }
      if (this.unkId === null) throw new Error(`cannot encode ${JSON.stringify(piece)}: no piece, no byte fallback, no <unk>`);
      // A run of unknown symbols becomes a single <unk>, as sentencepiece does.
      if (!lastWasUnk) out.push(this.unkId);
      lastWasUnk = true;
    };
    for (let i = 0; i !== -1; i = next[i]) emit(sym[i]);
  }
}

/** Loads `dir/tokenizer.model`, with `tokenizer_config.json` (if any) for BOS/EOS and added tokens. */
export async function loadSentencePieceTokenizer(dir: string): Promise<SentencePieceTokenizer> {
  const bytes = await readFile(join(dir, 'tokenizer.model'));
  const model = parseSentencePieceModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const cfg = readTokenizerConfig(dir);
  return new SentencePieceTokenizer(model, {
    addBosByDefault: cfg.addBosToken ?? true,
    bosToken: cfg.bosToken,
    eosToken: cfg.eosToken,
    addedTokens: cfg.addedTokens,
  });
}
