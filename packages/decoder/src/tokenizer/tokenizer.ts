/**
 * The tokenizer contract used by prompts, training data and generate(), and the loader
 * that picks an implementation from what a checkpoint folder ships.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export interface EncodeOptions {
  /** Prepend the BOS token. Default: the tokenizer's `addBosByDefault`. */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (`<s>`, `</s>`, `<unk>`, …) from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  /**
   * Text → ids. Special tokens written in the text (e.g. `</s>`) become their ids, as
   * Hugging Face tokenizers do. An empty text gives `[]`, or `[bos]` with addBos.
   */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids → text, as HF's fast tokenizer decodes. Ids outside the vocabulary are ignored. */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** The raw vocabulary piece of `id` (e.g. "▁the", "<0x0A>"); RangeError when unknown. */
  idToPiece(id: number): string;
  /** Largest id + 1. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Whether `encode` prepends BOS when `addBos` is not given. */
  readonly addBosByDefault: boolean;
  /** The id of a vocabulary piece or added token, if it exists. */
  tokenId(piece: string): number | undefined;
}

export type TokenizerSource = 'tokenizer.json' | 'tokenizer.model' | 'bundled-llama';

/** Which tokenizer `loadTokenizer(dir)` will use; `dir` null means the bundled one. */
export function tokenizerSource(dir: string | null): TokenizerSource {
  if (dir !== null && existsSync(join(dir, 'tokenizer.json'))) return 'tokenizer.json';
  if (dir !== null && existsSync(join(dir, 'tokenizer.model'))) return 'tokenizer.model';
  return 'bundled-llama';
}

/**
 * Loads the tokenizer of a checkpoint folder: `tokenizer.json` (HF fast tokenizer) if
 * present, else the SentencePiece `tokenizer.model`, else the bundled LLaMA-1/2 tokenizer
 * (the vocabulary MobiLlama was trained with). `tokenizer_config.json`, when present,
 * supplies add_bos_token, the bos/eos tokens and added tokens. Pass null for the bundled one.
 */
export async function loadTokenizer(dir: string | null): Promise<Tokenizer> {
  // Dynamic imports: each loader pulls in sizeable code or data (the bundled vocabulary
  // is ~700 KB of base64) that the other paths do not need.
  switch (tokenizerSource(dir)) {
    case 'tokenizer.json': {
      const { loadHfTokenizer } = await import('./hf-tokenizer.js');
      return loadHfTokenizer(dir as string);
    }
    case 'tokenizer.model': {
      const { loadSentencePieceTokenizer } = await import('./sentencepiece-tokenizer.js');
      return loadSentencePieceTokenizer(dir as string);
    }
    case 'bundled-llama': {
      const { loadBundledLlamaTokenizer } = await import('./llama-bundled.js');
      return loadBundledLlamaTokenizer();
    }
  }
}
