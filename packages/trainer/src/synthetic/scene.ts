import type { Random } from './random.js';
import { COLORS, MAX_SHAPES, type ColorName, type Rgb, type ShapeKind } from './vocabulary.js';

/**
 * A scene: what one image shows, kept alongside it so every caption and answer is derived
 * from (and can be checked against) the same description the pixels were drawn from.
 */
export interface SceneShape {
  readonly kind: ShapeKind;
  readonly color: ColorName;
  /** The fill actually drawn: the named colour with a little jitter. */
  readonly rgb: Rgb;
  /** Centre and circumradius in pixels: the shape lies inside this circle. */
  readonly cx: number;
  readonly cy: number;
  readonly r: number;
  /** Degrees, clockwise. */
  readonly rotation: number;
}

export type Background =
  | { readonly kind: 'plain'; readonly rgb: Rgb }
  | { readonly kind: 'gradient'; readonly from: Rgb; readonly to: Rgb; readonly angle: number };

export interface Scene {
  readonly size: number;
  readonly background: Background;
  readonly shapes: readonly SceneShape[];
}

export interface SceneOptions {
  readonly size: number;
  readonly kinds: readonly ShapeKind[];
  readonly colors: readonly ColorName[];
}

/** Largest circumradius, as a fraction of the image side, by number of shapes (more shapes, less room). */
const MAX_RADIUS = [0, 0.32, 0.24, 0.2, 0.18];
const MIN_RADIUS = 0.11;
const COLOR_JITTER = 10;
const GRADIENT_P = 0.35;
/** Rotations that keep each kind looking like itself: a square turned 45° would be a diamond. */
const MAX_ROTATION: Record<ShapeKind, number> = { circle: 0, square: 10, triangle: 180, star: 180, diamond: 10, cross: 10 };

/** A random light colour: any hue, low saturation, lightness 88–97%. */
function lightColor(rng: Random): Rgb {
  return hsl(rng.range(0, 360), rng.range(0, 0.35), rng.range(0.88, 0.97));
}

function hsl(h: number, s: number, l: number): Rgb {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number): number => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function jitter(rng: Random, c: Rgb): Rgb {
  const j = (v: number) => Math.max(0, Math.min(255, v + rng.int(-COLOR_JITTER, COLOR_JITTER)));
  return [j(c[0]), j(c[1]), j(c[2])];
}

/**
 * Draws 1–4 shapes that never overlap (their circumcircles are apart by a gap) and stay
 * inside the image. Rejection sampling: a shape that finds no room shrinks; a scene in
 * which one cannot fit even at the smallest size is drawn again.
 */
export function randomScene(rng: Random, opts: SceneOptions): Scene {
  const S = opts.size;
  const background: Background = rng.chance(GRADIENT_P)
    ? { kind: 'gradient', from: lightColor(rng), to: lightColor(rng), angle: rng.int(0, 359) }
    : { kind: 'plain', rgb: lightColor(rng) };
  const count = rng.int(1, MAX_SHAPES);
  const gap = Math.max(2, 0.04 * S);
  const margin = 1;
  const rMin = MIN_RADIUS * S;
  for (;;) {
    const shapes: SceneShape[] = [];
    for (let i = 0; i < count; i++) {
      const kind = rng.pick(opts.kinds);
      const color = rng.pick(opts.colors);
      let r = rng.range(rMin, MAX_RADIUS[count] * S);
      let placed: { cx: number; cy: number } | undefined;
      for (let attempt = 0; attempt < 60 && !placed; attempt++) {
        if (attempt > 0 && attempt % 15 === 0) r = Math.max(rMin, r * 0.85);
        // Rounded to 1/100 px, as the SVG and scenes.json write them, so all three agree.
        const cx = round2(rng.range(r + margin, S - r - margin));
        const cy = round2(rng.range(r + margin, S - r - margin));
        if (shapes.every((o) => Math.hypot(o.cx - cx, o.cy - cy) >= o.r + r + gap)) placed = { cx, cy };
      }
      if (!placed) break;
      const maxRot = MAX_ROTATION[kind];
      shapes.push({
        kind, color, rgb: jitter(rng, COLORS[color]), ...placed, r: round2(r),
        rotation: maxRot === 0 ? 0 : Math.round(rng.range(-maxRot, maxRot)),
      });
    }
    if (shapes.length === count) return { size: S, background, shapes };
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** Axis relations that hold without doubt: the shapes' extents along that axis are disjoint. */
export function isLeftOf(a: SceneShape, b: SceneShape): boolean {
  return a.cx + a.r < b.cx - b.r;
}

/** Image y grows downwards: "above" is the smaller y. */
export function isAbove(a: SceneShape, b: SceneShape): boolean {
  return a.cy + a.r < b.cy - b.r;
}
