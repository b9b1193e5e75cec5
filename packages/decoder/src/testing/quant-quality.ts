import type { DecoderModel } from '../model.js';

/** How closely a model's next-token distributions follow a reference's. */
export interface AgreementReport {
  /** Positions compared. */
  readonly positions: number;
  /** Fraction of positions where both pick the same most likely token. */
  readonly top1: number;
  /** Mean KL(p_reference ‖ p_candidate) in nats. */
  readonly meanKl: number;
  readonly maxKl: number;
}

function logSoftmax(x: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lse);
}

const argmax = (x: ArrayLike<number>): number => {
  let best = 0;
  for (let j = 1; j < x.length; j++) if (x[j] > x[best]) best = j;
  return best;
};

/**
 * Compares next-token distributions of `candidate` against `reference` (e.g. a quantized
 * model against fp32) at every position of each prompt and along `continuation` greedy
 * steps of the reference, which both models are fed (teacher forcing), so every position
 * has the same context in both.
 */
export async function nextTokenAgreement(
  reference: DecoderModel, candidate: DecoderModel, prompts: readonly (readonly number[])[], continuation = 16,
): Promise<AgreementReport> {
  const V = reference.config.vocabSize;
  let positions = 0, agree = 0, klSum = 0, klMax = 0;
  const compare = (a: Float32Array, b: Float32Array, rows: number) => {
    for (let r = 0; r < rows; r++) {
      const p = logSoftmax(a.subarray(r * V, (r + 1) * V)), q = logSoftmax(b.subarray(r * V, (r + 1) * V));
      let kl = 0;
      for (let j = 0; j < V; j++) kl += Math.exp(p[j]) * (p[j] - q[j]);
      positions++;
      klSum += kl;
      klMax = Math.max(klMax, kl);
      if (argmax(p) === argmax(q)) agree++;
    }
  };
  for (const ids of prompts) {
    const T = ids.length;
    const step = (m: DecoderModel, tokens: readonly number[], past?: Awaited<ReturnType<DecoderModel['forward']>>['cache'], all = false) => {
      const P = past?.length ?? 0;
      return m.forward({
        embeds: m.embed(tokens), batch: 1, seq: tokens.length, past,
        positionIds: [tokens.map((_, i) => P + i)], attentionMask: [new Array<number>(P + tokens.length).fill(1)],
        logitsIndex: all ? tokens.map((_, i) => i) : undefined,
      });
    };
    let ra = await step(reference, ids, undefined, true), ca = await step(candidate, ids, undefined, true);
    compare(ra.logits, ca.logits, T);
    for (let s = 0; s < continuation && T + s + 1 <= reference.config.maxPositions; s++) {
      const next = argmax(ra.logits.subarray(ra.logits.length - V));
      ra = await step(reference, [next], ra.cache);
      ca = await step(candidate, [next], ca.cache);
      compare(ra.logits, ca.logits, 1);
    }
  }
  return { positions, top1: agree / positions, meanKl: klSum / positions, maxKl: klMax };
}

/** Seeded prompts: BOS then `length − 1` ids in [3, vocab). */
export function seededPrompts(count: number, length: number, vocab: number, seed = 1): number[][] {
  let x = seed >>> 0;
  return Array.from({ length: count }, () => {
    const ids = [1];
    while (ids.length < length) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      ids.push(3 + (x % (vocab - 3)));
    }
    return ids;
  });
}
