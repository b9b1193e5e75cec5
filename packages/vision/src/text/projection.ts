import { loadFloatWeight, readFloatWeight, type WeightRef, type WeightSource } from '@mobillama/core';
import { VisionConfigError } from '../config.js';

/** CLIPModel's joint-space heads: the two projections (no biases) and the learned temperature. */
export interface ClipHeads {
  /** visual_projection.weight [P, vision hidden]. */
  readonly visualProjection: WeightRef;
  /** text_projection.weight [P, text hidden]. */
  readonly textProjection: WeightRef;
  /** The `logit_scale` parameter (a log; logits are scaled by its exp). */
  readonly logitScale: number;
  /** The same parameter as a graph weight (training makes it trainable), shape as stored ([] or [1]). */
  readonly logitScaleWeight: WeightRef;
  /** P, the joint embedding width. */
  readonly projectionDim: number;
}

/**
 * Reads `visual_projection.weight`, `text_projection.weight` and `logit_scale` (under
 * `prefix`, the part before `vision_model.` / `text_model.`) and checks their shapes.
 */
export async function loadClipHeads(
  src: WeightSource, prefix: string, dims: { visionHidden: number; textHidden: number; projectionDim?: number | null },
): Promise<ClipHeads> {
  const need = (k: string) => {
    const n = `${prefix}${k}`;
    if (!src.has(n)) throw new VisionConfigError(`${src.path}: no ${n}: not a full CLIPModel checkpoint (zero-shot needs both projections and logit_scale)`);
    return n;
  };
  const visualProjection = await loadFloatWeight(src, need('visual_projection.weight'));
  const textProjection = await loadFloatWeight(src, need('text_projection.weight'));
  const logitScaleWeight = await loadFloatWeight(src, need('logit_scale'));
  const scale = await readFloatWeight(src, need('logit_scale'));
  if (scale.data.length !== 1 || !Number.isFinite(scale.data[0])) throw new VisionConfigError(`${src.path}: logit_scale must be one finite number`);
  const [pv, dv] = visualProjection.shape, [pt, dt] = textProjection.shape;
  if (visualProjection.shape.length !== 2 || dv !== dims.visionHidden) {
    throw new VisionConfigError(`${src.path}: visual_projection.weight is ${visualProjection.shape.join('x')}, expected [P, ${dims.visionHidden}]`);
  }
  if (textProjection.shape.length !== 2 || dt !== dims.textHidden) {
    throw new VisionConfigError(`${src.path}: text_projection.weight is ${textProjection.shape.join('x')}, expected [P, ${dims.textHidden}]`);
  }
  if (pv !== pt) throw new VisionConfigError(`${src.path}: the projections disagree on the joint width (${pv} vs ${pt})`);
  if (dims.projectionDim != null && dims.projectionDim !== pv) {
    throw new VisionConfigError(`config.json: projection_dim is ${dims.projectionDim} but the projections are ${pv} wide`);
  }
  return { visualProjection, textProjection, logitScale: scale.data[0], logitScaleWeight, projectionDim: pv };
}
