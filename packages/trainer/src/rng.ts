/**
 * The trainer's seeded PRNG: the decoder's xoshiro128** (whole state four uint32s, so a
 * checkpoint can store it and a resumed run draws exactly the numbers an uninterrupted one
 * would), with named streams and the draws the trainer needs.
 */
import { Xoshiro128 } from '@mobillama/decoder';

export type RngState = readonly [number, number, number, number];

/** FNV-1a of a label, so independent streams (data order, projector init, LoRA init) share one seed. */
function hashLabel(label: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Rng {
  private readonly g: Xoshiro128;

  constructor(state: RngState) {
    this.g = new Xoshiro128(state);
  }

  /** A generator for `seed` and a named stream: the same pair always gives the same numbers. */
  static seeded(seed: number, stream = ''): Rng {
    return new Rng(new Xoshiro128(((Math.trunc(seed) >>> 0) ^ hashLabel(stream)) >>> 0).state());
  }

  state(): RngState {
    return this.g.state();
  }

  nextU32(): number {
    return this.g.next();
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    return this.g.nextFloat();
  }

  /** Uniform integer in [0, n) without modulo bias. */
  int(n: number): number {
    if (!(n >= 1) || !Number.isInteger(n)) throw new RangeError(`Rng.int: n must be a positive integer, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** In-place Fisher–Yates shuffle. */
  shuffle<T>(xs: T[] | Uint32Array): void {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = xs[i];
      xs[i] = xs[j];
      xs[j] = tmp;
    }
  }

  /** Fills `out` uniformly in [-bound, bound). */
  uniform(out: Float32Array, bound: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = (2 * this.next() - 1) * bound;
    return out;
  }
}
