// Runs inside a worker thread: hosts one ORT session and answers run requests.
import { parentPort, workerData } from 'node:worker_threads';
import { createSession } from './session.js';
import { transferablesOf } from './worker-thread.js';
import type { OnnxArtifact } from '../graph/onnx-export.js';
import type { Feeds, RunTensor, SessionOptions } from './types.js';

type Request =
  | { kind: 'run'; id: number; feeds: Feeds; outputNames?: string[] }
  | { kind: 'release'; id: number };

const port = parentPort!;
const { artifact, options } = workerData as { artifact: OnnxArtifact; options: SessionOptions };

try {
  const session = await createSession(artifact, options);
  port.postMessage({ kind: 'ready', inputNames: session.inputNames, outputNames: session.outputNames });
  port.on('message', async (req: Request) => {
    try {
      if (req.kind === 'release') {
        await session.release();
        port.postMessage({ kind: 'done', id: req.id });
        port.close();
        return;
      }
      const outputs: Record<string, RunTensor> = await session.run(req.feeds, req.outputNames);
      port.postMessage({ kind: 'done', id: req.id, outputs }, transferablesOf(Object.values(outputs).map((t) => t.data)));
    } catch (e) {
      port.postMessage({ kind: 'error', id: req.id, message: (e as Error).message });
    }
  });
} catch (e) {
  port.postMessage({ kind: 'failed', message: (e as Error).message });
}
