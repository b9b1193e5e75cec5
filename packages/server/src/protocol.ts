// Messages between the worker pool (main thread) and an inference worker.
import type { GenerationPiece } from '@mobillama/decoder';
import type { AnswerRequest, AnswerResult, ModelInfo, ModelOptions, VqaModel } from '@mobillama/pipeline';

/** What a model module (the `modelModule` option) exports. */
export interface ModelModule {
  loadModel(opts: ModelOptions): Promise<VqaModel>;
}

/** An AnswerRequest that can cross a thread: no AbortSignal, images as bytes. */
export type WireAnswerRequest = Omit<AnswerRequest, 'signal'>;

export interface InferenceWorkerData {
  readonly modelModule: string;
  readonly modelOptions: ModelOptions;
}

export type ToWorker =
  | { readonly kind: 'run'; readonly id: number; readonly request: WireAnswerRequest }
  | { readonly kind: 'cancel'; readonly id: number }
  | { readonly kind: 'close' };

export type FromWorker =
  | { readonly kind: 'ready'; readonly info: ModelInfo }
  | { readonly kind: 'failed'; readonly message: string; readonly errorName?: string }
  | { readonly kind: 'piece'; readonly id: number; readonly piece: GenerationPiece }
  | { readonly kind: 'done'; readonly id: number; readonly result: AnswerResult }
  | { readonly kind: 'error'; readonly id: number; readonly name: string; readonly message: string }
  | { readonly kind: 'closed' };
