import { Command, CommanderError } from 'commander';
import { registerInspect } from './commands/inspect.js';
import { registerGenerate } from './commands/generate.js';
import { registerAsk } from './commands/ask.js';
import { registerScore } from './commands/score.js';
import { registerClassify } from './commands/classify.js';
import { registerExport } from './commands/export.js';
import { registerServe } from './commands/serve.js';
import { registerData } from './commands/data.js';
import { registerTrain } from './commands/train.js';
import { registerEval } from './commands/eval.js';
import { registerQuantize } from './commands/quantize.js';
import { exitCodeFor, oneLine } from './errors.js';

const program = new Command();
program
  .name('mobillama-v')
  .description('Run, fine-tune and serve MobiLlama-V vision-language models on the CPU, offline.')
  .version('0.1.0')
  .showHelpAfterError(false)
  .exitOverride();

registerInspect(program);
registerGenerate(program);
registerAsk(program);
registerScore(program);
registerClassify(program);
registerExport(program);
registerServe(program);
registerData(program);
registerTrain(program);
registerEval(program);
registerQuantize(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander already printed help/version/usage errors.
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`mobillama-v: ${oneLine(e)}\n`);
    if (process.env.DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = exitCodeFor(e);
  }
}
