import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openSafetensors, type HostTensor } from '@mobillama/core';
import { IMAGE_CACHE_SIZE, MobiLlamaV } from './mobillama-v.js';
import { tokenizeWithImage } from './image-tokens.js';
import { IMAGE_TOKEN_ID } from './conversation.js';

const DIR = fileURLToPath(new URL('../fixtures/tiny-llava/', import.meta.url));
const IMAGE = `${DIR}image.png`;

let m: MobiLlamaV;
let golden: Record<string, HostTensor>;
beforeAll(async () => {
  m = await MobiLlamaV.load({ model: DIR, threads: 1 });
  const src = await openSafetensors(`${DIR}golden.safetensors`);
  golden = {};
  for (const n of src.names()) golden[n] = await src.read(n);
  await src.close();
});
afterAll(() => m.dispose());

const ids = () => Array.from(golden.input_ids.data as BigInt64Array, Number);

function maxRel(a: Float32Array, b: Float32Array): number {
  let d = 0, r = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); r = Math.max(r, Math.abs(b[i])); }
  return d / r;
}

function logSoftmax(row: Float32Array, k: number): number {
  const max = Math.max(...row);
  return row[k] - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
}

describe('MobiLlamaV against the PyTorch LLaVA reference (tiny-llava)', () => {
  it('reads the LLaVA layout: tower folder, projector keys, template, pad mode', () => {
    expect(m.info.template).toBe('vicuna_v1');
    expect(m.info.imageTokens).toBe(16);
    expect(m.decoder.config.numKvHeads).toBe(4);
    expect(m.decoder.config.ffnOfLayer).toEqual([0, 0, 0]);
  });

  it('tokenizes the prompt around <image> as LLaVA does', () => {
    expect(tokenizeWithImage(m.tokenizer, 'USER:<image>\nWhat color is the circle?')).toEqual(ids());
  });

  it('image features, spliced logits and greedy tokens match', async () => {
    const feats = await m.imageEmbeddings(IMAGE);
    expect(maxRel(feats, golden.image_features.data as Float32Array)).toBeLessThan(1e-4);
    const p = await m.prepareIds(ids(), IMAGE);
    expect(p.seq).toBe(27);
    const out = await m.decoder.forward({
      embeds: p.embeds, batch: 1, seq: p.seq, positionIds: [Array.from({ length: p.seq }, (_, i) => i)],
      attentionMask: [new Array(p.seq).fill(1)], logitsIndex: Array.from({ length: p.seq }, (_, i) => i),
    });
    expect(maxRel(out.logits, golden.logits.data as Float32Array)).toBeLessThan(1e-4);
  });

  it('scoreContinuation matches the reference log-likelihoods within 1e-3 per token', async () => {
    const all = ids();
    const r = await m.scoreContinuation({ image: IMAGE, promptIds: all.slice(0, 8), continuationIds: all.slice(8) });
    const L = golden.logits.data as Float32Array, V = 320;
    // continuation token j sits at spliced position 8 - 1 + 16 + j and is predicted by the one before
    const expected = all.slice(8).map((tok, j) => logSoftmax(L.subarray((22 + j) * V, (23 + j) * V), tok));
    r.logprobs.forEach((lp, j) => expect(Math.abs(lp - expected[j])).toBeLessThan(1e-3));
    expect(r.total).toBeCloseTo(expected.reduce((a, b) => a + b, 0), 3);
  });

  it('the text path with a prompt: score of text equals score of its ids', async () => {
    const a = await m.scoreContinuation({ image: IMAGE, prompt: 'USER:<image>\nWhat color', continuation: ' is the circle?' });
    expect(a.tokens).toEqual(ids().slice(8));
    const b = await m.scoreContinuation({ image: IMAGE, promptIds: ids().slice(0, 8), continuationIds: ids().slice(8) });
    expect(a.total).toBeCloseTo(b.total, 5);
  });

  it('answers and streams; the stream concatenates to the answer', async () => {
    // A short system prompt: the fixture's 320-token vocabulary spells vicuna's default one in 170 tokens.
    const system = { role: 'system' as const, content: 'Be brief.' };
    const req = { messages: [system, { role: 'user' as const, content: 'What color is the circle?', image: IMAGE }], maxNewTokens: 8, temperature: 0 };
    const a = await m.answer(req);
    let streamed = '';
    for await (const piece of m.stream(req)) streamed += piece.text;
    expect(streamed.trim()).toBe(a.text);
    expect(a.usage.promptTokens).toBeGreaterThan(16);
    expect(a.usage.completionTokens).toBe(a.tokens.length);
    const textOnly = await m.answer({ messages: [system, { role: 'user', content: '<image>\nWhat color is the circle?'.slice(8) }], maxNewTokens: 8, temperature: 0 });
    expect(a.usage.promptTokens).toBeGreaterThanOrEqual(textOnly.usage.promptTokens + 16);
  });

  it('greedy generation after the spliced prompt gives the reference tokens', async () => {
    const { generate } = await import('@mobillama/decoder');
    const p = await m.prepareIds(ids(), IMAGE);
    const r = await generate(m.decoder, m.tokenizer, { embeds: p.embeds, seq: p.seq, contextIds: ids().filter((i) => i !== IMAGE_TOKEN_ID) },
      { maxNewTokens: 5, temperature: 0, ignoreEos: true });
    expect(r.tokens).toEqual(Array.from(golden.greedy_ids.data as BigInt64Array, Number));
  });

  it('rejects bad requests with clear errors', async () => {
    await expect(m.answer({ messages: [] })).rejects.toThrow(/no messages/);
    await expect(m.answer({ messages: [{ role: 'user', content: 'a', image: IMAGE }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c', image: IMAGE }] }))
      .rejects.toThrow(/one image/);
    await expect(m.answer({ question: '<image> what?' })).rejects.toThrow(/<image> markers for no image/);
    await expect(m.answer({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }] })).rejects.toThrow(/last message/);
    await expect(m.answer({ image: '/no/such.png', question: 'x' })).rejects.toThrow(/no\/such\.png/);
  });
});

describe('image features cache', () => {
  // Other real images: the held-out sample shipped with the micro model.
  const HELD = fileURLToPath(new URL('../../../models/mobillama-v-micro/heldout/images/', import.meta.url));

  it('encodes an image once while it is among the last few, keyed by content, and hands out fresh arrays', async () => {
    const encode = vi.spyOn(m.vision, 'encode');
    try {
      (await m.imageEmbeddings(IMAGE)).fill(0);
      const same = await m.imageEmbeddings(new Uint8Array(await readFile(IMAGE))); // same bytes, given differently
      expect(maxRel(same, golden.image_features.data as Float32Array)).toBeLessThan(1e-4);
      encode.mockClear();
      await m.imageEmbeddings(IMAGE);
      expect(encode).toHaveBeenCalledTimes(0);
      const others = (await readdir(HELD)).sort().slice(0, IMAGE_CACHE_SIZE).map((f) => join(HELD, f));
      for (const f of others) await m.imageEmbeddings(f);
      expect(encode).toHaveBeenCalledTimes(IMAGE_CACHE_SIZE);
      await m.imageEmbeddings(others[IMAGE_CACHE_SIZE - 1]);
      expect(encode).toHaveBeenCalledTimes(IMAGE_CACHE_SIZE);
      expect(maxRel(await m.imageEmbeddings(IMAGE), golden.image_features.data as Float32Array)).toBeLessThan(1e-4); // pushed out: encoded again
      expect(encode).toHaveBeenCalledTimes(IMAGE_CACHE_SIZE + 1);
      await expect(m.imageEmbeddings(join(HELD, 'missing.png'))).rejects.toThrow(/cannot read image .*missing\.png: ENOENT/);
    } finally {
      encode.mockRestore();
    }
  });
});

describe('quantize at load', () => {
  it('passes q4 block size and zero points to the decoder (they change the scores, fp32 stays the reference)', async () => {
    const score = async (opts: Partial<Parameters<typeof MobiLlamaV.load>[0]>) => {
      const q = await MobiLlamaV.load({ model: DIR, threads: 1, template: 'plain', ...opts });
      try {
        return (await q.scoreContinuation({ image: IMAGE, prompt: '<image>\n', continuation: ' a red circle' })).total;
      } finally {
        await q.dispose();
      }
    };
    const [f32, q4, q4zp] = [await score({}), await score({ quantize: 'q4' }), await score({ quantize: 'q4', q4: { blockSize: 16, zeroPoints: true } })];
    for (const x of [f32, q4, q4zp]) expect(Number.isFinite(x)).toBe(true);
    expect(q4zp).not.toBe(q4);
    expect(q4).not.toBe(f32);
  });
});
