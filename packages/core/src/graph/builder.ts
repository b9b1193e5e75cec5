import type { HostTensor } from '../tensor.js';
import type { TensorLocation } from '../weights/types.js';
import type { WeightRef } from '../weights/refs.js';
import { broadcastShapes, fmt, matmulShape, normAxis, reshapeShape, type Shape } from './shape.js';
import type { AttrValue, Dim, ElemType, Graph, Initializer, Node, Value } from './types.js';

const DTYPE_TO_ELEM: Record<string, ElemType> = {
  F32: 'float32', F16: 'float16', F64: 'float64', I64: 'int64', I32: 'int32', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};

export function elemTypeOf(t: HostTensor): ElemType {
  const e = DTYPE_TO_ELEM[t.dtype];
  if (!e) throw new Error(`dtype ${t.dtype} cannot be a graph tensor (convert it at load)`);
  return e;
}

/**
 * Builds a graph of primitive ops. Construction has no side effects beyond this builder:
 * the same calls give the same graph, which autodiff and tests rely on.
 *
 * Each primitive here maps to one ONNX op; composite layers (linear, norms, attention)
 * live in nn.ts and are written in terms of these.
 */
export class GraphBuilder {
  private nextId = 0;
  private readonly usedNames = new Set<string>();
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: Initializer[] = [];
  readonly nodes: Node[] = [];
  private readonly constCache = new Map<string, Value>();
  private readonly params = new Map<string, Value>();
  /** Set on a subgraph's builder: the graph whose scope it sees (value names, weights, constants). */
  private outer: GraphBuilder | null = null;

  /**
   * @param trainable names of weights that become graph inputs (fed each training step)
   *   instead of initializers.
   */
  constructor(readonly name = 'graph', readonly trainable: ReadonlySet<string> = new Set()) {}

  /**
   * The graph value of a weight; the same ref used twice (a shared FFN) is one value.
   * Trainable weights become inputs, the rest initializers.
   */
  param(ref: WeightRef): Value {
    if (this.outer) return this.outer.param(ref);
    const hit = this.params.get(ref.name);
    if (hit) return hit;
    let v: Value;
    if (this.trainable.has(ref.name)) v = this.input(ref.name, ref.dtype, ref.shape);
    else {
      v = this.value(ref.dtype, ref.shape, ref.name);
      this.initializers.push({ value: v, data: ref.data });
    }
    this.params.set(ref.name, v);
    return v;
  }

  private value(dtype: ElemType, shape: Shape, name?: string): Value {
    if (this.outer) return this.outer.value(dtype, shape, name);
    let n = name ?? `t${this.nextId}`;
    if (this.usedNames.has(n)) {
      if (name) throw new Error(`graph value name ${name} used twice`);
      n = `${n}_${this.nextId}`;
    }
    this.usedNames.add(n);
    return { id: this.nextId++, name: n, dtype, shape };
  }

  input(name: string, dtype: ElemType, shape: readonly Dim[]): Value {
    if (this.outer) throw new Error(`subgraph ${this.name}: If branches take no inputs (${name})`);
    const v = this.value(dtype, shape, name);
    this.inputs.push(v);
    return v;
  }

  /** Marks `v` as a graph output called `name` (an Identity node renames it when needed). */
  output(v: Value, name: string): Value {
    const out = v.name === name ? v : this.node('Identity', [v], {}, { dtype: v.dtype, shape: v.shape, name });
    this.outputs.push(out);
    return out;
  }

  /** A weight whose bytes stay in a file on disk. */
  weightFromFile(name: string, dtype: ElemType, shape: readonly number[], location: TensorLocation): Value {
    if (this.outer) return this.outer.weightFromFile(name, dtype, shape, location);
    const v = this.value(dtype, shape, name);
    this.initializers.push({ value: v, data: { kind: 'file', location } });
    return v;
  }

  /** A weight (or constant) held in memory. */
  weight(name: string, tensor: HostTensor): Value {
    if (this.outer) return this.outer.weight(name, tensor);
    const v = this.value(elemTypeOf(tensor), tensor.shape, name);
    this.initializers.push({ value: v, data: { kind: 'tensor', tensor } });
    return v;
  }

  /** A small constant, deduplicated by value. */
  constant(tensor: HostTensor): Value {
    if (this.outer) return this.outer.constant(tensor);
    const key = `${tensor.dtype}:${tensor.shape.join('x')}:${Array.from(tensor.data as ArrayLike<number | bigint>, String).join(',')}`;
    const hit = key.length < 4096 ? this.constCache.get(key) : undefined;
    if (hit) return hit;
    const v = this.weight(`const_${this.nextId}`, tensor);
    if (key.length < 4096) this.constCache.set(key, v);
    return v;
  }

  scalar(x: number, dtype: ElemType = 'float32'): Value {
    return this.constant(hostScalar(x, dtype));
  }

  ints(xs: readonly number[]): Value {
    return this.constant({ dtype: 'I64', shape: [xs.length], data: BigInt64Array.from(xs.map(BigInt)) });
  }

  /** Adds one node. Contrib ops pass `domain: 'com.microsoft'`. */
  node(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, AttrValue>,
    out: { dtype: ElemType; shape: Shape; name?: string; domain?: string },
  ): Value {
    const v = this.value(out.dtype, out.shape, out.name);
    this.nodes.push({ op, domain: out.domain ?? '', inputs, outputs: [v], attrs });
    return v;
  }

  /** A node with several outputs. */
  nodeMulti(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, AttrValue>,
    outs: readonly { dtype: ElemType; shape: Shape; name?: string }[],
    domain = '',
  ): Value[] {
    const vs = outs.map((o) => this.value(o.dtype, o.shape, o.name));
    this.nodes.push({ op, domain, inputs, outputs: vs, attrs });
    return vs;
  }

  /**
   * A subgraph for an If branch, built in this graph's scope: its nodes are its own, while
   * value names stay unique across both and its weights and constants become this graph's
   * initializers (ONNX lets a subgraph read outer values by name). `body` returns the
   * branch's outputs.
   */
  subgraph(name: string, body: (sg: GraphBuilder) => readonly Value[]): Graph {
    const sg = new GraphBuilder(name, this.trainable);
    sg.outer = this.outer ?? this;
    // Outputs are produced inside the branch (ONNX wants them to be the branch's own values).
    const outputs = body(sg).map((v) => sg.identity(v));
    return { name, inputs: [], outputs, initializers: [], nodes: sg.nodes };
  }

  build(): Graph {
    return { name: this.name, inputs: this.inputs, outputs: this.outputs, initializers: this.initializers, nodes: this.nodes };
  }

  // ---- primitive ops ---------------------------------------------------------------

  private binary(op: string, a: Value, b: Value): Value {
    if (a.dtype !== b.dtype) throw new Error(`${op}: dtypes differ (${a.dtype} vs ${b.dtype})`);
    return this.node(op, [a, b], {}, { dtype: a.dtype, shape: broadcastShapes(a.shape, b.shape) });
  }
  add(a: Value, b: Value): Value { return this.binary('Add', a, b); }
  sub(a: Value, b: Value): Value { return this.binary('Sub', a, b); }
  mul(a: Value, b: Value): Value { return this.binary('Mul', a, b); }
  div(a: Value, b: Value): Value { return this.binary('Div', a, b); }
  pow(a: Value, b: Value): Value { return this.binary('Pow', a, b); }

  private unary(op: string, x: Value, attrs: Record<string, AttrValue> = {}): Value {
    return this.node(op, [x], attrs, { dtype: x.dtype, shape: x.shape });
  }
  neg(x: Value): Value { return this.unary('Neg', x); }
  exp(x: Value): Value { return this.unary('Exp', x); }
  log(x: Value): Value { return this.unary('Log', x); }
  sqrt(x: Value): Value { return this.unary('Sqrt', x); }
  reciprocal(x: Value): Value { return this.unary('Reciprocal', x); }
  tanh(x: Value): Value { return this.unary('Tanh', x); }
  sigmoid(x: Value): Value { return this.unary('Sigmoid', x); }
  erf(x: Value): Value { return this.unary('Erf', x); }
  relu(x: Value): Value { return this.unary('Relu', x); }
  cos(x: Value): Value { return this.unary('Cos', x); }
  sin(x: Value): Value { return this.unary('Sin', x); }
  identity(x: Value): Value { return this.unary('Identity', x); }

  matmul(a: Value, b: Value): Value {
    if (a.dtype !== b.dtype) throw new Error(`MatMul: dtypes differ (${a.dtype} vs ${b.dtype})`);
    const sa = a.shape, sb = b.shape;
    if (sa && sb && sa.length >= 2 && sb.length >= 2) {
      const k1 = sa[sa.length - 1], k2 = sb[sb.length - 2];
      if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2) {
        throw new Error(`MatMul: inner dims differ: ${fmt(sa)} x ${fmt(sb)}`);
      }
    }
    return this.node('MatMul', [a, b], {}, { dtype: a.dtype, shape: matmulShape(sa, sb) });
  }

  private reduce(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
    let shape: Shape = null;
    if (x.shape) {
      const ax = axes.map((a) => normAxis(a, x.shape!.length));
      shape = keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
    }
    return this.node(op, [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 }, { dtype: x.dtype, shape });
  }
  reduceSum(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceSum', x, axes, keepdims); }
  reduceMean(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceMean', x, axes, keepdims); }
  reduceMax(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceMax', x, axes, keepdims); }

  softmax(x: Value, axis = -1): Value { return this.unary('Softmax', x, { axis }); }
  logSoftmax(x: Value, axis = -1): Value { return this.unary('LogSoftmax', x, { axis }); }

  /** Reshape to a constant target; 0 copies the input dim, -1 is inferred. */
  reshape(x: Value, target: readonly number[]): Value {
    return this.node('Reshape', [x, this.ints(target)], {}, { dtype: x.dtype, shape: reshapeShape(x.shape, target) });
  }

  transpose(x: Value, perm: readonly number[]): Value {
    const shape = x.shape ? perm.map((p) => x.shape![p]) : null;
    return this.node('Transpose', [x], { perm }, { dtype: x.dtype, shape });
  }

  concat(xs: readonly Value[], axis: number): Value {
    let shape: Shape = null;
    const s0 = xs[0].shape;
    if (s0 && xs.every((x) => x.shape)) {
      const a = normAxis(axis, s0.length);
      const parts = xs.map((x) => x.shape![a]);
      const sum = parts.every((p) => typeof p === 'number') ? (parts as number[]).reduce((p, d) => p + d, 0) : null;
      shape = s0.map((d, i) => (i === a ? sum : d));
    }
    return this.node('Concat', xs, { axis }, { dtype: xs[0].dtype, shape });
  }

  /** Constant slice along `axes` (ends may exceed the dim, as in ONNX; use a large number for "to the end"). */
  slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
    let shape: Shape = null;
    if (x.shape) {
      const s = [...x.shape];
      axes.forEach((ax, i) => {
        const a = normAxis(ax, s.length);
        const d = s[a];
        const step = steps?.[i] ?? 1;
        if (typeof d === 'number' && step === 1) {
          const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
          s[a] = Math.max(0, clamp(ends[i]) - clamp(starts[i]));
        } else s[a] = null;
      });
      shape = s;
    }
    const ins = [x, this.ints(starts), this.ints(ends), this.ints(axes)];
    if (steps) ins.push(this.ints(steps));
    return this.node('Slice', ins, {}, { dtype: x.dtype, shape });
  }

  gather(x: Value, indices: Value, axis = 0): Value {
    let shape: Shape = null;
    if (x.shape && indices.shape) {
      const a = normAxis(axis, x.shape.length);
      shape = [...x.shape.slice(0, a), ...indices.shape, ...x.shape.slice(a + 1)];
    }
    return this.node('Gather', [x, indices], { axis }, { dtype: x.dtype, shape });
  }

  cast(x: Value, to: ElemType): Value {
    return this.node('Cast', [x], { to: ONNX_ELEM_TYPE[to] }, { dtype: to, shape: x.shape });
  }

  where(cond: Value, a: Value, b: Value): Value {
    return this.node('Where', [cond, a, b], {}, { dtype: a.dtype, shape: broadcastShapes(cond.shape, broadcastShapes(a.shape, b.shape)) });
  }

  unsqueeze(x: Value, axes: readonly number[]): Value {
    let shape: Shape = null;
    if (x.shape) {
      const r = x.shape.length + axes.length;
      const ax = axes.map((a) => normAxis(a, r));
      const out: (Dim | null)[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) out.push(ax.includes(i) ? 1 : x.shape[j++]);
      shape = out;
    }
    return this.node('Unsqueeze', [x, this.ints(axes)], {}, { dtype: x.dtype, shape });
  }

  squeeze(x: Value, axes: readonly number[]): Value {
    const shape = x.shape ? x.shape.filter((_, i) => !axes.map((a) => normAxis(a, x.shape!.length)).includes(i)) : null;
    return this.node('Squeeze', [x, this.ints(axes)], {}, { dtype: x.dtype, shape });
  }

  // ---- primitives added for autodiff ----
  // Ops the generated backward pass needs (runtime shapes, scatter-adds, comparisons); forward
  // graphs may use them too. Each has its VJP rule, or is listed as non-differentiable, in
  // autodiff/vjp-rules.ts.

  /** The runtime shape of `x` as int64 [rank]. */
  shape(x: Value): Value {
    return this.node('Shape', [x], {}, { dtype: 'int64', shape: [x.shape ? x.shape.length : null] });
  }

  /** The number of elements of `x` as an int64 scalar. */
  size(x: Value): Value {
    return this.node('Size', [x], {}, { dtype: 'int64', shape: [] });
  }

  /** The dims held in a shape operand: its contents when constant, else unknown dims of its length. */
  private shapeOperand(shape: Value): Shape {
    const init = this.initializers.find((i) => i.value === shape);
    if (init?.data.kind === 'tensor' && init.data.tensor.dtype === 'I64') return Array.from(init.data.tensor.data as BigInt64Array, Number);
    const n = shape.shape?.[0];
    return typeof n === 'number' ? new Array<null>(n).fill(null) : null;
  }

  /** Broadcasts `x` to the shape held in `shape` (int64 [rank]), numpy-style. */
  expand(x: Value, shape: Value, staticShape?: Shape): Value {
    let out: Shape = staticShape ?? null;
    const t = staticShape === undefined ? this.shapeOperand(shape) : null;
    if (t && x.shape) {
      const xs = x.shape;
      const r = Math.max(t.length, xs.length);
      out = Array.from({ length: r }, (_, i) => {
        const d = i - (r - xs.length) >= 0 ? xs[i - (r - xs.length)] : 1;
        const e = i - (r - t.length) >= 0 ? t[i - (r - t.length)] : 1;
        return e === 1 ? d : d === 1 ? e : typeof d === 'number' ? d : typeof e === 'number' ? e : null;
      });
    }
    return this.node('Expand', [x, shape], {}, { dtype: x.dtype, shape: out });
  }

  /** A tensor of the shape held in `shape` (int64 [rank]) filled with `value`. */
  constantOfShape(shape: Value, value: number, dtype: ElemType, staticShape?: Shape): Value {
    const out = staticShape ?? this.shapeOperand(shape);
    const fill = { ...hostScalar(value, dtype), shape: [1] };
    return this.node('ConstantOfShape', [shape], { value: fill }, { dtype, shape: out });
  }

  /** Zero padding; `pads` is [begin_0 … begin_{r-1}, end_0 … end_{r-1}], constant or an int64 value. */
  pad(x: Value, pads: readonly number[] | Value): Value {
    let shape: Shape = null;
    if (Array.isArray(pads) && x.shape) {
      const r = x.shape.length;
      shape = x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i] + pads[r + i] : null));
    } else if (x.shape) shape = x.shape.map(() => null);
    const p = Array.isArray(pads) ? this.ints(pads) : (pads as Value);
    return this.node('Pad', [x, p], { mode: 'constant' }, { dtype: x.dtype, shape });
  }

  private compare(op: string, a: Value, b: Value): Value {
    if (a.dtype !== b.dtype) throw new Error(`${op}: dtypes differ (${a.dtype} vs ${b.dtype})`);
    return this.node(op, [a, b], {}, { dtype: 'bool', shape: broadcastShapes(a.shape, b.shape) });
  }
  equal(a: Value, b: Value): Value { return this.compare('Equal', a, b); }
  less(a: Value, b: Value): Value { return this.compare('Less', a, b); }
  greater(a: Value, b: Value): Value { return this.compare('Greater', a, b); }
  not(x: Value): Value { return this.node('Not', [x], {}, { dtype: 'bool', shape: x.shape }); }

  /** Elementwise minimum / maximum of two broadcastable tensors (ONNX Min / Max). */
  min(a: Value, b: Value): Value { return this.binary('Min', a, b); }
  max(a: Value, b: Value): Value { return this.binary('Max', a, b); }

  /** Indices of the non-zero elements, int64 [rank(x), count]. */
  nonZero(x: Value): Value {
    return this.node('NonZero', [x], {}, { dtype: 'int64', shape: [x.shape ? x.shape.length : null, null] });
  }

  /** out[i][j] = x[indices[i][j]][j] for axis 0, and so on (the same rank as `indices`). */
  gatherElements(x: Value, indices: Value, axis: number): Value {
    return this.node('GatherElements', [x, indices], { axis }, { dtype: x.dtype, shape: indices.shape });
  }

  /** The inverse of gatherElements: writes (or, with 'add', accumulates) `updates` into a copy of `data`. */
  scatterElements(data: Value, indices: Value, updates: Value, axis: number, reduction: 'none' | 'add' = 'none'): Value {
    return this.node('ScatterElements', [data, indices, updates], { axis, reduction }, { dtype: data.dtype, shape: data.shape });
  }

  /** Gathers slices x[idx] where idx runs over the last axis of `indices` (batch_dims 0). */
  gatherND(x: Value, indices: Value): Value {
    let shape: Shape = null;
    const k = indices.shape?.[indices.shape.length - 1];
    if (x.shape && indices.shape && typeof k === 'number') shape = [...indices.shape.slice(0, -1), ...x.shape.slice(k)];
    return this.node('GatherND', [x, indices], {}, { dtype: x.dtype, shape });
  }

  /** The inverse of gatherND: writes (or, with 'add', accumulates) `updates` into a copy of `data`. */
  scatterND(data: Value, indices: Value, updates: Value, reduction: 'none' | 'add' = 'none'): Value {
    return this.node('ScatterND', [data, indices, updates], { reduction }, { dtype: data.dtype, shape: data.shape });
  }

}

export const ONNX_ELEM_TYPE: Record<ElemType, number> = {
  float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11,
};

export function hostScalar(x: number, dtype: ElemType): HostTensor {
  switch (dtype) {
    case 'float32': return { dtype: 'F32', shape: [], data: Float32Array.of(x) };
    case 'float64': return { dtype: 'F64', shape: [], data: Float64Array.of(x) };
    case 'int64': return { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(x)) };
    case 'int32': return { dtype: 'I32', shape: [], data: Int32Array.of(x) };
    case 'uint8': return { dtype: 'U8', shape: [], data: Uint8Array.of(x) };
    default: throw new Error(`no scalar constants of ${dtype}`);
  }
}
