import type { ModelInfo } from '@mobillama/pipeline';
import { createServer, type ListeningServer } from './app.js';
import type { ServerOptions } from './options.js';

export interface RunOptions extends ServerOptions {
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
}

export interface RunningServer extends ListeningServer {
  readonly info: ModelInfo;
}

/** Creates the server, binds it and waits for the model to load. Rejects (with nothing left running) if loading fails. */
export async function runServer(opts: RunOptions): Promise<RunningServer> {
  const srv = createServer(opts);
  let listening: ListeningServer;
  try {
    listening = await srv.listen(opts.port ?? 8080, opts.host ?? '127.0.0.1');
  } catch (e) {
    await srv.close();
    throw e;
  }
  return { ...listening, info: await srv.ready };
}

export interface ServeUntilSignalOptions extends RunOptions {
  /** Called once the server is listening with the model loaded (the CLI prints the URL). */
  onListening?: (server: RunningServer) => void;
  /** Default ['SIGTERM', 'SIGINT']. */
  signals?: readonly NodeJS.Signals[];
}

/**
 * What `mobillama-v serve` runs: serve until SIGTERM/SIGINT, then stop accepting, let the
 * requests in flight finish and stop the workers; resolves when all that is done (the caller
 * then exits 0). A second signal cancels what is still running instead of waiting.
 */
export async function serveUntilSignal(opts: ServeUntilSignalOptions): Promise<void> {
  const log = opts.log ?? ((line: string) => console.error(line));
  const server = await runServer(opts);
  opts.onListening?.(server);
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
  const waiters = new Map<NodeJS.Signals, () => void>();
  const first = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of signals) {
      const h = () => resolve(s);
      waiters.set(s, h);
      process.once(s, h);
    }
  });
  for (const [s, h] of waiters) process.removeListener(s, h);
  log(`${first}: no longer accepting requests; finishing those in flight`);
  const force = (s: NodeJS.Signals) => {
    log(`${s} again: cancelling the requests in flight`);
    void server.close({ force: true });
  };
  for (const s of signals) process.once(s, force);
  try {
    await server.close();
  } finally {
    for (const s of signals) process.removeListener(s, force);
  }
  log('stopped');
}
