import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openWeights, readFloatWeight, type WeightSource } from '@mobillama/core';
import { writeRandomDecoderCheckpoint, type RandomDecoderSpec } from '../testing/random-checkpoint.js';
import { buildLlamaSentencePieceModel, writeLlamaTokenizerFiles } from '../tokenizer/llama-fixtures.js';
import { exportDecoderToGguf, permuteForGgmlRope, unpermuteFromGgmlRope, type GgufExportType } from './export.js';
import { openGguf, type GgufFile } from './reader.js';
import { GGUF_TOKEN_TYPE } from './vocab.js';

let root: string;
beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'gguf-export-')); });
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

const BASE: RandomDecoderSpec = {
  hidden: 128, layers: 3, heads: 4, kvHeads: 4, intermediate: 96, vocab: 32000,
  ffnLayout: 'per-layer-copies', format: 'bin', dtype: 'F32', seed: 3,
};

async function checkpoint(name: string, spec: Partial<RandomDecoderSpec>): Promise<string> {
  const dir = join(root, name);
  await writeRandomDecoderCheckpoint(dir, { ...BASE, ...spec });
  return dir;
}

async function withGguf<T>(path: string, f: (g: GgufFile) => Promise<T>): Promise<T> {
  const g = await openGguf(path);
  try { return await f(g); } finally { await g.close(); }
}

async function withSource<T>(dir: string, f: (s: WeightSource) => Promise<T>): Promise<T> {
  const s = await openWeights(dir);
  try { return await f(s); } finally { await s.close(); }
}

/** Largest |a - b| relative to max |b| per 32-value block bound (q8_0: amax/127·0.56, q4_0: amax/8·1.004). */
function withinBlockBound(got: Float32Array, want: Float32Array, type: GgufExportType): void {
  expect(got.length).toBe(want.length);
  if (type === 'f32') {
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))).toBe(true);
    return;
  }
  let worst = 0;
  for (let b = 0; b < want.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(want[b * 32 + j]));
    const bound = type === 'f16' ? amax * 2 ** -11 + 2 ** -24 : type === 'q8_0' ? (amax / 127) * 0.5625 : (amax / 8) * 1.004;
    for (let j = 0; j < 32; j++) worst = Math.max(worst, Math.abs(got[b * 32 + j] - want[b * 32 + j]) / bound);
  }
  expect(worst).toBeLessThanOrEqual(1);
}

describe('RoPE permutation', () => {
  it('is the convert_hf_to_gguf reshape(n_head, 2, d/2, in).swapaxes(1, 2) and inverts', () => {
    const nHead = 2, d = 4, cols = 3;
    const w = Float32Array.from({ length: nHead * d * cols }, (_, i) => i);
    const p = permuteForGgmlRope(w, nHead, cols);
    // Rows per head: [0, 1, 2, 3] → [0, 2, 1, 3].
    const rowOrder = [0, 2, 1, 3, 4, 6, 5, 7];
    rowOrder.forEach((src, dst) => expect(Array.from(p.subarray(dst * cols, dst * cols + cols))).toEqual(Array.from(w.subarray(src * cols, src * cols + cols))));
    expect(Array.from(unpermuteFromGgmlRope(p, nHead, cols))).toEqual(Array.from(w));
  });

  it('turns HF rotate-half RoPE into ggml adjacent-pair RoPE: q·k is unchanged', () => {
    const d = 8, nHead = 2, cols = 5, pos = [3, 11];
    let s = 1;
    const rnd = (): number => { s = (Math.imul(s, 48271) % 2147483647 + 2147483647) % 2147483647; return s / 2147483647 - 0.5; };
    const wq = Float32Array.from({ length: nHead * d * cols }, rnd), wk = Float32Array.from({ length: nHead * d * cols }, rnd);
    const x = Float64Array.from({ length: cols }, rnd), y = Float64Array.from({ length: cols }, rnd);
    const mv = (w: Float32Array, v: Float64Array): number[] => Array.from({ length: w.length / cols }, (_, r) => v.reduce((a, vi, c) => a + w[r * cols + c] * vi, 0));
    const theta = (i: number, p: number): number => p * 10000 ** (-(2 * i) / d);
    const ropeHf = (q: number[], p: number): number[] => q.map((_, r) => {
      const h = Math.floor(r / d) * d, j = r % d, i = j % (d / 2), a = theta(i, p);
      return j < d / 2 ? q[h + j] * Math.cos(a) - q[h + j + d / 2] * Math.sin(a) : q[h + j] * Math.cos(a) + q[h + j - d / 2] * Math.sin(a);
    });
    const ropeGgml = (q: number[], p: number): number[] => q.map((_, r) => {
      const h = Math.floor(r / d) * d, j = r % d, i = j >> 1, a = theta(i, p);
      return j % 2 === 0 ? q[h + j] * Math.cos(a) - q[h + j + 1] * Math.sin(a) : q[h + j] * Math.cos(a) + q[h + j - 1] * Math.sin(a);
    });
    const dots = (q: number[], k: number[]): number[] => Array.from({ length: nHead }, (_, h) => q.slice(h * d, h * d + d).reduce((a, v, j) => a + v * k[h * d + j], 0));
    const hf = dots(ropeHf(mv(wq, x), pos[0]), ropeHf(mv(wk, y), pos[1]));
    const gg = dots(ropeGgml(mv(permuteForGgmlRope(wq, nHead, cols), x), pos[0]), ropeGgml(mv(permuteForGgmlRope(wk, nHead, cols), y), pos[1]));
    gg.forEach((v, h) => expect(v).toBeCloseTo(hf[h], 5));
  });
});

describe('exportDecoderToGguf', () => {
  it('maps a MobiLlama checkpoint (shared FFN copies, config KV-head trap) to llama metadata and tensors', async () => {
    const dir = await checkpoint('mha-trap', { configKvHeadsTrap: 2 });
    const out = join(root, 'mha-f32.gguf');
    const res = await exportDecoderToGguf(dir, out, { type: 'f32', name: 'tiny-mobillama' });
    expect(res).toMatchObject({ type: 'f32', tensors: 1 + 3 * 9 + 2, ffnCopies: 2, vocab: { source: 'bundled-llama', scoresFrom: 'bundled merges', padded: 0, size: 32000 } });
    await withGguf(out, async (g) => {
      const md = Object.fromEntries(g.metadata);
      expect(md).toMatchObject({
        'general.architecture': 'llama', 'general.name': 'tiny-mobillama', 'general.file_type': 0,
        'llama.context_length': 2048, 'llama.embedding_length': 128, 'llama.block_count': 3,
        'llama.feed_forward_length': 96, 'llama.attention.head_count': 4,
        // The weights are multi-head although config.json says 2.
        'llama.attention.head_count_kv': 4,
        'llama.rope.dimension_count': 32, 'llama.rope.freq_base': 10000,
        'llama.attention.layer_norm_rms_epsilon': Math.fround(1e-5),
        'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.eos_token_id': 2,
        'tokenizer.ggml.unknown_token_id': 0, 'tokenizer.ggml.add_bos_token': true, 'tokenizer.ggml.add_eos_token': false,
      });
      expect(g.metadataTypes.get('llama.attention.layer_norm_rms_epsilon')).toBe('float32');
      expect(g.metadataTypes.get('llama.block_count')).toBe('uint32');
      const tokens = md['tokenizer.ggml.tokens'] as string[];
      const scores = md['tokenizer.ggml.scores'] as number[];
      const types = md['tokenizer.ggml.token_type'] as number[];
      expect(tokens.length).toBe(32000);
      expect([tokens[0], tokens[1], tokens[2], tokens[13], tokens[278]]).toEqual(['<unk>', '<s>', '</s>', '<0x0A>', '▁the']);
      expect([types[0], types[1], types[13], types[278]]).toEqual([GGUF_TOKEN_TYPE.UNKNOWN, GGUF_TOKEN_TYPE.CONTROL, GGUF_TOKEN_TYPE.BYTE, GGUF_TOKEN_TYPE.NORMAL]);
      const spm = await buildLlamaSentencePieceModel();
      expect(scores.slice(250, 300)).toEqual(spm.pieces.slice(250, 300).map((p) => p.score));

      const names = g.tensors.map((t) => t.name);
      const perLayer = ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down'];
      expect(names).toEqual(['token_embd.weight', ...[0, 1, 2].flatMap((i) => perLayer.map((p) => `blk.${i}.${p}.weight`)), 'output_norm.weight', 'output.weight']);
      const byName = new Map(g.tensors.map((t) => [t.name, t]));
      expect(byName.get('token_embd.weight')?.ne).toEqual([128, 32000]);
      expect(byName.get('blk.0.ffn_gate.weight')?.ne).toEqual([128, 96]);
      expect(byName.get('blk.0.ffn_down.weight')?.ne).toEqual([96, 128]);
      expect(byName.get('blk.0.attn_norm.weight')?.ne).toEqual([128]);

      await withSource(dir, async (src) => {
        const w = async (n: string): Promise<Float32Array> => (await readFloatWeight(src, n)).data;
        // The one shared FFN in every layer.
        for (const i of [0, 1, 2]) {
          withinBlockBound(await g.readTensor(`blk.${i}.ffn_gate.weight`), await w('model.layers.0.mlp.gate_proj.weight'), 'f32');
          withinBlockBound(await g.readTensor(`blk.${i}.ffn_down.weight`), await w('model.layers.0.mlp.down_proj.weight'), 'f32');
        }
        // Q/K are permuted (Q by heads, K by the weights' KV heads); un-permuting gives the source.
        for (const i of [0, 2]) {
          const q = await w(`model.layers.${i}.self_attn.q_proj.weight`);
          const gq = await g.readTensor(`blk.${i}.attn_q.weight`);
          expect(Buffer.from(gq.buffer).equals(Buffer.from(q.buffer, q.byteOffset, q.byteLength))).toBe(false);
          withinBlockBound(unpermuteFromGgmlRope(gq, 4, 128), q, 'f32');
          withinBlockBound(unpermuteFromGgmlRope(await g.readTensor(`blk.${i}.attn_k.weight`), 4, 128), await w(`model.layers.${i}.self_attn.k_proj.weight`), 'f32');
          withinBlockBound(await g.readTensor(`blk.${i}.attn_v.weight`), await w(`model.layers.${i}.self_attn.v_proj.weight`), 'f32');
          withinBlockBound(await g.readTensor(`blk.${i}.attn_output.weight`), await w(`model.layers.${i}.self_attn.o_proj.weight`), 'f32');
          withinBlockBound(await g.readTensor(`blk.${i}.attn_norm.weight`), await w(`model.layers.${i}.input_layernorm.weight`), 'f32');
          withinBlockBound(await g.readTensor(`blk.${i}.ffn_norm.weight`), await w(`model.layers.${i}.post_attention_layernorm.weight`), 'f32');
        }
        withinBlockBound(await g.readTensor('token_embd.weight'), await w('model.embed_tokens.weight'), 'f32');
        withinBlockBound(await g.readTensor('output.weight'), await w('lm_head.weight'), 'f32');
        withinBlockBound(await g.readTensor('output_norm.weight'), await w('model.norm.weight'), 'f32');
      });
    });
  });

  it.each(['f16', 'q8_0', 'q4_0'] as const)('%s: matrices dequantize to the source within the block bound; norms stay f32', async (type) => {
    const dir = await checkpoint(`gqa-${type}`, { kvHeads: 2, ffnLayout: 'once', format: 'safetensors', intermediate: 160 });
    const out = join(root, `gqa-${type}.gguf`);
    const res = await exportDecoderToGguf(dir, out, { type });
    expect(res.ffnCopies).toBe(2);
    const ggmlType = { f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' }[type];
    await withGguf(out, async (g) => {
      expect(g.metadata.get('general.file_type')).toBe({ f16: 1, q8_0: 7, q4_0: 2 }[type]);
      expect(g.metadata.get('llama.attention.head_count_kv')).toBe(2);
      for (const t of g.tensors) expect(t.type).toBe(t.ne.length === 1 ? 'F32' : ggmlType);
      await withSource(dir, async (src) => {
        const w = async (n: string): Promise<Float32Array> => (await readFloatWeight(src, n)).data;
        // Quantize-then-unpermute equals unpermute-then-compare: blocks lie within a row, and rows only move.
        withinBlockBound(unpermuteFromGgmlRope(await g.readTensor('blk.1.attn_q.weight'), 4, 128), await w('model.layers.1.self_attn.q_proj.weight'), type);
        withinBlockBound(unpermuteFromGgmlRope(await g.readTensor('blk.1.attn_k.weight'), 2, 128), await w('model.layers.1.self_attn.k_proj.weight'), type);
        withinBlockBound(await g.readTensor('blk.2.ffn_up.weight'), await w('model.layers.0.mlp.up_proj.weight'), type);
        withinBlockBound(await g.readTensor('blk.2.ffn_down.weight'), await w('model.layers.0.mlp.down_proj.weight'), type);
        withinBlockBound(await g.readTensor('token_embd.weight'), await w('model.embed_tokens.weight'), type);
        withinBlockBound(await g.readTensor('output.weight'), await w('lm_head.weight'), type);
        withinBlockBound(await g.readTensor('blk.2.ffn_norm.weight'), await w('model.layers.2.post_attention_layernorm.weight'), 'f32');
      });
      // The shared FFN's encoded bytes are identical in every layer.
      const first = Buffer.from(await g.readTensorBytes('blk.0.ffn_gate.weight'));
      expect(Buffer.from(await g.readTensorBytes('blk.2.ffn_gate.weight')).equals(first)).toBe(true);
    });
  });

  it('falls back to f16 for rows that are not whole 32-value blocks', async () => {
    const dir = await checkpoint('odd', { intermediate: 80, layers: 1 });
    const out = join(root, 'odd.gguf');
    await exportDecoderToGguf(dir, out, { type: 'q4_0' });
    await withGguf(out, async (g) => {
      const t = new Map(g.tensors.map((x) => [x.name, x.type]));
      expect(t.get('blk.0.ffn_gate.weight')).toBe('Q4_0'); // rows of 128
      expect(t.get('blk.0.ffn_down.weight')).toBe('F16'); // rows of 80
    });
  });

  it('takes scores from tokenizer.model when present, else from tokenizer.json merges', async () => {
    const spm = await buildLlamaSentencePieceModel();
    const withModel = await checkpoint('tok-model', { layers: 1 });
    await writeLlamaTokenizerFiles(withModel, { json: false });
    const a = await exportDecoderToGguf(withModel, join(root, 'tok-model.gguf'), { type: 'f16' });
    expect(a.vocab).toMatchObject({ source: 'tokenizer.model', scoresFrom: 'tokenizer.model' });
    const withJson = await checkpoint('tok-json', { layers: 1 });
    await writeLlamaTokenizerFiles(withJson, { model: false });
    const b = await exportDecoderToGguf(withJson, join(root, 'tok-json.gguf'), { type: 'f16' });
    expect(b.vocab).toMatchObject({ source: 'tokenizer.json', scoresFrom: 'tokenizer.json merges' });
    for (const f of ['tok-model.gguf', 'tok-json.gguf']) {
      await withGguf(join(root, f), async (g) => {
        expect(g.metadata.get('tokenizer.ggml.scores')).toEqual(spm.pieces.map((p) => Math.fround(p.score)));
        expect(g.metadata.get('tokenizer.ggml.token_type')).toEqual(spm.pieces.map((p) => GGUF_TOKEN_TYPE[p.type]));
      });
    }
  });

  it('refuses our int8/int4 checkpoints (their codes are not ggml blocks)', async () => {
    const dir = await checkpoint('quantized', { layers: 1 });
    const cfgPath = join(dir, 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
    await writeFile(cfgPath, JSON.stringify({ ...cfg, quantization: { format: 'mobillama-v', version: 1, weights: 'q4', block_size: 32 } }));
    await expect(exportDecoderToGguf(dir, join(root, 'quantized.gguf'))).rejects.toThrow(/is a q4 checkpoint; export the float checkpoint/);
  });

  it('pads the vocabulary to the embedding rows and refuses a tokenizer larger than the model', async () => {
    const big = await checkpoint('vocab-big', { layers: 1, vocab: 32064 });
    const res = await exportDecoderToGguf(big, join(root, 'vocab-big.gguf'), { type: 'f16' });
    expect(res.vocab).toMatchObject({ padded: 64, size: 32064 });
    await withGguf(join(root, 'vocab-big.gguf'), async (g) => {
      const tokens = g.metadata.get('tokenizer.ggml.tokens') as string[];
      expect(tokens[32000]).toBe('[PAD32000]');
      expect((g.metadata.get('tokenizer.ggml.token_type') as number[])[32063]).toBe(GGUF_TOKEN_TYPE.UNUSED);
    });
    const small = await checkpoint('vocab-small', { layers: 1, vocab: 1000 });
    await expect(exportDecoderToGguf(small, join(root, 'vocab-small.gguf'))).rejects.toThrow(/32000 tokens but the model's embeddings only 1000 rows/);
  });
});
