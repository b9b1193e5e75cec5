import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN, ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

const MODEL = `${ROOT}packages/pipeline/fixtures/tiny-llava`;

describe('mobillama-v serve', () => {
  it('serves the model, answers over HTTP, and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--model', MODEL, '--template', 'mobillama_chat', '--port', '0', '--threads', '1'], { cwd: ROOT });
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        const m = /serving .* at (http:\/\/\S+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`serve exited early (${code}): ${stderr}`)));
    });
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hello' }], max_tokens: 3 }),
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
    const exit = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  });

  it('a bad model or flag exits 2 with one line', async () => {
    expect(expectCleanFailure(await runCli(['serve', '--model', '/no/such/model', '--port', '0']))).toMatch(/no\/such\/model/);
    expect(expectCleanFailure(await runCli(['serve', '--model', MODEL, '--port', 'x']))).toMatch(/--port must be/);
  });
});
