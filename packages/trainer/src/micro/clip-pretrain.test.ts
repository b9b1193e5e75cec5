import { describe, expect, it } from 'vitest';
import { Rng } from '../rng.js';
import { groupPairs, hardNegativeBatch } from './clip-pretrain.js';

// 5 colour groups of 8 pairs; captions unique except one duplicate pair in group "g0".
const pairs = Array.from({ length: 40 }, (_, i) => ({ caption: i === 1 ? 'caption 0' : `caption ${i}`, group: `g${i % 5}` }));

describe('hard-negative CLIP batches', () => {
  it('groupPairs keeps each group in index order; a pair without a group is its own', () => {
    const g = groupPairs([...pairs, { caption: 'lonely' }]);
    expect(g.get('g0')).toEqual([0, 5, 10, 15, 20, 25, 30, 35]);
    expect(g.get('40')).toEqual([40]);
    expect(g.size).toBe(6);
  });

  it('fills a batch with runs of ≤ perGroup look-alikes, no caption twice, deterministically', () => {
    const groups = groupPairs(pairs);
    const a = hardNegativeBatch(pairs, groups, 16, 4, Rng.seeded(7, 'clip-hard'));
    const b = hardNegativeBatch(pairs, groups, 16, 4, Rng.seeded(7, 'clip-hard'));
    expect(a).toEqual(b);
    expect(a).toHaveLength(16);
    expect(new Set(a.map((i) => pairs[i].caption)).size).toBe(16);
    // Look-alikes sit together: the batch is runs of one group, each pass adding ≤ 4 (two
    // passes on the same group can join into one run of ≤ 8).
    const runs: number[] = [];
    a.forEach((i, j) => { if (j > 0 && pairs[i].group === pairs[a[j - 1]].group) runs[runs.length - 1]++; else runs.push(1); });
    expect(Math.max(...runs)).toBeGreaterThanOrEqual(4);
    expect(Math.max(...runs)).toBeLessThanOrEqual(8);
  });

  it('comes out short, not stuck, when there are fewer distinct captions than the batch', () => {
    const few = Array.from({ length: 10 }, (_, i) => ({ caption: `c${i % 3}`, group: 'all' }));
    expect(hardNegativeBatch(few, groupPairs(few), 8, 4, Rng.seeded(1)).map((i) => few[i].caption).sort()).toEqual(['c0', 'c1', 'c2']);
  });
});
