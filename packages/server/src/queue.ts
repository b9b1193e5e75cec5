/** The queue already holds its maximum of waiting requests. */
export class QueueFullError extends Error {
  constructor(readonly depth: number) {
    super(`the server is busy (${depth} requests waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (e: unknown) => void;
  readonly signal?: AbortSignal;
  readonly onAbort: () => void;
}

/**
 * Admission control: at most `concurrency` holders at once, at most `maxWaiting` waiting in
 * FIFO order; anyone past that is refused at once (the caller answers 429) instead of
 * piling up unbounded work.
 */
export class AdmissionQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly concurrency: number, readonly maxWaiting: number) {}

  /** Requests waiting for a slot. */
  get depth(): number { return this.waiting.length; }
  /** Slots held. */
  get active(): number { return this.running; }

  /**
   * Resolves with a release function once a slot is free. Rejects with QueueFullError when
   * the queue is full, or with the signal's reason when it aborts while waiting.
   */
  enter(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.running < this.concurrency && this.waiting.length === 0) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxWaiting) return Promise.reject(new QueueFullError(this.waiting.length));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve, reject, signal,
        onAbort: () => {
          const i = this.waiting.indexOf(waiter);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal!.reason);
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.admit();
    };
  }

  private admit(): void {
    while (this.running < this.concurrency && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      w.signal?.removeEventListener('abort', w.onAbort);
      this.running++;
      w.resolve(this.releaser());
    }
  }
}
