import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EvalDataError, evaluate, exactMatch, jsonArrayElements, normalizeAnswer, readEvalItems,
  type Answerer, type EvalItem,
} from './eval.js';
import { MobiLlamaV } from './mobillama-v.js';
import type { AnswerRequest, AnswerResult } from './types.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MODEL = `${ROOT}packages/pipeline/fixtures/tiny-llava`;
const IMAGES = ['packages/pipeline/fixtures/tiny-llava/image.png', 'examples/images/red-circle.png', 'examples/images/blue-square-green-triangle.png'];

async function tmpFile(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'eval-'));
  await writeFile(join(dir, name), text);
  return join(dir, name);
}

async function* chunked(text: string, size: number): AsyncGenerator<string> {
  for (let i = 0; i < text.length; i += size) yield text.slice(i, i + size);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const entry = (id: string, q: string, a: string, extra: Record<string, unknown> = {}) =>
  ({ id, image: 'x.png', ...extra, conversations: [{ from: 'human', value: `<image>\n${q}` }, { from: 'gpt', value: a }] });

function result(text: string): AnswerResult {
  return {
    text, tokens: [], finishReason: 'stop', usage: { promptTokens: 0, completionTokens: 0 },
    timings: { promptTokens: 0, prefillMs: 0, decodeMs: 0, ttftMs: 0, prefillTokS: 0, decodeTokS: 0 },
  };
}

describe('exact match', () => {
  it.each([
    ['Red.', 'red', true],
    ['  RED  ', 'Red.', true],
    ['red...', 'Red', true],
    ['A red  circle\nand a star.', 'a red circle and a star', true],
    ['Yes.', 'yes', true],
    ['Red!', 'red', false],
    ['2', 'Two.', false],
    ['red circle', 'A red circle.', false],
    ['.', '', true],
    ['', 'No.', false],
  ])('%j vs %j → %s', (p, r, want) => {
    expect(exactMatch(p, r)).toBe(want);
  });

  it('normalizes to trimmed, single-spaced lower case without trailing full stops', () => {
    expect(normalizeAnswer('  Two red  circles, a Star. \n')).toBe('two red circles, a star');
    expect(normalizeAnswer('U.S.')).toBe('u.s');
  });
});

describe('streaming a JSON array', () => {
  const data = [
    { id: 'a', s: 'brackets ] [ } { and commas , inside', n: [1, [2, { x: '"]' }]] },
    'a string with \\ backslash and \\" quote ]',
    42, null, true, { deep: { deeper: [[[]]] }, unicode: 'ünïcödé ✓ \u2028' }, [],
  ];
  const text = `\uFEFF \n[\n  ${data.map((d) => JSON.stringify(d, null, 2)).join(' ,\n  ')}\n]\n\n`;

  it.each([1, 2, 3, 7, 64, 1 << 20])('chunks of %i characters give the same elements as JSON.parse', async (size) => {
    expect(await collect(jsonArrayElements(chunked(text, size), 'f'))).toEqual(data);
  });

  it('an empty array is fine', async () => {
    expect(await collect(jsonArrayElements(chunked(' [ ] ', 1), 'f'))).toEqual([]);
  });

  it.each([
    ['', /f: empty file/],
    ['{"a": 1}', /f: not a JSON array/],
    ['[1, 2', /f: ends before the array is closed \(entry 1\)/],
    ['[{"a": "]"', /f: ends before/],
    ['[1,,2]', /f: entry 1 is not valid JSON/],
    ['[1, 2,]', /f: entry 2 is not valid JSON/],
    ['[{"a": 1} {"b": 2}]', /f: entry 0 is not valid JSON/],
    ['[1] 2', /f: text after the closing ]/],
  ])('%j is refused', async (bad, msg) => {
    const err = await collect(jsonArrayElements(chunked(bad, 2), 'f')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EvalDataError);
    expect((err as Error).message).toMatch(msg);
    expect((err as Error).name).toBe('DataError');
  });
});

describe('reading eval items', () => {
  it('takes the first human and gpt turns, the type (else "other"), and joins image paths', async () => {
    const file = await tmpFile('qa.json', JSON.stringify([
      entry('q1', 'What color is the circle?', 'Red.', { type: 'color' }),
      { id: 7, conversations: [{ from: 'human', value: 'Hi?' }, { from: 'gpt', value: 'Hello.' }, { from: 'human', value: 'More?' }, { from: 'gpt', value: 'No.' }] },
      { image: '/abs/y.png', conversations: [{ from: 'gpt', value: 'ignored' }, { from: 'human', value: '<image> Shape?' }, { from: 'gpt', value: 'Star.' }] },
    ], null, 2));
    const items = await collect(readEvalItems(file, { imageFolder: '/imgs' }));
    expect(items).toEqual<EvalItem[]>([
      { index: 0, id: 'q1', type: 'color', image: '/imgs/x.png', question: '<image>\nWhat color is the circle?', reference: 'Red.' },
      { index: 1, id: '7', type: 'other', question: 'Hi?', reference: 'Hello.' },
      { index: 2, id: '#2', type: 'other', image: '/abs/y.png', question: '<image> Shape?', reference: 'Star.' },
    ]);
    expect(await collect(readEvalItems(file, { imageFolder: '/imgs', limit: 2 }))).toHaveLength(2);
  });

  it.each([
    [[{ id: 'a', conversations: [{ from: 'human', value: 'q' }] }], /entry 0 \(a\) needs a human turn followed by a gpt turn/],
    [[entry('a', 'q', 'a'), 'x'], /entry 1 is not an object/],
    [[{ id: 'b', conversations: 'no' }], /entry 0 \(b\) has no conversations list/],
    [[{ id: 'c', conversations: [{ from: 'human', value: '<image>\nq' }, { from: 'gpt', value: 'a' }] }], /the question has <image> but the entry no image/],
    [[{ id: 'd', image: 3, conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }] }], /image must be a file name/],
    [[{ id: 'e', conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 5 }] }], /turn values must be strings/],
  ])('a malformed entry is a DataError naming the file and entry: %j', async (data, msg) => {
    const file = await tmpFile('bad.json', JSON.stringify(data));
    const err = await collect(readEvalItems(file, { imageFolder: '/' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EvalDataError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(msg);
  });

  it('a missing file is a DataError', async () => {
    await expect(collect(readEvalItems('/no/such/qa.json', { imageFolder: '/' }))).rejects.toThrow(/cannot read \/no\/such\/qa\.json: ENOENT/);
  });
});

describe('evaluate', () => {
  it('scores by exact match, overall and per type, answering greedily', async () => {
    const file = await tmpFile('qa.json', JSON.stringify([
      entry('1', 'What color?', 'Red.', { type: 'color' }),
      entry('2', 'What color?', 'Blue.', { type: 'color' }),
      entry('3', 'How many?', 'Two.', { type: 'count' }),
      entry('4', 'Is there?', 'Yes.', { type: 'exists' }),
      entry('5', 'Anything', 'Fine.'),
    ]));
    const scripted: Record<string, string> = { '<image>\nWhat color?': 'red', '<image>\nHow many?': '2', '<image>\nIs there?': ' YES. ', '<image>\nAnything': 'fine' };
    const seen: AnswerRequest[] = [];
    const model: Answerer = { answer: async (req) => (seen.push(req), result(scripted[req.question!])) };
    const running: number[] = [];
    const r = await evaluate(model, { data: file, imageFolder: '/imgs', maxNewTokens: 9, onPrediction: (p, run) => void running.push(run.correct) });
    expect(r).toEqual({
      count: 5, correct: 3, accuracy: 0.6,
      byType: {
        color: { count: 2, correct: 1, accuracy: 0.5 }, count: { count: 1, correct: 0, accuracy: 0 },
        exists: { count: 1, correct: 1, accuracy: 1 }, other: { count: 1, correct: 1, accuracy: 1 },
      },
    });
    expect(Object.keys(r.byType)).toEqual(['color', 'count', 'exists', 'other']);
    expect(running).toEqual([1, 1, 1, 2, 3]);
    expect(seen.every((q) => q.temperature === 0 && q.maxNewTokens === 9 && q.image === '/imgs/x.png')).toBe(true);

    expect((await evaluate(model, { data: file, imageFolder: '/imgs', limit: 2 })).count).toBe(2);
    const empty = await tmpFile('empty.json', '[]');
    await expect(evaluate(model, { data: empty, imageFolder: '/' })).rejects.toThrow(/no entries to evaluate/);
  });

  describe('on the tiny LLaVA checkpoint', () => {
    let model: MobiLlamaV;
    beforeAll(async () => {
      model = await MobiLlamaV.load({ model: MODEL, template: 'mobillama_chat', threads: 1 });
    });
    afterAll(async () => {
      await model.dispose();
    });

    it('counts exactly the answers the model gives', async () => {
      // The model's own greedy answers, found here the way evaluate asks for them.
      const questions = ['What color is the circle?', 'How many shapes are there?', 'Is there a star?', 'Describe the image briefly.'];
      const items: { image: string; q: string; pred: string }[] = [];
      for (const image of IMAGES) {
        for (const q of questions) {
          const r = await model.answer({ image: join(ROOT, image), question: `<image>\n${q}`, temperature: 0, maxNewTokens: 6 });
          items.push({ image, q, pred: r.text });
        }
      }
      // Every other reference is the prediction as a person might write it; the rest are wrong.
      const types = ['color', 'count', 'exists', 'describe'];
      const expected = new Map<string, [number, number]>();
      const data = items.map((it, i) => {
        const type = types[i % 4];
        const match = i % 3 !== 0;
        const upper = it.pred.toUpperCase();
        const written = upper.toLowerCase() === it.pred.toLowerCase() ? upper : it.pred;
        const [n, c] = expected.get(type) ?? [0, 0];
        expected.set(type, [n + 1, c + (match ? 1 : 0)]);
        return { id: `e${i}`, image: it.image, type, conversations: [{ from: 'human', value: `<image>\n${it.q}` }, { from: 'gpt', value: match ? `  ${written}. ` : 'certainly not this' }] };
      });
      const file = await tmpFile('qa.json', JSON.stringify(data, null, 1));
      const r = await evaluate(model, { data: file, imageFolder: ROOT, maxNewTokens: 6 });
      expect(r.count).toBe(12);
      expect(r.correct).toBe(8);
      for (const [t, [n, c]] of expected) expect(r.byType[t]).toEqual({ count: n, correct: c, accuracy: c / n });
    });
  });
});
