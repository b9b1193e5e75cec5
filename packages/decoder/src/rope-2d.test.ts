import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createSession, exportOnnx, openSafetensors, type HostTensor, type RunTensor } from '@mobillama/core';
import { DECODER_IO, buildDecoderGraph } from './graph.js';
import { DecoderModel, attentionBias } from './model.js';
import { columnMajorOffset, gridSecondPositionIds, gridSide } from './rope-2d.js';
import { loadDecoder } from './weights.js';

// The 2-D rotary decoder against the PyTorch reference (scripts/reference/make_rope2d_fixtures.py):
// 4 text tokens, a 4 × 4 grid of image tokens, 3 text tokens, then one cached step.
const DIR = fileURLToPath(new URL('../fixtures/mobillama-rope2d', import.meta.url));

async function golden(): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(`${DIR}/golden.safetensors`);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

/** max |a − b| / max |b|. */
function relErr(actual: Float32Array, expected: Float32Array): number {
  let diff = 0, ref = 0;
  expected.forEach((e, i) => {
    diff = Math.max(diff, Math.abs(actual[i] - e));
    ref = Math.max(ref, Math.abs(e));
  });
  return diff / ref;
}

describe('grid position ids', () => {
  it('number a square grid row by row and column by column over the same block of ids', () => {
    expect(gridSide(64)).toBe(8);
    expect(() => gridSide(65)).toThrow(/square grid/);
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map((j) => columnMajorOffset(j, 3))).toEqual([0, 3, 6, 1, 4, 7, 2, 5, 8]);
    expect(gridSecondPositionIds(2 + 4 + 1, 2, 4)).toEqual([0, 1, 2, 4, 3, 5, 6]);
    expect(gridSecondPositionIds(4, 2, 4)).toEqual([0, 1, 2, 4]); // a grid cut off by the sequence end
  });
});

describe('2-D rotary decoder against the PyTorch reference', () => {
  it('the fused graph (capacity and auto lowerings): prompt with a grid, then a cached step', async () => {
    const g = await golden();
    const S = g.embeds.shape[1];
    const ids = Array.from(g.position_ids.data as BigInt64Array, Number);
    const first = ids.slice(0, S), second = ids.slice(S);
    expect(second).toEqual(gridSecondPositionIds(S, 4, 16));
    for (const attention of ['capacity', 'auto'] as const) {
      const model = await DecoderModel.load(DIR, { threads: 1, attention });
      expect(model.config.rope2d).toBe(true);
      const all = Array.from({ length: S }, (_, i) => i);
      const pre = await model.forward({
        embeds: g.embeds.data as Float32Array, batch: 1, seq: S, positionIds: [first], positionIds2: [second],
        attentionMask: [new Array(S).fill(1)], logitsIndex: all,
      });
      expect(relErr(pre.logits, g.logits.data as Float32Array)).toBeLessThan(1e-4);
      const step = await model.forward({
        embeds: g.next_embeds.data as Float32Array, batch: 1, seq: 1, positionIds: [[S]], positionIds2: [[S]],
        attentionMask: [new Array(S + 1).fill(1)], past: pre.cache,
      });
      expect(relErr(step.logits, g.next_logits.data as Float32Array)).toBeLessThan(1e-4);
      // Without second ids the model is plain RoPE, which the reference tells apart.
      const plain = await model.forward({
        embeds: g.embeds.data as Float32Array, batch: 1, seq: S, positionIds: [first], attentionMask: [new Array(S).fill(1)], logitsIndex: all,
      });
      expect(relErr(plain.logits, g.logits_1d.data as Float32Array)).toBeLessThan(1e-4);
      expect(relErr(plain.logits, g.logits.data as Float32Array)).toBeGreaterThan(1e-2);
      await model.dispose();
    }
  });

  it('the primitive graph (the one training differentiates)', async () => {
    const g = await golden();
    const [, S, H] = g.embeds.shape;
    const loaded = await loadDecoder(DIR);
    const { numLayers: L, numKvHeads: KV, headDim: D } = loaded.config;
    const session = await createSession(exportOnnx(buildDecoderGraph(loaded.config, loaded.weights)), { threads: 1 });
    const ids = g.position_ids.data as BigInt64Array;
    const io = DECODER_IO;
    const feeds: Record<string, RunTensor> = {
      [io.embeds]: { dtype: 'float32', dims: [1, S, H], data: g.embeds.data as Float32Array },
      [io.positions]: { dtype: 'int64', dims: [1, S], data: ids.slice(0, S) },
      [io.positions2]: { dtype: 'int64', dims: [1, S], data: ids.slice(S) },
      [io.bias]: { dtype: 'float32', dims: [1, 1, S, S], data: attentionBias([new Array(S).fill(1)], 0, S) },
      [io.logitsIndex]: { dtype: 'int64', dims: [S], data: BigInt64Array.from({ length: S }, (_, i) => BigInt(i)) },
    };
    for (let i = 0; i < L; i++) {
      feeds[io.pastKey(i)] = { dtype: 'float32', dims: [1, KV, 0, D], data: new Float32Array(0) };
      feeds[io.pastValue(i)] = { dtype: 'float32', dims: [1, KV, 0, D], data: new Float32Array(0) };
    }
    const out = await session.run(feeds);
    expect(relErr(out[io.logits].data as Float32Array, g.logits.data as Float32Array)).toBeLessThan(1e-4);
    await session.release();
    await loaded.source.close();
  });
});
