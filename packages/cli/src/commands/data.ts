import { resolve } from 'node:path';
import type { Command } from 'commander';
import {
  COLOR_NAMES, DEFAULT_QA_PER_IMAGE, DEFAULT_SIZE, MICRO_WORLD, QA_TYPES, SHAPE_KINDS, checkShapesOptions, writeShapesDataset,
  type ColorName, type ShapeKind, type ShapesOptions,
} from '@mobillama/trainer/synthetic';
import { UsageError } from '../errors.js';

interface ShapesFlags {
  out?: string;
  count?: string;
  seed?: string;
  size?: string;
  qaPerImage?: string;
  shapes?: string;
  colors?: string;
  json?: boolean;
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v.trim())) throw new UsageError(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

function list<T extends string>(name: string, v: string | undefined, allowed: readonly T[]): T[] | undefined {
  if (v === undefined) return undefined;
  const items = v.split(',').map((x) => x.trim().toLowerCase()).filter((x) => x !== '');
  const bad = items.find((x) => !(allowed as readonly string[]).includes(x));
  if (bad !== undefined) throw new UsageError(`--${name}: unknown ${JSON.stringify(bad)}; choose from ${allowed.join(', ')}`);
  return items as T[];
}

export function registerData(program: Command): void {
  const data = program.command('data').description('make training and evaluation data');
  data
    .command('shapes')
    .description('synthetic shapes images with LLaVA-format captions (captions.json) and questions (qa.json)')
    .requiredOption('--out <dir>', 'output folder: images/, captions.json, qa.json, scenes.json, meta.json')
    .requiredOption('--count <n>', 'number of images')
    .requiredOption('--seed <n>', 'seed (integer in [0, 2^32)); use different seeds for train and held-out splits')
    .option('--size <px>', `image side in pixels (default ${DEFAULT_SIZE})`)
    .option('--qa-per-image <n>', `questions per image, each of a different type (default ${DEFAULT_QA_PER_IMAGE}, at most ${QA_TYPES.length})`)
    .option('--shapes <list>', `comma-separated subset of ${SHAPE_KINDS.join(',')} (default ${MICRO_WORLD.kinds.join(',')}: the shipped model's world)`)
    .option('--colors <list>', `comma-separated subset of ${COLOR_NAMES.join(',')} (default ${MICRO_WORLD.colors.join(',')})`)
    .option('--json', 'print a JSON summary {"images","captions","questions","by_type","seconds"}')
    .action(async (f: ShapesFlags) => {
      const opts: ShapesOptions = {
        count: int('count', f.count)!, seed: int('seed', f.seed)!, size: int('size', f.size), qaPerImage: int('qa-per-image', f.qaPerImage),
        kinds: list<ShapeKind>('shapes', f.shapes, SHAPE_KINDS) ?? MICRO_WORLD.kinds, colors: list<ColorName>('colors', f.colors, COLOR_NAMES) ?? MICRO_WORLD.colors,
      };
      try {
        checkShapesOptions(opts);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const out = resolve(f.out!);
      const tty = process.stderr.isTTY;
      const r = await writeShapesDataset({
        ...opts, out,
        onProgress: tty ? (done, total) => process.stderr.write(`\r${done}/${total} images`) : undefined,
      }).catch((e: unknown) => {
        if (tty) process.stderr.write('\n');
        // A folder we cannot write to is the user's to fix.
        const errno = e as NodeJS.ErrnoException;
        if (typeof errno.code === 'string' && errno.syscall !== undefined) throw new UsageError(`cannot write to ${out}: ${errno.code} (${errno.path ?? errno.syscall})`);
        throw e;
      });
      if (tty) process.stderr.write('\n');
      if (f.json) {
        process.stdout.write(`${JSON.stringify({ images: r.images, captions: r.captions, questions: r.questions, by_type: r.byType, seconds: Math.round(r.seconds * 100) / 100 })}\n`);
      } else {
        const types = Object.entries(r.byType).map(([t, n]) => `${t} ${n}`).join(', ');
        process.stdout.write(`wrote ${r.images} images, ${r.captions} captions and ${r.questions} questions (${types}) to ${out} in ${r.seconds.toFixed(1)} s\n`);
      }
    });
}
