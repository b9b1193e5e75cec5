import type { DType, HostTensor } from '../tensor.js';

/** Where a tensor's bytes live on disk, when they are stored contiguously in one file. */
export interface TensorLocation {
  /** Absolute path of the file that holds the bytes. */
  readonly file: string;
  /** Absolute byte offset of the first element in that file. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

export interface TensorInfo {
  readonly name: string;
  /** Stored dtype, safetensors naming. */
  readonly dtype: DType;
  readonly shape: readonly number[];
  /**
   * Set when the stored bytes are exactly the tensor, row-major and contiguous, so that an
   * ONNX initializer can point at them as external data without copying.
   */
  readonly location?: TensorLocation;
  /**
   * Identity of the underlying storage bytes (file + offset + length + dtype + shape +
   * strides): two names with the same key are the same tensor on disk.
   */
  readonly storageKey: string;
}

/** A read-only collection of named tensors: one weight file, or a sharded checkpoint. */
export interface WeightSource {
  /** Display path (file or directory). */
  readonly path: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Read one tensor into memory in its stored dtype (F16/BF16 as raw bits). */
  read(name: string): Promise<HostTensor>;
  close(): Promise<void>;
}

/** Errors in weight files: the message names the file (and tensor, when one is at fault). */
export class WeightFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WeightFileError';
  }
}

/** A bad input from the caller (a token id outside the vocabulary, a malformed request). */
export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}
