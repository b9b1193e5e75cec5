import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, type Tokenizer } from '@mobillama/decoder';
import { withEncodeCache } from './encode-cache.js';
import { FIXTURE } from './test-fixtures.js';

const tok = await loadTokenizer(join(FIXTURE, 'decoder'));

/** Counts the wrapped tokenizer's own encode calls. */
function counting(t: Tokenizer): { t: Tokenizer; calls: () => number } {
  let n = 0;
  const inner = new Proxy(t, { get: (o, p) => (p === 'encode' ? (s: string, opts?: { addBos?: boolean }) => { n++; return o.encode(s, opts); } : Reflect.get(o, p)) });
  return { t: inner, calls: () => n };
}

describe('withEncodeCache', () => {
  const texts = ['A chat between a curious human and an artificial intelligence assistant. USER: ', '\nWhat color is the circle? ASSISTANT: Red.</s>', '', 'héllo\nworld'];

  it('encodes as the tokenizer does, per text and BOS option, each text once', () => {
    const { t, calls } = counting(tok);
    const cached = withEncodeCache(t);
    for (let round = 0; round < 3; round++) {
      for (const s of texts) {
        for (const opts of [undefined, { addBos: true }, { addBos: false }]) expect(cached.encode(s, opts)).toEqual(tok.encode(s, opts));
      }
    }
    expect(calls()).toBe(texts.length * 3);
  });

  it('hands out copies, so a caller changing its ids changes nothing later', () => {
    const cached = withEncodeCache(tok);
    const a = cached.encode(texts[1]);
    a.fill(0);
    expect(cached.encode(texts[1])).toEqual(tok.encode(texts[1]));
  });

  it('keeps at most maxEntries texts (the oldest go first) and passes everything else through', () => {
    const { t, calls } = counting(tok);
    const cached = withEncodeCache(t, 2);
    cached.encode('one'); cached.encode('two'); cached.encode('three'); // "one" goes
    cached.encode('three'); cached.encode('two');
    expect(calls()).toBe(3);
    cached.encode('one');
    expect(calls()).toBe(4);
    expect(cached.vocabSize).toBe(tok.vocabSize);
    expect(cached.bosId).toBe(tok.bosId);
    expect(cached.decode(tok.encode('hello world', { addBos: false }))).toBe(tok.decode(tok.encode('hello world', { addBos: false })));
    expect(cached.tokenId('</s>')).toBe(tok.tokenId('</s>'));
  });
});
