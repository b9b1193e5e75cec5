import { describe, expect, it } from 'vitest';
import type { SentencePieceModel } from './sentencepiece-model.js';
import { parseSentencePieceModel, serializeSentencePieceModel } from './sentencepiece-model.js';
import { buildLlamaSentencePieceModel } from './llama-fixtures.js';

describe('tokenizer.model protobuf codec', () => {
  it('round-trips pieces, scores, types and specs (negative ids included)', () => {
    const model: SentencePieceModel = {
      pieces: [
        { piece: '<unk>', score: 0, type: 'UNKNOWN' },
        { piece: '<s>', score: 0, type: 'CONTROL' },
        { piece: '<0x0A>', score: 0, type: 'BYTE' },
        { piece: '▁the', score: -18.5, type: 'NORMAL' },
        { piece: '<img>', score: 0, type: 'USER_DEFINED' },
        { piece: 'zz', score: -1e9, type: 'UNUSED' },
      ],
      trainerSpec: {
        modelType: 'BPE', vocabSize: 6, byteFallback: true, treatWhitespaceAsSuffix: false,
        unkId: 0, bosId: 1, eosId: -1, padId: -1, unkSurface: ' \u2047 ',
      },
      normalizerSpec: {
        name: 'identity', precompiledCharsmap: new Uint8Array([1, 2, 3]),
        addDummyPrefix: true, removeExtraWhitespaces: false, escapeWhitespaces: true,
      },
    };
    expect(parseSentencePieceModel(serializeSentencePieceModel(model))).toEqual(model);
  });

  it('skips unknown fields and applies proto defaults', () => {
    // piece { piece: "a" (1), unknown field 9 = 7 }, unknown top-level fixed64 field 7.
    const bytes = Uint8Array.from([
      0x0a, 0x05, 0x0a, 0x01, 0x61, 0x48, 0x07,
      0x39, 1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    const m = parseSentencePieceModel(bytes);
    expect(m.pieces).toEqual([{ piece: 'a', score: 0, type: 'NORMAL' }]);
    expect(m.trainerSpec.modelType).toBe('UNIGRAM');
    expect(m.trainerSpec.padId).toBe(-1);
    expect(m.normalizerSpec.addDummyPrefix).toBe(true);
    expect(m.normalizerSpec.removeExtraWhitespaces).toBe(true);
  });

  it('rejects truncated input', () => {
    expect(() => parseSentencePieceModel(Uint8Array.from([0x0a, 0x05, 0x0a]))).toThrow(/truncated/);
  });

  it('the LLaMA model built from llama-tokenizer-js round-trips', async () => {
    const model = await buildLlamaSentencePieceModel();
    const parsed = parseSentencePieceModel(serializeSentencePieceModel(model));
    expect(parsed.pieces.length).toBe(32000);
    expect(parsed.pieces[278]).toEqual(model.pieces[278]);
    expect(parsed.trainerSpec).toEqual(model.trainerSpec);
  });
});
