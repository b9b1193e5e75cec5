import type { InferenceSession, Tensor } from 'onnxruntime-node';
import type { OnnxArtifact } from '../graph/onnx-export.js';
import type { ElemType } from '../graph/types.js';
import { ort } from './ort.js';
import type { Feeds, RunTensor, Session, SessionOptions } from './types.js';

export function sessionOptions(artifact: OnnxArtifact, opts: SessionOptions): InferenceSession.SessionOptions {
  const session: Record<string, string> = {};
  if (artifact.weightsFolder) session.model_external_initializers_file_folder_path = artifact.weightsFolder;
  if (opts.allowSpinning === false) {
    session['session.intra_op.allow_spinning'] = '0';
    session['session.inter_op.allow_spinning'] = '0';
  }
  return {
    executionProviders: ['cpu'],
    graphOptimizationLevel: opts.optimizationLevel ?? 'all',
    ...(opts.threads ? { intraOpNumThreads: opts.threads, interOpNumThreads: 1 } : {}),
    ...(artifact.memoryData.length ? { externalData: artifact.memoryData.map((m) => ({ path: m.path, data: m.data })) } : {}),
    extra: { session },
  };
}

export function toOrtTensor(t: RunTensor): Tensor {
  return new ort.Tensor(t.dtype as 'float32', t.data as Float32Array, t.dims as number[]);
}

export function fromOrtTensor(t: Tensor): RunTensor {
  return { dtype: t.type as ElemType, dims: [...t.dims], data: t.data as Float32Array };
}

/** A session that runs on the calling thread (ORT's run() blocks it while it computes). */
export async function createSession(artifact: OnnxArtifact, opts: SessionOptions = {}): Promise<Session> {
  let s: InferenceSession;
  try {
    s = await ort.InferenceSession.create(artifact.model, sessionOptions(artifact, opts));
  } catch (e) {
    throw new Error(`ONNX Runtime could not create the session: ${(e as Error).message.split('\n')[0]}`);
  }
  return {
    inputNames: s.inputNames,
    outputNames: s.outputNames,
    async run(feeds: Feeds, outputNames?: readonly string[], preallocated?: Readonly<Record<string, RunTensor>>) {
      const ortFeeds: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrtTensor(v);
      let out: InferenceSession.ReturnType;
      if (preallocated) {
        const fetches: Record<string, Tensor | null> = {};
        for (const n of outputNames ?? s.outputNames) fetches[n] = preallocated[n] ? toOrtTensor(preallocated[n]) : null;
        out = await s.run(ortFeeds, fetches as InferenceSession.FetchesType);
      } else out = outputNames ? await s.run(ortFeeds, outputNames as string[]) : await s.run(ortFeeds);
      const res: Record<string, RunTensor> = {};
      for (const [k, v] of Object.entries(out)) res[k] = fromOrtTensor(v);
      return res;
    },
    release: () => s.release(),
  };
}
