// /v1/vqa request parsing (JSON or multipart/form-data) and its response shape.
import type { Request } from 'express';
import type { AnswerResult } from '@mobillama/pipeline';
import { badRequest } from './errors.js';
import { checkImage, loadImageRef } from './images.js';
import { readMultipart } from './multipart.js';
import { finishReason, parseGenerationParams, usageOf, type CompletionIds, type GenerationParams, type RequestLimits } from './openai.js';

export interface VqaJob {
  readonly image: Uint8Array;
  readonly question: string;
  readonly params: GenerationParams;
}

const NUMERIC_FIELDS = new Set(['max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'repetition_penalty']);

function question(v: unknown): string {
  if (v === undefined || v === null) throw badRequest('question is required', 'question', 'missing_required_parameter');
  if (typeof v !== 'string') throw badRequest('question must be a string', 'question', 'invalid_type');
  if (v.trim() === '') throw badRequest('question must not be empty', 'question', 'invalid_value');
  return v;
}

/** JSON: `{ image: <base64 or data: URL>, question, max_tokens?, temperature?, … }`. */
export async function parseVqaJson(body: unknown, limits: RequestLimits): Promise<VqaJob> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object', null, 'invalid_body');
  const b = body as Record<string, unknown>;
  const q = question(b.question);
  const params = parseGenerationParams(b);
  if (b.image === undefined || b.image === null) throw badRequest('image is required', 'image', 'missing_required_parameter');
  if (limits.maxImages < 1) throw badRequest('this server takes no images', 'image', 'too_many_images');
  const image = await loadImageRef(b.image, 'image', limits.image);
  return { image: image.bytes, question: q, params };
}

/** multipart/form-data: an image file (field `image`) and a `question` field, plus optional sampling fields. */
export async function parseVqaMultipart(req: Request, limits: RequestLimits): Promise<VqaJob> {
  const form = await readMultipart(req, { maxBytes: limits.image.maxBytes, maxFiles: Math.max(limits.maxImages, 0) });
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(form.fields)) {
    // Form fields are text; the numeric ones are converted so the JSON validators apply.
    fields[k] = NUMERIC_FIELDS.has(k) && v.trim() !== '' && !Number.isNaN(Number(v)) ? Number(v) : v;
  }
  const q = question(fields.question);
  const params = parseGenerationParams(fields);
  let image: Uint8Array;
  if (form.files.length > 0) image = (await checkImage(form.files[0].bytes, form.files[0].field, limits.image)).bytes;
  else if (typeof fields.image === 'string') image = (await loadImageRef(fields.image, 'image', limits.image)).bytes;
  else throw badRequest('image is required (a file field named "image")', 'image', 'missing_required_parameter');
  return { image, question: q, params };
}

export function vqaResponse(ids: CompletionIds, r: AnswerResult) {
  return {
    id: ids.id, object: 'vqa.answer', created: ids.created, model: ids.model,
    answer: r.text,
    finish_reason: finishReason(r.finishReason),
    usage: usageOf(r),
    timings: {
      prompt_tokens: r.timings.promptTokens,
      time_to_first_token_ms: r.timings.ttftMs,
      prefill_ms: r.timings.prefillMs,
      decode_ms: r.timings.decodeMs,
      decode_tokens_per_second: r.timings.decodeTokS,
    },
  };
}
