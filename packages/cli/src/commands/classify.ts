import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ClipModel } from '@mobillama/vision';
import { UsageError } from '../errors.js';
import { DEFAULT_MODEL_DIR } from './model-options.js';

/** The shipped micro model's CLIP (written by `pnpm train:micro`), used when --clip is not given. */
export const DEFAULT_CLIP_DIR = join(DEFAULT_MODEL_DIR, 'clip');

interface ClassifyFlags {
  image?: string;
  labels?: string;
  clip?: string;
  json?: boolean;
  threads?: string;
}

function parseLabels(s: string | undefined): string[] {
  if (s === undefined) throw new UsageError('give --labels, e.g. --labels "a red circle,a blue square"');
  const labels = s.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (labels.length < 2) throw new UsageError(`--labels needs at least two comma-separated labels, got ${JSON.stringify(s)}`);
  return labels;
}

function clipDir(flag: string | undefined): string {
  if (flag !== undefined) return flag;
  if (!existsSync(DEFAULT_CLIP_DIR)) throw new UsageError(`no --clip given and no default CLIP at ${DEFAULT_CLIP_DIR}: pass --clip DIR (a CLIPModel folder)`);
  return DEFAULT_CLIP_DIR;
}

export function registerClassify(program: Command): void {
  program
    .command('classify')
    .description('zero-shot image classification with CLIP: which label fits the image best')
    .option('--image <file>', 'the image (jpeg, png, webp, gif, tiff, avif)')
    .option('--labels <list>', 'comma-separated candidate labels, e.g. "a red circle,a blue square"')
    .option('--clip <dir>', 'a CLIPModel folder (config.json, weights, tokenizer.json); default: the shipped micro model\'s CLIP')
    .option('--threads <n>', 'CPU threads')
    .option('--json', 'print {"image","labels":[{"label","prob","logit"}] in label order,"best"}')
    .action(async (f: ClassifyFlags) => {
      if (!f.image) throw new UsageError('give --image FILE');
      const labels = parseLabels(f.labels);
      const threads = f.threads === undefined ? undefined : Number(f.threads);
      if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) throw new UsageError(`--threads must be a positive integer, got ${f.threads}`);
      const model = await ClipModel.load(clipDir(f.clip), { threads });
      try {
        const results = await model.classify(f.image, labels);
        const best = results.reduce((a, b) => (b.prob > a.prob ? b : a));
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ image: f.image, labels: results, best: best.label })}\n`);
        } else {
          for (const r of [...results].sort((a, b) => b.prob - a.prob)) process.stdout.write(`${r.prob.toFixed(4)}\t${r.label}\n`);
        }
      } finally {
        await model.dispose();
      }
    });
}
