import type { HostTensor } from '../tensor.js';
import type { TensorLocation } from '../weights/types.js';

/** A dimension: a fixed size, or the name of a dynamic one ("batch", "seq"). */
export type Dim = number | string;

/** Element types a graph value can have (ONNX names, lower case). */
export type ElemType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

export interface Value {
  readonly id: number;
  readonly name: string;
  readonly dtype: ElemType;
  /** Static shape when known; a string dim is symbolic, `null` an unknown dim. */
  readonly shape: readonly (Dim | null)[] | null;
}

export type AttrValue =
  | number | string | readonly number[] | readonly string[] | { readonly float: number } | HostTensor
  /** A subgraph (If branches): its nodes read the outer graph's values and initializers by name. */
  | { readonly graph: Graph };

export interface Node {
  readonly op: string;
  /** '' for the default ONNX domain, 'com.microsoft' for ORT contrib ops. */
  readonly domain: string;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, AttrValue>>;
}

/** Where an initializer's bytes come from. */
export type InitializerData =
  /** Bytes in memory, written inline (small) or handed to ORT as in-memory external data. */
  | { readonly kind: 'tensor'; readonly tensor: HostTensor }
  /** Bytes that stay in a weight file on disk (fp32 checkpoints: no copy at all). */
  | { readonly kind: 'file'; readonly location: TensorLocation };

export interface Initializer {
  readonly value: Value;
  readonly data: InitializerData;
}

export interface Graph {
  readonly name: string;
  readonly inputs: readonly Value[];
  readonly outputs: readonly Value[];
  readonly initializers: readonly Initializer[];
  readonly nodes: readonly Node[];
}
