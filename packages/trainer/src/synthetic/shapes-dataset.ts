import { open, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QA_TYPES, TypeBalancer, askPositionQuestion, caption, questionsFor, type PositionQuestionOptions, type QaPair, type QaType } from './language.js';
import type { LlavaEntry } from './llava-format.js';
import { Random } from './random.js';
import { renderPng } from './render.js';
import { randomScene, type Scene } from './scene.js';
import { COLOR_NAMES, SHAPE_KINDS, type ColorName, type ShapeKind } from './vocabulary.js';

/**
 * The synthetic shapes dataset: scenes drawn from one seeded stream in image order (so the
 * first N samples of a seed are the same for any count, and two seeds share nothing),
 * rendered to PNG, with a caption and a few questions each.
 */

export interface ShapesOptions {
  readonly count: number;
  /** uint32; train and held-out splits use different seeds. */
  readonly seed: number;
  /** Image side in pixels (default 64, a micro CLIP's input). */
  readonly size?: number;
  /** Questions per image, each a separate qa.json entry of a different type (default 3, at most 6). */
  readonly qaPerImage?: number;
  /** Shape kinds and colours to draw from (default: all). */
  readonly kinds?: readonly ShapeKind[];
  readonly colors?: readonly ColorName[];
}

export interface ShapesSample {
  readonly id: string;
  /** File name under images/. */
  readonly image: string;
  readonly scene: Scene;
  readonly caption: string;
  readonly qa: readonly QaPair[];
}

export const DEFAULT_SIZE = 64;
export const DEFAULT_QA_PER_IMAGE = 3;

export function checkShapesOptions(o: ShapesOptions): Required<ShapesOptions> {
  const bad = (msg: string): never => {
    throw new RangeError(msg);
  };
  const size = o.size ?? DEFAULT_SIZE;
  const qaPerImage = o.qaPerImage ?? DEFAULT_QA_PER_IMAGE;
  const kinds = o.kinds ?? SHAPE_KINDS;
  const colors = o.colors ?? COLOR_NAMES;
  if (!Number.isInteger(o.count) || o.count < 1) bad(`count must be a positive integer, got ${o.count}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed >= 2 ** 32) bad(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (!Number.isInteger(size) || size < 32 || size > 1024) bad(`size must be an integer in [32, 1024], got ${size}`);
  if (!Number.isInteger(qaPerImage) || qaPerImage < 0 || qaPerImage > QA_TYPES.length) bad(`questions per image must be 0 … ${QA_TYPES.length}, got ${qaPerImage}`);
  // Negative existence questions need something absent to ask about.
  if (new Set(kinds).size < 2 || kinds.some((k) => !SHAPE_KINDS.includes(k))) bad(`give at least two shapes of ${SHAPE_KINDS.join(', ')}`);
  if (new Set(colors).size < 2 || colors.some((c) => !COLOR_NAMES.includes(c))) bad(`give at least two colors of ${COLOR_NAMES.join(', ')}`);
  return { count: o.count, seed: o.seed, size, qaPerImage, kinds: [...new Set(kinds)], colors: [...new Set(colors)] };
}

export function sampleId(seed: number, index: number): string {
  return `shapes-${seed}-${String(index).padStart(6, '0')}`;
}

/** The samples, computed lazily; no I/O. */
export function* shapesSamples(options: ShapesOptions): Generator<ShapesSample> {
  const o = checkShapesOptions(options);
  const rng = new Random(o.seed);
  const vocab = { kinds: o.kinds, colors: o.colors };
  const balancer = new TypeBalancer();
  for (let i = 0; i < o.count; i++) {
    const scene = randomScene(rng, { size: o.size, kinds: o.kinds, colors: o.colors });
    const id = sampleId(o.seed, i);
    const qa = questionsFor(scene, rng, vocab, o.qaPerImage, balancer.order(rng));
    balancer.record(qa);
    yield { id, image: `${id}.png`, scene, caption: caption(scene), qa };
  }
}

/** LLaVA pretrain entry (as blip_laion_cc_sbu_558k): the image, then its caption. */
export function captionEntry(s: ShapesSample): LlavaEntry {
  return { id: s.id, image: s.image, conversations: [{ from: 'human', value: '<image>' }, { from: 'gpt', value: s.caption }] };
}

export interface QaEntry extends LlavaEntry {
  readonly image: string;
  readonly type: QaType;
}

/** LLaVA instruct entries, one question each, with our `type` field. */
export function qaEntries(s: ShapesSample): QaEntry[] {
  return s.qa.map((q, j) => qaEntry(`${s.id}-${j}`, s.image, q));
}

function qaEntry(id: string, image: string, q: QaPair): QaEntry {
  return { id, image, type: q.type, conversations: [{ from: 'human', value: `<image>\n${q.question}` }, { from: 'gpt', value: q.answer }] };
}

/** A scene as `scenes.json` holds it: with the sample's id and image file. */
export type SceneRecord = Scene & { readonly id: string; readonly image: string };

/**
 * One relative-position question per scene that has one, from its own seeded stream: a drill
 * set of one axis or one form (`PositionQuestionOptions`) over images already written.
 */
export function positionQuestionEntries(scenes: readonly SceneRecord[], seed: number, options: PositionQuestionOptions = {}): QaEntry[] {
  const rng = new Random(seed);
  const out: QaEntry[] = [];
  for (const s of scenes) {
    const q = askPositionQuestion(s, rng, options);
    if (q === null) continue;
    out.push(qaEntry(`${s.id}-position`, s.image, q));
  }
  return out;
}

export interface WriteShapesOptions extends ShapesOptions {
  readonly out: string;
  /** Images rendered at once (sharp runs them on its thread pool). */
  readonly concurrency?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface ShapesSummary {
  readonly images: number;
  readonly captions: number;
  readonly questions: number;
  readonly byType: Readonly<Record<QaType, number>>;
  readonly seconds: number;
}

/**
 * A JSON array written one entry per line to a temporary file, renamed into place by
 * `commit`: a reader never sees a half-written file, and the one-entry-per-line layout
 * keeps the files diffable and cheap to stream.
 */
class JsonArrayWriter {
  private buf = '';
  private n = 0;
  private constructor(private readonly path: string, private readonly tmp: string, private readonly fh: Awaited<ReturnType<typeof open>>) {}

  static async create(path: string): Promise<JsonArrayWriter> {
    const tmp = `${path}.tmp-${process.pid}`;
    return new JsonArrayWriter(path, tmp, await open(tmp, 'w'));
  }

  async add(value: unknown): Promise<void> {
    this.buf += `${this.n++ === 0 ? '[\n' : ',\n'}${JSON.stringify(value)}`;
    if (this.buf.length > 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    await this.fh.write(this.buf);
    this.buf = '';
  }

  async commit(): Promise<void> {
    this.buf += this.n === 0 ? '[]\n' : '\n]\n';
    await this.flush();
    await this.fh.close();
    await rename(this.tmp, this.path);
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}

/**
 * Writes `out/images/*.png`, `out/captions.json` (pretrain format), `out/qa.json`
 * (instruct format), `out/scenes.json` (the scene behind each image) and `out/meta.json`
 * (the options, to regenerate). Every file goes to a temporary name and is renamed into
 * place; the JSON files are renamed last, after every image they name exists.
 */
export async function writeShapesDataset(options: WriteShapesOptions): Promise<ShapesSummary> {
  const start = performance.now();
  const o = checkShapesOptions(options);
  const imagesDir = join(options.out, 'images');
  await mkdir(imagesDir, { recursive: true });
  const writers = await Promise.all(['captions.json', 'qa.json', 'scenes.json'].map((f) => JsonArrayWriter.create(join(options.out, f))));
  const [captions, qa, scenes] = writers;
  const byType = Object.fromEntries(QA_TYPES.map((t) => [t, 0])) as Record<QaType, number>;
  const concurrency = options.concurrency ?? 8;
  const inFlight: Promise<void>[] = [];
  let done = 0, questions = 0;
  const writeImage = async (s: ShapesSample): Promise<void> => {
    const path = join(imagesDir, s.image);
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, await renderPng(s.scene));
    await rename(tmp, path);
    if (++done % 100 === 0 || done === o.count) options.onProgress?.(done, o.count);
  };
  try {
    for (const s of shapesSamples(o)) {
      if (inFlight.length >= concurrency) await inFlight.shift();
      const p = writeImage(s);
      p.catch(() => undefined); // handled where it is awaited; this keeps Node from calling it unhandled meanwhile
      inFlight.push(p);
      await captions.add(captionEntry(s));
      for (const e of qaEntries(s)) {
        await qa.add(e);
        byType[e.type]++;
        questions++;
      }
      await scenes.add({ id: s.id, image: s.image, ...s.scene });
    }
    await Promise.all(inFlight.splice(0));
    for (const w of writers) await w.commit();
  } catch (e) {
    await Promise.allSettled(inFlight);
    await Promise.all(writers.map((w) => w.abort()));
    throw e;
  }
  const meta = join(options.out, 'meta.json');
  await writeFile(`${meta}.tmp-${process.pid}`, `${JSON.stringify({
    generator: 'mobillama-v data shapes', version: 1, count: o.count, seed: o.seed, size: o.size,
    qa_per_image: o.qaPerImage, shapes: o.kinds, colors: o.colors,
  }, null, 2)}\n`);
  await rename(`${meta}.tmp-${process.pid}`, meta);
  return { images: o.count, captions: o.count, questions, byType, seconds: (performance.now() - start) / 1000 };
}
