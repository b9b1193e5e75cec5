#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so there is no build step to forget.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
const { register } = await import('tsx/esm/api');
register();
await import('../src/main.ts');
