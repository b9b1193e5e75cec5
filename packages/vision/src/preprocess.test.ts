import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clipPreprocessConfigFrom, type ClipPreprocessConfig } from './config.js';
import {
  ImageError, decodeImage, preprocessImage, preprocessToRgb, resizeTarget, type RgbImage,
} from './preprocess.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/preprocess/', import.meta.url));
const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];

/** CLIPImageProcessor defaults at a given size (shortest edge = crop = size). */
const cfgAt = (size: number): ClipPreprocessConfig => clipPreprocessConfigFrom({ size: { shortest_edge: size }, crop_size: { height: size, width: size } }, size);

/** HF's arithmetic, written out: float32(x/255) − float32(mean), / float32(std), all float32. */
const normalized = (x: number, c: number) => Math.fround(Math.fround(Math.fround(x / 255) - Math.fround(MEAN[c])) / Math.fround(STD[c]));

function synth(w: number, h: number, f: (x: number, y: number) => [number, number, number], channels: 3 | 4 = 3, alpha?: (x: number, y: number) => number): sharp.Sharp {
  const data = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = (y * w + x) * channels;
    data.set(f(x, y), i);
    if (channels === 4) data[i + 3] = alpha!(x, y);
  }
  return sharp(data, { raw: { width: w, height: h, channels } });
}

const pixel = (img: RgbImage, x: number, y: number) => Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function pilReference(name: string): Promise<Uint8Array> {
  const { data, info } = await sharp(`${FIXTURES}${name}`).raw().toBuffer({ resolveWithObject: true });
  expect(info.channels).toBe(3);
  return data;
}

describe('CLIPImageProcessor equivalence', () => {
  it('an image already at crop size gives exactly (x/255 - mean)/std per channel', async () => {
    const png = await synth(32, 32, (x, y) => [(x * 8 + y) % 256, (y * 8 + 3 * x) % 256, (x * y) % 256]).png().toBuffer();
    const raw = await decodeImage(png);
    const px = await preprocessImage(png, cfgAt(32));
    expect(px.length).toBe(3 * 32 * 32);
    const want = new Float32Array(3 * 32 * 32);
    for (let c = 0; c < 3; c++) for (let i = 0; i < 32 * 32; i++) want[c * 1024 + i] = normalized(raw.data[i * 3 + c], c);
    expect(Array.from(px)).toEqual(Array.from(want));
    // every possible byte value through the same arithmetic
    const ramp = await synth(256, 1, (x) => [x, 255 - x, x]).png().toBuffer();
    const rampCfg = clipPreprocessConfigFrom({ size: { height: 1, width: 256 }, crop_size: { height: 1, width: 256 } }, 1);
    const r = await preprocessImage(ramp, rampCfg);
    for (let x = 0; x < 256; x++) {
      expect(r[x]).toBe(normalized(x, 0));
      expect(r[256 + x]).toBe(normalized(255 - x, 1));
    }
  });

  it('resize target: shortest edge, long side truncated as int(size * long / short)', () => {
    expect(resizeTarget(720, 477, cfgAt(336))).toEqual({ width: 507, height: 336 });
    expect(resizeTarget(477, 720, cfgAt(336))).toEqual({ width: 336, height: 507 });
    expect(resizeTarget(100, 100, cfgAt(336))).toEqual({ width: 336, height: 336 });
  });

  // The committed references are PIL's output (scripts/reference/make_vision_fixtures.py).
  // sharp's bound is what it measured here; its upscaling uses another pixel-centre
  // convention and is not comparable (see README).
  it.each([
    { name: 'photo.jpg', ref: 'photo.crop64.png', size: 64, aspect: 'crop' as const, sharpMax: 8 },
    { name: 'photo.jpg', ref: 'photo.pad64.png', size: 64, aspect: 'pad' as const, sharpMax: 8 },
    { name: 'small.png', ref: 'small.up40.png', size: 40, aspect: 'crop' as const, sharpMax: null },
  ])('$name, $aspect at $size: within 1 level of PIL', async ({ name, ref, size, aspect, sharpMax }) => {
    const want = await pilReference(ref);
    const pil = await preprocessToRgb(`${FIXTURES}${name}`, cfgAt(size), { aspect });
    expect([pil.width, pil.height]).toEqual([size, size]);
    expect(maxDiff(pil.data, want)).toBeLessThanOrEqual(1);
    if (sharpMax !== null) {
      const viaSharp = await preprocessToRgb(`${FIXTURES}${name}`, cfgAt(size), { aspect, resampler: 'sharp' });
      expect(maxDiff(viaSharp.data, want)).toBeLessThanOrEqual(sharpMax);
    }
  });
});

describe('LLaVA pad (expand2square)', () => {
  it('pads a wide image to a square of int(mean*255), centred, then resizes', async () => {
    // 40x20 solid colour: after padding to 40x40 the rows 0..9 and 30..39 are the mean colour.
    const png = await synth(40, 20, () => [200, 30, 60]).png().toBuffer();
    const out = await preprocessToRgb(png, cfgAt(40), { aspect: 'pad' });
    expect([out.width, out.height]).toEqual([40, 40]);
    expect(pixel(out, 5, 0)).toEqual([122, 116, 104]);
    expect(pixel(out, 20, 9)).toEqual([122, 116, 104]);
    expect(pixel(out, 20, 10)).toEqual([200, 30, 60]);
    expect(pixel(out, 20, 29)).toEqual([200, 30, 60]);
    expect(pixel(out, 20, 30)).toEqual([122, 116, 104]);
    // and a tall one pads left and right; resizing 20x40 -> square 40 -> 32 keeps the layout
    const tall = await synth(20, 40, () => [10, 250, 10]).png().toBuffer();
    const t = await preprocessToRgb(tall, cfgAt(32), { aspect: 'pad' });
    expect(pixel(t, 0, 16)).toEqual([122, 116, 104]);
    expect(pixel(t, 16, 16)).toEqual([10, 250, 10]);
    expect(pixel(t, 31, 16)).toEqual([122, 116, 104]);
    // without pad the same image is center-cropped: no mean colour anywhere
    const c = await preprocessToRgb(png, cfgAt(20));
    expect(pixel(c, 0, 0)).toEqual([200, 30, 60]);
  });
});

describe('decoding', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'vision-preprocess-'));
  });
  afterAll(() => rm(tmp, { recursive: true, force: true }));

  /** 16x12: left half red, right half blue (big flat areas survive lossy codecs). */
  const halves = () => synth(16, 12, (x) => (x < 8 ? [220, 20, 20] : [20, 20, 220]));
  const near = (got: number[], want: number[], tol: number) => got.forEach((v, i) => expect(Math.abs(v - want[i])).toBeLessThanOrEqual(tol));

  it.each([
    { fmt: 'jpeg', lossy: true }, { fmt: 'png', lossy: false }, { fmt: 'webp', lossy: false }, { fmt: 'gif', lossy: false },
    { fmt: 'tiff', lossy: false }, { fmt: 'avif', lossy: true },
  ])('reads $fmt from a file, a Buffer, a plain Uint8Array and a data: URL', async ({ fmt, lossy }) => {
    const enc = halves();
    const bytes = await (fmt === 'webp' ? enc.webp({ lossless: true }) : fmt === 'avif' ? enc.avif({ quality: 90 }) : fmt === 'tiff' ? enc.tiff({ compression: 'lzw' }) : enc.toFormat(fmt as keyof sharp.FormatEnum)).toBuffer();
    const file = join(tmp, `img.${fmt}`);
    await writeFile(file, bytes);
    const inputs = [file, bytes, new Uint8Array(bytes), `data:image/${fmt};base64,${bytes.toString('base64')}`];
    for (const input of inputs) {
      const img = await decodeImage(input);
      expect([img.width, img.height]).toEqual([16, 12]);
      near(pixel(img, 2, 6), [220, 20, 20], lossy ? 12 : 0);
      near(pixel(img, 13, 6), [20, 20, 220], lossy ? 12 : 0);
    }
  });

  it('reads the first frame of an animated GIF', async () => {
    const frame = (c: [number, number, number]) => synth(8, 8, () => c).png().toBuffer();
    const gif = await sharp([await frame([255, 0, 0]), await frame([0, 255, 0])], { join: { animated: true } }).gif().toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const img = await decodeImage(gif);
    expect([img.width, img.height]).toEqual([8, 8]);
    expect(pixel(img, 4, 4)).toEqual([255, 0, 0]);
  });

  it('applies the EXIF orientation (JPEG with orientation 6 = rotate 90° clockwise)', async () => {
    const jpg = await halves().jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    expect((await sharp(jpg).metadata()).orientation).toBe(6);
    const img = await decodeImage(jpg);
    // stored 16x12 with red on the left; displayed 12x16 with red on top
    expect([img.width, img.height]).toEqual([12, 16]);
    near(pixel(img, 6, 2), [220, 20, 20], 12);
    near(pixel(img, 6, 13), [20, 20, 220], 12);
  });

  it('composites transparency on white (or a given background)', async () => {
    // x 0..3 transparent, 4..7 opaque, 8..11 half transparent; all red underneath
    const alpha = (x: number) => (x < 4 ? 0 : x < 8 ? 255 : 128);
    const png = await synth(12, 2, () => [255, 0, 0], 4, alpha).png().toBuffer();
    const img = await decodeImage(png);
    expect(pixel(img, 1, 0)).toEqual([255, 255, 255]);
    expect(pixel(img, 5, 0)).toEqual([255, 0, 0]);
    near(pixel(img, 9, 1), [255, 127, 127], 1); // 255·a + 255·(1−a), 0·a + 255·(1−a)
    const onBlack = await decodeImage(png, { background: { r: 0, g: 0, b: 0 } });
    expect(pixel(onBlack, 1, 0)).toEqual([0, 0, 0]);
    // and the pixel values of a transparent pixel are white's
    const px = await preprocessImage(png, clipPreprocessConfigFrom({ size: { height: 2, width: 12 }, crop_size: { height: 2, width: 12 } }, 2));
    expect(px[0]).toBe(normalized(255, 0));
  });

  it('converts greyscale and 16-bit images to 8-bit RGB', async () => {
    const grey = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer();
    const g = await decodeImage(grey);
    expect(pixel(g, 1, 0)).toEqual([100, 100, 100]);
    const deep = await synth(2, 2, () => [255, 128, 0]).toColourspace('rgb16').png().toBuffer();
    expect((await sharp(deep).metadata()).depth).toBe('ushort');
    expect(pixel(await decodeImage(deep), 0, 0)).toEqual([255, 128, 0]);
  });
});

describe('errors are one-line ImageErrors', () => {
  const oneLine = async (p: Promise<unknown>, re: RegExp) => {
    const e = await p.then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(ImageError);
    expect((e as Error).message).toMatch(re);
    expect((e as Error).message).not.toContain('\n');
  };

  it('non-image, empty, truncated and corrupt bytes', async () => {
    await oneLine(decodeImage(Buffer.from('definitely not an image')), /^image bytes \(23 B\): not a readable image \(.*unsupported image format/);
    await oneLine(decodeImage(new Uint8Array(0)), /empty/);
    const full = await readFile(`${FIXTURES}photo.jpg`);
    await oneLine(decodeImage(full.subarray(0, Math.floor(full.length / 2))), /cannot decode|not a readable image/);
    await oneLine(decodeImage(full.subarray(0, 300)), /cannot decode|not a readable image/);
    const png = await synth(64, 64, (x, y) => [x * 4, y * 4, 0]).png().toBuffer();
    const corrupt = Buffer.from(png);
    for (let i = 100; i < corrupt.length - 20; i += 7) corrupt[i] ^= 0x5a;
    await oneLine(decodeImage(corrupt), /cannot decode|not a readable image/);
  });

  it('formats other than the raster ones listed are refused (SVG)', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4" fill="red"/></svg>');
    expect((await sharp(svg).metadata()).format).toBe('svg');
    await oneLine(decodeImage(svg), /svg images are not accepted/);
  });

  it('missing files and bad data: URLs', async () => {
    await oneLine(decodeImage('/nonexistent/dir/cat.jpg'), /^cannot read image \/nonexistent\/dir\/cat\.jpg: ENOENT$/);
    await oneLine(decodeImage('data:image/png;base64'), /no comma/);
    await oneLine(decodeImage('data:image/png;base64,@@@@'), /invalid base64/);
    await oneLine(decodeImage('data:image/png;base64,'), /empty/);
    await oneLine(decodeImage('data:image/png,%E0%A4%A'), /percent-encoding/);
  });

  it('refuses images over the pixel limit before decoding them (decompression bombs)', async () => {
    const small = await synth(16, 12, () => [1, 2, 3]).png().toBuffer();
    await oneLine(decodeImage(small, { maxPixels: 100 }), /16x12 is 192 pixels, over the limit of 100 \(maxPixels\)/);
    expect((await decodeImage(small, { maxPixels: 192 })).width).toBe(16);
    // A 1x1 PNG whose header claims 100000 x 100000: refused from the header at the default 64 MP.
    const bomb = Buffer.from(await synth(1, 1, () => [0, 0, 0]).png().toBuffer());
    bomb.writeUInt32BE(100_000, 16);
    bomb.writeUInt32BE(100_000, 20);
    bomb.writeUInt32BE(crc32(bomb.subarray(12, 29)), 29); // IHDR type + data
    await oneLine(decodeImage(bomb), /^image bytes \(\d+ B\): 100000x100000 is 10000000000 pixels, over the limit of 64000000 \(maxPixels\)$/);
  });
});
