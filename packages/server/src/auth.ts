import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { ApiError, sendError } from './errors.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** `Authorization: Bearer <key>` check; compares digests in constant time. */
export function bearerAuth(apiKey: string) {
  const expected = digest(apiKey);
  return (req: Request, res: Response, next: NextFunction): void => {
    const m = /^Bearer\s+(.+)$/i.exec(req.get('authorization') ?? '');
    if (m && timingSafeEqual(digest(m[1].trim()), expected)) {
      next();
      return;
    }
    res.setHeader('WWW-Authenticate', 'Bearer');
    sendError(res, new ApiError(401, m ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".', {
      type: 'invalid_request_error', code: 'invalid_api_key',
    }));
  };
}
