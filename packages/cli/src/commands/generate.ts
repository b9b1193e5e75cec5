import type { Command } from 'commander';
import { TextGenerator } from '@mobillama/decoder';
import { UsageError } from '../errors.js';
import { addGenerationOptions, parseGenerationFlags, type GenerationFlags } from './generation-options.js';
import { quantizeFlag } from './model-options.js';

interface GenerateFlags extends GenerationFlags {
  decoder: string;
  prompt?: string;
  promptIds?: string;
  json?: boolean;
  quantize?: string;
}

export function parsePromptIds(s: string): number[] {
  const ids = s.split(',').map((x) => x.trim());
  if (ids.some((x) => !/^\d+$/.test(x))) throw new UsageError(`--prompt-ids must be comma-separated token ids, got ${JSON.stringify(s)}`);
  return ids.map(Number);
}

export function registerGenerate(program: Command): void {
  addGenerationOptions(
    program
      .command('generate')
      .description('continue a text prompt with a decoder checkpoint')
      .requiredOption('--decoder <dir>', 'Hugging Face LLaMA/MobiLlama folder')
      .option('--prompt <text>', 'prompt text (BOS added as the tokenizer config says)')
      .option('--prompt-ids <ids>', 'prompt token ids, comma-separated, taken as is')
      .option('--json', 'print {"tokens":[...],"text":"...","timings":{...}}')
      .option('--quantize <q8|q4>', 'quantize float weights at load (q4: 4-bit MatMulNBits, q8: int8 DynamicQuantizeMatMul)'),
  ).action(async (flags: GenerateFlags) => {
    if ((flags.prompt === undefined) === (flags.promptIds === undefined)) throw new UsageError('give exactly one of --prompt and --prompt-ids');
    const { threads, ...genOpts } = parseGenerationFlags(flags);
    const gen = await TextGenerator.fromPretrained(flags.decoder, { threads, quantize: quantizeFlag(flags.quantize) });
    try {
      const ids = flags.promptIds !== undefined ? parsePromptIds(flags.promptIds) : gen.encode(flags.prompt!);
      const stream = gen.stream(ids, genOpts);
      let r = await stream.next();
      while (!r.done) {
        if (!flags.json && r.value.text) process.stdout.write(r.value.text);
        r = await stream.next();
      }
      const { tokens, text, finishReason, timings } = r.value;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({
          tokens, text, finish_reason: finishReason,
          timings: {
            prompt_tokens: timings.promptTokens, prefill_tok_s: round(timings.prefillTokS),
            decode_tok_s: round(timings.decodeTokS), ttft_ms: round(timings.ttftMs),
          },
        })}\n`);
      } else process.stdout.write('\n');
    } finally {
      await gen.dispose();
    }
  });
}

const round = (x: number) => Math.round(x * 100) / 100;
