/**
 * Exports a MobiLlama/LLaMA decoder folder as a llama-architecture GGUF that llama.cpp
 * (and Ollama) load: `llama.*` hyper-parameters, llama.cpp's tensor names, Q/K rows
 * permuted for ggml's RoPE, the tokenizer as `tokenizer.ggml.*`.
 *
 * llama.cpp has no shared FFN, so the one MobiLlama FFN is written into every layer (the
 * file is larger than the checkpoint's unique weights; the encoded bytes are computed once
 * and reused). Head counts are the loader's, i.e. from the weight shapes: MobiLlama-05B's
 * config.json says 4 KV heads while its weights are multi-head, and a converter that
 * trusted the config would permute K with the wrong head count.
 */
import { open, readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { toFloat32, type WeightRef } from '@mobillama/core';
import { ConfigError, type DecoderConfig } from '../config.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { loadDecoder, type LoadedDecoder } from '../weights.js';
import { encodeGgml, type GgmlType } from './ggml-types.js';
import { ggufVocabFor, type GgufVocab } from './vocab.js';
import { gguf, writeGguf, type GgufTensorSpec, type GgufValue } from './writer.js';

export type GgufExportType = 'f32' | 'f16' | 'q8_0' | 'q4_0';
export const GGUF_EXPORT_TYPES: readonly GgufExportType[] = ['f32', 'f16', 'q8_0', 'q4_0'];

/** llama_ftype values written as general.file_type (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, …). */
export const GGUF_FILE_TYPE: Readonly<Record<GgufExportType, number>> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7 };

const MATRIX_TYPE: Readonly<Record<GgufExportType, GgmlType>> = { f32: 'F32', f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** GGML_QNT_VERSION: the block layout generation of the quantized types. */
const QUANTIZATION_VERSION = 2;

export interface GgufExportOptions {
  /** Type of the 2-D weights (default f16). Norm weights are always f32, as llama.cpp's converter writes them. */
  readonly type?: GgufExportType;
  /** general.name (default: the folder's name). */
  readonly name?: string;
  /** The tokenizer whose ids the model uses (default: what `loadTokenizer(dir)` loads). */
  readonly tokenizer?: Tokenizer;
  readonly onProgress?: (index: number, count: number, tensor: string) => void;
}

export interface GgufExportResult {
  readonly path: string;
  readonly bytes: number;
  readonly type: GgufExportType;
  readonly tensors: number;
  /** Layers whose FFN was written from a shared one (all but the first user of each FFN). */
  readonly ffnCopies: number;
  readonly vocab: Pick<GgufVocab, 'source' | 'scoresFrom' | 'padded'> & { readonly size: number };
}

/**
 * Q/K rows reordered for ggml's RoPE (`LlamaModel.permute` in llama.cpp's
 * convert_hf_to_gguf.py): HF rotates dimension j with j + d/2 (rotate_half), ggml's
 * "normal" RoPE rotates adjacent pairs (2j, 2j+1); per head, row s·d/2 + j moves to 2j + s.
 */
export function permuteForGgmlRope(w: Float32Array, nHead: number, cols: number): Float32Array {
  return reorderHeadRows(w, nHead, cols, false);
}

/** The inverse of permuteForGgmlRope. */
export function unpermuteFromGgmlRope(w: Float32Array, nHead: number, cols: number): Float32Array {
  return reorderHeadRows(w, nHead, cols, true);
}

function reorderHeadRows(w: Float32Array, nHead: number, cols: number, inverse: boolean): Float32Array {
  const rows = w.length / cols;
  const d = rows / nHead;
  if (!Number.isInteger(rows) || !Number.isInteger(d) || d % 2 !== 0) throw new RangeError(`cannot permute ${rows} rows into ${nHead} heads of even size`);
  const half = d / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++) {
    for (let s = 0; s < 2; s++) {
      for (let j = 0; j < half; j++) {
        const hf = h * d + s * half + j; // HF row
        const gg = h * d + 2 * j + s; // ggml row
        const [from, to] = inverse ? [gg, hf] : [hf, gg];
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** A weight's values as float32 (file-backed fp32 weights are read from their file). */
async function refValues(ref: WeightRef): Promise<Float32Array> {
  if (ref.dtype !== 'float32') throw new ConfigError(`GGUF export: weight ${ref.name} is ${ref.dtype}; only float weights can be exported`);
  if (ref.data.kind === 'tensor') return toFloat32(ref.data.tensor).data;
  const { file, byteOffset, byteLength } = ref.data.location;
  const fh = await open(file, 'r');
  try {
    const buf = new Uint8Array(byteLength);
    let done = 0;
    while (done < byteLength) {
      const { bytesRead } = await fh.read(buf, done, byteLength - done, byteOffset + done);
      if (bytesRead === 0) throw new Error(`${file}: ends inside weight ${ref.name}`);
      done += bytesRead;
    }
    return new Float32Array(buf.buffer, 0, byteLength / 4);
  } finally {
    await fh.close();
  }
}

/** The `general.*`, `llama.*` and `tokenizer.*` metadata. */
export function llamaGgufMetadata(config: DecoderConfig, vocab: GgufVocab, type: GgufExportType, name: string): [string, GgufValue][] {
  const md: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(name)],
    ['general.file_type', gguf.u32(GGUF_FILE_TYPE[type])],
    ['general.quantization_version', gguf.u32(QUANTIZATION_VERSION)],
    ['llama.vocab_size', gguf.u32(config.vocabSize)],
    ['llama.context_length', gguf.u32(config.maxPositions)],
    ['llama.embedding_length', gguf.u32(config.hiddenSize)],
    ['llama.block_count', gguf.u32(config.numLayers)],
    ['llama.feed_forward_length', gguf.u32(config.intermediateSize)],
    ['llama.rope.dimension_count', gguf.u32(config.headDim)],
    ['llama.rope.freq_base', gguf.f32(config.ropeTheta)],
    ['llama.attention.head_count', gguf.u32(config.numHeads)],
    // From the weights, not config.json (see the module comment).
    ['llama.attention.head_count_kv', gguf.u32(config.numKvHeads)],
    ['llama.attention.key_length', gguf.u32(config.headDim)],
    ['llama.attention.value_length', gguf.u32(config.headDim)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(config.rmsNormEps)],
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.tokens', gguf.strings(vocab.tokens)],
    ['tokenizer.ggml.scores', gguf.f32s(vocab.scores)],
    ['tokenizer.ggml.token_type', gguf.i32s(vocab.tokenTypes)],
  ];
  const id = (key: string, v: number | null): void => {
    if (v !== null) md.push([`tokenizer.ggml.${key}`, gguf.u32(v)]);
  };
  id('bos_token_id', vocab.bosId ?? config.bosId);
  id('eos_token_id', vocab.eosId ?? config.eosIds[0] ?? null);
  id('unknown_token_id', vocab.unkId);
  id('padding_token_id', vocab.padId ?? config.padId);
  md.push(['tokenizer.ggml.add_bos_token', gguf.bool(vocab.addBos)], ['tokenizer.ggml.add_eos_token', gguf.bool(vocab.addEos)]);
  return md;
}

/** The tensor list of a loaded decoder, with lazily encoded data. */
export function llamaGgufTensors(loaded: LoadedDecoder, type: GgufExportType): { tensors: GgufTensorSpec[]; ffnCopies: number } {
  const { config, weights } = loaded;
  const H = config.hiddenSize;
  const matrixType = (cols: number): GgmlType => {
    const t = MATRIX_TYPE[type];
    // Block types need whole 32-value blocks per row; llama.cpp's tools fall back the same way.
    return (t === 'Q8_0' || t === 'Q4_0') && cols % 32 !== 0 ? 'F16' : t;
  };
  const tensors: GgufTensorSpec[] = [];
  const matrix = (name: string, ref: WeightRef | Float32Array, shape: readonly number[], transform?: (v: Float32Array) => Float32Array): GgufTensorSpec => {
    const [rows, cols] = shape;
    const t = matrixType(cols);
    return {
      name, ne: [cols, rows], type: t,
      data: async () => {
        const v = ref instanceof Float32Array ? ref : await refValues(ref);
        return encodeGgml(t, transform ? transform(v) : v);
      },
    };
  };
  const norm = (name: string, ref: WeightRef): GgufTensorSpec => ({
    name, ne: [ref.shape[0]], type: 'F32', data: async () => encodeGgml('F32', await refValues(ref)),
  });

  // Each FFN is encoded once and kept until its last layer is written.
  const usesLeft = new Map<number, number>();
  for (const f of config.ffnOfLayer) usesLeft.set(f, (usesLeft.get(f) ?? 0) + 1);
  const encoded = new Map<string, Promise<Uint8Array>>();
  let ffnCopies = 0;
  const seen = new Set<number>();
  const ffnTensor = (layer: number, part: 'gate' | 'up' | 'down'): GgufTensorSpec => {
    const f = config.ffnOfLayer[layer];
    const ref = weights.ffns[f][part];
    const spec = matrix(`blk.${layer}.ffn_${part}.weight`, ref, ref.shape);
    const key = `${f}.${part}`;
    return {
      ...spec,
      data: async () => {
        let p = encoded.get(key);
        if (!p) {
          p = Promise.resolve(spec.data());
          encoded.set(key, p);
        }
        const bytes = await p;
        if (part === 'down') {
          const left = (usesLeft.get(f) ?? 1) - 1;
          usesLeft.set(f, left);
          if (left === 0) for (const k of ['gate', 'up', 'down']) encoded.delete(`${f}.${k}`);
        }
        return bytes;
      },
    };
  };

  tensors.push(matrix('token_embd.weight', weights.embedTokens.data, weights.embedTokens.shape));
  weights.layers.forEach((layer, i) => {
    const { q, k, v, o } = layer.attn;
    if (seen.has(config.ffnOfLayer[i])) ffnCopies++;
    seen.add(config.ffnOfLayer[i]);
    tensors.push(
      norm(`blk.${i}.attn_norm.weight`, layer.inputNorm),
      matrix(`blk.${i}.attn_q.weight`, q, q.shape, (w) => permuteForGgmlRope(w, config.numHeads, H)),
      matrix(`blk.${i}.attn_k.weight`, k, k.shape, (w) => permuteForGgmlRope(w, config.numKvHeads, H)),
      matrix(`blk.${i}.attn_v.weight`, v, v.shape),
      matrix(`blk.${i}.attn_output.weight`, o, o.shape),
      norm(`blk.${i}.ffn_norm.weight`, layer.postAttentionNorm),
      ffnTensor(i, 'gate'),
      ffnTensor(i, 'up'),
      ffnTensor(i, 'down'),
    );
  });
  tensors.push(norm('output_norm.weight', weights.finalNorm));
  // Tied embeddings: llama.cpp uses token_embd for the output when output.weight is absent.
  if (!config.tieWordEmbeddings) tensors.push(matrix('output.weight', weights.lmHead, weights.lmHead.shape));
  return { tensors, ffnCopies };
}

/**
 * Our int8/int4 checkpoints (config.json `quantization.weights` q8/q4) hold per-channel or
 * block-of-32 codes that are not ggml's blocks: converting them would round twice, so the
 * export wants the float checkpoint they came from.
 */
async function refuseQuantizedCheckpoint(dir: string): Promise<void> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  } catch {
    return; // loadDecoder reports a missing or broken config.json
  }
  const q = typeof cfg === 'object' && cfg !== null ? (cfg as { quantization?: { weights?: unknown } }).quantization : undefined;
  if (q && (q.weights === 'q8' || q.weights === 'q4')) {
    throw new ConfigError(`${dir} is a ${q.weights} checkpoint; export the float checkpoint it was quantized from (converting its codes to ggml blocks would round twice)`);
  }
}

/** Exports the decoder in `dir` to `outPath` (written atomically). */
export async function exportDecoderToGguf(dir: string, outPath: string, opts: GgufExportOptions = {}): Promise<GgufExportResult> {
  const type = opts.type ?? 'f16';
  if (!GGUF_EXPORT_TYPES.includes(type)) throw new ConfigError(`GGUF export: unknown type ${String(type)} (${GGUF_EXPORT_TYPES.join(', ')})`);
  await refuseQuantizedCheckpoint(dir);
  const loaded = await loadDecoder(dir);
  try {
    const { config } = loaded;
    if (config.headDim % 2 !== 0) throw new ConfigError(`${dir}: head_dim ${config.headDim} is odd; RoPE needs pairs`);
    const vocab = await ggufVocabFor(dir, config.vocabSize, opts.tokenizer);
    const name = opts.name ?? basename(resolve(dir));
    const { tensors, ffnCopies } = llamaGgufTensors(loaded, type);
    const res = await writeGguf(outPath, llamaGgufMetadata(config, vocab, type, name), tensors, { onTensor: opts.onProgress });
    return {
      path: res.path, bytes: res.bytes, type, tensors: tensors.length, ffnCopies,
      vocab: { source: vocab.source, scoresFrom: vocab.scoresFrom, padded: vocab.padded, size: vocab.tokens.length },
    };
  } finally {
    await loaded.source.close();
  }
}
