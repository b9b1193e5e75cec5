export * from './config.js';
export * from './weights.js';
export * from './graph.js';
export * from './preprocess.js';
export * from './model.js';
export * from './text/index.js';
export * from './contrastive.js';
export * from './clip-model.js';
