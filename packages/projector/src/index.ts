export * from './config.js';
export * from './weights.js';
export * from './graph.js';
export * from './model.js';
