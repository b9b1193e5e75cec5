export * from './types.js';
export * from './conversation.js';
export * from './image-tokens.js';
export * from './resolve.js';
export * from './mobillama-v.js';
export * from './eval.js';
