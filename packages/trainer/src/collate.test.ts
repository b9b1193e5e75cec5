import { describe, expect, it } from 'vitest';
import { IMAGE_TOKEN_ID } from '@mobillama/pipeline';
import { MASKED, TRAIN_IO, collate, type LoadedSample } from './collate.js';
import { IGNORE_INDEX } from './masking.js';

const I = IGNORE_INDEX;
const nums = (x: ArrayLike<bigint | number>) => Array.from(x, Number);
const px = (v: number) => new Float32Array(3 * 2 * 2).fill(v);
const opts = { imageTokens: 3, pixelShape: [3, 2, 2] as const, maxLength: 100 };

describe('collate', () => {
  it('splices image rows at the marker, pads right, shifts the labels into targets', () => {
    const a: LoadedSample = { id: 'a', ids: [1, IMAGE_TOKEN_ID, 10, 11], labels: [I, I, 10, 11], image: 'a.png', pixels: px(1) };
    const b: LoadedSample = { id: 'b', ids: [1, 20, 21], labels: [I, I, 21], image: null, pixels: null };
    const mb = collate([a, b], opts);
    const f = mb.feeds;
    expect(nums(f[TRAIN_IO.textIds].data as BigInt64Array)).toEqual([1, 10, 11, 1, 20, 21]);
    expect(f[TRAIN_IO.pixels].dims).toEqual([1, 3, 2, 2]);
    // a: text row 0, image rows 6..8 (after the 6 text rows), text rows 1, 2; b: rows 3..5 then padding (row 0).
    expect(f[TRAIN_IO.splice].dims).toEqual([2, 6]);
    expect(nums(f[TRAIN_IO.splice].data as BigInt64Array)).toEqual([0, 6, 7, 8, 1, 2, 3, 4, 5, 0, 0, 0]);
    expect(Array.from(f[TRAIN_IO.padBias].data as Float32Array)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, MASKED, MASKED, MASKED].map(Math.fround));
    expect(nums(f[TRAIN_IO.positions].data as BigInt64Array)).toEqual([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
    // Targets: a's spliced labels [I, I, I, I, 10, 11] → positions 3 and 4 predict 10 and 11;
    // b's [I, I, 21] → position 1 (flat 6 + 1 = 7) predicts 21.
    expect(nums(f[TRAIN_IO.targetIndex].data as BigInt64Array)).toEqual([3, 4, 7]);
    expect(nums(f[TRAIN_IO.targetIds].data as BigInt64Array)).toEqual([10, 11, 21]);
    expect(mb).toMatchObject({ tokens: 9, targets: 3, seq: 6, ids: ['a', 'b'] });
  });

  it('cuts spliced sequences at maxLength (image rows count), as LLaVA cuts to model_max_length', () => {
    const a: LoadedSample = { id: 'a', ids: [1, IMAGE_TOKEN_ID, 10, 11], labels: [I, I, 10, 11], image: 'a.png', pixels: px(1) };
    const mb = collate([a], { ...opts, maxLength: 5 });
    expect(nums(mb.feeds[TRAIN_IO.splice].data as BigInt64Array)).toEqual([0, 2, 3, 4, 1]);
    expect(nums(mb.feeds[TRAIN_IO.targetIds].data as BigInt64Array)).toEqual([10]);
  });

  it('a text-only batch still feeds one (unused) image', () => {
    const mb = collate([{ id: 't', ids: [1, 5, 6], labels: [I, 5, 6], image: null, pixels: null }], opts);
    expect(mb.feeds[TRAIN_IO.pixels].dims).toEqual([1, 3, 2, 2]);
    expect(nums(mb.feeds[TRAIN_IO.splice].data as BigInt64Array)).toEqual([0, 1, 2]);
    expect(mb.targets).toBe(2);
  });

  it('independent turns: each turn\'s positions restart where the prefix (image rows included) ends; segments go to the graph', () => {
    const a: LoadedSample = {
      id: 'p', ids: [1, IMAGE_TOKEN_ID, 10, 11, 20, 21, 22], labels: [I, I, I, 11, I, 21, 22], image: 'a.png', pixels: px(1),
      segments: [0, 0, 1, 1, 2, 2, 2],
    };
    const f = collate([a], opts).feeds;
    // Prefix: BOS + 3 image rows (positions 0..3); turn 1 at 4, 5; turn 2 at 4, 5, 6.
    expect(nums(f[TRAIN_IO.positions].data as BigInt64Array)).toEqual([0, 1, 2, 3, 4, 5, 4, 5, 6]);
    expect(nums(f[TRAIN_IO.segments].data as BigInt64Array)).toEqual([0, 0, 0, 0, 1, 1, 2, 2, 2]);
    // Ordinary samples: one segment, positions 0..T-1.
    const g = collate([{ id: 't', ids: [1, 5, 6], labels: [I, 5, 6], image: null, pixels: null }], opts).feeds;
    expect(nums(g[TRAIN_IO.segments].data as BigInt64Array)).toEqual([0, 0, 0]);
  });

  it('2-D rotary: position_ids_2 numbers each image\'s 2 × 2 grid column by column, text as position_ids', () => {
    const o = { ...opts, imageTokens: 4, rope2d: true };
    const a: LoadedSample = { id: 'a', ids: [1, IMAGE_TOKEN_ID, 10, 11], labels: [I, I, 10, 11], image: 'a.png', pixels: px(1) };
    const b: LoadedSample = {
      id: 'b', ids: [1, 2, IMAGE_TOKEN_ID, 10, 20, 21], labels: [I, I, I, 10, 21, 21], image: 'b.png', pixels: px(2), segments: [0, 0, 0, 1, 2, 2],
    };
    const f = collate([a, b], o).feeds;
    // a: BOS, grid at 1..4 (row-major 1 2 3 4 → column-major 1 3 2 4), text 5, 6, then padding.
    // b: BOS, 2, grid at 2..5, turn 1 at 6, turn 2 at 6, 7 (independent turns restart after the prefix).
    expect(nums(f[TRAIN_IO.positions].data as BigInt64Array)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 6, 7]);
    expect(nums(f[TRAIN_IO.positions2].data as BigInt64Array)).toEqual([0, 1, 3, 2, 4, 5, 6, 7, 8, 0, 1, 2, 4, 3, 5, 6, 6, 7]);
    expect(collate([a], opts).feeds[TRAIN_IO.positions2]).toBeUndefined();
    expect(() => collate([a], { ...opts, rope2d: true })).toThrow(/square grid/);
  });

  it('refuses a marker without pixels', () => {
    expect(() => collate([{ id: 'x', ids: [1, IMAGE_TOKEN_ID], labels: [I, I], image: 'x', pixels: null }], opts)).toThrow(/sample x/);
  });
});
