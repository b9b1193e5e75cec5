import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectCleanFailure, runCli } from './cli-helpers.js';

describe('mobillama-v data shapes', () => {
  it('writes images, captions.json and qa.json, the same bytes for the same seed', async () => {
    const a = await mkdtemp(join(tmpdir(), 'data-a-'));
    const b = await mkdtemp(join(tmpdir(), 'data-b-'));
    const r = await runCli(['data', 'shapes', '--out', a, '--count', '12', '--seed', '21', '--qa-per-image', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote 12 images, 12 captions and 24 questions \(color \d+, shape \d+, count \d+, position \d+, exists \d+, describe \d+\) to /);
    const j = await runCli(['data', 'shapes', '--out', b, '--count', '12', '--seed', '21', '--qa-per-image', '2', '--json', '--shapes', 'circle,star', '--colors', 'red,blue,green']);
    expect(j.code, j.stderr).toBe(0);
    const summary = JSON.parse(j.stdout) as { images: number; questions: number; by_type: Record<string, number> };
    expect(summary.images).toBe(12);
    expect(Object.values(summary.by_type).reduce((x, y) => x + y, 0)).toBe(24);
    expect((await readdir(join(a, 'images'))).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `shapes-21-${String(i).padStart(6, '0')}.png`));
    const captions = JSON.parse(await readFile(join(b, 'captions.json'), 'utf8')) as { conversations: { value: string }[] }[];
    for (const c of captions) expect(c.conversations[1].value).toMatch(/^(?:(?:an?|two|three|four) (?:red|blue|green) (?:circles?|stars?)(?:, | and |\.$))+/);

    // Without --shapes/--colors: the shipped micro model's world, so `eval` on it is fair.
    const meta = JSON.parse(await readFile(join(a, 'meta.json'), 'utf8')) as { shapes: string[]; colors: string[] };
    expect(meta.shapes).toEqual(['circle', 'square', 'triangle', 'star']);
    expect(meta.colors).toEqual(['red', 'yellow', 'green', 'cyan', 'blue', 'purple', 'pink', 'black']);

    const again = await mkdtemp(join(tmpdir(), 'data-c-'));
    await runCli(['data', 'shapes', '--out', again, '--count', '12', '--seed', '21', '--qa-per-image', '2']);
    for (const f of ['captions.json', 'qa.json', 'images/shapes-21-000007.png']) {
      expect((await readFile(join(again, f))).equals(await readFile(join(a, f))), f).toBe(true);
    }
  });

  it('bad flags exit 2 with one line', async () => {
    const out = await mkdtemp(join(tmpdir(), 'data-bad-'));
    const base = ['data', 'shapes', '--out', out];
    const cases: [string[], RegExp][] = [
      [['--count', '0', '--seed', '1'], /count must be a positive integer/],
      [['--count', 'ten', '--seed', '1'], /--count must be a non-negative integer/],
      [['--count', '3', '--seed', '-1'], /--seed must be a non-negative integer/],
      [['--count', '3', '--seed', '4294967296'], /seed must be an integer in \[0, 2\^32\)/],
      [['--count', '3', '--seed', '1', '--size', '8'], /size must be an integer in \[32, 1024\]/],
      [['--count', '3', '--seed', '1', '--shapes', 'circle,hexagon'], /--shapes: unknown "hexagon"/],
      [['--count', '3', '--seed', '1', '--colors', 'red'], /at least two colors/],
      [['--count', '3', '--seed', '1', '--qa-per-image', '9'], /questions per image must be 0 … 6/],
      [['--seed', '1'], /--count/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli([...base, ...args])));
    results.forEach((r, i) => expect(expectCleanFailure(r), cases[i][0].join(' ')).toMatch(cases[i][1]));
    expect(expectCleanFailure(await runCli(['data', 'shapes', '--count', '1', '--seed', '1']))).toMatch(/--out/);
    expect(await readdir(out)).toEqual([]);
    // (Not a path under /proc: Node's recursive mkdir can spin forever there.)
    await writeFile(join(out, 'file'), '');
    expect(expectCleanFailure(await runCli(['data', 'shapes', '--out', join(out, 'file', 'x'), '--count', '1', '--seed', '1']))).toMatch(/cannot write to .*file\/x: ENOTDIR/);
  });
});
