import type { Command } from 'commander';
import { MobiLlamaV } from '@mobillama/pipeline';
import { UsageError } from '../errors.js';
import { addModelOptions, modelOptionsFrom, type ModelFlags } from './model-options.js';

interface ScoreFlags extends ModelFlags {
  image?: string;
  prompt?: string;
  continuation?: string;
  promptIds?: string;
  continuationIds?: string;
  json?: boolean;
  threads?: string;
}

function ids(flag: string, s: string): number[] {
  const parts = s.split(',').map((x) => x.trim());
  if (parts.some((x) => !/^-?\d+$/.test(x))) throw new UsageError(`--${flag} must be comma-separated token ids, got ${JSON.stringify(s)}`);
  return parts.map(Number);
}

export function registerScore(program: Command): void {
  addModelOptions(
    program
      .command('score')
      .description('log-likelihood of a continuation after image + prompt (no template applied)')
      .option('--image <file>', 'the image; <image> in --prompt or -200 in --prompt-ids marks where it goes')
      .option('--prompt <text>', 'prompt text (BOS added as the tokenizer config says)')
      .option('--continuation <text>', 'continuation text')
      .option('--prompt-ids <ids>', 'prompt ids, taken as is (-200 = the image)')
      .option('--continuation-ids <ids>', 'continuation ids')
      .option('--threads <n>', 'CPU threads')
      .option('--json', 'print {"tokens","logprobs","total"}'),
  ).action(async (f: ScoreFlags) => {
    const text = f.prompt !== undefined || f.continuation !== undefined;
    const raw = f.promptIds !== undefined || f.continuationIds !== undefined;
    if (text === raw) throw new UsageError('give --prompt and --continuation, or --prompt-ids and --continuation-ids');
    if (text && (f.prompt === undefined || f.continuation === undefined)) throw new UsageError('--prompt and --continuation go together');
    if (raw && (f.promptIds === undefined || f.continuationIds === undefined)) throw new UsageError('--prompt-ids and --continuation-ids go together');
    const threads = f.threads === undefined ? undefined : Number(f.threads);
    const model = await MobiLlamaV.load(modelOptionsFrom(f, threads));
    try {
      const r = text
        ? await model.scoreContinuation({ image: f.image, prompt: f.prompt!, continuation: f.continuation! })
        : await model.scoreContinuation({ image: f.image, promptIds: ids('prompt-ids', f.promptIds!), continuationIds: ids('continuation-ids', f.continuationIds!) });
      if (f.json) process.stdout.write(`${JSON.stringify({ tokens: r.tokens, logprobs: r.logprobs, total: r.total })}\n`);
      else {
        for (let i = 0; i < r.tokens.length; i++) process.stdout.write(`${r.tokens[i]}\t${r.logprobs[i].toFixed(6)}\n`);
        process.stdout.write(`total\t${r.total.toFixed(6)}\n`);
      }
    } finally {
      await model.dispose();
    }
  });
}
