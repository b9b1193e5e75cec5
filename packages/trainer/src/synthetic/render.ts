import sharp from 'sharp';
import type { Background, Scene, SceneShape } from './scene.js';
import type { Rgb } from './vocabulary.js';

/** Star inner radius / outer radius; cross arm half-width / radius; diamond half-width / radius. */
const STAR_INNER = 0.45;
const CROSS_HALF_WIDTH = 0.3;
const DIAMOND_HALF_WIDTH = 0.65;

const f = (x: number): string => x.toFixed(2);
const hex = (c: Rgb): string => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/** Points at (radius, angle°) around the centre, angle 0 pointing up, turning clockwise. */
function polygon(s: SceneShape, corners: readonly (readonly [number, number])[]): string {
  const pts = corners.map(([rad, deg]) => {
    const a = ((deg + s.rotation) * Math.PI) / 180;
    return `${f(s.cx + rad * Math.sin(a))},${f(s.cy - rad * Math.cos(a))}`;
  });
  return `<polygon points="${pts.join(' ')}" fill="${hex(s.rgb)}"/>`;
}

function shapeSvg(s: SceneShape): string {
  const r = s.r;
  switch (s.kind) {
    case 'circle':
      return `<circle cx="${f(s.cx)}" cy="${f(s.cy)}" r="${f(r)}" fill="${hex(s.rgb)}"/>`;
    case 'square':
      return polygon(s, [45, 135, 225, 315].map((d) => [r, d] as const));
    case 'triangle':
      return polygon(s, [0, 120, 240].map((d) => [r, d] as const));
    case 'star':
      return polygon(s, Array.from({ length: 10 }, (_, i) => [i % 2 === 0 ? r : r * STAR_INNER, i * 36] as const));
    case 'diamond':
      return polygon(s, [[r, 0], [r * DIAMOND_HALF_WIDTH, 90], [r, 180], [r * DIAMOND_HALF_WIDTH, 270]]);
    case 'cross': {
      // A plus sign: 12 corners, each arm reaching the circumcircle.
      const w = r * CROSS_HALF_WIDTH;
      const l = Math.sqrt(r * r - w * w);
      const xy: [number, number][] = [[-w, -l], [w, -l], [w, -w], [l, -w], [l, w], [w, w], [w, l], [-w, l], [-w, w], [-l, w], [-l, -w], [-w, -w]];
      // Polar form so `polygon` applies the rotation (angle 0 = up = -y).
      return polygon(s, xy.map(([x, y]) => [Math.hypot(x, y), (Math.atan2(x, -y) * 180) / Math.PI] as const));
    }
  }
}

function backgroundSvg(b: Background, size: number): string {
  if (b.kind === 'plain') return `<rect width="${size}" height="${size}" fill="${hex(b.rgb)}"/>`;
  return `<defs><linearGradient id="bg" gradientTransform="rotate(${b.angle} 0.5 0.5)">`
    + `<stop offset="0" stop-color="${hex(b.from)}"/><stop offset="1" stop-color="${hex(b.to)}"/></linearGradient></defs>`
    + `<rect width="${size}" height="${size}" fill="url(#bg)"/>`;
}

export function sceneSvg(scene: Scene): string {
  const S = scene.size;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${S}" height="${S}" viewBox="0 0 ${S} ${S}">`
    + backgroundSvg(scene.background, S) + scene.shapes.map(shapeSvg).join('') + '</svg>';
}

/** The scene as an RGB PNG (sharp rasterizes the SVG with librsvg, anti-aliased). */
export function renderPng(scene: Scene): Promise<Buffer> {
  return sharp(Buffer.from(sceneSvg(scene))).removeAlpha().png({ compressionLevel: 6 }).toBuffer();
}
