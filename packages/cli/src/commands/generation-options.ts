import { Option, type Command } from 'commander';
import type { GenerateOptions } from '@mobillama/decoder';
import { UsageError } from '../errors.js';

export interface GenerationFlags {
  maxNewTokens?: string;
  temperature?: string;
  topK?: string;
  topP?: string;
  repetitionPenalty?: string;
  seed?: string;
  stop?: string[];
  ignoreEos?: boolean;
  threads?: string;
}

/** The sampling flags shared by generate, ask and serve. */
export function addGenerationOptions(cmd: Command): Command {
  return cmd
    .option('--max-new-tokens <n>', 'most tokens to generate (default 256, or what the context allows)')
    .option('--temperature <t>', '0 = greedy (default); > 0 samples')
    .option('--top-k <k>', 'sample from the k most likely tokens')
    .option('--top-p <p>', 'nucleus sampling threshold')
    .option('--repetition-penalty <p>', 'penalize tokens already present (> 1)')
    .option('--seed <n>', 'random seed for sampling')
    .addOption(new Option('--stop <text...>', 'stop before any of these strings'))
    .option('--ignore-eos', 'keep generating past the end-of-sequence token')
    .option('--threads <n>', 'CPU threads for inference');
}

function num(name: string, v: string | undefined, check: (x: number) => boolean, what: string): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || !check(x)) throw new UsageError(`--${name} must be ${what}, got ${JSON.stringify(v)}`);
  return x;
}

export function parseGenerationFlags(f: GenerationFlags): GenerateOptions & { threads?: number } {
  return {
    maxNewTokens: num('max-new-tokens', f.maxNewTokens, (x) => Number.isInteger(x) && x >= 1, 'a positive integer'),
    temperature: num('temperature', f.temperature, (x) => x >= 0, 'a number >= 0') ?? 0,
    topK: num('top-k', f.topK, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    topP: num('top-p', f.topP, (x) => x > 0 && x <= 1, 'in (0, 1]'),
    repetitionPenalty: num('repetition-penalty', f.repetitionPenalty, (x) => x > 0, 'a number > 0'),
    seed: num('seed', f.seed, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32, 'an integer in [0, 2^32)'),
    stop: f.stop,
    ignoreEos: f.ignoreEos,
    threads: num('threads', f.threads, (x) => Number.isInteger(x) && x >= 1, 'a positive integer'),
  };
}
