import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import { createServer } from './app.js';
import { FAKE_MODEL_MODULE } from './testing/fake-model.js';
import { chatBody, json, postJson, sseEvents, startTestServer, type ErrorJson, type HealthJson, type ModelsJson, type TestServer, type VqaJson } from './testing/harness.js';
import { dataUrl, pngImage } from './testing/images.js';

let s: TestServer;
let png: Buffer;
beforeAll(async () => {
  png = await pngImage();
  s = await startTestServer({ workers: 2, queueSize: 4 });
});
afterAll(async () => { await s?.close(); });

describe('server basics', () => {
  it('GET /health reports the workers and the queue', async () => {
    const res = await fetch(`${s.url}/health`);
    expect(res.status).toBe(200);
    const body = await json<HealthJson>(res);
    expect(body).toMatchObject({ status: 'ok', model: 'fake-mobillama-v', workers: { total: 2, ready: 2 }, queue: { depth: 0, capacity: 4 } });
  });

  it('GET /v1/models lists the model', async () => {
    const body = await json<ModelsJson>(await fetch(`${s.url}/v1/models`));
    expect(body.object).toBe('list');
    expect(body.data[0]).toMatchObject({ id: 'fake-mobillama-v', object: 'model', owned_by: 'mobillama', image_tokens: 576 });
  });

  it('answers a chat completion about an image (JSON)', async () => {
    const res = await postJson(`${s.url}/v1/chat/completions`, chatBody('What colour is it?', { max_tokens: 64 }, dataUrl(png)));
    expect(res.status).toBe(200);
    const body = await json<ChatCompletion>(res);
    expect(body).toMatchObject({ object: 'chat.completion', model: 'fake-mobillama-v', choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant' } }] });
    expect(body.id).toMatch(/^chatcmpl-/);
    expect(body.choices[0].message.content).toBe(`You asked: "What colour is it?". The image has ${png.length} bytes.`);
    expect(body.usage!.prompt_tokens).toBe(4 + 576);
    expect(body.usage!.completion_tokens).toBe(body.choices[0].message.content!.split(' ').length);
    expect(body.usage!.total_tokens).toBe(body.usage!.prompt_tokens + body.usage!.completion_tokens);
  });

  it('accepts raw base64 images and multi-turn conversations', async () => {
    const res = await postJson(`${s.url}/v1/chat/completions`, {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'image_url', image_url: { url: png.toString('base64') } }, { type: 'text', text: 'What is it?' }] },
        { role: 'assistant', content: 'A red square.' },
        { role: 'user', content: [{ type: 'text', text: 'And its size?' }] },
      ],
    });
    expect(res.status).toBe(200);
    expect((await json<ChatCompletion>(res)).choices[0].message.content).toBe(`You asked: "And its size?". The image has ${png.length} bytes. This is turn 2.`);
  });

  it('streams SSE chunks in OpenAI format ending with [DONE]', async () => {
    const res = await postJson(`${s.url}/v1/chat/completions`, chatBody('Stream please', { stream: true, stream_options: { include_usage: true } }, dataUrl(png)));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await sseEvents(res);
    expect(events[events.length - 1]).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as ChatCompletionChunk);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    for (const c of chunks) {
      expect(c.object).toBe('chat.completion.chunk');
      expect(c.id).toBe(chunks[0].id);
    }
    const usage = chunks[chunks.length - 1];
    expect(usage.choices).toEqual([]);
    const finish = chunks[chunks.length - 2];
    expect(finish.choices[0]).toMatchObject({ delta: {}, finish_reason: 'stop' });
    const text = chunks.slice(1, -2).map((c) => c.choices[0].delta.content).join('');
    expect(text).toBe(`You asked: "Stream please". The image has ${png.length} bytes.`);
    expect(chunks.length - 3).toBeGreaterThan(3); // one chunk per token
    expect(usage.usage!.completion_tokens).toBe(text.split(' ').length);
  });

  it('honours max_tokens (finish_reason length) and stop strings', async () => {
    const a = await json<ChatCompletion>(await postJson(`${s.url}/v1/chat/completions`, chatBody('one two three four five', { max_tokens: 3 })));
    expect(a.choices[0]).toMatchObject({ finish_reason: 'length', message: { content: 'You asked: "one' } });
    expect(a.usage!.completion_tokens).toBe(3);
    const b = await json<ChatCompletion>(await postJson(`${s.url}/v1/chat/completions`, chatBody('alpha beta gamma', { stop: ['beta'] })));
    expect(b.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: 'You asked: "alpha ' } });
  });

  it('answers /v1/vqa as multipart/form-data and as JSON', async () => {
    const form = new FormData();
    form.append('image', new Blob([png], { type: 'image/png' }), 'red.png');
    form.append('question', 'What is shown?');
    form.append('max_tokens', '40');
    const res = await fetch(`${s.url}/v1/vqa`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const body = await json<VqaJson>(res);
    expect(body).toMatchObject({ object: 'vqa.answer', answer: `You asked: "What is shown?". The image has ${png.length} bytes.`, finish_reason: 'stop' });
    expect(body.usage!.prompt_tokens).toBe(3 + 576);
    expect(typeof body.timings.time_to_first_token_ms).toBe('number');

    const j = await postJson(`${s.url}/v1/vqa`, { image: png.toString('base64'), question: 'JSON?' });
    expect(j.status).toBe(200);
    expect((await json<VqaJson>(j)).answer).toBe(`You asked: "JSON?". The image has ${png.length} bytes.`);
  });

  it('exposes Prometheus metrics', async () => {
    const res = await fetch(`${s.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^mobillama_http_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+$/m);
    expect(text).toMatch(/^mobillama_http_request_duration_seconds_bucket\{route="\/v1\/chat\/completions",le="\+Inf"\} \d+$/m);
    expect(text).toMatch(/^mobillama_generated_tokens_total [1-9]\d*$/m);
    expect(text).toMatch(/^mobillama_queue_depth 0$/m);
    expect(text).toMatch(/^# TYPE mobillama_http_request_duration_seconds histogram$/m);
  });

  it('works with the official openai client (streamed and not)', async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{
      role: 'user', content: [{ type: 'text', text: 'Hi?' }, { type: 'image_url', image_url: { url: dataUrl(png) } }],
    }];
    const r = await client.chat.completions.create({ model: 'fake', messages, max_tokens: 32, seed: 1, temperature: 0 });
    expect(r.choices[0].message.content).toBe(`You asked: "Hi?". The image has ${png.length} bytes.`);
    const stream = await client.chat.completions.create({ model: 'fake', messages, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe(r.choices[0].message.content);
  });
});

describe('API key', () => {
  let k: TestServer;
  beforeAll(async () => { k = await startTestServer({ apiKey: 'sekrit' }); });
  afterAll(async () => { await k?.close(); });

  it('requires the bearer key on /v1/* only', async () => {
    const none = await fetch(`${k.url}/v1/models`);
    expect(none.status).toBe(401);
    expect((await json<ErrorJson>(none)).error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_api_key' });
    expect((await fetch(`${k.url}/v1/models`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await postJson(`${k.url}/v1/chat/completions`, chatBody('x'))).status).toBe(401);
    expect((await fetch(`${k.url}/v1/models`, { headers: { authorization: 'Bearer sekrit' } })).status).toBe(200);
    expect((await postJson(`${k.url}/v1/chat/completions`, chatBody('x'), { authorization: 'Bearer sekrit' })).status).toBe(200);
    expect((await fetch(`${k.url}/health`)).status).toBe(200);
    expect((await fetch(`${k.url}/`)).status).toBe(200);
  });
});

describe('model load failure', () => {
  it('listen() rejects with the reason and nothing keeps running', async () => {
    const srv = createServer({ model: { model: 'fake?fail=1' }, modelModule: FAKE_MODEL_MODULE, log: () => {} });
    await expect(srv.listen(0, '127.0.0.1')).rejects.toThrow(/model failed to load: fake model: load failure requested/);
    await srv.close();
  });
});
