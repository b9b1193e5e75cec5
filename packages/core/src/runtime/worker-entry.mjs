// Bootstraps a worker thread that runs TypeScript: registers tsx, then imports the module
// named in workerData.module (the project runs from source, without a build step).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

process.env.ORT_DISABLE_TELEMETRY ??= '1';
register();
await import(workerData.module);
