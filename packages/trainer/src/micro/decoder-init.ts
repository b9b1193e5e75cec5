/**
 * A fresh MobiLlama decoder folder: LLaMA architecture, ONE feed-forward network shared by
 * every layer (stored once, under layer 0's names, as the bf16 MobiLlama chat checkpoint
 * stores it), the real 32000-token LLaMA vocabulary (no tokenizer files: the loader uses
 * the bundled one), initialised as transformers' LlamaPreTrainedModel._init_weights does
 * (linears and embeddings N(0, 0.02), RMSNorm weights 1).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic, writeSafetensors, type HostTensor } from '@mobillama/core';
import { Rng } from '../rng.js';

export interface MicroDecoderConfig {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  /** The one shared FFN's width. */
  readonly intermediate: number;
  readonly vocab: number;
  readonly maxPositions: number;
  readonly initializerRange?: number;
  /** 2-D rotary positions for image tokens (config.json `rope_2d`; decoder/src/rope-2d.ts). */
  readonly rope2d?: boolean;
}

/** config.json of a MobiLlama (model_type llama, as the published one). */
export function microDecoderConfigJson(c: MicroDecoderConfig): Record<string, unknown> {
  return {
    architectures: ['MobiLlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 1, eos_token_id: 2,
    hidden_act: 'silu', hidden_size: c.hidden, initializer_range: c.initializerRange ?? 0.02, intermediate_size: c.intermediate,
    max_position_embeddings: c.maxPositions, model_type: 'llama', num_attention_heads: c.heads, num_hidden_layers: c.layers,
    num_key_value_heads: c.heads, pretraining_tp: 1, rms_norm_eps: 1e-5, rope_scaling: null, rope_theta: 10000.0,
    tie_word_embeddings: false, torch_dtype: 'float32', transformers_version: '4.36.1', use_cache: true, vocab_size: c.vocab,
    ...(c.rope2d ? { rope_2d: true } : {}),
  };
}

/** The decoder's tensors (HF names), freshly initialised from `seed`. */
export function initMicroDecoderWeights(c: MicroDecoderConfig, seed: number): Record<string, HostTensor> {
  if (c.hidden % c.heads !== 0) throw new RangeError(`hidden ${c.hidden} is not a multiple of heads ${c.heads}`);
  const std = c.initializerRange ?? 0.02;
  const out: Record<string, HostTensor> = {};
  const normal = (name: string, shape: number[]) => {
    const rng = Rng.seeded(seed, name);
    const n = shape[0] * (shape[1] ?? 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      // Box–Muller: two N(0, 1) per two uniforms.
      const u = 1 - rng.next(), v = rng.next();
      const r = Math.sqrt(-2 * Math.log(u)) * std;
      data[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < n) data[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
    out[name] = { dtype: 'F32', shape, data };
  };
  const ones = (name: string, n: number) => (out[name] = { dtype: 'F32', shape: [n], data: new Float32Array(n).fill(1) });
  const H = c.hidden, I = c.intermediate;
  normal('model.embed_tokens.weight', [c.vocab, H]);
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) normal(`${p}self_attn.${m}.weight`, [H, H]);
    if (l === 0) {
      normal(`${p}mlp.gate_proj.weight`, [I, H]);
      normal(`${p}mlp.up_proj.weight`, [I, H]);
      normal(`${p}mlp.down_proj.weight`, [H, I]);
    }
    ones(`${p}input_layernorm.weight`, H);
    ones(`${p}post_attention_layernorm.weight`, H);
  }
  ones('model.norm.weight', H);
  normal('lm_head.weight', [c.vocab, H]);
  return out;
}

/** Writes config.json + model.safetensors (F32) into `dir`. */
export async function writeMicroDecoder(dir: string, c: MicroDecoderConfig, seed: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'model.safetensors'), initMicroDecoderWeights(c, seed), { format: 'pt' });
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(microDecoderConfigJson(c), null, 2)}\n`);
}
