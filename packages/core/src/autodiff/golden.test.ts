import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../graph/builder.js';
import * as nn from '../graph/nn.js';
import { exportOnnx } from '../graph/onnx-export.js';
import type { Dim, Value } from '../graph/types.js';
import { createSession } from '../runtime/session.js';
import type { Feeds } from '../runtime/types.js';
import type { HostTensor } from '../tensor.js';
import { memoryWeight } from '../weights/refs.js';
import { openSafetensors } from '../weights/safetensors.js';
import { addBackward } from './backward.js';
import { crossEntropy } from './losses.js';

// The loss and every weight gradient of a tiny LLaMA-style block (embedding → RMSNorm → GQA
// attention with RoPE and a causal mask → residual → SwiGLU → final norm → lm_head → shifted
// masked cross-entropy) against PyTorch autograd in float64
// (scripts/reference/make_autodiff_fixtures.py), computed here by ORT in float32.

const FIXTURE = fileURLToPath(new URL('../../fixtures/autodiff/mlp_attention.safetensors', import.meta.url));
const WEIGHTS = [
  'embed', 'attn_norm', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'mlp_norm', 'gate_proj', 'up_proj', 'down_proj',
  'final_norm', 'lm_head',
] as const;

/** CFG of make_autodiff_fixtures.py (also in the file's __metadata__). */
const CFG = { heads: 4, kv_heads: 2, head_dim: 4, eps: 1e-6, theta: 10000 };

async function load(): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(FIXTURE);
  const t: Record<string, HostTensor> = {};
  for (const n of src.names()) t[n] = await src.read(n);
  await src.close();
  return t;
}

function causalBias(T: number): Float32Array {
  const bias = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) bias[i * T + j] = -1e30;
  return bias;
}

/** The training graph: all weights trainable (graph inputs), outputs loss and grad.<weight>. */
function trainGraph(t: Record<string, HostTensor>, cfg: typeof CFG, dims: { B: Dim; T: Dim }) {
  const { heads, kv_heads: kvHeads, head_dim: D, eps, theta } = cfg;
  const g = new GraphBuilder('train', new Set(WEIGHTS));
  const w: Record<string, Value> = {};
  for (const n of WEIGHTS) w[n] = g.param(memoryWeight(n, t[n] as HostTensor & { data: Float32Array }));
  const ids = g.input('input_ids', 'int64', [dims.B, dims.T]);
  const labels = g.input('labels', 'int64', [dims.B, dims.T]);
  const positions = g.input('position_ids', 'int64', [dims.B, dims.T]);
  const bias = g.input('causal_bias', 'float32', [1, 1, dims.T, dims.T]);

  let h = g.gather(w.embed, ids, 0);
  const a = nn.rmsNorm(g, h, w.attn_norm, eps);
  const { cos, sin } = nn.ropeTables(g, positions, D, theta);
  const q = nn.applyRope(g, nn.splitHeads(g, nn.linear(g, a, w.q_proj), heads, D), cos, sin, D);
  const k = nn.applyRope(g, nn.splitHeads(g, nn.linear(g, a, w.k_proj), kvHeads, D), cos, sin, D);
  const v = nn.splitHeads(g, nn.linear(g, a, w.v_proj), kvHeads, D);
  const o = nn.attention(g, q, k, v, bias, { heads, kvHeads, headDim: D });
  h = g.add(h, nn.linear(g, nn.mergeHeads(g, o, heads, D), w.o_proj));
  const m = nn.rmsNorm(g, h, w.mlp_norm, eps);
  h = g.add(h, nn.linear(g, g.mul(nn.silu(g, nn.linear(g, m, w.gate_proj)), nn.linear(g, m, w.up_proj)), w.down_proj));
  const logits = nn.linear(g, nn.rmsNorm(g, h, w.final_norm, eps), w.lm_head);
  const loss = crossEntropy(g, logits, labels, { shift: true });

  const grads = addBackward(g, loss, WEIGHTS.map((n) => w[n]));
  g.output(loss, 'loss');
  for (const n of WEIGHTS) g.output(grads.get(w[n])!, `grad.${n}`);
  return g.build();
}

function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0, ref = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    ref = Math.max(ref, Math.abs(expected[i]));
  }
  return diff / ref;
}

describe('autodiff against PyTorch autograd (float64 golden, float32 here)', () => {
  it.each([
    ['static shapes', false], ['dynamic batch and sequence dims', true],
  ] as const)('a transformer block: loss and all weight gradients, %s', async (_, dynamic) => {
    const t = await load();
    const [B, T] = t.input_ids.shape;
    const graph = trainGraph(t, CFG, dynamic ? { B: 'batch', T: 'seq' } : { B, T });
    const session = await createSession(exportOnnx(graph), { threads: 2 });
    const feeds: Feeds = {
      input_ids: { dtype: 'int64', dims: [B, T], data: t.input_ids.data },
      labels: { dtype: 'int64', dims: [B, T], data: t.labels.data },
      position_ids: { dtype: 'int64', dims: [B, T], data: BigInt64Array.from({ length: B * T }, (_, i) => BigInt(i % T)) },
      causal_bias: { dtype: 'float32', dims: [1, 1, T, T], data: causalBias(T) },
    };
    for (const n of WEIGHTS) feeds[n] = { dtype: 'float32', dims: t[n].shape, data: (t[n].data as Float32Array).slice() };
    const out = await session.run(feeds);
    await session.release();

    expect(relErr(out.loss.data as Float32Array, t.loss.data as Float64Array)).toBeLessThan(1e-4);
    for (const n of WEIGHTS) {
      const got = out[`grad.${n}`];
      expect(got.dims, n).toEqual(t[n].shape);
      expect(relErr(got.data as Float32Array, t[`grad.${n}`].data as Float64Array), `grad.${n}`).toBeLessThan(1e-4);
    }
    // Embedding rows of tokens that never occur get exactly zero gradient.
    const V = t.embed.shape[0], E = t.embed.shape[1];
    const gEmbed = out['grad.embed'].data as Float32Array;
    for (let row = 9; row < V; row++) for (let j = 0; j < E; j++) expect(gEmbed[row * E + j]).toBe(0);
  });
});
