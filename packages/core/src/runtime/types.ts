import type { TypedData } from '../tensor.js';
import type { ElemType } from '../graph/types.js';

/** A tensor crossing the runtime boundary (plain data, so it can be posted to a worker). */
export interface RunTensor {
  readonly dtype: ElemType;
  readonly dims: readonly number[];
  readonly data: TypedData;
}

export type Feeds = Record<string, RunTensor>;

export interface SessionOptions {
  /** Intra-op threads; default: ORT's choice (all cores). */
  threads?: number;
  optimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Busy-wait between ops. Off for servers so idle workers do not burn the CPU. */
  allowSpinning?: boolean;
}

export interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /**
   * `preallocated` names outputs ORT should write into the given buffers (in-thread sessions
   * only): a buffer that is also fed as an input is updated in place (GroupQueryAttention's
   * shared KV cache). onnxruntime-node still returns a copy of every output.
   */
  run(feeds: Feeds, outputNames?: readonly string[], preallocated?: Readonly<Record<string, RunTensor>>): Promise<Record<string, RunTensor>>;
  release(): Promise<void>;
}
