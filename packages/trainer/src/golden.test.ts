import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors, type HostTensor } from '@mobillama/core';
import { loadTokenizer } from '@mobillama/decoder';
import { LlavaDataset } from './dataset.js';
import { tokenizeSample, type TrainTemplate } from './masking.js';
import { FIXTURE, VISION } from './test-fixtures.js';
import { train } from './trainer.js';

// One training step against PyTorch (scripts/reference/make_trainer_fixtures.py): the same
// tiny MobiLlama-V, the same two-sample vicuna_v1 batch, torch.optim.AdamW with HF's
// parameter groups. Our run goes through the real path: data file → masking → collate →
// ORT forward + generated backward → JS AdamW → mm_projector.safetensors.

const KEYS = ['model.mm_projector.0.weight', 'model.mm_projector.0.bias', 'model.mm_projector.2.weight', 'model.mm_projector.2.bias'];

async function readAll(path: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(path);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < b.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('one training step against PyTorch', () => {
  it.each([
    ['data.json', 'vicuna_v1'], ['text.json', 'vicuna_v1'], ['pretrain.json', 'plain'],
  ] as const)('%s: ids and labels are exactly LLaVA preprocess_v1 / preprocess_plain', async (file, template: TrainTemplate) => {
    const golden = await readAll(join(FIXTURE, 'golden.safetensors'));
    const tok = await loadTokenizer(join(FIXTURE, 'decoder'));
    const ds = await LlavaDataset.open(join(FIXTURE, file));
    try {
      for (let i = 0; i < ds.length; i++) {
        const e = await ds.get(i);
        const s = tokenizeSample(e, tok, template, { modelMaxLength: 2048 });
        expect(s.ids).toEqual(Array.from(golden[`ids.${e.id}`].data as BigInt64Array, Number));
        expect(s.labels).toEqual(Array.from(golden[`labels.${e.id}`].data as BigInt64Array, Number));
      }
    } finally {
      await ds.close();
    }
  });

  it.each([[0], [0.1]])('weight decay %s: loss, grad norm and the projector after one AdamW step match torch', async (wd) => {
    const golden = await readAll(join(FIXTURE, 'golden.safetensors'));
    const out = await mkdtemp(join(tmpdir(), 'trainer-golden-'));
    dirs.push(out);
    const r = await train({
      stage: 'pretrain', template: 'vicuna_v1', vision: VISION, decoder: join(FIXTURE, 'decoder'), projector: join(FIXTURE, 'projector.safetensors'),
      data: join(FIXTURE, 'data.json'), imageFolder: join(FIXTURE, 'images'), output: out,
      learningRate: 1e-3, lrScheduler: 'constant', warmupRatio: 0, maxGradNorm: 0, shuffle: false, weightDecay: wd,
      batchSize: 2, maxSteps: 1, threads: 2, worker: wd > 0, // both session kinds
    }, { progress: { write: () => true } });
    expect(r.records).toHaveLength(1);
    const rec = r.records[0];
    const loss = (golden.loss.data as Float64Array)[0];
    expect(Math.abs(rec.loss - loss) / loss).toBeLessThan(1e-5);
    expect(Math.abs(rec.grad_norm - (golden.grad_norm.data as Float64Array)[0])).toBeLessThan(1e-5);
    expect(rec.lr).toBe(1e-3);
    const after = await readAll(join(out, 'mm_projector.safetensors'));
    for (const k of KEYS) {
      const want = golden[`after_wd${wd}.${k}`].data as Float64Array;
      expect(after[k].shape).toEqual(golden[`after_wd${wd}.${k}`].shape);
      const d = maxAbsDiff(after[k].data as Float32Array, want);
      process.stdout.write(`golden wd ${wd} ${k}: max |ours - torch| = ${d.toExponential(2)}\n`);
      expect(d, k).toBeLessThan(1e-6); // measured ≤ 4.2e-8
    }
    process.stdout.write(`golden wd ${wd}: loss ${rec.loss} vs ${loss}, grad_norm ${rec.grad_norm} vs ${(golden.grad_norm.data as Float64Array)[0]}\n`);
  });
});
