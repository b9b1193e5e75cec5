// Starts a server on the fake model at 127.0.0.1:<random port> for tests.
import { createServer, type ListeningServer, type VqaServer } from '../app.js';
import type { ServerOptions } from '../options.js';
import { FAKE_MODEL_MODULE } from './fake-model.js';

export interface TestServer {
  readonly url: string;
  readonly server: VqaServer;
  readonly listening: ListeningServer;
  close(): Promise<void>;
}

export async function startTestServer(opts: Partial<ServerOptions> = {}): Promise<TestServer> {
  const server = createServer({ model: { model: 'fake' }, modelModule: FAKE_MODEL_MODULE, log: () => {}, ...opts });
  const listening = await server.listen(0, '127.0.0.1');
  return { url: listening.url, server, listening, close: () => listening.close({ force: true }) };
}

export const chatBody = (question: string, extra: Record<string, unknown> = {}, image?: string) => ({
  model: 'fake',
  messages: [{
    role: 'user',
    content: image ? [{ type: 'text', text: question }, { type: 'image_url', image_url: { url: image } }] : question,
  }],
  ...extra,
});

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<globalThis.Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

/** Reads an SSE body into its `data:` payloads. */
export async function sseEvents(res: globalThis.Response): Promise<string[]> {
  const text = await res.text();
  return text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

/** Response bodies as tests read them. */
export interface ErrorJson {
  error: { message: string; type: string; param: string | null; code: string | null };
}
export interface HealthJson {
  status: string;
  model: string | null;
  workers: { total: number; ready: number; busy: number };
  queue: { depth: number; capacity: number };
}
export interface ModelsJson {
  object: 'list';
  data: { id: string; object: string; owned_by: string; image_tokens: number }[];
}
export interface VqaJson {
  object: string;
  answer: string;
  finish_reason: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  timings: { time_to_first_token_ms: number };
}
export const json = async <T>(res: globalThis.Response): Promise<T> => (await res.json()) as T;
