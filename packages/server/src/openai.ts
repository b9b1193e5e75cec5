// OpenAI chat-completions request validation and response shapes.
import type { AnswerResult, ChatMessage } from '@mobillama/pipeline';
import { badRequest } from './errors.js';
import { loadImageRef, type ImageLimits } from './images.js';

/** Generation settings shared by /v1/chat/completions and /v1/vqa (decoder option names). */
export interface GenerationParams {
  readonly maxNewTokens?: number;
  readonly temperature?: number;
  readonly topP?: number;
  readonly topK?: number;
  readonly seed?: number;
  readonly repetitionPenalty?: number;
  readonly stop?: readonly string[];
}

export interface ChatCompletionJob {
  readonly messages: readonly ChatMessage[];
  readonly params: GenerationParams;
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

export interface RequestLimits {
  readonly image: ImageLimits;
  readonly maxImages: number;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const present = (v: unknown) => v !== undefined && v !== null;
const describe = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

function num(body: Json, key: string, opts: { int?: boolean; min?: number; max?: number; minExclusive?: boolean }): number | undefined {
  const v = body[key];
  if (!present(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`${key} must be a number, not ${describe(v)}`, key, 'invalid_type');
  if (opts.int && !Number.isSafeInteger(v)) throw badRequest(`${key} must be an integer`, key, 'invalid_type');
  if (opts.min !== undefined && (opts.minExclusive ? v <= opts.min : v < opts.min)) {
    throw badRequest(`${key} must be ${opts.minExclusive ? '>' : '>='} ${opts.min}`, key);
  }
  if (opts.max !== undefined && v > opts.max) throw badRequest(`${key} must be <= ${opts.max}`, key);
  return v;
}

/** Sampling fields in OpenAI's names (plus top_k and repetition_penalty, as vLLM and llama.cpp accept). */
export function parseGenerationParams(body: Json): GenerationParams {
  const maxTokens = num(body, 'max_completion_tokens', { int: true, min: 1 }) ?? num(body, 'max_tokens', { int: true, min: 1 });
  const seed = num(body, 'seed', { int: true });
  let stop: string[] | undefined;
  const s = body.stop;
  if (typeof s === 'string') stop = s === '' ? [] : [s];
  else if (Array.isArray(s)) {
    if (s.length > 4) throw badRequest('stop takes at most 4 strings', 'stop');
    if (!s.every((x) => typeof x === 'string' && x !== '')) throw badRequest('stop must be a string or an array of non-empty strings', 'stop', 'invalid_type');
    stop = s as string[];
  } else if (present(s)) throw badRequest(`stop must be a string or an array of strings, not ${describe(s)}`, 'stop', 'invalid_type');
  // Accepted for compatibility; the decoder has no frequency/presence penalties.
  num(body, 'frequency_penalty', { min: -2, max: 2 });
  num(body, 'presence_penalty', { min: -2, max: 2 });
  return {
    maxNewTokens: maxTokens,
    temperature: num(body, 'temperature', { min: 0, max: 2 }),
    topP: num(body, 'top_p', { min: 0, max: 1, minExclusive: true }),
    topK: num(body, 'top_k', { int: true, min: 0 }),
    seed: seed === undefined ? undefined : seed >>> 0,
    repetitionPenalty: num(body, 'repetition_penalty', { min: 0, minExclusive: true }),
    stop,
  };
}

const ROLES: Readonly<Record<string, ChatMessage['role']>> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

/**
 * Validates a chat-completions body and resolves its images. Every problem is a 400 that
 * names the offending field, as OpenAI does (`param: "messages[1].content[0].image_url"`).
 */
export async function parseChatCompletion(body: unknown, limits: RequestLimits): Promise<ChatCompletionJob> {
  if (!isObject(body)) throw badRequest(`the request body must be a JSON object, not ${describe(body)}`, null, 'invalid_body');
  if (present(body.model) && typeof body.model !== 'string') throw badRequest('model must be a string', 'model', 'invalid_type');
  const n = num(body, 'n', { int: true, min: 1 });
  if (n !== undefined && n !== 1) throw badRequest('only n = 1 is supported', 'n', 'unsupported_value');
  if (Array.isArray(body.tools) && body.tools.length > 0) throw badRequest('tools are not supported', 'tools', 'unsupported_parameter');
  if (body.logprobs === true) throw badRequest('logprobs are not supported', 'logprobs', 'unsupported_parameter');
  if (present(body.stream) && typeof body.stream !== 'boolean') throw badRequest('stream must be a boolean', 'stream', 'invalid_type');
  const so = body.stream_options;
  if (present(so) && !isObject(so)) throw badRequest('stream_options must be an object', 'stream_options', 'invalid_type');
  const params = parseGenerationParams(body);

  const raw = body.messages;
  if (!present(raw)) throw badRequest('messages is required', 'messages', 'missing_required_parameter');
  if (!Array.isArray(raw)) throw badRequest(`messages must be an array, not ${describe(raw)}`, 'messages', 'invalid_type');
  if (raw.length === 0) throw badRequest('messages must not be empty', 'messages', 'empty_array');

  const imageRefs: { ref: unknown; param: string; message: number }[] = [];
  const parsed: { role: ChatMessage['role']; content: string }[] = raw.map((m, i) => {
    const p = `messages[${i}]`;
    if (!isObject(m)) throw badRequest(`${p} must be an object, not ${describe(m)}`, p, 'invalid_type');
    const role = typeof m.role === 'string' ? ROLES[m.role] : undefined;
    if (!role) throw badRequest(`${p}.role must be one of system, developer, user, assistant`, `${p}.role`, 'invalid_value');
    const c = m.content;
    if (typeof c === 'string') return { role, content: c };
    if (c === null && role === 'assistant') return { role, content: '' };
    if (!Array.isArray(c)) throw badRequest(`${p}.content must be a string or an array of content parts, not ${describe(c)}`, `${p}.content`, 'invalid_type');
    if (c.length === 0) throw badRequest(`${p}.content must not be empty`, `${p}.content`, 'empty_array');
    const texts: string[] = [];
    c.forEach((part, j) => {
      const pp = `${p}.content[${j}]`;
      if (!isObject(part)) throw badRequest(`${pp} must be an object, not ${describe(part)}`, pp, 'invalid_type');
      if (part.type === 'text') {
        if (typeof part.text !== 'string') throw badRequest(`${pp}.text must be a string`, `${pp}.text`, 'invalid_type');
        texts.push(part.text);
      } else if (part.type === 'image_url') {
        if (role !== 'user') throw badRequest(`images are only allowed in user messages`, pp, 'invalid_value');
        const iu = part.image_url;
        const url = typeof iu === 'string' ? iu : isObject(iu) ? iu.url : undefined;
        if (typeof url !== 'string') throw badRequest(`${pp}.image_url.url must be a string`, `${pp}.image_url`, 'invalid_type');
        imageRefs.push({ ref: url, param: `${pp}.image_url`, message: i });
      } else {
        throw badRequest(`${pp}.type must be "text" or "image_url"`, `${pp}.type`, 'invalid_value');
      }
    });
    return { role, content: texts.join('\n') };
  });
  const last = parsed[parsed.length - 1];
  if (last.role !== 'user') throw badRequest('the last message must be a user message', `messages[${parsed.length - 1}].role`, 'invalid_value');
  if (!parsed.some((m) => m.role === 'user' && m.content.trim() !== '') && imageRefs.length === 0) {
    throw badRequest('the messages contain no user text or image', 'messages', 'invalid_value');
  }
  if (imageRefs.length > limits.maxImages) {
    throw badRequest(`too many images: ${imageRefs.length} (this server takes at most ${limits.maxImages} per request)`, 'messages', 'too_many_images');
  }
  // Decode sequentially: at most maxImages, and a bad first image ends the work early.
  const images = new Map<number, Uint8Array>();
  for (const r of imageRefs) images.set(r.message, (await loadImageRef(r.ref, r.param, limits.image)).bytes);

  const messages: ChatMessage[] = parsed.map((m, i) => (images.has(i) ? { ...m, image: images.get(i)! } : m));
  return {
    messages,
    params,
    stream: body.stream === true,
    includeUsage: isObject(so) && so.include_usage === true,
  };
}

export type FinishReason = 'stop' | 'length';

export function finishReason(r: AnswerResult['finishReason']): FinishReason {
  return r === 'length' ? 'length' : 'stop';
}

export function usageOf(r: AnswerResult) {
  return {
    prompt_tokens: r.usage.promptTokens,
    completion_tokens: r.usage.completionTokens,
    total_tokens: r.usage.promptTokens + r.usage.completionTokens,
  };
}

export interface CompletionIds {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export function chatCompletion(ids: CompletionIds, r: AnswerResult) {
  return {
    id: ids.id, object: 'chat.completion', created: ids.created, model: ids.model, system_fingerprint: null,
    choices: [{
      index: 0,
      message: { role: 'assistant', content: r.text, refusal: null },
      logprobs: null,
      finish_reason: finishReason(r.finishReason),
    }],
    usage: usageOf(r),
  };
}

export function chatChunk(ids: CompletionIds, delta: { role?: 'assistant'; content?: string }, finish: FinishReason | null) {
  return {
    id: ids.id, object: 'chat.completion.chunk', created: ids.created, model: ids.model, system_fingerprint: null,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
}

/** The last chunk when stream_options.include_usage is set: no choices, just usage. */
export function usageChunk(ids: CompletionIds, r: AnswerResult) {
  return {
    id: ids.id, object: 'chat.completion.chunk', created: ids.created, model: ids.model, system_fingerprint: null,
    choices: [], usage: usageOf(r),
  };
}
