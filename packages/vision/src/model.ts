import {
  createSession, createWorkerSession, dequantizeLinear, exportOnnx, memoryWeight, quantizeLinear, quantizedLinearFrom, readRefFloat32,
  type LinearWeight, type QuantizeMode, type Session, type SessionOptions, type WeightRef,
} from '@mobillama/core';
import type { ClipVisionConfig } from './config.js';
import { CLIP_IO, buildClipVisionGraph, layersNeeded, type ClipGraphOptions, type FeatureKind } from './graph.js';
import { preprocessImage, type ImageInput, type PreprocessOptions } from './preprocess.js';
import { loadClipVision, type ClipLayerWeights, type ClipVisionWeights, type LinearWeights, type LoadClipVisionOptions, type LoadedClipVision } from './weights.js';

export interface ClipVisionModelOptions extends SessionOptions, ClipGraphOptions, PreprocessOptions {
  /** Run ORT in a worker thread (servers); default in-thread. */
  worker?: boolean;
  /**
   * Quantize the encoder's linear layers at load. The encoder is many-row work (every patch
   * at once), where int8 DynamicQuantizeMatMul is the fast kernel here, so q8 and q4 both run
   * int8 per output channel (q4 checkpoints are requantized to it at load).
   */
  quantize?: QuantizeMode;
}

export interface ClipVisionOutput {
  /** [B, tokens, D]. */
  readonly features: Float32Array;
  /** [B, D] when the model was loaded with `pooled: true`. */
  readonly pooled: Float32Array | null;
}

/**
 * A CLIP vision tower ready to run: images in, LLaVA features out. The graph computes only
 * the layers the selected hidden state needs.
 */
export class ClipVisionModel {
  private constructor(
    readonly config: ClipVisionConfig,
    private readonly loaded: LoadedClipVision,
    private readonly session: Session,
    private readonly opts: ClipVisionModelOptions,
  ) {}

  static async load(path: string, opts: ClipVisionModelOptions & Omit<LoadClipVisionOptions, 'layers'> = {}): Promise<ClipVisionModel> {
    const { source, configJson, preprocessorJson, ...rest } = opts;
    const loaded = await loadClipVision(path, { source, configJson, preprocessorJson, layers: (cfg) => layersNeeded(cfg, rest) });
    try {
      return await ClipVisionModel.fromLoaded(loaded, rest);
    } catch (e) {
      if (!source) await loaded.source.close();
      throw e;
    }
  }

  static async fromLoaded(loaded: LoadedClipVision, opts: ClipVisionModelOptions = {}): Promise<ClipVisionModel> {
    const { worker, threads, optimizationLevel, allowSpinning } = opts;
    const weights = await int8Kernels(loaded.weights, opts.quantize !== undefined);
    const artifact = exportOnnx(buildClipVisionGraph(loaded.config, weights, opts));
    const sessionOpts: SessionOptions = { threads, optimizationLevel, allowSpinning };
    const session = worker ? await createWorkerSession(artifact, sessionOpts) : await createSession(artifact, sessionOpts);
    return new ClipVisionModel(loaded.config, loaded, session, opts);
  }

  get featureKind(): FeatureKind {
    return this.opts.featureKind ?? 'patch';
  }

  /** Tokens per image in the features: numPatches, plus one with the CLS token. */
  get numTokens(): number {
    return this.config.numPatches + (this.featureKind === 'cls_patch' ? 1 : 0);
  }

  get hiddenSize(): number {
    return this.config.hiddenSize;
  }

  /** One image as the tower's input, [C, S, S] (CLIPImageProcessor, LLaVA pad when `aspect: 'pad'`). */
  async preprocess(image: ImageInput): Promise<Float32Array> {
    const px = await preprocessImage(image, this.config.preprocess, this.opts);
    const { imageSize: S, numChannels: C } = this.config;
    if (px.length !== C * S * S) {
      const { cropSize } = this.config.preprocess;
      throw new Error(`preprocessing gives ${px.length / 3} pixels per channel (crop ${cropSize.height}x${cropSize.width}) but the tower takes ${S}x${S}`);
    }
    return px;
  }

  /** Features of a batch of images: Float32Array [B, numTokens, hiddenSize]. */
  async encode(images: ImageInput | readonly ImageInput[]): Promise<Float32Array> {
    const list = Array.isArray(images) ? images as readonly ImageInput[] : [images as ImageInput];
    const pixels = await Promise.all(list.map((img) => this.preprocess(img)));
    const per = pixels[0]?.length ?? 0;
    const batch = new Float32Array(per * list.length);
    pixels.forEach((p, i) => batch.set(p, i * per));
    return (await this.encodePixels(batch, list.length)).features;
  }

  /** Runs the tower on ready pixel values [B, C, S, S] (row-major). The buffer is transferred to a worker session. */
  async encodePixels(pixelValues: Float32Array, batch: number): Promise<ClipVisionOutput> {
    const { imageSize: S, numChannels: C } = this.config;
    if (!Number.isInteger(batch) || batch < 1 || pixelValues.length !== batch * C * S * S) {
      throw new Error(`pixel_values have ${pixelValues.length} values, expected ${batch}x${C}x${S}x${S}`);
    }
    const out = await this.session.run({ [CLIP_IO.pixels]: { dtype: 'float32', dims: [batch, C, S, S], data: pixelValues } });
    return {
      features: out[CLIP_IO.features].data as Float32Array,
      pooled: out[CLIP_IO.pooled] ? out[CLIP_IO.pooled].data as Float32Array : null,
    };
  }

  async dispose(): Promise<void> {
    await this.session.release();
    await this.loaded.source.close();
  }
}

/**
 * The encoder's linear layers on int8 kernels: quantized at load when `quantize`, q8
 * checkpoints as stored, q4 checkpoints requantized. With any kernel in memory the other
 * weights go to memory too (ORT takes external data from files or from memory, not both).
 */
async function int8Kernels(w: ClipVisionWeights, quantize: boolean): Promise<ClipVisionWeights> {
  const stored = w.layers.some((l) => l.q.kernel);
  if (!quantize && !stored) return w;
  let inMemory = false;
  const kernel = async (l: LinearWeights): Promise<LinearWeight | undefined> => {
    const k = l.kernel;
    if (k?.kind === 'q8') return k;
    inMemory = true;
    const prefix = l.weight.name.replace(/\.(weight|qweight)$/, '');
    if (k) return quantizedLinearFrom(prefix, await dequantizeLinear(k), k.outFeatures, k.inFeatures, 'q8');
    return quantizeLinear(prefix, l.weight, 'q8');
  };
  const lin = async (l: LinearWeights): Promise<LinearWeights> => ({ ...l, kernel: await kernel(l) });
  const layers: ClipLayerWeights[] = [];
  for (const l of w.layers) {
    layers.push({ ...l, q: await lin(l.q), k: await lin(l.k), v: await lin(l.v), out: await lin(l.out), fc1: await lin(l.fc1), fc2: await lin(l.fc2) });
  }
  if (!inMemory) return { ...w, layers };
  const mem = async (r: WeightRef): Promise<WeightRef> => (r.data.kind === 'file' ? memoryWeight(r.name, { dtype: 'F32', shape: r.shape, data: await readRefFloat32(r) }) : r);
  const norm = async (n: { weight: WeightRef; bias: WeightRef }) => ({ weight: await mem(n.weight), bias: await mem(n.bias) });
  const memLayers: ClipLayerWeights[] = [];
  for (const l of layers) {
    const b = async (x: LinearWeights): Promise<LinearWeights> => ({ ...x, bias: await mem(x.bias) });
    memLayers.push({
      layerNorm1: await norm(l.layerNorm1), layerNorm2: await norm(l.layerNorm2),
      q: await b(l.q), k: await b(l.k), v: await b(l.v), out: await b(l.out), fc1: await b(l.fc1), fc2: await b(l.fc2),
    });
  }
  return {
    patchEmbedding: await mem(w.patchEmbedding), classEmbedding: await mem(w.classEmbedding), positionEmbedding: await mem(w.positionEmbedding),
    preLayerNorm: await norm(w.preLayerNorm), postLayerNorm: await norm(w.postLayerNorm), layers: memLayers,
  };
}
