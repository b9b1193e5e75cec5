import { VisionConfigError, type HfClipConfigJson } from '../config.js';

/** Hyper-parameters of a CLIP text tower (HF CLIPTextConfig), checked against the weights. */
export interface ClipTextConfig {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  /** Longest token sequence, BOS and EOS included (77 for OpenAI CLIP). */
  readonly maxPositions: number;
  /** 'quick_gelu' (OpenAI CLIP), 'gelu', … (any `nn.activation` name). */
  readonly hiddenAct: string;
  readonly layerNormEps: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  /** Where the pooled output is read: see {@link ClipEosRule}. */
  readonly eosRule: ClipEosRule;
}

/**
 * HF CLIPTextTransformer's pooling index. Configs written before transformers 4.31 say
 * `eos_token_id: 2` while the real EOS (49407) is the largest id, so HF pools at
 * argmax(input_ids) for them; otherwise at the first position of eos_token_id.
 */
export type ClipEosRule = 'argmax' | 'first-eos';

/** The text fields of a HF config.json (CLIPTextConfig names). */
export interface HfClipTextConfigJson {
  model_type?: string;
  vocab_size?: number;
  hidden_size?: number;
  intermediate_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  max_position_embeddings?: number;
  hidden_act?: string;
  layer_norm_eps?: number;
  projection_dim?: number;
  bos_token_id?: number;
  eos_token_id?: number;
  pad_token_id?: number;
}

/** A CLIPModel config (text_config inside) or a CLIPTextModel(WithProjection) one (fields at the top). */
export interface HfClipModelConfigJson extends HfClipConfigJson, Omit<HfClipTextConfigJson, keyof HfClipConfigJson> {
  text_config?: HfClipTextConfigJson;
  /** transformers < 4.25 wrote the user-given fields here; they override text_config. */
  text_config_dict?: HfClipTextConfigJson | null;
  logit_scale_init_value?: number;
}

/** HF CLIPTextConfig defaults (transformers ≥ 4.31). */
const TEXT_DEFAULTS = {
  vocab_size: 49408, hidden_size: 512, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 8,
  max_position_embeddings: 77, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5, bos_token_id: 49406,
  eos_token_id: 49407, pad_token_id: 1,
} as const;

/** The object holding the text fields: `text_config`, or the top level of a CLIPTextModel config. */
export function textSection(c: HfClipModelConfigJson, file = 'config.json'): HfClipTextConfigJson {
  if (c.model_type === 'clip_text_model') return c;
  if (c.text_config || c.text_config_dict) return { ...c.text_config, ...c.text_config_dict };
  throw new VisionConfigError(`${file}: no text_config (not a CLIPModel or CLIPTextModel config)`);
}

/** Shapes read from the weights. */
export interface ClipTextShapes {
  /** token_embedding [V, D]. */
  tokens: readonly number[];
  /** position_embedding rows. */
  positions: number;
  /** fc1 rows. */
  intermediate: number;
}

function positiveInt(v: unknown, what: string, file: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new VisionConfigError(`${file}: ${what} must be a positive integer (got ${JSON.stringify(v)})`);
  return v;
}

function tokenId(v: unknown, what: string, file: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new VisionConfigError(`${file}: ${what} must be a token id (got ${JSON.stringify(v)})`);
  return v;
}

const ACTIVATIONS = new Set(['quick_gelu', 'gelu', 'silu', 'swish', 'relu']);

/** Reconciles config.json's text fields with the weight shapes: every size must agree. */
export function clipTextConfigFrom(json: HfClipModelConfigJson, shapes: ClipTextShapes, file = 'config.json'): ClipTextConfig {
  const t = textSection(json, file);
  const get = (k: keyof typeof TEXT_DEFAULTS): unknown => t[k] ?? TEXT_DEFAULTS[k];
  const hiddenSize = positiveInt(get('hidden_size'), 'text hidden_size', file);
  const numHeads = positiveInt(get('num_attention_heads'), 'text num_attention_heads', file);
  const vocabSize = positiveInt(get('vocab_size'), 'text vocab_size', file);
  const maxPositions = positiveInt(get('max_position_embeddings'), 'text max_position_embeddings', file);
  const intermediateSize = positiveInt(get('intermediate_size'), 'text intermediate_size', file);
  const hiddenAct = String(get('hidden_act'));
  if (!ACTIVATIONS.has(hiddenAct)) throw new VisionConfigError(`${file}: text hidden_act ${hiddenAct} is not supported (${[...ACTIVATIONS].join(', ')})`);
  const headDim = hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new VisionConfigError(`${file}: text hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  const mismatch = (what: string, cfg: number, w: string) => new VisionConfigError(`${file}: text ${what} is ${cfg} but the weights have ${w}`);
  const [rows, width] = shapes.tokens;
  if (width !== hiddenSize) throw mismatch('hidden_size', hiddenSize, `token_embedding ${shapes.tokens.join('x')}`);
  if (rows !== vocabSize) throw mismatch('vocab_size', vocabSize, `token_embedding ${shapes.tokens.join('x')}`);
  if (shapes.positions !== maxPositions) throw mismatch('max_position_embeddings', maxPositions, `${shapes.positions} position embeddings`);
  if (shapes.intermediate !== intermediateSize) throw mismatch('intermediate_size', intermediateSize, `fc1 rows ${shapes.intermediate}`);
  const eosTokenId = tokenId(get('eos_token_id'), 'text eos_token_id', file);
  return {
    vocabSize, hiddenSize, intermediateSize, numHeads, headDim, maxPositions, hiddenAct,
    numLayers: positiveInt(get('num_hidden_layers'), 'text num_hidden_layers', file),
    layerNormEps: typeof t.layer_norm_eps === 'number' ? t.layer_norm_eps : TEXT_DEFAULTS.layer_norm_eps,
    bosTokenId: tokenId(get('bos_token_id'), 'text bos_token_id', file),
    eosTokenId,
    padTokenId: tokenId(get('pad_token_id'), 'text pad_token_id', file),
    eosRule: eosTokenId === 2 ? 'argmax' : 'first-eos',
  };
}
