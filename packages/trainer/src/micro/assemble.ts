/**
 * Puts a trained micro MobiLlama-V together in the LLaVA layout: config.json (the decoder's
 * LLaMA config plus LLaVA's mm_* fields and a conv_template), model.safetensors (decoder),
 * mm_projector.safetensors, and the whole CLIPModel (both towers, tokenizer, preprocessor
 * config) under clip/, named as the vision tower by `mm_vision_tower: "clip"`, and the
 * LLaMA tokenizer the decoder was trained with (`tokenizer.model`, `tokenizer_config.json`),
 * so the folder loads without our bundled fallback (HF's LlamaTokenizer reads the same
 * files). Float weights are stored as fp16.
 */
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { float32ToF16, openSafetensors, toFloat32, writeFileAtomic, writeSafetensors, type HostTensor } from '@mobillama/core';
import { llamaTokenizerConfig, writeLlamaTokenizerFiles } from '@mobillama/decoder';

/** Every tensor of a safetensors file as F16 (integer tensors unchanged). */
export async function safetensorsToF16(src: string, dst: string, rename: (k: string) => string = (k) => k): Promise<void> {
  const f = await openSafetensors(src);
  try {
    const out: Record<string, HostTensor> = {};
    for (const n of f.names()) {
      const t = await f.read(n);
      out[rename(n)] = t.dtype === 'F32' || t.dtype === 'BF16' || t.dtype === 'F16'
        ? { dtype: 'F16', shape: t.shape, data: float32ToF16(toFloat32(t).data as Float32Array) }
        : t;
    }
    await writeSafetensors(dst, out, { format: 'pt' });
  } finally {
    await f.close();
  }
}

export interface AssembleOptions {
  /** Trained decoder folder (config.json + model.safetensors). */
  readonly decoder: string;
  /** mm_projector.safetensors from the trainer. */
  readonly projector: string;
  /** Trained CLIPModel folder. */
  readonly clip: string;
  readonly out: string;
  readonly convTemplate: string;
  /** Extra fields for config.json (recipe notes). */
  readonly extra?: Record<string, unknown>;
}

export async function assembleMicroModel(o: AssembleOptions): Promise<void> {
  await mkdir(join(o.out, 'clip'), { recursive: true });
  await safetensorsToF16(join(o.decoder, 'model.safetensors'), join(o.out, 'model.safetensors'));
  await safetensorsToF16(o.projector, join(o.out, 'mm_projector.safetensors'));
  for (const f of await readdir(o.clip)) {
    if (f === 'model.safetensors') await safetensorsToF16(join(o.clip, f), join(o.out, 'clip', f));
    else if (f.endsWith('.json')) await copyFile(join(o.clip, f), join(o.out, 'clip', f));
  }
  const clipConfig = JSON.parse(await readFile(join(o.clip, 'config.json'), 'utf8')) as { vision_config: { hidden_size: number } };
  const clipCfgOut = { ...clipConfig, torch_dtype: 'float16' };
  await writeFileAtomic(join(o.out, 'clip', 'config.json'), `${JSON.stringify(clipCfgOut, null, 2)}\n`);
  const dec = JSON.parse(await readFile(join(o.decoder, 'config.json'), 'utf8')) as Record<string, unknown>;
  const config = {
    ...dec,
    architectures: ['LlavaLlamaForCausalLM'],
    torch_dtype: 'float16',
    mm_vision_tower: 'clip',
    mm_projector_type: 'mlp2x_gelu',
    mm_hidden_size: clipConfig.vision_config.hidden_size,
    mm_vision_select_layer: -2,
    mm_vision_select_feature: 'patch',
    mm_use_im_start_end: false,
    mm_use_im_patch_token: false,
    image_aspect_ratio: 'pad',
    tune_mm_mlp_adapter: false,
    conv_template: o.convTemplate,
    ...o.extra,
  };
  await writeFileAtomic(join(o.out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  // tokenizer.model only (500 KB; tokenizer.json would add 1.1 MB for the same vocabulary).
  await writeLlamaTokenizerFiles(o.out, { model: true, json: false, config: false });
  const tokCfg = { ...llamaTokenizerConfig(), model_max_length: dec.max_position_embeddings };
  await writeFileAtomic(join(o.out, 'tokenizer_config.json'), `${JSON.stringify(tokCfg, null, 2)}\n`);
}
