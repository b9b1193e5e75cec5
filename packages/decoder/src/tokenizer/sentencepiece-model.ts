/**
 * The SentencePiece `tokenizer.model` file: a protobuf `sentencepiece.ModelProto`
 * (google/sentencepiece src/sentencepiece_model.proto). We read and write the few fields
 * tokenization needs with a minimal wire-format codec, so no protobuf dependency is needed.
 */

export type PieceType = 'NORMAL' | 'UNKNOWN' | 'CONTROL' | 'USER_DEFINED' | 'UNUSED' | 'BYTE';
export type SentencePieceModelType = 'UNIGRAM' | 'BPE' | 'WORD' | 'CHAR';

export interface SentencePiece {
  readonly piece: string;
  readonly score: number;
  readonly type: PieceType;
}

export interface TrainerSpec {
  readonly modelType: SentencePieceModelType;
  readonly vocabSize: number;
  readonly byteFallback: boolean;
  readonly treatWhitespaceAsSuffix: boolean;
  /** -1 means "none", as in the proto. */
  readonly unkId: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkSurface: string;
}

export interface NormalizerSpec {
  /** "identity", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", … */
  readonly name: string;
  readonly precompiledCharsmap: Uint8Array;
  readonly addDummyPrefix: boolean;
  readonly removeExtraWhitespaces: boolean;
  readonly escapeWhitespaces: boolean;
}

export interface SentencePieceModel {
  readonly pieces: readonly SentencePiece[];
  readonly trainerSpec: TrainerSpec;
  readonly normalizerSpec: NormalizerSpec;
}

// Field numbers and enum values from sentencepiece_model.proto.
const PIECE_TYPES: Record<number, PieceType> = {
  1: 'NORMAL', 2: 'UNKNOWN', 3: 'CONTROL', 4: 'USER_DEFINED', 5: 'UNUSED', 6: 'BYTE',
};
const MODEL_TYPES: Record<number, SentencePieceModelType> = { 1: 'UNIGRAM', 2: 'BPE', 3: 'WORD', 4: 'CHAR' };

export const DEFAULT_TRAINER_SPEC: TrainerSpec = {
  modelType: 'UNIGRAM', vocabSize: 8000, byteFallback: false, treatWhitespaceAsSuffix: false,
  unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
};
export const DEFAULT_NORMALIZER_SPEC: NormalizerSpec = {
  name: '', precompiledCharsmap: new Uint8Array(0),
  addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
};

// ---- wire-format reading ----

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const textDecoder = new TextDecoder('utf-8');

class Reader {
  pos: number;
  private readonly view: DataView;
  constructor(readonly buf: Uint8Array, start = 0, readonly end = buf.length) {
    this.pos = start;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  /**
   * A varint as its low 32 bits, signed (int32 fields; negative int32 values are written
   * as 10-byte varints) and as an unsigned number for lengths.
   */
  varint(): { low32: number; unsigned: number } {
    let low32 = 0;
    let unsigned = 0;
    let mul = 1;
    for (let shift = 0; ; shift += 7) {
      if (this.pos >= this.end) throw new Error('tokenizer.model: truncated varint');
      if (shift >= 70) throw new Error('tokenizer.model: varint too long');
      const b = this.buf[this.pos++];
      if (shift < 32) low32 |= (b & 0x7f) << shift;
      unsigned += (b & 0x7f) * mul;
      mul *= 128;
      if ((b & 0x80) === 0) break;
    }
    return { low32: low32 | 0, unsigned };
  }

  tag(): { field: number; wire: number } {
    const { unsigned } = this.varint();
    return { field: Math.floor(unsigned / 8), wire: unsigned % 8 };
  }

  bytes(): Uint8Array {
    const len = this.varint().unsigned;
    if (this.pos + len > this.end) throw new Error('tokenizer.model: truncated field');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** Start/end of a length-delimited sub-message, advancing past it. */
  sub(): Reader {
    const len = this.varint().unsigned;
    if (this.pos + len > this.end) throw new Error('tokenizer.model: truncated message');
    const r = new Reader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return r;
  }

  float(): number {
    if (this.pos + 4 > this.end) throw new Error('tokenizer.model: truncated float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT: this.varint(); return;
      case WIRE_I64: this.pos += 8; return;
      case WIRE_LEN: this.bytes(); return;
      case WIRE_I32: this.pos += 4; return;
      default: throw new Error(`tokenizer.model: unsupported wire type ${wire}`);
    }
  }
}

function readPiece(r: Reader): SentencePiece {
  let piece = '';
  let score = 0;
  let type: PieceType = 'NORMAL';
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) piece = textDecoder.decode(r.bytes());
    else if (field === 2 && wire === WIRE_I32) score = r.float();
    else if (field === 3 && wire === WIRE_VARINT) {
      const v = r.varint().low32;
      type = PIECE_TYPES[v] ?? 'NORMAL';
    } else r.skip(wire);
  }
  return { piece, score, type };
}

function readTrainerSpec(r: Reader): TrainerSpec {
  const spec: { -readonly [K in keyof TrainerSpec]: TrainerSpec[K] } = { ...DEFAULT_TRAINER_SPEC };
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (wire === WIRE_VARINT) {
      const v = r.varint().low32;
      switch (field) {
        case 3: spec.modelType = MODEL_TYPES[v] ?? spec.modelType; break;
        case 4: spec.vocabSize = v; break;
        case 24: spec.treatWhitespaceAsSuffix = v !== 0; break;
        case 35: spec.byteFallback = v !== 0; break;
        case 40: spec.unkId = v; break;
        case 41: spec.bosId = v; break;
        case 42: spec.eosId = v; break;
        case 43: spec.padId = v; break;
        default: break;
      }
    } else if (field === 44 && wire === WIRE_LEN) {
      spec.unkSurface = textDecoder.decode(r.bytes());
    } else r.skip(wire);
  }
  return spec;
}

function readNormalizerSpec(r: Reader): NormalizerSpec {
  const spec: { -readonly [K in keyof NormalizerSpec]: NormalizerSpec[K] } = { ...DEFAULT_NORMALIZER_SPEC };
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) spec.name = textDecoder.decode(r.bytes());
    else if (field === 2 && wire === WIRE_LEN) spec.precompiledCharsmap = r.bytes().slice();
    else if (field === 3 && wire === WIRE_VARINT) spec.addDummyPrefix = r.varint().low32 !== 0;
    else if (field === 4 && wire === WIRE_VARINT) spec.removeExtraWhitespaces = r.varint().low32 !== 0;
    else if (field === 5 && wire === WIRE_VARINT) spec.escapeWhitespaces = r.varint().low32 !== 0;
    else r.skip(wire);
  }
  return spec;
}

/** Parses the bytes of a `tokenizer.model` (ModelProto). */
export function parseSentencePieceModel(bytes: Uint8Array): SentencePieceModel {
  const r = new Reader(bytes);
  const pieces: SentencePiece[] = [];
  let trainerSpec = DEFAULT_TRAINER_SPEC;
  let normalizerSpec = DEFAULT_NORMALIZER_SPEC;
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) pieces.push(readPiece(r.sub()));
    else if (field === 2 && wire === WIRE_LEN) trainerSpec = readTrainerSpec(r.sub());
    else if (field === 3 && wire === WIRE_LEN) normalizerSpec = readNormalizerSpec(r.sub());
    else r.skip(wire);
  }
  if (pieces.length === 0) throw new Error('tokenizer.model: no pieces (not a SentencePiece model?)');
  return { pieces, trainerSpec, normalizerSpec };
}

// ---- wire-format writing (test fixtures and tools build models with this) ----

class Writer {
  private chunks: number[] = [];

  varint(v: number): void {
    if (v < 0) {
      // int32 negatives are sign-extended to 64 bits: always 10 bytes.
      let x = BigInt.asUintN(64, BigInt(v));
      while (x >= 0x80n) {
        this.chunks.push(Number(x & 0x7fn) | 0x80);
        x >>= 7n;
      }
      this.chunks.push(Number(x));
      return;
    }
    let x = v;
    while (x >= 0x80) {
      this.chunks.push((x % 128) | 0x80);
      x = Math.floor(x / 128);
    }
    this.chunks.push(x);
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  uint(field: number, v: number): void {
    this.tag(field, WIRE_VARINT);
    this.varint(v);
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    for (const x of b) this.chunks.push(x);
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  float(field: number, v: number): void {
    this.tag(field, WIRE_I32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    for (const x of b) this.chunks.push(x);
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

const PIECE_TYPE_NUMBERS: Record<PieceType, number> = {
  NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6,
};
const MODEL_TYPE_NUMBERS: Record<SentencePieceModelType, number> = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 };

/** Serializes a model to ModelProto bytes that sentencepiece itself can load. */
export function serializeSentencePieceModel(model: SentencePieceModel): Uint8Array {
  const w = new Writer();
  for (const p of model.pieces) {
    const pw = new Writer();
    pw.string(1, p.piece);
    pw.float(2, p.score);
    if (p.type !== 'NORMAL') pw.uint(3, PIECE_TYPE_NUMBERS[p.type]);
    w.bytes(1, pw.finish());
  }
  const t = model.trainerSpec;
  const tw = new Writer();
  tw.uint(3, MODEL_TYPE_NUMBERS[t.modelType]);
  tw.uint(4, t.vocabSize);
  tw.uint(24, t.treatWhitespaceAsSuffix ? 1 : 0);
  tw.uint(35, t.byteFallback ? 1 : 0);
  tw.uint(40, t.unkId);
  tw.uint(41, t.bosId);
  tw.uint(42, t.eosId);
  tw.uint(43, t.padId);
  tw.string(44, t.unkSurface);
  w.bytes(2, tw.finish());
  const n = model.normalizerSpec;
  const nw = new Writer();
  nw.string(1, n.name);
  if (n.precompiledCharsmap.length > 0) nw.bytes(2, n.precompiledCharsmap);
  nw.uint(3, n.addDummyPrefix ? 1 : 0);
  nw.uint(4, n.removeExtraWhitespaces ? 1 : 0);
  nw.uint(5, n.escapeWhitespaces ? 1 : 0);
  w.bytes(3, nw.finish());
  return w.finish();
}
