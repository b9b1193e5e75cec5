/**
 * Fine-tune the projector of a MobiLlama-V on your own image-text pairs (LLaVA stage 1:
 * vision tower and decoder frozen, plain template), then ask the model with the new projector.
 *
 *   pnpm tsx examples/finetune-projector.ts [--data FILE] [--images DIR] [--out DIR] [--steps N]
 *
 * The pairs are a LLaVA JSON file: [{"id", "image", "conversations": [{"from": "human",
 * "value": "<image>"}, {"from": "gpt", "value": "the text"}]}], images relative to --images.
 * examples/pairs/ holds six. Starts from the shipped micro model's projector
 * (models/mobillama-v-micro; MOBILLAMA_MODEL picks another LLaVA-layout folder).
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MobiLlamaV } from '@mobillama/pipeline';
import { train } from '@mobillama/trainer';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const { values: args } = parseArgs({
  options: {
    data: { type: 'string', default: here('pairs/data.json') },
    images: { type: 'string', default: here('pairs/images') },
    out: { type: 'string' },
    steps: { type: 'string', default: '6' },
  },
});
const model = process.env.MOBILLAMA_MODEL ?? here('../models/mobillama-v-micro');
const out = args.out ?? await mkdtemp(join(tmpdir(), 'projector-'));

const result = await train({
  stage: 'pretrain',                      // projector only
  vision: join(model, 'clip'),            // the model's vision tower (mm_vision_tower)
  decoder: model,                         // the decoder's config and weights sit at the top of the folder
  projector: join(model, 'mm_projector.safetensors'), // start from the trained projector
  data: args.data!, imageFolder: args.images!, output: out,
  batchSize: 2, maxSteps: Number(args.steps), learningRate: 1e-4, saveSteps: 0, threads: 2,
}, { onStep: (s) => console.log(`step ${s.step}: loss ${s.loss.toFixed(4)}`), progress: { write: () => true } });
console.log(`trained ${result.params.map((p) => p.name).join(', ')}`);
console.log(`new projector: ${join(out, 'mm_projector.safetensors')}`);

// The same model with the new projector.
const m = await MobiLlamaV.load({ model, projector: join(out, 'mm_projector.safetensors'), threads: 2 });
try {
  const { text } = await m.answer({ image: here('images/red-circle.png'), question: 'What color is the circle?' });
  console.log(`Q: What color is the circle?\nA: ${text}`);
} finally {
  await m.dispose();
}
