/**
 * Generates a small random MobiLlama-V in the LLaVA layout, for the Quick start until the
 * trained micro model ships: a random MobiLlama decoder (real LLaMA vocabulary, one shared
 * FFN), the tiny CLIP test tower, and a random mlp2x_gelu projector. Its answers are noise;
 * every step that produces them (image preprocessing, CLIP, projector, splice, decoder,
 * tokenizer) is the real one.
 *
 *   tsx scripts/make-demo-model.ts [DIR]   (default .tmp/demo-model; kept if already there)
 */
import { cp, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic, writeSafetensors } from '@mobillama/core';
import { writeRandomDecoderCheckpoint } from '@mobillama/decoder/testing';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dir = resolve(process.argv[2] ?? join(ROOT, '.tmp/demo-model'));

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

if (await exists(join(dir, 'config.json'))) {
  process.stderr.write(`demo model already at ${dir}\n`);
} else {
  const tmp = `${dir}.partial`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(dirname(dir), { recursive: true });
  await writeRandomDecoderCheckpoint(tmp, {
    hidden: 64, layers: 2, heads: 4, kvHeads: 4, intermediate: 128, vocab: 32000,
    ffnLayout: 'per-layer-copies', format: 'safetensors', dtype: 'F32', seed: 0, maxPositions: 512,
  });
  await cp(join(ROOT, 'packages/vision/fixtures/clip-tiny'), join(tmp, 'vision_tower'), {
    recursive: true, filter: (src) => !src.endsWith('golden.safetensors'),
  });
  // Random projector 32 → 64 → 64 with a fixed sequence (no Math.random: reproducible).
  let s = 12345;
  const rand = (n: number, scale: number) => Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
  await writeSafetensors(join(tmp, 'mm_projector.safetensors'), {
    'model.mm_projector.0.weight': { dtype: 'F32', shape: [64, 32], data: rand(64 * 32, 0.2) },
    'model.mm_projector.0.bias': { dtype: 'F32', shape: [64], data: rand(64, 0.02) },
    'model.mm_projector.2.weight': { dtype: 'F32', shape: [64, 64], data: rand(64 * 64, 0.1) },
    'model.mm_projector.2.bias': { dtype: 'F32', shape: [64], data: rand(64, 0.02) },
  });
  const config = JSON.parse(await readFile(join(tmp, 'config.json'), 'utf8')) as Record<string, unknown>;
  Object.assign(config, {
    architectures: ['LlavaLlamaForCausalLM'],
    mm_vision_tower: 'vision_tower', mm_projector_type: 'mlp2x_gelu', mm_hidden_size: 32,
    mm_vision_select_layer: -2, mm_vision_select_feature: 'patch', image_aspect_ratio: 'pad',
    conv_template: 'vicuna_v1',
  });
  await writeFileAtomic(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await rename(tmp, dir);
  process.stderr.write(`wrote a random demo model to ${dir}\n`);
}
