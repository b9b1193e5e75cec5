import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { memoryWeight, readFloatWeight, type HostTensor, type WeightRef } from '@mobillama/core';
import { findDecoderPrefix, loadDecoder, loadTokenizer, type LoadedDecoder, type Tokenizer } from '@mobillama/decoder';
import { loadProjector, projectorDepth, type ProjectorWeights } from '@mobillama/projector';
import { layersNeeded, loadClipVision, type ClipVisionWeights, type LoadedClipVision } from '@mobillama/vision';
import type { ModelExport, ParamFile, SideFile } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { TrainConfigError } from './errors.js';
import type { TrainModelParts } from './graph.js';
import { adapterConfig, initLoraParams, loraAdapters, peftKey, type LoraAdapter } from './lora.js';
import { decays, paramFrom, paramRef, type Param } from './params.js';
import { Rng } from './rng.js';

/** Everything loaded for a run: the model parts, the trainable params, and how checkpoints name them. */
export interface TrainModel {
  readonly parts: TrainModelParts;
  /** Candidate trainable names for the stage (the graph keeps those it uses). */
  readonly trainable: ReadonlySet<string>;
  /** The weight behind every candidate name (materialised into a Param once the graph is built). */
  readonly refs: ReadonlyMap<string, WeightRef>;
  /** Params created here (a new projector, LoRA adapters), by name. */
  readonly fresh: ReadonlyMap<string, Param>;
  readonly lora: { readonly adapters: readonly LoraAdapter[]; readonly refs: ReadonlyMap<string, WeightRef>; readonly scale: number } | null;
  readonly tokenizer: Tokenizer;
  readonly decoder: LoadedDecoder;
  readonly vision: LoadedClipVision;
  readonly decoderPrefix: string;
  /** Image feature tokens per image. */
  readonly imageTokens: number;
  /** Spliced sequences are cut to this. */
  readonly maxLength: number;
  close(): Promise<void>;
}

/** LLaVA's projector keys: `model.mm_projector.{0,2,…}` (Sequential), or `model.mm_projector` for a single Linear. */
export function projectorKey(depth: number, i: number, what: 'weight' | 'bias'): string {
  return depth === 1 ? `model.mm_projector.${what}` : `model.mm_projector.${2 * i}.${what}`;
}

function refsOfVision(w: ClipVisionWeights): WeightRef[] {
  const lin = (l: { weight: WeightRef; bias: WeightRef }) => [l.weight, l.bias];
  return [
    w.patchEmbedding, w.classEmbedding, w.positionEmbedding, ...lin(w.preLayerNorm),
    ...w.layers.flatMap((l) => [l.layerNorm1, l.q, l.k, l.v, l.out, l.layerNorm2, l.fc1, l.fc2].flatMap(lin)),
  ];
}

/**
 * Loads decoder, tokenizer, vision tower and projector for a stage. Trainable names:
 * pretrain = projector; finetune = projector + every decoder weight (embeddings and LM head
 * too, as LLaVA stage 2 tunes the whole LLM); lora = projector + adapters; --tune-vision adds
 * the vision tower's used layers.
 */
export async function loadTrainModel(cfg: TrainConfig): Promise<TrainModel> {
  const closers: (() => Promise<void>)[] = [];
  try {
    const decoder = await loadDecoder(cfg.decoder);
    closers.push(() => decoder.source.close());
    const prefix = findDecoderPrefix(decoder.source.names());
    const tokenizer = await loadTokenizer(cfg.decoder);
    if (tokenizer.vocabSize > decoder.config.vocabSize) {
      throw new TrainConfigError(`the tokenizer has ${tokenizer.vocabSize} tokens but the decoder embeds only ${decoder.config.vocabSize}`);
    }
    const featureLayer = cfg.visionSelectLayer, featureKind = cfg.visionSelectFeature;
    const vision = await loadClipVision(cfg.vision, { layers: (c) => layersNeeded(c, { featureLayer, featureKind }) });
    closers.push(() => vision.source.close());
    const H = decoder.config.hiddenSize, Dv = vision.config.hiddenSize;

    const embed = memoryWeight(`${prefix}model.embed_tokens.weight`, decoder.weights.embedTokens);
    const decoderWeights = decoder.config.tieWordEmbeddings ? { ...decoder.weights, lmHead: embed } : decoder.weights;

    // The projector's params always carry LLaVA's key names, whatever file they came from.
    const fresh = new Map<string, Param>();
    const linears: { weight: WeightRef; bias: WeightRef | null }[] = [];
    if (cfg.projector) {
      const lp = await loadProjector(cfg.projector);
      closers.push(() => lp.source.close());
      if (lp.config.inDim !== Dv || lp.config.outDim !== H) {
        throw new TrainConfigError(`the projector maps ${lp.config.inDim} → ${lp.config.outDim}, but the vision tower gives ${Dv} and the decoder takes ${H}`);
      }
      const depth = lp.weights.linears.length;
      for (const [i, l] of lp.weights.linears.entries()) {
        const w = await paramFrom(l.weight);
        const b = l.bias ? await paramFrom(l.bias) : null;
        const wp: Param = { ...w, name: projectorKey(depth, i, 'weight'), decay: true };
        fresh.set(wp.name, wp);
        let bp: Param | null = null;
        if (b) { bp = { ...b, name: projectorKey(depth, i, 'bias'), decay: false }; fresh.set(bp.name, bp); }
        linears.push({ weight: paramRef(wp), bias: bp ? paramRef(bp) : null });
      }
    } else {
      // torch.nn.Linear's default init (kaiming_uniform a=√5 → U(±1/√in), bias U(±1/√in)), as
      // LLaVA builds a new mm_projector.
      const depth = projectorDepth(cfg.projectorType);
      const rng = Rng.seeded(cfg.seed, 'projector-init');
      for (let i = 0; i < depth; i++) {
        const inF = i === 0 ? Dv : H, bound = 1 / Math.sqrt(inF);
        const w: Param = { name: projectorKey(depth, i, 'weight'), shape: [H, inF], data: rng.uniform(new Float32Array(H * inF), bound), decay: true };
        const b: Param = { name: projectorKey(depth, i, 'bias'), shape: [H], data: rng.uniform(new Float32Array(H), bound), decay: false };
        fresh.set(w.name, w);
        fresh.set(b.name, b);
        linears.push({ weight: paramRef(w), bias: paramRef(b) });
      }
    }
    const projector: ProjectorWeights = { linears };

    const trainable = new Set<string>(fresh.keys());
    const refs = new Map<string, WeightRef>();
    const addRefs = (rs: readonly WeightRef[]) => { for (const r of rs) { trainable.add(r.name); refs.set(r.name, r); } };
    if (cfg.stage === 'finetune') {
      const w = decoderWeights;
      addRefs([
        embed, w.finalNorm, w.lmHead,
        ...w.layers.flatMap((l) => [l.inputNorm, l.attn.q, l.attn.k, l.attn.v, l.attn.o, l.postAttentionNorm]),
        ...w.ffns.flatMap((f) => [f.gate, f.up, f.down]),
      ]);
    }
    if (cfg.tuneVision) addRefs(refsOfVision(vision.weights));

    let lora: TrainModel['lora'] = null;
    if (cfg.stage === 'lora') {
      const adapters = loraAdapters(decoderWeights);
      const ps = initLoraParams(adapters, { r: cfg.loraR, alpha: cfg.loraAlpha }, Rng.seeded(cfg.seed, 'lora-init'));
      const loraRefs = new Map<string, WeightRef>();
      for (const p of ps) { fresh.set(p.name, p); trainable.add(p.name); loraRefs.set(p.name, paramRef(p)); }
      lora = { adapters, refs: loraRefs, scale: cfg.loraAlpha / cfg.loraR };
    }
    const maxLength = cfg.modelMaxLength ?? decoder.config.maxPositions;
    const imageTokens = vision.config.numPatches + (featureKind === 'cls_patch' ? 1 : 0);
    return {
      parts: {
        decoder: { config: decoder.config, weights: decoderWeights, embed },
        vision: { config: vision.config, weights: vision.weights, featureLayer, featureKind },
        projector,
      },
      trainable, refs, fresh, lora, tokenizer, decoder, vision, decoderPrefix: prefix, imageTokens, maxLength,
      async close() {
        for (const c of closers.reverse()) await c().catch(() => undefined);
      },
    };
  } catch (e) {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    throw e;
  }
}

/** Trainable params for the names the graph made inputs: fresh ones as they are, the rest read from their weights. */
export async function materializeParams(model: TrainModel, names: readonly string[], visionLrScale = 1): Promise<Param[]> {
  const visionNames = new Set(refsOfVision(model.vision.weights).map((r) => r.name));
  const out: Param[] = [];
  for (const n of names) {
    const fresh = model.fresh.get(n);
    if (fresh) { out.push(fresh); continue; }
    const ref = model.refs.get(n);
    if (!ref) throw new Error(`no weight for trainable ${n}`);
    const p = await paramFrom(ref);
    out.push({ ...p, decay: decays(n), ...(visionNames.has(n) && visionLrScale !== 1 ? { lrScale: visionLrScale } : {}) });
  }
  return out;
}

const DECODER_SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'];
const VISION_SIDE_FILES = ['config.json', 'preprocessor_config.json'];

/**
 * How checkpoints name what trains: mm_projector.safetensors (LLaVA keys), LoRA adapters in
 * PEFT naming (adapter_model.safetensors + adapter_config.json), a full HF-layout decoder
 * (decoder/: model.safetensors with the decoder prefix removed, shared FFN stored once as in
 * MobiLlama's bf16 checkpoint, plus config and tokenizer files), and with --tune-vision the
 * whole vision tower (vision_tower/: the trained layers and the untouched rest).
 */
export function modelExport(model: TrainModel, cfg: TrainConfig, params: readonly Param[]): ModelExport {
  const names = new Set(params.map((p) => p.name));
  const files: ParamFile[] = [];
  const side: SideFile[] = [];
  const proj = new Map<string, string>();
  for (const n of model.fresh.keys()) if (n.startsWith('model.mm_projector') && names.has(n)) proj.set(n, n);
  const depth = model.parts.projector.linears.length;
  files.push({ path: 'mm_projector.safetensors', keys: proj, metadata: { format: 'pt', mm_projector_type: depth === 1 ? 'linear' : `mlp${depth}x_gelu` } });
  if (model.lora) {
    const keys = new Map<string, string>();
    for (const n of model.lora.refs.keys()) if (names.has(n)) keys.set(n, peftKey(n, model.decoderPrefix));
    files.push({ path: 'adapter_model.safetensors', keys, metadata: { format: 'pt' } });
    const shared = model.decoder.config.ffnOfLayer.every((f) => f === 0) && model.decoder.config.numLayers > 1;
    side.push({ path: 'adapter_config.json', text: `${JSON.stringify(adapterConfig({ r: cfg.loraR, alpha: cfg.loraAlpha }, cfg.decoder, shared), null, 2)}\n` });
  }
  const visionNames = new Set(refsOfVision(model.vision.weights).map((r) => r.name));
  if (cfg.stage === 'finetune') {
    const p = model.decoderPrefix;
    const keys = new Map<string, string>();
    for (const n of names) {
      if (!model.refs.has(n) || visionNames.has(n)) continue;
      if (n.startsWith(`${p}model.`) || n === `${p}lm_head.weight`) keys.set(n, n.slice(p.length));
    }
    files.push({ path: 'decoder/model.safetensors', keys, metadata: { format: 'pt' } });
    for (const f of DECODER_SIDE_FILES) if (existsSync(join(cfg.decoder, f))) side.push({ path: `decoder/${f}`, copyFrom: join(cfg.decoder, f) });
  }
  if (cfg.tuneVision) {
    const vp = model.vision.prefix;
    const keys = new Map<string, string>();
    for (const n of names) if (visionNames.has(n)) keys.set(n, n.slice(vp.length));
    const src = model.vision.source;
    files.push({
      path: 'vision_tower/model.safetensors', keys, metadata: { format: 'pt' },
      // The layers the graph does not run (after the feature layer) and post_layernorm, unchanged.
      extra: async () => {
        const out: Record<string, HostTensor> = {};
        for (const n of src.names()) {
          if (!n.startsWith(`${vp}vision_model.`) || keys.has(n)) continue;
          out[n.slice(vp.length)] = await readFloatWeight(src, n);
        }
        return out;
      },
    });
    for (const f of VISION_SIDE_FILES) if (existsSync(join(model.vision.dir, f))) side.push({ path: `vision_tower/${f}`, copyFrom: join(model.vision.dir, f) });
  }
  return { paramFiles: files, sideFiles: side };
}
