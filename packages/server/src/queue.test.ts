import { describe, expect, it } from 'vitest';
import { AdmissionQueue, QueueFullError } from './queue.js';

describe('AdmissionQueue', () => {
  it('admits up to the concurrency, queues FIFO up to maxWaiting, refuses past that', async () => {
    const q = new AdmissionQueue(1, 2);
    const order: number[] = [];
    const r0 = await q.enter();
    const p1 = q.enter().then((r) => { order.push(1); return r; });
    const p2 = q.enter().then((r) => { order.push(2); return r; });
    expect(q.depth).toBe(2);
    await expect(q.enter()).rejects.toBeInstanceOf(QueueFullError);
    r0();
    r0(); // releasing twice frees one slot only
    const r1 = await p1;
    expect(q.active).toBe(1);
    expect(q.depth).toBe(1);
    r1();
    (await p2)();
    expect(order).toEqual([1, 2]);
    expect(q.active).toBe(0);
  });

  it('a waiter whose signal aborts leaves the queue with the abort reason', async () => {
    const q = new AdmissionQueue(1, 4);
    const r0 = await q.enter();
    const ac = new AbortController();
    const waiting = q.enter(ac.signal);
    const next = q.enter();
    ac.abort(new Error('gone'));
    await expect(waiting).rejects.toThrow('gone');
    expect(q.depth).toBe(1);
    r0();
    (await next)();
    expect(q.active).toBe(0);
  });

  it('queue size 0: busy means refused', async () => {
    const q = new AdmissionQueue(2, 0);
    await q.enter();
    await q.enter();
    await expect(q.enter()).rejects.toBeInstanceOf(QueueFullError);
  });
});
