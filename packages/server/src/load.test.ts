// Behaviour under load: bounded queue, /health latency during generation, timeouts, disconnects.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { chatBody, json, postJson, sseEvents, startTestServer, type ErrorJson, type HealthJson, type TestServer } from './testing/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('one worker, queue of 4', () => {
  let s: TestServer;
  beforeAll(async () => { s = await startTestServer({ workers: 1, queueSize: 4, timeoutMs: 60_000 }); });
  afterAll(async () => { await s?.close(); });

  it('a burst of 32 requests: each gets 200 or 429 (with Retry-After), none hangs, none 5xx', async () => {
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: 32 }, async (_, i) => {
      const res = await postJson(`${s.url}/v1/chat/completions`, chatBody(`[tokens=10][delay=20] request ${i}`), {});
      const body = await res.text();
      return { status: res.status, retryAfter: res.headers.get('retry-after'), body };
    }));
    const elapsed = performance.now() - t0;
    const statuses = results.map((r) => r.status);
    expect(statuses.every((c) => c === 200 || c === 429), statuses.join(',')).toBe(true);
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    // One running and four waiting are admitted at the burst; the rest are refused at once.
    expect(ok.length).toBeGreaterThanOrEqual(5);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect((JSON.parse(r.body) as ErrorJson).error).toMatchObject({ type: 'rate_limit_error', code: 'queue_full' });
    }
    for (const r of ok) expect((JSON.parse(r.body) as ChatCompletion).usage?.completion_tokens).toBe(10);
    expect(elapsed).toBeLessThan(20_000);
    const h = await json<HealthJson>(await fetch(`${s.url}/health`));
    expect(h.queue.depth).toBe(0);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`^mobillama_queue_rejections_total ${refused.length}$`, 'm'));
  });

  it('/health answers within 100 ms while a long generation blocks the worker', async () => {
    const long = postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=150][delay=20] long'));
    await sleep(200); // the worker is now inside the generation, blocking its thread per token
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const res = await fetch(`${s.url}/health`);
      await res.json();
      times.push(performance.now() - t0);
      expect(res.status).toBe(200);
      await sleep(50);
    }
    const h = await json<HealthJson>(await fetch(`${s.url}/health`));
    expect(h.workers.busy).toBe(1); // still generating: the measurement overlapped it
    console.log(`/health during generation: max ${Math.max(...times).toFixed(1)} ms over ${times.length} probes`);
    expect(Math.max(...times), times.map((t) => t.toFixed(1)).join(' ')).toBeLessThan(100);
    const res = await long;
    expect(res.status).toBe(200);
    expect((await json<ChatCompletion>(res)).usage?.completion_tokens).toBe(150);
  });

  it('a client that disconnects cancels its generation (the worker is free again within a token)', async () => {
    // If the abandoned generation were not cancelled, the next request would wait ~10 s for it.
    await waitIdle(s);
    const ac = new AbortController();
    const req = fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(chatBody('[tokens=500][delay=20] abandoned')), signal: ac.signal,
    }).catch(() => undefined);
    await sleep(300);
    ac.abort();
    await req;
    const t0 = performance.now();
    const res = await postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=3][delay=1] next'));
    expect(res.status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(1500);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(/route="\/v1\/chat\/completions",status="499"\} [1-9]/);
  });

  it('a streaming client that disconnects cancels its generation', async () => {
    await waitIdle(s);
    const ac = new AbortController();
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody('[tokens=500][delay=20] stream then leave', { stream: true })), signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the role chunk: generation is underway
    await sleep(100);
    ac.abort();
    const t0 = performance.now();
    const next = await postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=3][delay=1] next'));
    expect(next.status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(1500);
  });
});

describe('per-request timeout', () => {
  let s: TestServer;
  beforeAll(async () => { s = await startTestServer({ workers: 1, queueSize: 2, timeoutMs: 500 }); });
  afterAll(async () => { await s?.close(); });

  it('a generation past the timeout → 504, and the worker is cancelled', async () => {
    const t0 = performance.now();
    const res = await postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=200][delay=20] too long'));
    const dt = performance.now() - t0;
    expect(res.status).toBe(504);
    expect((await json<ErrorJson>(res)).error).toMatchObject({ type: 'timeout_error', code: 'timeout' });
    expect(dt).toBeGreaterThanOrEqual(450);
    expect(dt).toBeLessThan(2000);
    const t1 = performance.now();
    const ok = await postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=3][delay=1] quick'));
    expect(ok.status).toBe(200);
    expect(performance.now() - t1).toBeLessThan(400);
  });

  it('a streamed generation past the timeout ends with an error event and [DONE]', async () => {
    const res = await postJson(`${s.url}/v1/chat/completions`, chatBody('[tokens=200][delay=20] too long', { stream: true }));
    expect(res.status).toBe(200);
    const events = await sseEvents(res);
    expect(events[events.length - 1]).toBe('[DONE]');
    const err = JSON.parse(events[events.length - 2]) as ErrorJson;
    expect(err.error.code).toBe('timeout');
    expect(events.length).toBeGreaterThan(3); // some tokens arrived before the timeout
  });

  it('requests that time out while queued → 504 and leave the queue', async () => {
    await waitIdle(s);
    const all = await Promise.all([0, 1, 2].map((i) => postJson(`${s.url}/v1/chat/completions`, chatBody(`[tokens=100][delay=20] q${i}`))));
    expect(all.map((r) => r.status)).toEqual([504, 504, 504]);
    await waitIdle(s);
    expect((await json<HealthJson>(await fetch(`${s.url}/health`))).queue.depth).toBe(0);
  });
});

async function waitIdle(s: TestServer): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const h = await json<HealthJson>(await fetch(`${s.url}/health`));
    if (h.workers.busy === 0 && h.queue.depth === 0) return;
    await sleep(25);
  }
  throw new Error('server did not become idle');
}
