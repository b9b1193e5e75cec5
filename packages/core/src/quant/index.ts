export * from './block.js';
export * from './layout.js';
export * from './linear.js';
export * from './convert.js';
export * from './int8-encoding.js';
