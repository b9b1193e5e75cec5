export * from './config.js';
export * from './weights.js';
export * from './graph.js';
export * from './projection.js';
export * from './bpe.js';
export * from './tokenizer.js';
export * from './bpe-train.js';
export * from './init.js';
