import type { Session } from './types.js';

/**
 * Keeps sessions by key so a model's graphs are built once per process, and releases
 * them together. Creation is deduplicated: concurrent gets of one key share a promise.
 */
export class SessionCache {
  private readonly sessions = new Map<string, Promise<Session>>();

  get(key: string, create: () => Promise<Session>): Promise<Session> {
    let s = this.sessions.get(key);
    if (!s) {
      s = create();
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  async release(key: string): Promise<void> {
    const s = this.sessions.get(key);
    this.sessions.delete(key);
    if (s) await (await s).release();
  }

  async releaseAll(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (s) => (await s.catch(() => null))?.release()));
  }

  get size(): number {
    return this.sessions.size;
  }
}
