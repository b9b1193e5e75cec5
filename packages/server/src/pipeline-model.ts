// The default model module for inference workers: the MobiLlamaV pipeline.
import { MobiLlamaV, type ModelOptions, type VqaModel } from '@mobillama/pipeline';

export function loadModel(opts: ModelOptions): Promise<VqaModel> {
  // Idle workers must not spin: the HTTP thread and the other workers share the cores.
  return MobiLlamaV.load({ ...opts, allowSpinning: false });
}
