import { beforeAll, describe, expect, it } from 'vitest';
import type { Tokenizer } from './tokenizer/tokenizer.js';
import { loadTokenizer } from './tokenizer/tokenizer.js';
import { StopStringMatcher, TextStreamer, findStopString } from './text-stream.js';

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(null); // the bundled LLaMA tokenizer
});

/** Byte-fallback pieces are ids 3..258 in LLaMA's vocabulary. */
const isByteToken = (id: number): boolean => id >= 3 && id <= 258;

function stream(ids: readonly number[], promptIds?: readonly number[]): string[] {
  const s = new TextStreamer(tok, promptIds);
  const chunks = ids.map((id) => s.push(id));
  chunks.push(s.flush());
  return chunks;
}

describe('TextStreamer', () => {
  it('never emits half an emoji; the chunks add up to decode()', () => {
    const text = 'Hi 🦙 there 😀!';
    const ids = tok.encode(text, { addBos: false });
    expect(ids.filter(isByteToken).length).toBe(8); // two 4-byte emoji, byte by byte
    const chunks = stream(ids);
    for (const c of chunks) expect(c).not.toContain('\uFFFD');
    expect(chunks.join('')).toBe(text);
    expect(chunks).toContain('🦙'); // "▁" is its own token before the bytes
    // Nothing is emitted while the emoji's bytes are incomplete.
    const firstByte = ids.findIndex(isByteToken);
    expect(chunks.slice(firstByte, firstByte + 3)).toEqual(['', '', '']);
  });

  it('CJK characters outside the vocabulary come out whole', () => {
    const text = '字龘靐齉';
    const ids = tok.encode(text, { addBos: false });
    expect(ids.some(isByteToken)).toBe(true);
    const chunks = stream(ids);
    for (const c of chunks) expect(c).not.toContain('\uFFFD');
    expect(chunks.join('')).toBe(text);
  });

  it('gets spaces right: no context drops the first space, a prompt keeps it', () => {
    const ids = tok.encode('Hello world,  how are you?', { addBos: false });
    expect(stream(ids).join('')).toBe('Hello world,  how are you?');
    expect(stream(ids)[1]).toBe(' world');
    const prompt = tok.encode('USER: hi ASSISTANT:');
    const answer = tok.encode(' Hello there', { addBos: false }).slice(1); // drop the lone "▁"
    expect(tok.idToPiece(answer[0])).toBe('▁Hello');
    expect(stream(answer, prompt).join('')).toBe(' Hello there');
    expect(stream(answer).join('')).toBe('Hello there');
    // BOS alone is no context: it is a special token and decodes to nothing.
    expect(stream(answer, [1]).join('')).toBe('Hello there');
  });

  it('matches decode() on many texts token by token', () => {
    const texts = ['a\n\nb', '  x  ', 'naïve café 東京 🇫🇷 ok', '\t#include <stdio.h>\n', 'x'.repeat(50), '🦙🦙🦙'];
    for (const text of texts) {
      const ids = tok.encode(text, { addBos: false });
      const chunks = stream(ids);
      expect(chunks.join(''), JSON.stringify(text)).toBe(tok.decode(ids));
      for (const c of chunks) expect(c).not.toContain('\uFFFD');
    }
  });

  it('skips special tokens and exposes the text so far', () => {
    const s = new TextStreamer(tok);
    for (const id of tok.encode('Done.', { addBos: false })) s.push(id);
    expect(s.push(2)).toBe('');
    expect(s.text).toBe('Done.');
  });

  it('does not hold invalid bytes forever', () => {
    const s = new TextStreamer(tok);
    const ff = 3 + 0xff; // <0xFF> is never valid UTF-8
    const out = [s.push(ff), s.push(ff), s.push(ff), s.push(ff)];
    expect(out.slice(0, 3)).toEqual(['', '', '']);
    expect(out[3]).toBe('\uFFFD'.repeat(4));
    // A truncated emoji at the end comes out on flush.
    s.push(3 + 0xf0);
    expect(s.flush()).toBe('\uFFFD');
  });
});

describe('stop strings', () => {
  it('findStopString finds the earliest (then longest) stop', () => {
    expect(findStopString('abc###def', ['###'])).toEqual({ index: 3, stop: '###' });
    expect(findStopString('abc', ['x', ''])).toBeNull();
    expect(findStopString('one\nUSER: two ###', ['###', '\nUSER:'])).toEqual({ index: 3, stop: '\nUSER:' });
    expect(findStopString('xab', ['a', 'ab'])).toEqual({ index: 1, stop: 'ab' });
  });

  it('StopStringMatcher holds back possible prefixes and releases them when ruled out', () => {
    const m = new StopStringMatcher(['###']);
    expect(m.push('Answer #')).toEqual({ text: 'Answer ', stopped: false });
    expect(m.push('1 is #')).toEqual({ text: '#1 is ', stopped: false });
    expect(m.push('#')).toEqual({ text: '', stopped: false });
    expect(m.flush()).toBe('##');
  });

  it('a stop string spanning tokens is never emitted', () => {
    const generated = 'Sure, a llama.\n### Human: next question';
    const ids = tok.encode(generated, { addBos: false });
    const streamer = new TextStreamer(tok);
    const matcher = new StopStringMatcher(['### Human:', '</s>']);
    let out = '';
    let consumed = 0;
    for (const id of ids) {
      consumed++;
      const r = matcher.push(streamer.push(id));
      out += r.text;
      if (r.stopped) break;
    }
    expect(matcher.stopped).toBe(true);
    expect(out).toBe('Sure, a llama.\n');
    expect(consumed).toBeLessThan(ids.length);
    // Once stopped, nothing more comes out.
    expect(matcher.push('more')).toEqual({ text: '', stopped: true });
    expect(matcher.flush()).toBe('');
  });

  it('emits everything when no stop string appears', () => {
    const ids = tok.encode('Llamas hum. # not a stop', { addBos: false });
    const streamer = new TextStreamer(tok);
    const matcher = new StopStringMatcher(['###']);
    let out = '';
    for (const id of ids) out += matcher.push(streamer.push(id)).text;
    out += matcher.push(streamer.flush()).text + matcher.flush();
    expect(out).toBe('Llamas hum. # not a stop');
  });
});
