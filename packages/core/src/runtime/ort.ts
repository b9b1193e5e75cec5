// Loads onnxruntime-node with telemetry off (it must be set before the module loads).
process.env.ORT_DISABLE_TELEMETRY ??= '1';
const ortModule = await import('onnxruntime-node');
export const ort = ortModule.default ?? ortModule;
