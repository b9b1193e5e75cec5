import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { MobiLlamaV, type AnswerResult, type ChatMessage } from '@mobillama/pipeline';
import { addGenerationOptions, parseGenerationFlags, type GenerationFlags } from './generation-options.js';
import { addModelOptions, modelOptionsFrom, type ModelFlags } from './model-options.js';
import { UsageError } from '../errors.js';

interface AskFlags extends GenerationFlags, ModelFlags {
  image?: string;
  json?: boolean;
  chat?: boolean;
}

function jsonResult(r: AnswerResult): string {
  const t = r.timings;
  const round = (x: number) => Math.round(x * 100) / 100;
  return JSON.stringify({
    answer: r.text, tokens: r.tokens, finish_reason: r.finishReason,
    usage: { prompt_tokens: r.usage.promptTokens, completion_tokens: r.usage.completionTokens },
    timings: { prompt_tokens: t.promptTokens, prefill_tok_s: round(t.prefillTokS), decode_tok_s: round(t.decodeTokS), ttft_ms: round(t.ttftMs) },
  });
}

export function registerAsk(program: Command): void {
  addGenerationOptions(addModelOptions(
    program
      .command('ask')
      .description('ask a question about an image (streams the answer)')
      .argument('[question]', 'the question; with --chat, more questions are read from stdin')
      .option('--image <file>', 'the image (jpeg, png, webp, gif, tiff, avif)')
      .option('--json', 'print {"answer","tokens","finish_reason","usage","timings"} (one line per turn with --chat)')
      .option('--chat', 'multi-turn: keep asking about the same image, one question per line on stdin'),
  )).action(async (question: string | undefined, flags: AskFlags) => {
    if (!flags.chat && !question) throw new UsageError('give a question, e.g. mobillama-v ask --image photo.jpg "What is in the image?"');
    const { threads, ...gen } = parseGenerationFlags(flags);
    const model = await MobiLlamaV.load(modelOptionsFrom(flags, threads));
    const messages: ChatMessage[] = [];
    // Fail on a missing or corrupt image before reading any chat input.
    if (flags.image) await model.vision.preprocess(flags.image);
    const turn = async (q: string) => {
      messages.push({ role: 'user', content: q, ...(messages.length === 0 && flags.image ? { image: flags.image } : {}) });
      const it = model.stream({ ...gen, messages });
      let r = await it.next();
      while (!r.done) {
        if (!flags.json) process.stdout.write(r.value.text);
        r = await it.next();
      }
      process.stdout.write(flags.json ? `${jsonResult(r.value)}\n` : '\n');
      messages.push({ role: 'assistant', content: r.value.text });
    };
    try {
      if (question) await turn(question);
      if (flags.chat) {
        const rl = createInterface({ input: process.stdin, terminal: false });
        const tty = process.stdin.isTTY && process.stdout.isTTY;
        if (tty) process.stdout.write('> ');
        for await (const line of rl) {
          const q = line.trim();
          if (q === 'exit' || q === 'quit') break;
          if (q) await turn(q);
          if (tty) process.stdout.write('> ');
        }
      }
    } finally {
      await model.dispose();
    }
  });
}
