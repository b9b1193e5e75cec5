import { availableParallelism } from 'node:os';
import { TrainConfigError } from './errors.js';
import type { TrainTemplate } from './masking.js';
import type { LrSchedulerKind } from './schedule.js';

/** What trains: the projector (stage 1), projector + decoder (stage 2), or projector + LoRA adapters. */
export type Stage = 'pretrain' | 'finetune' | 'lora';

/** Everything a training run needs. Paths are as given (relative to the working folder). */
export interface TrainConfig {
  readonly stage: Stage;
  /** CLIP vision tower folder (or weight file). */
  readonly vision: string;
  /** MobiLlama / LLaMA decoder folder (config.json, weights, tokenizer). */
  readonly decoder: string;
  /** A projector to start from (mm_projector.bin / .safetensors / a folder); none: a new one from the seed. */
  readonly projector?: string;
  /** Type of a new projector (LLaVA's mm_projector_type). */
  readonly projectorType: string;
  readonly data: string;
  readonly imageFolder?: string;
  readonly evalData?: string;
  readonly output: string;
  /** Default: plain for pretrain, vicuna_v1 otherwise (LLaVA-1.5's choice). */
  readonly template: TrainTemplate;
  /**
   * Train each human/gpt round of a conversation as if it were asked alone about the image:
   * the prefix (system prompt, image) is computed once per conversation, each round sees only
   * it and itself (see preprocessIndependentTurns). vicuna_v1 only.
   */
  readonly independentTurns: boolean;
  readonly tuneVision: boolean;
  /** The vision tower's peak lr when it trains (LLaVA's mm_vision_tower_lr). Default: learningRate. */
  readonly visionLearningRate?: number;
  readonly loraR: number;
  readonly loraAlpha: number;
  readonly learningRate: number;
  readonly lrScheduler: LrSchedulerKind;
  readonly warmupRatio: number;
  readonly warmupSteps: number;
  readonly weightDecay: number;
  readonly adamBeta1: number;
  readonly adamBeta2: number;
  readonly adamEpsilon: number;
  /** Global-norm clipping; 0 disables. */
  readonly maxGradNorm: number;
  readonly gradientAccumulationSteps: number;
  /** Samples per micro-batch. */
  readonly batchSize: number;
  readonly epochs: number;
  /** > 0 overrides epochs. */
  readonly maxSteps: number;
  readonly seed: number;
  readonly shuffle: boolean;
  /** Checkpoint every N optimizer steps (0: only at the end). */
  readonly saveSteps: number;
  /** Keep only the newest N checkpoints (HF's save_total_limit; 0: keep all). */
  readonly saveTotalLimit: number;
  /** Eval every N optimizer steps (0: only at the end; needs evalData). */
  readonly evalSteps: number;
  /** LLaVA's tokenizer model_max_length: spliced sequences are cut to it. Default: the decoder's max positions. */
  readonly modelMaxLength?: number;
  /** LLaVA-1.5 pads images to a square with the mean colour ('pad'); 'crop' is CLIP's centre crop. */
  readonly imageAspectRatio: 'pad' | 'crop';
  readonly visionSelectLayer: number;
  readonly visionSelectFeature: 'patch' | 'cls_patch';
  readonly threads: number;
  /** Continue from the newest checkpoint in `output`. */
  readonly resume: boolean;
  /** Run ORT in a worker thread so data loading overlaps compute (default true). */
  readonly worker: boolean;
}

/** LLaVA-1.5's recipe: lr 1e-3 for stage 1, 2e-5 full finetune, 2e-4 LoRA (r 128, alpha 256). */
export const STAGE_LR: Record<Stage, number> = { pretrain: 1e-3, finetune: 2e-5, lora: 2e-4 };

export type TrainConfigInput = Partial<TrainConfig> & Pick<TrainConfig, 'stage' | 'vision' | 'decoder' | 'data' | 'output'>;

/** Fills defaults (LLaVA-1.5 / HF TrainingArguments) and checks every value. */
export function resolveConfig(input: TrainConfigInput): TrainConfig {
  const stage = input.stage;
  if (!['pretrain', 'finetune', 'lora'].includes(stage)) throw new TrainConfigError(`--stage must be pretrain, finetune or lora, got ${JSON.stringify(stage)}`);
  const c: TrainConfig = {
    projectorType: 'mlp2x_gelu',
    template: stage === 'pretrain' ? 'plain' : 'vicuna_v1',
    independentTurns: false,
    tuneVision: false,
    loraR: 128,
    loraAlpha: 256,
    learningRate: STAGE_LR[stage],
    lrScheduler: 'cosine',
    warmupRatio: 0.03,
    warmupSteps: 0,
    weightDecay: 0,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEpsilon: 1e-8,
    maxGradNorm: 1,
    gradientAccumulationSteps: 1,
    batchSize: 1,
    epochs: 1,
    maxSteps: 0,
    seed: 42,
    shuffle: true,
    saveSteps: 500,
    saveTotalLimit: 0,
    evalSteps: 0,
    imageAspectRatio: 'pad',
    visionSelectLayer: -2,
    visionSelectFeature: 'patch',
    threads: availableParallelism(),
    resume: false,
    worker: true,
    ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)),
  } as TrainConfig;
  const bad = (flag: string, what: string, v: unknown) => new TrainConfigError(`--${flag} must be ${what}, got ${JSON.stringify(v)}`);
  const posInt = (flag: string, v: number) => { if (!Number.isInteger(v) || v < 1) throw bad(flag, 'a positive integer', v); };
  const nonNegInt = (flag: string, v: number) => { if (!Number.isInteger(v) || v < 0) throw bad(flag, 'an integer ≥ 0', v); };
  const nonNeg = (flag: string, v: number) => { if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad(flag, 'a number ≥ 0', v); };
  for (const [flag, v] of [['vision', c.vision], ['decoder', c.decoder], ['data', c.data], ['output', c.output]] as const) {
    if (typeof v !== 'string' || v === '') throw new TrainConfigError(`--${flag} is required`);
  }
  if (!['plain', 'vicuna_v1'].includes(c.template)) throw bad('template', 'plain or vicuna_v1', c.template);
  if (c.independentTurns && c.template !== 'vicuna_v1') throw new TrainConfigError(`--independent-turns needs the vicuna_v1 template, not ${c.template}`);
  if (!['cosine', 'linear', 'constant'].includes(c.lrScheduler)) throw bad('lr-scheduler', 'cosine, linear or constant', c.lrScheduler);
  if (!['pad', 'crop'].includes(c.imageAspectRatio)) throw bad('image-aspect-ratio', 'pad or crop', c.imageAspectRatio);
  if (!['patch', 'cls_patch'].includes(c.visionSelectFeature)) throw bad('vision-select-feature', 'patch or cls_patch', c.visionSelectFeature);
  if (!Number.isInteger(c.visionSelectLayer)) throw bad('vision-select-layer', 'an integer', c.visionSelectLayer);
  if (!(c.learningRate > 0) || !Number.isFinite(c.learningRate)) throw bad('learning-rate', 'a positive number', c.learningRate);
  if (c.visionLearningRate !== undefined) {
    if (!(c.visionLearningRate > 0) || !Number.isFinite(c.visionLearningRate)) throw bad('vision-learning-rate', 'a positive number', c.visionLearningRate);
    if (!c.tuneVision) throw new TrainConfigError('--vision-learning-rate needs --tune-vision');
  }
  nonNeg('warmup-ratio', c.warmupRatio);
  if (c.warmupRatio > 1) throw bad('warmup-ratio', 'between 0 and 1', c.warmupRatio);
  nonNegInt('warmup-steps', c.warmupSteps);
  nonNeg('weight-decay', c.weightDecay);
  nonNeg('max-grad-norm', c.maxGradNorm);
  for (const [flag, v] of [['adam-beta1', c.adamBeta1], ['adam-beta2', c.adamBeta2]] as const) if (!(v >= 0 && v < 1)) throw bad(flag, 'in [0, 1)', v);
  if (!(c.adamEpsilon > 0)) throw bad('adam-epsilon', 'a positive number', c.adamEpsilon);
  posInt('gradient-accumulation-steps', c.gradientAccumulationSteps);
  posInt('batch-size', c.batchSize);
  if (!(c.epochs > 0) || !Number.isFinite(c.epochs)) throw bad('epochs', 'a positive number', c.epochs);
  nonNegInt('max-steps', c.maxSteps);
  if (!Number.isInteger(c.seed)) throw bad('seed', 'an integer', c.seed);
  nonNegInt('save-steps', c.saveSteps);
  nonNegInt('save-total-limit', c.saveTotalLimit);
  nonNegInt('eval-steps', c.evalSteps);
  if (c.modelMaxLength !== undefined) posInt('model-max-length', c.modelMaxLength);
  posInt('threads', c.threads);
  posInt('lora-r', c.loraR);
  if (!(c.loraAlpha > 0)) throw bad('lora-alpha', 'a positive number', c.loraAlpha);
  if (c.evalSteps > 0 && !c.evalData) throw new TrainConfigError('--eval-steps needs --eval-data');
  return c;
}
