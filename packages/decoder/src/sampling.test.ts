import { describe, expect, it } from 'vitest';
import { Sampler, Xoshiro128, argmax } from './sampling.js';

const logits = (...v: number[]): Float32Array => Float32Array.from(v);

/** A seeded pseudo-random logit vector with a clear but not overwhelming winner. */
function randomLogits(n: number, seed: number): Float32Array {
  const rng = new Xoshiro128(seed);
  return Float32Array.from({ length: n }, () => rng.nextFloat() * 6 - 3);
}

describe('Xoshiro128', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = new Xoshiro128(42);
    const b = new Xoshiro128(42);
    const c = new Xoshiro128(43);
    const sa = Array.from({ length: 8 }, () => a.next());
    expect(Array.from({ length: 8 }, () => b.next())).toEqual(sa);
    expect(Array.from({ length: 8 }, () => c.next())).not.toEqual(sa);
  });

  it('gives floats in [0, 1) with a sane mean', () => {
    const r = new Xoshiro128(7);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const x = r.nextFloat();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      sum += x;
    }
    expect(Math.abs(sum / 10000 - 0.5)).toBeLessThan(0.02);
  });
});

describe('Sampler', () => {
  it('greedy: temperature 0, or no sampling options', () => {
    const l = logits(0.1, 2.5, -1, 2.4);
    expect(new Sampler({ temperature: 0 }).next(l, [])).toBe(1);
    expect(new Sampler({}).next(l, [])).toBe(1);
    expect(new Sampler({ temperature: 0, topK: 3, topP: 0.5, seed: 1 }).next(l, [])).toBe(1);
    expect(new Sampler({}).greedy).toBe(true);
    expect(new Sampler({ topP: 0.9 }).greedy).toBe(false);
  });

  it('greedy ties go to the lowest id; NaN never wins', () => {
    expect(new Sampler({}).next(logits(1, 3, 3, 2), [])).toBe(1);
    expect(argmax(logits(NaN, -Infinity, -5))).toBe(2);
    expect(argmax(logits(-Infinity, -Infinity))).toBe(0);
  });

  it('is deterministic for a given seed', () => {
    const l = randomLogits(1000, 3);
    const run = (seed: number): number[] => {
      const s = new Sampler({ temperature: 1.2, topK: 50, topP: 0.95, seed });
      return Array.from({ length: 50 }, () => s.next(l, []));
    };
    expect(run(1234)).toEqual(run(1234));
    expect(run(1234)).not.toEqual(run(4321));
  });

  it('top-k = 1 equals greedy', () => {
    for (let seed = 0; seed < 20; seed++) {
      const l = randomLogits(500, seed);
      const s = new Sampler({ temperature: 5, topK: 1, seed });
      expect(s.next(l, [])).toBe(argmax(l));
    }
  });

  it('tiny top-p equals greedy', () => {
    for (let seed = 0; seed < 20; seed++) {
      const l = randomLogits(500, seed);
      expect(new Sampler({ temperature: 1, topP: 1e-6, seed }).next(l, [])).toBe(argmax(l));
      expect(new Sampler({ temperature: 1, topP: 0, seed }).next(l, [])).toBe(argmax(l));
    }
  });

  it('top-p keeps the smallest set reaching top_p (HF semantics)', () => {
    // probs 0.5, 0.3, 0.15, 0.05: top_p 0.79 keeps {0, 1} (0.5 < 0.79, then 0.8 >= 0.79 stops).
    const l = logits(Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05));
    const s = new Sampler({ temperature: 1, topP: 0.79, seed: 9 });
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(s.next(l, []));
    expect([...seen].sort()).toEqual([0, 1]);
    const s2 = new Sampler({ temperature: 1, topP: 0.81, seed: 9 });
    const seen2 = new Set<number>();
    for (let i = 0; i < 2000; i++) seen2.add(s2.next(l, []));
    expect([...seen2].sort()).toEqual([0, 1, 2]);
  });

  it('top-k keeps exactly the k best', () => {
    const l = logits(5, 4, 3, 2, 1, 0);
    const s = new Sampler({ temperature: 100, topK: 3, seed: 5 });
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(s.next(l, []));
    expect([...seen].sort()).toEqual([0, 1, 2]);
  });

  it('repetition penalty flips a choice (HF: positive logits divided, negative multiplied)', () => {
    const l = logits(2.0, 1.8, -1, -1.1);
    expect(new Sampler({}).next(l, [0])).toBe(0);
    expect(new Sampler({ repetitionPenalty: 1.2 }).next(l, [0, 0, 5000, -200])).toBe(1);
    // Negative logits: -1 * 1.2 = -1.2 < -1.1, so 3 wins among the negatives.
    const neg = logits(-1, -1.1);
    expect(new Sampler({ repetitionPenalty: 1.2 }).next(neg, [0])).toBe(1);
    // The input is not modified.
    expect(Array.from(l)).toEqual(Array.from(logits(2.0, 1.8, -1, -1.1)));
  });

  it('sampling frequencies match softmax(logits / T) (chi-square, fixed seed)', () => {
    const probs = [0.1, 0.2, 0.3, 0.4];
    const draws = 20000;
    const check = (temperature: number, expected: number[]): void => {
      // logits chosen so that softmax(logits / T) = expected
      const l = Float32Array.from(probs, (p) => Math.log(p));
      const s = new Sampler({ temperature, seed: 2024 });
      const counts = [0, 0, 0, 0];
      for (let i = 0; i < draws; i++) counts[s.next(l, [])]++;
      let chi2 = 0;
      for (let k = 0; k < 4; k++) {
        const e = expected[k] * draws;
        chi2 += (counts[k] - e) ** 2 / e;
      }
      // 3 degrees of freedom: P(chi2 > 30) ≈ 1e-6. Deterministic anyway (fixed seed).
      expect(chi2).toBeLessThan(30);
    };
    check(1, probs);
    // T = 0.5 squares the probabilities before renormalizing.
    const sq = probs.map((p) => p * p);
    const z = sq.reduce((a, b) => a + b, 0);
    check(0.5, sq.map((p) => p / z));
  });

  it('rejects invalid options', () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow(RangeError);
    expect(() => new Sampler({ topK: 1.5 })).toThrow(RangeError);
    expect(() => new Sampler({ topP: 1.5 })).toThrow(RangeError);
    expect(() => new Sampler({ repetitionPenalty: 0 })).toThrow(RangeError);
  });

  it('handles a LLaMA-sized vocabulary quickly', () => {
    const l = randomLogits(32000, 11);
    const s = new Sampler({ temperature: 0.8, topP: 0.9, topK: 40, repetitionPenalty: 1.1, seed: 1 });
    const s2 = new Sampler({ temperature: 0.8, topP: 0.9, seed: 1 });
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) {
      s.next(l, [1, 2, 3]);
      s2.next(l, [1, 2, 3]);
    }
    // Loose: a few ms per token is fine next to a 30+ ms decode step.
    expect((performance.now() - t0) / 100).toBeLessThan(50);
  });
});
