import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, createSession, exportOnnx, openSafetensors, writeSafetensors, type HostTensor } from '@mobillama/core';
import { ProjectorError, projectorDepth } from './config.js';
import { projectorInto } from './graph.js';
import { Projector } from './model.js';
import { findProjectorWeights, loadProjector } from './weights.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

async function readGolden(dir: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(`${FIXTURES}${dir}/golden.safetensors`);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

/** max |a - b| / max |b|: the 1e-4 relative criterion. */
function relErr(actual: Float32Array, expected: Float32Array): number {
  expect(actual.length).toBe(expected.length);
  let diff = 0, ref = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    ref = Math.max(ref, Math.abs(expected[i]));
  }
  return diff / ref;
}

describe.each([
  { dir: 'mlp2x-llava', path: 'mlp2x-llava', type: 'mlp2x_gelu', naming: 'llava', inDim: 32, outDim: 24 },
  { dir: 'linear-llava', path: 'linear-llava/mm_projector.bin', type: 'linear', naming: 'llava', inDim: 32, outDim: 24 },
  { dir: 'mlp3x-llava', path: 'mlp3x-llava/mm_projector.bin', type: 'mlp3x_gelu', naming: 'llava', inDim: 16, outDim: 12 },
  { dir: 'mlp2x-hf', path: 'mlp2x-hf', type: 'mlp2x_gelu', naming: 'llava-hf', inDim: 32, outDim: 24 },
])('projector against the PyTorch reference: $dir', ({ dir, path, type, naming, inDim, outDim }) => {
  let golden: Record<string, HostTensor>;
  let proj: Projector;
  beforeAll(async () => {
    golden = await readGolden(dir);
    proj = await Projector.load(`${FIXTURES}${path}`, { threads: 1 });
  });
  afterAll(() => proj.dispose());

  it('infers the type and sizes from the keys', async () => {
    expect(proj.config).toEqual({ type, inDim, outDim });
    const loaded = await loadProjector(`${FIXTURES}${path}`);
    expect(loaded.naming).toBe(naming);
    await loaded.source.close();
  });

  it('projects [2, 5, in] features within 1e-4', async () => {
    const out = await proj.project((golden.features.data as Float32Array).slice(), [2, 5, inDim]);
    expect(out.length).toBe(2 * 5 * outDim);
    expect(relErr(out, golden.projected.data as Float32Array)).toBeLessThan(1e-4);
  });

  it('accepts rows without dims', async () => {
    const out = await proj.project((golden.features.data as Float32Array).slice());
    expect(relErr(out, golden.projected.data as Float32Array)).toBeLessThan(1e-4);
  });
});

describe('projector details', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'projector-'));
  });
  afterAll(() => rm(tmp, { recursive: true, force: true }));

  it('parses LLaVA projector types', () => {
    expect(projectorDepth('linear')).toBe(1);
    expect(projectorDepth('mlp2x_gelu')).toBe(2);
    expect(projectorDepth('mlp12x_gelu')).toBe(12);
    expect(() => projectorDepth('identity')).toThrow(ProjectorError);
    expect(() => projectorDepth('mlp0x_gelu')).toThrow(/not supported/);
  });

  it('finds projector keys under any prefix, and refuses odd layouts', () => {
    expect(findProjectorWeights(['base_model.model.model.mm_projector.0.weight', 'base_model.model.model.mm_projector.2.weight', 'x'])).toEqual({
      naming: 'llava', weightNames: ['base_model.model.model.mm_projector.0.weight', 'base_model.model.model.mm_projector.2.weight'],
    });
    expect(findProjectorWeights(['model.mm_projector.weight', 'model.mm_projector.bias']).weightNames).toEqual(['model.mm_projector.weight']);
    expect(() => findProjectorWeights(['model.embed_tokens.weight'])).toThrow(/no projector weights/);
    expect(() => findProjectorWeights(['model.mm_projector.0.weight', 'model.mm_projector.1.weight'])).toThrow(/unexpected layer numbering 0, 1/);
    expect(() => findProjectorWeights(['a.mm_projector.0.weight', 'b.mm_projector.0.weight'])).toThrow(/several projectors/);
  });

  it('checks a given type against the weights', async () => {
    await expect(loadProjector(`${FIXTURES}linear-llava/mm_projector.bin`, { type: 'mlp2x_gelu' })).rejects.toThrow(/mlp2x_gelu needs 2 Linear layers, the weights have 1/);
    const ok = await loadProjector(`${FIXTURES}mlp3x-llava/mm_projector.bin`, { type: 'mlp3x_gelu' });
    expect(ok.config.type).toBe('mlp3x_gelu');
    await ok.source.close();
    // config.json's mm_projector_type is the expectation when no type is given
    await expect(loadProjector(`${FIXTURES}mlp3x-llava/mm_projector.bin`, { configJson: { mm_projector_type: 'linear' } })).rejects.toThrow(/needs 1 Linear/);
    await expect(loadProjector(`${FIXTURES}mlp2x-hf`, { configJson: { projector_hidden_act: 'relu' } })).rejects.toThrow(/projector_hidden_act relu/);
  });

  it('works without biases', async () => {
    const w: HostTensor = { dtype: 'F32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) };
    await writeSafetensors(join(tmp, 'model.safetensors'), { 'multi_modal_projector.linear_1.weight': w, 'multi_modal_projector.linear_2.weight': { dtype: 'F32', shape: [2, 2], data: Float32Array.of(1, 0, 0, -1) } });
    const p = await Projector.load(tmp, { threads: 1 });
    expect(p.config).toEqual({ type: 'mlp2x_gelu', inDim: 3, outDim: 2 });
    const y = await p.project(Float32Array.of(1, 0, -1));
    // h = W1 x = [-2, -2]; gelu(-2) = -2 · Φ(-2) = -0.0455003; W2 = diag(1, -1)
    expect(y[0]).toBeCloseTo(-0.0455003, 6);
    expect(y[1]).toBeCloseTo(0.0455003, 6);
    await expect(p.project(new Float32Array(4))).rejects.toThrow(/expected \[B, N, 3\]/);
    await p.dispose();
  });

  it('composes into a larger graph (vision → projector in one session)', async () => {
    const golden = await readGolden('mlp2x-llava');
    const loaded = await loadProjector(`${FIXTURES}mlp2x-llava`);
    // Stand-in for the vision tower's output: features with an extra CLS row to drop first.
    const g = new GraphBuilder('composed');
    const x = g.input('with_cls', 'float32', ['batch', 'tokens', 32]);
    g.output(projectorInto(g, g.slice(x, [1], [1_000_000], [1]), loaded.weights), 'out');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const feats = golden.features.data as Float32Array;
    const withCls = new Float32Array(2 * 6 * 32);
    for (let b = 0; b < 2; b++) withCls.set(feats.subarray(b * 5 * 32, (b + 1) * 5 * 32), (b * 6 + 1) * 32);
    const out = await s.run({ with_cls: { dtype: 'float32', dims: [2, 6, 32], data: withCls } });
    expect(relErr(out.out.data as Float32Array, golden.projected.data as Float32Array)).toBeLessThan(1e-4);
    await s.release();
    await loaded.source.close();
  });
});
