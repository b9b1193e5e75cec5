import type { Q4Options, QuantizeMode } from '@mobillama/core';
import type { GenerateOptions, GenerationPiece, GenerationTimings } from '@mobillama/decoder';

/** An image: a file path (CLI and library use only; the server never passes paths), bytes, or a data: URL. */
export type ImageInput = string | Uint8Array;

/** Where the model comes from: one combined folder, or components. */
export interface ModelOptions {
  /** A combined folder: llava-hf layout (config with vision_config/text_config) or LLaVA layout (mm_* fields). */
  model?: string;
  decoder?: string;
  vision?: string;
  /** A projector file (mm_projector.bin / .safetensors) or a folder holding one. */
  projector?: string;
  /** Conversation template: vicuna_v1 | plain | mobillama_chat (default from the model, else vicuna_v1). */
  template?: string;
  threads?: number;
  /** ORT busy-waiting between ops; servers turn it off so idle workers don't burn CPU. */
  allowSpinning?: boolean;
  /**
   * Quantize float weights at load: q4 = the decoder's linear layers in 4-bit blocks
   * (MatMulNBits), q8 = int8 (DynamicQuantizeMatMul); the vision encoder runs int8 either way.
   * Quantized checkpoints (`mobillama-v quantize`) load as stored without it.
   */
  quantize?: QuantizeMode;
  /** With quantize q4: block size (default 32) and zero points (default off). */
  q4?: Q4Options;
}

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
  /** At most one image per conversation; it enters at the first user turn that has it. */
  readonly image?: ImageInput;
}

export interface AnswerRequest extends GenerateOptions {
  /** Single-turn form. */
  readonly image?: ImageInput;
  readonly question?: string;
  /** Multi-turn form (takes precedence over image/question). */
  readonly messages?: readonly ChatMessage[];
}

export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export interface AnswerResult {
  readonly text: string;
  readonly tokens: readonly number[];
  readonly finishReason: 'stop' | 'length' | 'abort';
  readonly usage: Usage;
  readonly timings: GenerationTimings;
}

export interface ScoreRequest {
  readonly image?: ImageInput;
  readonly question: string;
  readonly answer: string;
}

export interface ScoreResult {
  /** Sum of log p(answer token | image, question, previous answer tokens). */
  readonly logprob: number;
  readonly tokens: readonly number[];
  readonly tokenLogprobs: readonly number[];
}

export interface ModelInfo {
  readonly id: string;
  readonly template: string;
  readonly imageSize: number;
  readonly imageTokens: number;
  readonly contextLength: number;
}

/** What the CLI and the server need from a loaded VLM. */
export interface VqaModel {
  readonly info: ModelInfo;
  answer(req: AnswerRequest): Promise<AnswerResult>;
  stream(req: AnswerRequest): AsyncGenerator<GenerationPiece, AnswerResult>;
  score(req: ScoreRequest): Promise<ScoreResult>;
  dispose(): Promise<void>;
}

/** Raw scoring, no template: the continuation's log-likelihood after image + prompt. */
export type ContinuationScoreRequest = { readonly image?: ImageInput } & (
  | { readonly prompt: string; readonly continuation: string }
  /** Ids taken as they are (no BOS added); IMAGE_TOKEN_ID (-200) marks the image. */
  | { readonly promptIds: readonly number[]; readonly continuationIds: readonly number[] }
);

export interface ContinuationScore {
  readonly tokens: readonly number[];
  readonly logprobs: readonly number[];
  readonly total: number;
}
