// SIGTERM on a real server process: stop accepting, finish what is in flight, exit 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { chatBody, json, postJson, sseEvents } from './testing/harness.js';

const SCRIPT = fileURLToPath(new URL('./testing/serve-fake.ts', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let child: ChildProcess | null = null;
afterEach(() => { if (child && child.exitCode === null) child.kill('SIGKILL'); });

function start(): Promise<{ url: string; exit: Promise<number | null>; stderr: () => string }> {
  const p = spawn(process.execPath, ['--import', 'tsx', SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' } });
  child = p;
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (c: string) => { err += c; });
  const exit = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const m = /LISTENING (\S+)/.exec(out);
      if (m) resolve({ url: m[1], exit, stderr: () => err });
    });
    void exit.then((code) => reject(new Error(`server exited early (${code}): ${err}`)));
  });
}

describe('SIGTERM', () => {
  it('stops accepting, drains the request in flight and exits 0', async () => {
    const srv = await start();
    const plain = postJson(`${srv.url}/v1/chat/completions`, chatBody('[tokens=40][delay=25] finish me'));
    await sleep(300);
    child!.kill('SIGTERM');
    await sleep(200);
    // New requests are refused now: a new connection fails, or a reused one gets 503.
    const late = await fetch(`${srv.url}/health`).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(late);
    const res = await plain;
    expect(res.status).toBe(200);
    const body = await json<ChatCompletion>(res);
    expect(body.usage?.completion_tokens).toBe(40);
    expect(body.choices[0].finish_reason).toBe('stop');
    expect(await srv.exit).toBe(0);
    expect(srv.stderr()).toMatch(/SIGTERM/);
  });

  it('drains a streamed response too', async () => {
    const srv = await start();
    const streamed = postJson(`${srv.url}/v1/chat/completions`, chatBody('[tokens=30][delay=25] stream me', { stream: true }));
    await sleep(300);
    child!.kill('SIGTERM');
    const res = await streamed;
    expect(res.status).toBe(200);
    const events = await sseEvents(res);
    expect(events[events.length - 1]).toBe('[DONE]');
    expect(events.length).toBe(1 + 30 + 1 + 1); // role, tokens, finish, [DONE]
    expect(await srv.exit).toBe(0);
  });
});
