import { describe, expect, it } from 'vitest';
import type { GraphBuilder } from '../graph/builder.js';
import * as nn from '../graph/nn.js';
import type { Value } from '../graph/types.js';
import { crossEntropy } from './losses.js';
import { gradcheck } from './gradcheck.js';
import { checkOp, rng, type OpCase } from './test-utils.js';

// Finite-difference checks (float64) of the nn.* compositions the models are made of, and of
// the cross-entropy loss. nn.* builds float32 graphs; the check rewrites them to float64.

const TOL64 = 1e-6;

function causalBias(g: GraphBuilder, T: number): Value {
  const bias = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) bias[i * T + j] = -1e30;
  return g.constant({ dtype: 'F32', shape: [1, 1, T, T], data: bias });
}

function positions(g: GraphBuilder, B: number, T: number): Value {
  return g.constant({ dtype: 'I64', shape: [B, T], data: BigInt64Array.from({ length: B * T }, (_, i) => BigInt(i % T)) });
}

async function expectGradOk(c: OpCase): Promise<void> {
  for (const r of await checkOp(c)) expect(r.relError, `d/d${r.name}`).toBeLessThan(TOL64);
}

describe('composite layers against float64 finite differences', () => {
  it('nn.rmsNorm (input and weight)', async () => {
    await expectGradOk({
      inputs: { x: { dims: [2, 3, 8] }, w: { dims: [8], lo: 0.5, hi: 1.5 } },
      body: (g, v) => nn.rmsNorm(g, v.x, v.w, 1e-5),
    });
  });

  it('nn.layerNorm (input, weight and bias)', async () => {
    await expectGradOk({
      inputs: { x: { dims: [2, 3, 8] }, w: { dims: [8], lo: 0.5, hi: 1.5 }, b: { dims: [8] } },
      body: (g, v) => nn.layerNorm(g, v.x, v.w, v.b, 1e-5),
    });
  });

  it('nn.applyRope with nn.ropeTables', async () => {
    await expectGradOk({
      inputs: { x: { dims: [2, 2, 3, 8] } },
      body: (g, v) => {
        const { cos, sin } = nn.ropeTables(g, positions(g, 2, 3), 8, 10000);
        return nn.applyRope(g, v.x, cos, sin, 8);
      },
    });
  });

  it.each([
    ['multi-head', 2, 2], ['grouped-query (5-D broadcasting MatMul)', 4, 2],
  ] as const)('nn.attention with a causal bias, %s', async (_, heads, kvHeads) => {
    const T = 4, D = 4;
    await expectGradOk({
      inputs: { q: { dims: [1, heads, T, D] }, k: { dims: [1, kvHeads, T, D] }, v: { dims: [1, kvHeads, T, D] } },
      body: (g, v) => nn.attention(g, v.q, v.k, v.v, causalBias(g, T), { heads, kvHeads, headDim: D }),
    });
  });

  it('nn.attention, grouped-query, with dynamic batch and sequence dims and a fed causal bias', async () => {
    const T = 3, D = 4;
    const bias = new Array<number>(T * T).fill(0).map((_, i) => (i % T > Math.floor(i / T) ? -1e30 : 0));
    await expectGradOk({
      inputs: {
        q: { dims: [2, 4, T, D], decl: ['b', 4, 't', D] }, k: { dims: [2, 2, T, D], decl: ['b', 2, 't', D] },
        v: { dims: [2, 2, T, D], decl: ['b', 2, 't', D] }, bias: { dims: [1, 1, T, T], decl: [1, 1, 't', 't'], data: bias },
      },
      wrt: ['q', 'k', 'v'],
      body: (g, v) => nn.attention(g, v.q, v.k, v.v, v.bias, { heads: 4, kvHeads: 2, headDim: D }),
    });
  });

  it('a GQA attention block: projections, RoPE, causal attention, output projection', async () => {
    const B = 2, T = 3, E = 8, heads = 4, kvHeads = 2, D = 2;
    await expectGradOk({
      inputs: {
        x: { dims: [B, T, E] }, wq: { dims: [heads * D, E] }, wk: { dims: [kvHeads * D, E] },
        wv: { dims: [kvHeads * D, E] }, wo: { dims: [E, heads * D] },
      },
      body: (g, v) => {
        const { cos, sin } = nn.ropeTables(g, positions(g, B, T), D, 10000);
        const q = nn.applyRope(g, nn.splitHeads(g, nn.linear(g, v.x, v.wq), heads, D), cos, sin, D);
        const k = nn.applyRope(g, nn.splitHeads(g, nn.linear(g, v.x, v.wk), kvHeads, D), cos, sin, D);
        const val = nn.splitHeads(g, nn.linear(g, v.x, v.wv), kvHeads, D);
        const a = nn.attention(g, q, k, val, causalBias(g, T), { heads, kvHeads, headDim: D });
        return nn.linear(g, nn.mergeHeads(g, a, heads, D), v.wo);
      },
    });
  });

  it('SwiGLU MLP (nn.silu, nn.linear)', async () => {
    await expectGradOk({
      inputs: { x: { dims: [2, 3, 4] }, wg: { dims: [6, 4] }, wu: { dims: [6, 4] }, wd: { dims: [4, 6] } },
      body: (g, v) => nn.linear(g, g.mul(nn.silu(g, nn.linear(g, v.x, v.wg)), nn.linear(g, v.x, v.wu)), v.wd),
    });
  });
});

describe('cross-entropy', () => {
  const B = 2, T = 4, V = 5;
  const labels = [3, -100, 0, 4, -100, -100, 2, 1];
  const logits = Array.from({ length: B * T * V }, ((r) => () => r(-2, 2))(rng(3)));

  /** Σ −log softmax(logits)[label] / count over supervised positions, in plain JS. */
  function reference(shift: boolean): number {
    let sum = 0, count = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T - (shift ? 1 : 0); t++) {
        const label = labels[b * T + t + (shift ? 1 : 0)];
        if (label === -100) continue;
        const row = logits.slice((b * T + t) * V, (b * T + t + 1) * V);
        const m = Math.max(...row);
        const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
        sum += lse - row[label];
        count++;
      }
    }
    return sum / count;
  }

  const labelInput = (data: number[]) => ({ dims: [B, T], dtype: 'int64' as const, data });

  it.each([false, true])('mean over supervised tokens with ignored labels (shift %s): value and gradient', async (shift) => {
    const res = await gradcheck((g) => {
      const x = g.input('logits', 'float32', ['b', 't', V]);
      const y = g.input('labels', 'int64', ['b', 't']);
      return { loss: crossEntropy(g, x, y, { shift }), wrt: [x] };
    }, { logits: { dims: [B, T, V], data: logits }, labels: { dims: [B, T], data: BigInt64Array.from(labels, BigInt) } });
    expect(res[0].relError).toBeLessThan(TOL64);
    expect(Math.abs(res[0].loss - reference(shift))).toBeLessThan(1e-12);
    // Ignored positions get exactly zero gradient.
    if (!shift) for (let v = 0; v < V; v++) expect(res[0].analytic[1 * V + v]).toBe(0);
  });

  it('is 0 with zero gradients when every label is ignored (PyTorch would give NaN)', async () => {
    const res = await checkOp({
      inputs: { logits: { dims: [B, T, V] }, labels: labelInput(new Array(B * T).fill(-100)) },
      body: (g, v) => crossEntropy(g, v.logits, v.labels),
    });
    expect(res[0].loss).toBe(0);
    expect(Array.from(res[0].analytic).every((x) => x === 0)).toBe(true);
  });

  it('respects a custom ignore index', async () => {
    const res = await checkOp({
      inputs: { logits: { dims: [B, T, V] }, labels: labelInput(labels.map((l) => (l === -100 ? 7 : l))) },
      body: (g, v) => crossEntropy(g, v.logits, v.labels, { ignoreIndex: 7 }),
    });
    expect(res[0].relError).toBeLessThan(TOL64);
  });
});
