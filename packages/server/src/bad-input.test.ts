// Every bad input gets a 4xx in OpenAI's error shape, and the server stays up and healthy.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { chatBody, json, postJson, startTestServer, type ErrorJson, type HealthJson, type TestServer } from './testing/harness.js';
import { dataUrl, jpegImage, pngBomb, pngImage } from './testing/images.js';

const MAX_BODY = 256 * 1024;
let s: TestServer;
let png: Buffer;
let jpg: Buffer;
beforeAll(async () => {
  png = await pngImage();
  jpg = await jpegImage(320, 240);
  s = await startTestServer({ maxBodyBytes: MAX_BODY, maxImagePixels: 4_000_000, queueSize: 4 });
});
afterAll(async () => { await s?.close(); });

async function expectError(res: Response, status: number, code?: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = JSON.parse(text) as { error: Record<string, unknown> };
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error.message).toBe('string');
  expect(typeof body.error.type).toBe('string');
  expect('param' in body.error && 'code' in body.error).toBe(true);
  if (code) expect(body.error.code).toBe(code);
  return body.error;
}

const chat = (body: unknown) => postJson(`${s.url}/v1/chat/completions`, body);
const withImage = (url: string) => chatBody('What is this?', {}, url);

/** A request whose body arrives chunked (no Content-Length), of `bytes` bytes. */
function postChunked(path: string, bytes: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

describe('bad input → 4xx in OpenAI error shape', () => {
  const cases: [string, () => Promise<Response>, number, string?][] = [
    ['malformed JSON', () => chat('{"messages": [ {"role": "user", '), 400, 'invalid_json'],
    ['JSON that is not an object', () => chat('[1,2,3]'), 400, 'invalid_body'],
    ['no messages', () => chat({ model: 'x' }), 400, 'missing_required_parameter'],
    ['messages of the wrong type', () => chat({ messages: 'hello' }), 400, 'invalid_type'],
    ['empty messages', () => chat({ messages: [] }), 400, 'empty_array'],
    ['a message that is not an object', () => chat({ messages: [42] }), 400, 'invalid_type'],
    ['an unknown role', () => chat({ messages: [{ role: 'wizard', content: 'hi' }] }), 400, 'invalid_value'],
    ['content of the wrong type', () => chat({ messages: [{ role: 'user', content: 7 }] }), 400, 'invalid_type'],
    ['empty content parts', () => chat({ messages: [{ role: 'user', content: [] }] }), 400, 'empty_array'],
    ['an unknown content part', () => chat({ messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] }), 400, 'invalid_value'],
    ['a text part without text', () => chat({ messages: [{ role: 'user', content: [{ type: 'text', text: 5 }] }] }), 400, 'invalid_type'],
    ['an image_url part without url', () => chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }), 400, 'invalid_type'],
    ['the last message not from the user', () => chat({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] }), 400, 'invalid_value'],
    ['only whitespace', () => chat({ messages: [{ role: 'user', content: '   ' }] }), 400, 'invalid_value'],
    ['max_tokens as a string', () => chat(chatBody('x', { max_tokens: 'ten' })), 400, 'invalid_type'],
    ['max_tokens of zero', () => chat(chatBody('x', { max_tokens: 0 })), 400, 'invalid_value'],
    ['a fractional max_tokens', () => chat(chatBody('x', { max_tokens: 2.5 })), 400, 'invalid_type'],
    ['temperature out of range', () => chat(chatBody('x', { temperature: 7 })), 400, 'invalid_value'],
    ['top_p of zero', () => chat(chatBody('x', { top_p: 0 })), 400, 'invalid_value'],
    ['seed as a string', () => chat(chatBody('x', { seed: 'abc' })), 400, 'invalid_type'],
    ['stop of the wrong type', () => chat(chatBody('x', { stop: 5 })), 400, 'invalid_type'],
    ['too many stop strings', () => chat(chatBody('x', { stop: ['a', 'b', 'c', 'd', 'e'] })), 400, 'invalid_value'],
    ['stream not a boolean', () => chat(chatBody('x', { stream: 'yes' })), 400, 'invalid_type'],
    ['n = 2', () => chat(chatBody('x', { n: 2 })), 400, 'unsupported_value'],
    ['non-image bytes', () => chat(withImage(dataUrl(Buffer.from('this is plain text, not an image at all')))), 400, 'invalid_image'],
    ['random bytes', () => chat(withImage(Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) & 255)).toString('base64'))), 400, 'invalid_image'],
    ['a truncated PNG', () => chat(withImage(dataUrl(png.subarray(0, png.length - 30)))), 400, 'invalid_image'],
    ['a truncated JPEG', () => chat(withImage(dataUrl(jpg.subarray(0, jpg.length >> 1), 'image/jpeg'))), 400, 'invalid_image'],
    ['an image header only', () => chat(withImage(dataUrl(png.subarray(0, 40)))), 400, 'invalid_image'],
    ['an SVG', () => chat(withImage(dataUrl(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'), 'image/svg+xml'))), 400, 'invalid_image'],
    ['a decompression bomb (100000x100000 PNG)', () => chat(withImage(dataUrl(pngBomb()))), 400, 'image_too_large'],
    ['a data: URL that is not base64', () => chat(withImage('data:image/png,%89PNG')), 400, 'invalid_image_url'],
    ['a data: URL with a text media type', () => chat(withImage(`data:text/plain;base64,${png.toString('base64')}`)), 400, 'invalid_image'],
    ['invalid base64', () => chat(withImage('not base64 at all!!')), 400, 'invalid_image'],
    ['a local file path', () => chat(withImage('/etc/passwd')), 400, 'invalid_image'],
    ['a relative file path', () => chat(withImage('../../secret.png')), 400, 'invalid_image'],
    ['a file: URL', () => chat(withImage('file:///etc/passwd')), 400, 'invalid_image_url'],
    ['an http URL while remote images are off', () => chat(withImage('http://127.0.0.1:1/x.png')), 400, 'remote_images_disabled'],
    ['two images (limit 1)', () => chat({
      messages: [{ role: 'user', content: [
        { type: 'text', text: 'compare' },
        { type: 'image_url', image_url: { url: dataUrl(png) } },
        { type: 'image_url', image_url: { url: dataUrl(png) } },
      ] }],
    }), 400, 'too_many_images'],
    ['an image in an assistant message', () => chat({ messages: [
      { role: 'assistant', content: [{ type: 'image_url', image_url: { url: dataUrl(png) } }] },
      { role: 'user', content: 'hi' },
    ] }), 400, 'invalid_value'],
    ['an oversize body with Content-Length', () => chat(chatBody('x'.repeat(MAX_BODY + 10))), 413, 'request_too_large'],
    ['the model refusing the input (InputError)', () => chat(chatBody('[input-error] hi')), 400, 'invalid_request'],
    ['vqa: no question', () => postJson(`${s.url}/v1/vqa`, { image: png.toString('base64') }), 400, 'missing_required_parameter'],
    ['vqa: question of the wrong type', () => postJson(`${s.url}/v1/vqa`, { image: png.toString('base64'), question: ['a'] }), 400, 'invalid_type'],
    ['vqa: no image', () => postJson(`${s.url}/v1/vqa`, { question: 'what?' }), 400, 'missing_required_parameter'],
    ['vqa: a corrupt image', () => postJson(`${s.url}/v1/vqa`, { image: Buffer.from('GIF89a garbage').toString('base64'), question: 'what?' }), 400, 'invalid_image'],
    ['vqa: malformed JSON', () => postJson(`${s.url}/v1/vqa`, '{"question": '), 400, 'invalid_json'],
    ['vqa multipart: no image file', () => {
      const f = new FormData();
      f.append('question', 'what?');
      return fetch(`${s.url}/v1/vqa`, { method: 'POST', body: f });
    }, 400, 'missing_required_parameter'],
    ['vqa multipart: two image files', () => {
      const f = new FormData();
      f.append('question', 'what?');
      f.append('image', new Blob([png]), 'a.png');
      f.append('image2', new Blob([png]), 'b.png');
      return fetch(`${s.url}/v1/vqa`, { method: 'POST', body: f });
    }, 400, 'too_many_images'],
    ['vqa multipart: a bomb', () => {
      const f = new FormData();
      f.append('question', 'what?');
      f.append('image', new Blob([pngBomb(30_000, 30_000)]), 'bomb.png');
      return fetch(`${s.url}/v1/vqa`, { method: 'POST', body: f });
    }, 400, 'image_too_large'],
    ['vqa multipart: an oversize file', () => {
      const f = new FormData();
      f.append('question', 'what?');
      f.append('image', new Blob([Buffer.alloc(MAX_BODY + 1000)]), 'big.png');
      return fetch(`${s.url}/v1/vqa`, { method: 'POST', body: f });
    }, 413],
    ['vqa multipart: no boundary', () => fetch(`${s.url}/v1/vqa`, { method: 'POST', headers: { 'content-type': 'multipart/form-data' }, body: 'xx' }), 400, 'invalid_multipart'],
    ['vqa multipart: a truncated body', () => fetch(`${s.url}/v1/vqa`, {
      method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
      body: '--XyZ\r\nContent-Disposition: form-data; name="question"\r\n\r\nwhat?\r\n--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG',
    }), 400, 'invalid_multipart'],
    ['an unknown route', () => fetch(`${s.url}/v1/completions`, { method: 'POST' }), 404, 'not_found'],
    ['a wrong method', () => fetch(`${s.url}/v1/chat/completions`), 404, 'not_found'],
  ];

  for (const [name, send, status, code] of cases) {
    it(`${name} → ${status}`, async () => {
      await expectError(await send(), status, code);
    });
  }

  it('an oversize chunked body (no Content-Length) → 413', async () => {
    const r = await postChunked('/v1/chat/completions', MAX_BODY * 2);
    expect(r.status).toBe(413);
    expect((JSON.parse(r.body) as ErrorJson).error.code).toBe('request_too_large');
    const m = await postChunked('/v1/vqa', MAX_BODY * 2);
    expect(m.status).toBe(413);
  });

  it('a model failure → 500, a worker crash → 500, and the next request is served', async () => {
    await expectError(await chat(chatBody('[throw] boom')), 500, 'inference_error');
    await expectError(await chat(chatBody('[crash] bang')), 500, 'worker_crashed');
    const ok = await chat(chatBody('still there?'));
    expect(ok.status).toBe(200);
  });

  it('the server is healthy after all of it', async () => {
    const h = await fetch(`${s.url}/health`);
    expect(h.status).toBe(200);
    expect((await json<HealthJson>(h)).status).toBe('ok');
    const ok = await chat(chatBody('fine?', {}, dataUrl(png)));
    expect(ok.status).toBe(200);
    expect((await json<ChatCompletion>(ok)).choices[0].message.content).toContain('fine?');
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(/status="400"\} [1-9]/);
    expect(metrics).toMatch(/status="413"\} [1-9]/);
  });
});
