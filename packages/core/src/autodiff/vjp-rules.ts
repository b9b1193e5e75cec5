import type { GraphBuilder } from '../graph/builder.js';
import { normAxis, type Shape } from '../graph/shape.js';
import type { Node, Value } from '../graph/types.js';
import {
  broadcastSound, dimOf, expandLike, rankOf, reshapeLike, staticDims, sumToShape, transposeLast2, zerosLike, type ConstInts,
} from './grad-ops.js';

// One vector-Jacobian product per primitive op, keyed by ONNX op type. A rule gets the
// cotangent ḡ of the node's output and returns the cotangent of each input that needs one
// (null elsewhere); the math of each rule is stated on the line above it. Broadcasting
// binary ops sum ḡ back to each operand's shape (sumToShape). Rules only emit nodes for
// the inputs in `needs`, so frozen operands cost nothing.

export interface VjpContext {
  readonly g: GraphBuilder;
  /** The forward node; its values carry sound static shapes (see sound-shapes.ts). */
  readonly node: Node;
  /** Cotangents of the node's outputs; null for an output that does not reach the loss. */
  readonly cotangents: readonly (Value | null)[];
  /** Which inputs need a cotangent (float values that depend on a differentiated value). */
  readonly needs: readonly boolean[];
  /** Contents of constant int inputs (axes, pads, slice bounds). */
  readonly constInts: ConstInts;
}

export type VjpRule = (ctx: VjpContext) => readonly (Value | null)[];

/** Op types whose outputs carry no gradient (integer/boolean results, or shape-only use of inputs). */
export const NON_DIFFERENTIABLE: ReadonlySet<string> = new Set([
  'Shape', 'Size', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or',
  'NonZero', 'ConstantOfShape', 'ArgMax', 'ArgMin', 'Range',
]);

const INT64_MAX = Number.MAX_SAFE_INTEGER; // ONNX clamps slice ends; 2^53-1 is "to the end"

function cot(ctx: VjpContext): Value {
  const c = ctx.cotangents[0];
  if (!c) throw new Error(`autodiff: ${ctx.node.op} has no output cotangent`);
  return c;
}
function input(ctx: VjpContext, i: number): Value {
  const v = ctx.node.inputs[i];
  if (!v) throw new Error(`autodiff: ${ctx.node.op} input ${i} is missing`);
  return v;
}
function out(ctx: VjpContext): Value {
  return ctx.node.outputs[0];
}
/** The forward output's shape (re-inferred by the backward pass, so a static 1 is a true 1). */
function outShape(ctx: VjpContext): Shape {
  return out(ctx).shape;
}
function scalar(ctx: VjpContext, x: number, like: Value): Value {
  return ctx.g.scalar(x, like.dtype);
}
/** ḡ summed back to input i's shape. */
function unb(ctx: VjpContext, i: number, grad: Value): Value {
  return sumToShape(ctx.g, grad, outShape(ctx), input(ctx, i));
}
function only(ctx: VjpContext, i: number, f: () => Value): Value | null {
  return ctx.needs[i] ? f() : null;
}
function attrInt(node: Node, name: string, dflt: number): number {
  const a = node.attrs[name];
  return typeof a === 'number' ? a : dflt;
}
function constOrThrow(ctx: VjpContext, i: number, what: string): number[] {
  const v = ctx.node.inputs[i];
  const xs = ctx.constInts(v);
  if (!xs) throw new Error(`autodiff: ${ctx.node.op} needs constant ${what} to be differentiated`);
  return xs;
}
function inversePerm(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => { inv[p] = i; });
  return inv;
}
/** Reduction axes of a Reduce* node: its constant axes input, or every axis when absent. */
function reduceAxes(ctx: VjpContext): number[] | null {
  const x = input(ctx, 0);
  const ax = ctx.node.inputs[1];
  if (!ax) return Array.from({ length: rankOf(x) }, (_, i) => i);
  const c = ctx.constInts(ax);
  if (!c) return null;
  if (c.length === 0) return attrInt(ctx.node, 'noop_with_empty_axes', 0) ? [] : Array.from({ length: rankOf(x) }, (_, i) => i);
  return c.map((a) => normAxis(a, rankOf(x)));
}
/** ḡ of a Reduce* node reshaped to keepdims form (so it broadcasts against x). */
function keptCot(ctx: VjpContext, axes: number[] | null): Value {
  const gy = cot(ctx);
  if (attrInt(ctx.node, 'keepdims', 1)) return gy;
  if (!axes) throw new Error(`autodiff: ${ctx.node.op} with keepdims=0 needs constant axes`);
  return axes.length ? ctx.g.unsqueeze(gy, axes) : gy;
}

export const VJP_RULES: Readonly<Record<string, VjpRule>> = {
  // y = a + b: ā = Σ_bcast ḡ, b̄ = Σ_bcast ḡ
  Add: (c) => [only(c, 0, () => unb(c, 0, cot(c))), only(c, 1, () => unb(c, 1, cot(c)))],
  // y = a − b: ā = Σ ḡ, b̄ = −Σ ḡ
  Sub: (c) => [only(c, 0, () => unb(c, 0, cot(c))), only(c, 1, () => c.g.neg(unb(c, 1, cot(c))))],
  // y = a·b: ā = Σ ḡ·b, b̄ = Σ ḡ·a
  Mul: (c) => [
    only(c, 0, () => unb(c, 0, c.g.mul(cot(c), input(c, 1)))),
    only(c, 1, () => unb(c, 1, c.g.mul(cot(c), input(c, 0)))),
  ],
  // y = a/b: ā = Σ ḡ/b, b̄ = −Σ (ḡ/b)·y
  Div: (c) => {
    const ga = c.g.div(cot(c), input(c, 1));
    return [only(c, 0, () => unb(c, 0, ga)), only(c, 1, () => c.g.neg(unb(c, 1, c.g.mul(ga, out(c)))))];
  },
  // y = a^b: ā = Σ ḡ·b·a^(b−1), b̄ = Σ ḡ·y·ln a (b̄ only meaningful for a > 0)
  Pow: (c) => {
    const [a, b] = [input(c, 0), input(c, 1)];
    return [
      only(c, 0, () => unb(c, 0, c.g.mul(cot(c), c.g.mul(b, c.g.pow(a, c.g.sub(b, scalar(c, 1, b))))))),
      only(c, 1, () => unb(c, 1, c.g.mul(cot(c), c.g.mul(out(c), c.g.log(a))))),
    ];
  },
  // y = min(a, b) / max(a, b): the cotangent goes to the selected operand, split evenly on ties
  Min: (c) => minMax(c, 'less'),
  Max: (c) => minMax(c, 'greater'),

  // y = −x: x̄ = −ḡ
  Neg: (c) => [c.g.neg(cot(c))],
  // y = eˣ: x̄ = ḡ·y
  Exp: (c) => [c.g.mul(cot(c), out(c))],
  // y = ln x: x̄ = ḡ/x
  Log: (c) => [c.g.div(cot(c), input(c, 0))],
  // y = √x: x̄ = ḡ/(2y)
  Sqrt: (c) => [c.g.div(cot(c), c.g.mul(out(c), scalar(c, 2, out(c))))],
  // y = 1/x: x̄ = −ḡ·y²
  Reciprocal: (c) => [c.g.neg(c.g.mul(cot(c), c.g.mul(out(c), out(c))))],
  // y = tanh x: x̄ = ḡ·(1 − y²)
  Tanh: (c) => [c.g.mul(cot(c), c.g.sub(scalar(c, 1, out(c)), c.g.mul(out(c), out(c))))],
  // y = σ(x): x̄ = ḡ·y·(1 − y)
  Sigmoid: (c) => [c.g.mul(cot(c), c.g.mul(out(c), c.g.sub(scalar(c, 1, out(c)), out(c))))],
  // y = erf x: x̄ = ḡ·(2/√π)·e^(−x²)
  Erf: (c) => {
    const x = input(c, 0);
    return [c.g.mul(cot(c), c.g.mul(scalar(c, 2 / Math.sqrt(Math.PI), x), c.g.exp(c.g.neg(c.g.mul(x, x)))))];
  },
  // y = max(x, 0): x̄ = ḡ where x > 0, else 0
  Relu: (c) => {
    const x = input(c, 0);
    return [c.g.where(c.g.greater(x, scalar(c, 0, x)), cot(c), scalar(c, 0, x))];
  },
  // y = sin x: x̄ = ḡ·cos x
  Sin: (c) => [c.g.mul(cot(c), c.g.cos(input(c, 0)))],
  // y = cos x: x̄ = −ḡ·sin x
  Cos: (c) => [c.g.neg(c.g.mul(cot(c), c.g.sin(input(c, 0))))],
  // y = x: x̄ = ḡ
  Identity: (c) => [cot(c)],

  // Y = A·B (batched, broadcasting): Ā = Σ_bcast ḡ·Bᵀ, B̄ = Σ_bcast Aᵀ·ḡ
  MatMul: (c) => matmulVjp(c),

  // y = Σ_axes x: x̄ = ḡ broadcast back over the reduced axes
  ReduceSum: (c) => {
    const axes = reduceAxes(c);
    if (axes && axes.length === 0) return [cot(c)];
    return [expandLike(c.g, keptCot(c, axes), input(c, 0))];
  },
  // y = mean_axes x: x̄ = ḡ broadcast back / (number of elements averaged)
  ReduceMean: (c) => {
    const x = input(c, 0);
    const axes = reduceAxes(c);
    if (axes && axes.length === 0) return [cot(c)];
    let count: Value;
    const xs = staticDims(x.shape);
    if (xs && axes) count = scalar(c, axes.reduce((p, a) => p * xs[a], 1), x);
    else count = c.g.div(c.g.cast(c.g.size(x), x.dtype), c.g.cast(c.g.size(out(c)), x.dtype));
    return [expandLike(c.g, c.g.div(keptCot(c, axes), count), x)];
  },
  // y = max_axes x: x̄ = ḡ at the maxima (split evenly among ties), 0 elsewhere
  ReduceMax: (c) => {
    const x = input(c, 0);
    const axes = reduceAxes(c);
    if (!axes) throw new Error('autodiff: ReduceMax needs constant axes');
    if (axes.length === 0) return [cot(c)];
    const yk = attrInt(c.node, 'keepdims', 1) ? out(c) : c.g.unsqueeze(out(c), axes);
    const mask = c.g.cast(c.g.equal(x, yk), x.dtype);
    const ties = c.g.reduceSum(mask, axes, true);
    return [c.g.mul(mask, c.g.div(keptCot(c, axes), ties))];
  },

  // y = softmax(x): x̄ = y·(ḡ − Σ_axis ḡ·y)
  Softmax: (c) => {
    const y = out(c);
    const axis = attrInt(c.node, 'axis', -1);
    return [c.g.mul(y, c.g.sub(cot(c), c.g.reduceSum(c.g.mul(cot(c), y), [axis], true)))];
  },
  // y = log softmax(x): x̄ = ḡ − eʸ·Σ_axis ḡ
  LogSoftmax: (c) => {
    const axis = attrInt(c.node, 'axis', -1);
    return [c.g.sub(cot(c), c.g.mul(c.g.exp(out(c)), c.g.reduceSum(cot(c), [axis], true)))];
  },

  // y = reshape(x): x̄ = reshape(ḡ, shape(x))
  Reshape: (c) => [reshapeLike(c.g, cot(c), input(c, 0)), null],
  // y = xᵀ(perm): x̄ = ḡᵀ(perm⁻¹)
  Transpose: (c) => {
    const r = rankOf(input(c, 0));
    const p = c.node.attrs.perm;
    const perm = Array.isArray(p) ? (p as number[]) : Array.from({ length: r }, (_, i) => r - 1 - i);
    return [c.g.transpose(cot(c), inversePerm(perm))];
  },
  // y = unsqueeze(x, axes): x̄ = squeeze(ḡ, axes)
  Unsqueeze: (c) => {
    const axes = c.constInts(c.node.inputs[1]);
    return [axes ? c.g.squeeze(cot(c), axes) : reshapeLike(c.g, cot(c), input(c, 0)), null];
  },
  // y = squeeze(x, axes): x̄ = unsqueeze(ḡ, axes)
  Squeeze: (c) => {
    const axes = c.constInts(c.node.inputs[1]);
    return [axes ? c.g.unsqueeze(cot(c), axes) : reshapeLike(c.g, cot(c), input(c, 0)), null];
  },
  // y = expand(x, shape): x̄ = Σ_bcast ḡ
  Expand: (c) => [unb(c, 0, cot(c)), null],
  // y = cast(x): x̄ = cast(ḡ, dtype(x)) (only float x is ever differentiated)
  Cast: (c) => {
    const x = input(c, 0);
    return [cot(c).dtype === x.dtype ? cot(c) : c.g.cast(cot(c), x.dtype)];
  },
  // y = where(c, a, b): ā = Σ where(c, ḡ, 0), b̄ = Σ where(c, 0, ḡ)
  Where: (c) => {
    const cond = input(c, 0);
    const zero = scalar(c, 0, out(c));
    return [
      null,
      only(c, 1, () => unb(c, 1, c.g.where(cond, cot(c), zero))),
      only(c, 2, () => unb(c, 2, c.g.where(cond, zero, cot(c)))),
    ];
  },

  // y = concat(x₀, x₁, …; axis): x̄ᵢ = ḡ[offsetᵢ : offsetᵢ + dimᵢ] along axis
  Concat: (c) => concatVjp(c),
  // y = x[starts:ends:steps]: x̄ = ḡ zero-padded back into place (Pad; Pad + Gather for steps ≠ 1)
  Slice: (c) => [sliceVjp(c), null, null, null, null],
  // y = pad(x, pads) (constant mode): x̄ = ḡ[begin : −end]
  Pad: (c) => {
    const mode = c.node.attrs.mode;
    if (mode !== undefined && mode !== 'constant') throw new Error(`autodiff: Pad mode ${String(mode)} has no rule`);
    if (c.node.inputs[3]) throw new Error('autodiff: Pad with an axes input has no rule');
    const pads = constOrThrow(c, 1, 'pads');
    if (pads.some((p) => p < 0)) throw new Error('autodiff: Pad with negative pads has no rule');
    const r = pads.length / 2;
    const axes = Array.from({ length: r }, (_, i) => i);
    const ends = axes.map((i) => (pads[r + i] > 0 ? -pads[r + i] : INT64_MAX));
    return [c.g.slice(cot(c), pads.slice(0, r), ends, axes), null, null];
  },

  // y = x[indices] along axis: x̄ = scatter-add of ḡ at indices (ScatterND, reduction 'add')
  Gather: (c) => [gatherVjp(c), null],
  // y[i…] = x[…idx[i…]…] along axis: x̄ = ScatterElements-add of ḡ at idx
  GatherElements: (c) => {
    const x = input(c, 0);
    return [c.g.scatterElements(zerosLike(c.g, x), input(c, 1), cot(c), attrInt(c.node, 'axis', 0), 'add'), null];
  },
  // y = data with updates written/added at idx: data̅ = ḡ ('add') or ḡ with the written places zeroed; upd̅ = ḡ[idx]
  ScatterElements: (c) => {
    const reduction = scatterReduction(c);
    const axis = attrInt(c.node, 'axis', 0);
    const [idx, upd] = [input(c, 1), input(c, 2)];
    return [
      only(c, 0, () => (reduction === 'add' ? cot(c) : c.g.scatterElements(cot(c), idx, zerosLike(c.g, upd), axis))),
      null,
      only(c, 2, () => c.g.gatherElements(cot(c), idx, axis)),
    ];
  },
  // y = x[idx[…, :]] (batch_dims 0): x̄ = ScatterND-add of ḡ at idx
  GatherND: (c) => {
    if (attrInt(c.node, 'batch_dims', 0) !== 0) throw new Error('autodiff: GatherND with batch_dims ≠ 0 has no rule');
    return [c.g.scatterND(zerosLike(c.g, input(c, 0)), input(c, 1), cot(c), 'add'), null];
  },
  // y = data with updates written/added at idx[…, :]: data̅ = ḡ ('add') or ḡ zeroed there; upd̅ = GatherND(ḡ, idx)
  ScatterND: (c) => {
    const reduction = scatterReduction(c);
    const [idx, upd] = [input(c, 1), input(c, 2)];
    return [
      only(c, 0, () => (reduction === 'add' ? cot(c) : c.g.scatterND(cot(c), idx, zerosLike(c.g, upd)))),
      null,
      only(c, 2, () => c.g.gatherND(cot(c), idx)),
    ];
  },
};

function scatterReduction(c: VjpContext): 'none' | 'add' {
  const r = c.node.attrs.reduction ?? 'none';
  if (r !== 'none' && r !== 'add') throw new Error(`autodiff: ${c.node.op} with reduction ${String(r)} has no rule`);
  return r;
}

function minMax(c: VjpContext, cmp: 'less' | 'greater'): (Value | null)[] {
  if (c.node.inputs.length !== 2) throw new Error(`autodiff: ${c.node.op} is differentiated for two inputs only`);
  const [a, b] = [input(c, 0), input(c, 1)];
  const [one, half, zero] = [scalar(c, 1, a), scalar(c, 0.5, a), scalar(c, 0, a)];
  // Weight of a's share: 1 where a is selected, ½ on ties, 0 where b is.
  const wa = c.g.where(cmp === 'less' ? c.g.less(a, b) : c.g.greater(a, b), one, c.g.where(c.g.equal(a, b), half, zero));
  const ga = c.g.mul(cot(c), wa);
  return [only(c, 0, () => unb(c, 0, ga)), only(c, 1, () => unb(c, 1, c.g.sub(cot(c), ga)))];
}

function matmulVjp(c: VjpContext): (Value | null)[] {
  const { g } = c;
  const [a, b] = [input(c, 0), input(c, 1)];
  const gy = cot(c);
  const ra = rankOf(a), rb = rankOf(b);
  if (ra === 1 && rb === 1) {
    // y = a·b (dot product, scalar): ā = ḡ·b, b̄ = ḡ·a
    return [only(c, 0, () => g.mul(gy, b)), only(c, 1, () => g.mul(gy, a))];
  }
  // Treat vectors as matrices ([K] → [1, K] on the left, [K, 1] on the right), as ONNX does.
  const a2 = ra === 1 ? g.unsqueeze(a, [0]) : a;
  const b2 = rb === 1 ? g.unsqueeze(b, [-1]) : b;
  let g2 = gy;
  if (ra === 1) g2 = g.unsqueeze(g2, [-2]);
  if (rb === 1) g2 = g.unsqueeze(g2, [-1]);
  const sa = a2.shape!, sb = b2.shape!;
  const batch = broadcastSound(sa.slice(0, -2), sb.slice(0, -2));
  const yShape: Shape = batch ? [...batch, sa[sa.length - 2], sb[sb.length - 1]] : null;
  const da = only(c, 0, () => {
    const full = g.matmul(g2, transposeLast2(g, b2));
    const fullShape = yShape ? [...yShape.slice(0, -1), a2.shape![a2.shape!.length - 1]] : full.shape;
    const r = sumToShape(g, full, fullShape, a2);
    return ra === 1 ? reshapeLike(g, r, a) : r;
  });
  const db = only(c, 1, () => {
    const K = a2.shape![a2.shape!.length - 1], N = b2.shape![b2.shape!.length - 1];
    if (rb === 2 && ra >= 3 && typeof K === 'number' && typeof N === 'number') {
      // Linear layer: fold the batch axes into one GEMM instead of a batched matmul + sum.
      return g.matmul(g.transpose(g.reshape(a2, [-1, K]), [1, 0]), g.reshape(g2, [-1, N]));
    }
    const full = g.matmul(transposeLast2(g, a2), g2);
    const fullShape = yShape ? [...yShape.slice(0, -2), K, yShape[yShape.length - 1]] : full.shape;
    const r = sumToShape(g, full, fullShape, b2);
    return rb === 1 ? reshapeLike(g, r, b) : r;
  });
  return [da, db];
}

function concatVjp(c: VjpContext): (Value | null)[] {
  const { g } = c;
  const gy = cot(c);
  const xs = c.node.inputs.map((_, i) => input(c, i));
  const axis = normAxis(attrInt(c.node, 'axis', 0), rankOf(xs[0]));
  // Offsets stay numbers while every size so far is static, then become int64 [1] values.
  let off: number | Value = 0;
  return xs.map((x, i) => {
    const d = x.shape![axis];
    const start: number | Value = off;
    const end: number | Value = typeof start === 'number' && typeof d === 'number' ? start + d
      : g.add(typeof start === 'number' ? g.ints([start]) : start, dimOf(g, x, axis));
    off = end;
    if (!c.needs[i]) return null;
    if (typeof start === 'number' && typeof end === 'number') return g.slice(gy, [start], [end], [axis]);
    const s = typeof start === 'number' ? g.ints([start]) : start;
    const e = typeof end === 'number' ? g.ints([end]) : end;
    return g.node('Slice', [gy, s, e, g.ints([axis])], {}, { dtype: gy.dtype, shape: x.shape });
  });
}

/** ONNX Slice's effective start index and the indices it selects along an axis of static size d. */
function selected(d: number, start: number, end: number, step: number): number[] {
  const norm = (v: number) => (v < 0 ? v + d : v);
  const out: number[] = [];
  if (step > 0) {
    const s = Math.min(Math.max(norm(start), 0), d), e = Math.min(Math.max(norm(end), 0), d);
    for (let i = s; i < e; i += step) out.push(i);
  } else {
    const s = Math.min(Math.max(norm(start), 0), d - 1), e = Math.min(Math.max(norm(end), -1), d - 1);
    for (let i = s; i > e; i += step) out.push(i);
  }
  return out;
}

function sliceVjp(c: VjpContext): Value {
  const { g } = c;
  const x = input(c, 0);
  const r = rankOf(x);
  const starts = constOrThrow(c, 1, 'starts');
  const ends = constOrThrow(c, 2, 'ends');
  const axes = (c.node.inputs[3] ? constOrThrow(c, 3, 'axes') : starts.map((_, i) => i)).map((a) => normAxis(a, r));
  const steps = c.node.inputs[4] ? constOrThrow(c, 4, 'steps') : starts.map(() => 1);
  const yShape = outShape(c);
  const gy = cot(c);
  // Unit-step axes: one Pad with [begin…, end…] pads (runtime arithmetic for dynamic dims).
  const begin: (number | Value)[] = new Array<number>(r).fill(0);
  const endPad: (number | Value)[] = new Array<number>(r).fill(0);
  const strided: { axis: number; picks: number[] }[] = [];
  axes.forEach((a, i) => {
    const d = x.shape![a];
    if (steps[i] !== 1) {
      if (typeof d !== 'number') throw new Error('autodiff: Slice with a step ≠ 1 needs a static dim');
      strided.push({ axis: a, picks: selected(d, starts[i], ends[i], steps[i]) });
      return;
    }
    if (typeof d === 'number') {
      const picks = selected(d, starts[i], ends[i], 1);
      const s = picks.length ? picks[0] : 0;
      begin[a] = s;
      endPad[a] = d - s - picks.length;
      return;
    }
    const dv = dimOf(g, x, a);
    const s = starts[i];
    // Effective start: min(s, d) for s ≥ 0, max(s + d, 0) for s < 0; the kept length is ḡ's dim.
    const sv = s >= 0 ? g.min(g.ints([s]), dv) : g.max(g.add(g.ints([s]), dv), g.ints([0]));
    const yd = yShape?.[a];
    const len = typeof yd === 'number' ? g.ints([yd]) : g.slice(g.shape(gy), [a], [a + 1], [0]);
    begin[a] = sv;
    endPad[a] = g.sub(g.sub(dv, sv), len);
  });
  let dx = gy;
  const pads = [...begin, ...endPad];
  if (pads.some((p) => p !== 0)) {
    dx = pads.every((p) => typeof p === 'number')
      ? g.pad(dx, pads as number[])
      : g.pad(dx, g.concat(pads.map((p) => (typeof p === 'number' ? g.ints([p]) : p)), 0));
  }
  // Strided axes: append one zero slab, then Gather each x position from its slice position (or the slab).
  for (const { axis, picks } of strided) {
    const extra = new Array<number>(2 * r).fill(0);
    extra[r + axis] = 1;
    const d = x.shape![axis] as number;
    const map = Array.from({ length: d }, (_, j) => { const k = picks.indexOf(j); return k < 0 ? picks.length : k; });
    dx = g.gather(g.pad(dx, extra), g.ints(map), axis);
  }
  return dx;
}

// Why ScatterND (reduction 'add', opset 16+; ORT has float and double kernels): for an
// embedding lookup the indices stay [N, 1] and whole rows are added, repeated ids accumulating.
// ScatterElements would need the indices expanded to the full [N, D] update shape, and a
// one-hot MatMul would cost N·V·D multiply-adds and an N×V matrix.
function gatherVjp(c: VjpContext): Value {
  const { g } = c;
  const x = input(c, 0);
  const r = rankOf(x);
  const a = normAxis(attrInt(c.node, 'axis', 0), r);
  const indices = input(c, 1);
  const q = rankOf(indices);
  const idx = g.unsqueeze(indices.dtype === 'int64' ? indices : g.cast(indices, 'int64'), [-1]);
  const gy = cot(c);
  if (a === 0) return g.scatterND(zerosLike(g, x), idx, gy, 'add');
  // Move the gathered axis to the front, scatter-add there, and move it back.
  const permX = [a, ...Array.from({ length: r }, (_, i) => i).filter((i) => i !== a)];
  const permG = [
    ...Array.from({ length: q }, (_, i) => a + i),
    ...Array.from({ length: a }, (_, i) => i),
    ...Array.from({ length: r - 1 - a }, (_, i) => a + q + i),
  ];
  const gT = g.transpose(gy, permG);
  const xs = staticDims(x.shape);
  const zShape = x.shape ? permX.map((p) => x.shape![p]) : null;
  const zShapeV = xs ? g.ints(permX.map((p) => xs[p])) : g.gather(g.shape(x), g.ints(permX), 0);
  const zeros = g.constantOfShape(zShapeV, 0, x.dtype, zShape);
  return g.transpose(g.scatterND(zeros, idx, gT, 'add'), inversePerm(permX));
}
