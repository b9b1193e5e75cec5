import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import llama from 'llama-tokenizer-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Tokenizer } from './tokenizer.js';
import { loadTokenizer, tokenizerSource } from './tokenizer.js';
import { writeLlamaTokenizerFiles, llamaTokenizerConfig } from './llama-fixtures.js';
import { SentencePieceTokenizer } from './sentencepiece-tokenizer.js';
import type { SentencePiece, SentencePieceModel } from './sentencepiece-model.js';
import { DEFAULT_NORMALIZER_SPEC, DEFAULT_TRAINER_SPEC } from './sentencepiece-model.js';

const TEXTS: readonly string[] = [
  'Hello world!',
  'The quick brown fox jumps over the lazy dog.',
  'grabbed',
  ' grabbed',
  '           grabbed',
  'Café déjà vu — naïve façade, São Paulo, Zürich, Ærøskøbing',
  '東京は日本の首都です。北京是中国的首都。',
  '镇',
  '🦙',
  '🦙Ꙋ',
  'Ꙋ🦙',
  'I ❤️ emoji 😀👍🏽 and flags 🇫🇷!',
  '12345 + 678 = 9023; π ≈ 3.14159',
  'a  b   c    d',
  '\ttabs\t\t\t\tout here',
  'line one\nline two\r\n\nline four',
  ' \n',
  '\n',
  'ax\n####\nboo',
  '  leading and trailing spaces  ',
  ' ',
  '',
  'The llama (/ˈlɑːmə/; 🦙Spanish pronunciation: [ˈʎama]) (Lama glama) is a domesticated South American camelid.',
  'USER: <image>\nWhat is in this picture? ASSISTANT:',
];

/** The reference: llama-tokenizer-js without BOS (it returns [] for "", HF returns []). */
function reference(text: string): number[] {
  return text.length === 0 ? [] : llama.encode(text, false, true);
}

describe('tokenizers: bundled, tokenizer.model and tokenizer.json agree with llama-tokenizer-js', () => {
  let root: string;
  const loaded: Record<'bundled' | 'sentencepiece' | 'hf', Tokenizer> = {} as Record<'bundled' | 'sentencepiece' | 'hf', Tokenizer>;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'mobillama-tok-'));
    const spDir = join(root, 'sp');
    const jsonDir = join(root, 'json');
    await writeLlamaTokenizerFiles(spDir, { json: false });
    await writeLlamaTokenizerFiles(jsonDir, { model: false });
    expect(tokenizerSource(spDir)).toBe('tokenizer.model');
    expect(tokenizerSource(jsonDir)).toBe('tokenizer.json');
    expect(tokenizerSource(join(root, 'missing'))).toBe('bundled-llama');
    loaded.bundled = await loadTokenizer(join(root, 'missing'));
    loaded.sentencepiece = await loadTokenizer(spDir);
    loaded.hf = await loadTokenizer(jsonDir);
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const kinds = ['bundled', 'sentencepiece', 'hf'] as const;

  it.each(kinds)('%s: LLaMA facts', (kind) => {
    const t = loaded[kind];
    expect(t.vocabSize).toBe(32000);
    expect(t.bosId).toBe(1);
    expect(t.eosId).toBe(2);
    expect(t.addBosByDefault).toBe(true);
    expect(t.tokenId('▁the')).toBe(278);
    expect(t.idToPiece(278)).toBe('▁the');
    expect(t.tokenId('<0x0A>')).toBe(13);
    expect(t.idToPiece(0)).toBe('<unk>');
    expect(t.tokenId('no such piece')).toBeUndefined();
    expect(() => t.idToPiece(32000)).toThrow(RangeError);
    expect(t.encode('the')).toEqual([1, 278]);
  });

  it.each(kinds)('%s: encodings equal llama-tokenizer-js on the text set', (kind) => {
    const t = loaded[kind];
    for (const text of TEXTS) {
      const ref = reference(text);
      expect(t.encode(text, { addBos: false }), JSON.stringify(text)).toEqual(ref);
      expect(t.encode(text), JSON.stringify(text)).toEqual([1, ...ref]);
    }
  });

  it.each(kinds)('%s: decode(encode(x)) === x', (kind) => {
    const t = loaded[kind];
    for (const text of TEXTS) {
      expect(t.decode(t.encode(text, { addBos: false })), JSON.stringify(text)).toBe(text);
      expect(t.decode(t.encode(text), { skipSpecialTokens: true }), JSON.stringify(text)).toBe(text);
    }
  });

  it.each(kinds)('%s: byte fallback for emoji, special tokens in text and on decode', (kind) => {
    const t = loaded[kind];
    // 🦙 is F0 9F A6 99: byte pieces <0xF0>… are ids 3 + byte.
    expect(t.encode('🦙', { addBos: false })).toEqual([29871, 243, 162, 169, 156]);
    // Special tokens written in text become their ids (HF behaviour); each plain segment
    // gets its own dummy prefix, as LLaMA's legacy tokenizer.json does.
    expect(t.encode('Hi</s>', { addBos: false })).toEqual([...reference('Hi'), 2]);
    expect(t.encode('a<s>b', { addBos: false })).toEqual([...reference('a'), 1, ...reference('b')]);
    expect(t.decode([1, ...reference('Hello'), 2])).toBe('<s> Hello</s>');
    expect(t.decode([1, ...reference('Hello'), 2], { skipSpecialTokens: true })).toBe('Hello');
    expect(t.decode([])).toBe('');
    // Ids past the vocabulary (a padded lm_head) decode to nothing.
    expect(t.decode([...reference('Hello'), 32005])).toBe('Hello');
  });

  it('all three agree on pseudo-random mixtures of words, scripts, spaces and symbols', () => {
    const parts = ['the', 'llama', 'ing', 'tion', ' ', '  ', '\n', '\t', 'é', 'ñ', '镇', '東京', '🦙', '😀', '123', '4',
      '.', ',', '!', 'aaaa', '####', 'aba', 'bab', 'sss', ' the', 'THE', 'qu', 'ß', 'в', 'д', '—', '’'];
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 400; i++) {
      let text = '';
      for (let j = 1 + rand(25); j > 0; j--) text += parts[rand(parts.length)];
      const ref = reference(text);
      for (const kind of kinds) {
        const ids = loaded[kind].encode(text, { addBos: false });
        expect(ids, `${kind} ${JSON.stringify(text)}`).toEqual(ref);
        expect(loaded[kind].decode(ids)).toBe(text);
      }
    }
  });

  it('honours add_bos_token false and bos/eos from tokenizer_config.json', async () => {
    for (const files of [{ json: false }, { model: false }]) {
      const dir = await mkdtemp(join(root, 'cfg-'));
      await writeLlamaTokenizerFiles(dir, { ...files, config: false });
      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({
        ...llamaTokenizerConfig(), add_bos_token: false, eos_token: '<unk>',
      }));
      const t = await loadTokenizer(dir);
      expect(t.addBosByDefault).toBe(false);
      expect(t.encode('the')).toEqual([278]);
      expect(t.encode('the', { addBos: true })).toEqual([1, 278]);
      expect(t.eosId).toBe(0);
    }
  });

  it('tokenizer.model with extra added tokens from tokenizer_config.json', async () => {
    const dir = await mkdtemp(join(root, 'added-'));
    await writeLlamaTokenizerFiles(dir, { json: false, config: false });
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({
      ...llamaTokenizerConfig(),
      added_tokens_decoder: {
        0: { content: '<unk>', special: true }, 1: { content: '<s>', special: true },
        2: { content: '</s>', special: true }, 32000: { content: '<pad>', special: true },
      },
    }));
    const t = await loadTokenizer(dir);
    expect(t.vocabSize).toBe(32001);
    expect(t.tokenId('<pad>')).toBe(32000);
    expect(t.encode('x<pad>', { addBos: false })).toEqual([...reference('x'), 32000]);
    expect(t.decode([...reference('x'), 32000], { skipSpecialTokens: true })).toBe('x');
  });
});

/** A tiny hand-made BPE model: checks sentencepiece's merge order, not LLaMA's data. */
function tinyModel(pieces: Array<[string, number]>, byteFallback = false): SentencePieceModel {
  const list: SentencePiece[] = [
    { piece: '<unk>', score: 0, type: 'UNKNOWN' },
    { piece: '<s>', score: 0, type: 'CONTROL' },
    { piece: '</s>', score: 0, type: 'CONTROL' },
    ...pieces.map(([piece, score]): SentencePiece => ({ piece, score, type: 'NORMAL' })),
  ];
  return {
    pieces: list,
    trainerSpec: { ...DEFAULT_TRAINER_SPEC, modelType: 'BPE', vocabSize: list.length, byteFallback },
    normalizerSpec: { ...DEFAULT_NORMALIZER_SPEC, name: 'identity', removeExtraWhitespaces: false },
  };
}

describe('SentencePieceTokenizer BPE semantics', () => {
  const pieces = (t: SentencePieceTokenizer, text: string): string[] =>
    t.encode(text, { addBos: false }).map((id) => t.idToPiece(id));

  it('merges the highest-scoring piece first', () => {
    const base: Array<[string, number]> = [['▁', -10], ['a', -11], ['b', -12], ['c', -13]];
    const bcFirst = new SentencePieceTokenizer(tinyModel([...base, ['ab', -2], ['bc', -1]]));
    expect(pieces(bcFirst, 'abc')).toEqual(['▁', 'a', 'bc']);
    const abFirst = new SentencePieceTokenizer(tinyModel([...base, ['ab', -1], ['bc', -2]]));
    expect(pieces(abFirst, 'abc')).toEqual(['▁', 'ab', 'c']);
  });

  it('breaks score ties leftmost first', () => {
    const t = new SentencePieceTokenizer(tinyModel([['▁', -10], ['a', -11], ['aa', -1]]));
    expect(pieces(t, 'aaa')).toEqual(['▁', 'aa', 'a']);
  });

  it('fuses runs of unknown characters into one <unk> without byte fallback', () => {
    const t = new SentencePieceTokenizer(tinyModel([['▁', -10], ['a', -11]]));
    expect(t.encode('a€€a', { addBos: false })).toEqual([3, 4, 0, 4]);
  });

  it('rejects unigram models', () => {
    const m = tinyModel([['a', -1]]);
    expect(() => new SentencePieceTokenizer({ ...m, trainerSpec: { ...m.trainerSpec, modelType: 'UNIGRAM' } }))
      .toThrow(/UNIGRAM/);
  });
});
