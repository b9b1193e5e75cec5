import type { GraphBuilder } from '../graph/builder.js';
import type { Node, Value } from '../graph/types.js';
import { constIntsReader, filled, isFloat, staticDims, zerosLike } from './grad-ops.js';
import { soundShapes } from './sound-shapes.js';
import { NON_DIFFERENTIABLE, VJP_RULES, type VjpRule } from './vjp-rules.js';

export interface BackwardOptions {
  /**
   * Cotangent of `loss` (same shape and dtype). Default: ones, which requires `loss` to have
   * a static shape of one element (a scalar loss).
   */
  seed?: Value;
  /**
   * What to return for a `wrt` value the loss does not depend on: zeros of its shape
   * (default; a training graph then still has one gradient per weight) or nothing.
   */
  unused?: 'zeros' | 'omit';
}

function ruleKey(n: Node): string {
  return n.domain ? `${n.domain}.${n.op}` : n.op;
}

/**
 * Appends the reverse-mode backward pass of `loss` to the graph being built and returns the
 * gradient of each `wrt` value (graph inputs such as trainable weights, or any intermediate
 * float value).
 *
 * The recorded nodes are walked once in reverse (the builder appends them in topological
 * order). Only nodes on a path from a `wrt` value to `loss` are differentiated, and a rule
 * is asked only for the inputs on such a path, so frozen weights (initializers) and
 * subgraphs that do not depend on a `wrt` value emit no gradient nodes; cotangents still
 * flow through frozen layers to the trainable ones below them. A value read by several
 * nodes gets the sum of their cotangents. Integer and boolean values carry no gradient.
 */
export function addBackward(
  g: GraphBuilder, loss: Value, wrt: readonly Value[], opts: BackwardOptions = {},
): Map<Value, Value> {
  if (!isFloat(loss)) throw new Error(`autodiff: loss ${loss.name} is ${loss.dtype}, not a float`);
  for (const w of wrt) if (!isFloat(w)) throw new Error(`autodiff: cannot differentiate with respect to ${w.name} (${w.dtype})`);
  const nodes = g.nodes.slice(); // the forward graph; rules append after it
  const constInts = constIntsReader(g);
  // Rules see each node through values carrying re-inferred shapes (same ids and names, so
  // the emitted graph is unchanged); see sound-shapes.ts for why metadata is not enough.
  const fixed = soundShapes(nodes);
  const views = new Map<number, Value>();
  const view = (v: Value | null): Value | null => {
    if (!v || !fixed.has(v.id)) return v;
    let w = views.get(v.id);
    if (!w) views.set(v.id, (w = { ...v, shape: fixed.get(v.id)! }));
    return w;
  };

  // Values that depend on a wrt value through float paths (the only ones that get cotangents).
  const live = new Set<number>(wrt.map((w) => w.id));
  for (const n of nodes) {
    if (n.inputs.some((v) => v && live.has(v.id))) for (const o of n.outputs) if (isFloat(o)) live.add(o.id);
  }
  // Values the loss depends on.
  const reaches = new Set<number>([loss.id]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (n.outputs.some((o) => reaches.has(o.id))) for (const v of n.inputs) if (v) reaches.add(v.id);
  }

  const cot = new Map<number, Value>();
  cot.set(loss.id, opts.seed ?? unitSeed(g, loss));
  const accumulate = (v: Value, grad: Value) => {
    const prev = cot.get(v.id);
    cot.set(v.id, prev ? g.add(prev, grad) : grad);
  };

  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    const cotangents = node.outputs.map((o) => cot.get(o.id) ?? null);
    if (cotangents.every((x) => x === null)) continue;
    const needs = node.inputs.map((v) => !!v && live.has(v.id) && reaches.has(v.id) && isFloat(v));
    if (!needs.some(Boolean)) continue;
    const key = ruleKey(node);
    const rule: VjpRule | undefined = VJP_RULES[key];
    if (!rule) {
      const why = NON_DIFFERENTIABLE.has(key) ? 'is not differentiable' : node.domain
        ? 'is a fused contrib op (lower the model to primitive ops for training)' : 'has no gradient rule';
      throw new Error(`autodiff: ${key} (output ${node.outputs[0].name}) ${why}`);
    }
    const seen: Node = { ...node, inputs: node.inputs.map(view), outputs: node.outputs.map((o) => view(o)!) };
    const grads = rule({ g, node: seen, cotangents, needs, constInts });
    node.inputs.forEach((v, j) => {
      const gr = grads[j];
      if (v && needs[j] && gr) accumulate(v, gr);
    });
  }

  const result = new Map<Value, Value>();
  for (const w of wrt) {
    const gw = cot.get(w.id);
    if (gw) result.set(w, gw);
    else if ((opts.unused ?? 'zeros') === 'zeros') result.set(w, zerosLike(g, w));
  }
  return result;
}

function unitSeed(g: GraphBuilder, loss: Value): Value {
  const s = staticDims(loss.shape);
  if (!s || s.some((d) => d !== 1)) {
    throw new Error(`autodiff: loss ${loss.name} is not a scalar; pass opts.seed for a non-scalar output`);
  }
  return s.length === 0 ? g.scalar(1, loss.dtype) : filled(g, loss.dtype, s, 1);
}
