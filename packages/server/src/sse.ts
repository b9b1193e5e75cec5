import type { Response } from 'express';

/** Server-sent events as OpenAI streams them: `data: <json>\n\n` lines, ending with `data: [DONE]`. */
export class SseStream {
  private started = false;

  constructor(private readonly res: Response) {}

  get open(): boolean {
    return !this.res.writableEnded && !this.res.destroyed;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.res.status(200);
    this.res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    this.res.setHeader('Cache-Control', 'no-cache, no-transform');
    // Proxies such as nginx buffer responses unless told not to; tokens must arrive as made.
    this.res.setHeader('X-Accel-Buffering', 'no');
    this.res.flushHeaders();
  }

  send(data: unknown): void {
    this.start();
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Ends the stream with the `[DONE]` sentinel. */
  done(): void {
    this.start();
    if (this.open) this.res.end('data: [DONE]\n\n');
  }
}
