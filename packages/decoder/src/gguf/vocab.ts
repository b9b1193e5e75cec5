/**
 * The tokenizer metadata of a llama-architecture GGUF (`tokenizer.ggml.*`, model "llama",
 * i.e. llama.cpp's SentencePiece tokenizer), built from a decoder folder's own tokenizer.
 *
 * llama.cpp's SPM tokenizer merges the adjacent pair whose joined piece has the highest
 * score, so the scores matter. They come from `tokenizer.model` when the folder has one
 * (the SentencePiece scores themselves); from a `tokenizer.json` BPE model, a piece scores
 * minus the rank of the first merge that forms it, so highest score first replays the merge
 * order; with no tokenizer files, from the bundled LLaMA vocabulary, derived the same way.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../config.js';
import { buildLlamaSentencePieceModel } from '../tokenizer/llama-fixtures.js';
import { bytePieceValue } from '../tokenizer/pieces.js';
import { parseSentencePieceModel, type PieceType, type SentencePiece } from '../tokenizer/sentencepiece-model.js';
import { readTokenizerConfig } from '../tokenizer/tokenizer-config.js';
import { loadTokenizer, tokenizerSource, type Tokenizer, type TokenizerSource } from '../tokenizer/tokenizer.js';

/** llama_token_type values (the same numbers as SentencePiece's piece types). */
export const GGUF_TOKEN_TYPE: Readonly<Record<PieceType, number>> = {
  NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6,
};

export interface GgufVocab {
  readonly tokens: readonly string[];
  readonly scores: Float32Array;
  /** GGUF_TOKEN_TYPE values. */
  readonly tokenTypes: Int32Array;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number | null;
  readonly padId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** Which tokenizer the ids come from (as `loadTokenizer` picks it). */
  readonly source: TokenizerSource;
  /** Where the scores come from. */
  readonly scoresFrom: 'tokenizer.model' | 'tokenizer.json merges' | 'bundled merges';
  /** Rows past the tokenizer's vocabulary, named [PAD<id>] (the model's embeddings are larger). */
  readonly padded: number;
}

/** Score given to added tokens and padding rows, as convert_hf_to_gguf.py does. */
const ADDED_SCORE = -1000;

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Base pieces of a tokenizer.json BPE model, with merge-rank scores. */
async function piecesFromTokenizerJson(path: string): Promise<SentencePiece[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path}: cannot read tokenizer.json (${(e as Error).message})`);
  }
  const model = isRecord(json) ? json.model : undefined;
  if (!isRecord(model) || model.type !== 'BPE' || !isRecord(model.vocab)) {
    throw new ConfigError(`${path}: only BPE tokenizer.json models can be exported (got ${isRecord(model) ? String(model.type) : 'none'})`);
  }
  const vocab = model.vocab as Record<string, unknown>;
  const n = Object.keys(vocab).length;
  const pieces: string[] = new Array<string>(n);
  for (const [piece, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= n || pieces[id] !== undefined) {
      throw new ConfigError(`${path}: vocabulary ids are not 0..${n - 1} (piece ${JSON.stringify(piece)} has id ${String(id)})`);
    }
    pieces[id] = piece;
  }
  // llama.cpp's "llama" tokenizer is SentencePiece-style: spaces as ▁, bytes as <0xXX>.
  if (!pieces.some((p) => p.startsWith('\u2581'))) {
    throw new ConfigError(`${path}: a byte-level BPE vocabulary (no ▁ pieces) needs tokenizer.ggml.model gpt2, which this exporter does not write`);
  }
  const merges = Array.isArray(model.merges) ? model.merges : [];
  const firstRank = new Map<string, number>();
  merges.forEach((m: unknown, rank: number) => {
    let piece: string | undefined;
    if (typeof m === 'string') {
      const i = m.indexOf(' ');
      if (i > 0) piece = m.slice(0, i) + m.slice(i + 1);
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      piece = m[0] + m[1];
    }
    if (piece !== undefined && !firstRank.has(piece)) firstRank.set(piece, rank);
  });
  const unk = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  const special = new Set<string>();
  if (isRecord(json) && Array.isArray(json.added_tokens)) {
    for (const t of json.added_tokens) if (isRecord(t) && t.special === true && typeof t.content === 'string') special.add(t.content);
  }
  return pieces.map((piece, id): SentencePiece => {
    if (piece === unk) return { piece, score: 0, type: 'UNKNOWN' };
    if (special.has(piece)) return { piece, score: 0, type: 'CONTROL' };
    if (bytePieceValue(piece) !== null) return { piece, score: 0, type: 'BYTE' };
    // Pieces no merge forms (single characters) rank below every merged piece.
    return { piece, score: -(firstRank.get(piece) ?? merges.length + id), type: 'NORMAL' };
  });
}

/**
 * The GGUF vocabulary of a decoder folder, padded to `vocabSize` rows (the embedding
 * table's). Token ids are those of the tokenizer our runtime loads from the folder.
 */
export async function ggufVocabFor(dir: string, vocabSize: number, tokenizer?: Tokenizer): Promise<GgufVocab> {
  const tok = tokenizer ?? await loadTokenizer(dir);
  const source = tokenizerSource(dir);
  let base: readonly SentencePiece[];
  let scoresFrom: GgufVocab['scoresFrom'];
  if (existsSync(join(dir, 'tokenizer.model'))) {
    base = parseSentencePieceModel(await readFile(join(dir, 'tokenizer.model'))).pieces;
    scoresFrom = 'tokenizer.model';
  } else if (source === 'tokenizer.json') {
    base = await piecesFromTokenizerJson(join(dir, 'tokenizer.json'));
    scoresFrom = 'tokenizer.json merges';
  } else {
    base = (await buildLlamaSentencePieceModel()).pieces;
    scoresFrom = 'bundled merges';
  }
  const cfg = source === 'bundled-llama' ? undefined : readTokenizerConfig(dir);
  const specialAdded = new Set((cfg?.addedTokens ?? []).filter((t) => t.special).map((t) => t.id));

  const n = tok.vocabSize;
  if (n > vocabSize) throw new ConfigError(`${dir}: the tokenizer has ${n} tokens but the model's embeddings only ${vocabSize} rows`);
  const tokens: string[] = [];
  const scores = new Float32Array(vocabSize);
  const tokenTypes = new Int32Array(vocabSize);
  for (let id = 0; id < n; id++) {
    let piece: string;
    try {
      piece = tok.idToPiece(id);
    } catch {
      // A gap in the ids (added tokens with holes): keep the row, unused.
      tokens.push(`[PAD${id}]`);
      scores[id] = ADDED_SCORE;
      tokenTypes[id] = GGUF_TOKEN_TYPE.UNUSED;
      continue;
    }
    const p = base[id];
    if (p !== undefined) {
      // The scores' source and the runtime's tokenizer must be the same vocabulary.
      if (p.piece !== piece) throw new ConfigError(`${dir}: token ${id} is ${JSON.stringify(piece)} in the tokenizer but ${JSON.stringify(p.piece)} in the ${scoresFrom} vocabulary`);
      tokens.push(piece);
      scores[id] = p.score;
      tokenTypes[id] = GGUF_TOKEN_TYPE[p.type];
    } else {
      // Added tokens past the base vocabulary (e.g. <pad> = 32000).
      tokens.push(piece);
      scores[id] = ADDED_SCORE;
      tokenTypes[id] = specialAdded.has(id) ? GGUF_TOKEN_TYPE.CONTROL : GGUF_TOKEN_TYPE.USER_DEFINED;
    }
  }
  for (let id = n; id < vocabSize; id++) {
    tokens.push(`[PAD${id}]`);
    scores[id] = ADDED_SCORE;
    tokenTypes[id] = GGUF_TOKEN_TYPE.UNUSED;
  }
  const unkIdx = tokenTypes.indexOf(GGUF_TOKEN_TYPE.UNKNOWN);
  const padPiece = cfg?.padToken;
  const padId = padPiece === undefined ? undefined : tok.tokenId(padPiece);
  return {
    tokens, scores, tokenTypes,
    bosId: tok.bosId, eosId: tok.eosId,
    unkId: unkIdx >= 0 ? unkIdx : (tok.tokenId('<unk>') ?? null),
    padId: padId ?? null,
    addBos: tok.addBosByDefault,
    addEos: cfg?.raw.add_eos_token === true,
    source, scoresFrom, padded: vocabSize - n,
  };
}
