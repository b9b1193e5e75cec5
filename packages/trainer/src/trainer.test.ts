import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSession, exportOnnx, memoryWeight, openSafetensors, openWeights, type Feeds, type HostTensor, type WeightRef } from '@mobillama/core';
import { loadDecoder } from '@mobillama/decoder';
import { loadClipVision } from '@mobillama/vision';
import { TRAIN_IO, collate } from './collate.js';
import { resolveConfig, type TrainConfigInput } from './config.js';
import { LlavaDataset } from './dataset.js';
import { buildTrainGraph, type TrainModelParts } from './graph.js';
import { loadSample } from './loader.js';
import { loadTrainModel, materializeParams } from './model.js';
import { materialize } from './params.js';
import { Rng } from './rng.js';
import { FIXTURE, VISION } from './test-fixtures.js';
import { train } from './trainer.js';

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'trainer-'));
  dirs.push(d);
  return d;
}
const quiet = { progress: { write: () => true } };
const base = (output: string): TrainConfigInput => ({
  stage: 'pretrain', template: 'vicuna_v1', vision: VISION, decoder: join(FIXTURE, 'decoder'), projector: join(FIXTURE, 'projector.safetensors'),
  data: join(FIXTURE, 'data.json'), imageFolder: join(FIXTURE, 'images'), output, threads: 2, worker: false, shuffle: false,
  lrScheduler: 'constant', warmupRatio: 0, maxGradNorm: 0,
});

async function tensors(path: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(path);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

function maxDiff(a: HostTensor, b: HostTensor): number {
  const x = a.data as Float32Array, y = b.data as Float32Array;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

describe('train()', () => {
  it('gradient accumulation averages over all supervised tokens: batch 2 = 2 micro-batches of 1', async () => {
    const a = await tmp(), b = await tmp();
    const ra = await train({ ...base(a), batchSize: 2, maxSteps: 1 }, quiet);
    const rb = await train({ ...base(b), batchSize: 1, gradientAccumulationSteps: 2, maxSteps: 1 }, quiet);
    expect(rb.records[0].loss).toBeCloseTo(ra.records[0].loss, 6);
    expect(rb.records[0].grad_norm).toBeCloseTo(ra.records[0].grad_norm, 6);
    const pa = await tensors(join(a, 'mm_projector.safetensors')), pb = await tensors(join(b, 'mm_projector.safetensors'));
    for (const k of Object.keys(pa)) expect(maxDiff(pa[k], pb[k]), k).toBeLessThan(1e-6);
  });

  it('independent turns: one step on packed conversations = one step on their rounds as separate samples (loss, gradient, weights)', async () => {
    type Turn = { from: string; value: string };
    type Entry = { id: string; image?: string; conversations: Turn[] };
    const data = JSON.parse(await readFile(join(FIXTURE, 'data.json'), 'utf8')) as Entry[];
    data.push({ id: 'txt', conversations: [{ from: 'human', value: 'Hi?' }, { from: 'gpt', value: 'Hello.' }, { from: 'human', value: 'Name?' }, { from: 'gpt', value: 'Tiny.' }] });
    const rounds = data.flatMap((e) => Array.from({ length: e.conversations.length / 2 }, (_, j): Entry => {
      const q = e.conversations[2 * j].value.replace('<image>', '').trim();
      return { ...e, id: `${e.id}-${j}`, conversations: [{ from: 'human', value: e.image ? `<image>\n${q}` : q }, e.conversations[2 * j + 1]] };
    }));
    const dir = await tmp();
    await writeFile(join(dir, 'packed.json'), JSON.stringify(data));
    await writeFile(join(dir, 'rounds.json'), JSON.stringify(rounds));
    const a = join(dir, 'a'), b = join(dir, 'b');
    const ra = await train({ ...base(a), stage: 'finetune', learningRate: 1e-2, data: join(dir, 'packed.json'), independentTurns: true, batchSize: data.length, maxSteps: 1 }, quiet);
    const rb = await train({ ...base(b), stage: 'finetune', learningRate: 1e-2, data: join(dir, 'rounds.json'), batchSize: rounds.length, maxSteps: 1 }, quiet);
    expect(rounds).toHaveLength(5);
    expect(ra.records[0].loss).toBeCloseTo(rb.records[0].loss, 5);
    expect(ra.records[0].grad_norm).toBeCloseTo(rb.records[0].grad_norm, 4);
    // Adam's first step moves each weight by ~lr·g/(|g| + ε): where g is ~1e-8, float rounding
    // of the gradient shows as a small fraction of lr (1e-2) — hence 1e-4, not 1e-6.
    for (const f of ['mm_projector.safetensors', join('decoder', 'model.safetensors')]) {
      const pa = await tensors(join(a, f)), pb = await tensors(join(b, f));
      for (const k of Object.keys(pa)) expect(maxDiff(pa[k], pb[k]), `${f} ${k}`).toBeLessThan(1e-4);
    }
    // Without the segment mask the rounds would see each other: the loss differs.
    const rc = await train({ ...base(join(dir, 'c')), stage: 'finetune', data: join(dir, 'packed.json'), batchSize: data.length, maxSteps: 1 }, quiet);
    expect(Math.abs(rc.records[0].loss - rb.records[0].loss)).toBeGreaterThan(1e-3);
  });

  it('resumes a checkpoint written before --independent-turns existed as one without it, and refuses to switch it on', async () => {
    const out = await tmp();
    await train({ ...base(out), maxSteps: 2, saveSteps: 1 }, quiet);
    await rm(join(out, 'checkpoint-2'), { recursive: true }); // as if stopped after step 1
    const stateFile = join(out, 'checkpoint-1', 'trainer_state.json');
    const state = JSON.parse(await readFile(stateFile, 'utf8')) as { fingerprint: Record<string, unknown> };
    expect(state.fingerprint.independent_turns).toBe(false);
    delete state.fingerprint.independent_turns;
    await writeFile(stateFile, JSON.stringify(state));
    await expect(train({ ...base(out), maxSteps: 2, resume: true, independentTurns: true }, quiet)).rejects.toThrow(/independent_turns was false/);
    const r = await train({ ...base(out), maxSteps: 2, resume: true }, quiet);
    expect(r.resumedFrom).toBe(join(out, 'checkpoint-1'));
    expect(r.records.map((x) => x.step)).toEqual([1, 2]);
  });

  it('shouldStop ends the run after the step it says, with the final checkpoint and model files of that step', async () => {
    const out = await tmp();
    const seen: number[] = [];
    const r = await train({ ...base(out), batchSize: 1, maxSteps: 5, learningRate: 1e-3 }, {
      ...quiet, shouldStop: (rec, records) => { seen.push(records.length); return rec.step === 2; },
    });
    expect(seen).toEqual([1, 2]);
    expect([r.steps, r.totalSteps]).toEqual([2, 5]);
    expect(r.records.map((x) => x.step)).toEqual([1, 2]);
    const files = await readdir(out);
    expect(files.filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-2']);
    expect(files).toContain('mm_projector.safetensors');
    // The model files are the weights after step 2: the same as a run of max_steps 2.
    const two = await tmp();
    await train({ ...base(two), batchSize: 1, maxSteps: 2, learningRate: 1e-3 }, quiet);
    const a = await tensors(join(out, 'mm_projector.safetensors')), b = await tensors(join(two, 'mm_projector.safetensors'));
    for (const k of Object.keys(a)) expect(maxDiff(a[k], b[k]), k).toBe(0);
  });

  it('finetune with --tune-vision on text-only samples writes a loadable HF decoder and a whole vision tower', async () => {
    const out = await tmp();
    const r = await train({ ...base(out), stage: 'finetune', tuneVision: true, data: join(FIXTURE, 'text.json'), maxSteps: 2, learningRate: 1e-3 }, quiet);
    expect(r.records.map((x) => x.step)).toEqual([1, 2]);
    expect(r.records[1].loss).toBeLessThan(r.records[0].loss); // the same text sample twice
    const dec = await loadDecoder(join(out, 'decoder'));
    expect(dec.config.ffnOfLayer).toEqual([0, 0]); // the shared FFN stays shared (stored once)
    const names = dec.source.names();
    expect(names).toContain('lm_head.weight');
    expect(names.filter((n) => n.includes('.mlp.'))).toEqual(expect.arrayContaining(['model.layers.0.mlp.gate_proj.weight']));
    expect(names.some((n) => n.startsWith('model.layers.1.mlp.'))).toBe(false);
    // The exported embedding is the trained one (the image path did not run: text-only data).
    const orig = await openWeights(join(FIXTURE, 'decoder'));
    const e0 = await orig.read('model.embed_tokens.weight'), e1 = await dec.source.read('model.embed_tokens.weight');
    expect(maxDiff(e0, e1)).toBeGreaterThan(0);
    await orig.close();
    await dec.source.close();
    const v = await loadClipVision(join(out, 'vision_tower'));
    expect(v.config.numLayers).toBe(3);
    expect(v.source.names()).toContain('vision_model.post_layernorm.weight'); // untouched parts copied
    await v.source.close();
    expect((await readdir(out)).sort()).toEqual(expect.arrayContaining(['checkpoint-2', 'decoder', 'log.jsonl', 'loss.svg', 'mm_projector.safetensors', 'vision_tower']));
  });

  it('--vision-learning-rate steps the vision tower with its own lr (first Adam step moves each weight by ~lr)', async () => {
    const out = await tmp();
    await train({ ...base(out), stage: 'finetune', tuneVision: true, maxSteps: 1, learningRate: 1e-3, visionLearningRate: 1e-4, saveSteps: 0 }, quiet);
    const largestChange = async (before: string, after: string) => {
      const a = await tensors(before), b = await tensors(after);
      let d = 0;
      for (const n of Object.keys(b)) if (a[n]) d = Math.max(d, maxDiff(a[n], b[n]));
      return d;
    };
    const vision = await largestChange(join(VISION, 'model.safetensors'), join(out, 'vision_tower', 'model.safetensors'));
    const decoder = await largestChange(join(FIXTURE, 'decoder', 'model.safetensors'), join(out, 'decoder', 'model.safetensors'));
    // Adam's first step is lr·m/√v ≈ lr·sign(g) per element.
    expect(vision).toBeGreaterThan(0.9e-4);
    expect(vision).toBeLessThan(1.01e-4);
    expect(decoder).toBeGreaterThan(0.9e-3);
    expect(decoder).toBeLessThan(1.01e-3);
  });
});

describe('LoRA', () => {
  it('the adapted graph equals the base model with W + (alpha/r)·B·A merged, shared FFN adapter in every layer', async () => {
    const cfg = resolveConfig({ ...base(await tmp()), stage: 'lora', loraR: 4, loraAlpha: 8 });
    const model = await loadTrainModel(cfg);
    try {
      const rng = Rng.seeded(1, 'test');
      for (const [name, p] of model.fresh) if (name.endsWith('lora_B.weight')) rng.uniform(p.data, 0.3);
      const ds = await LlavaDataset.open(cfg.data);
      const opts = { tokenizer: model.tokenizer, template: cfg.template, modelMaxLength: 2048, imageFolder: cfg.imageFolder, preprocess: model.vision.config.preprocess, aspect: cfg.imageAspectRatio };
      const mb = collate([await loadSample(ds, 0, opts), await loadSample(ds, 1, opts)], {
        imageTokens: model.imageTokens, maxLength: 2048, pixelShape: [3, 32, 32],
      });
      await ds.close();
      const nll = async (parts: TrainModelParts, lora: boolean): Promise<number> => {
        const tg = buildTrainGraph(parts, { trainable: model.trainable, lora: lora ? model.lora! : undefined, backward: false });
        const params = await materializeParams(model, tg.params);
        const feeds: Feeds = { ...mb.feeds };
        for (const p of params) feeds[p.name] = { dtype: 'float32', dims: p.shape, data: p.data };
        const s = await createSession(exportOnnx(tg.graph), { threads: 2 });
        const out = await s.run(feeds);
        await s.release();
        return (out[TRAIN_IO.nll].data as Float32Array)[0];
      };
      const withLora = await nll(model.parts, true);
      const scale = cfg.loraAlpha / cfg.loraR;
      const merge = async (ref: WeightRef): Promise<WeightRef> => {
        const w = await materialize(ref);
        const A = model.fresh.get(ref.name.replace(/weight$/, 'lora_A.weight'))!.data, B = model.fresh.get(ref.name.replace(/weight$/, 'lora_B.weight'))!.data;
        const [out, inF] = ref.shape, r = cfg.loraR;
        for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) {
          let s = 0;
          for (let k = 0; k < r; k++) s += B[o * r + k] * A[k * inF + i];
          w[o * inF + i] += scale * s;
        }
        return memoryWeight(ref.name, { dtype: 'F32', shape: ref.shape, data: w });
      };
      const w = model.parts.decoder.weights;
      const merged: TrainModelParts = {
        ...model.parts,
        decoder: {
          ...model.parts.decoder,
          weights: {
            ...w,
            layers: await Promise.all(w.layers.map(async (l) => ({ ...l, attn: { q: await merge(l.attn.q), k: await merge(l.attn.k), v: await merge(l.attn.v), o: await merge(l.attn.o) } }))),
            ffns: await Promise.all(w.ffns.map(async (f) => ({ gate: await merge(f.gate), up: await merge(f.up), down: await merge(f.down) }))),
          },
        },
      };
      const plain = await nll(merged, false);
      const baseLoss = await nll(model.parts, false);
      expect(Math.abs(withLora - baseLoss)).toBeGreaterThan(1e-2); // the adapters do something
      expect(Math.abs(withLora - plain) / Math.abs(plain)).toBeLessThan(1e-5);
    } finally {
      await model.close();
    }
  });

  it('saves PEFT-named adapters: q/k/v/o per layer, the shared FFN once', async () => {
    const out = await tmp();
    await train({ ...base(out), stage: 'lora', loraR: 4, loraAlpha: 8, maxSteps: 1 }, quiet);
    const t = await tensors(join(out, 'adapter_model.safetensors'));
    const keys = Object.keys(t).sort();
    expect(keys).toHaveLength(2 * (2 * 4 + 3));
    expect(keys).toContain('base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight');
    expect(keys).toContain('base_model.model.model.layers.0.mlp.down_proj.lora_A.weight');
    expect(keys.some((k) => k.startsWith('base_model.model.model.layers.1.mlp'))).toBe(false);
    expect(t['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape).toEqual([4, 48]);
    expect(t['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight'].shape).toEqual([48, 4]);
  });
});
