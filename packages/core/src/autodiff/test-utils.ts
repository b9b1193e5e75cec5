import { GraphBuilder } from '../graph/builder.js';
import { exportOnnx } from '../graph/onnx-export.js';
import type { Dim, ElemType, Value } from '../graph/types.js';
import { createSession } from '../runtime/session.js';
import type { Feeds } from '../runtime/types.js';
import { gradcheck, toFloat64, type GradcheckFeeds, type GradcheckResult } from './gradcheck.js';

// Shared by the autodiff tests (not exported from the package).

/** Deterministic uniform numbers in [lo, hi). */
export function rng(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0;
  return (lo = -1, hi = 1) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  };
}

export interface CaseInput {
  dims: readonly number[];
  /** Declared graph shape (symbolic dims allowed); default `dims`. */
  decl?: readonly Dim[];
  dtype?: ElemType;
  /** Data; default uniform in [lo, hi). */
  data?: readonly number[] | BigInt64Array;
  lo?: number;
  hi?: number;
}

export interface OpCase {
  inputs: Record<string, CaseInput>;
  body: (g: GraphBuilder, v: Record<string, Value>) => Value;
  /** Names of inputs to differentiate (default: every float input). */
  wrt?: readonly string[];
  dtype?: 'float64' | 'float32';
  seed?: number;
}

/** Op types seen in the forward graphs of checked cases (for the coverage test). */
export const seenOps = new Set<string>();

function declare(g: GraphBuilder, c: OpCase): Record<string, Value> {
  const v: Record<string, Value> = {};
  for (const [name, inp] of Object.entries(c.inputs)) v[name] = g.input(name, inp.dtype ?? 'float32', inp.decl ?? inp.dims);
  return v;
}

/**
 * Checks d/dx of loss = Σ y·c (c a random cotangent of y's runtime shape, fed as an input) for
 * `y = body(x…)` against central differences. Returns one result per differentiated input.
 */
export async function checkOp(c: OpCase): Promise<GradcheckResult[]> {
  const r = rng(c.seed ?? 7);
  const feeds: GradcheckFeeds = {};
  for (const [name, inp] of Object.entries(c.inputs)) {
    const n = inp.dims.reduce((p, d) => p * d, 1);
    const isInt = inp.dtype === 'int64';
    const data = inp.data ?? Array.from({ length: n }, () => r(inp.lo ?? -1, inp.hi ?? 1));
    feeds[name] = { dims: inp.dims, data: isInt && !(data instanceof BigInt64Array) ? BigInt64Array.from(data as number[], (x) => BigInt(x)) : data };
  }
  // Pass 1: learn y's runtime shape.
  const g1 = new GraphBuilder('probe');
  const y1 = c.body(g1, declare(g1, c));
  g1.output(y1, 'y');
  for (const n of g1.nodes) seenOps.add(n.op);
  const graph1 = (c.dtype ?? 'float64') === 'float64' ? toFloat64(g1.build()) : g1.build();
  const s = await createSession(exportOnnx(graph1), { threads: 1, optimizationLevel: 'basic' });
  const probeFeeds: Feeds = {};
  for (const v of graph1.inputs) {
    const f = feeds[v.name];
    probeFeeds[v.name] = {
      dtype: v.dtype, dims: f.dims,
      data: f.data instanceof BigInt64Array ? f.data : v.dtype === 'float32' ? Float32Array.from(f.data) : Float64Array.from(f.data),
    };
  }
  const yDims = (await s.run(probeFeeds)).y.dims;
  await s.release();
  feeds.__cot = { dims: [yDims.reduce((p, d) => p * d, 1)], data: Array.from({ length: yDims.reduce((p, d) => p * d, 1) }, () => r(-1, 1)) };
  const floatInputs = Object.entries(c.inputs).filter(([, i]) => (i.dtype ?? 'float32') !== 'int64').map(([n]) => n);
  return gradcheck((g) => {
    const v = declare(g, c);
    const y = c.body(g, v);
    // Flattened, so an output whose shape the builder cannot infer still gets a static cotangent.
    const cot = g.input('__cot', y.dtype, [yDims.reduce((p, d) => p * d, 1)]);
    const loss = g.reduceSum(g.mul(g.reshape(y, [-1]), cot), [0], false);
    return { loss, wrt: (c.wrt ?? floatInputs).map((n) => v[n]) };
  }, feeds, { dtype: c.dtype });
}

/** Asserts helper: the worst relative error over results. */
export function worst(results: readonly GradcheckResult[]): number {
  return Math.max(...results.map((x) => x.relError));
}
