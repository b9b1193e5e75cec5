import type { Shape } from '../graph/shape.js';
import type { Node } from '../graph/types.js';
import { broadcastSound } from './grad-ops.js';

// The gradient of a broadcast must be summed over exactly the axes that were broadcast, so a
// static 1 in a shape has to be true. The builder's metadata can claim a 1 that is not
// (graph/shape.ts's broadcastShapes reads an unknown dim as 1), and ops downstream inherit it.
// This pass re-infers the shapes the backward pass relies on: broadcasting ops and MatMul are
// recomputed keeping unknown dims unknown, elementwise ops pass their input's shape through,
// and any other op fed a corrected shape keeps only its rank (its dims become unknown, which
// the rules handle with runtime Shape arithmetic).

const BROADCASTING = new Set([
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Min', 'Max', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual',
  'And', 'Or', 'Where',
]);
const ELEMENTWISE = new Set([
  'Neg', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Tanh', 'Sigmoid', 'Erf', 'Relu', 'Cos', 'Sin', 'Identity', 'Softmax',
  'LogSoftmax', 'Cast', 'Not',
]);

function same(a: Shape, b: Shape): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  return a.every((d, i) => d === b[i]);
}

function matmulSound(a: Shape, b: Shape): Shape {
  if (!a || !b) return null;
  if (a.length === 1 && b.length === 1) return [];
  if (a.length === 1) return [...b.slice(0, -2), b[b.length - 1]];
  if (b.length === 1) return a.slice(0, -1);
  const batch = broadcastSound(a.slice(0, -2), b.slice(0, -2));
  return batch ? [...batch, a[a.length - 2], b[b.length - 1]] : null;
}

/** Corrected shapes of node outputs, by value id; only values whose metadata was wrong or unsafe. */
export function soundShapes(nodes: readonly Node[]): Map<number, Shape> {
  const fixed = new Map<number, Shape>();
  const shapeOf = (v: { id: number; shape: Shape } | null) => (v ? (fixed.has(v.id) ? fixed.get(v.id)! : v.shape) : null);
  for (const n of nodes) {
    const ins = n.inputs.map(shapeOf);
    const changed = n.inputs.some((v) => v && fixed.has(v.id));
    n.outputs.forEach((o, i) => {
      let s: Shape;
      if (i === 0 && n.domain === '' && BROADCASTING.has(n.op)) s = broadcastSound(...ins);
      else if (i === 0 && n.domain === '' && n.op === 'MatMul') s = matmulSound(ins[0], ins[1]);
      else if (i === 0 && n.domain === '' && ELEMENTWISE.has(n.op)) s = ins[0];
      else s = changed && o.shape ? o.shape.map(() => null) : o.shape;
      if (!same(s, o.shape)) fixed.set(o.id, s);
    });
  }
  return fixed;
}
