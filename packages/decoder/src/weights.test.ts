import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openWeights, writeSafetensors, type HostTensor } from '@mobillama/core';
import { writeRandomDecoderCheckpoint } from './testing/random-checkpoint.js';
import { loadDecoder } from './weights.js';
import { DecoderModel } from './model.js';

const SPEC = {
  hidden: 32, layers: 4, heads: 2, kvHeads: 2, intermediate: 48, vocab: 64,
  ffnLayout: 'distinct', format: 'safetensors', dtype: 'F32', seed: 3,
} as const;

/** A 4-layer checkpoint whose layers 0-1 and 2-3 hold identical (copied) FFNs: "hybrid" sharing. */
async function hybridCheckpoint(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hybrid-'));
  await writeRandomDecoderCheckpoint(dir, SPEC);
  const src = await openWeights(dir);
  const tensors: Record<string, HostTensor> = {};
  for (const n of src.names()) tensors[n] = await src.read(n);
  await src.close();
  for (const [from, to] of [[0, 1], [2, 3]]) {
    for (const m of ['gate_proj', 'up_proj', 'down_proj']) {
      const t = tensors[`model.layers.${from}.mlp.${m}.weight`];
      tensors[`model.layers.${to}.mlp.${m}.weight`] = { ...t, data: t.data.slice() };
    }
  }
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return dir;
}

describe('FFN sharing', () => {
  it('detects group ("hybrid") sharing from identical copies', async () => {
    const dir = await hybridCheckpoint();
    const d = await loadDecoder(dir);
    expect(d.config.ffnOfLayer).toEqual([0, 0, 1, 1]);
    expect(d.weights.ffns).toHaveLength(2);
    await d.source.close();
  });

  it('a config ffn_groups field sets the sharing explicitly, and the graph holds one FFN per group', async () => {
    const dir = await hybridCheckpoint();
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...cfg, ffn_groups: [0, 0, 0, 0] }));
    const d = await loadDecoder(dir);
    expect(d.config.ffnOfLayer).toEqual([0, 0, 0, 0]);
    expect(d.weights.ffns).toHaveLength(1);
    await d.source.close();
  });

  it('plain LLaMA keeps one FFN per layer; a shared checkpoint gives the same logits as its copies', async () => {
    const distinct = await mkdtemp(join(tmpdir(), 'distinct-'));
    await writeRandomDecoderCheckpoint(distinct, SPEC);
    expect((await loadDecoder(distinct)).config.ffnOfLayer).toEqual([0, 1, 2, 3]);
    const copies = await mkdtemp(join(tmpdir(), 'copies-'));
    const once = await mkdtemp(join(tmpdir(), 'once-'));
    await writeRandomDecoderCheckpoint(copies, { ...SPEC, ffnLayout: 'per-layer-copies', format: 'bin' });
    await writeRandomDecoderCheckpoint(once, { ...SPEC, ffnLayout: 'once' });
    const logits: Float32Array[] = [];
    for (const dir of [copies, once]) {
      const m = await DecoderModel.load(dir, { threads: 1 });
      expect(m.config.ffnOfLayer).toEqual([0, 0, 0, 0]);
      logits.push((await m.forward({ embeds: m.embed([1, 5, 9]), batch: 1, seq: 3, positionIds: [[0, 1, 2]], attentionMask: [[1, 1, 1]] })).logits);
      await m.dispose();
    }
    expect(Array.from(logits[1])).toEqual(Array.from(logits[0]));
  });

  it('config errors name the file and the problem', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bad-'));
    await writeRandomDecoderCheckpoint(dir, SPEC);
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...cfg, num_attention_heads: 3 }));
    await expect(loadDecoder(dir)).rejects.toThrow(/config\.json: hidden_size 32 is not divisible by num_attention_heads 3/);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...cfg, head_dim: 4 }));
    await expect(loadDecoder(dir)).rejects.toThrow(/config\.json: q_proj has 32 rows, expected heads×head_dim = 8/);
    await writeFile(join(dir, 'config.json'), '{nope');
    await expect(loadDecoder(dir)).rejects.toThrow(/config\.json: not valid JSON/);
  });
});
