import type { Command } from 'commander';
import { openWeights } from '@mobillama/core';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('list the tensors of a weight file or checkpoint folder')
    .argument('<path>', '.safetensors, .bin, *.index.json, or a checkpoint folder')
    .option('--json', 'print {"tensors":[{"name","dtype","shape"}]}')
    .action(async (path: string, opts: { json?: boolean }) => {
      const src = await openWeights(path);
      try {
        const tensors = src.names().map((name) => {
          const i = src.info(name);
          return { name, dtype: i.dtype, shape: [...i.shape] };
        });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ tensors })}\n`);
          return;
        }
        const width = Math.max(4, ...tensors.map((t) => t.name.length));
        let params = 0;
        const lines = tensors.map((t) => {
          params += t.shape.reduce((p, d) => p * d, 1);
          return `${t.name.padEnd(width)}  ${t.dtype.padEnd(4)}  [${t.shape.join(', ')}]`;
        });
        process.stdout.write(`${lines.join('\n')}\n${tensors.length} tensors, ${params.toLocaleString('en-US')} parameters\n`);
      } finally {
        await src.close();
      }
    });
}
