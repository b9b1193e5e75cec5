export { train, stepPlan, type TrainHooks, type TrainResult } from './trainer.js';
export { resolveConfig, STAGE_LR, type TrainConfig, type TrainConfigInput, type Stage } from './config.js';
export { DataError, TrainConfigError } from './errors.js';
export { LlavaDataset, type LlavaEntry, type LlavaTurn } from './dataset.js';
export {
  IGNORE_INDEX, VICUNA_V1_SYSTEM, moveImageToFront, preprocessPlain, preprocessVicunaV1, tokenizeSample, vicunaV1Prompt,
  type TokenizedSample, type TrainTemplate, type MaskingOptions,
} from './masking.js';
export { collate, TRAIN_IO, MASKED, type LoadedSample, type MicroBatch, type CollateOptions } from './collate.js';
export { buildTrainGraph, type TrainModelParts, type TrainGraphOptions, type TrainGraph } from './graph.js';
export { LoraGraphBuilder, loraAdapters, initLoraParams, peftKey, adapterConfig, LORA_TARGET_MODULES, type LoraAdapter, type LoraOptions } from './lora.js';
export { adamwStep, newAdamWState, globalGradNorm, clipCoefficient, ADAMW_DEFAULTS, type AdamWOptions, type AdamWState } from './optimizer.js';
export { lrAt, lrLambda, warmupStepsFor, type LrSchedulerKind, type ScheduleOptions } from './schedule.js';
export {
  writeCheckpoint, readCheckpoint, findLatestCheckpoint, writeModelFiles, OPTIMIZER_FILE, STATE_FILE,
  type ModelExport, type ParamFile, type SideFile, type TrainerState,
} from './checkpoint.js';
export { JsonlLog, Progress, lossCurveSvg, type StepRecord, type EvalRecord } from './logging.js';
export { DataOrder, Prefetcher, loadSample, type MicroBatchRef, type SampleLoaderOptions } from './loader.js';
export { loadTrainModel, materializeParams, modelExport, projectorKey, type TrainModel } from './model.js';
export { decays, type Param } from './params.js';
export { Rng, type RngState } from './rng.js';
