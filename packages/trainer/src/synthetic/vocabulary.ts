/**
 * The closed world of the synthetic shapes data: shape kinds, colour names with their RGB
 * values, and the words the captions and answers use. Everything a question can be about
 * is named here, once.
 */

export type Rgb = readonly [number, number, number];

export const SHAPE_KINDS = ['circle', 'square', 'triangle', 'star', 'diamond', 'cross'] as const;
export type ShapeKind = (typeof SHAPE_KINDS)[number];

/**
 * Saturated or dark fills, far from each other (nearest pair, orange–yellow, is ~70 apart
 * in RGB) and from the light backgrounds, so a name is never in doubt; white and gray are
 * left out because backgrounds are near-white.
 */
export const COLORS = {
  red: [215, 35, 35],
  orange: [245, 135, 20],
  yellow: [240, 205, 20],
  green: [40, 160, 60],
  cyan: [20, 185, 200],
  blue: [35, 75, 215],
  purple: [130, 50, 185],
  pink: [240, 110, 185],
  brown: [125, 75, 35],
  black: [25, 25, 25],
} as const satisfies Record<string, Rgb>;
export type ColorName = keyof typeof COLORS;
export const COLOR_NAMES = Object.keys(COLORS) as ColorName[];

/**
 * The shipped micro model's world, the minimum (4 kinds, 8 colours): diamond (a
 * turned square), cross (a star at 8 px per patch) and the closest colour pair's orange are
 * left out. `mobillama-v data shapes` defaults to it, so its data and the default model agree.
 */
export const MICRO_WORLD: { readonly kinds: readonly ShapeKind[]; readonly colors: readonly ColorName[] } = {
  kinds: ['circle', 'square', 'triangle', 'star'],
  colors: ['red', 'yellow', 'green', 'cyan', 'blue', 'purple', 'pink', 'black'],
};

/** Most shapes per image; number words below cover 0 … MAX_SHAPES. */
export const MAX_SHAPES = 4;
const NUMBER_WORDS = ['zero', 'one', 'two', 'three', 'four'] as const;

export function numberWord(n: number): string {
  const w = NUMBER_WORDS[n];
  if (w === undefined) throw new RangeError(`no number word for ${n}`);
  return w;
}

export function plural(kind: ShapeKind): string {
  return kind === 'cross' ? 'crosses' : `${kind}s`;
}

/** "a" or "an" before a word. */
export function article(word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

export function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The palette colour nearest to an RGB value (what a pixel check expects to find). */
export function nearestColor(rgb: ArrayLike<number>): { name: ColorName; distance: number } {
  let best: ColorName = COLOR_NAMES[0];
  let bestD = Infinity;
  for (const name of COLOR_NAMES) {
    const c = COLORS[name];
    const d = Math.hypot(rgb[0] - c[0], rgb[1] - c[1], rgb[2] - c[2]);
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return { name: best, distance: bestD };
}
