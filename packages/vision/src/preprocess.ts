import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { GraphBuilder, createSession, exportOnnx, type Session } from '@mobillama/core';
import { PIL_RESAMPLE, type ClipPreprocessConfig } from './config.js';

/**
 * An image: a file path, a `data:` URL, or the encoded bytes (Buffer / Uint8Array).
 * JPEG, PNG, WebP, GIF (first frame), TIFF (first page) and AVIF are read.
 */
export type ImageInput = string | Uint8Array;

/**
 * 'crop': CLIPImageProcessor as is (shortest edge, then center crop).
 * 'pad': LLaVA's image_aspect_ratio "pad": expand2square with the mean colour first, so
 * nothing is cropped away.
 */
export type AspectMode = 'crop' | 'pad';

/**
 * 'pil': antialiased resampling that reproduces PIL's Image.resize (ONNX Resize with
 * antialias, which ORT implements after Pillow): within 1 level of HF's output, on few pixels.
 * 'sharp': libvips (async, off the calling thread); a few levels off PIL (see README).
 */
export type Resampler = 'pil' | 'sharp';

export interface RgbColour { readonly r: number; readonly g: number; readonly b: number }

export interface PreprocessOptions {
  /** Default 'crop'. */
  aspect?: AspectMode;
  /** Refuse images with more pixels than this before decoding them (decompression bombs). Default 64 megapixels. */
  maxPixels?: number;
  /** What transparent pixels are composited on. Default white, as HF's convert_to_rgb. */
  background?: RgbColour;
  /** Default 'pil'. */
  resampler?: Resampler;
}

export const DEFAULT_MAX_PIXELS = 64_000_000;
export const WHITE: RgbColour = { r: 255, g: 255, b: 255 };

/** A decoded or processed image: 8-bit RGB, row-major HWC. */
export interface RgbImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

/** An image that cannot be read: one line naming the input and the reason. */
export class ImageError extends Error {
  constructor(message: string) {
    super(message.split('\n')[0]);
    this.name = 'ImageError';
  }
}

function describe(input: ImageInput): string {
  if (typeof input !== 'string') return `image bytes (${input.byteLength} B)`;
  if (input.startsWith('data:')) return 'data: URL';
  return input;
}

function fromDataUrl(url: string): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw new ImageError('data: URL has no comma before its data');
  const meta = url.slice(5, comma), body = url.slice(comma + 1);
  if (meta.split(';').includes('base64')) {
    const b64 = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw new ImageError('data: URL has invalid base64 data');
    return Buffer.from(b64, 'base64');
  }
  try {
    return Buffer.from(decodeURIComponent(body), 'latin1');
  } catch {
    throw new ImageError('data: URL has invalid percent-encoding');
  }
}

/** The encoded bytes of an input (reads files; decodes data: URLs). */
export async function imageBytes(input: ImageInput): Promise<Buffer> {
  let bytes: Buffer;
  if (typeof input !== 'string') bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  else if (input.startsWith('data:')) bytes = fromDataUrl(input);
  else {
    try {
      bytes = await readFile(input);
    } catch (e) {
      throw new ImageError(`cannot read image ${input}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  }
  if (bytes.length === 0) throw new ImageError(`${describe(input)}: empty`);
  return bytes;
}

/** Raster formats read (AVIF is 'heif' to libvips). SVG and others sharp could open are refused: less parser surface for untrusted uploads. */
const ACCEPTED_FORMATS = new Set<string>(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif']);

/**
 * Decodes to 8-bit sRGB: EXIF orientation applied, alpha composited on `background`,
 * greyscale/CMYK/16-bit converted, first frame only. The pixel count is checked from the
 * header before any pixel is decoded.
 */
export async function decodeImage(input: ImageInput, opts: PreprocessOptions = {}): Promise<RgbImage> {
  const label = describe(input);
  const bytes = await imageBytes(input);
  const maxPixels = Math.floor(opts.maxPixels ?? DEFAULT_MAX_PIXELS);
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be positive (got ${opts.maxPixels})`);
  // failOn 'error': truncated or corrupt data fails (as PIL does), mere warnings do not.
  // The header is read without a limit so the refusal below can say what the size is; the
  // decode itself runs under the limit too.
  const open = (limit: number | false) => sharp(bytes, { failOn: 'error', limitInputPixels: limit, pages: 1 });
  let meta: sharp.Metadata;
  try {
    meta = await open(false).metadata();
  } catch (e) {
    throw new ImageError(`${label}: not a readable image (${(e as Error).message.split('\n')[0]})`);
  }
  if (!ACCEPTED_FORMATS.has(meta.format)) {
    throw new ImageError(`${label}: ${meta.format} images are not accepted (jpeg, png, webp, gif, tiff, avif)`);
  }
  const { width, height } = meta;
  if (!width || !height) throw new ImageError(`${label}: the image has no size`);
  if (width * height > maxPixels) {
    throw new ImageError(`${label}: ${width}x${height} is ${width * height} pixels, over the limit of ${maxPixels} (maxPixels)`);
  }
  const bg = opts.background ?? WHITE;
  try {
    const { data, info } = await open(maxPixels)
      .rotate() // EXIF orientation
      .flatten({ background: bg })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (e) {
    throw new ImageError(`${label}: cannot decode (${(e as Error).message.split('\n')[0]})`);
  }
}

/** LLaVA's expand2square: the image centred on a square of `colour` (offset (long - short) // 2). */
export function expandToSquare(img: RgbImage, colour: readonly [number, number, number]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const s = Math.max(w, h);
  const out = new Uint8Array(s * s * 3);
  for (let i = 0; i < s * s; i++) out.set(colour, i * 3);
  const top = w > h ? Math.floor((w - h) / 2) : 0, left = w > h ? 0 : Math.floor((h - w) / 2);
  for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((top + y) * s + left) * 3);
  return { data: out, width: s, height: s };
}

/** The background LLaVA pads with: tuple(int(x * 255) for x in image_mean). */
export function padColour(cfg: ClipPreprocessConfig): [number, number, number] {
  const [r, g, b] = cfg.imageMean.map((m) => Math.trunc(m * 255));
  return [r, g, b];
}

/** CLIPImageProcessor's output size for a resize: shortest edge → size, long edge int(size · long / short). */
export function resizeTarget(width: number, height: number, cfg: ClipPreprocessConfig): { width: number; height: number } {
  const s = cfg.size;
  if (!('shortestEdge' in s)) return { width: s.width, height: s.height };
  const short = Math.min(width, height), long = Math.max(width, height);
  const newLong = Math.trunc((s.shortestEdge * long) / short);
  return width <= height ? { width: s.shortestEdge, height: newLong } : { width: newLong, height: s.shortestEdge };
}

// One small ORT session per filter, shared by every caller (the graph takes any size).
const resizeSessions = new Map<string, Promise<Session>>();

function resizeSession(mode: 'cubic' | 'linear'): Promise<Session> {
  let s = resizeSessions.get(mode);
  if (!s) {
    const g = new GraphBuilder(`resize_${mode}`);
    const x = g.input('image', 'uint8', [1, 'height', 'width', 3]);
    const sizes = g.input('sizes', 'int64', [4]);
    // PIL's resample: antialiased (the filter widens by the downscale factor), taps outside
    // the image dropped and the weights renormalized, pixel centres at (i + 0.5) · scale,
    // bicubic a = -0.5, uint8 results rounded.
    const y = g.node('Resize', [x, null, null, sizes], {
      mode, antialias: 1, exclude_outside: 1, coordinate_transformation_mode: 'half_pixel', cubic_coeff_a: { float: -0.5 },
    }, { dtype: 'uint8', shape: [1, null, null, 3] });
    g.output(y, 'resized');
    s = createSession(exportOnnx(g.build()), { threads: 1 });
    s.catch(() => resizeSessions.delete(mode));
    resizeSessions.set(mode, s);
  }
  return s;
}

/** Releases the shared resize sessions (they are recreated on the next use). */
export async function releaseResizeSessions(): Promise<void> {
  const all = [...resizeSessions.values()];
  resizeSessions.clear();
  await Promise.all(all.map(async (s) => (await s.catch(() => null))?.release()));
}

const SHARP_KERNEL: Record<number, keyof sharp.KernelEnum> = {
  [PIL_RESAMPLE.nearest]: 'nearest', [PIL_RESAMPLE.bilinear]: 'linear', [PIL_RESAMPLE.bicubic]: 'cubic', [PIL_RESAMPLE.lanczos]: 'lanczos3',
};

/** Resizes to exactly width x height with a PIL filter number (bicubic 3, bilinear 2; 'sharp' also nearest 0, lanczos 1). */
export async function resizeRgb(img: RgbImage, width: number, height: number, resample: number, resampler: Resampler = 'pil'): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img; // PIL returns a copy
  if (resampler === 'pil') {
    const mode = resample === PIL_RESAMPLE.bicubic ? 'cubic' : resample === PIL_RESAMPLE.bilinear ? 'linear' : null;
    if (!mode) throw new RangeError(`resample ${resample} is not supported by the 'pil' resampler (bicubic 3, bilinear 2)`);
    const session = await resizeSession(mode);
    const out = await session.run({
      image: { dtype: 'uint8', dims: [1, img.height, img.width, 3], data: img.data },
      sizes: { dtype: 'int64', dims: [4], data: BigInt64Array.of(1n, BigInt(height), BigInt(width), 3n) },
    });
    return { data: out.resized.data as Uint8Array, width, height };
  }
  const kernel = SHARP_KERNEL[resample];
  if (!kernel) throw new RangeError(`resample ${resample} is not supported by the 'sharp' resampler`);
  const data = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { kernel, fit: 'fill' })
    .raw()
    .toBuffer();
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
}

/**
 * HF center_crop: the window starting at ((h - ch) // 2, (w - cw) // 2); where the crop is
 * larger than the image, the outside is zeros (HF pads with zeros, then crops).
 */
export function centerCropRgb(img: RgbImage, cropHeight: number, cropWidth: number): RgbImage {
  const { width: w, height: h } = img;
  if (w === cropWidth && h === cropHeight) return img;
  const top = Math.floor((h - cropHeight) / 2), left = Math.floor((w - cropWidth) / 2);
  const out = new Uint8Array(cropHeight * cropWidth * 3);
  const x0 = Math.max(0, left), x1 = Math.min(w, left + cropWidth);
  for (let y = Math.max(0, top); y < Math.min(h, top + cropHeight); y++) {
    out.set(img.data.subarray((y * w + x0) * 3, (y * w + x1) * 3), ((y - top) * cropWidth + (x0 - left)) * 3);
  }
  return { data: out, width: cropWidth, height: cropHeight };
}

/**
 * Rescale and normalize as HF does, bit for bit: float32(x · rescale_factor) (the product in
 * float64), then (x − mean) / std in float32 arithmetic; HWC uint8 → CHW float32.
 */
export function toPixelValues(img: RgbImage, cfg: ClipPreprocessConfig): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    // A 256-entry table per channel: the same arithmetic for every pixel, done once.
    const lut = new Float32Array(256);
    const mean = Math.fround(cfg.imageMean[c]), std = Math.fround(cfg.imageStd[c]);
    for (let v = 0; v < 256; v++) {
      const x = cfg.doRescale ? Math.fround(v * cfg.rescaleFactor) : v;
      lut[v] = cfg.doNormalize ? Math.fround(x - mean) / std : x;
    }
    const plane = out.subarray(c * n, (c + 1) * n);
    for (let i = 0; i < n; i++) plane[i] = lut[img.data[i * 3 + c]];
  }
  return out;
}

/** Everything up to the rescale: the uint8 RGB crop the processor normalizes. */
export async function preprocessToRgb(input: ImageInput, cfg: ClipPreprocessConfig, opts: PreprocessOptions = {}): Promise<RgbImage> {
  let img = await decodeImage(input, opts);
  if ((opts.aspect ?? 'crop') === 'pad') img = expandToSquare(img, padColour(cfg));
  if (cfg.doResize) {
    const t = resizeTarget(img.width, img.height, cfg);
    img = await resizeRgb(img, t.width, t.height, cfg.resample, opts.resampler);
  }
  if (cfg.doCenterCrop) img = centerCropRgb(img, cfg.cropSize.height, cfg.cropSize.width);
  return img;
}

/** CLIPImageProcessor (+ LLaVA pad) on one image: Float32Array [3, H, W] (H = W = crop size). */
export async function preprocessImage(input: ImageInput, cfg: ClipPreprocessConfig, opts: PreprocessOptions = {}): Promise<Float32Array> {
  return toPixelValues(await preprocessToRgb(input, cfg, opts), cfg);
}
