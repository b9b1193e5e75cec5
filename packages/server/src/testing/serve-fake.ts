// A server process on the fake model, for the SIGTERM test and manual trials:
//   tsx packages/server/src/testing/serve-fake.ts [port]
// Prints "LISTENING <url>" on stdout once ready; exits 0 after a graceful stop.
import { serveUntilSignal } from '../run.js';
import { FAKE_MODEL_MODULE } from './fake-model.js';

await serveUntilSignal({
  model: { model: 'fake?delay=2' },
  modelModule: FAKE_MODEL_MODULE,
  port: Number(process.argv[2] ?? 0),
  host: '127.0.0.1',
  queueSize: 4,
  timeoutMs: 30_000,
  onListening: (s) => process.stdout.write(`LISTENING ${s.url}\n`),
});
