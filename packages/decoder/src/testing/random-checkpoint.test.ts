import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openWeights, toFloat32 } from '@mobillama/core';
import { DecoderModel } from '../model.js';
import { writeRandomDecoderCheckpoint, type FfnLayout, type RandomDecoderSpec } from './random-checkpoint.js';

const tmp = mkdtempSync(join(tmpdir(), 'random-ckpt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Tiny MobiLlama: MHA weights (kv 4) while config.json claims 2 KV heads, as MobiLlama-05B's does.
const tiny = (ffnLayout: FfnLayout, extra: Partial<RandomDecoderSpec> = {}): RandomDecoderSpec => ({
  hidden: 64, layers: 3, heads: 4, kvHeads: 4, intermediate: 96, vocab: 128, ffnLayout, format: 'bin', dtype: 'F32',
  seed: 7, configKvHeadsTrap: 2, maxPositions: 64, ...extra,
});

let n = 0;
async function write(spec: RandomDecoderSpec): Promise<string> {
  const dir = join(tmp, `ckpt${n++}`);
  await writeRandomDecoderCheckpoint(dir, spec);
  return dir;
}

/** Prefill logits of a fixed prompt at every position. */
async function logits(dir: string): Promise<{ logits: Float32Array; ffnOfLayer: readonly number[]; kv: number }> {
  const model = await DecoderModel.load(dir, { threads: 1 });
  try {
    const ids = [1, 5, 9, 77, 3, 100];
    const out = await model.forward({
      embeds: model.embed(ids), batch: 1, seq: ids.length, positionIds: [ids.map((_, i) => i)],
      attentionMask: [ids.map(() => 1)], logitsIndex: ids.map((_, i) => i),
    });
    return { logits: out.logits, ffnOfLayer: model.config.ffnOfLayer, kv: model.config.numKvHeads };
  } finally {
    await model.dispose();
  }
}

describe('writeRandomDecoderCheckpoint', () => {
  const expected: Record<FfnLayout, number[]> = {
    'per-layer-copies': [0, 0, 0], 'shared-storage': [0, 0, 0], once: [0, 0, 0], distinct: [0, 1, 2],
  };
  const results = new Map<FfnLayout, Float32Array>();
  for (const layout of Object.keys(expected) as FfnLayout[]) {
    it(`${layout}: DecoderModel.load accepts it, detects the sharing, takes KV heads from the weights`, async () => {
      const dir = await write(tiny(layout));
      expect(readdirSync(dir).sort()).toEqual(['config.json', 'pytorch_model.bin']);
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg.num_key_value_heads).toBe(2); // the trap
      const r = await logits(dir);
      expect(r.ffnOfLayer).toEqual(expected[layout]);
      expect(r.kv).toBe(4);
      expect(r.logits.every(Number.isFinite)).toBe(true);
      results.set(layout, r.logits);
    });
  }

  it('one seed is one model whichever way the shared FFN is stored; distinct FFNs differ', () => {
    const ref = results.get('per-layer-copies')!;
    expect(results.get('shared-storage')).toEqual(ref);
    expect(results.get('once')).toEqual(ref);
    expect(results.get('distinct')).not.toEqual(ref);
  });

  it('stores per-layer copies separately and shared storage once', async () => {
    const sizes: Record<string, number> = {};
    for (const layout of ['per-layer-copies', 'shared-storage', 'once'] as const) {
      const dir = await write(tiny(layout));
      const src = await openWeights(dir);
      try {
        const key = (i: number) => src.info(`model.layers.${i}.mlp.up_proj.weight`).storageKey;
        if (layout === 'per-layer-copies') {
          expect(key(1)).not.toBe(key(0));
          expect(toFloat32(await src.read('model.layers.2.mlp.up_proj.weight')).data)
            .toEqual(toFloat32(await src.read('model.layers.0.mlp.up_proj.weight')).data);
        } else if (layout === 'shared-storage') {
          expect(key(1)).toBe(key(0));
          expect(key(2)).toBe(key(0));
        } else {
          expect(src.has('model.layers.1.mlp.up_proj.weight')).toBe(false);
        }
      } finally {
        await src.close();
      }
      sizes[layout] = readFileSync(join(dir, 'pytorch_model.bin')).length;
    }
    const ffnBytes = 3 * 64 * 96 * 4;
    expect(sizes['per-layer-copies'] - sizes['shared-storage']).toBeGreaterThanOrEqual(2 * ffnBytes);
    expect(Math.abs(sizes['shared-storage'] - sizes.once)).toBeLessThan(ffnBytes / 4);
  });

  it('sharded .bin with an index, and sharded BF16 safetensors, load as the same model', async () => {
    const binDir = await write(tiny('per-layer-copies', { shards: 2 }));
    expect(readdirSync(binDir).sort()).toEqual([
      'config.json', 'pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin', 'pytorch_model.bin.index.json',
    ]);
    const index = JSON.parse(readFileSync(join(binDir, 'pytorch_model.bin.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const files = new Set(Object.values(index.weight_map));
    expect(files.size).toBe(2);
    expect(index.weight_map['model.embed_tokens.weight']).toBe('pytorch_model-00001-of-00002.bin');
    expect(index.weight_map['lm_head.weight']).toBe('pytorch_model-00002-of-00002.bin');
    expect((await logits(binDir)).logits).toEqual(results.get('per-layer-copies'));

    const stDir = await write(tiny('once', { format: 'safetensors', dtype: 'BF16', shards: 3 }));
    expect(readdirSync(stDir).filter((f) => f.endsWith('.safetensors')).length).toBe(3);
    const st = await logits(stDir);
    expect(st.ffnOfLayer).toEqual([0, 0, 0]);
    // BF16 rounding of the same values: close to the fp32 model, not equal.
    const ref = results.get('per-layer-copies')!;
    let maxDiff = 0, maxRef = 0;
    ref.forEach((v, i) => { maxDiff = Math.max(maxDiff, Math.abs(v - st.logits[i])); maxRef = Math.max(maxRef, Math.abs(v)); });
    expect(maxDiff / maxRef).toBeLessThan(0.05);
    expect(maxDiff).toBeGreaterThan(0);
  });

  it('is deterministic per seed, with weight std ~0.02 and norms ~1', async () => {
    const a = await write(tiny('distinct', { format: 'safetensors' }));
    const b = await write(tiny('distinct', { format: 'safetensors' }));
    const c = await write(tiny('distinct', { format: 'safetensors', seed: 8 }));
    const bytes = (d: string) => readFileSync(join(d, 'model.safetensors'));
    expect(bytes(a).equals(bytes(b))).toBe(true);
    expect(bytes(a).equals(bytes(c))).toBe(false);
    const src = await openWeights(a);
    try {
      const w = toFloat32(await src.read('model.layers.1.self_attn.q_proj.weight')).data;
      const mean = w.reduce((s, v) => s + v, 0) / w.length;
      const std = Math.sqrt(w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length);
      expect(Math.abs(mean)).toBeLessThan(0.002);
      expect(std).toBeGreaterThan(0.019);
      expect(std).toBeLessThan(0.021);
      const norm = toFloat32(await src.read('model.norm.weight')).data;
      expect(Math.min(...Array.from(norm))).toBeGreaterThan(0.94);
      expect(Math.max(...Array.from(norm))).toBeLessThan(1.06);
    } finally {
      await src.close();
    }
  });

  it('refuses shared storage in safetensors, bad dims, and folders with other files', async () => {
    await expect(write(tiny('shared-storage', { format: 'safetensors' }))).rejects.toThrow(/safetensors cannot store/);
    await expect(write(tiny('once', { heads: 5 }))).rejects.toThrow(/not a multiple of heads/);
    const dir = await write(tiny('once'));
    await expect(writeRandomDecoderCheckpoint(dir, tiny('once', { format: 'safetensors' }))).rejects.toThrow(/already holds other files/);
    await writeRandomDecoderCheckpoint(dir, tiny('once', { seed: 9 })); // same files: rewritten in place
  });
});
