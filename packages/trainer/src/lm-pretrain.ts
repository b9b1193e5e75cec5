/**
 * Plain causal-LM pretraining of a decoder on text (no image, no template): every token
 * after BOS carries loss, each document ends with EOS. `train()` cannot do this — its
 * templates supervise only a caption (plain) or the assistant turns (vicuna_v1) — so this
 * is the smallest loop that can: the decoder's own graph (`decoderInto`, `lmHeadInto`,
 * primitive ops), `tokenNll` + generated backward, and the trainer's AdamW, schedule and
 * clipping. The result is a decoder folder (config, tokenizer files, F32 safetensors with a
 * shared FFN stored once) that `train()` takes as `--decoder`.
 */
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  GraphBuilder, addBackward, createSession, exportOnnx, memoryWeight, tokenNll, writeFileAtomic, writeSafetensors,
  type Feeds, type HostTensor, type WeightRef,
} from '@mobillama/core';
import { decoderInto, findDecoderPrefix, lmHeadInto, loadDecoder, loadTokenizer } from '@mobillama/decoder';
import { MASKED } from './collate.js';
import { adamwStep, clipCoefficient, globalGradNorm, newAdamWState } from './optimizer.js';
import { decays, paramFrom, type Param } from './params.js';
import { Rng } from './rng.js';
import { lrAt, warmupStepsFor, type LrSchedulerKind } from './schedule.js';

export interface LmPretrainOptions {
  /** Decoder folder to start from. */
  readonly decoder: string;
  /** The documents; each is tokenized as BOS + text + EOS. */
  readonly texts: readonly string[];
  /** Folder for the trained decoder (replaced atomically). */
  readonly output: string;
  readonly steps: number;
  /** Documents per step. */
  readonly batchSize: number;
  readonly learningRate: number;
  readonly lrScheduler?: LrSchedulerKind;
  readonly warmupRatio?: number;
  readonly weightDecay?: number;
  readonly maxGradNorm?: number;
  /** Documents are cut to this many tokens (default: the decoder's max positions). */
  readonly maxLength?: number;
  readonly seed: number;
  readonly threads?: number;
  readonly onStep?: (r: { step: number; loss: number; lr: number; gradNorm: number; seconds: number }) => void;
}

export interface LmPretrainResult {
  readonly losses: readonly number[];
  readonly seconds: number;
}

const IO = { ids: 'input_ids', positions: 'position_ids', padBias: 'pad_bias', targetIndex: 'target_index', targetIds: 'target_ids' } as const;
const SIDE_FILES = ['generation_config.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'];

export async function pretrainLm(o: LmPretrainOptions): Promise<LmPretrainResult> {
  const t0 = performance.now();
  const dec = await loadDecoder(o.decoder);
  const losses: number[] = [];
  let params: Param[];
  const prefix = findDecoderPrefix(dec.source.names());
  try {
    const tokenizer = await loadTokenizer(o.decoder);
    const { config, weights } = dec;
    if (config.tieWordEmbeddings) throw new Error('pretrainLm: tied embeddings are not supported');
    const embed = memoryWeight(`${prefix}model.embed_tokens.weight`, weights.embedTokens);
    const refs: WeightRef[] = [
      embed, weights.finalNorm, weights.lmHead,
      ...weights.layers.flatMap((l) => [l.inputNorm, l.attn.q, l.attn.k, l.attn.v, l.attn.o, l.postAttentionNorm]),
      ...weights.ffns.flatMap((f) => [f.gate, f.up, f.down]),
    ];
    const trainable = new Set(refs.map((r) => r.name));
    const H = config.hiddenSize;
    const g = new GraphBuilder('lm_pretrain', trainable);
    const ids = g.input(IO.ids, 'int64', ['batch', 'seq']);
    const positionIds = g.input(IO.positions, 'int64', ['batch', 'seq']);
    const padBias = g.input(IO.padBias, 'float32', ['batch', 1, 1, 'seq']);
    const targetIndex = g.input(IO.targetIndex, 'int64', ['targets']);
    const targetIds = g.input(IO.targetIds, 'int64', ['targets']);
    const embeds = g.gather(g.param(embed), ids, 0); // [B, T, H]
    // Causal + key padding (right padding, positions 0..T-1 on every row), as the trainer's graph.
    const bias = g.where(g.greater(g.unsqueeze(positionIds, [1, 2]), g.unsqueeze(positionIds, [1, 3])), g.scalar(MASKED), padBias);
    const { hidden } = decoderInto(g, config, weights, { embeds, positionIds, positionIds2: positionIds, bias }); // text: both rotary ids equal
    const rows = g.gather(g.reshape(hidden, [-1, H]), targetIndex, 0);
    const { sum } = tokenNll(g, g.unsqueeze(lmHeadInto(g, weights, rows), [0]), g.unsqueeze(targetIds, [0]));
    const inputs = g.inputs.filter((v) => trainable.has(v.name));
    const grads = addBackward(g, sum, inputs);
    g.output(sum, 'nll_sum');
    for (const p of inputs) g.output(grads.get(p)!, `grad.${p.name}`);
    const byName = new Map(refs.map((r) => [r.name, r]));
    params = await Promise.all(inputs.map(async (v) => ({ ...(await paramFrom(byName.get(v.name)!)), decay: decays(v.name) })));

    const maxLen = Math.min(o.maxLength ?? config.maxPositions, config.maxPositions);
    const docs = o.texts.map((t) => {
      const x = tokenizer.encode(t, { addBos: true });
      if (tokenizer.eosId !== null) x.push(tokenizer.eosId);
      return x.slice(0, maxLen);
    });
    const perEpoch = Math.ceil(docs.length / o.batchSize);
    const schedule = {
      kind: o.lrScheduler ?? 'cosine', baseLr: o.learningRate, totalSteps: o.steps,
      warmupSteps: warmupStepsFor(o.steps, 0, o.warmupRatio ?? 0.03),
    };
    const opt = newAdamWState(params);
    const session = await createSession(exportOnnx(g.build()), { threads: o.threads });
    try {
      let perm: Uint32Array | null = null;
      for (let s = 0; s < o.steps; s++) {
        const ts = performance.now();
        const epoch = Math.floor(s / perEpoch), k = s % perEpoch;
        if (k === 0 || !perm) {
          perm = Uint32Array.from({ length: docs.length }, (_, i) => i);
          Rng.seeded(o.seed, `lm-order/${epoch}`).shuffle(perm);
        }
        const batch = Array.from(perm.subarray(k * o.batchSize, Math.min(docs.length, (k + 1) * o.batchSize)), (i) => docs[i]);
        const feeds = lmFeeds(batch);
        for (const p of params) feeds[p.name] = { dtype: 'float32', dims: p.shape, data: p.data };
        const out = await session.run(feeds);
        const targets = (feeds[IO.targetIds].dims as number[])[0];
        const nll = (out.nll_sum.data as Float32Array)[0];
        const gm = new Map(params.map((p) => [p.name, out[`grad.${p.name}`].data as Float32Array]));
        const scale = 1 / targets;
        const norm = globalGradNorm(gm, scale);
        if (!Number.isFinite(norm)) throw new Error(`LM pretraining step ${s + 1}: gradient norm ${norm}; lower the learning rate`);
        const lr = lrAt(s + 1, schedule);
        adamwStep(params, gm, opt, lr, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: o.weightDecay ?? 0 }, scale * clipCoefficient(norm, o.maxGradNorm ?? 1));
        losses.push(nll / targets);
        o.onStep?.({ step: s + 1, loss: nll / targets, lr, gradNorm: norm, seconds: (performance.now() - ts) / 1000 });
      }
    } finally {
      await session.release();
    }
  } finally {
    await dec.source.close();
  }
  // The decoder folder: HF names without the prefix, the shared FFN once (under its owner layer's names).
  const tmp = `${o.output}.partial`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const tensors: Record<string, HostTensor> = {};
  for (const p of params) tensors[p.name.slice(prefix.length)] = { dtype: 'F32', shape: p.shape, data: p.data };
  await writeSafetensors(join(tmp, 'model.safetensors'), tensors, { format: 'pt' });
  for (const f of SIDE_FILES) if (existsSync(join(o.decoder, f))) await copyFile(join(o.decoder, f), join(tmp, f));
  await copyFile(join(o.decoder, 'config.json'), join(tmp, 'config.json'));
  await writeFileAtomic(join(tmp, 'lm_pretrain.json'), `${JSON.stringify({ steps: o.steps, batch_size: o.batchSize, learning_rate: o.learningRate, documents: o.texts.length, seed: o.seed, final_loss: losses[losses.length - 1] ?? null }, null, 2)}\n`);
  await rm(o.output, { recursive: true, force: true });
  await rename(tmp, o.output);
  return { losses, seconds: (performance.now() - t0) / 1000 };
}

/** Right-padded rows with every next token (after BOS) as a target. */
function lmFeeds(batch: readonly (readonly number[])[]): Feeds {
  const B = batch.length, T = Math.max(...batch.map((d) => d.length));
  const ids = new BigInt64Array(B * T), pos = new BigInt64Array(B * T), pad = new Float32Array(B * T);
  const ti: bigint[] = [], tt: bigint[] = [];
  batch.forEach((d, b) => {
    for (let t = 0; t < T; t++) {
      const k = b * T + t;
      pos[k] = BigInt(t);
      if (t < d.length) ids[k] = BigInt(d[t]);
      else pad[k] = MASKED;
      if (t + 1 < d.length) {
        ti.push(BigInt(k));
        tt.push(BigInt(d[t + 1]));
      }
    }
  });
  return {
    [IO.ids]: { dtype: 'int64', dims: [B, T], data: ids },
    [IO.positions]: { dtype: 'int64', dims: [B, T], data: pos },
    [IO.padBias]: { dtype: 'float32', dims: [B, 1, 1, T], data: pad },
    [IO.targetIndex]: { dtype: 'int64', dims: [ti.length], data: BigInt64Array.from(ti) },
    [IO.targetIds]: { dtype: 'int64', dims: [tt.length], data: BigInt64Array.from(tt) },
  };
}
