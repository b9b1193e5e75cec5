import sharp from 'sharp';
import { ApiError, badRequest } from './errors.js';

export interface ImageLimits {
  /** Largest encoded image in bytes. */
  readonly maxBytes: number;
  /** Largest width × height, read from the header before anything is decoded. */
  readonly maxPixels: number;
  readonly allowRemote: boolean;
  readonly remoteTimeoutMs: number;
}

export interface CheckedImage {
  readonly bytes: Uint8Array;
  readonly format: string;
  readonly width: number;
  readonly height: number;
}

/** Raster formats the vision preprocessing decodes. SVG is refused: it can reference other files. */
const FORMATS = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff']);
const BASE64 = /^[A-Za-z0-9+/\-_]*={0,2}$/;

/**
 * An image reference from a request → checked image bytes. Accepts a data: URL or raw
 * base64, and http(s) URLs only when remote images are allowed. Never reads local files:
 * anything else (a path, file:) is refused or, if it happens to be valid base64, decoded
 * as base64 and rejected as not an image.
 */
export async function loadImageRef(ref: unknown, param: string, limits: ImageLimits): Promise<CheckedImage> {
  if (typeof ref !== 'string') throw badRequest('image must be a string (a data: URL or base64)', param, 'invalid_type');
  const s = ref.trim();
  if (s === '') throw badRequest('image is empty', param, 'invalid_image');
  let bytes: Uint8Array;
  if (/^data:/i.test(s)) bytes = decodeDataUrl(s, param);
  else if (/^https?:\/\//i.test(s)) {
    if (!limits.allowRemote) {
      throw badRequest('remote image URLs are disabled on this server (start it with --allow-remote-images); send the image as a data: URL or base64', param, 'remote_images_disabled');
    }
    bytes = await fetchImage(s, param, limits);
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(s)) {
    throw badRequest(`unsupported image URL scheme ${JSON.stringify(s.slice(0, s.indexOf(':') + 1))}: use a data: URL or base64`, param, 'invalid_image_url');
  } else bytes = decodeBase64(s, param);
  return checkImage(bytes, param, limits);
}

function decodeDataUrl(url: string, param: string): Uint8Array {
  const comma = url.indexOf(',');
  if (comma < 0) throw badRequest('malformed data: URL (no comma)', param, 'invalid_image_url');
  const meta = url.slice(5, comma).split(';').map((p) => p.trim().toLowerCase());
  if (!meta.includes('base64')) throw badRequest('data: URL images must be base64-encoded (";base64,")', param, 'invalid_image_url');
  if (meta[0] && !meta[0].startsWith('image/') && meta[0] !== 'application/octet-stream') {
    throw badRequest(`data: URL media type ${JSON.stringify(meta[0])} is not an image`, param, 'invalid_image');
  }
  return decodeBase64(url.slice(comma + 1), param);
}

function decodeBase64(text: string, param: string): Uint8Array {
  const s = text.replace(/\s+/g, '');
  if (s.length === 0 || !BASE64.test(s) || s.length % 4 === 1) {
    throw badRequest('image is neither a data: URL nor valid base64', param, 'invalid_image');
  }
  return Buffer.from(s, s.includes('-') || s.includes('_') ? 'base64url' : 'base64');
}

async function fetchImage(url: string, param: string, limits: ImageLimits): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(limits.remoteTimeoutMs), redirect: 'follow' });
  } catch (e) {
    throw badRequest(`could not fetch the image: ${(e as Error).message}`, param, 'image_fetch_failed');
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => undefined);
    throw badRequest(`could not fetch the image: HTTP ${res.status}`, param, 'image_fetch_failed');
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limits.maxBytes) {
    await res.body.cancel().catch(() => undefined);
    throw badRequest(`remote image is larger than ${limits.maxBytes} bytes`, param, 'image_too_large');
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body) {
      total += chunk.length;
      if (total > limits.maxBytes) throw badRequest(`remote image is larger than ${limits.maxBytes} bytes`, param, 'image_too_large');
      chunks.push(chunk);
    }
  } catch (e) {
    await res.body.cancel().catch(() => undefined);
    if (e instanceof ApiError) throw e;
    throw badRequest(`could not fetch the image: ${(e as Error).message}`, param, 'image_fetch_failed');
  }
  return Buffer.concat(chunks);
}

/**
 * Checks that bytes are one whole image of a supported format and a sane size. The pixel
 * count comes from the header first, so a decompression bomb (a small file declaring
 * 100k × 100k pixels) is refused before any pixel is decoded; then a full decode (on
 * libuv's pool, off the event loop) catches truncated and corrupt data.
 */
export async function checkImage(bytes: Uint8Array, param: string, limits: ImageLimits): Promise<CheckedImage> {
  if (bytes.length === 0) throw badRequest('image is empty', param, 'invalid_image');
  if (bytes.length > limits.maxBytes) throw new ApiError(413, `image is larger than ${limits.maxBytes} bytes`, { param, code: 'image_too_large' });
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw badRequest(`not a supported image: ${(e as Error).message}`, param, 'invalid_image');
  }
  const format = meta.format ?? 'unknown';
  if (!FORMATS.has(format)) {
    throw badRequest(`unsupported image format ${JSON.stringify(format)} (supported: ${[...FORMATS].join(', ')})`, param, 'invalid_image');
  }
  const width = meta.width ?? 0, height = meta.height ?? 0;
  if (width <= 0 || height <= 0) throw badRequest('image has no pixels', param, 'invalid_image');
  if (width * height > limits.maxPixels) {
    throw badRequest(`image is ${width}x${height} pixels; the limit is ${limits.maxPixels} pixels`, param, 'image_too_large');
  }
  try {
    await sharp(bytes, { failOn: 'error', limitInputPixels: limits.maxPixels, sequentialRead: true, pages: 1 })
      .resize(8, 8, { fit: 'fill' }).raw().toBuffer();
  } catch (e) {
    throw badRequest(`corrupt or truncated image: ${(e as Error).message}`, param, 'invalid_image');
  }
  return { bytes, format, width, height };
}
