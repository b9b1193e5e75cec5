import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openSafetensors } from '../weights/safetensors.js';
import { createSession } from '../runtime/session.js';
import { GraphBuilder } from './builder.js';
import { exportOnnx } from './onnx-export.js';
import * as nn from './nn.js';
import type { HostTensor } from '../tensor.js';
import type { Value } from './types.js';

const FIXTURES = fileURLToPath(new URL('../../fixtures/builder/', import.meta.url));

async function load(file: string): Promise<Record<string, HostTensor & { data: Float32Array }>> {
  const src = await openSafetensors(FIXTURES + file);
  const out: Record<string, HostTensor & { data: Float32Array }> = {};
  for (const n of src.names()) out[n] = (await src.read(n)) as HostTensor & { data: Float32Array };
  await src.close();
  return out;
}

/** Builds a graph with one input `x`, runs it on ORT and returns output `y`. */
async function run(x: HostTensor & { data: Float32Array }, body: (g: GraphBuilder, x: Value) => Value): Promise<Float32Array> {
  const g = new GraphBuilder('test');
  const xv = g.input('x', 'float32', x.shape);
  g.output(body(g, xv), 'y');
  const s = await createSession(exportOnnx(g.build()), { threads: 1 });
  const out = await s.run({ x: { dtype: 'float32', dims: x.shape, data: x.data } });
  await s.release();
  return out.y.data as Float32Array;
}

function expectClose(actual: Float32Array, expected: Float32Array, rel = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  expect(maxDiff / maxRef).toBeLessThan(rel);
}

describe('graph builder against PyTorch goldens', () => {
  it.each([
    ['gelu', 'y_gelu'], ['quick_gelu', 'y_quickgelu'], ['silu', 'y_silu'],
  ])('MLP with %s', async (act, key) => {
    const f = await load('mlp.safetensors');
    const y = await run(f.x, (g, x) => {
      const h = nn.activation(g, act, nn.linear(g, x, g.weight('w1', f.w1), g.weight('b1', f.b1)));
      return nn.linear(g, h, g.weight('w2', f.w2), g.weight('b2', f.b2));
    });
    expectClose(y, f[key].data);
  });

  it.each([
    ['y_causal', true, false], ['y_full', false, false], ['y_causal_rope', true, true],
  ] as const)('attention block %s', async (key, causal, rope) => {
    const f = await load('attention.safetensors');
    const [B, T] = f.x.shape;
    const heads = 2, D = 8;
    const y = await run(f.x, (g, x) => {
      let q = nn.splitHeads(g, nn.linear(g, x, g.weight('wq', f.wq)), heads, D);
      let k = nn.splitHeads(g, nn.linear(g, x, g.weight('wk', f.wk)), heads, D);
      const v = nn.splitHeads(g, nn.linear(g, x, g.weight('wv', f.wv)), heads, D);
      if (rope) {
        const pos = g.constant({ dtype: 'I64', shape: [B, T], data: BigInt64Array.from({ length: B * T }, (_, i) => BigInt(i % T)) });
        const { cos, sin } = nn.ropeTables(g, pos, D, 10000);
        q = nn.applyRope(g, q, cos, sin, D);
        k = nn.applyRope(g, k, cos, sin, D);
      }
      const bias = new Float32Array(T * T);
      if (causal) for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) bias[i * T + j] = -1e30;
      const b = g.constant({ dtype: 'F32', shape: [1, 1, T, T], data: bias });
      const a = nn.attention(g, q, k, v, b, { heads, kvHeads: heads, headDim: D });
      return nn.linear(g, nn.mergeHeads(g, a, heads, D), g.weight('wo', f.wo));
    });
    expectClose(y, f[key].data);
  });

  it('norms and softmaxes', async () => {
    const f = await load('norms.safetensors');
    const cases: [string, (g: GraphBuilder, x: Value) => Value][] = [
      ['rms', (g, x) => nn.rmsNorm(g, x, g.weight('w', f.w), 1e-5)],
      ['ln', (g, x) => nn.layerNorm(g, x, g.weight('w', f.w), g.weight('b', f.b), 1e-5)],
      ['softmax', (g, x) => g.softmax(x, -1)],
      ['log_softmax', (g, x) => g.logSoftmax(x, -1)],
    ];
    for (const [key, body] of cases) expectClose(await run(f.x, body), f[key].data);
  });

  it('infers static shapes and rejects mismatched matmuls', () => {
    const g = new GraphBuilder();
    const x = g.input('x', 'float32', ['batch', 5, 16]);
    const w = g.input('w', 'float32', [16, 4]);
    expect(g.matmul(x, w).shape).toEqual(['batch', 5, 4]);
    expect(g.reshape(x, [0, 0, 2, 8]).shape).toEqual(['batch', 5, 2, 8]);
    expect(g.transpose(g.reshape(x, [0, 0, 2, 8]), [0, 2, 1, 3]).shape).toEqual(['batch', 2, 5, 8]);
    expect(() => g.matmul(x, g.input('w2', 'float32', [8, 4]))).toThrow(/inner dims differ/);
    expect(() => g.input('x', 'float32', [1])).toThrow(/used twice/);
  });

  it('is free of side effects: the same calls build the same ONNX bytes', () => {
    const build = () => {
      const g = new GraphBuilder('same');
      const x = g.input('x', 'float32', ['n', 4]);
      g.output(nn.gelu(g, g.mul(x, g.scalar(2))), 'y');
      return exportOnnx(g.build()).model;
    };
    expect(Buffer.from(build()).equals(Buffer.from(build()))).toBe(true);
  });
});
