import type { Response } from 'express';

/** OpenAI's error body: `{ error: { message, type, param, code } }`. */
export interface ErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: string;
    readonly param: string | null;
    readonly code: string | null;
  };
}

/** An error with an HTTP status, rendered in OpenAI's error shape. */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  /** Extra response headers (Retry-After on 429). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    status: number, message: string,
    opts: { type?: string; param?: string | null; code?: string | null; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = opts.type ?? defaultType(status);
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.headers = opts.headers ?? {};
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function defaultType(status: number): string {
  if (status === 429) return 'rate_limit_error';
  if (status === 504) return 'timeout_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

/** A 400 about one request field; `param` names it as a path (messages[0].content). */
export function badRequest(message: string, param: string | null = null, code: string | null = 'invalid_value'): ApiError {
  return new ApiError(400, message, { param, code });
}

export function sendError(res: Response, err: ApiError): void {
  if (res.headersSent) return;
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  res.status(err.status).json(err.body());
}

/**
 * Turns anything thrown inside a handler (ours, body-parser's, a worker's) into an ApiError.
 * Client errors keep their status; the rest become a 500 without internal details.
 */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const err = e as { status?: unknown; statusCode?: unknown; type?: unknown; message?: unknown; name?: unknown };
  const status = typeof err?.status === 'number' ? err.status : typeof err?.statusCode === 'number' ? err.statusCode : 500;
  // body-parser / raw-body errors carry a status and a `type` such as 'entity.parse.failed'.
  if (err?.type === 'entity.parse.failed') return new ApiError(400, `malformed JSON body: ${String(err.message)}`, { code: 'invalid_json' });
  if (status === 413) return new ApiError(413, 'request body too large', { code: 'request_too_large' });
  if (status >= 400 && status < 500) {
    return new ApiError(status, typeof err.message === 'string' ? err.message : 'bad request', { code: typeof err.type === 'string' ? err.type : null });
  }
  return new ApiError(500, 'internal server error', { code: 'internal_error' });
}
