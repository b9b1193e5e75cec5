// Runs inside a worker thread: loads one model and answers one request at a time, posting
// each generated piece as it comes. ORT's session.run() blocks this thread, which is why
// the model lives here and not on the HTTP thread.
import { parentPort, workerData } from 'node:worker_threads';
import type { VqaModel } from '@mobillama/pipeline';
import type { FromWorker, InferenceWorkerData, ModelModule, ToWorker } from './protocol.js';

const port = parentPort!;
const data = workerData as InferenceWorkerData;
const post = (m: FromWorker) => port.postMessage(m);

/**
 * One macrotask turn. Each decode step blocks the thread and then resolves as a microtask,
 * so without this a 'cancel' message would wait in the port until the generation ended.
 */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

async function load(): Promise<VqaModel | null> {
  try {
    const mod = (await import(data.modelModule)) as Partial<ModelModule>;
    if (typeof mod.loadModel !== 'function') throw new Error(`${data.modelModule} does not export loadModel()`);
    const m = await mod.loadModel({ ...data.modelOptions, allowSpinning: false });
    post({ kind: 'ready', info: m.info });
    return m;
  } catch (e) {
    post({ kind: 'failed', message: (e as Error)?.message ?? String(e), errorName: (e as Error)?.name });
    port.close();
    return null;
  }
}

let current: { id: number; controller: AbortController } | null = null;

async function run(model: VqaModel, id: number, request: ToWorker & { kind: 'run' }): Promise<void> {
  const controller = new AbortController();
  current = { id, controller };
  try {
    const it = model.stream({ ...request.request, signal: controller.signal });
    for (;;) {
      const r = await it.next();
      if (r.done) {
        post({ kind: 'done', id, result: r.value });
        break;
      }
      post({ kind: 'piece', id, piece: r.value });
      await yieldToEventLoop();
    }
  } catch (e) {
    const err = e as Error;
    post({ kind: 'error', id, name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  } finally {
    current = null;
  }
}

const model = await load();
if (model) port.on('message', (m: ToWorker) => {
  switch (m.kind) {
    case 'run':
      void run(model, m.id, m);
      break;
    case 'cancel':
      if (current?.id === m.id) current.controller.abort();
      break;
    case 'close':
      current?.controller.abort();
      void model.dispose().catch(() => undefined).finally(() => {
        post({ kind: 'closed' });
        port.close();
      });
      break;
  }
});
