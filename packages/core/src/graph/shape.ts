import type { Dim } from './types.js';

export type Shape = readonly (Dim | null)[] | null;

/** Numpy-style broadcast of two static shapes; null when it cannot be decided statically. */
export function broadcastShapes(a: Shape, b: Shape): Shape {
  if (!a || !b) return null;
  const n = Math.max(a.length, b.length);
  const out: (Dim | null)[] = [];
  for (let i = 0; i < n; i++) {
    // Missing leading dims broadcast as 1; an unknown (null) dim stays unknown.
    const ia = a.length - n + i, ib = b.length - n + i;
    const x = ia < 0 ? 1 : a[ia];
    const y = ib < 0 ? 1 : b[ib];
    if (x === 1) out.push(y);
    else if (y === 1) out.push(x);
    else if (x === null || y === null) out.push(x === null ? (typeof y === 'number' ? y : null) : x);
    else if (x === y) out.push(x);
    else if (typeof x === 'number' && typeof y === 'number') throw new Error(`shapes ${fmt(a)} and ${fmt(b)} do not broadcast`);
    else out.push(typeof x === 'number' ? x : typeof y === 'number' ? y : x);
  }
  return out;
}

export function fmt(s: Shape): string {
  return s ? `[${s.map((d) => (d === null ? '?' : d)).join(',')}]` : '[?]';
}

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Shape after ONNX Reshape with a constant target (0 = copy input dim, -1 = infer). */
export function reshapeShape(input: Shape, target: readonly number[]): Shape {
  const out: (Dim | null)[] = target.map((d, i) => (d === 0 ? (input ? input[i] ?? null : null) : d));
  const inferIdx = target.indexOf(-1);
  if (inferIdx >= 0) {
    out[inferIdx] = null;
    if (input && input.every((d) => typeof d === 'number')) {
      const total = (input as number[]).reduce((p, d) => p * d, 1);
      const known = out.reduce<number>((p, d, i) => (i === inferIdx ? p : p * (d as number)), 1);
      if (out.every((d, i) => i === inferIdx || typeof d === 'number')) out[inferIdx] = total / known;
    }
  }
  return out;
}

export function matmulShape(a: Shape, b: Shape): Shape {
  if (!a || !b) return null;
  if (a.length < 2 || b.length < 2) return null;
  const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2));
  return batch ? [...batch, a[a.length - 2], b[b.length - 1]] : null;
}
