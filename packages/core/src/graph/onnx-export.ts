import onnxProto from 'onnx-proto';
import { realpathSync } from 'node:fs';
import { dirname, relative, resolve, sep } from 'node:path';
import { bytesOf, type HostTensor } from '../tensor.js';
import { ONNX_ELEM_TYPE, elemTypeOf } from './builder.js';
import type { AttrValue, Graph, Value } from './types.js';

const { onnx } = onnxProto;

/** In-memory tensors at least this big go to ORT as in-memory external data, not inline. */
const INLINE_LIMIT = 1 << 20;
/** Protobuf messages cannot exceed 2 GiB; stay clear of it. */
const MAX_INLINE_TOTAL = 1.8 * 2 ** 30;

/** A serialized model plus what ORT needs to find its external weights. */
export interface OnnxArtifact {
  readonly model: Uint8Array;
  /** Folder that file-backed initializers' locations are relative to (undefined when none). */
  readonly weightsFolder?: string;
  /** In-memory "files" that large in-memory initializers point into. */
  readonly memoryData: readonly { path: string; data: Uint8Array }[];
}

export interface ExportOptions {
  opset?: number;
  /** Opset of com.microsoft contrib ops, when used. */
  msOpset?: number;
}

/** The deepest folder containing every file (ORT refuses locations that go up with ../). */
function commonFolder(files: readonly string[]): string {
  let base = dirname(files[0]);
  for (const f of files) {
    while (!(f === base || f.startsWith(base.endsWith(sep) ? base : base + sep))) {
      const up = dirname(base);
      if (up === base) break;
      base = up;
    }
  }
  return base;
}

function valueInfo(v: Value): onnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_ELEM_TYPE[v.dtype],
        shape: v.shape
          ? { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {})) }
          : undefined,
      },
    },
  };
}

function attribute(name: string, a: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof a === 'number') {
    return Number.isInteger(a) ? { name, type: T.INT, i: a } : { name, type: T.FLOAT, f: a };
  }
  if (typeof a === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(a) };
  if (Array.isArray(a)) {
    if (a.length > 0 && typeof a[0] === 'string') {
      return { name, type: T.STRINGS, strings: (a as string[]).map((s) => new TextEncoder().encode(s)) };
    }
    return { name, type: T.INTS, ints: a as number[] };
  }
  if ('graph' in (a as object)) return { name, type: T.GRAPH, g: subgraphProto((a as { graph: Graph }).graph) };
  if ('float' in (a as object)) return { name, type: T.FLOAT, f: (a as { float: number }).float };
  return { name, type: T.TENSOR, t: tensorProto(name, a as HostTensor) };
}

function nodeProtos(graph: Graph, prefix = ''): onnxProto.onnx.INodeProto[] {
  return graph.nodes.map((n, i) => ({
    name: `${prefix}${n.op}_${i}`,
    opType: n.op,
    domain: n.domain,
    input: n.inputs.map((v) => (v ? v.name : '')),
    output: n.outputs.map((v) => v.name),
    attribute: Object.entries(n.attrs).map(([k, a]) => attribute(k, a)),
  }));
}

/** An If branch: nodes and outputs only; it reads the outer graph's values and initializers. */
function subgraphProto(graph: Graph): onnxProto.onnx.IGraphProto {
  return { name: graph.name, output: graph.outputs.map(valueInfo), node: nodeProtos(graph, `${graph.name}/`) };
}

/** Whether a graph or any of its subgraphs uses a domain. */
function usesDomain(graph: Graph, domain: string): boolean {
  return graph.nodes.some((n) => n.domain === domain || Object.values(n.attrs).some((a) => typeof a === 'object' && a !== null && 'graph' in a && usesDomain((a as { graph: Graph }).graph, domain)));
}

function tensorProto(name: string, t: HostTensor): onnxProto.onnx.ITensorProto {
  return { name, dims: [...t.shape], dataType: ONNX_ELEM_TYPE[elemTypeOf(t)], rawData: bytesOf(t.data) };
}

/**
 * A weight file's path with symlinks resolved: ORT checks that each external data file, once
 * resolved, lies inside the folder it was given, and the Hugging Face cache links every file
 * of a snapshot to a blob in another folder.
 */
function canonicalPath(file: string, cache: Map<string, string>): string {
  let real = cache.get(file);
  if (real === undefined) {
    try {
      real = realpathSync(file);
    } catch {
      real = resolve(file); // a missing file fails later, in ORT, with its own message
    }
    cache.set(file, real);
  }
  return real;
}

/** Serializes a graph as an ONNX ModelProto. */
export function exportOnnx(graph: Graph, opts: ExportOptions = {}): OnnxArtifact {
  const realPaths = new Map<string, string>();
  const files = graph.initializers.flatMap((i) => (i.data.kind === 'file' ? [canonicalPath(i.data.location.file, realPaths)] : []));
  const weightsFolder = files.length ? commonFolder(files) : undefined;
  const memoryData: { path: string; data: Uint8Array }[] = [];
  // ORT takes external data either from files in one folder or from an in-memory table,
  // never both: with file-backed weights present, in-memory ones must go inline.
  const memoryBytes = graph.initializers.reduce((n, i) => n + (i.data.kind === 'tensor' ? i.data.tensor.data.byteLength : 0), 0);
  const inlineAll = files.length > 0;
  if (inlineAll && memoryBytes > MAX_INLINE_TOTAL) {
    throw new Error(`graph ${graph.name}: ${(memoryBytes / 2 ** 30).toFixed(1)} GiB of in-memory weights cannot be inlined beside file-backed ones; load all weights into memory instead`);
  }
  const initializer: onnxProto.onnx.ITensorProto[] = graph.initializers.map((init) => {
    const { value, data } = init;
    const dims = value.shape as number[];
    const dataType = ONNX_ELEM_TYPE[value.dtype];
    if (data.kind === 'tensor' && (inlineAll || data.tensor.data.byteLength < INLINE_LIMIT)) return tensorProto(value.name, data.tensor);
    let location: string, offset: number, length: number;
    if (data.kind === 'file') {
      location = relative(weightsFolder!, canonicalPath(data.location.file, realPaths)).split(sep).join('/');
      offset = data.location.byteOffset;
      length = data.location.byteLength;
    } else {
      location = `__memory__/${memoryData.length}_${value.name.replace(/[^A-Za-z0-9_.-]/g, '_')}.bin`;
      memoryData.push({ path: location, data: bytesOf(data.tensor.data) });
      offset = 0;
      length = data.tensor.data.byteLength;
    }
    return {
      name: value.name, dims, dataType,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ],
    };
  });
  const usesMs = usesDomain(graph, 'com.microsoft');
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'mobillama-v',
    opsetImport: [
      { domain: '', version: opts.opset ?? 18 },
      ...(usesMs ? [{ domain: 'com.microsoft', version: opts.msOpset ?? 1 }] : []),
    ],
    graph: {
      name: graph.name,
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
      initializer,
      node: nodeProtos(graph),
    },
  });
  return { model: onnx.ModelProto.encode(model).finish(), weightsFolder, memoryData };
}
