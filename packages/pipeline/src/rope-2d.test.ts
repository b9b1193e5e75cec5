import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { gridSecondPositionIds } from '@mobillama/decoder';
import { MobiLlamaV } from './mobillama-v.js';
import { tokenizeWithImage } from './image-tokens.js';

// The pipeline's side of 2-D rotary (decoder/src/rope-2d.ts; the numerics are checked against
// PyTorch in the decoder's tests): the tiny-llava fixture with `rope_2d: true` in its config
// gets its 4 × 4 image tokens numbered column by column in the second ids, in every path.
const FIXTURE = fileURLToPath(new URL('../fixtures/tiny-llava/', import.meta.url));
const IMAGE = `${FIXTURE}image.png`;
const PROMPT = 'USER:<image>\nWhat color is the circle?';

let dir: string;
let m: MobiLlamaV;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rope2d-'));
  await cp(FIXTURE, dir, { recursive: true });
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...cfg, rope_2d: true }));
  m = await MobiLlamaV.load({ model: dir, threads: 1 });
});
afterAll(async () => {
  await m.dispose();
  await rm(dir, { recursive: true, force: true });
});

it('prepareIds gives the image grid its column-by-column ids', async () => {
  expect(m.decoder.config.rope2d).toBe(true);
  const ids = tokenizeWithImage(m.tokenizer, PROMPT);
  const at = ids.indexOf(-200);
  const p = await m.prepareIds(ids, IMAGE);
  expect(p.positionIds2).toEqual(gridSecondPositionIds(p.seq, at, 16));
  expect(p.positionIds2![at + 1]).toBe(at + 4); // row 0, column 1
  expect((await m.prepareIds(m.tokenizer.encode('USER: hi'))).positionIds2).toBeNull();
});

it('score and answer run the decoder with those ids', async () => {
  const ids = tokenizeWithImage(m.tokenizer, PROMPT);
  const p = await m.prepareIds(ids, IMAGE);
  const all = Array.from({ length: p.seq }, (_, i) => i);
  const scored = await m.scoreContinuation({ image: IMAGE, promptIds: ids.slice(0, 8), continuationIds: ids.slice(8) });
  const forward = (second?: readonly number[]) => m.decoder.forward({
    embeds: p.embeds, batch: 1, seq: p.seq, positionIds: [all], attentionMask: [new Array(p.seq).fill(1)],
    ...(second ? { positionIds2: [second] } : {}), logitsIndex: [p.seq - 2],
  });
  const V = m.decoder.config.vocabSize;
  const last = ids[ids.length - 1];
  const logprob = (l: Float32Array) => {
    const max = Math.max(...l.subarray(0, V));
    return l[last] - max - Math.log(l.subarray(0, V).reduce((s, x) => s + Math.exp(x - max), 0));
  };
  const with2d = logprob((await forward(p.positionIds2!)).logits), plain = logprob((await forward()).logits);
  expect(scored.logprobs[scored.logprobs.length - 1]).toBeCloseTo(with2d, 5);
  expect(Math.abs(with2d - plain)).toBeGreaterThan(1e-4);

  // answer: the prefill gets the grid's second ids, each decode step one id for both.
  const spy = vi.spyOn(m.decoder, 'forward');
  const system = { role: 'system' as const, content: 'Be brief.' };
  await m.answer({ messages: [system, { role: 'user', content: 'What color is the circle?', image: IMAGE }], maxNewTokens: 3, temperature: 0, ignoreEos: true });
  const [prefill, step] = spy.mock.calls.map(([input]) => input);
  spy.mockRestore();
  // The grid's first token (row 0, column 0) has equal ids; the second differs.
  const at = prefill.positionIds[0].findIndex((_, i) => prefill.positionIds2![0][i] !== i) - 1;
  expect(at).toBeGreaterThan(0);
  expect(prefill.positionIds2![0]).toEqual(gridSecondPositionIds(prefill.seq, at, 16));
  expect(step.positionIds).toEqual([[prefill.seq]]);
  expect(step.positionIds2).toBeUndefined();
});
