import type { Random } from './random.js';
import { isAbove, isLeftOf, type Scene, type SceneShape } from './scene.js';
import { COLOR_NAMES, SHAPE_KINDS, article, capitalize, numberWord, plural, type ColorName, type ShapeKind } from './vocabulary.js';

/**
 * Captions and question/answer pairs, derived from a scene. Every question is asked only
 * when the image answers it without doubt (a colour is asked of "the circle" only when
 * there is one circle; left/right only when the two shapes' extents do not overlap
 * horizontally), and answers are short canonical sentences ("Red.", "Two.", "Yes.") so
 * exact match is a fair score.
 */

export const QA_TYPES = ['color', 'shape', 'count', 'position', 'exists', 'describe'] as const;
export type QaType = (typeof QA_TYPES)[number];

export interface QaPair {
  readonly type: QaType;
  readonly question: string;
  readonly answer: string;
}

export interface Vocabulary {
  readonly kinds: readonly ShapeKind[];
  readonly colors: readonly ColorName[];
}

const answer = (s: string): string => `${capitalize(s)}.`;

/** "a red circle, two blue stars and a green triangle": grouped, in a fixed kind-then-colour order, so it is canonical. */
export function describeScene(scene: Scene): string {
  const groups = new Map<string, { kind: ShapeKind; color: ColorName; n: number }>();
  for (const s of scene.shapes) {
    const key = `${s.kind}/${s.color}`;
    const g = groups.get(key);
    if (g) g.n++;
    else groups.set(key, { kind: s.kind, color: s.color, n: 1 });
  }
  const order = [...groups.values()].sort((a, b) =>
    SHAPE_KINDS.indexOf(a.kind) - SHAPE_KINDS.indexOf(b.kind) || COLOR_NAMES.indexOf(a.color) - COLOR_NAMES.indexOf(b.color));
  const parts = order.map((g) => (g.n === 1 ? `${article(g.color)} ${g.color} ${g.kind}` : `${numberWord(g.n)} ${g.color} ${plural(g.kind)}`));
  return parts.length === 1 ? parts[0] : `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** The pretraining caption: the description, lower case, with a full stop (as blip_laion_cc_sbu_558k). */
export function caption(scene: Scene): string {
  return `${describeScene(scene)}.`;
}

/** How to name one shape unambiguously: "the circle" if it is the only one, else "the red circle" if that is unique. */
export function referTo(scene: Scene, s: SceneShape): string | null {
  const sameKind = scene.shapes.filter((o) => o.kind === s.kind);
  if (sameKind.length === 1) return `the ${s.kind}`;
  if (sameKind.filter((o) => o.color === s.color).length === 1) return `the ${s.color} ${s.kind}`;
  return null;
}

type Asker = (scene: Scene, rng: Random, vocab: Vocabulary) => QaPair | null;

const askColor: Asker = (scene, rng) => {
  const unique = scene.shapes.filter((s) => scene.shapes.filter((o) => o.kind === s.kind).length === 1);
  if (unique.length === 0) return null;
  const s = rng.pick(unique);
  const q = rng.chance(0.5) ? `What color is the ${s.kind}?` : `What is the color of the ${s.kind}?`;
  return { type: 'color', question: q, answer: answer(s.color) };
};

const askShape: Asker = (scene, rng) => {
  if (scene.shapes.length === 1 && rng.chance(0.5)) {
    return { type: 'shape', question: 'What shape is in the image?', answer: answer(scene.shapes[0].kind) };
  }
  const unique = scene.shapes.filter((s) => scene.shapes.filter((o) => o.color === s.color).length === 1);
  if (unique.length === 0) return null;
  const s = rng.pick(unique);
  const q = rng.chance(0.5) ? `What shape is ${s.color}?` : `What is the shape of the ${s.color} object?`;
  return { type: 'shape', question: q, answer: answer(s.kind) };
};

const askCount: Asker = (scene, rng, vocab) => {
  const variant = rng.int(0, 2);
  if (variant === 0) return { type: 'count', question: 'How many shapes are there?', answer: answer(numberWord(scene.shapes.length)) };
  // Mostly about something present; sometimes about something absent ("Zero.").
  if (variant === 1) {
    const present = [...new Set(scene.shapes.map((s) => s.kind))];
    const absent = vocab.kinds.filter((k) => !present.includes(k));
    const kind = absent.length > 0 && rng.chance(0.2) ? rng.pick(absent) : rng.pick(present);
    const n = scene.shapes.filter((s) => s.kind === kind).length;
    return { type: 'count', question: `How many ${plural(kind)} are there?`, answer: answer(numberWord(n)) };
  }
  const present = [...new Set(scene.shapes.map((s) => s.color))];
  const absent = vocab.colors.filter((c) => !present.includes(c));
  const color = absent.length > 0 && rng.chance(0.2) ? rng.pick(absent) : rng.pick(present);
  const n = scene.shapes.filter((s) => s.color === color).length;
  return { type: 'count', question: `How many ${color} shapes are there?`, answer: answer(numberWord(n)) };
};

const askExists: Asker = (scene, rng, vocab) => {
  const yes = rng.chance(0.5);
  if (rng.chance(0.4)) {
    const present = [...new Set(scene.shapes.map((s) => s.kind))];
    const absent = vocab.kinds.filter((k) => !present.includes(k));
    const kind = yes || absent.length === 0 ? rng.pick(present) : rng.pick(absent);
    return { type: 'exists', question: `Is there ${article(kind)} ${kind} in the image?`, answer: answer(present.includes(kind) ? 'yes' : 'no') };
  }
  const has = (k: ShapeKind, c: ColorName) => scene.shapes.some((s) => s.kind === k && s.color === c);
  const absent: [ShapeKind, ColorName][] = [];
  for (const k of vocab.kinds) for (const c of vocab.colors) if (!has(k, c)) absent.push([k, c]);
  let kind: ShapeKind, color: ColorName;
  // A small vocabulary can have every combination on show: then the answer is yes.
  if (yes || absent.length === 0) ({ kind, color } = rng.pick(scene.shapes));
  else {
    // Hard negatives share the kind or the colour with a shape that is there.
    const near = absent.filter(([k, c]) => scene.shapes.some((s) => s.kind === k || s.color === c));
    [kind, color] = rng.pick(near.length > 0 && rng.chance(0.75) ? near : absent);
  }
  return { type: 'exists', question: `Is there ${article(color)} ${color} ${kind}?`, answer: answer(has(kind, color) ? 'yes' : 'no') };
};

export interface PositionQuestionOptions {
  /** Only this axis: 'x' left/right, 'y' above/below (default: either, where the pair allows both). */
  readonly axis?: 'x' | 'y';
  /** Only this form (default: either-or or yes/no at even odds). */
  readonly form?: 'either-or' | 'yes-no';
}

/**
 * A relative-position question about two shapes that can be named and are apart on the axis
 * asked. With no options the random draws are those of the dataset's position questions.
 */
export function askPositionQuestion(scene: Scene, rng: Random, options: PositionQuestionOptions = {}): QaPair | null {
  const pairs: { a: string; b: string; sa: SceneShape; sb: SceneShape; axes: ('x' | 'y')[] }[] = [];
  for (const sa of scene.shapes) {
    for (const sb of scene.shapes) {
      if (sa === sb) continue;
      const a = referTo(scene, sa), b = referTo(scene, sb);
      if (a === null || b === null) continue;
      const axes: ('x' | 'y')[] = [];
      if (isLeftOf(sa, sb) || isLeftOf(sb, sa)) axes.push('x');
      if (isAbove(sa, sb) || isAbove(sb, sa)) axes.push('y');
      if (options.axis !== undefined) {
        if (axes.includes(options.axis)) pairs.push({ a, b, sa, sb, axes: [options.axis] });
      } else if (axes.length > 0) pairs.push({ a, b, sa, sb, axes });
    }
  }
  if (pairs.length === 0) return null;
  const { a, b, sa, sb, axes } = rng.pick(pairs);
  const axis = rng.pick(axes);
  const first = axis === 'x' ? isLeftOf(sa, sb) : isAbove(sa, sb);
  if (options.form === undefined ? rng.chance(0.5) : options.form === 'either-or') {
    // Either-or form: the answer is the relation's word.
    return axis === 'x'
      ? { type: 'position', question: `Is ${a} to the left or to the right of ${b}?`, answer: answer(first ? 'left' : 'right') }
      : { type: 'position', question: `Is ${a} above or below ${b}?`, answer: answer(first ? 'above' : 'below') };
  }
  // Yes/no form, asking either direction so yes and no are equally likely.
  const askFirst = rng.chance(0.5);
  const rel = axis === 'x' ? (askFirst ? 'to the left of' : 'to the right of') : askFirst ? 'above' : 'below';
  return { type: 'position', question: `Is ${a} ${rel} ${b}?`, answer: answer(askFirst === first ? 'yes' : 'no') };
}

const askPosition: Asker = (scene, rng) => askPositionQuestion(scene, rng);

const askDescribe: Asker = (scene, rng) => ({
  type: 'describe',
  question: rng.chance(0.5) ? 'Describe the image briefly.' : 'What shapes are in the image?',
  answer: answer(describeScene(scene)),
});

const ASKERS: Record<QaType, Asker> = {
  color: askColor, shape: askShape, count: askCount, position: askPosition, exists: askExists, describe: askDescribe,
};

export function askQuestion(type: QaType, scene: Scene, rng: Random, vocab: Vocabulary): QaPair | null {
  return ASKERS[type](scene, rng, vocab);
}

/**
 * Up to `n` questions of different types about one scene, trying the types in the order
 * given; one the scene cannot answer (no unique shape to ask the colour of, one shape for a
 * position question) is skipped for the next.
 */
export function questionsFor(scene: Scene, rng: Random, vocab: Vocabulary, n: number, order: readonly QaType[]): QaPair[] {
  const out: QaPair[] = [];
  for (const t of order) {
    if (out.length >= n) break;
    const qa = askQuestion(t, scene, rng, vocab);
    if (qa) out.push(qa);
  }
  return out;
}

/**
 * Keeps the question types balanced over a dataset: each image tries the types asked least
 * so far first (ties in random order). Position questions need two shapes, so with a
 * uniform order they would fall behind.
 */
export class TypeBalancer {
  private readonly asked = new Map<QaType, number>(QA_TYPES.map((t) => [t, 0]));

  order(rng: Random): QaType[] {
    const shuffled = rng.shuffle(QA_TYPES);
    return shuffled.sort((a, b) => this.asked.get(a)! - this.asked.get(b)!); // stable: ties keep the shuffle
  }

  record(qa: readonly QaPair[]): void {
    for (const q of qa) this.asked.set(q.type, this.asked.get(q.type)! + 1);
  }
}
