export * from './ggml-types.js';
export * from './writer.js';
export * from './reader.js';
export * from './vocab.js';
export * from './export.js';
