import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { GGUF_EXPORT_TYPES, exportDecoderToGguf, type GgufExportType } from '@mobillama/decoder/gguf';
import { UsageError } from '../errors.js';

interface ExportGgufFlags {
  decoder: string;
  out: string;
  type: string;
  name?: string;
  json?: boolean;
}

function isExportType(t: string): t is GgufExportType {
  return (GGUF_EXPORT_TYPES as readonly string[]).includes(t);
}

export function registerExport(program: Command): void {
  const exp = program.command('export').description('write a model in another runtime\'s format');
  exp
    .command('gguf')
    .description('the decoder as a llama-architecture GGUF for llama.cpp / Ollama (the shared FFN is written into every layer)')
    .requiredOption('--decoder <dir>', 'Hugging Face LLaMA/MobiLlama folder')
    .requiredOption('--out <file>', 'the .gguf file to write (replaced atomically)')
    .option('--type <type>', `2-D weight type: ${GGUF_EXPORT_TYPES.join('|')} (norms stay f32)`, 'f16')
    .option('--name <name>', 'general.name (default: the folder name)')
    .option('--json', 'print {"path","bytes","type","tensors","ffn_copies","vocab":{...}}')
    .action(async (flags: ExportGgufFlags) => {
      if (!isExportType(flags.type)) throw new UsageError(`--type must be one of ${GGUF_EXPORT_TYPES.join(', ')}, got ${JSON.stringify(flags.type)}`);
      const out = resolve(flags.out);
      if (!existsSync(dirname(out))) throw new UsageError(`--out: folder ${dirname(out)} does not exist`);
      if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out: ${out} is a folder; give a file name`);
      if (!existsSync(flags.decoder)) throw new UsageError(`--decoder: ${flags.decoder} does not exist`);
      const tty = process.stderr.isTTY;
      const r = await exportDecoderToGguf(flags.decoder, out, {
        type: flags.type,
        name: flags.name,
        onProgress: tty ? (i, n, name) => process.stderr.write(`\r[${i + 1}/${n}] ${name}`.padEnd(60)) : undefined,
      });
      if (tty) process.stderr.write('\n');
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({
          path: r.path, bytes: r.bytes, type: r.type, tensors: r.tensors, ffn_copies: r.ffnCopies,
          vocab: { size: r.vocab.size, source: r.vocab.source, scores_from: r.vocab.scoresFrom, padded: r.vocab.padded },
        })}\n`);
        return;
      }
      const ffn = r.ffnCopies ? `; shared FFN copied into ${r.ffnCopies} more layer(s)` : '';
      process.stdout.write(`wrote ${r.path}: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.type}, ${r.tensors} tensors, ${r.vocab.size} tokens (${r.vocab.source})${ffn}\n`);
    });
}
