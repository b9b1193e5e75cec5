import { Xoshiro128 } from '@mobillama/decoder';

/**
 * Convenience draws over the decoder's xoshiro128** generator. One stream per dataset seed,
 * consumed in image order, so the first N images of a seed are the same whatever the count.
 */
export class Random {
  private readonly g: Xoshiro128;

  constructor(seed: number) {
    this.g = new Xoshiro128(seed);
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.g.nextFloat();
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.g.nextFloat();
  }

  /** Uniform integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.g.nextFloat() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.g.nextFloat() < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new RangeError('pick from an empty list');
    return xs[Math.floor(this.g.nextFloat() * xs.length)];
  }

  /** A shuffled copy (Fisher–Yates). */
  shuffle<T>(xs: readonly T[]): T[] {
    const out = xs.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.g.nextFloat() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}
