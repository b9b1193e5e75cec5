import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_EVAL_MAX_NEW_TOKENS, MobiLlamaV, evaluate, type EvalReport } from '@mobillama/pipeline';
import { UsageError } from '../errors.js';
import { addModelOptions, modelOptionsFrom, type ModelFlags } from './model-options.js';

interface EvalFlags extends ModelFlags {
  data?: string;
  imageFolder?: string;
  limit?: string;
  maxNewTokens?: string;
  threads?: string;
  predictions?: string;
  json?: boolean;
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\s*\d+\s*$/.test(v) || Number(v) < 1) throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

function table(r: EvalReport): string {
  const rows: [string, number, number, string][] = Object.entries(r.byType).map(([t, s]) => [t, s.count, s.correct, pct(s.accuracy)]);
  rows.push(['overall', r.count, r.correct, pct(r.accuracy)]);
  const w = Math.max(8, ...rows.map((x) => x[0].length));
  const line = (a: string, b: string, c: string, d: string) => `${a.padEnd(w)}  ${b.padStart(6)}  ${c.padStart(7)}  ${d.padStart(8)}`;
  return [line('type', 'count', 'correct', 'accuracy'), ...rows.map(([t, n, c, a]) => line(t, String(n), String(c), a))].join('\n');
}

export function registerEval(program: Command): void {
  addModelOptions(
    program
      .command('eval')
      .description('exact-match VQA accuracy on a LLaVA instruct-format file, overall and per question type; '
        + 'answers are compared trimmed, with runs of whitespace as one space, trailing periods dropped and case ignored')
      .requiredOption('--data <file>', 'JSON array of {"id","image","type","conversations"}: first human turn = question, first gpt turn = reference')
      .option('--image-folder <dir>', 'folder the entries\' image paths are relative to (default: images/ next to --data)')
      .option('--limit <n>', 'evaluate the first n entries only')
      .option('--max-new-tokens <n>', `most tokens per answer (default ${DEFAULT_EVAL_MAX_NEW_TOKENS})`)
      .option('--threads <n>', 'CPU threads for inference')
      .option('--predictions <file>', 'also write each prediction as a JSON line {"id","type","question","reference","prediction","correct"}')
      .option('--json', 'print {"accuracy": overall, "by_type": {type: accuracy}, "count": n}'),
  ).action(async (f: EvalFlags) => {
    const limit = positiveInt('limit', f.limit);
    const maxNewTokens = positiveInt('max-new-tokens', f.maxNewTokens);
    const threads = positiveInt('threads', f.threads);
    const data = f.data!;
    if (!existsSync(data)) throw new UsageError(`--data: no such file ${data}`);
    const imageFolder = f.imageFolder ?? join(dirname(data), 'images');
    if (!existsSync(imageFolder)) throw new UsageError(`--image-folder: no such folder ${imageFolder}`);
    const predictions = f.predictions === undefined ? undefined : await open(f.predictions, 'w').catch((e: NodeJS.ErrnoException) => {
      throw new UsageError(`--predictions: cannot write ${f.predictions}: ${e.code ?? e.message}`);
    });
    const model = await MobiLlamaV.load(modelOptionsFrom(f, threads)).catch(async (e: unknown) => {
      await predictions?.close();
      throw e;
    });
    const progress = process.stderr.isTTY;
    // The progress line is rewritten in place; end it before the report or an error message.
    let progressOpen = false;
    const endProgress = () => {
      if (progressOpen) process.stderr.write('\n');
      progressOpen = false;
    };
    try {
      const report = await evaluate(model, {
        data, imageFolder, limit, maxNewTokens,
        onPrediction: async (p, running) => {
          if (predictions) {
            await predictions.write(`${JSON.stringify({ id: p.id, type: p.type, question: p.question, reference: p.reference, prediction: p.prediction, correct: p.correct })}\n`);
          }
          if (progress) {
            process.stderr.write(`\r${running.count}${limit ? `/${limit}` : ''} answered, ${pct(running.accuracy)} correct`);
            progressOpen = true;
          }
        },
      });
      endProgress();
      if (f.json) {
        const byType = Object.fromEntries(Object.entries(report.byType).map(([t, s]) => [t, s.accuracy]));
        process.stdout.write(`${JSON.stringify({ accuracy: report.accuracy, by_type: byType, count: report.count })}\n`);
      } else {
        process.stdout.write(`${table(report)}\n`);
      }
    } finally {
      endProgress();
      await predictions?.close();
      await model.dispose();
    }
  });
}
