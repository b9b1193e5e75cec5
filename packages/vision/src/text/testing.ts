// Shared by the text-tower tests (not exported from the package).
import { fileURLToPath } from 'node:url';
import { openSafetensors, type HostTensor } from '@mobillama/core';

export const CLIP_TEXT_FIXTURE = fileURLToPath(new URL('../../fixtures/clip-text', import.meta.url));
export const LABELS = ['a red circle', 'a blue square', 'a green triangle', 'a yellow star'] as const;

export async function readGolden(): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(`${CLIP_TEXT_FIXTURE}/golden.safetensors`);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

/** max |a − b| / max |b|. */
export function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let diff = 0, ref = 1e-30;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    ref = Math.max(ref, Math.abs(expected[i]));
  }
  return diff / ref;
}

/** Row-wise L2 normalisation of [n, d]. */
export function normalizeRows(x: ArrayLike<number>, d: number): Float32Array {
  const out = Float32Array.from(x);
  for (let r = 0; r < out.length / d; r++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += out[r * d + k] ** 2;
    for (let k = 0; k < d; k++) out[r * d + k] /= Math.sqrt(s);
  }
  return out;
}
