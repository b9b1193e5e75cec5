import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../graph/builder.js';
import { exportOnnx } from '../graph/onnx-export.js';
import { createSession } from './session.js';
import { createWorkerSession } from './worker-session.js';
import { SessionCache } from './session-cache.js';

/** A graph heavy enough to keep a thread busy for a while: repeated 256x256 matmuls. */
function heavyGraph(reps: number) {
  const g = new GraphBuilder('heavy');
  const x = g.input('x', 'float32', ['n', 256]);
  const w = g.weight('w', { dtype: 'F32', shape: [256, 256], data: new Float32Array(256 * 256).fill(1 / 256) });
  let h = x;
  for (let i = 0; i < reps; i++) h = g.matmul(h, w);
  g.output(h, 'y');
  return exportOnnx(g.build());
}

describe('runtime', () => {
  it('in-thread and worker sessions give the same results', async () => {
    const art = heavyGraph(3);
    const x = new Float32Array(2 * 256).map((_, i) => i % 5);
    const a = await createSession(art, { threads: 1 });
    const b = await createWorkerSession(art, { threads: 1 });
    const ya = await a.run({ x: { dtype: 'float32', dims: [2, 256], data: x.slice() } });
    const yb = await b.run({ x: { dtype: 'float32', dims: [2, 256], data: x.slice() } });
    expect(Array.from(yb.y.data as Float32Array)).toEqual(Array.from(ya.y.data as Float32Array));
    expect(b.inputNames).toEqual(['x']);
    await a.release();
    await b.release();
  });

  it('a worker session leaves the event loop free while it computes', async () => {
    const s = await createWorkerSession(heavyGraph(400), { threads: 1 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const t0 = Date.now();
    await s.run({ x: { dtype: 'float32', dims: [512, 256], data: new Float32Array(512 * 256).fill(1) } });
    const elapsed = Date.now() - t0;
    clearInterval(timer);
    // The timer fired throughout the run (a blocked loop would fire it at most once).
    expect(ticks).toBeGreaterThan(Math.min(3, elapsed / 20));
    await s.release();
  });

  it('reports a worker-side failure as a rejected promise, not a crash', async () => {
    const s = await createWorkerSession(heavyGraph(1), { threads: 1 });
    await expect(s.run({ x: { dtype: 'float32', dims: [2, 3], data: new Float32Array(6) } })).rejects.toThrow();
    const ok = await s.run({ x: { dtype: 'float32', dims: [1, 256], data: new Float32Array(256) } });
    expect(ok.y.dims).toEqual([1, 256]);
    await s.release();
  });

  it('session creation errors are one clear line', async () => {
    const bad = { model: new Uint8Array([1, 2, 3]), memoryData: [] };
    await expect(createSession(bad)).rejects.toThrow(/^ONNX Runtime could not create the session: [^\n]*$/);
  });

  it('the cache builds each key once and releases all', async () => {
    const cache = new SessionCache();
    let made = 0;
    const make = async () => { made++; return createSession(heavyGraph(1)); };
    const [s1, s2] = await Promise.all([cache.get('a', make), cache.get('a', make)]);
    expect(s1).toBe(s2);
    expect(made).toBe(1);
    await cache.releaseAll();
    expect(cache.size).toBe(0);
  });
});
