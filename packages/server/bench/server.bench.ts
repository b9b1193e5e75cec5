/**
 * HTTP server benchmark on loopback: requests/s and p50/p99 latency at concurrencies 1, 4
 * and 16, for non-streamed chat completions that carry a small PNG (so image checking is
 * included). Scenarios:
 *   - fake model, 0 ms/token: the server's own cost (HTTP, JSON, image check, the round
 *     trip to a worker thread and one message per token);
 *   - fake model, 5 ms/token × 16 tokens, blocking its thread like ORT: queueing and workers;
 *   - the real MobiLlamaV pipeline on the tiny LLaVA fixture (random weights, 8 tokens).
 *
 *   pnpm bench:server [--seconds 3] [--out FILE]
 *
 * Writes a markdown table to benchmarks/server.md (or --out) and stdout.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { createServer } from '../src/app.js';
import type { ServerOptions } from '../src/options.js';
import { FAKE_MODEL_MODULE } from '../src/testing/fake-model.js';
import { pngImage } from '../src/testing/images.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const TINY = resolve(ROOT, 'packages/pipeline/fixtures/tiny-llava');
const CONCURRENCY = [1, 4, 16];

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '3' }, out: { type: 'string' } } });
const seconds = Number(values.seconds);
const outFile = resolve(ROOT, values.out ?? 'benchmarks/server.md');

interface Scenario {
  readonly name: string;
  readonly server: Omit<ServerOptions, 'log'>;
  readonly body: (image: string) => unknown;
}

const chat = (text: string, image: string, maxTokens: number) => ({
  model: 'bench', max_tokens: maxTokens, temperature: 0,
  messages: [{ role: 'user', content: [{ type: 'text', text }, { type: 'image_url', image_url: { url: image } }] }],
});

const scenarios: Scenario[] = [
  {
    name: 'fake model, 16 tokens at 0 ms, 1 worker',
    server: { model: { model: 'fake?delay=0' }, modelModule: FAKE_MODEL_MODULE, workers: 1, queueSize: 64 },
    body: (img) => chat('[tokens=16][delay=0] bench', img, 16),
  },
  {
    name: 'fake model, 16 tokens at 5 ms, 1 worker',
    server: { model: { model: 'fake' }, modelModule: FAKE_MODEL_MODULE, workers: 1, queueSize: 64 },
    body: (img) => chat('[tokens=16][delay=5] bench', img, 16),
  },
  {
    name: 'fake model, 16 tokens at 5 ms, 2 workers',
    server: { model: { model: 'fake' }, modelModule: FAKE_MODEL_MODULE, workers: 2, queueSize: 64 },
    body: (img) => chat('[tokens=16][delay=5] bench', img, 16),
  },
  {
    name: 'tiny real MobiLlamaV (random weights), 8 tokens, 1 worker, 1 thread',
    server: { model: { model: TINY, template: 'mobillama_chat', threads: 1 }, workers: 1, queueSize: 64 },
    body: (img) => chat('What color is the circle?', img, 8),
  },
];

interface Cell { concurrency: number; requests: number; errors: number; rps: number; p50: number; p99: number }

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function load(url: string, body: string, concurrency: number, ms: number): Promise<Cell> {
  const latencies: number[] = [];
  let errors = 0;
  const end = performance.now() + ms;
  const one = async () => {
    const t0 = performance.now();
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    await res.arrayBuffer();
    if (res.status !== 200) errors++;
    else latencies.push(performance.now() - t0);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) await one();
  }));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { concurrency, requests: latencies.length, errors, rps: latencies.length / elapsed, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) };
}

const png = await pngImage(64, 48);
const tinyImage = readFileSync(resolve(TINY, 'image.png'));
const lines: string[] = [];
const results: { scenario: string; cells: Cell[] }[] = [];
for (const sc of scenarios) {
  const srv = createServer({ ...sc.server, log: () => {} });
  const l = await srv.listen(0, '127.0.0.1');
  const image = `data:image/png;base64,${(sc.server.modelModule ? png : tinyImage).toString('base64')}`;
  const body = JSON.stringify(sc.body(image));
  const url = `${l.url}/v1/chat/completions`;
  await load(url, body, 2, 300); // warm-up: JIT, connections, ORT first runs
  const cells: Cell[] = [];
  for (const c of CONCURRENCY) {
    const cell = await load(url, body, c, seconds * 1000);
    cells.push(cell);
    console.error(`${sc.name} | c=${c}: ${cell.rps.toFixed(1)} req/s, p50 ${cell.p50.toFixed(1)} ms, p99 ${cell.p99.toFixed(1)} ms, ${cell.errors} errors`);
  }
  results.push({ scenario: sc.name, cells });
  await l.close();
}

lines.push('# Server benchmark', '');
lines.push(`\`pnpm bench:server\` — ${new Date().toISOString().slice(0, 10)}, ${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length} cores, Node ${process.version}, loopback, ${seconds} s per cell.`);
lines.push('Non-streamed chat completions with a small PNG as a data: URL; each client sends its next request when the previous one answers.', '');
lines.push('| scenario | concurrency | requests | req/s | p50 ms | p99 ms | non-200 |', '|---|---:|---:|---:|---:|---:|---:|');
for (const r of results) {
  for (const c of r.cells) {
    lines.push(`| ${r.scenario} | ${c.concurrency} | ${c.requests} | ${c.rps.toFixed(1)} | ${c.p50.toFixed(1)} | ${c.p99.toFixed(1)} | ${c.errors} |`);
  }
}
lines.push('');
const md = lines.join('\n');
await mkdir(dirname(outFile), { recursive: true });
await writeFile(outFile, md);
console.log(md);
