export type { Tokenizer, EncodeOptions, DecodeOptions, TokenizerSource } from './tokenizer.js';
export { loadTokenizer, tokenizerSource } from './tokenizer.js';
export { SentencePieceTokenizer, loadSentencePieceTokenizer } from './sentencepiece-tokenizer.js';
export type { SentencePieceTokenizerOptions } from './sentencepiece-tokenizer.js';
export { HfTokenizer, loadHfTokenizer } from './hf-tokenizer.js';
export { loadBundledLlamaTokenizer } from './llama-bundled.js';
export {
  parseSentencePieceModel, serializeSentencePieceModel, DEFAULT_NORMALIZER_SPEC, DEFAULT_TRAINER_SPEC,
} from './sentencepiece-model.js';
export type {
  SentencePieceModel, SentencePiece, PieceType, SentencePieceModelType, TrainerSpec, NormalizerSpec,
} from './sentencepiece-model.js';
export { readTokenizerConfig } from './tokenizer-config.js';
export type { TokenizerConfig, AddedTokenSpec } from './tokenizer-config.js';
export { SPACE_PIECE, bytePiece, bytePieceValue } from './pieces.js';
export { buildLlamaSentencePieceModel, buildLlamaTokenizerJson, llamaTokenizerConfig, writeLlamaTokenizerFiles } from './llama-fixtures.js';
export type { LlamaTokenizerFiles } from './llama-fixtures.js';
