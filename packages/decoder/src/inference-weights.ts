import { join } from 'node:path';
import {
  float32ToF16, floatLinear, isQuantized, loadFloatWeight, loadQuantizedLinear, memoryWeight, openWeights, quantizeLinear, quantizedNames,
  readFloatWeight, readJsonFile, readQuantizationConfig, readRefFloat32, toFloat32,
  type HostTensor, type LinearWeight, type Q4Options, type QuantizationConfig, type QuantizeMode, type WeightFormat,
  type WeightRef, type WeightSource,
} from '@mobillama/core';
import { ConfigError, decoderConfigFrom, type DecoderConfig, type HfLlamaConfigJson } from './config.js';
import { findDecoderPrefix, loadDecoder, type LoadedDecoder } from './weights.js';

// The decoder's weights as the inference graph takes them: every linear layer in the
// format its kernel wants (float, q8 or q4), read from a quantized checkpoint as stored or
// quantized at load from a float one. Training keeps using loadDecoder's float WeightRefs.

export interface InferenceLayer {
  readonly inputNorm: WeightRef;
  readonly q: LinearWeight; readonly k: LinearWeight; readonly v: LinearWeight; readonly o: LinearWeight;
  readonly postAttentionNorm: WeightRef;
}

export interface InferenceFfn {
  readonly gate: LinearWeight; readonly up: LinearWeight; readonly down: LinearWeight;
}

export interface InferenceWeights {
  readonly layers: readonly InferenceLayer[];
  /** Each FFN once, however many layers use it (config.ffnOfLayer). */
  readonly ffns: readonly InferenceFfn[];
  readonly finalNorm: WeightRef;
  readonly lmHead: LinearWeight;
  /**
   * Token embeddings [V, H], in memory: the lookup happens in JS so image features can be
   * spliced in. F32, or F16 for quantized models (rows are widened when looked up; half the
   * memory of the largest tensor a quantized model keeps in JS).
   */
  readonly embedTokens: HostTensor & { data: Float32Array | Uint16Array };
}

export interface InferenceDecoder {
  readonly config: DecoderConfig;
  readonly weights: InferenceWeights;
  /** The format of the linear layers as loaded (after any quantization at load). */
  readonly format: WeightFormat;
  readonly dir: string;
  /** Stays open while file-backed weights may be read. */
  readonly source: WeightSource;
}

export interface InferenceLoadOptions {
  /** Quantize a float checkpoint's linear layers at load. A quantized checkpoint loads as stored. */
  quantize?: QuantizeMode;
  /** q4 options for quantizing at load (default: blocks of 32, no zero points). */
  q4?: Q4Options;
  source?: WeightSource;
  configJson?: HfLlamaConfigJson & { quantization?: unknown };
}

/** Linear-layer names (under the key prefix) of one layer, and of its FFN. */
export const ATTN_LINEARS = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const FFN_LINEARS = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** The key prefixes of the decoder's linear layers, in the order a quantized checkpoint lists them. */
export function decoderModulePatterns(prefix: string): string[] {
  return [
    ...ATTN_LINEARS.map((m) => `${prefix}model.layers.*.self_attn.${m}`),
    ...FFN_LINEARS.map((m) => `${prefix}model.layers.*.mlp.${m}`),
    `${prefix}lm_head`,
  ];
}

/** The quantization field of a decoder config (top level, or the VLM's text_config). */
export function decoderQuantization(cfg: { quantization?: unknown }, file: string): QuantizationConfig | null {
  return readQuantizationConfig(cfg.quantization, file);
}

/**
 * Loads a decoder folder for inference: a Hugging Face float checkpoint (fp32/bf16/f16,
 * any layout loadDecoder reads), optionally quantized at load, or a quantized checkpoint
 * in the mobillama-v layout (its tensors stay in the file).
 */
export async function loadInferenceDecoder(dir: string, opts: InferenceLoadOptions = {}): Promise<InferenceDecoder> {
  const cfgFile = join(dir, 'config.json');
  const cfgJson = opts.configJson ?? await readJsonFile<HfLlamaConfigJson & { quantization?: unknown }>(cfgFile);
  const q = decoderQuantization(cfgJson, cfgFile);
  if (q && isQuantized(q.weights)) {
    if (opts.quantize && opts.quantize !== q.weights) {
      throw new ConfigError(`${dir} is already quantized (${q.weights}); quantizing it to ${opts.quantize} needs the float checkpoint`);
    }
    return loadQuantizedDecoder(dir, cfgJson, q.weights, opts.source);
  }
  const loaded = await loadDecoder(dir, { source: opts.source, configJson: cfgJson });
  try {
    return await toInference(loaded, opts.quantize, opts.q4, q?.weights);
  } catch (e) {
    if (!opts.source) await loaded.source.close();
    throw e;
  }
}

/** Inference weights from loadDecoder's float weights, quantized when `mode` is given. */
export async function toInference(loaded: LoadedDecoder, mode?: QuantizeMode, q4?: Q4Options, stored?: WeightFormat): Promise<InferenceDecoder> {
  const w = loaded.weights;
  const p = findDecoderPrefix(loaded.source.names());
  const lin = (name: string, ref: WeightRef) => (mode ? quantizeLinear(name, ref, mode, q4) : Promise.resolve(floatLinear(ref)));
  // With quantized linears in memory, the norms go to memory too: ORT cannot take external
  // data from files and from memory in one session (exportOnnx would inline everything).
  const norm = async (ref: WeightRef) => (mode && ref.data.kind === 'file' ? memoryWeight(ref.name, { dtype: 'F32', shape: ref.shape, data: await readRefFloat32(ref) }) : ref);
  const layers: InferenceLayer[] = [];
  for (let i = 0; i < w.layers.length; i++) {
    const l = w.layers[i], base = `${p}model.layers.${i}.self_attn`;
    layers.push({
      inputNorm: await norm(l.inputNorm),
      q: await lin(`${base}.q_proj`, l.attn.q), k: await lin(`${base}.k_proj`, l.attn.k),
      v: await lin(`${base}.v_proj`, l.attn.v), o: await lin(`${base}.o_proj`, l.attn.o),
      postAttentionNorm: await norm(l.postAttentionNorm),
    });
  }
  const ffns: InferenceFfn[] = [];
  for (let f = 0; f < w.ffns.length; f++) {
    const base = `${p}model.layers.${loaded.config.ffnOfLayer.indexOf(f)}.mlp`;
    const ffn = w.ffns[f];
    ffns.push({ gate: await lin(`${base}.gate_proj`, ffn.gate), up: await lin(`${base}.up_proj`, ffn.up), down: await lin(`${base}.down_proj`, ffn.down) });
  }
  return {
    config: loaded.config,
    weights: {
      layers, ffns, finalNorm: await norm(w.finalNorm), lmHead: await lin(`${p}lm_head`, w.lmHead),
      // Quantized models keep their embeddings as F16, as a quantized checkpoint stores them.
      embedTokens: mode ? { dtype: 'F16', shape: w.embedTokens.shape, data: float32ToF16(w.embedTokens.data) } : w.embedTokens,
    },
    format: mode ?? (stored === 'f16' ? 'f16' : 'f32'),
    dir: loaded.dir,
    source: loaded.source,
  };
}

async function loadQuantizedDecoder(dir: string, cfgJson: HfLlamaConfigJson, mode: QuantizeMode, source?: WeightSource): Promise<InferenceDecoder> {
  const src = source ?? await openWeights(dir);
  try {
    const p = findDecoderPrefix(src.names());
    const numLayers = cfgJson.num_hidden_layers;
    if (typeof numLayers !== 'number') throw new ConfigError(`${join(dir, 'config.json')}: missing num_hidden_layers`);
    const layerName = (i: number, m: string) => `${p}model.layers.${i}.${m}`;
    // A quantized checkpoint stores each FFN once, under the first layer that uses it, and
    // says which layer uses which in ffn_groups (written by `mobillama-v quantize`).
    let ffnOfLayer: number[] = [];
    if (cfgJson.ffn_groups) ffnOfLayer = cfgJson.ffn_groups;
    else {
      for (let i = 0, g = -1; i < numLayers; i++) {
        if (src.has(quantizedNames(layerName(i, 'mlp.gate_proj')).qweight)) g++;
        if (g < 0) throw new ConfigError(`${src.path}: layer 0 has no MLP weights`);
        ffnOfLayer.push(g);
      }
    }
    if (ffnOfLayer.length !== numLayers) throw new ConfigError(`${join(dir, 'config.json')}: ffn_groups has ${ffnOfLayer.length} entries for ${numLayers} layers`);
    const outOf = (name: string): number => {
      const info = src.info(quantizedNames(name).qweight);
      return mode === 'q8' ? info.shape[1] : info.shape[0];
    };
    const need = (n: string) => {
      if (!src.has(n) && !src.has(quantizedNames(n.replace(/\.weight$/, '')).qweight)) throw new ConfigError(`${src.path}: missing tensor ${n}`);
      return n;
    };
    const embedName = need(`${p}model.embed_tokens.weight`);
    const stored = await src.read(embedName);
    const embed: HostTensor & { data: Float32Array | Uint16Array } = stored.dtype === 'F16'
      ? { dtype: 'F16', shape: stored.shape, data: stored.data as Uint16Array } : await readFloatWeight(src, embedName);
    const [vocab, hidden] = embed.shape;
    need(layerName(0, 'self_attn.q_proj.weight'));
    need(layerName(0, 'mlp.gate_proj.weight'));
    const config = decoderConfigFrom(cfgJson, {
      qRows: outOf(layerName(0, 'self_attn.q_proj')), kRows: outOf(layerName(0, 'self_attn.k_proj')),
      vocab, hidden, intermediate: outOf(layerName(0, 'mlp.gate_proj')),
    }, ffnOfLayer, join(dir, 'config.json'));
    const attnIn = config.numHeads * config.headDim;
    const ql = (name: string, inFeatures: number) => loadQuantizedLinear(src, name, mode, inFeatures);
    const norm = (name: string) => loadFloatWeight(src, need(name));
    const layers: InferenceLayer[] = [];
    for (let i = 0; i < numLayers; i++) {
      layers.push({
        inputNorm: await norm(layerName(i, 'input_layernorm.weight')),
        q: await ql(layerName(i, 'self_attn.q_proj'), hidden), k: await ql(layerName(i, 'self_attn.k_proj'), hidden),
        v: await ql(layerName(i, 'self_attn.v_proj'), hidden), o: await ql(layerName(i, 'self_attn.o_proj'), attnIn),
        postAttentionNorm: await norm(layerName(i, 'post_attention_layernorm.weight')),
      });
    }
    const ffns: InferenceFfn[] = [];
    for (let f = 0; f <= Math.max(...ffnOfLayer); f++) {
      const owner = ffnOfLayer.indexOf(f);
      ffns.push({
        gate: await ql(layerName(owner, 'mlp.gate_proj'), hidden), up: await ql(layerName(owner, 'mlp.up_proj'), hidden),
        down: await ql(layerName(owner, 'mlp.down_proj'), config.intermediateSize),
      });
    }
    const lm = `${p}lm_head`;
    const tied = !src.has(quantizedNames(lm).qweight) && !src.has(`${lm}.weight`);
    const lmHead = src.has(quantizedNames(lm).qweight) ? await ql(lm, hidden)
      : src.has(`${lm}.weight`) ? floatLinear(await loadFloatWeight(src, `${lm}.weight`))
        : floatLinear(memoryWeight(`${lm}.weight`, toFloat32(embed)));
    return {
      config: { ...config, tieWordEmbeddings: config.tieWordEmbeddings || tied },
      weights: { layers, ffns, finalNorm: await norm(`${p}model.norm.weight`), lmHead, embedTokens: embed },
      format: mode, dir, source: src,
    };
  } catch (e) {
    if (!source) await src.close();
    throw e;
  }
}
