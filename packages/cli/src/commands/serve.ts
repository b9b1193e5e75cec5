import type { Command } from 'commander';
import { serveUntilSignal } from '@mobillama/server';
import { UsageError } from '../errors.js';
import { addModelOptions, modelOptionsFrom, type ModelFlags } from './model-options.js';

interface ServeFlags extends ModelFlags {
  port: string;
  host: string;
  apiKey?: string;
  allowRemoteImages?: boolean;
  workers?: string;
  queueSize?: string;
  timeout?: string;
  threads?: string;
}

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (!Number.isInteger(x) || x < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return x;
}

export function registerServe(program: Command): void {
  addModelOptions(
    program
      .command('serve')
      .description('serve the model: OpenAI-compatible /v1/chat/completions, /v1/vqa and a web page')
      .option('--port <n>', 'port (0 picks a free one)', '8080')
      .option('--host <addr>', 'address to listen on', '127.0.0.1')
      .option('--api-key <key>', 'require "Authorization: Bearer KEY" on /v1/*')
      .option('--allow-remote-images', 'let image_url fetch http(s) URLs')
      .option('--workers <n>', 'inference worker threads (each holds a copy of the model)')
      .option('--queue-size <n>', 'requests waiting beyond the workers before 429')
      .option('--timeout <seconds>', 'per-request timeout')
      .option('--threads <n>', 'CPU threads per worker'),
  ).action(async (f: ServeFlags) => {
    const port = int('port', f.port, 0)!;
    const timeout = int('timeout', f.timeout, 1);
    await serveUntilSignal({
      model: { ...modelOptionsFrom(f), allowSpinning: false },
      port, host: f.host, apiKey: f.apiKey ?? process.env.MOBILLAMA_API_KEY, allowRemoteImages: f.allowRemoteImages,
      workers: int('workers', f.workers, 1), queueSize: int('queue-size', f.queueSize, 0),
      timeoutMs: timeout === undefined ? undefined : timeout * 1000, threadsPerWorker: int('threads', f.threads, 1),
      onListening: (s) => process.stderr.write(`mobillama-v: serving ${s.info.id} at ${s.url}\n`),
    });
  });
}
