import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clipTokenizerFiles, clipVocab, trainClipBpe } from './bpe-train.js';
import { CLIP_TEXT_FIXTURE } from './testing.js';
import { ClipTokenizer, clipWords } from './tokenizer.js';

/** The captions make_clip_text_fixtures.py learned its merges on (with its repeat counts). */
function fixtureCorpus(): string[] {
  const colours = ['red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'black', 'white', 'gray', 'brown', 'cyan'];
  const shapes = ['circle', 'square', 'triangle', 'star'];
  const out: string[] = [];
  for (const c of colours) {
    for (const s of shapes) {
      out.push(...Array<string>(3).fill(`a photo of a ${c} ${s}`));
      out.push(`there is one ${c} ${s} on the left`, `two ${c} ${s}s above a small ${s}`, `a big ${c} ${s} below the right ${s}`);
    }
  }
  out.push(...Array<string>(4).fill('is there a star? yes. no. how many shapes are there? three four'));
  return out;
}

describe('training a CLIP tokenizer', () => {
  it('reproduces the Python reference: same merges, same tokenizer.json and tokenizer_config.json', async () => {
    const merges = trainClipBpe(fixtureCorpus(), { numMerges: 160 });
    const want = JSON.parse(await readFile(join(CLIP_TEXT_FIXTURE, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const wantConfig = JSON.parse(await readFile(join(CLIP_TEXT_FIXTURE, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const files = clipTokenizerFiles(merges);
    expect(merges.length).toBe(115);
    expect(files.tokenizerJson).toEqual(want);
    expect(files.tokenizerConfig).toEqual(wantConfig);
  });

  it('caps the merges, stops at minFrequency, and the result tokenizes its words whole', () => {
    const texts = fixtureCorpus();
    expect(trainClipBpe(texts, { numMerges: 10 })).toHaveLength(10);
    expect(trainClipBpe(['ab ab cd'], { numMerges: 50 })).toEqual([['a', 'b</w>']]);
    expect(trainClipBpe(['ab ab cd'], { numMerges: 50, minFrequency: 1 }).length).toBe(2);
    const merges = trainClipBpe(texts, { numMerges: 1000 });
    const files = clipTokenizerFiles(merges);
    const tok = ClipTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
    expect(tok.vocabSize).toBe(512 + merges.length + 2);
    // Every frequent word became one piece.
    expect(tok.encodeContent('a purple triangle')).toHaveLength(3);
    expect(clipWords('A  Purple, triangle!')).toEqual(['a', 'purple', ',', 'triangle', '!']);
    expect(clipVocab([]).size).toBe(514);
    expect(() => clipVocab([['a', 'b'], ['a', 'b']])).toThrow(/twice/);
  });
});
