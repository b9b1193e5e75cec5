import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensors } from '@mobillama/core';
import { ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

const CLIP = `${ROOT}packages/vision/fixtures/clip-text`;
const IMAGE = `${CLIP}/image.png`;
const LABELS = ['a red circle', 'a blue square', 'a green triangle', 'a yellow star'];

interface ClassifyJson {
  image: string;
  labels: { label: string; prob: number; logit: number }[];
  best: string;
}

async function goldenProbs(): Promise<Float32Array> {
  const src = await openSafetensors(`${CLIP}/golden.safetensors`);
  const t = await src.read('probs');
  await src.close();
  return t.data as Float32Array;
}

describe('mobillama-v classify', () => {
  it('--json: probabilities in label order sum to 1 and equal the PyTorch golden', async () => {
    const r = await runCli(['classify', '--clip', CLIP, '--image', IMAGE, '--labels', LABELS.join(','), '--threads', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as ClassifyJson;
    expect(out.image).toBe(IMAGE);
    expect(out.labels.map((x) => x.label)).toEqual(LABELS);
    expect(out.labels.reduce((s, x) => s + x.prob, 0)).toBeCloseTo(1, 6);
    const golden = await goldenProbs();
    out.labels.forEach((x, i) => expect(Math.abs(x.prob - golden[i])).toBeLessThan(1e-5));
    const bestIndex = golden.indexOf(Math.max(...golden));
    expect(out.best).toBe(LABELS[bestIndex]);
  });

  it('plain output: one "prob<TAB>label" line per label, best first; labels are trimmed', async () => {
    const r = await runCli(['classify', '--clip', CLIP, '--image', IMAGE, '--labels', ` ${LABELS.join(' , ')} ,`]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => l.split('\t'));
    expect(lines.map((l) => l[1]).sort()).toEqual([...LABELS].sort());
    const probs = lines.map((l) => Number(l[0]));
    expect([...probs].sort((a, b) => b - a)).toEqual(probs);
  });

  it('bad inputs exit 2 with one line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'classify-'));
    await writeFile(join(dir, 'corrupt.png'), Buffer.from('\x89PNG\r\n\x1a\n not really a png'));
    const base = ['classify', '--clip', CLIP, '--image', IMAGE];
    const cases: [string[], RegExp][] = [
      [[...base], /--labels/],
      [[...base, '--labels', 'just one'], /at least two/],
      [['classify', '--clip', CLIP, '--labels', 'a,b'], /--image/],
      [['classify', '--clip', CLIP, '--image', '/no/such.png', '--labels', 'a,b'], /no\/such\.png/],
      [['classify', '--clip', CLIP, '--image', join(dir, 'corrupt.png'), '--labels', 'a,b'], /corrupt\.png/],
      [['classify', '--clip', '/no/such/clip', '--image', IMAGE, '--labels', 'a,b'], /no\/such\/clip/],
      [['classify', '--clip', dir, '--image', IMAGE, '--labels', 'a,b'], /config\.json/],
      // A CLIP vision-only checkpoint has no text tower.
      [['classify', '--clip', `${ROOT}packages/vision/fixtures/clip-vision-bin`, '--image', IMAGE, '--labels', 'a,b'], /text/],
      [[...base, '--labels', 'a,b', '--threads', 'zero'], /--threads/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args)));
    results.forEach((r, i) => expect(expectCleanFailure(r), cases[i][0].join(' ')).toMatch(cases[i][1]));
  });

  it('without --clip: the micro model\'s CLIP, or a clear message until it ships', async () => {
    const r = await runCli(['classify', '--image', IMAGE, '--labels', 'a red circle,a blue square', '--json']);
    if (existsSync(`${ROOT}models/mobillama-v-micro/clip`)) {
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as ClassifyJson;
      expect(out.labels.reduce((s, x) => s + x.prob, 0)).toBeCloseTo(1, 5);
    } else {
      expect(expectCleanFailure(r)).toMatch(/no --clip given.*models\/mobillama-v-micro\/clip.*pass --clip DIR/);
    }
  });
});
