import type { Worker } from 'node:worker_threads';
import type { OnnxArtifact } from '../graph/onnx-export.js';
import { startTsWorker, transferablesOf } from './worker-thread.js';
import type { Feeds, RunTensor, Session, SessionOptions } from './types.js';

type Reply =
  | { kind: 'ready'; inputNames: string[]; outputNames: string[] }
  | { kind: 'failed'; message: string }
  | { kind: 'done'; id: number; outputs?: Record<string, RunTensor> }
  | { kind: 'error'; id: number; message: string };

/**
 * A session hosted in a worker thread: run() returns a promise and the calling thread's
 * event loop keeps turning while ORT computes. Feeds are transferred, not copied, so a
 * caller must not reuse a feed's buffer after passing it.
 */
export async function createWorkerSession(artifact: OnnxArtifact, opts: SessionOptions = {}): Promise<Session> {
  const worker: Worker = startTsWorker(new URL('./session-worker.ts', import.meta.url), { artifact, options: opts });
  const pending = new Map<number, { resolve: (v: Record<string, RunTensor>) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let dead: Error | null = null;
  const names = await new Promise<{ inputNames: string[]; outputNames: string[] }>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', (m: Reply) => {
      if (m.kind === 'ready') resolve(m);
      else reject(new Error(m.kind === 'failed' ? m.message : 'session worker sent an unexpected message'));
    });
  }).catch(async (e: Error) => {
    await worker.terminate();
    throw e;
  });
  worker.on('message', (m: Reply) => {
    if (m.kind !== 'done' && m.kind !== 'error') return;
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.kind === 'error') p.reject(new Error(m.message));
    else p.resolve(m.outputs ?? {});
  });
  const fail = (e: Error) => {
    dead = e;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`session worker exited (code ${code})`)));
  const call = (msg: object, transfer: ArrayBuffer[] = []) =>
    new Promise<Record<string, RunTensor>>((resolve, reject) => {
      if (dead) return reject(dead);
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...msg, id }, transfer);
    });
  return {
    inputNames: names.inputNames,
    outputNames: names.outputNames,
    run: (feeds: Feeds, outputNames?: readonly string[], preallocated?: Readonly<Record<string, RunTensor>>) =>
      preallocated ? Promise.reject(new Error('preallocated outputs need an in-thread session')) : call({ kind: 'run', feeds, outputNames }, transferablesOf(Object.values(feeds).map((t) => t.data))),
    async release() {
      if (!dead) await call({ kind: 'release' }).catch(() => undefined);
      await worker.terminate();
    },
  };
}
