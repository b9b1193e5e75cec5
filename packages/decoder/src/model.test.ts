import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, type HostTensor } from '@mobillama/core';
import { DecoderModel } from './model.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

async function readGolden(dir: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(`${FIXTURES}${dir}/golden.safetensors`);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

const rows = (t: HostTensor): number[][] => {
  const [b, s] = t.shape;
  const d = Array.from(t.data as BigInt64Array, Number);
  return Array.from({ length: b }, (_, i) => d.slice(i * s, (i + 1) * s));
};

/** max |a-b| / max(|b|) over positions where the mask is 1: the 1e-4 relative criterion. */
function relErr(actual: Float32Array, expected: Float32Array, vocab: number, keep: (row: number) => boolean): number {
  let maxDiff = 0, maxRef = 0;
  for (let r = 0; r < expected.length / vocab; r++) {
    if (!keep(r)) continue;
    for (let j = 0; j < vocab; j++) {
      const i = r * vocab + j;
      maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
      maxRef = Math.max(maxRef, Math.abs(expected[i]));
    }
  }
  return maxDiff / maxRef;
}

const argmax = (x: Float32Array, off: number, n: number) => {
  let best = 0;
  for (let j = 1; j < n; j++) if (x[off + j] > x[off + best]) best = j;
  return best;
};

describe.each([
  { dir: 'mobillama-tiny-bin', ffns: [0, 0, 0], kv: 4 },
  { dir: 'llama-gqa-st', ffns: [0, 1], kv: 2 },
  { dir: 'mobillama-bf16-sharded', ffns: [0, 0, 0], kv: 4 },
])('decoder against the PyTorch reference: $dir', ({ dir, ffns, kv }) => {
  let model: DecoderModel;
  let golden: Record<string, HostTensor>;
  beforeAll(async () => {
    model = await DecoderModel.load(`${FIXTURES}${dir}`, { threads: 1 });
    golden = await readGolden(dir);
  });
  afterAll(() => model.dispose());

  it('derives head counts from the weights and detects FFN sharing', () => {
    expect(model.config.numKvHeads).toBe(kv);
    expect(model.config.ffnOfLayer).toEqual(ffns);
  });

  it('prefill logits match at every real position, and the KV-cache decode step matches', async () => {
    const ids = rows(golden.input_ids), mask = rows(golden.attention_mask), pos = rows(golden.position_ids);
    const V = model.config.vocabSize, T = ids[0].length;
    const pre = await model.forward({
      embeds: model.embed(ids.flat()), batch: 2, seq: T, positionIds: pos, attentionMask: mask,
      logitsIndex: Array.from({ length: T }, (_, i) => i),
    });
    const maskFlat = mask.flat();
    expect(relErr(pre.logits, golden.logits.data as Float32Array, V, (r) => maskFlat[r] === 1)).toBeLessThan(1e-4);

    const next = rows(golden.next_ids).map((r) => r[0]);
    const step = await model.forward({
      embeds: model.embed(next), batch: 2, seq: 1, positionIds: rows(golden.next_position_ids),
      attentionMask: rows(golden.next_attention_mask), past: pre.cache,
    });
    expect(relErr(step.logits, golden.next_logits.data as Float32Array, V, () => true)).toBeLessThan(1e-4);
  });

  it('greedy generation with the KV cache gives the reference tokens', async () => {
    const ids = rows(golden.input_ids), V = model.config.vocabSize;
    let mask = rows(golden.attention_mask), pos = rows(golden.position_ids);
    let out = await model.forward({ embeds: model.embed(ids.flat()), batch: 2, seq: ids[0].length, positionIds: pos, attentionMask: mask });
    const got: number[][] = [[], []];
    for (let s = 0; s < 6; s++) {
      const next = [0, 1].map((b) => argmax(out.logits, b * V, V));
      next.forEach((t, b) => got[b].push(t));
      pos = pos.map((p) => [p[p.length - 1] + 1]);
      mask = mask.map((m) => [...m, 1]);
      out = await model.forward({ embeds: model.embed(next), batch: 2, seq: 1, positionIds: pos, attentionMask: mask, past: out.cache });
    }
    expect(got).toEqual(rows(golden.greedy_ids));
  });
});

it('decoder accepts inputs_embeds directly (PyTorch reference)', async () => {
  const model = await DecoderModel.load(`${FIXTURES}mobillama-tiny-bin`, { threads: 1 });
  const golden = await readGolden('mobillama-tiny-bin');
  const e = golden.embeds;
  const out = await model.forward({
    embeds: e.data as Float32Array, batch: 1, seq: 5, positionIds: [[0, 1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1, 1]],
    logitsIndex: [0, 1, 2, 3, 4],
  });
  expect(relErr(out.logits, golden.embeds_logits.data as Float32Array, model.config.vocabSize, () => true)).toBeLessThan(1e-4);
  await model.dispose();
});
