import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// Test-only cross-check: the decoder's HF tokenizer runs the same tokenizer.json through @huggingface/tokenizers.
import { loadHfTokenizer, type Tokenizer } from '@mobillama/decoder';
import { bytesToUnicode, fromByteLevel, toByteLevel } from './bpe.js';
import { CLIP_TEXT_FIXTURE, LABELS } from './testing.js';
import { ClipTokenizer, ClipTokenizerError } from './tokenizer.js';

type Json = Record<string, unknown>;

describe('ClipTokenizer (CLIP-style tokenizer.json)', () => {
  let tok: ClipTokenizer;
  let hf: Tokenizer;
  let json: Json;
  let root: string;

  beforeAll(async () => {
    tok = await ClipTokenizer.load(CLIP_TEXT_FIXTURE);
    hf = await loadHfTokenizer(CLIP_TEXT_FIXTURE);
    json = JSON.parse(await readFile(join(CLIP_TEXT_FIXTURE, 'tokenizer.json'), 'utf8')) as Json;
    root = await mkdtemp(join(tmpdir(), 'clip-tok-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('CLIP facts: BOS/EOS are the last two ids, pad = EOS, 77 tokens, </w> word ends', () => {
    expect(tok.bosId).toBe(627);
    expect(tok.eosId).toBe(628);
    expect(tok.padId).toBe(628);
    expect(tok.maxLength).toBe(77);
    expect(tok.vocabSize).toBe(629);
    expect(tok.idToPiece(320)).toBe('a</w>');
    expect(bytesToUnicode()[32]).toBe('Ġ');
    expect(fromByteLevel(toByteLevel('naïve 🙂'))).toBe('naïve 🙂');
  });

  it('matches the Python reference ids (tokens.json)', async () => {
    const golden = JSON.parse(await readFile(join(CLIP_TEXT_FIXTURE, 'tokens.json'), 'utf8')) as { text: string; ids: number[] }[];
    expect(golden.length).toBeGreaterThan(5);
    for (const { text, ids } of golden) expect(tok.encode(text), JSON.stringify(text)).toEqual(ids);
    expect(tok.encode(LABELS[0])).toEqual([627, 320, 602, 535, 628]);
  });

  it('agrees with @huggingface/tokenizers on pseudo-random text', () => {
    const parts = ['a', 'red', 'Circle', 'SQUARE', 'triangles', 'star', ' ', '  ', '\t', '\n', "it's", "we'll", "'", '3', '42', '1.5',
      '!!', '?', ',', '.', '-', '_', 'é', 'Ü', 'naïve', 'ß', '東京', '🙂', '👍🏽', '<|endoftext|>', '<|startoftext|>', 'xyzzy', 'qu', 'Ⅻ'];
    let seed = 7;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 300; i++) {
      let text = '';
      for (let j = 1 + rand(12); j > 0; j--) text += parts[rand(parts.length)];
      expect(tok.encodeContent(text), JSON.stringify(text)).toEqual(hf.encode(text, { addBos: false }));
    }
  });

  it('ByteLevel with use_regex false, and vocab.json + merges.txt, tokenize the same way', async () => {
    const pre = json.pre_tokenizer as { pretokenizers: Json[] };
    const variant = { ...json, pre_tokenizer: { ...pre, pretokenizers: [pre.pretokenizers[0], { ...pre.pretokenizers[1], use_regex: false }] } };
    const dir = join(root, 'noregex');
    await mkdir(dir);
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(variant));
    const t2 = await ClipTokenizer.load(dir);
    const hf2 = await loadHfTokenizer(dir);
    const slow = join(root, 'slow');
    await mkdir(slow);
    const model = json.model as { vocab: Record<string, number>; merges: string[] };
    await writeFile(join(slow, 'vocab.json'), JSON.stringify(model.vocab));
    await writeFile(join(slow, 'merges.txt'), `#version: 0.2\n${model.merges.join('\n')}\n`);
    const t3 = await ClipTokenizer.load(slow);
    for (const text of ['A red circle, left of 2 stars!', "it's  a\tTEST", 'café 🙂 <|endoftext|>']) {
      expect(t2.encode(text)).toEqual(tok.encode(text));
      expect(t2.encodeContent(text)).toEqual(hf2.encode(text, { addBos: false }));
      expect(t3.encode(text)).toEqual(tok.encode(text));
    }
    expect(t3.padId).toBe(628); // no tokenizer_config.json: pad falls back to EOS
  });

  it('pads batches to the longest row (or padTo) with a mask, truncates to maxLength keeping EOS', () => {
    const b = tok.encodeBatch(['a red circle', 'two small blue squares']);
    expect(b.batch).toBe(2);
    expect(b.lengths).toEqual([5, 6]);
    expect(b.length).toBe(6);
    expect(Array.from(b.ids.subarray(0, 6), Number)).toEqual([627, 320, 602, 535, 628, 628]);
    expect(Array.from(b.attentionMask, Number)).toEqual([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]);
    expect(tok.encodeBatch(['a'], { padTo: 77 }).length).toBe(77);
    const long = tok.encode('a red circle '.repeat(40));
    expect(long).toHaveLength(77);
    expect(long[76]).toBe(628);
    expect(tok.encode('a red circle '.repeat(40), { truncate: false }).length).toBeGreaterThan(77);
    expect(tok.encode('a red circle a red circle', { maxLength: 4 })).toEqual([627, 320, 602, 628]);
  });

  it('decodes as CLIPTokenizerFast (</w> → space, trimmed)', () => {
    expect(tok.decode(tok.encode('A  RED circle!!'))).toBe('<|startoftext|>a red circle !! <|endoftext|>');
    expect(tok.decode(tok.encode('A  RED circle!!'), { skipSpecialTokens: true })).toBe('a red circle !!');
    expect(tok.decode(tok.encode('naïve café 🙂'), { skipSpecialTokens: true })).toBe('naïve café 🙂');
  });

  it('refuses tokenizers it cannot run, in one line', async () => {
    expect(() => ClipTokenizer.fromJson({ model: { type: 'Unigram', vocab: [] } })).toThrow(ClipTokenizerError);
    expect(() => ClipTokenizer.fromJson({ ...json, normalizer: { type: 'Precompiled' } })).toThrow(/normalizer Precompiled is not supported/);
    expect(() => ClipTokenizer.fromJson({ ...json, pre_tokenizer: { type: 'Metaspace' } })).toThrow(/pre_tokenizer Metaspace/);
    await expect(ClipTokenizer.load(root)).rejects.toThrow(/no tokenizer\.json/);
    const e = await ClipTokenizer.load('/no/such/dir').catch((x: unknown) => x);
    expect((e as Error).name).toBe('TokenizerError');
  });
});
