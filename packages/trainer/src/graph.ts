import { GraphBuilder, addBackward, tokenNll, type Graph, type Value, type WeightRef } from '@mobillama/core';
import { decoderInto, lmHeadInto, type DecoderConfig, type DecoderWeights } from '@mobillama/decoder';
import { projectorInto, type ProjectorWeights } from '@mobillama/projector';
import { clipVisionInto, type ClipVisionConfig, type ClipVisionWeights, type FeatureKind } from '@mobillama/vision';
import { MASKED, TRAIN_IO } from './collate.js';
import { LoraGraphBuilder, type LoraAdapter } from './lora.js';

/** The three parts of the model, as their loaders give them (weights as WeightRefs). */
export interface TrainModelParts {
  readonly decoder: {
    readonly config: DecoderConfig;
    /** lmHead already replaced by the embedding when the embeddings are tied. */
    readonly weights: DecoderWeights;
    /** The token embedding table as a weight (in the graph: text tokens are embedded there). */
    readonly embed: WeightRef;
  };
  readonly vision: {
    readonly config: ClipVisionConfig;
    readonly weights: ClipVisionWeights;
    readonly featureLayer: number;
    readonly featureKind: FeatureKind;
  };
  readonly projector: ProjectorWeights;
}

export interface TrainGraphOptions {
  /** Names of the weights fed as inputs (trainable); every other weight is an initializer. */
  readonly trainable: ReadonlySet<string>;
  /** LoRA adapters with their A/B refs (trainable) and alpha / r. */
  readonly lora?: { readonly adapters: readonly LoraAdapter[]; readonly refs: ReadonlyMap<string, WeightRef>; readonly scale: number };
  /** Emit the backward pass (training) or not (eval). */
  readonly backward: boolean;
}

export interface TrainGraph {
  readonly graph: Graph;
  /** Trainable weights that are inputs of the graph, in input order (each has an output grad.<name> when backward). */
  readonly params: readonly string[];
}

/**
 * The training graph: the model written by its packages' own builders (clipVisionInto,
 * projectorInto, decoderInto, lmHeadInto, lowered to primitive ops) plus the generated
 * backward pass. Inputs (see collate.ts): text_ids [Lt], pixel_values [Bi, C, S, S],
 * splice_index [B, T], position_ids [B, T] (and position_ids_2 [B, T] for a 2-D rotary decoder), segment_ids [B, T], pad_bias [B, 1, 1, T], target_index [K],
 * target_ids [K], and every trainable weight. Outputs: nll_sum (Σ −log p over the K
 * targets) and grad.<name> = ∂ nll_sum / ∂ weight. The loop divides by the number of
 * supervised tokens of the whole optimizer step, which makes the loss the mean over all of
 * them, across micro-batches too.
 */
export function buildTrainGraph(parts: TrainModelParts, opts: TrainGraphOptions): TrainGraph {
  const g = opts.lora
    ? new LoraGraphBuilder('mobillama_v_train', opts.trainable, opts.lora.adapters, opts.lora.scale, opts.lora.refs)
    : new GraphBuilder('mobillama_v_train', opts.trainable);
  const { decoder, vision } = parts;
  const H = decoder.config.hiddenSize;
  const { imageSize: S, numChannels: C } = vision.config;
  const textIds = g.input(TRAIN_IO.textIds, 'int64', ['text']);
  const pixels = g.input(TRAIN_IO.pixels, 'float32', ['images', C, S, S]);
  const splice = g.input(TRAIN_IO.splice, 'int64', ['batch', 'seq']);
  const positionIds = g.input(TRAIN_IO.positions, 'int64', ['batch', 'seq']);
  const positionIds2 = decoder.config.rope2d ? g.input(TRAIN_IO.positions2, 'int64', ['batch', 'seq']) : undefined;
  const segmentIds = g.input(TRAIN_IO.segments, 'int64', ['batch', 'seq']);
  const padBias = g.input(TRAIN_IO.padBias, 'float32', ['batch', 1, 1, 'seq']);
  const targetIndex = g.input(TRAIN_IO.targetIndex, 'int64', ['targets']);
  const targetIds = g.input(TRAIN_IO.targetIds, 'int64', ['targets']);

  const textEmb = g.gather(g.param(decoder.embed), textIds, 0); // [Lt, H]
  const { features } = clipVisionInto(g, pixels, vision.config, vision.weights, { featureLayer: vision.featureLayer, featureKind: vision.featureKind });
  const imageEmb = g.reshape(projectorInto(g, features, parts.projector), [-1, H]); // [Bi·N, H]
  const embeds = g.gather(g.concat([textEmb, imageEmb], 0), splice, 0); // [B, T, H]

  // Causal + key padding: positions grow along each row (right padding) and along each turn,
  // so a key is in the future exactly when its position is greater. Independent turns
  // (segment k > 0) also see nothing of the other turns, only the shared prefix (segment 0).
  const q = g.unsqueeze(positionIds, [1, 3]); // [B, 1, T, 1]
  const k = g.unsqueeze(positionIds, [1, 2]); // [B, 1, 1, T]
  const segQ = g.unsqueeze(segmentIds, [1, 3]), segK = g.unsqueeze(segmentIds, [1, 2]);
  const masked = g.scalar(MASKED);
  const otherTurn = g.where(g.equal(segK, g.scalar(0, 'int64')), padBias, masked);
  const visible = g.where(g.equal(segK, segQ), padBias, otherTurn);
  const bias = g.where(g.greater(k, q), masked, visible); // [B, 1, T, T]
  const { hidden } = decoderInto(g, decoder.config, decoder.weights, { embeds, positionIds, positionIds2, bias });

  const rows = g.gather(g.reshape(hidden, [-1, H]), targetIndex, 0); // [K, H]
  const logits = g.unsqueeze(lmHeadInto(g, decoder.weights, rows), [0]); // [1, K, V]
  const { sum } = tokenNll(g, logits, g.unsqueeze(targetIds, [0]));
  if (g instanceof LoraGraphBuilder) g.check();

  const params = g.inputs.filter((v) => opts.trainable.has(v.name));
  g.output(sum, TRAIN_IO.nll);
  if (opts.backward) {
    const grads = addBackward(g, sum, params);
    for (const p of params) g.output(grads.get(p)!, TRAIN_IO.grad(p.name));
  }
  return { graph: g.build(), params: params.map((p: Value) => p.name) };
}
