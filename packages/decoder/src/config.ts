/** Hyper-parameters of a LLaMA-style decoder with optionally shared FFNs (MobiLlama). */
export interface DecoderConfig {
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  /** From the weight shapes, not config.json (MobiLlama-05B's config says 4; its weights are MHA). */
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly maxPositions: number;
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
  readonly padId: number | null;
  readonly tieWordEmbeddings: boolean;
  /**
   * FFN sharing: layer i uses FFN number ffnOfLayer[i]. All zeros is MobiLlama (one shared
   * FFN), 0..L-1 is plain LLaMA, runs of equal numbers are group ("hybrid") sharing.
   * From config.json's `ffn_groups` when present, else detected from the weights.
   */
  readonly ffnOfLayer: readonly number[];
  /**
   * 2-D rotary positions (rope-2d.ts): odd rotary frequency pairs turn by a second position id
   * per token (an image token's column-by-column number). From config.json's `rope_2d`; off
   * for LLaMA and MobiLlama checkpoints. Text alone is plain RoPE either way.
   */
  readonly rope2d: boolean;
}

/** config.json as Hugging Face writes it for model_type llama / mobillama (the fields we read). */
export interface HfLlamaConfigJson {
  model_type?: string;
  hidden_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  head_dim?: number;
  intermediate_size?: number;
  vocab_size?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  max_position_embeddings?: number;
  bos_token_id?: number | null;
  eos_token_id?: number | number[] | null;
  pad_token_id?: number | null;
  tie_word_embeddings?: boolean;
  ffn_groups?: number[];
  rope_scaling?: unknown;
  /** Ours: image tokens numbered in two rotary ids (DecoderConfig.rope2d). */
  rope_2d?: boolean;
}

import { ConfigError } from '@mobillama/core';

export { ConfigError };

function req(c: HfLlamaConfigJson, key: keyof HfLlamaConfigJson, file: string): number {
  const v = c[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${file}: missing or invalid ${key}`);
  return v;
}

/** Weight shapes that decide head counts and sizes where config.json may be wrong. */
export interface DecoderShapes {
  qRows: number;
  kRows: number;
  vocab: number;
  hidden: number;
  intermediate: number;
}

/** Reconciles config.json with the weight shapes; the weights win, the config gives head_dim. */
export function decoderConfigFrom(c: HfLlamaConfigJson, shapes: DecoderShapes, ffnOfLayer: readonly number[], file = 'config.json'): DecoderConfig {
  const supported = ['llama', 'mobillama', 'llava', 'llava_llama', undefined];
  if (!supported.includes(c.model_type)) throw new ConfigError(`${file}: model_type ${c.model_type} is not a LLaMA-style decoder`);
  if (c.rope_scaling) throw new ConfigError(`${file}: rope_scaling is not supported yet`);
  const hiddenSize = req(c, 'hidden_size', file);
  const numHeads = req(c, 'num_attention_heads', file);
  const headDim = c.head_dim ?? hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new ConfigError(`${file}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  if (shapes.hidden !== hiddenSize) throw new ConfigError(`${file}: hidden_size ${hiddenSize} but the embeddings are ${shapes.hidden} wide`);
  if (shapes.qRows !== numHeads * headDim) throw new ConfigError(`${file}: q_proj has ${shapes.qRows} rows, expected heads×head_dim = ${numHeads * headDim}`);
  if (shapes.kRows % headDim !== 0) throw new ConfigError(`${file}: k_proj has ${shapes.kRows} rows, not a multiple of head_dim ${headDim}`);
  const numKvHeads = shapes.kRows / headDim;
  if (numHeads % numKvHeads !== 0) throw new ConfigError(`${file}: ${numHeads} heads are not a multiple of ${numKvHeads} KV heads`);
  const eos = c.eos_token_id;
  return {
    hiddenSize,
    numLayers: req(c, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: shapes.intermediate,
    vocabSize: shapes.vocab,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? 10000,
    maxPositions: c.max_position_embeddings ?? 2048,
    bosId: c.bos_token_id ?? null,
    eosIds: eos == null ? [] : Array.isArray(eos) ? eos : [eos],
    padId: c.pad_token_id ?? null,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    ffnOfLayer,
    rope2d: c.rope_2d === true,
  };
}
