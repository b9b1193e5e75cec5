/**
 * Next-token selection: greedy or seeded sampling with HF transformers' processors
 * (repetition penalty, then temperature, top-k, top-p), in that order.
 */

export interface SamplingOptions {
  /**
   * 0 → greedy. Undefined → greedy unless topK or topP is given (then 1), as HF's
   * do_sample=false default.
   */
  temperature?: number;
  /** Keep the k most likely tokens (ties with the k-th kept). 0 or undefined: off. */
  topK?: number;
  /** Nucleus: keep the smallest set of most likely tokens with total probability >= topP. 1 or undefined: off. */
  topP?: number;
  /** HF CTRL-style penalty on every token already in the sequence (> 1 discourages). 1 or undefined: off. */
  repetitionPenalty?: number;
  /** PRNG seed (uint32); the same seed and inputs give the same tokens. Random when omitted. */
  seed?: number;
}

/**
 * xoshiro128** (Blackman & Vigna, 2018): 128-bit state, period 2^128 − 1, passes BigCrush;
 * the state is seeded from a 32-bit seed with splitmix32 so that nearby seeds diverge, or
 * restored from `state()` (a checkpoint can store it and continue the exact sequence).
 * `next()` gives uint32; `nextFloat()` a double in [0, 1) with 53 random bits.
 */
export class Xoshiro128 {
  private readonly s = new Uint32Array(4);

  constructor(seedOrState: number | readonly [number, number, number, number]) {
    if (typeof seedOrState !== 'number') this.s.set(seedOrState);
    else {
      let x = seedOrState >>> 0;
      for (let i = 0; i < 4; i++) {
        // splitmix32
        x = (x + 0x9e3779b9) >>> 0;
        let z = x;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
        this.s[i] = (z ^ (z >>> 16)) >>> 0;
      }
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1; // the all-zero state is a fixed point
  }

  state(): [number, number, number, number] {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  nextFloat(): number {
    const hi = this.next() >>> 5; // 27 bits
    const lo = this.next() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest value; ties → lowest index; NaN never wins. */
export function argmax(values: ArrayLike<number>): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > bestValue || (best === -1 && v === -Infinity)) {
      best = i;
      bestValue = v;
    }
  }
  if (best === -1) throw new Error('argmax: no finite or -Infinity value (all NaN or empty)');
  return best;
}

function checkOptions(o: SamplingOptions): void {
  const bad = (what: string): never => {
    throw new RangeError(`sampling: ${what}`);
  };
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) bad(`temperature must be >= 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad(`topK must be an integer >= 0, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP >= 0 && o.topP <= 1)) bad(`topP must be in [0, 1], got ${o.topP}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad(`repetitionPenalty must be > 0, got ${o.repetitionPenalty}`);
}

export class Sampler {
  readonly greedy: boolean;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly penalty: number;
  private readonly rng: Xoshiro128;

  constructor(opts: SamplingOptions = {}) {
    checkOptions(opts);
    const sampling = opts.temperature !== undefined ? opts.temperature > 0 : opts.topK !== undefined || opts.topP !== undefined;
    this.greedy = !sampling;
    this.temperature = opts.temperature ?? 1;
    this.topK = opts.topK ?? 0;
    this.topP = opts.topP ?? 1;
    this.penalty = opts.repetitionPenalty ?? 1;
    this.rng = new Xoshiro128(opts.seed ?? Math.floor(Math.random() * 0x100000000));
  }

  /**
   * Picks the next token from one position's logits. `previousTokens` is the sequence so
   * far (prompt and generated), used by the repetition penalty. `logits` is not modified.
   */
  next(logits: Float32Array, previousTokens: readonly number[] = []): number {
    const n = logits.length;
    if (n === 0) throw new Error('sampling: empty logits');
    // Plain loops over typed arrays: this runs once per generated token over the vocabulary.
    const scores = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const v = logits[i];
      scores[i] = v !== v ? -Infinity : v; // NaN never wins
    }
    if (this.penalty !== 1) {
      const seen = new Set<number>();
      for (const t of previousTokens) {
        if (!(t >= 0 && t < n) || seen.has(t)) continue; // e.g. the image marker -200
        seen.add(t);
        // HF RepetitionPenaltyLogitsProcessor: shrink positive logits, grow negative ones.
        scores[t] = scores[t] < 0 ? scores[t] * this.penalty : scores[t] / this.penalty;
      }
    }
    if (this.greedy) return argmax(scores);

    // Candidates: all tokens, or those >= the k-th best score (HF keeps boundary ties).
    let cand: Int32Array;
    if (this.topK > 0 && this.topK < n) {
      const kth = kthLargest(scores, this.topK);
      let m = 0;
      for (let i = 0; i < n; i++) if (scores[i] >= kth) m++;
      cand = new Int32Array(m);
      m = 0;
      for (let i = 0; i < n; i++) if (scores[i] >= kth) cand[m++] = i;
    } else {
      cand = new Int32Array(n);
      for (let i = 0; i < n; i++) cand[i] = i;
    }
    let m = cand.length;

    // Softmax over the candidates at temperature, in float64 (unnormalized; `total` is the sum).
    let max = -Infinity;
    for (let j = 0; j < m; j++) if (scores[cand[j]] > max) max = scores[cand[j]];
    if (max === -Infinity) return argmax(scores); // every logit is -inf: nothing to sample
    const invT = 1 / this.temperature;
    let probs: Float64Array = new Float64Array(m);
    let total = 0;
    for (let j = 0; j < m; j++) {
      const p = Math.exp((scores[cand[j]] - max) * invT);
      probs[j] = p;
      total += p;
    }

    if (this.topP < 1) {
      const kept = nucleus(probs, cand, total, this.topP);
      cand = kept.cand;
      probs = kept.probs;
      total = kept.total;
      m = cand.length;
    }

    let u = this.rng.nextFloat() * total;
    for (let j = 0; j < m; j++) {
      u -= probs[j];
      if (u < 0) return cand[j];
    }
    // Rounding left u a hair above zero: the last candidate with mass.
    for (let j = m - 1; j >= 0; j--) if (probs[j] > 0) return cand[j];
    return cand[0];
  }
}

/**
 * HF TopPLogitsWarper: in descending probability order (ties: lower id first), keep a token
 * while the mass of the tokens before it is < topP · total; always keep the first. That is
 * the smallest set whose probability reaches topP.
 */
function nucleus(
  probs: Float64Array, cand: Int32Array, total: number, topP: number,
): { cand: Int32Array; probs: Float64Array; total: number } {
  const m = cand.length;
  // A kept token has more than (1 - topP) · total mass at or below it, spread over at most
  // m tokens no likelier than it, so its p > (1 - topP) · total / m. Dropping the rest first
  // spares sorting the whole vocabulary when the distribution is peaked (slack for rounding).
  const floor = ((1 - topP) / m) * total * (1 - 1e-9);
  let c = 0;
  for (let j = 0; j < m; j++) if (probs[j] > floor) c++;
  // Sort the values alone (native numeric sort, far faster than sorting ids by comparator),
  // find the last kept value and how many tokens of that value make it in.
  const sorted = new Float64Array(c);
  c = 0;
  for (let j = 0; j < m; j++) if (probs[j] > floor) sorted[c++] = probs[j];
  sorted.sort();
  const need = topP * total;
  let before = 0;
  let k = 0;
  while (k < c && (k === 0 || before < need)) before += sorted[c - 1 - k++];
  const last = sorted[c - k];
  let tiesKept = 0;
  for (let j = c - k; j < c && sorted[j] === last; j++) tiesKept++;
  // Collect in id order: everything above `last`, and the lowest-id `tiesKept` at `last`.
  const outCand = new Int32Array(k);
  const outProbs = new Float64Array(k);
  let o = 0;
  for (let j = 0; j < m && o < k; j++) {
    const p = probs[j];
    if (p > last || (p === last && tiesKept-- > 0)) {
      outCand[o] = cand[j];
      outProbs[o++] = p;
    }
  }
  return { cand: outCand, probs: outProbs, total: before };
}

/** The k-th largest value (k >= 1), with a size-k min-heap: O(n log k). */
function kthLargest(values: Float64Array, k: number): number {
  const heap = new Float64Array(k);
  let size = 0;
  const siftDown = (): void => {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let s = i;
      if (l < size && heap[l] < heap[s]) s = l;
      if (r < size && heap[r] < heap[s]) s = r;
      if (s === i) return;
      const t = heap[i];
      heap[i] = heap[s];
      heap[s] = t;
      i = s;
    }
  };
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (size < k) {
      let j = size++;
      heap[j] = v;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (heap[p] <= heap[j]) break;
        const t = heap[p];
        heap[p] = heap[j];
        heap[j] = t;
        j = p;
      }
    } else if (v > heap[0]) {
      heap[0] = v;
      siftDown();
    }
  }
  return heap[0];
}
