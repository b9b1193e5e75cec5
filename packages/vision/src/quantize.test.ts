import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, readJsonFile } from '@mobillama/core';
import { ClipVisionModel } from './model.js';
import { quantizeVisionFolder } from './quantize.js';
import { loadClipVision } from './weights.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

let tmp: string;
beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'mobillama-vq-')); });
afterAll(() => rm(tmp, { recursive: true, force: true }));

function pixels(n: number): Float32Array {
  let x = 9;
  return new Float32Array(n).map(() => { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; return (x / 2 ** 32 - 0.5) * 4; });
}

/** Cosine similarity of each token's feature vector, the minimum over tokens. */
function minCosine(a: Float32Array, b: Float32Array, dim: number): number {
  let worst = 1;
  for (let t = 0; t < a.length / dim; t++) {
    let ab = 0, aa = 0, bb = 0;
    for (let j = 0; j < dim; j++) {
      const x = a[t * dim + j], y = b[t * dim + j];
      ab += x * y; aa += x * x; bb += y * y;
    }
    worst = Math.min(worst, ab / Math.sqrt(aa * bb));
  }
  return worst;
}

describe.each(['clip-tiny', 'clip-vision-bin'])('int8 vision encoder: %s', (dir) => {
  const src = `${FIXTURES}${dir}`;

  it('at load, from a q8 checkpoint and from a q4 checkpoint: features close to fp32 (worst token cosine)', async () => {
    const ref = await ClipVisionModel.load(src, { threads: 1 });
    const { imageSize: S, numChannels: C } = ref.config;
    const px = pixels(2 * C * S * S);
    const want = (await ref.encodePixels(px.slice(), 2)).features;
    await ref.dispose();
    const q8 = join(tmp, `${dir}-q8`), q4 = join(tmp, `${dir}-q4`);
    await quantizeVisionFolder(src, q8, 'q8');
    await quantizeVisionFolder(src, q4, 'q4');
    for (const [path, opts] of [[src, { quantize: 'q8' as const }], [src, { quantize: 'q4' as const }], [q8, {}], [q4, {}]] as const) {
      const m = await ClipVisionModel.load(path, { threads: 1, ...opts });
      const got = (await m.encodePixels(px.slice(), 2)).features;
      await m.dispose();
      // Measured: int8 ≥ 0.9998 for every token; int4 blocks (then int8) 0.979–0.981.
      expect(minCosine(got, want, ref.hiddenSize)).toBeGreaterThan(path === q4 ? 0.95 : 0.999);
    }
  });

  it('the checkpoint layout: encoder linears quantized, the rest float, the config field at top and in vision_config', async () => {
    const out = join(tmp, `${dir}-layout`);
    await quantizeVisionFolder(src, out, 'q4');
    const cfg = await readJsonFile<{ quantization: { weights: string }; vision_config?: { quantization?: unknown } }>(join(out, 'config.json'));
    expect(cfg.quantization.weights).toBe('q4');
    if (cfg.vision_config) expect(cfg.vision_config.quantization).toEqual(cfg.quantization);
    const st = await openSafetensors(join(out, 'model.safetensors'));
    const enc = st.names().filter((n) => n.includes('encoder.layers.0.mlp.fc1'));
    expect(enc.sort()).toEqual(expect.arrayContaining([expect.stringMatching(/fc1\.qweight$/), expect.stringMatching(/fc1\.scales$/), expect.stringMatching(/fc1\.bias$/)]));
    expect(st.names().some((n) => n.endsWith('patch_embedding.weight'))).toBe(true);
    await st.close();
    // Float graphs (training) get the stored int tensor as `weight` and refuse it by dtype.
    const loaded = await loadClipVision(out);
    expect(loaded.weights.layers[0].fc1.kernel?.kind).toBe('q4');
    expect(loaded.weights.layers[0].fc1.weight.dtype).toBe('uint8');
    await loaded.source.close();
  });
});
