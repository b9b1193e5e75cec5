import { GraphBuilder, ONNX_ELEM_TYPE } from '../graph/builder.js';
import { exportOnnx } from '../graph/onnx-export.js';
import type { AttrValue, Graph, Initializer, Node, Value } from '../graph/types.js';
import { createSession } from '../runtime/session.js';
import type { Feeds, RunTensor } from '../runtime/types.js';
import type { HostTensor } from '../tensor.js';
import { addBackward } from './backward.js';

// Checks generated gradients against central finite differences, both computed by ORT.
// Models are written in float32 (nn.* uses float32 constants); toFloat64 rewrites a whole
// graph, backward pass included, to float64 so the check can be tight.

/**
 * Rewrites every float32 value of a graph as float64: values, in-memory initializers, Cast
 * targets and ConstantOfShape fills. File-backed float32 initializers are refused.
 */
export function toFloat64(graph: Graph): Graph {
  const map = new Map<number, Value>();
  const conv = (v: Value): Value => {
    if (v.dtype !== 'float32') return v;
    let w = map.get(v.id);
    if (!w) map.set(v.id, (w = { ...v, dtype: 'float64' }));
    return w;
  };
  const widen = (t: HostTensor): HostTensor =>
    t.dtype === 'F32' ? { dtype: 'F64', shape: t.shape, data: Float64Array.from(t.data as Float32Array) } : t;
  const initializers: Initializer[] = graph.initializers.map((init) => {
    if (init.value.dtype !== 'float32') return init;
    if (init.data.kind !== 'tensor') throw new Error(`toFloat64: ${init.value.name} is file-backed`);
    return { value: conv(init.value), data: { kind: 'tensor', tensor: widen(init.data.tensor) } };
  });
  const nodes: Node[] = graph.nodes.map((n) => {
    const attrs: Record<string, AttrValue> = { ...n.attrs };
    if (n.op === 'Cast' && attrs.to === ONNX_ELEM_TYPE.float32) attrs.to = ONNX_ELEM_TYPE.float64;
    if (n.op === 'ConstantOfShape' && attrs.value && typeof attrs.value === 'object' && 'dtype' in attrs.value) {
      attrs.value = widen(attrs.value);
    }
    return { ...n, inputs: n.inputs.map((v) => (v ? conv(v) : v)), outputs: n.outputs.map(conv), attrs };
  });
  return { ...graph, inputs: graph.inputs.map(conv), outputs: graph.outputs.map(conv), initializers, nodes };
}

/** Graph input data for gradcheck: float inputs as plain numbers, integer inputs as bigints. */
export type GradcheckFeeds = Record<string, { dims: readonly number[]; data: ArrayLike<number> | BigInt64Array }>;

export interface GradcheckOptions {
  /** Precision of the check (default float64; float32 for ops ORT has no double kernel for). */
  dtype?: 'float64' | 'float32';
  /** Finite-difference step, relative to max(1, |x|) (default 1e-6 in float64, 1e-2 in float32). */
  eps?: number;
}

export interface GradcheckResult {
  readonly name: string;
  readonly analytic: Float64Array;
  readonly numeric: Float64Array;
  /** max |analytic − numeric| / max(max |numeric|, max |analytic|, 1e-12). */
  readonly relError: number;
  /** The loss at the unperturbed inputs. */
  readonly loss: number;
}

/**
 * Builds the graph, appends its backward pass, and compares the gradient of the scalar loss
 * with respect to each `wrt` graph input with central differences (2 forward runs per element).
 * Returns one result per `wrt` input.
 */
export async function gradcheck(
  build: (g: GraphBuilder) => { loss: Value; wrt: readonly Value[] },
  feeds: GradcheckFeeds,
  opts: GradcheckOptions = {},
): Promise<GradcheckResult[]> {
  const dtype = opts.dtype ?? 'float64';
  const g = new GraphBuilder('gradcheck');
  const { loss, wrt } = build(g);
  for (const w of wrt) if (!g.inputs.includes(w)) throw new Error(`gradcheck: ${w.name} is not a graph input`);
  const grads = addBackward(g, loss, wrt);
  g.output(loss, '__loss');
  wrt.forEach((w, i) => g.output(grads.get(w)!, `__grad${i}`));
  const graph = dtype === 'float64' ? toFloat64(g.build()) : g.build();
  // 'basic': ORT's extended fusions can turn float64 subgraphs into float-only contrib ops
  // (QuickGeluFusion rewrites x·σ(x)), and a checker should run the graph as written anyway.
  const session = await createSession(exportOnnx(graph), { threads: 1, optimizationLevel: 'basic' });
  try {
    const inputs: Record<string, Float64Array | BigInt64Array> = {};
    const feedOf = (): Feeds => {
      const f: Feeds = {};
      for (const v of graph.inputs) {
        const src = feeds[v.name];
        if (!src) throw new Error(`gradcheck: no feed for input ${v.name}`);
        const d = inputs[v.name];
        const data: RunTensor['data'] = d instanceof BigInt64Array ? d
          : v.dtype === 'float32' ? Float32Array.from(d) : Float64Array.from(d);
        f[v.name] = { dtype: v.dtype, dims: src.dims, data };
      }
      return f;
    };
    for (const [k, v] of Object.entries(feeds)) inputs[k] = v.data instanceof BigInt64Array ? v.data : Float64Array.from(v.data);
    const base = await session.run(feedOf());
    const lossAt = async (): Promise<number> => Number((await session.run(feedOf(), ['__loss'])).__loss.data[0]);
    const results: GradcheckResult[] = [];
    for (const [i, w] of wrt.entries()) {
      const x = inputs[w.name] as Float64Array;
      const analytic = Float64Array.from(base[`__grad${i}`].data as Float64Array);
      const numeric = new Float64Array(x.length);
      for (let j = 0; j < x.length; j++) {
        const x0 = x[j];
        const h = (opts.eps ?? (dtype === 'float64' ? 1e-6 : 1e-2)) * Math.max(1, Math.abs(x0));
        x[j] = x0 + h;
        const fp = await lossAt();
        x[j] = x0 - h;
        const fm = await lossAt();
        x[j] = x0;
        numeric[j] = (fp - fm) / (2 * h);
      }
      let diff = 0, scale = 1e-12;
      for (let j = 0; j < x.length; j++) {
        diff = Math.max(diff, Math.abs(analytic[j] - numeric[j]));
        scale = Math.max(scale, Math.abs(numeric[j]), Math.abs(analytic[j]));
      }
      results.push({ name: w.name, analytic, numeric, relError: diff / scale, loss: Number(base.__loss.data[0]) });
    }
    return results;
  } finally {
    await session.release();
  }
}
