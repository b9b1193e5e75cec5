import { mkdtemp, readFile, writeFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openWeights, toFloat32, writeSafetensors, type HostTensor } from '@mobillama/core';
import { MobiLlamaV } from './mobillama-v.js';
import { resolveModel } from './resolve.js';

const TINY = fileURLToPath(new URL('../fixtures/tiny-llava/', import.meta.url));
const IMAGE = `${TINY}image.png`;
const PROMPT = [1, 289, 312, -200, 290, 13, 278, 272];
const CONT = [267, 263, 283, 306];

/** Rewrites tiny-llava in the llava-hf layout: one config with text/vision sections, prefixed keys, one file. */
async function toLlavaHf(dir: string): Promise<void> {
  const tensors: Record<string, HostTensor> = {};
  const dec = await openWeights(`${TINY}pytorch_model.bin`);
  for (const n of dec.names()) {
    if (n.includes('rotary_emb')) continue;
    const t = toFloat32(await dec.read(n));
    const m = /^model\.mm_projector\.(\d)\.(weight|bias)$/.exec(n);
    if (m) tensors[`multi_modal_projector.linear_${m[1] === '0' ? 1 : 2}.${m[2]}`] = t;
    else tensors[`language_model.${n}`] = t;
  }
  await dec.close();
  const vis = await openWeights(`${TINY}vision_tower`);
  for (const n of vis.names()) if (n.startsWith('vision_model.')) tensors[`vision_tower.${n}`] = toFloat32(await vis.read(n));
  await vis.close();
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const text = JSON.parse(await readFile(`${TINY}config.json`, 'utf8')) as Record<string, unknown>;
  const vision = JSON.parse(await readFile(`${TINY}vision_tower/config.json`, 'utf8')) as { vision_config: Record<string, unknown> };
  await writeFile(join(dir, 'config.json'), JSON.stringify({
    model_type: 'llava', architectures: ['LlavaForConditionalGeneration'], image_token_index: 32000,
    vision_feature_layer: -2, vision_feature_select_strategy: 'default', projector_hidden_act: 'gelu',
    text_config: { ...text, model_type: 'llama' }, vision_config: vision.vision_config,
  }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await cp(`${TINY}${f}`, join(dir, f));
  await cp(`${TINY}vision_tower/preprocessor_config.json`, join(dir, 'preprocessor_config.json'));
}

describe('model layouts', () => {
  it('llava-hf, LLaVA and component layouts of the same weights score identically', async () => {
    const hf = await mkdtemp(join(tmpdir(), 'llava-hf-'));
    await toLlavaHf(hf);
    expect((await resolveModel({ model: hf })).layout).toBe('llava-hf');
    const totals: number[] = [];
    for (const opts of [
      { model: TINY },
      { model: hf },
      { decoder: TINY, vision: `${TINY}vision_tower`, projector: `${TINY}pytorch_model.bin` },
    ]) {
      const m = await MobiLlamaV.load({ ...opts, threads: 1 });
      totals.push((await m.scoreContinuation({ image: IMAGE, promptIds: PROMPT, continuationIds: CONT })).total);
      await m.dispose();
    }
    expect(totals[1]).toBeCloseTo(totals[0], 4);
    expect(totals[2]).toBeCloseTo(totals[0], 4);
  });

  it('explains what is missing', async () => {
    await expect(resolveModel({ decoder: TINY })).rejects.toThrow(/--decoder DIR --vision DIR --projector FILE/);
    await expect(resolveModel({ model: '/no/such/model' })).rejects.toThrow(/does not exist/);
    const dir = await mkdtemp(join(tmpdir(), 'llava-'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llava', mm_vision_tower: 'openai/clip-vit-large-patch14-336' }));
    await expect(resolveModel({ model: dir })).rejects.toThrow(/not a local folder; pass --vision DIR/);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama' }));
    await expect(resolveModel({ model: dir })).rejects.toThrow(/describes no vision-language model/);
  });
});
