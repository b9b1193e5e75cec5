export * from './vocabulary.js';
export * from './random.js';
export * from './scene.js';
export * from './render.js';
export * from './language.js';
export * from './llava-format.js';
export * from './shapes-dataset.js';
