import type { GenerationPiece } from '@mobillama/decoder';
import type { AnswerResult } from '@mobillama/pipeline';
import { ApiError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { WireAnswerRequest } from './protocol.js';
import { AdmissionQueue, QueueFullError } from './queue.js';
import { InferenceError, WorkerCrashError, type WorkerPool } from './worker-pool.js';

/** Abort reasons: why a request's generation was cancelled. */
export class RequestTimeoutError extends Error {
  constructor(ms: number) {
    super(`the request took longer than ${ms} ms and was cancelled`);
    this.name = 'RequestTimeoutError';
  }
}
export class ClientGoneError extends Error {
  constructor() {
    super('the client disconnected');
    this.name = 'ClientGoneError';
  }
}
export class ShutdownError extends Error {
  constructor() {
    super('the server is shutting down');
    this.name = 'ShutdownError';
  }
}

export interface InferenceHooks {
  readonly signal: AbortSignal;
  /** Called once a worker takes the request (after any wait in the queue). */
  readonly onStart?: () => void;
  readonly onPiece?: (piece: GenerationPiece) => void;
}

/**
 * Queue + worker pool: admits a request or refuses it with 429, runs it on a worker, and
 * settles as soon as the request's signal aborts (timeout, disconnect) even while the worker
 * is still finishing its current step; the queue slot is freed only when the worker is.
 */
export class InferenceService {
  readonly queue: AdmissionQueue;
  /** Smoothed seconds per request on a worker, for Retry-After. */
  private serviceSeconds = 1;

  constructor(readonly pool: WorkerPool, queueSize: number, private readonly metrics: Metrics) {
    this.queue = new AdmissionQueue(pool.size, queueSize);
  }

  retryAfterSeconds(): number {
    const ahead = this.queue.depth + this.queue.active;
    return Math.max(1, Math.ceil((this.serviceSeconds * ahead) / this.pool.size));
  }

  async run(request: WireAnswerRequest, hooks: InferenceHooks): Promise<AnswerResult> {
    const { signal } = hooks;
    let release: () => void;
    try {
      release = await this.queue.enter(signal);
    } catch (e) {
      if (!(e instanceof QueueFullError)) throw e;
      this.metrics.observeQueueFull();
      throw new ApiError(429, e.message, { code: 'queue_full', headers: { 'Retry-After': String(this.retryAfterSeconds()) } });
    }
    const t0 = performance.now();
    let tFirst: number | null = null;
    hooks.onStart?.();
    const work = this.pool.run(request, {
      signal,
      onPiece: (p) => {
        tFirst ??= performance.now();
        if (!signal.aborted) hooks.onPiece?.(p);
      },
    }).then((r) => {
      const seconds = (performance.now() - t0) / 1000;
      this.serviceSeconds = 0.8 * this.serviceSeconds + 0.2 * seconds;
      this.metrics.observeGeneration(r.usage.promptTokens, r.usage.completionTokens, tFirst === null ? null : (tFirst - t0) / 1000);
      return r;
    }).finally(release);
    return raceAbort(work, signal);
  }
}

/** Settles with `work`, or rejects with the signal's reason as soon as it aborts. */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  work.catch(() => undefined);
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Maps what a run can throw to the HTTP error a client sees. */
export function runErrorToApi(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof RequestTimeoutError) return new ApiError(504, e.message, { code: 'timeout' });
  if (e instanceof ShutdownError) return new ApiError(503, e.message, { code: 'shutting_down' });
  if (e instanceof InferenceError) {
    // The pipeline reports bad requests as InputError (prompt too long) or ImageError (an image it cannot decode).
    if (e.errorName === 'InputError' || e.errorName === 'ImageError') return new ApiError(400, e.message, { code: 'invalid_request' });
    return new ApiError(500, `inference failed: ${e.message}`, { code: 'inference_error' });
  }
  if (e instanceof WorkerCrashError) return new ApiError(500, `${e.message}; the worker was restarted`, { code: 'worker_crashed' });
  return new ApiError(503, (e as Error)?.message ?? 'inference unavailable', { code: 'unavailable' });
}
