import { dirname, join } from 'node:path';
import { stat } from 'node:fs/promises';
import {
  isQuantized, loadFloatWeight, loadQuantizedLinear, openWeights, quantizedNames, readJsonFile, readQuantizationConfig,
  type LinearWeight, type QuantizeMode, type WeightRef, type WeightSource,
} from '@mobillama/core';
import {
  VisionConfigError, clipVisionConfigFrom, readPreprocessorJson,
  type ClipVisionConfig, type HfClipConfigJson, type HfClipPreprocessorJson,
} from './config.js';

export interface LinearWeights {
  readonly weight: WeightRef;
  readonly bias: WeightRef;
  /**
   * Set when the layer runs on a quantized kernel (inference only). In a quantized
   * checkpoint `weight` is then the stored int8/uint8 tensor, which float graphs (training)
   * refuse by dtype.
   */
  readonly kernel?: LinearWeight;
}
export interface NormWeights { readonly weight: WeightRef; readonly bias: WeightRef }

export interface ClipLayerWeights {
  readonly layerNorm1: NormWeights;
  readonly q: LinearWeights; readonly k: LinearWeights; readonly v: LinearWeights; readonly out: LinearWeights;
  readonly layerNorm2: NormWeights;
  readonly fc1: LinearWeights; readonly fc2: LinearWeights;
}

/** A CLIP vision tower's weights as HF names them (under `…vision_model.`). */
export interface ClipVisionWeights {
  /** Conv weight [D, C, P, P] (no bias); the graph uses it as a [D, C·P·P] linear. */
  readonly patchEmbedding: WeightRef;
  readonly classEmbedding: WeightRef;
  readonly positionEmbedding: WeightRef;
  readonly preLayerNorm: NormWeights;
  /** The first `layers` encoder layers (all, unless fewer were asked for). */
  readonly layers: readonly ClipLayerWeights[];
  readonly postLayerNorm: NormWeights;
}

export interface LoadedClipVision {
  readonly config: ClipVisionConfig;
  readonly weights: ClipVisionWeights;
  readonly dir: string;
  /** Key prefix before `vision_model.` ('' for CLIP, 'vision_tower.' for llava-hf, …). */
  readonly prefix: string;
  /** Stays open while file-backed weights may be read. */
  readonly source: WeightSource;
}

export interface LoadClipVisionOptions {
  /** An already open weight source (a combined VLM checkpoint); not closed on failure. */
  source?: WeightSource;
  /** config.json contents, when the folder has none (LLaVA's own configs only name the tower). */
  configJson?: HfClipConfigJson;
  /** preprocessor_config.json contents (null: CLIPImageProcessor defaults); default: read the folder's. */
  preprocessorJson?: HfClipPreprocessorJson | null;
  /**
   * Load only the first n encoder layers (feature layer -2 never needs the last one); a
   * function gets the config first (e.g. `(cfg) => layersNeeded(cfg, graphOptions)`).
   */
  layers?: number | ((config: ClipVisionConfig) => number);
}

const CLS_KEY = 'vision_model.embeddings.class_embedding';

/**
 * The prefix before `vision_model.`: '' (CLIPModel / CLIPVisionModel), 'vision_tower.'
 * (llava-hf), 'model.vision_tower.vision_tower.' (LLaVA checkpoints that carry the tower).
 */
export function findVisionPrefix(names: readonly string[]): string {
  const hits = names.filter((n) => n === CLS_KEY || n.endsWith(`.${CLS_KEY}`));
  if (hits.length === 0) throw new VisionConfigError(`no ${CLS_KEY} in the weights: not a CLIP vision checkpoint`);
  if (hits.length > 1) throw new VisionConfigError(`several vision towers in the weights: ${hits.join(', ')}`);
  return hits[0].slice(0, -CLS_KEY.length);
}

/** How many encoder layers the weights hold (consecutive from 0). */
function countLayers(src: WeightSource, p: string): number {
  let n = 0;
  const q = (i: number) => `${p}vision_model.encoder.layers.${i}.self_attn.q_proj`;
  while (src.has(`${q(n)}.weight`) || src.has(quantizedNames(q(n)).qweight)) n++;
  return n;
}

/**
 * Loads a CLIP vision tower from a Hugging Face folder (config.json, optional
 * preprocessor_config.json, weights as safetensors / sharded / pytorch_model.bin), or from
 * a weight file whose folder holds the config. Only `…vision_model.*` keys are read.
 */
export async function loadClipVision(path: string, opts: LoadClipVisionOptions = {}): Promise<LoadedClipVision> {
  const dir = await isDirectory(path) ? path : dirname(path);
  const configFile = join(dir, 'config.json');
  const cfgJson = opts.configJson ?? await readJsonFile<HfClipConfigJson>(configFile);
  const preJson = opts.preprocessorJson !== undefined ? opts.preprocessorJson : await readPreprocessorJson(dir);
  const src = opts.source ?? await openWeights(path);
  try {
    const p = findVisionPrefix(src.names());
    const key = (k: string) => {
      const n = `${p}vision_model.${k}`;
      if (!src.has(n)) throw new VisionConfigError(`${src.path}: missing tensor ${n}`);
      return n;
    };
    const info = (k: string) => src.info(key(k));
    // A quantized checkpoint (mobillama-v layout) stores the encoder's linear layers as qweight/scales.
    const q = readQuantizationConfig(cfgJson.quantization ?? cfgJson.vision_config?.quantization, configFile);
    const mode: QuantizeMode | null = q && isQuantized(q.weights) ? q.weights : null;
    const fc1 = `${p}vision_model.encoder.layers.0.mlp.fc1`;
    const intermediate = mode && src.has(quantizedNames(fc1).qweight)
      ? src.info(quantizedNames(fc1).qweight).shape[mode === 'q8' ? 1 : 0]
      : info('encoder.layers.0.mlp.fc1.weight').shape[0];
    const config = clipVisionConfigFrom(cfgJson, {
      hidden: info('embeddings.class_embedding').shape[0],
      patch: info('embeddings.patch_embedding.weight').shape,
      positions: info('embeddings.position_embedding.weight').shape[0],
      intermediate,
    }, preJson, configFile);
    const stored = countLayers(src, p);
    const wanted = typeof opts.layers === 'function' ? opts.layers(config) : opts.layers ?? config.numLayers;
    if (!Number.isInteger(wanted) || wanted < 0 || wanted > config.numLayers) {
      throw new VisionConfigError(`cannot load ${wanted} layers of a ${config.numLayers}-layer tower`);
    }
    if (stored < wanted) throw new VisionConfigError(`${src.path}: the weights hold ${stored} encoder layers, ${wanted} are needed (num_hidden_layers ${config.numLayers})`);
    const w = (k: string) => loadFloatWeight(src, key(k));
    const lin = async (k: string, inFeatures = config.hiddenSize): Promise<LinearWeights> => {
      const name = `${p}vision_model.${k}`;
      if (mode && src.has(quantizedNames(name).qweight)) {
        const kernel = await loadQuantizedLinear(src, name, mode, inFeatures);
        return { weight: kernel.kind === 'float' ? kernel.weight : kernel.qweight, bias: await w(`${k}.bias`), kernel };
      }
      return { weight: await w(`${k}.weight`), bias: await w(`${k}.bias`) };
    };
    const layers: ClipLayerWeights[] = [];
    for (let i = 0; i < wanted; i++) {
      const l = `encoder.layers.${i}`;
      layers.push({
        layerNorm1: await lin(`${l}.layer_norm1`),
        q: await lin(`${l}.self_attn.q_proj`),
        k: await lin(`${l}.self_attn.k_proj`),
        v: await lin(`${l}.self_attn.v_proj`),
        out: await lin(`${l}.self_attn.out_proj`),
        layerNorm2: await lin(`${l}.layer_norm2`),
        fc1: await lin(`${l}.mlp.fc1`),
        fc2: await lin(`${l}.mlp.fc2`, config.intermediateSize),
      });
    }
    const weights: ClipVisionWeights = {
      patchEmbedding: await w('embeddings.patch_embedding.weight'),
      classEmbedding: await w('embeddings.class_embedding'),
      positionEmbedding: await w('embeddings.position_embedding.weight'),
      // HF's spelling: "pre_layrnorm".
      preLayerNorm: await lin('pre_layrnorm'),
      layers,
      postLayerNorm: await lin('post_layernorm'),
    };
    return { config, weights, dir, prefix: p, source: src };
  } catch (e) {
    if (!opts.source) await src.close();
    throw e;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false; // openWeights reports the missing path
  }
}
