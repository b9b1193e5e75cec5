// The server on the real MobiLlamaV pipeline (a tiny LLaVA-layout checkpoint: CLIP tower,
// mlp2x_gelu projector, shared-FFN MobiLlama decoder, tokenizer), driven by the official
// openai client over real HTTP. The weights are random, so the text is arbitrary; what is
// checked is the plumbing: images in, greedy text out, streaming equal to non-streaming,
// usage counts, and the pipeline's own input errors surfacing as 400s.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { createServer, type ListeningServer } from '../packages/server/src/index.js';

const MODEL_DIR = fileURLToPath(new URL('../packages/pipeline/fixtures/tiny-llava/', import.meta.url));
const IMAGE = readFileSync(`${MODEL_DIR}image.png`);
const IMAGE_URL = `data:image/png;base64,${IMAGE.toString('base64')}`;

let server: ListeningServer;
let client: OpenAI;
beforeAll(async () => {
  // mobillama_chat: the tiny model has 128 positions, too few for vicuna_v1's system prompt.
  const srv = createServer({ model: { model: MODEL_DIR, template: 'mobillama_chat', threads: 1 }, workers: 1, queueSize: 4, log: () => {} });
  server = await srv.listen(0, '127.0.0.1');
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
});
afterAll(async () => { await server?.close(); });

const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{
  role: 'user',
  content: [{ type: 'text', text: 'What color is the circle?' }, { type: 'image_url', image_url: { url: IMAGE_URL } }],
}];

describe('server on the real pipeline with the openai client', () => {
  it('lists the model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny-llava']);
  });

  let plain = '';
  it('answers a non-streamed chat completion about an image', async () => {
    const r = await client.chat.completions.create({ model: 'tiny-llava', messages, max_tokens: 8, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.model).toBe('tiny-llava');
    const choice = r.choices[0];
    expect(['stop', 'length']).toContain(choice.finish_reason);
    expect(typeof choice.message.content).toBe('string');
    plain = choice.message.content ?? '';
    // 16 image tokens replace the marker; the prompt is template text around them.
    expect(r.usage!.prompt_tokens).toBeGreaterThan(16);
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(8);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  it('streams the same answer (greedy) chunk by chunk', async () => {
    const stream = await client.chat.completions.create({
      model: 'tiny-llava', messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      chunks++;
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
      usage = c.usage ?? usage;
    }
    expect(text).toBe(plain);
    expect(['stop', 'length']).toContain(finish);
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(chunks).toBeGreaterThan(2);
  });

  it('answers /v1/vqa with a multipart image upload', async () => {
    const form = new FormData();
    form.append('image', new Blob([IMAGE], { type: 'image/png' }), 'image.png');
    form.append('question', 'What color is the circle?');
    form.append('max_tokens', '4');
    const res = await fetch(`${server.url}/v1/vqa`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { answer: string; usage: { completion_tokens: number } };
    expect(typeof body.answer).toBe('string');
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(4);
  });

  it("turns the pipeline's input errors into 400s (prompt + max_tokens past the context)", async () => {
    const err = await client.chat.completions.create({ model: 'tiny-llava', messages, max_tokens: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(/positions/);
    const ok = await client.chat.completions.create({ model: 'tiny-llava', messages, max_tokens: 2, temperature: 0 });
    expect(ok.usage!.completion_tokens).toBeLessThanOrEqual(2); // and the server goes on serving
  });
});
