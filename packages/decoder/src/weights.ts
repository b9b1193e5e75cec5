import { join } from 'node:path';
import {
  loadFloatWeight, memoryWeight, openWeights, readFloatWeight, readJsonFile, sameTensor,
  type HostTensor, type WeightRef, type WeightSource,
} from '@mobillama/core';
import { ConfigError, decoderConfigFrom, type DecoderConfig, type HfLlamaConfigJson } from './config.js';

export interface AttentionWeights {
  readonly q: WeightRef; readonly k: WeightRef; readonly v: WeightRef; readonly o: WeightRef;
}
export interface FfnWeights {
  readonly gate: WeightRef; readonly up: WeightRef; readonly down: WeightRef;
}
export interface LayerWeights {
  readonly inputNorm: WeightRef;
  readonly attn: AttentionWeights;
  readonly postAttentionNorm: WeightRef;
}

/** The decoder's weights: each FFN once, however many layers use it. */
export interface DecoderWeights {
  readonly layers: readonly LayerWeights[];
  readonly ffns: readonly FfnWeights[];
  readonly finalNorm: WeightRef;
  readonly lmHead: WeightRef;
  /** Token embeddings, in memory: the lookup happens in JS so image features can be spliced in. */
  readonly embedTokens: HostTensor & { data: Float32Array };
}

export interface LoadedDecoder {
  readonly config: DecoderConfig;
  readonly weights: DecoderWeights;
  readonly dir: string;
  /** The weight source stays open while file-backed weights may be read. */
  readonly source: WeightSource;
}

const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** The key prefix before `model.embed_tokens.weight` ('' for HF LLaMA, 'language_model.' for llava-hf). */
export function findDecoderPrefix(names: readonly string[]): string {
  const hit = names.find((n) => n.endsWith('model.embed_tokens.weight'));
  if (!hit) throw new ConfigError('no model.embed_tokens.weight in the weights: not a LLaMA-style decoder checkpoint');
  return hit.slice(0, -'model.embed_tokens.weight'.length);
}

/**
 * Which FFN each layer uses: a layer whose MLP tensors equal the previous layer's group
 * (same storage, or same bytes) joins it; a layer with no MLP keys shares the previous
 * one (a checkpoint that stores the shared FFN once).
 */
export async function detectFfnSharing(src: WeightSource, prefix: string, numLayers: number): Promise<{ ffnOfLayer: number[]; owners: number[] }> {
  const key = (i: number, m: string) => `${prefix}model.layers.${i}.mlp.${m}.weight`;
  const ffnOfLayer: number[] = [];
  const owners: number[] = []; // layer whose keys hold each FFN
  for (let i = 0; i < numLayers; i++) {
    const present = MLP.filter((m) => src.has(key(i, m)));
    if (present.length === 0) {
      if (i === 0) throw new ConfigError(`${src.path}: layer 0 has no MLP weights (${key(0, 'gate_proj')})`);
      ffnOfLayer.push(ffnOfLayer[i - 1]);
      continue;
    }
    if (present.length !== MLP.length) throw new ConfigError(`${src.path}: layer ${i} has only some MLP weights (${present.join(', ')})`);
    let group = -1;
    for (let gIdx = owners.length - 1; gIdx >= 0 && group < 0; gIdx--) {
      const owner = owners[gIdx];
      // Byte comparison only against the latest group; storage identity against any.
      const adjacent = gIdx === owners.length - 1;
      let same = true;
      for (const m of MLP) {
        const a = key(owner, m), b = key(i, m);
        const ok = adjacent ? await sameTensor(src, a, b) : src.info(a).storageKey === src.info(b).storageKey;
        if (!ok) { same = false; break; }
      }
      if (same) group = gIdx;
    }
    if (group < 0) {
      group = owners.length;
      owners.push(i);
    }
    ffnOfLayer.push(group);
  }
  return { ffnOfLayer, owners };
}

/**
 * Loads a Hugging Face LLaMA/MobiLlama decoder folder: config.json plus weights in any
 * published layout. `weightsPrefix` selects the decoder inside a combined VLM checkpoint.
 */
export async function loadDecoder(dir: string, opts: { source?: WeightSource; configJson?: HfLlamaConfigJson } = {}): Promise<LoadedDecoder> {
  const cfgJson = opts.configJson ?? await readJsonFile<HfLlamaConfigJson>(join(dir, 'config.json'));
  const src = opts.source ?? await openWeights(dir);
  try {
    const names = src.names();
    const p = findDecoderPrefix(names);
    const numLayers = cfgJson.num_hidden_layers;
    if (typeof numLayers !== 'number') throw new ConfigError(`${join(dir, 'config.json')}: missing num_hidden_layers`);
    const layerKey = (i: number, k: string) => `${p}model.layers.${i}.${k}.weight`;
    const need = (n: string) => {
      if (!src.has(n)) throw new ConfigError(`${src.path}: missing tensor ${n}`);
      return n;
    };
    const { ffnOfLayer: detected, owners } = await detectFfnSharing(src, p, numLayers);
    let ffnOfLayer = detected;
    if (cfgJson.ffn_groups) {
      if (cfgJson.ffn_groups.length !== numLayers) throw new ConfigError(`config.json: ffn_groups has ${cfgJson.ffn_groups.length} entries for ${numLayers} layers`);
      ffnOfLayer = cfgJson.ffn_groups;
    }
    const embed = await readFloatWeight(src, need(`${p}model.embed_tokens.weight`));
    const q0 = src.info(need(layerKey(0, 'self_attn.q_proj')));
    const k0 = src.info(need(layerKey(0, 'self_attn.k_proj')));
    const gate0 = src.info(need(layerKey(0, 'mlp.gate_proj')));
    const config = decoderConfigFrom(cfgJson, {
      qRows: q0.shape[0], kRows: k0.shape[0], vocab: embed.shape[0], hidden: embed.shape[1], intermediate: gate0.shape[0],
    }, ffnOfLayer, join(dir, 'config.json'));
    const w = (n: string) => loadFloatWeight(src, need(n));
    const layers: LayerWeights[] = [];
    for (let i = 0; i < numLayers; i++) {
      layers.push({
        inputNorm: await w(layerKey(i, 'input_layernorm')),
        attn: {
          q: await w(layerKey(i, 'self_attn.q_proj')),
          k: await w(layerKey(i, 'self_attn.k_proj')),
          v: await w(layerKey(i, 'self_attn.v_proj')),
          o: await w(layerKey(i, 'self_attn.o_proj')),
        },
        postAttentionNorm: await w(layerKey(i, 'post_attention_layernorm')),
      });
    }
    const groupCount = Math.max(...ffnOfLayer) + 1;
    const ffns: FfnWeights[] = [];
    for (let gIdx = 0; gIdx < groupCount; gIdx++) {
      // With ffn_groups from the config, a group's weights come from its first layer.
      const owner = cfgJson.ffn_groups ? ffnOfLayer.indexOf(gIdx) : owners[gIdx];
      ffns.push({
        gate: await w(layerKey(owner, 'mlp.gate_proj')),
        up: await w(layerKey(owner, 'mlp.up_proj')),
        down: await w(layerKey(owner, 'mlp.down_proj')),
      });
    }
    const lmName = `${p}lm_head.weight`;
    const lmHead = src.has(lmName) ? await w(lmName) : memoryWeight(lmName, embed);
    return {
      config: { ...config, tieWordEmbeddings: config.tieWordEmbeddings || !src.has(lmName) },
      weights: { layers, ffns, finalNorm: await w(need(`${p}model.norm.weight`)), lmHead, embedTokens: embed },
      dir,
      source: src,
    };
  } catch (e) {
    if (!opts.source) await src.close();
    throw e;
  }
}
