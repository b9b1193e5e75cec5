import type { Worker } from 'node:worker_threads';
import { startTsWorker } from '@mobillama/core';
import type { GenerationPiece } from '@mobillama/decoder';
import type { AnswerResult, ModelInfo, ModelOptions } from '@mobillama/pipeline';
import type { FromWorker, InferenceWorkerData, ToWorker, WireAnswerRequest } from './protocol.js';

const WORKER_MODULE = new URL('./inference-worker.ts', import.meta.url);

/** An error thrown by the model inside a worker; `errorName` is the original class name (InputError, …). */
export class InferenceError extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message);
    this.name = 'InferenceError';
  }
}

/** The worker running a request died (a native crash, an uncaught error); it is restarted. */
export class WorkerCrashError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerCrashError';
  }
}

export interface RunHooks {
  readonly onPiece: (piece: GenerationPiece) => void;
  /** Aborting posts a cancel to the worker; the run then settles with finishReason 'abort'. */
  readonly signal?: AbortSignal;
}

interface Job extends RunHooks {
  readonly id: number;
  readonly resolve: (r: AnswerResult) => void;
  readonly reject: (e: Error) => void;
}

interface Slot {
  readonly index: number;
  worker: Worker | null;
  state: 'starting' | 'ready' | 'failed' | 'closed';
  ready: Promise<void>;
  job: Job | null;
  /** Claimed by run() while waiting for the worker to become ready. */
  claimed: boolean;
}

export interface WorkerPoolOptions {
  readonly modelModule: URL;
  readonly modelOptions: ModelOptions;
  readonly size: number;
  readonly log: (line: string) => void;
}

/**
 * N worker threads, each holding its own model and running one request at a time. A worker
 * that dies is reported to its caller and started again. The pool does not queue: callers
 * (the admission queue) keep at most `size` runs going.
 */
export class WorkerPool {
  private readonly slots: Slot[];
  private nextId = 1;
  private closing = false;
  info: ModelInfo | null = null;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.slots = Array.from({ length: opts.size }, (_, index) => ({
      index, worker: null, state: 'starting' as const, ready: Promise.resolve(), job: null, claimed: false,
    }));
  }

  get size(): number { return this.slots.length; }
  get busy(): number { return this.slots.filter((s) => s.claimed).length; }
  get readyCount(): number { return this.slots.filter((s) => s.state === 'ready').length; }
  get failedCount(): number { return this.slots.filter((s) => s.state === 'failed').length; }

  /** Starts every worker; resolves with the model's info once all have loaded it, rejects on the first failure. */
  async start(): Promise<ModelInfo> {
    for (const s of this.slots) this.spawn(s);
    try {
      await Promise.all(this.slots.map((s) => s.ready));
    } catch (e) {
      await this.close();
      throw e;
    }
    return this.info!;
  }

  private spawn(slot: Slot): void {
    const data: InferenceWorkerData = { modelModule: this.opts.modelModule.href, modelOptions: this.opts.modelOptions };
    const worker = startTsWorker(WORKER_MODULE, { ...data });
    slot.worker = worker;
    slot.state = 'starting';
    slot.ready = new Promise<void>((resolve, reject) => {
      let settled = false;
      worker.on('message', (m: FromWorker) => {
        if (m.kind === 'ready') {
          this.info ??= m.info;
          slot.state = 'ready';
          settled = true;
          resolve();
        } else if (m.kind === 'failed') {
          slot.state = 'failed';
          settled = true;
          // Keep the original error's name so callers can tell bad input (ConfigError, …) from bugs.
          reject(Object.assign(new Error(`model failed to load: ${m.message}`), m.errorName ? { name: m.errorName } : {}));
        } else this.onMessage(slot, m);
      });
      worker.on('error', (e) => this.opts.log(`inference worker ${slot.index}: ${e.message}`));
      worker.on('exit', (code) => {
        if (slot.worker !== worker) return;
        slot.worker = null;
        if (!settled) {
          slot.state = 'failed';
          reject(new Error(`inference worker exited while loading (code ${code})`));
          return;
        }
        const job = slot.job;
        slot.job = null;
        if (this.closing || slot.state === 'closed') {
          job?.reject(new Error('the server is shutting down'));
          return;
        }
        this.opts.log(`inference worker ${slot.index} exited (code ${code}); restarting`);
        job?.reject(new WorkerCrashError(`inference worker exited (code ${code})`));
        this.spawn(slot);
        slot.ready.catch((e: Error) => this.opts.log(`inference worker ${slot.index} restart failed: ${e.message}`));
      });
    });
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    const job = slot.job;
    if (!job || !('id' in m) || m.id !== job.id) return;
    if (m.kind === 'piece') {
      job.onPiece(m.piece);
      return;
    }
    slot.job = null;
    if (m.kind === 'done') job.resolve(m.result);
    else if (m.kind === 'error') job.reject(new InferenceError(m.name, m.message));
  }

  /** Runs one request on an idle worker. */
  async run(request: WireAnswerRequest, hooks: RunHooks): Promise<AnswerResult> {
    const slot = this.slots.find((s) => !s.claimed && s.state === 'ready')
      ?? this.slots.find((s) => !s.claimed && s.state === 'starting');
    if (!slot) throw new Error(this.failedCount === this.size ? 'no inference worker is running' : 'no idle inference worker');
    slot.claimed = true;
    try {
      await slot.ready;
      if (slot.state !== 'ready' || !slot.worker) throw new Error('inference worker is not running');
      const worker = slot.worker;
      const id = this.nextId++;
      return await new Promise<AnswerResult>((resolve, reject) => {
        const cancel = () => this.post(worker, { kind: 'cancel', id });
        hooks.signal?.addEventListener('abort', cancel, { once: true });
        const done = () => hooks.signal?.removeEventListener('abort', cancel);
        slot.job = {
          id, onPiece: hooks.onPiece, signal: hooks.signal,
          resolve: (r) => { done(); resolve(r); },
          reject: (e) => { done(); reject(e); },
        };
        this.post(worker, { kind: 'run', id, request });
        if (hooks.signal?.aborted) cancel();
      });
    } finally {
      slot.claimed = false;
    }
  }

  private post(worker: Worker, m: ToWorker): void {
    worker.postMessage(m);
  }

  /** Asks each worker to dispose its model, then ends it (forcibly after `graceMs`). */
  async close(graceMs = 5000): Promise<void> {
    this.closing = true;
    await Promise.all(this.slots.map(async (slot) => {
      const worker = slot.worker;
      slot.state = 'closed';
      if (!worker) return;
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.on('message', (m: FromWorker) => { if (m.kind === 'closed') void worker.terminate(); });
      this.post(worker, { kind: 'close' });
      const timer = setTimeout(() => void worker.terminate(), graceMs);
      await exited;
      clearTimeout(timer);
      slot.worker = null;
    }));
  }
}
