import type { Request } from 'express';
import busboy from 'busboy';
import { ApiError, badRequest } from './errors.js';

export interface MultipartFile {
  readonly field: string;
  readonly filename: string;
  readonly mimeType: string;
  readonly bytes: Buffer;
}

export interface MultipartBody {
  readonly fields: Readonly<Record<string, string>>;
  readonly files: readonly MultipartFile[];
}

export interface MultipartLimits {
  /** Whole body, and any one file. */
  readonly maxBytes: number;
  readonly maxFiles: number;
}

/**
 * Reads a multipart/form-data body with busboy under hard limits. Past a limit the rest of
 * the body is drained, not buffered, so the client still gets its 4xx.
 */
export function readMultipart(req: Request, limits: MultipartLimits): Promise<MultipartBody> {
  let bb: busboy.Busboy;
  try {
    bb = busboy({
      headers: req.headers,
      limits: { fileSize: limits.maxBytes, files: limits.maxFiles, fields: 32, fieldSize: 1024 * 1024, parts: 64 },
    });
  } catch (e) {
    return Promise.reject(badRequest(`malformed multipart/form-data request: ${(e as Error).message}`, null, 'invalid_multipart'));
  }
  return new Promise((resolve, reject) => {
    const fields: Record<string, string> = {};
    const files: MultipartFile[] = [];
    let failed = false;
    let pendingFiles = 0;
    let finished = false;
    const fail = (e: ApiError) => {
      if (failed) return;
      failed = true;
      req.unpipe(bb);
      req.resume();
      reject(e);
    };
    const maybeDone = () => {
      if (!failed && finished && pendingFiles === 0) resolve({ fields, files });
    };
    let total = 0;
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > limits.maxBytes) fail(new ApiError(413, `request body is larger than ${limits.maxBytes} bytes`, { code: 'request_too_large' }));
    });
    req.on('error', (e) => fail(badRequest(`request body could not be read: ${e.message}`, null, 'invalid_body')));
    bb.on('file', (field, stream, info) => {
      pendingFiles++;
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => { if (!failed) chunks.push(c); });
      // An unhandled 'error' on a file stream would be an uncaught exception: the process would die.
      stream.on('error', (e: Error) => fail(badRequest(`malformed multipart/form-data body: ${e.message}`, null, 'invalid_multipart')));
      stream.on('limit', () => fail(new ApiError(413, `file ${JSON.stringify(field)} is larger than ${limits.maxBytes} bytes`, { param: field, code: 'image_too_large' })));
      stream.on('close', () => {
        pendingFiles--;
        if (!failed) files.push({ field, filename: info.filename ?? '', mimeType: info.mimeType, bytes: Buffer.concat(chunks) });
        maybeDone();
      });
    });
    bb.on('field', (name, value, info) => {
      if (info.valueTruncated) fail(badRequest(`field ${JSON.stringify(name)} is too long`, name, 'invalid_value'));
      else fields[name] = value;
    });
    bb.on('filesLimit', () => fail(badRequest(`too many files (this server takes at most ${limits.maxFiles} image per request)`, null, 'too_many_images')));
    bb.on('fieldsLimit', () => fail(badRequest('too many form fields', null, 'invalid_multipart')));
    bb.on('partsLimit', () => fail(badRequest('too many form parts', null, 'invalid_multipart')));
    bb.on('error', (e: Error) => fail(badRequest(`malformed multipart/form-data body: ${e.message}`, null, 'invalid_multipart')));
    bb.on('close', () => {
      finished = true;
      maybeDone();
    });
    req.pipe(bb);
  });
}
