export { addBackward, type BackwardOptions } from './backward.js';
export { VJP_RULES, NON_DIFFERENTIABLE, type VjpRule, type VjpContext } from './vjp-rules.js';
export { sumToShape } from './grad-ops.js';
export { crossEntropy, tokenNll, type CrossEntropyOptions } from './losses.js';
export { gradcheck, toFloat64, type GradcheckFeeds, type GradcheckOptions, type GradcheckResult } from './gradcheck.js';
