/**
 * The micro MobiLlama-V recipe (`pnpm train:micro`, scripts/train-micro.ts): dims, seeds and
 * step counts in one place, plus the two data conversions it needs.
 */
import type { ClipInitConfig } from '@mobillama/vision';
import type { LlavaEntry, LlavaTurn } from '../synthetic/llava-format.js';
import { shapesSamples } from '../synthetic/shapes-dataset.js';
import { capitalize } from '../synthetic/vocabulary.js';
import type { MicroDecoderConfig } from './decoder-init.js';

const CLIP_CONFIG: ClipInitConfig = {
  text: { vocabSize: 0, hiddenSize: 128, intermediateSize: 512, numLayers: 3, numHeads: 4, maxPositions: 32 },
  vision: { hiddenSize: 128, intermediateSize: 512, numLayers: 4, numHeads: 4, imageSize: 64, patchSize: 16 },
  projectionDim: 128,
};

const DECODER: MicroDecoderConfig & { seed: number } = {
  hidden: 128, layers: 8, heads: 4, intermediate: 512, vocab: 32000, maxPositions: 512, seed: 11,
};

export const MICRO_RECIPE = {
  data: {
    trainSeed: 1, trainImages: 36000,
    heldoutSeed: 2, heldoutImages: 200, heldoutQaPerImage: 3,
    lmSeed: 3, lmDocuments: 13000,
    /** Held-out questions shipped in the model folder (the quantized-accuracy floors run on them). */
    shippedHeldoutQuestions: 60,
  },
  clip: { config: CLIP_CONFIG, images: 36000, steps: 3000, batchSize: 128, learningRate: 5e-4, weightDecay: 0.1, hardNegatives: 8, seed: 21 },
  decoder: DECODER,
  lm: { steps: 800, batchSize: 16, learningRate: 3e-3, seed: 31 },
  stage1: { steps: 150, batchSize: 32, learningRate: 2e-3, seed: 41 },
  stage2: { steps: 2000, batchSize: 16, learningRate: 2e-3, seed: 51 },
};

/**
 * The LM pretraining text: per scene, its description and all six kinds of question with
 * their answers, one per line ("A red circle and a blue star.\nWhat color is the circle? Red.").
 * The scenes come from their own seed, never the held-out one.
 */
export function lmDocuments(count: number, seed: number): string[] {
  const out: string[] = [];
  for (const s of shapesSamples({ count, seed, qaPerImage: 6 })) {
    out.push([capitalize(s.caption), ...s.qa.map((q) => `${q.question} ${q.answer}`)].join('\n'));
  }
  return out;
}

/**
 * Single-question instruct entries (as `data shapes` writes them) grouped per image into one
 * multi-turn conversation, as LLaVA-665k holds them: the image marker stays on the first
 * question only. The image and the system prompt are then computed once for all its answers.
 */
export function multiTurnEntries(entries: readonly LlavaEntry[]): LlavaEntry[] {
  const byImage = new Map<string, LlavaTurn[]>();
  for (const e of entries) {
    if (!e.image) continue;
    const turns = byImage.get(e.image) ?? [];
    const [q, a] = e.conversations;
    const text = q.value.replace('<image>', '').trim();
    turns.push({ from: 'human', value: turns.length === 0 ? `<image>\n${text}` : text }, a);
    byImage.set(e.image, turns);
  }
  return [...byImage].map(([image, conversations]) => ({ id: image.replace(/\.png$/, ''), image, conversations }));
}

export type MicroRecipe = typeof MICRO_RECIPE;

/** The same pipeline at toy scale (seconds): for checking that every stage runs, not for a model. */
export const MICRO_SMOKE_RECIPE: MicroRecipe = {
  data: { ...MICRO_RECIPE.data, trainImages: 48, heldoutImages: 4, lmDocuments: 16, shippedHeldoutQuestions: 6 },
  clip: { ...MICRO_RECIPE.clip, images: 48, steps: 2, batchSize: 16 },
  decoder: MICRO_RECIPE.decoder,
  lm: { ...MICRO_RECIPE.lm, steps: 2, batchSize: 4 },
  stage1: { ...MICRO_RECIPE.stage1, steps: 2, batchSize: 4 },
  stage2: { ...MICRO_RECIPE.stage2, steps: 2, batchSize: 2 },
};
