import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

const MODEL = `${ROOT}packages/pipeline/fixtures/tiny-llava`;
// The tiny fixture has 128 positions: vicuna_v1's system prompt does not fit, so a short template.
const common = ['--model', MODEL, '--template', 'mobillama_chat', '--threads', '1', '--max-new-tokens', '6'];

interface JsonReport {
  accuracy: number;
  by_type: Record<string, number>;
  count: number;
}

interface Prediction {
  id: string;
  type: string;
  reference: string;
  prediction: string;
  correct: boolean;
}

describe('mobillama-v eval', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eval-e2e-'));
    const r = await runCli(['data', 'shapes', '--out', dir, '--count', '4', '--seed', '3', '--size', '32']);
    expect(r.code).toBe(0);
  });

  it('scores generated shapes questions: --json, per-type keys, predictions', async () => {
    const preds = join(dir, 'preds.jsonl');
    const r = await runCli(['eval', ...common, '--data', join(dir, 'qa.json'), '--image-folder', join(dir, 'images'), '--json', '--predictions', preds]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as JsonReport;
    expect(Object.keys(out)).toEqual(['accuracy', 'by_type', 'count']);
    expect(out.count).toBe(12);
    expect(Object.keys(out.by_type).sort()).toEqual(['color', 'count', 'describe', 'exists', 'position', 'shape']);
    const lines = (await readFile(preds, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Prediction);
    expect(lines).toHaveLength(12);
    expect(out.accuracy).toBe(lines.filter((p) => p.correct).length / 12);
  });

  it('counts exactly the matches it should (references rewritten from the model\'s own answers)', async () => {
    const preds = join(dir, 'preds.jsonl');
    await runCli(['eval', ...common, '--data', join(dir, 'qa.json'), '--json', '--predictions', preds]);
    const predictions = (await readFile(preds, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Prediction);
    const qa = JSON.parse(await readFile(join(dir, 'qa.json'), 'utf8')) as { type: string; conversations: { value: string }[] }[];
    // Even entries: the model's answer, written with a trailing period and odd spacing; odd: wrong.
    const tally: Record<string, [number, number]> = {};
    qa.forEach((e, i) => {
      const match = i % 2 === 0;
      e.conversations[1].value = match ? ` ${predictions[i].prediction}. ` : 'not this one';
      const t = (tally[e.type] ??= [0, 0]);
      t[0]++;
      if (match) t[1]++;
    });
    delete (qa[1] as { type?: string }).type; // → "other"
    tally[predictions[1].type][0]--;
    tally.other = [1, 0];
    const file = join(dir, 'rewritten.json');
    await writeFile(file, JSON.stringify(qa, null, 2));
    const r = await runCli(['eval', ...common, '--data', file, '--image-folder', join(dir, 'images'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as JsonReport;
    expect(out.count).toBe(12);
    expect(out.accuracy).toBe(0.5);
    const want = Object.fromEntries(Object.entries(tally).filter(([, [n]]) => n > 0).map(([k, [n, c]]) => [k, c / n]));
    expect(out.by_type).toEqual(want);

    const table = await runCli(['eval', ...common, '--data', file, '--image-folder', join(dir, 'images'), '--limit', '4']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^type\s+count\s+correct\s+accuracy\n/);
    expect(table.stdout).toMatch(/\noverall\s+4\s+2\s+50\.0%\n$/);
    expect(table.stdout).toMatch(/\nother\s+1\s+0\s+0\.0%\n/);
  });

  it('bad input exits 2 with one line', async () => {
    const data = join(dir, 'qa.json');
    const bad = async (name: string, text: string) => {
      await writeFile(join(dir, name), text);
      return join(dir, name);
    };
    const cases: [string[], RegExp][] = [
      [[], /--data/],
      [['--data', '/no/such/qa.json'], /no\/such\/qa\.json/],
      [['--data', data, '--image-folder', '/no/such/images'], /no\/such\/images/],
      [['--data', data, '--limit', 'abc'], /--limit must be a positive integer/],
      [['--data', data, '--limit', '0'], /--limit/],
      [['--data', data, '--predictions', '/no/such/dir/p.jsonl'], /--predictions: cannot write/],
      [['--data', await bad('text.json', 'hello')], /text\.json: not a JSON array/],
      [['--data', await bad('cut.json', '[{"id": "a", "conv')], /cut\.json: ends before/],
      [['--data', await bad('empty.json', '[]')], /no entries/],
      [['--data', await bad('nogpt.json', JSON.stringify([{ id: 'x', conversations: [{ from: 'human', value: 'q' }] }]))],
        /entry 0 \(x\) needs a human turn followed by a gpt turn/],
      [['--data', await bad('noimg.json', JSON.stringify([{ id: 'y', image: 'missing.png', conversations: [{ from: 'human', value: '<image>\nq' }, { from: 'gpt', value: 'a' }] }]))],
        /missing\.png/],
    ];
    // Two at a time: each run loads the model.
    for (let i = 0; i < cases.length; i += 2) {
      const batch = cases.slice(i, i + 2);
      const results = await Promise.all(batch.map(([args]) => runCli(['eval', ...common, ...args])));
      results.forEach((r, j) => expect(expectCleanFailure(r), batch[j][0].join(' ')).toMatch(batch[j][1]));
    }
    expect(expectCleanFailure(await runCli(['eval', '--model', '/no/such/model', '--data', data]))).toMatch(/no\/such\/model/);
  });
});
