import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

const ENTRY = fileURLToPath(new URL('./worker-entry.mjs', import.meta.url));

/** Starts a worker thread running the TypeScript module at `moduleUrl` with `data` in workerData. */
export function startTsWorker(moduleUrl: URL, data: Record<string, unknown> = {}): Worker {
  return new Worker(ENTRY, { workerData: { ...data, module: moduleUrl.href } });
}

/** The ArrayBuffers behind typed arrays, deduplicated, for a postMessage transfer list. */
export function transferablesOf(arrays: Iterable<ArrayBufferView>): ArrayBuffer[] {
  const set = new Set<ArrayBuffer>();
  for (const a of arrays) if (a.buffer instanceof ArrayBuffer) set.add(a.buffer);
  return [...set];
}
