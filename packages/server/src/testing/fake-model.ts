// A deterministic stand-in for the MobiLlamaV pipeline, loaded by inference workers in tests
// and benchmarks (pass this file as the server's modelModule). It answers by echoing the
// question, and it BLOCKS its thread for each token (Atomics.wait) the way ORT's run() does,
// so tests exercise the same event-loop conditions as the real model.
//
// Per-request directives in the last user message:
//   [tokens=N]   generate exactly N tokens (ignoring the echo's natural end)
//   [delay=MS]   block MS per token             [prefill=MS] block MS before the first token
//   [throw]      fail with an Error             [input-error] fail with an InputError
//   [crash]      end the worker thread (process.exit inside a worker ends only the thread)
// Load options come from ModelOptions.model, e.g. "fake?delay=5&load=200&fail=1".
import { InputError } from '@mobillama/core';
import type { GenerationPiece } from '@mobillama/decoder';
import type { AnswerRequest, AnswerResult, ChatMessage, ModelInfo, ModelOptions, ScoreRequest, ScoreResult, VqaModel } from '@mobillama/pipeline';

const blocker = new Int32Array(new SharedArrayBuffer(4));
/** Blocks the thread, as a synchronous ORT session.run() does. */
export const blockFor = (ms: number) => { if (ms > 0) Atomics.wait(blocker, 0, 0, ms); };

export const FAKE_INFO: ModelInfo = { id: 'fake-mobillama-v', template: 'vicuna_v1', imageSize: 336, imageTokens: 576, contextLength: 2048 };

interface Directives {
  tokens?: number;
  delay?: number;
  prefill?: number;
  throw?: boolean;
  inputError?: boolean;
  crash?: boolean;
}

function directives(text: string): { clean: string; d: Directives } {
  const d: Directives = {};
  const clean = text.replace(/\[(tokens|delay|prefill)=(\d+)\]|\[(throw|input-error|crash)\]/g, (_m, k?: string, v?: string, flag?: string) => {
    if (k === 'tokens') d.tokens = Number(v);
    else if (k === 'delay') d.delay = Number(v);
    else if (k === 'prefill') d.prefill = Number(v);
    else if (flag === 'throw') d.throw = true;
    else if (flag === 'input-error') d.inputError = true;
    else if (flag === 'crash') d.crash = true;
    return '';
  }).replace(/\s+/g, ' ').trim();
  return { clean, d };
}

function conversation(req: AnswerRequest): { messages: ChatMessage[]; image?: Uint8Array } {
  const messages: ChatMessage[] = req.messages ? [...req.messages] : [{ role: 'user', content: req.question ?? '', image: req.image }];
  const img = messages.find((m) => m.image !== undefined)?.image;
  if (typeof img === 'string') throw new InputError('the fake model takes image bytes only');
  return { messages, image: img };
}

export async function loadModel(opts: ModelOptions): Promise<VqaModel> {
  const q = new URLSearchParams((opts.model ?? '').split('?')[1] ?? '');
  blockFor(Number(q.get('load') ?? 0));
  if (q.get('fail')) throw new Error('fake model: load failure requested');
  const defaultDelay = Number(q.get('delay') ?? 2);

  async function* stream(req: AnswerRequest): AsyncGenerator<GenerationPiece, AnswerResult> {
    const t0 = performance.now();
    const { messages, image } = conversation(req);
    const users = messages.filter((m) => m.role === 'user');
    const { clean, d } = directives(users[users.length - 1]?.content ?? '');
    if (d.throw) throw new Error('fake model: failure requested');
    if (d.inputError) throw new InputError('fake model: input error requested');
    if (d.crash) process.exit(3);
    const promptTokens = messages.reduce((n, m) => n + m.content.split(/\s+/).filter(Boolean).length, 0) + (image ? FAKE_INFO.imageTokens : 0);
    const echo = `You asked: "${clean}".${image ? ` The image has ${image.length} bytes.` : ' No image.'}${users.length > 1 ? ` This is turn ${users.length}.` : ''}`;
    const words = echo.split(' ');
    const want = d.tokens ?? words.length;
    const max = req.maxNewTokens ?? 256;
    blockFor(d.prefill ?? 0);
    const tPrefill = performance.now();
    const tokens: number[] = [];
    let text = '';
    let finishReason: AnswerResult['finishReason'] = 'stop';
    for (let i = 0; i < want; i++) {
      if (req.signal?.aborted) { finishReason = 'abort'; break; }
      if (i >= max) { finishReason = 'length'; break; }
      blockFor(d.delay ?? defaultDelay);
      let piece = (i === 0 ? '' : ' ') + words[i % words.length];
      const stopAt = (req.stop ?? []).map((s) => (text + piece).indexOf(s)).filter((k) => k >= 0).sort((a, b) => a - b)[0];
      if (stopAt !== undefined) {
        piece = (text + piece).slice(text.length, stopAt);
        text += piece;
        if (piece) yield { token: -1, text: piece };
        finishReason = 'stop';
        break;
      }
      tokens.push(1000 + (i % words.length));
      text += piece;
      yield { token: tokens[tokens.length - 1], text: piece };
    }
    const tEnd = performance.now();
    return {
      text, tokens, finishReason,
      usage: { promptTokens, completionTokens: tokens.length },
      timings: {
        promptTokens, prefillMs: tPrefill - t0, decodeMs: tEnd - tPrefill, ttftMs: tPrefill - t0,
        prefillTokS: promptTokens / Math.max(1e-3, (tPrefill - t0) / 1000),
        decodeTokS: tokens.length / Math.max(1e-3, (tEnd - tPrefill) / 1000),
      },
    };
  }

  return {
    info: FAKE_INFO,
    stream,
    async answer(req) {
      const it = stream(req);
      for (;;) {
        const r = await it.next();
        if (r.done) return r.value;
      }
    },
    async score(req: ScoreRequest): Promise<ScoreResult> {
      const n = req.answer.split(/\s+/).filter(Boolean).length;
      return { logprob: -n, tokens: Array.from({ length: n }, (_, i) => 1000 + i), tokenLogprobs: new Array<number>(n).fill(-1) };
    },
    async dispose() {},
  };
}

/** The URL to pass as the server's modelModule. */
export const FAKE_MODEL_MODULE = new URL(import.meta.url);
