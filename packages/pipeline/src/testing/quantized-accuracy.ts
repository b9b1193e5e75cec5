import type { QuantizeMode } from '@mobillama/core';
import { evaluate, type EvalOptions } from '../eval.js';
import { MobiLlamaV } from '../mobillama-v.js';
import type { ModelOptions } from '../types.js';

export interface FormatAccuracy {
  readonly format: 'f32' | QuantizeMode;
  /** Exact-match accuracy in [0, 1]. */
  readonly accuracy: number;
  /** fp32 accuracy minus this one, in percentage points (positive = worse). */
  readonly dropPoints: number;
  readonly count: number;
}

/**
 * Held-out exact-match accuracy of a VLM at fp32 and quantized at load, for the floors on
 * the shipped micro model (drop ≤ 1 point at int8, ≤ 3 at int4) that
 * test/quantized-accuracy.e2e.test.ts holds.
 */
export async function quantizedAccuracyDrops(
  model: ModelOptions, data: Pick<EvalOptions, 'data' | 'imageFolder' | 'limit' | 'maxNewTokens'>,
  formats: readonly QuantizeMode[] = ['q8', 'q4'],
): Promise<FormatAccuracy[]> {
  const run = async (quantize?: QuantizeMode) => {
    const m = await MobiLlamaV.load({ ...model, quantize });
    try {
      return await evaluate(m, data);
    } finally {
      await m.dispose();
    }
  };
  const base = await run();
  const out: FormatAccuracy[] = [{ format: 'f32', accuracy: base.accuracy, dropPoints: 0, count: base.count }];
  for (const f of formats) {
    const r = await run(f);
    out.push({ format: f, accuracy: r.accuracy, dropPoints: 100 * (base.accuracy - r.accuracy), count: r.count });
  }
  return out;
}
