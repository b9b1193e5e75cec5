/**
 * Builds LLaMA tokenizer files (`tokenizer.model`, `tokenizer.json`, `tokenizer_config.json`)
 * from the vocabulary and merges bundled in llama-tokenizer-js, for tests and fixtures that
 * need a real checkpoint-style tokenizer folder without shipping multi-MB files.
 *
 * The SentencePiece scores are derived from merge ranks: a piece scores minus the rank of the
 * first merge that forms it, so "highest score first" replays the merge list's order (LLaMA's
 * tokenizer.json merges are themselves ordered by the scores of the pieces they form).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LlamaTokenizer } from 'llama-tokenizer-js';
import type { SentencePiece, SentencePieceModel } from './sentencepiece-model.js';
import { serializeSentencePieceModel } from './sentencepiece-model.js';
import { bytePieceValue } from './pieces.js';

async function llamaData(): Promise<LlamaTokenizer> {
  return (await import('llama-tokenizer-js')).default;
}

/** The merge list in priority order, as [left, right] piece pairs. */
function mergeList(tok: LlamaTokenizer): Array<[string, string]> {
  // The library keys merges "left right" with priority 2*rank+1; Map order is rank order.
  const entries = [...tok.merges.entries()].sort((a, b) => a[1] - b[1]);
  return entries.map(([key]) => {
    const i = key.indexOf(' ');
    return [key.slice(0, i), key.slice(i + 1)];
  });
}

export async function buildLlamaSentencePieceModel(): Promise<SentencePieceModel> {
  const tok = await llamaData();
  const merges = mergeList(tok);
  const firstRank = new Map<string, number>();
  merges.forEach(([a, b], rank) => {
    const piece = a + b;
    if (!firstRank.has(piece)) firstRank.set(piece, rank);
  });
  const pieces: SentencePiece[] = tok.vocabById.map((piece, id): SentencePiece => {
    if (id === 0) return { piece, score: 0, type: 'UNKNOWN' };
    if (id === 1 || id === 2) return { piece, score: 0, type: 'CONTROL' };
    if (bytePieceValue(piece) !== null) return { piece, score: 0, type: 'BYTE' };
    const rank = firstRank.get(piece);
    // Pieces no merge forms (single characters) rank below every merged piece.
    return { piece, score: -(rank ?? merges.length + id), type: 'NORMAL' };
  });
  return {
    pieces,
    trainerSpec: {
      modelType: 'BPE', vocabSize: pieces.length, byteFallback: true, treatWhitespaceAsSuffix: false,
      unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
    },
    // LLaMA's normalizer: identity rule, dummy prefix, keep whitespace runs, escape spaces.
    normalizerSpec: {
      name: 'identity', precompiledCharsmap: new Uint8Array(0),
      addDummyPrefix: true, removeExtraWhitespaces: false, escapeWhitespaces: true,
    },
  };
}

/** A `tokenizer.json` laid out as meta-llama/Llama-2-7b-hf's. */
export async function buildLlamaTokenizerJson(): Promise<Record<string, unknown>> {
  const tok = await llamaData();
  const vocab: Record<string, number> = {};
  tok.vocabById.forEach((piece, id) => {
    vocab[piece] = id;
  });
  const special = (id: number, content: string): Record<string, unknown> => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '\u2581' },
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: true, byte_fallback: true,
      vocab,
      merges: mergeList(tok).map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** LLaMA-2's tokenizer_config.json (the parts tokenization reads). */
export function llamaTokenizerConfig(): Record<string, unknown> {
  const token = (content: string): Record<string, unknown> => ({
    __type: 'AddedToken', content, lstrip: false, normalized: false, rstrip: false, single_word: false,
  });
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: token('<s>'),
    eos_token: token('</s>'),
    unk_token: token('<unk>'),
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: 2048,
    tokenizer_class: 'LlamaTokenizer',
  };
}

export interface LlamaTokenizerFiles {
  /** Write `tokenizer.model`. Default true. */
  readonly model?: boolean;
  /** Write `tokenizer.json`. Default true. */
  readonly json?: boolean;
  /** Write `tokenizer_config.json`. Default true. */
  readonly config?: boolean;
}

/** Writes LLaMA tokenizer files into `dir` (created if needed). */
export async function writeLlamaTokenizerFiles(dir: string, which: LlamaTokenizerFiles = {}): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (which.model ?? true) {
    await writeFile(join(dir, 'tokenizer.model'), serializeSentencePieceModel(await buildLlamaSentencePieceModel()));
  }
  if (which.json ?? true) {
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(await buildLlamaTokenizerJson()));
  }
  if (which.config ?? true) {
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(llamaTokenizerConfig(), null, 2));
  }
}
