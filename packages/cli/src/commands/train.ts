import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { train, type TrainConfigInput } from '@mobillama/trainer';
import { UsageError } from '../errors.js';

type Kind = 'string' | 'number' | 'int' | 'bool' | readonly string[];

/** Every train flag: its name (also its key in --config JSON), the TrainConfig field, the value kind, help. */
const FLAGS: readonly { flag: string; key: keyof TrainConfigInput; kind: Kind; help: string; arg?: string }[] = [
  { flag: 'stage', key: 'stage', kind: ['pretrain', 'finetune', 'lora'], help: 'pretrain (projector), finetune (projector + decoder), lora (projector + LoRA adapters)' },
  { flag: 'vision', key: 'vision', kind: 'string', help: 'CLIP vision tower folder', arg: 'dir' },
  { flag: 'decoder', key: 'decoder', kind: 'string', help: 'MobiLlama/LLaMA decoder folder (config, weights, tokenizer)', arg: 'dir' },
  { flag: 'projector', key: 'projector', kind: 'string', help: 'projector to start from (mm_projector.bin/.safetensors); default: a new one from --seed', arg: 'file' },
  { flag: 'projector-type', key: 'projectorType', kind: 'string', help: 'type of a new projector (default mlp2x_gelu)' },
  { flag: 'data', key: 'data', kind: 'string', help: 'LLaVA JSON (or JSON Lines) training data', arg: 'file' },
  { flag: 'image-folder', key: 'imageFolder', kind: 'string', help: 'folder the data\'s image paths are relative to', arg: 'dir' },
  { flag: 'eval-data', key: 'evalData', kind: 'string', help: 'LLaVA JSON evaluated every --eval-steps and at the end', arg: 'file' },
  { flag: 'output', key: 'output', kind: 'string', help: 'output folder: checkpoints, model files, log.jsonl, loss.svg', arg: 'dir' },
  { flag: 'template', key: 'template', kind: ['plain', 'vicuna_v1'], help: 'conversation template (default plain for pretrain, vicuna_v1 otherwise)' },
  { flag: 'independent-turns', key: 'independentTurns', kind: 'bool', help: 'train each question/answer round alone with the image (prefix and image computed once; vicuna_v1)' },
  { flag: 'tune-vision', key: 'tuneVision', kind: 'bool', help: 'train the vision tower too' },
  { flag: 'vision-learning-rate', key: 'visionLearningRate', kind: 'number', help: 'the vision tower\'s peak learning rate with --tune-vision (LLaVA\'s mm_vision_tower_lr; default: --learning-rate)', arg: 'lr' },
  { flag: 'lora-r', key: 'loraR', kind: 'int', help: 'LoRA rank (default 128)' },
  { flag: 'lora-alpha', key: 'loraAlpha', kind: 'number', help: 'LoRA alpha (default 256)' },
  { flag: 'learning-rate', key: 'learningRate', kind: 'number', help: 'peak learning rate (default 1e-3 pretrain, 2e-5 finetune, 2e-4 lora)', arg: 'lr' },
  { flag: 'lr-scheduler', key: 'lrScheduler', kind: ['cosine', 'linear', 'constant'], help: 'schedule after warmup (default cosine)' },
  { flag: 'warmup-ratio', key: 'warmupRatio', kind: 'number', help: 'warmup steps as a fraction of all steps (default 0.03)' },
  { flag: 'warmup-steps', key: 'warmupSteps', kind: 'int', help: 'warmup steps (wins over --warmup-ratio when > 0)' },
  { flag: 'weight-decay', key: 'weightDecay', kind: 'number', help: 'AdamW decoupled weight decay (default 0; not on biases and norms)' },
  { flag: 'adam-beta1', key: 'adamBeta1', kind: 'number', help: 'default 0.9' },
  { flag: 'adam-beta2', key: 'adamBeta2', kind: 'number', help: 'default 0.999' },
  { flag: 'adam-epsilon', key: 'adamEpsilon', kind: 'number', help: 'default 1e-8' },
  { flag: 'max-grad-norm', key: 'maxGradNorm', kind: 'number', help: 'global gradient-norm clipping, 0 disables (default 1)' },
  { flag: 'gradient-accumulation-steps', key: 'gradientAccumulationSteps', kind: 'int', help: 'micro-batches per optimizer step (default 1)' },
  { flag: 'batch-size', key: 'batchSize', kind: 'int', help: 'samples per micro-batch (default 1)' },
  { flag: 'epochs', key: 'epochs', kind: 'number', help: 'passes over the data (default 1)' },
  { flag: 'max-steps', key: 'maxSteps', kind: 'int', help: 'optimizer steps; wins over --epochs when > 0' },
  { flag: 'seed', key: 'seed', kind: 'int', help: 'seed for data order and new weights (default 42)' },
  { flag: 'shuffle', key: 'shuffle', kind: 'bool', help: '' },
  { flag: 'save-steps', key: 'saveSteps', kind: 'int', help: 'checkpoint every N optimizer steps, 0 = only at the end (default 500)' },
  { flag: 'save-total-limit', key: 'saveTotalLimit', kind: 'int', help: 'keep only the newest N checkpoints, 0 = all (default 0)' },
  { flag: 'eval-steps', key: 'evalSteps', kind: 'int', help: 'eval every N optimizer steps, 0 = only at the end' },
  { flag: 'model-max-length', key: 'modelMaxLength', kind: 'int', help: 'cut spliced sequences to this length (default: the decoder\'s max positions)' },
  { flag: 'image-aspect-ratio', key: 'imageAspectRatio', kind: ['pad', 'crop'], help: 'pad to square (LLaVA-1.5, default) or centre crop' },
  { flag: 'vision-select-layer', key: 'visionSelectLayer', kind: 'int', help: 'hidden state fed to the projector (default -2)' },
  { flag: 'vision-select-feature', key: 'visionSelectFeature', kind: ['patch', 'cls_patch'], help: 'default patch' },
  { flag: 'threads', key: 'threads', kind: 'int', help: 'CPU threads for ONNX Runtime (default: all cores)' },
  { flag: 'resume', key: 'resume', kind: 'bool', help: 'continue from the newest checkpoint in --output' },
];

const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** "learning_rate", "learningRate" and "learning-rate" are the same key. */
function kebab(key: string): string {
  return key.replace(/_/g, '-').replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

function convert(flag: string, kind: Kind, v: unknown): unknown {
  if (kind === 'bool') {
    if (typeof v === 'boolean') return v;
    throw new UsageError(`--${flag} must be true or false in --config, got ${JSON.stringify(v)}`);
  }
  if (kind === 'string') {
    if (typeof v === 'string' && v !== '') return v;
    throw new UsageError(`--${flag} must be a non-empty string, got ${JSON.stringify(v)}`);
  }
  if (Array.isArray(kind)) {
    if (typeof v === 'string' && kind.includes(v)) return v;
    throw new UsageError(`--${flag} must be one of ${kind.join(', ')}, got ${JSON.stringify(v)}`);
  }
  const x = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(x) || (kind === 'int' && !Number.isInteger(x))) {
    throw new UsageError(`--${flag} must be ${kind === 'int' ? 'an integer' : 'a number'}, got ${JSON.stringify(v)}`);
  }
  return x;
}

async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read --config ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--config ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new UsageError(`--config ${path} must hold a JSON object`);
  const out: Record<string, unknown> = {};
  const known = new Set(FLAGS.map((f) => f.flag));
  for (const [k, v] of Object.entries(json)) {
    let key = kebab(k), val = v;
    if (key === 'no-shuffle') { key = 'shuffle'; val = typeof v === 'boolean' ? !v : v; }
    if (!known.has(key)) throw new UsageError(`--config ${path}: unknown key ${JSON.stringify(k)}`);
    out[key] = val;
  }
  return out;
}

/** Flags given on the command line win over --config; both over the trainer's defaults. */
export async function trainInputFrom(opts: Record<string, unknown>, cmd: Command): Promise<TrainConfigInput> {
  const file = typeof opts.config === 'string' ? await readConfigFile(opts.config) : {};
  const input: Record<string, unknown> = {};
  for (const f of FLAGS) {
    const name = camel(f.flag);
    const fromCli = cmd.getOptionValueSource(name) === 'cli';
    const v = fromCli ? opts[name] : file[f.flag];
    if (v === undefined) continue;
    input[f.key] = fromCli && f.kind === 'bool' ? v : convert(f.flag, f.kind, v);
  }
  for (const req of ['stage', 'vision', 'decoder', 'data', 'output'] as const) {
    if (input[req] === undefined) throw new UsageError(`--${req} is required (on the command line or in --config)`);
  }
  return input as unknown as TrainConfigInput;
}

export function registerTrain(program: Command): void {
  const cmd = program
    .command('train')
    .description('train a MobiLlama-V model LLaVA-style (stage 1 projector, stage 2 finetune or LoRA)')
    .option('--config <file>', 'JSON with any of these flags as keys ("learning-rate": 2e-5, …); flags given here win');
  for (const f of FLAGS) {
    if (f.flag === 'shuffle') {
      cmd.option('--no-shuffle', 'keep the data order (default: a seeded shuffle per epoch)');
      continue;
    }
    if (f.kind === 'bool') cmd.option(`--${f.flag}`, f.help);
    else if (Array.isArray(f.kind)) cmd.addOption(new Option(`--${f.flag} <${f.flag === 'stage' ? 'stage' : 'name'}>`, f.help));
    else cmd.option(`--${f.flag} <${f.arg ?? (f.kind === 'string' ? 'value' : 'n')}>`, f.help);
  }
  cmd.action(async (opts: Record<string, unknown>, command: Command) => {
    const input = await trainInputFrom(opts, command);
    const r = await train(input);
    const last = r.records[r.records.length - 1];
    process.stdout.write(`${JSON.stringify({ steps: r.steps, loss: last?.loss ?? null, output: r.config.output, resumed_from: r.resumedFrom })}\n`);
  });
}
