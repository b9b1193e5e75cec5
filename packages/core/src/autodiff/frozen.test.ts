import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../graph/builder.js';
import * as nn from '../graph/nn.js';
import type { Value } from '../graph/types.js';
import { memoryWeight } from '../weights/refs.js';
import { addBackward } from './backward.js';
import { gradcheck } from './gradcheck.js';
import { rng } from './test-utils.js';

// Frozen weights are initializers: the backward pass must carry cotangents through frozen
// layers to trainable ones, and emit nothing that only a frozen weight's gradient would need.

const r = rng(11);
const tensor = (shape: number[]) => ({
  dtype: 'F32' as const, shape, data: Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => r(-1, 1)),
});
const W = {
  w0: tensor([6, 4]), b0: tensor([6]), w1: tensor([5, 6]), b1: tensor([5]), w2: tensor([3, 5]), b2: tensor([3]),
};
type Name = keyof typeof W;

/** x → frozen layer 0 → silu → layer 1 → silu → layer 2 → loss = Σ y². */
function mlp(trainable: readonly Name[]) {
  const g = new GraphBuilder('mlp', new Set(trainable));
  const p = (n: Name) => g.param(memoryWeight(n, W[n]));
  const x = g.input('x', 'float32', ['batch', 4]);
  const h0 = nn.silu(g, nn.linear(g, x, p('w0'), p('b0')));
  const h1 = nn.silu(g, nn.linear(g, h0, p('w1'), p('b1')));
  const y = nn.linear(g, h1, p('w2'), p('b2'));
  const loss = g.reduceSum(g.mul(y, y), [0, 1], false);
  const forwardNodes = g.nodes.length;
  const wrt = trainable.map((n) => p(n));
  const grads = addBackward(g, loss, wrt);
  const backward = g.nodes.slice(forwardNodes);
  return { g, x, loss, wrt, grads, backward };
}

const count = (nodes: readonly { op: string }[], op: string) => nodes.filter((n) => n.op === op).length;

describe('frozen weights', () => {
  it('differentiates only what the trainable layer needs', () => {
    const { g, grads, backward } = mlp(['w1', 'b1']);
    expect([...grads.keys()].map((v) => v.name)).toEqual(['w1', 'b1']);
    // Frozen weights stay initializers; trainable ones are inputs.
    expect(g.inputs.map((v) => v.name)).toEqual(['x', 'w1', 'b1']);
    // Through layer 2 only its input cotangent (one MatMul), then dW1 (one MatMul); nothing
    // for w2/b2, and nothing at all below layer 1 (layer 0 does not depend on a trainable weight).
    expect(count(backward, 'MatMul')).toBe(2);
    expect(count(backward, 'ReduceSum')).toBe(1); // db1 = Σ_batch ḡ; no db2
    expect(count(backward, 'Sigmoid')).toBe(0); // silu's σ is reused from the forward pass
    const frozen = new Set(['w0', 'b0', 'b2']);
    for (const n of backward) for (const v of n.inputs) expect(frozen.has(v?.name ?? '')).toBe(false);
    // With everything trainable the same graph needs 3 + 2 + 1 MatMuls (dW and dX per layer, no dx).
    const all = mlp(['w0', 'b0', 'w1', 'b1', 'w2', 'b2']);
    expect(count(all.backward, 'MatMul')).toBe(5);
    expect(count(all.backward, 'ReduceSum')).toBe(3);
  });

  it('the gradient flowing back through the frozen layer is right', async () => {
    const feeds = {
      x: { dims: [3, 4], data: Array.from({ length: 12 }, () => r(-1, 1)) },
      w1: { dims: [5, 6], data: W.w1.data }, b1: { dims: [5], data: W.b1.data },
    };
    const res = await gradcheck((g) => {
      const m = mlpInto(g);
      return { loss: m.loss, wrt: m.wrt };
    }, feeds);
    for (const x of res) expect(x.relError, x.name).toBeLessThan(1e-6);
  });

  it('returns zeros for a trainable weight the loss does not use, or omits it', () => {
    const g = new GraphBuilder('unused');
    const a = g.input('a', 'float32', [2]);
    const b = g.input('b', 'float32', [3]);
    const loss = g.reduceSum(g.mul(a, a), [0], false);
    expect(addBackward(g, loss, [a, b]).get(b)?.shape).toEqual([3]);
    expect(addBackward(g, loss, [a, b], { unused: 'omit' }).has(b)).toBe(false);
  });

  it('rejects a non-scalar loss without a seed, and an op with no rule', () => {
    const g = new GraphBuilder('errors');
    const a = g.input('a', 'float32', [2]);
    expect(() => addBackward(g, g.mul(a, a), [a])).toThrow(/not a scalar/);
    const fused = g.node('SimplifiedLayerNormalization', [a], {}, { dtype: 'float32', shape: [2], domain: 'com.microsoft' });
    expect(() => addBackward(g, g.reduceSum(fused, [0], false), [a])).toThrow(/fused contrib op/);
  });
});

/** The same network, built on a caller's builder, with w1/b1 as plain float inputs (for gradcheck). */
function mlpInto(g: GraphBuilder): { loss: Value; wrt: Value[] } {
  const c = (n: Name) => g.weight(n, W[n]);
  const x = g.input('x', 'float32', ['batch', 4]);
  const w1 = g.input('w1', 'float32', [5, 6]);
  const b1 = g.input('b1', 'float32', [5]);
  const h0 = nn.silu(g, nn.linear(g, x, c('w0'), c('b0')));
  const h1 = nn.silu(g, nn.linear(g, h0, w1, b1));
  const y = nn.linear(g, h1, c('w2'), c('b2'));
  return { loss: g.reduceSum(g.mul(y, y), [0, 1], false), wrt: [w1, b1] };
}
