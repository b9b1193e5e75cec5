import type { GraphBuilder } from '../graph/builder.js';
import type { Shape } from '../graph/shape.js';
import type { ElemType, Value } from '../graph/types.js';
import type { DType, HostTensor } from '../tensor.js';

// Shape plumbing shared by the VJP rules: static when the builder knows the shapes, and an
// equivalent runtime computation (Shape, Expand, NonZero, …) when a dimension is dynamic.

export const FLOAT_TYPES: ReadonlySet<ElemType> = new Set(['float32', 'float64', 'float16']);

export function isFloat(v: Value): boolean {
  return FLOAT_TYPES.has(v.dtype);
}

/** All dims as numbers, or null when any is symbolic or unknown. */
export function staticDims(shape: Shape): number[] | null {
  if (!shape || !shape.every((d) => typeof d === 'number')) return null;
  return shape as number[];
}

export function rankOf(v: Value, what = v.name): number {
  if (!v.shape) throw new Error(`autodiff: the rank of ${what} is unknown; give the graph static ranks`);
  return v.shape.length;
}

const HOST_DTYPE: Partial<Record<ElemType, DType>> = { float32: 'F32', float64: 'F64', float16: 'F16', int64: 'I64', int32: 'I32' };

/** A constant tensor of `shape` filled with `value` (float16 unsupported: no scalar constants). */
export function filled(g: GraphBuilder, dtype: ElemType, shape: readonly number[], value: number): Value {
  const n = shape.reduce((p, d) => p * d, 1);
  const dt = HOST_DTYPE[dtype];
  let t: HostTensor;
  if (dt === 'F32') t = { dtype: dt, shape, data: new Float32Array(n).fill(value) };
  else if (dt === 'F64') t = { dtype: dt, shape, data: new Float64Array(n).fill(value) };
  else if (dt === 'I64') t = { dtype: dt, shape, data: new BigInt64Array(n).fill(BigInt(value)) };
  else if (dt === 'I32') t = { dtype: dt, shape, data: new Int32Array(n).fill(value) };
  else throw new Error(`autodiff: no constants of ${dtype}`);
  return g.constant(t);
}

/** The shape of `v` as an int64 [rank] value: a constant when static, else a Shape node. */
export function shapeOf(g: GraphBuilder, v: Value): Value {
  const s = staticDims(v.shape);
  return s ? g.ints(s) : g.shape(v);
}

/** Dimension `axis` of `v` as an int64 [1] value. */
export function dimOf(g: GraphBuilder, v: Value, axis: number): Value {
  const d = v.shape?.[axis];
  return typeof d === 'number' ? g.ints([d]) : g.slice(g.shape(v), [axis], [axis + 1], [0]);
}

/** Reshape `x` to the shape of `like` (a runtime Shape when `like` has dynamic dims). */
export function reshapeLike(g: GraphBuilder, x: Value, like: Value): Value {
  const s = staticDims(like.shape);
  if (s) {
    const xs = staticDims(x.shape);
    if (xs && xs.length === s.length && xs.every((d, i) => d === s[i])) return x;
    return g.reshape(x, s);
  }
  return g.node('Reshape', [x, g.shape(like)], {}, { dtype: x.dtype, shape: like.shape });
}

/** Zeros shaped like `v`. */
export function zerosLike(g: GraphBuilder, v: Value, dtype: ElemType = v.dtype): Value {
  return g.constantOfShape(shapeOf(g, v), 0, dtype, v.shape);
}

/** `v` broadcast to the shape of `like`. */
export function expandLike(g: GraphBuilder, v: Value, like: Value): Value {
  return g.expand(v, shapeOf(g, like), like.shape);
}

/**
 * Sums a cotangent of a broadcast result back to the shape of the operand `x` (the adjoint
 * of numpy broadcasting). `outShape` is the forward output's shape (rank must be known).
 * Leading extra axes and axes where x has a static 1 are summed statically; an axis whose
 * broadcast cannot be decided at build time (x's dim symbolic or unknown and not provably
 * equal to the output's) is resolved at run time: sum over every axis where Shape(x) is 1.
 */
export function sumToShape(g: GraphBuilder, grad: Value, outShape: Shape, x: Value): Value {
  const xs = x.shape;
  const os = outShape ?? grad.shape;
  if (!xs || !os) throw new Error(`autodiff: cannot unbroadcast to ${x.name}: unknown rank`);
  const lead = os.length - xs.length;
  if (lead < 0) throw new Error(`autodiff: ${x.name} has a higher rank than the broadcast result`);
  const axes: number[] = [];
  for (let i = 0; i < lead; i++) axes.push(i);
  let dynamic = false;
  xs.forEach((dx, i) => {
    const dout = os[lead + i];
    if (dx === 1) { if (dout !== 1) axes.push(lead + i); }
    else if (typeof dx === 'number' || (dx !== null && dx === dout)) { /* not broadcast */ }
    else dynamic = true;
  });
  let y = grad;
  if (axes.length) {
    y = g.reduceSum(y, axes, true);
    if (lead) y = g.squeeze(y, Array.from({ length: lead }, (_, i) => i));
  }
  if (dynamic) {
    // Runtime axes where x's dim is 1; an empty list sums nothing (noop_with_empty_axes).
    const ones = g.equal(g.shape(x), g.ints([1]));
    const ax = g.reshape(g.nonZero(ones), [-1]);
    y = g.node('ReduceSum', [y, ax], { keepdims: 1, noop_with_empty_axes: 1 }, { dtype: y.dtype, shape: xs });
  }
  return y;
}

/**
 * Numpy broadcast of static shapes where an unknown dim stays unknown (graph/shape.ts's
 * broadcastShapes reads an unknown dim as 1, which is fine for metadata but not for deciding
 * which axes a gradient must be summed over). Null when a rank is unknown.
 */
export function broadcastSound(...shapes: Shape[]): Shape {
  if (shapes.some((s) => !s)) return null;
  const ss = shapes as (readonly (string | number | null)[])[];
  const r = Math.max(...ss.map((s) => s.length));
  return Array.from({ length: r }, (_, i) => {
    const ds = ss.map((s) => (i - (r - s.length) >= 0 ? s[i - (r - s.length)] : 1)).filter((d) => d !== 1);
    const n = ds.find((d) => typeof d === 'number');
    if (n !== undefined) return n;
    if (ds.length === 0) return 1;
    return ds.every((d) => d !== null && d === ds[0]) ? ds[0] : null;
  });
}

/** Swaps the last two axes. */
export function transposeLast2(g: GraphBuilder, v: Value): Value {
  const r = rankOf(v);
  const perm = Array.from({ length: r }, (_, i) => i);
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return g.transpose(v, perm);
}

/** The integer contents of a constant input (axes, pads, …), or null when it is not constant. */
export type ConstInts = (v: Value | null | undefined) => number[] | null;

/** Reads constant int tensors from the builder's in-memory initializers. */
export function constIntsReader(g: GraphBuilder): ConstInts {
  const byId = new Map<number, HostTensor>();
  for (const init of g.initializers) if (init.data.kind === 'tensor') byId.set(init.value.id, init.data.tensor);
  return (v) => {
    if (!v) return null;
    const t = byId.get(v.id);
    if (!t || (t.dtype !== 'I64' && t.dtype !== 'I32')) return null;
    return Array.from(t.data as ArrayLike<number | bigint>, Number);
  };
}
