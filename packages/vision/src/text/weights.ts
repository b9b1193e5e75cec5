import { dirname, join } from 'node:path';
import { stat } from 'node:fs/promises';
import { loadFloatWeight, openWeights, readJsonFile, type WeightRef, type WeightSource } from '@mobillama/core';
import { VisionConfigError } from '../config.js';
import type { ClipLayerWeights, LinearWeights, NormWeights } from '../weights.js';
import { clipTextConfigFrom, type ClipTextConfig, type HfClipModelConfigJson } from './config.js';

/** A CLIP text tower's weights as HF names them (under `…text_model.`). */
export interface ClipTextWeights {
  /** [vocab, D]. */
  readonly tokenEmbedding: WeightRef;
  /** [maxPositions, D]. */
  readonly positionEmbedding: WeightRef;
  /** Same layout as the vision tower's layers. */
  readonly layers: readonly ClipLayerWeights[];
  readonly finalLayerNorm: NormWeights;
}

export interface LoadedClipText {
  readonly config: ClipTextConfig;
  readonly weights: ClipTextWeights;
  /** `text_projection.weight` [projectionDim, D] (no bias), when the checkpoint has one (CLIPModel, …WithProjection). */
  readonly projection: WeightRef | null;
  readonly dir: string;
  /** Key prefix before `text_model.` ('' for CLIPModel / CLIPTextModel). */
  readonly prefix: string;
  /** Stays open while file-backed weights may be read. */
  readonly source: WeightSource;
}

export interface LoadClipTextOptions {
  /** An already open weight source (shared with the vision tower); not closed on failure. */
  source?: WeightSource;
  /** config.json contents, when the folder has none. */
  configJson?: HfClipModelConfigJson;
}

const TOKEN_KEY = 'text_model.embeddings.token_embedding.weight';

/** The prefix before `text_model.` ('' for CLIP checkpoints; e.g. 'cond_stage_model.transformer.' elsewhere). */
export function findTextPrefix(names: readonly string[]): string {
  const hits = names.filter((n) => n === TOKEN_KEY || n.endsWith(`.${TOKEN_KEY}`));
  if (hits.length === 0) throw new VisionConfigError(`no ${TOKEN_KEY} in the weights: not a CLIP text checkpoint`);
  if (hits.length > 1) throw new VisionConfigError(`several text towers in the weights: ${hits.join(', ')}`);
  return hits[0].slice(0, -TOKEN_KEY.length);
}

function countLayers(src: WeightSource, p: string): number {
  let n = 0;
  while (src.has(`${p}text_model.encoder.layers.${n}.self_attn.q_proj.weight`)) n++;
  return n;
}

/**
 * Loads a CLIP text tower (and `text_projection`) from a Hugging Face folder or weight
 * file. Only `…text_model.*` and `…text_projection.weight` are read; the
 * `position_ids` buffer older checkpoints carry is ignored.
 */
export async function loadClipText(path: string, opts: LoadClipTextOptions = {}): Promise<LoadedClipText> {
  const dir = await isDirectory(path) ? path : dirname(path);
  const configFile = join(dir, 'config.json');
  const cfgJson = opts.configJson ?? await readJsonFile<HfClipModelConfigJson>(configFile);
  const src = opts.source ?? await openWeights(path);
  try {
    const p = findTextPrefix(src.names());
    const key = (k: string) => {
      const n = `${p}text_model.${k}`;
      if (!src.has(n)) throw new VisionConfigError(`${src.path}: missing tensor ${n}`);
      return n;
    };
    const info = (k: string) => src.info(key(k));
    const config = clipTextConfigFrom(cfgJson, {
      tokens: info('embeddings.token_embedding.weight').shape,
      positions: info('embeddings.position_embedding.weight').shape[0],
      intermediate: info('encoder.layers.0.mlp.fc1.weight').shape[0],
    }, configFile);
    const stored = countLayers(src, p);
    if (stored < config.numLayers) throw new VisionConfigError(`${src.path}: the weights hold ${stored} text encoder layers, num_hidden_layers is ${config.numLayers}`);
    const w = (k: string) => loadFloatWeight(src, key(k));
    const lin = async (k: string): Promise<LinearWeights> => ({ weight: await w(`${k}.weight`), bias: await w(`${k}.bias`) });
    const layers: ClipLayerWeights[] = [];
    for (let i = 0; i < config.numLayers; i++) {
      const l = `encoder.layers.${i}`;
      layers.push({
        layerNorm1: await lin(`${l}.layer_norm1`),
        q: await lin(`${l}.self_attn.q_proj`),
        k: await lin(`${l}.self_attn.k_proj`),
        v: await lin(`${l}.self_attn.v_proj`),
        out: await lin(`${l}.self_attn.out_proj`),
        layerNorm2: await lin(`${l}.layer_norm2`),
        fc1: await lin(`${l}.mlp.fc1`),
        fc2: await lin(`${l}.mlp.fc2`),
      });
    }
    const weights: ClipTextWeights = {
      tokenEmbedding: await w('embeddings.token_embedding.weight'),
      positionEmbedding: await w('embeddings.position_embedding.weight'),
      layers,
      finalLayerNorm: await lin('final_layer_norm'),
    };
    const projName = `${p}text_projection.weight`;
    let projection: WeightRef | null = null;
    if (src.has(projName)) {
      projection = await loadFloatWeight(src, projName);
      if (projection.shape.length !== 2 || projection.shape[1] !== config.hiddenSize) {
        throw new VisionConfigError(`${src.path}: ${projName} is ${projection.shape.join('x')}, expected [projection_dim, ${config.hiddenSize}]`);
      }
    }
    return { config, weights, projection, dir, prefix: p, source: src };
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
