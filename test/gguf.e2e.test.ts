/**
 * The GGUF export run in llama.cpp (node-llama-cpp's prebuilt binaries, CPU): the same
 * greedy tokens and next-token probabilities as our runtime on small random checkpoints
 * with the real 32000-token LLaMA vocabulary, and the same tokenization.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';
import { openWeights, writeSafetensors, type HostTensor } from '@mobillama/core';
import { DecoderModel, loadTokenizer, type Tokenizer } from '@mobillama/decoder';
import { exportDecoderToGguf, openGguf, unpermuteFromGgmlRope } from '@mobillama/decoder/gguf';
import { writeRandomDecoderCheckpoint, type RandomDecoderSpec } from '@mobillama/decoder/testing';
import { expectCleanFailure, runCli } from './cli-helpers.js';

const STEPS = 24;
const PROMPT = 'The quick brown fox jumps over the lazy dog.';
/**
 * The random checkpoints' weights have std 0.02, which leaves next-token logits nearly
 * flat (top-2 gaps ~0.01). Scaling lm_head by 16 spreads them so greedy choices are well
 * separated and a real mismatch cannot hide behind a near tie: the tests check that every
 * step's top-2 gap is at least MIN_GAP, ~50x the fp32 differences between the two runtimes.
 */
const LM_HEAD_SCALE = 16;
const MIN_GAP = 0.005;

let root: string;
let llama: Llama;
let tokenizer: Tokenizer;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'gguf-e2e-'));
  // build 'never' + skipDownload: only the prebuilt binaries from npm, never a download or a compile.
  llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
  tokenizer = await loadTokenizer(null);
});

afterAll(async () => {
  await llama?.dispose();
  await rm(root, { recursive: true, force: true });
});

/** A random checkpoint (safetensors, fp32) with lm_head scaled for well-separated logits. */
async function checkpoint(name: string, spec: Omit<RandomDecoderSpec, 'vocab' | 'format' | 'dtype'>): Promise<string> {
  const raw = join(root, `${name}-raw`), dir = join(root, name);
  await writeRandomDecoderCheckpoint(raw, { ...spec, vocab: 32000, format: 'safetensors', dtype: 'F32' });
  const src = await openWeights(raw);
  const tensors: Record<string, HostTensor> = {};
  try {
    for (const n of src.names()) tensors[n] = await src.read(n);
  } finally {
    await src.close();
  }
  const lm = tensors['lm_head.weight'].data as Float32Array;
  for (let i = 0; i < lm.length; i++) lm[i] *= LM_HEAD_SCALE;
  await mkdir(dir);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  await copyFile(join(raw, 'config.json'), join(dir, 'config.json'));
  await rm(raw, { recursive: true });
  return dir;
}

interface Greedy {
  readonly tokens: number[];
  /** Top-1 minus top-2 logit at each step. */
  readonly gaps: number[];
  /** Softmax of the first step's logits. */
  readonly firstProbs: Float64Array;
}

/** Greedy decoding with our runtime, one forward call per step, keeping the logits. */
async function oursGreedy(dir: string, prompt: readonly number[], steps: number): Promise<Greedy> {
  const model = await DecoderModel.load(dir, { threads: 2 });
  try {
    const V = model.config.vocabSize;
    let cache = model.emptyCache(1);
    let ids = [...prompt];
    const tokens: number[] = [], gaps: number[] = [];
    let firstProbs: Float64Array | undefined;
    for (let s = 0; s < steps; s++) {
      const P = cache.length, T = ids.length;
      const out = await model.forward({
        embeds: model.embed(ids), batch: 1, seq: T, past: cache,
        positionIds: [ids.map((_, i) => P + i)], attentionMask: [new Array<number>(P + T).fill(1)],
      });
      cache = out.cache;
      const l = out.logits;
      let best = 0;
      for (let j = 1; j < V; j++) if (l[j] > l[best]) best = j;
      let second = -Infinity;
      for (let j = 0; j < V; j++) if (j !== best && l[j] > second) second = l[j];
      if (!firstProbs) {
        firstProbs = new Float64Array(V);
        let z = 0;
        for (let j = 0; j < V; j++) z += (firstProbs[j] = Math.exp(l[j] - l[best]));
        for (let j = 0; j < V; j++) firstProbs[j] /= z;
      }
      tokens.push(best);
      gaps.push(l[best] - second);
      ids = [best];
    }
    return { tokens, gaps, firstProbs: firstProbs! };
  } finally {
    await model.dispose();
  }
}

interface LlamaRun {
  readonly tokens: number[];
  /** llama.cpp's next-token probabilities at each step, highest first. */
  readonly probs: Map<number, number>[];
}

/**
 * Greedy decoding in llama.cpp. With `force`, step i+1 continues from force[i] instead of
 * llama.cpp's own choice (teacher forcing), so every step is compared on the same context.
 */
async function llamaGreedy(model: LlamaModel, prompt: readonly number[], steps: number, force?: readonly number[]): Promise<LlamaRun> {
  // An f32 KV cache and no flash attention (llama.cpp's defaults are an f16 cache and, on
  // the CPU, flash attention in f16): f32 exports are then compared like for like. One
  // thread: ggml's spinning thread barriers crawl on a shared CI machine.
  const ctx = await model.createContext({
    contextSize: 128, threads: 1, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
  });
  try {
    const tokens: number[] = [], probs: Map<number, number>[] = [];
    // temperature 0 is greedy; no repeat penalty or other samplers are set.
    const gen = ctx.getSequence().evaluateWithMetadata(prompt as Token[], { probabilities: true }, { temperature: 0 });
    // A token passed to next() replaces the one llama.cpp chose.
    let r = await gen.next();
    while (!r.done) {
      tokens.push(r.value.token);
      probs.push(new Map([...r.value.probabilities].map(([t, p]) => [t as number, p])));
      if (tokens.length >= steps) break;
      r = await gen.next(force ? (force[tokens.length - 1] as Token) : undefined);
    }
    await gen.return();
    return { tokens, probs };
  } finally {
    await ctx.dispose();
  }
}

async function withLlamaModel<T>(path: string, f: (m: LlamaModel) => Promise<T>): Promise<T> {
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  try { return await f(model); } finally { await model.dispose(); }
}

/**
 * A GGUF read back into a Hugging Face checkpoint (dequantized, Q/K un-permuted): what
 * llama.cpp computes with, in a form our runtime loads.
 */
async function ggufToCheckpoint(gguf: string, configFrom: string, dir: string): Promise<void> {
  const g = await openGguf(gguf);
  try {
    const nHead = g.metadata.get('llama.attention.head_count') as number;
    const nKv = g.metadata.get('llama.attention.head_count_kv') as number;
    const layers = g.metadata.get('llama.block_count') as number;
    const tensors: Record<string, HostTensor> = {};
    const put = async (from: string, to: string, unpermuteHeads?: number): Promise<void> => {
      const info = g.tensors.find((t) => t.name === from)!;
      let v = await g.readTensor(from);
      if (unpermuteHeads) v = unpermuteFromGgmlRope(v, unpermuteHeads, info.ne[0]);
      tensors[to] = { dtype: 'F32', shape: [...info.ne].reverse(), data: v };
    };
    await put('token_embd.weight', 'model.embed_tokens.weight');
    for (let i = 0; i < layers; i++) {
      const p = `model.layers.${i}.`;
      await put(`blk.${i}.attn_norm.weight`, `${p}input_layernorm.weight`);
      await put(`blk.${i}.attn_q.weight`, `${p}self_attn.q_proj.weight`, nHead);
      await put(`blk.${i}.attn_k.weight`, `${p}self_attn.k_proj.weight`, nKv);
      await put(`blk.${i}.attn_v.weight`, `${p}self_attn.v_proj.weight`);
      await put(`blk.${i}.attn_output.weight`, `${p}self_attn.o_proj.weight`);
      await put(`blk.${i}.ffn_norm.weight`, `${p}post_attention_layernorm.weight`);
      await put(`blk.${i}.ffn_gate.weight`, `${p}mlp.gate_proj.weight`);
      await put(`blk.${i}.ffn_up.weight`, `${p}mlp.up_proj.weight`);
      await put(`blk.${i}.ffn_down.weight`, `${p}mlp.down_proj.weight`);
    }
    await put('output_norm.weight', 'model.norm.weight');
    await put('output.weight', 'lm_head.weight');
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    await copyFile(join(configFrom, 'config.json'), join(dir, 'config.json'));
  } finally {
    await g.close();
  }
}

describe('GGUF export in llama.cpp (node-llama-cpp 3.21.1, CPU)', () => {
  // MobiLlama's traps: the shared FFN stored once per layer, config.json claiming 2 KV heads for MHA weights.
  const MOBILLAMA = { hidden: 256, layers: 3, heads: 4, kvHeads: 4, configKvHeadsTrap: 2, intermediate: 704, ffnLayout: 'per-layer-copies', seed: 11 } as const;
  // Real GQA (K permuted by 2 KV heads), the FFN stored once.
  const GQA = { hidden: 256, layers: 3, heads: 4, kvHeads: 2, intermediate: 704, ffnLayout: 'once', seed: 12 } as const;

  it.each([['MobiLlama layout, MHA + config trap', MOBILLAMA], ['GQA, FFN stored once', GQA]] as const)(
    'f32 export via the CLI: same greedy tokens and probabilities as our runtime (%s)',
    async (_label, spec) => {
      const dir = await checkpoint(`ckpt-${spec.seed}`, spec);
      const file = join(root, `m${spec.seed}-f32.gguf`);
      const cli = await runCli(['export', 'gguf', '--decoder', dir, '--out', file, '--type', 'f32', '--json']);
      expect(cli.code, cli.stderr).toBe(0);
      expect(JSON.parse(cli.stdout)).toMatchObject({ type: 'f32', tensors: 1 + 3 * 9 + 2, ffn_copies: 2, vocab: { size: 32000 } });

      const prompt = tokenizer.encode(PROMPT);
      const ours = await oursGreedy(dir, prompt, STEPS);
      // Well separated: every greedy choice leads the runner-up by a clear logit gap.
      expect(Math.min(...ours.gaps)).toBeGreaterThan(MIN_GAP);
      const theirs = await withLlamaModel(file, (m) => llamaGreedy(m, prompt, STEPS));
      expect(theirs.tokens).toEqual(ours.tokens);
      // llama.cpp's first-step probabilities agree with our softmax (top 20 tokens).
      const top = [...theirs.probs[0]].slice(0, 20);
      for (const [t, p] of top) expect(Math.abs(Math.log(p) - Math.log(ours.firstProbs[t]))).toBeLessThan(5e-4);
      expect(top[0][0]).toBe(ours.tokens[0]);
    },
  );

  it('llama.cpp tokenizes text as our tokenizer does (vocabulary, scores and types from the export)', async () => {
    const dir = await checkpoint('tok', { ...GQA, layers: 1, seed: 13 });
    const file = join(root, 'tok.gguf');
    await exportDecoderToGguf(dir, file, { type: 'f16' });
    const texts = [
      PROMPT, 'Hello world', '  leading spaces and\ttabs\nnewlines\n\n', 'naïve café — 東京 🚀 ç', 'unbelievably antidisestablishmentarianism',
      'x = f(a, b) + 3.14159; // code', '### Human: What is in the image? ### Assistant:',
    ];
    await withLlamaModel(file, async (m) => {
      expect(m.tokens.bos).toBe(1);
      expect(m.tokens.eos).toBe(2);
      for (const text of texts) {
        expect(m.tokenize(text) as number[], text).toEqual(tokenizer.encode(text, { addBos: false }));
        expect(m.detokenize(tokenizer.encode(text, { addBos: false }) as Token[])).toBe(text);
      }
    });
  });

  // A quantized file is a different model; what llama.cpp runs must be exactly what the
  // file's blocks decode to (a wrong nibble order, scale or block layout would not be), so
  // compare with our runtime on the weights read back from the file. llama.cpp also rounds
  // activations (to f16 for F16 weights, to 8-bit blocks for Q8_0/Q4_0), so steps are
  // teacher-forced with our tokens and compared where our top-2 gap exceeds that noise.
  it.each([['f16', 0.01], ['q8_0', 0.1], ['q4_0', 0.1]] as const)('%s: llama.cpp computes what the dequantized weights give', async (type, noise) => {
    const dir = await checkpoint(`quant-${type}`, { ...MOBILLAMA, seed: 14 });
    const prompt = tokenizer.encode(PROMPT);
    const file = join(root, `${type}.gguf`);
    await exportDecoderToGguf(dir, file, { type });
    const back = join(root, `${type}-dequantized`);
    await ggufToCheckpoint(file, dir, back);
    const ours = await oursGreedy(back, prompt, STEPS);
    const theirs = await withLlamaModel(file, (m) => llamaGreedy(m, prompt, STEPS, ours.tokens));
    let compared = 0;
    ours.tokens.forEach((t, i) => {
      if (ours.gaps[i] > noise) {
        compared++;
        expect(theirs.tokens[i], `step ${i}`).toBe(t);
      }
      // Our token's probability under llama.cpp stays close to its top choice's.
      expect(Math.log(theirs.probs[i].get(t)!) - Math.log(theirs.probs[i].get(theirs.tokens[i])!)).toBeGreaterThan(-2 * noise);
    });
    expect(compared).toBeGreaterThanOrEqual(STEPS * 0.75);
  });

  it('CLI usage errors exit 2 with one line', async () => {
    expect(expectCleanFailure(await runCli(['export', 'gguf', '--decoder', root, '--out', join(root, 'x.gguf'), '--type', 'q5_k']))).toMatch(/--type must be one of f32, f16, q8_0, q4_0/);
    expect(expectCleanFailure(await runCli(['export', 'gguf', '--decoder', join(root, 'missing'), '--out', join(root, 'x.gguf')]))).toMatch(/does not exist/);
    expect(expectCleanFailure(await runCli(['export', 'gguf', '--decoder', root, '--out', join(root, 'no/such/dir/x.gguf')]))).toMatch(/does not exist/);
    expect(expectCleanFailure(await runCli(['export', 'gguf', '--decoder', root, '--out', join(root, 'x.gguf')]))).toMatch(/config\.json/);
  });
});
