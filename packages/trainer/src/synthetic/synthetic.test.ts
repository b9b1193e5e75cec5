import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  COLORS, COLOR_NAMES, QA_TYPES, SHAPE_KINDS, conversationsPerImage, llavaFormatProblems, nearestColor, numberWord, plural, positionQuestionEntries, shapesSamples,
  writeShapesDataset, type ColorName, type QaEntry, type Scene, type SceneRecord, type SceneShape, type ShapeKind, type ShapesSample,
} from './index.js';

async function dataset(seed: number, count: number, extra: { size?: number } = {}): Promise<string> {
  const out = await mkdtemp(join(tmpdir(), `shapes-${seed}-`));
  await writeShapesDataset({ out, seed, count, ...extra });
  return out;
}

async function filesOf(dir: string): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for (const f of ['captions.json', 'qa.json', 'scenes.json', 'meta.json']) m.set(f, await readFile(join(dir, f)));
  for (const f of (await readdir(join(dir, 'images'))).sort()) m.set(`images/${f}`, await readFile(join(dir, 'images', f)));
  return m;
}

// ---- An independent reading of each question against the scene --------------------------------

const isKind = (w: string): w is ShapeKind => (SHAPE_KINDS as readonly string[]).includes(w);
const isColor = (w: string): w is ColorName => (COLOR_NAMES as readonly string[]).includes(w);
const say = (s: string) => `${s[0].toUpperCase()}${s.slice(1)}.`;

/** "the circle" / "the red circle" → the one shape it names (fails the test when not exactly one). */
function resolveRef(scene: Scene, ref: string): SceneShape {
  const words = ref.replace(/^the /, '').split(' ');
  const kind = words[words.length - 1], color = words.length === 2 ? words[0] : undefined;
  const hits = scene.shapes.filter((s) => s.kind === kind && (color === undefined || s.color === color));
  expect(hits, `"${ref}" must name exactly one shape`).toHaveLength(1);
  return hits[0];
}

/** Parses the answer of a describe question back into a multiset "kind/color" → n. */
function parseDescription(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const part of text.replace(/\.$/, '').split(/, | and /)) {
    const [det, color, noun] = part.toLowerCase().split(' ');
    const n = det === 'a' || det === 'an' ? 1 : ['zero', 'one', 'two', 'three', 'four'].indexOf(det);
    const kind = SHAPE_KINDS.find((k) => k === noun || plural(k) === noun);
    expect(kind, part).toBeDefined();
    expect(n, part).toBeGreaterThan(0);
    m.set(`${kind}/${color}`, n);
  }
  return m;
}

/** What the image says the answer is, computed here without the generator's code paths. */
function expectedAnswer(scene: Scene, type: string, question: string): string {
  const shapes = scene.shapes;
  const count = (p: (s: SceneShape) => boolean) => say(numberWord(shapes.filter(p).length));
  const yes = (b: boolean) => (b ? 'Yes.' : 'No.');
  let m: RegExpMatchArray | null;
  switch (type) {
    case 'color':
      m = question.match(/^What (?:color is|is the color of) the (\w+)\?$/);
      expect(m, question).not.toBeNull();
      return say(resolveRef(scene, m![1]).color);
    case 'shape':
      if (question === 'What shape is in the image?') {
        expect(shapes).toHaveLength(1);
        return say(shapes[0].kind);
      }
      m = question.match(/^What (?:shape is|is the shape of the) (\w+)(?: object)?\?$/);
      expect(m && isColor(m[1]), question).toBe(true);
      expect(shapes.filter((s) => s.color === m![1]), question).toHaveLength(1);
      return say(shapes.find((s) => s.color === m![1])!.kind);
    case 'count':
      if (question === 'How many shapes are there?') return count(() => true);
      if ((m = question.match(/^How many (\w+) shapes are there\?$/))) return count((s) => s.color === m![1]);
      m = question.match(/^How many (\w+) are there\?$/);
      expect(m, question).not.toBeNull();
      return count((s) => plural(s.kind) === m![1]);
    case 'exists':
      if ((m = question.match(/^Is there an? (\w+) in the image\?$/))) return yes(shapes.some((s) => s.kind === m![1]));
      m = question.match(/^Is there an? (\w+) (\w+)\?$/);
      expect(m && isColor(m[1]) && isKind(m[2]), question).toBe(true);
      return yes(shapes.some((s) => s.color === m![1] && s.kind === m![2]));
    case 'position': {
      // Left/right (above/below) is asked only when the shapes' x (y) extents do not overlap.
      const left = (a: SceneShape, b: SceneShape) => a.cx + a.r < b.cx - b.r;
      const above = (a: SceneShape, b: SceneShape) => a.cy + a.r < b.cy - b.r;
      if ((m = question.match(/^Is (the .+?) to the left or to the right of (the .+)\?$/))) {
        const a = resolveRef(scene, m[1]), b = resolveRef(scene, m[2]);
        expect(left(a, b) || left(b, a), question).toBe(true);
        return left(a, b) ? 'Left.' : 'Right.';
      }
      if ((m = question.match(/^Is (the .+?) above or below (the .+)\?$/))) {
        const a = resolveRef(scene, m[1]), b = resolveRef(scene, m[2]);
        expect(above(a, b) || above(b, a), question).toBe(true);
        return above(a, b) ? 'Above.' : 'Below.';
      }
      m = question.match(/^Is (the .+?) (to the left of|to the right of|above|below) (the .+)\?$/);
      expect(m, question).not.toBeNull();
      const a = resolveRef(scene, m![1]), b = resolveRef(scene, m![3]);
      const horizontal = m![2].startsWith('to the');
      expect(horizontal ? left(a, b) || left(b, a) : above(a, b) || above(b, a), question).toBe(true);
      const rel = { 'to the left of': left(a, b), 'to the right of': left(b, a), above: above(a, b), below: above(b, a) }[m![2]]!;
      return yes(rel);
    }
    case 'describe': {
      expect(['Describe the image briefly.', 'What shapes are in the image?']).toContain(question);
      return question; // checked as a multiset below
    }
    default:
      throw new Error(`unknown type ${type}`);
  }
}

function checkSample(s: ShapesSample): void {
  for (const qa of s.qa) {
    const want = expectedAnswer(s.scene, qa.type, qa.question);
    if (qa.type === 'describe') {
      const truth = new Map<string, number>();
      for (const sh of s.scene.shapes) truth.set(`${sh.kind}/${sh.color}`, (truth.get(`${sh.kind}/${sh.color}`) ?? 0) + 1);
      expect(parseDescription(qa.answer)).toEqual(truth);
      expect(qa.answer.toLowerCase()).toBe(s.caption);
    } else {
      expect(qa.answer, `${s.id}: ${qa.question}`).toBe(want);
    }
  }
}

// ---- Tests ------------------------------------------------------------------------------------

describe('synthetic shapes data', () => {
  let a: string;
  beforeAll(async () => {
    a = await dataset(11, 60);
  });

  it('is deterministic: the same seed gives identical bytes, another seed different data', async () => {
    const b = await dataset(11, 60);
    const fa = await filesOf(a), fb = await filesOf(b);
    expect([...fa.keys()]).toEqual([...fb.keys()]);
    for (const [k, v] of fa) expect(v.equals(fb.get(k)!), k).toBe(true);
    expect(fa.size).toBe(4 + 60);
    expect((await readdir(a)).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const c = await filesOf(await dataset(12, 60));
    const captions = (m: Map<string, Buffer>) => (JSON.parse(m.get('captions.json')!.toString()) as { conversations: { value: string }[] }[]).map((e) => e.conversations[1].value);
    expect(captions(c)).not.toEqual(captions(fa));
    // Image file names carry the seed, so two splits never collide in one folder either.
    expect([...c.keys()].filter((k) => k.startsWith('images/') && fa.has(k))).toEqual([]);
  });

  it('the first N samples of a seed do not depend on the count', () => {
    const short = [...shapesSamples({ seed: 5, count: 30 })];
    const long = [...shapesSamples({ seed: 5, count: 90 })].slice(0, 30);
    expect(long).toEqual(short);
  });

  it('every answer follows from the scene, and every referent is unambiguous', () => {
    for (const s of shapesSamples({ seed: 2024, count: 600, qaPerImage: 6 })) checkSample(s);
  });

  it('shapes stay inside the image and never overlap', () => {
    for (const size of [32, 64, 224]) {
      const gap = Math.max(2, 0.04 * size);
      for (const { scene } of shapesSamples({ seed: 3, count: 300, size, qaPerImage: 0 })) {
        expect(scene.shapes.length).toBeGreaterThanOrEqual(1);
        expect(scene.shapes.length).toBeLessThanOrEqual(4);
        for (const s of scene.shapes) {
          expect(s.cx - s.r).toBeGreaterThanOrEqual(0.99);
          expect(s.cx + s.r).toBeLessThanOrEqual(size - 0.99);
          expect(s.cy - s.r).toBeGreaterThanOrEqual(0.99);
          expect(s.cy + s.r).toBeLessThanOrEqual(size - 0.99);
          for (const o of scene.shapes) if (o !== s) expect(Math.hypot(o.cx - s.cx, o.cy - s.cy)).toBeGreaterThanOrEqual(o.r + s.r + gap - 0.02);
        }
      }
    }
  });

  it('the rendered PNG shows each shape in its named colour at its centre', async () => {
    const scenes = JSON.parse(await readFile(join(a, 'scenes.json'), 'utf8')) as (Scene & { image: string })[];
    let checked = 0;
    for (const sc of scenes) {
      const { data, info } = await sharp(join(a, 'images', sc.image)).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
      for (const s of sc.shapes) {
        const at = (Math.floor(s.cy) * info.width + Math.floor(s.cx)) * 3;
        const px = [data[at], data[at + 1], data[at + 2]];
        const near = nearestColor(px);
        expect(near.name, `${sc.image}: the ${s.color} ${s.kind} at (${s.cx}, ${s.cy}) reads ${px}`).toBe(s.color);
        expect(near.distance).toBeLessThan(20); // jitter is at most ±10 a channel
        checked++;
      }
      // A corner is background: light, and far from every shape colour.
      const corner = [data[0], data[1], data[2]];
      expect(Math.min(...corner)).toBeGreaterThan(180);
    }
    expect(checked).toBeGreaterThan(100);
  });

  it('covers every question type, shape, colour and answer word over a few hundred samples', () => {
    const samples = [...shapesSamples({ seed: 99, count: 400 })];
    const types = new Map<string, number>();
    const answers = new Set<string>();
    const kinds = new Set<string>(), colors = new Set<string>(), counts = new Set<number>();
    let gradients = 0;
    for (const s of samples) {
      counts.add(s.scene.shapes.length);
      if (s.scene.background.kind === 'gradient') gradients++;
      for (const sh of s.scene.shapes) {
        kinds.add(sh.kind);
        colors.add(sh.color);
      }
      expect(new Set(s.qa.map((q) => q.type)).size).toBe(s.qa.length); // different types per image
      for (const q of s.qa) {
        types.set(q.type, (types.get(q.type) ?? 0) + 1);
        answers.add(q.answer);
      }
    }
    expect([...types.keys()].sort()).toEqual([...QA_TYPES].sort());
    for (const n of types.values()) expect(n).toBeGreaterThan(400 * 3 / 6 / 2); // no type starved
    expect([...kinds].sort()).toEqual([...SHAPE_KINDS].sort());
    expect([...colors].sort()).toEqual([...COLOR_NAMES].sort());
    expect([...counts].sort()).toEqual([1, 2, 3, 4]);
    expect(gradients).toBeGreaterThan(50);
    for (const w of ['Yes.', 'No.', 'Left.', 'Right.', 'Above.', 'Below.', 'Zero.', 'One.', 'Two.', 'Three.', 'Four.']) expect(answers, w).toContain(w);
    for (const c of COLOR_NAMES) expect(answers).toContain(`${c[0].toUpperCase()}${c.slice(1)}.`);
    for (const k of SHAPE_KINDS) expect(answers).toContain(`${k[0].toUpperCase()}${k.slice(1)}.`);
    expect(Object.keys(COLORS).length).toBeGreaterThanOrEqual(8);
  });

  it('drill sets: position questions of one axis and one form, correct, from their own seed', () => {
    const scenes: SceneRecord[] = [...shapesSamples({ seed: 31, count: 400, qaPerImage: 0 })].map((s) => ({ id: s.id, image: s.image, ...s.scene }));
    const byScene = new Map(scenes.map((s) => [s.image, s]));
    const forms = {
      'x either-or': /^Is the .+ to the left or to the right of the .+\?$/, 'y either-or': /^Is the .+ above or below the .+\?$/,
      'x yes-no': /^Is the .+ to the (left|right) of the .+\?$/, 'y yes-no': /^Is the .+ (above|below) the .+\?$/,
    } as const;
    for (const axis of ['x', 'y'] as const) {
      for (const form of ['either-or', 'yes-no'] as const) {
        const qa = positionQuestionEntries(scenes, 7, { axis, form });
        expect(llavaFormatProblems(qa)).toEqual([]);
        // Every scene with two nameable shapes apart on the axis gets one; a one-shape scene none.
        expect(qa.length).toBeGreaterThan(150);
        expect(qa.length).toBeLessThan(scenes.length);
        const answers = new Set<string>();
        for (const e of qa) {
          const q = e.conversations[0].value.replace('<image>\n', '');
          expect(q, `${axis} ${form}`).toMatch(forms[`${axis} ${form}`]);
          if (form === 'yes-no') expect(q).not.toMatch(/ or /);
          expect(e.conversations[1].value, q).toBe(expectedAnswer(byScene.get(e.image)!, 'position', q));
          answers.add(e.conversations[1].value);
        }
        expect([...answers].sort()).toEqual(form === 'yes-no' ? ['No.', 'Yes.'] : axis === 'x' ? ['Left.', 'Right.'] : ['Above.', 'Below.']);
      }
    }
    // No options: both axes and both forms, as in the dataset; the seed decides, not the call.
    const mixed = positionQuestionEntries(scenes, 7);
    expect(positionQuestionEntries(scenes, 7)).toEqual(mixed);
    expect(positionQuestionEntries(scenes, 8)).not.toEqual(mixed);
    const kinds = new Set(mixed.map((e) => `${/left|right/.test(e.conversations[0].value) ? 'x' : 'y'}${/ or /.test(e.conversations[0].value) ? 'eo' : 'yn'}`));
    expect([...kinds].sort()).toEqual(['xeo', 'xyn', 'yeo', 'yyn']);
  });

  it('writes valid LLaVA JSON: pretrain captions and typed instruct questions', async () => {
    const captions = JSON.parse(await readFile(join(a, 'captions.json'), 'utf8')) as unknown[];
    const qa = JSON.parse(await readFile(join(a, 'qa.json'), 'utf8')) as QaEntry[];
    expect(llavaFormatProblems(captions)).toEqual([]);
    expect(llavaFormatProblems(qa)).toEqual([]);
    expect(captions).toHaveLength(60);
    expect(qa).toHaveLength(180);
    expect(captions[0]).toEqual({ id: 'shapes-11-000000', image: 'shapes-11-000000.png', conversations: [{ from: 'human', value: '<image>' }, { from: 'gpt', value: expect.stringMatching(/^an? [a-z]+ [a-z]+.*\.$/) }] });
    const images = new Set(await readdir(join(a, 'images')));
    for (const e of qa) {
      expect(QA_TYPES).toContain(e.type);
      expect(images.has(e.image)).toBe(true);
      expect(e.conversations[0].value.startsWith('<image>\n')).toBe(true);
      expect(e.conversations[1].value).toMatch(/^[A-Z].*\.$/);
    }
  });

  it('groups the questions of each image into one valid multi-turn conversation', async () => {
    const qa = JSON.parse(await readFile(join(a, 'qa.json'), 'utf8')) as QaEntry[];
    const conv = conversationsPerImage(qa);
    expect(llavaFormatProblems(conv)).toEqual([]);
    expect(conv).toHaveLength(60);
    expect(conv[0].conversations).toHaveLength(6);
    expect(conv[0].conversations[0]).toEqual(qa[0].conversations[0]);
    expect(conv[0].conversations[2]).toEqual({ from: 'human', value: qa[1].conversations[0].value.replace('<image>\n', '') });
    expect(conv.flatMap((e) => e.conversations.filter((t) => t.from === 'gpt'))).toEqual(qa.map((e) => e.conversations[1]));
    const text = { id: 't', conversations: [{ from: 'human' as const, value: 'Hi?' }, { from: 'gpt' as const, value: 'Hello.' }] };
    expect(conversationsPerImage([text, { ...text, id: 'u' }])).toEqual([text, { ...text, id: 'u' }]);
  });

  it('the format check catches what LLaVA would choke on', () => {
    expect(llavaFormatProblems({})).toEqual(['the top level is not an array']);
    expect(llavaFormatProblems([
      { id: 'a', image: 'x.png', conversations: [{ from: 'human', value: 'no marker' }, { from: 'gpt', value: 'x' }] },
      { id: 'a', conversations: [{ from: 'gpt', value: 'x' }, { from: 'human', value: 'y' }] },
      { id: 'b', image: 'x.png', conversations: [{ from: 'human', value: '<image>' }] },
    ])).toEqual([
      'entry 0: 0 <image> markers for 1 image',
      'entry 1: duplicate id a',
      'entry 1: turn 0 is not {"from": "human", "value": string}',
      'entry 1: turn 1 is not {"from": "gpt", "value": string}',
      'entry 2: conversations is not a non-empty list of human/gpt pairs',
    ]);
  });

  it('refuses bad options', () => {
    expect(() => shapesSamples({ seed: -1, count: 1 }).next()).toThrow(/seed/);
    expect(() => shapesSamples({ seed: 1, count: 0 }).next()).toThrow(/count/);
    expect(() => shapesSamples({ seed: 1, count: 1, size: 16 }).next()).toThrow(/size/);
    expect(() => shapesSamples({ seed: 1, count: 1, kinds: ['circle'] }).next()).toThrow(/two shapes/);
  });

  it('restricted vocabularies are honoured', () => {
    for (const s of shapesSamples({ seed: 8, count: 100, kinds: ['circle', 'star'], colors: ['red', 'blue'] })) {
      for (const sh of s.scene.shapes) {
        expect(['circle', 'star']).toContain(sh.kind);
        expect(['red', 'blue']).toContain(sh.color);
      }
      checkSample(s);
    }
  });
});
