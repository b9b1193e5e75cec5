import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensors } from '@mobillama/core';
import { ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

const MODEL = `${ROOT}packages/pipeline/fixtures/tiny-llava`;
const IMAGE = `${MODEL}/image.png`;
const common = ['--model', MODEL, '--threads', '1'];

describe('mobillama-v ask', () => {
  it('streams an answer and prints JSON with usage and timings', async () => {
    const plain = await runCli(['ask', ...common, '--image', IMAGE, '--template', 'plain', 'What color?', '--max-new-tokens', '5']);
    expect(plain.code).toBe(0);
    const json = await runCli(['ask', ...common, '--image', IMAGE, '--template', 'plain', 'What color?', '--max-new-tokens', '5', '--json']);
    expect(json.code).toBe(0);
    const r = JSON.parse(json.stdout) as { answer: string; tokens: number[]; usage: { prompt_tokens: number }; timings: object };
    expect(r.tokens.length).toBeGreaterThan(0);
    expect(r.usage.prompt_tokens).toBeGreaterThan(16);
    expect(plain.stdout.trim()).toBe(r.answer);
  });

  it('--chat answers one line per question from stdin about the same image', async () => {
    const r = await runCli(['ask', ...common, '--image', IMAGE, '--template', 'mobillama_chat', '--chat', '--json', '--max-new-tokens', '3'],
      { input: 'What color?\nAnd the shape?\n' });
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { usage: { prompt_tokens: number } });
    expect(lines).toHaveLength(2);
    // The second turn's prompt holds the first exchange.
    expect(lines[1].usage.prompt_tokens).toBeGreaterThan(lines[0].usage.prompt_tokens);
  });

  it('bad inputs exit 2 with one line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ask-'));
    await writeFile(join(dir, 'corrupt.png'), Buffer.from('\x89PNG\r\n\x1a\n this is not really a png'));
    await writeFile(join(dir, 'text.jpg'), 'hello');
    expect(expectCleanFailure(await runCli(['ask', ...common, '--image', '/no/such.png', 'q']))).toMatch(/no\/such\.png/);
    expect(expectCleanFailure(await runCli(['ask', ...common, '--image', join(dir, 'corrupt.png'), 'q']))).toMatch(/corrupt\.png/);
    expect(expectCleanFailure(await runCli(['ask', ...common, '--image', join(dir, 'text.jpg'), 'q']))).toMatch(/text\.jpg/);
    expect(expectCleanFailure(await runCli(['ask', '--model', '/no/such/model', '--image', IMAGE, 'q']))).toMatch(/no\/such\/model/);
    expect(expectCleanFailure(await runCli(['ask', '--model', dir, '--image', IMAGE, 'q']))).toMatch(/config\.json/);
    expect(expectCleanFailure(await runCli(['ask', ...common, '--image', IMAGE]))).toMatch(/give a question/);
  });
});

describe('mobillama-v score', () => {
  it('matches the PyTorch reference log-likelihoods (ids and text forms agree)', async () => {
    const src = await openSafetensors(`${MODEL}/golden.safetensors`);
    const logits = (await src.read('logits')).data as Float32Array;
    await src.close();
    const ids = [1, 289, 312, -200, 290, 13, 278, 272, 267, 263, 283, 306];
    const r = await runCli(['score', ...common, '--image', IMAGE, '--prompt-ids', ids.slice(0, 8).join(','),
      '--continuation-ids', ids.slice(8).join(','), '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { tokens: number[]; logprobs: number[]; total: number };
    expect(out.tokens).toEqual(ids.slice(8));
    out.tokens.forEach((tok, j) => {
      const row = logits.subarray((22 + j) * 320, (23 + j) * 320);
      const max = Math.max(...row);
      const ref = row[tok] - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      expect(Math.abs(out.logprobs[j] - ref)).toBeLessThan(1e-3);
    });
    const text = await runCli(['score', ...common, '--image', IMAGE, '--prompt', 'USER:<image>\nWhat color', '--continuation', ' is the circle?', '--json']);
    expect((JSON.parse(text.stdout) as { total: number }).total).toBeCloseTo(out.total, 4);
  });

  it('bad flags exit 2', async () => {
    expect(expectCleanFailure(await runCli(['score', ...common, '--image', IMAGE, '--prompt', 'x']))).toMatch(/go together/);
    expect(expectCleanFailure(await runCli(['score', ...common, '--prompt-ids', '1,a', '--continuation-ids', '2']))).toMatch(/comma-separated/);
  });
});
