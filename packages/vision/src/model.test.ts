import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, openWeights, writeSafetensors, type HostTensor } from '@mobillama/core';
import { ClipVisionModel } from './model.js';
import { loadClipVision } from './weights.js';
import { layersNeeded } from './graph.js';
import type { HfClipConfigJson } from './config.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

async function readAll(path: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(path);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

/** max |a - b| / max |b|: the 1e-4 relative criterion. */
function relErr(actual: Float32Array, expected: HostTensor): number {
  const e = expected.data as Float32Array;
  expect(actual.length).toBe(e.length);
  let diff = 0, ref = 0;
  for (let i = 0; i < e.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - e[i]));
    ref = Math.max(ref, Math.abs(e[i]));
  }
  return diff / ref;
}

describe.each([
  { dir: 'clip-tiny', hidden: 32, act: 'quick_gelu', layers: 3 },
  { dir: 'clip-vision-bin', hidden: 16, act: 'gelu', layers: 3 },
])('CLIP vision tower against the PyTorch reference: $dir', ({ dir, hidden, act, layers }) => {
  let golden: Record<string, HostTensor>;
  const models: ClipVisionModel[] = [];
  const load = async (opts: Parameters<typeof ClipVisionModel.load>[1]) => {
    const m = await ClipVisionModel.load(`${FIXTURES}${dir}`, { threads: 1, ...opts });
    models.push(m);
    return m;
  };
  beforeAll(async () => {
    golden = await readAll(`${FIXTURES}${dir}/golden.safetensors`);
  });
  afterAll(async () => {
    for (const m of models) await m.dispose();
  });

  it('reads the config (vision_config or top level) and the preprocessor config', async () => {
    const m = await load({});
    expect(m.config).toMatchObject({ hiddenSize: hidden, hiddenAct: act, numLayers: layers, imageSize: 32, patchSize: 8, numPatches: 16 });
    expect(m.config.preprocess).toMatchObject({ size: { shortestEdge: 32 }, cropSize: { height: 32, width: 32 }, resample: 3, rescaleFactor: 1 / 255 });
  });

  it('feature layer -2, patch tokens (LLaVA default) matches', async () => {
    const m = await load({});
    expect(m.numTokens).toBe(16);
    const out = await m.encodePixels((golden.pixel_values.data as Float32Array).slice(), 2);
    expect(relErr(out.features, golden.features_m2_patch)).toBeLessThan(1e-4);
    expect(out.pooled).toBeNull();
  });

  it('feature layer -1 with CLS, and the pooled output, match', async () => {
    const m = await load({ featureLayer: -1, featureKind: 'cls_patch', pooled: true });
    expect(m.numTokens).toBe(17);
    const out = await m.encodePixels((golden.pixel_values.data as Float32Array).slice(), 2);
    expect(relErr(out.features, golden.features_m1_cls_patch)).toBeLessThan(1e-4);
    expect(relErr(out.pooled!, golden.pooled)).toBeLessThan(1e-4);
  });

  it('one image at a time gives the batch rows', async () => {
    const m = await load({});
    const px = golden.pixel_values.data as Float32Array;
    const one = await m.encodePixels(px.slice(px.length / 2), 1);
    const want = (golden.features_m2_patch.data as Float32Array).subarray(16 * hidden);
    expect(relErr(one.features, { ...golden.features_m2_patch, data: want })).toBeLessThan(1e-4);
  });
});

describe('CLIP vision details', () => {
  it('encode(images): preprocessing then the tower, one row per image', async () => {
    const m = await ClipVisionModel.load(`${FIXTURES}clip-tiny`, { threads: 1, aspect: 'pad' });
    const photo = `${FIXTURES}preprocess/photo.jpg`, small = `${FIXTURES}preprocess/small.png`;
    const both = await m.encode([photo, small]);
    expect(both.length).toBe(2 * 16 * 32);
    const one = await m.encode(small);
    expect(relErr(one, { dtype: 'F32', shape: [1, 16, 32], data: both.subarray(16 * 32) })).toBeLessThan(1e-5);
    const px = await m.preprocess(photo);
    const direct = await m.encodePixels(px, 1);
    expect(relErr(direct.features, { dtype: 'F32', shape: [1, 16, 32], data: both.subarray(0, 16 * 32) })).toBeLessThan(1e-5);
    await expect(m.encodePixels(new Float32Array(10), 1)).rejects.toThrow(/expected 1x3x32x32/);
    await m.dispose();
  });

  it('hidden_states[0] is the pre_layrnorm output (feature layer 0)', async () => {
    const golden = await readAll(`${FIXTURES}clip-tiny/golden.safetensors`);
    const m = await ClipVisionModel.load(`${FIXTURES}clip-tiny`, { threads: 1, featureLayer: 0, featureKind: 'cls_patch' });
    const out = await m.encodePixels((golden.pixel_values.data as Float32Array).slice(), 2);
    expect(relErr(out.features, golden.features_0_cls_patch)).toBeLessThan(1e-4);
    await m.dispose();
  });

  it('loads only the layers the feature layer needs', async () => {
    const cfg = (await loadClipVision(`${FIXTURES}clip-tiny`, { layers: 0 }));
    expect(layersNeeded(cfg.config, {})).toBe(2);
    expect(layersNeeded(cfg.config, { featureLayer: -1 })).toBe(3);
    expect(layersNeeded(cfg.config, { featureLayer: 1, pooled: true })).toBe(3);
    expect(() => layersNeeded(cfg.config, { featureLayer: 4 })).toThrow(/outside hidden_states/);
    expect(() => layersNeeded(cfg.config, { featureLayer: -5 })).toThrow(/outside hidden_states/);
    const two = await loadClipVision(`${FIXTURES}clip-tiny`, { layers: (c) => layersNeeded(c, {}) });
    expect(two.weights.layers.length).toBe(2);
    expect(two.prefix).toBe('');
    await Promise.all([cfg.source.close(), two.source.close()]);
  });

  describe('key prefixes of VLM checkpoints', () => {
    let tmp: string;
    let golden: Record<string, HostTensor>;
    beforeAll(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'clip-prefix-'));
      golden = await readAll(`${FIXTURES}clip-tiny/golden.safetensors`);
    });
    afterAll(() => rm(tmp, { recursive: true, force: true }));

    /** clip-tiny's vision tensors renamed under `prefix`, beside decoder-like keys. */
    async function nested(prefix: string, name: string): Promise<string> {
      const src = await openWeights(`${FIXTURES}clip-tiny/model.safetensors`);
      const tensors: Record<string, HostTensor> = {
        'model.embed_tokens.weight': { dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
      };
      for (const n of src.names()) if (n.startsWith('vision_model.')) tensors[prefix + n] = await src.read(n);
      await src.close();
      const dir = join(tmp, name);
      await mkdir(dir);
      await writeSafetensors(join(dir, 'model.safetensors'), tensors);
      return dir;
    }

    const tinyVision = async (): Promise<HfClipConfigJson> =>
      (JSON.parse(await readFile(`${FIXTURES}clip-tiny/config.json`, 'utf8')) as HfClipConfigJson).vision_config!;

    it('llava-hf: vision_tower.vision_model.*, config.json with model_type llava and vision_config', async () => {
      const dir = await nested('vision_tower.', 'llava-hf');
      await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llava', vision_config: await tinyVision(), vision_feature_layer: -2 }));
      const m = await ClipVisionModel.load(dir, { threads: 1 });
      const out = await m.encodePixels((golden.pixel_values.data as Float32Array).slice(), 2);
      expect(relErr(out.features, golden.features_m2_patch)).toBeLessThan(1e-4);
      await m.dispose();
    });

    it('LLaVA: model.vision_tower.vision_tower.vision_model.*, tower config passed in', async () => {
      const dir = await nested('model.vision_tower.vision_tower.', 'llava');
      await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llava_llama', mm_vision_tower: 'openai/clip-vit-large-patch14-336' }));
      await expect(loadClipVision(dir)).rejects.toThrow(/no vision_config.*mm_vision_tower|names the tower openai/);
      const m = await ClipVisionModel.load(dir, { threads: 1, configJson: { model_type: 'clip_vision_model', ...await tinyVision() }, preprocessorJson: null });
      const out = await m.encodePixels((golden.pixel_values.data as Float32Array).slice(), 2);
      expect(relErr(out.features, golden.features_m2_patch)).toBeLessThan(1e-4);
      // No preprocessor_config.json: CLIPImageProcessor defaults, sized to the tower.
      expect(m.config.preprocess).toMatchObject({ size: { shortestEdge: 32 }, cropSize: { height: 32, width: 32 }, imageMean: [0.48145466, 0.4578275, 0.40821073] });
      await m.dispose();
    });

    it('a config that disagrees with the weights is refused', async () => {
      const bad = { ...await tinyVision(), patch_size: 16 };
      await expect(loadClipVision(`${FIXTURES}clip-tiny`, { configJson: { vision_config: bad } })).rejects.toThrow(/patch_size is 16 but the weights have patch_embedding 32x3x8x8/);
      const deep = { ...await tinyVision(), num_hidden_layers: 4 };
      await expect(loadClipVision(`${FIXTURES}clip-tiny`, { configJson: { vision_config: deep } })).rejects.toThrow(/hold 3 encoder layers, 4 are needed/);
    });
  });
});
