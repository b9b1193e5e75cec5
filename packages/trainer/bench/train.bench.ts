/**
 * `pnpm bench:train`: step time and tokens/s of stage 1 (projector only) and LoRA stage 2 on
 * a small MobiLlama-V (random weights: CLIP ViT 256-wide 224px/14 with 256 patches, decoder
 * 512-wide 4 layers with one shared FFN, 32000 vocabulary), beside the same model, batch and
 * step in PyTorch on the CPU (Debian python3-torch, run from here when /usr/bin/python3 has it).
 *
 * Not a test: it prints a table. Environment: BENCH_STEPS (default 6; the first 2 are warm-up),
 * BENCH_TORCH_STEPS (default 2; the first is warm-up: Debian's torch is slow, see the README),
 * BENCH_THREADS (default 2), BENCH_BATCH (default 4).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { GraphBuilder, createSession, exportOnnx, writeSafetensors, type HostTensor } from '@mobillama/core';
import { writeRandomDecoderCheckpoint } from '@mobillama/decoder/testing';
import { LlavaDataset, Rng, loadSample, loadTrainModel, resolveConfig, train, type Stage, type StepRecord, type TrainConfigInput } from '../src/index.js';

const STEPS = Number(process.env.BENCH_STEPS ?? 6);
const WARMUP = 2;
const TORCH_STEPS = Number(process.env.BENCH_TORCH_STEPS ?? 2);
const THREADS = Number(process.env.BENCH_THREADS ?? 2);
const BATCH = Number(process.env.BENCH_BATCH ?? 4);
const SAMPLES = 16;
const LORA = { r: 64, alpha: 128 };
const PY = '/usr/bin/python3';
const TORCH_SCRIPT = fileURLToPath(new URL('./train_torch.py', import.meta.url));

const VISION = { hidden: 256, layers: 4, heads: 4, intermediate: 1024, image: 224, patch: 14 };
const DECODER = { hidden: 512, layers: 4, heads: 8, kvHeads: 8, intermediate: 1408, vocab: 32000 } as const;

// ---- model files -----------------------------------------------------------------------

function randn(rng: Rng, n: number, std: number, mean = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rng.next(), 1e-12), v = rng.next();
    out[i] = mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

async function writeClipVision(dir: string): Promise<void> {
  const { hidden: D, layers, heads, intermediate: I, image: S, patch: P } = VISION;
  const rng = Rng.seeded(1, 'bench-clip');
  const t = (shape: number[], std: number, mean = 0): HostTensor => ({ dtype: 'F32', shape, data: randn(rng, shape.reduce((a, b) => a * b, 1), std, mean) });
  const w: Record<string, HostTensor> = {};
  const p = 'vision_model.';
  w[`${p}embeddings.class_embedding`] = t([D], 0.02);
  w[`${p}embeddings.patch_embedding.weight`] = t([D, 3, P, P], 0.02);
  w[`${p}embeddings.position_embedding.weight`] = t([(S / P) ** 2 + 1, D], 0.02);
  w[`${p}pre_layrnorm.weight`] = t([D], 0.02, 1);
  w[`${p}pre_layrnorm.bias`] = t([D], 0.02);
  for (let i = 0; i < layers; i++) {
    const l = `${p}encoder.layers.${i}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      w[`${l}self_attn.${n}.weight`] = t([D, D], 0.02);
      w[`${l}self_attn.${n}.bias`] = t([D], 0.02);
    }
    for (const n of ['layer_norm1', 'layer_norm2']) {
      w[`${l}${n}.weight`] = t([D], 0.02, 1);
      w[`${l}${n}.bias`] = t([D], 0.02);
    }
    w[`${l}mlp.fc1.weight`] = t([I, D], 0.02);
    w[`${l}mlp.fc1.bias`] = t([I], 0.02);
    w[`${l}mlp.fc2.weight`] = t([D, I], 0.02);
    w[`${l}mlp.fc2.bias`] = t([D], 0.02);
  }
  w[`${p}post_layernorm.weight`] = t([D], 0.02, 1);
  w[`${p}post_layernorm.bias`] = t([D], 0.02);
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'model.safetensors'), w, { format: 'pt' });
  await writeFile(join(dir, 'config.json'), JSON.stringify({
    model_type: 'clip_vision_model', architectures: ['CLIPVisionModel'], hidden_size: D, intermediate_size: I, num_hidden_layers: layers,
    num_attention_heads: heads, image_size: S, patch_size: P, num_channels: 3, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
  }, null, 2));
  await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({
    crop_size: { height: S, width: S }, do_center_crop: true, do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], resample: 3,
    rescale_factor: 1 / 255, size: { shortest_edge: S },
  }, null, 2));
}

/** torch.nn.Linear's default init, as a new LLaVA projector starts. */
async function writeProjector(path: string): Promise<void> {
  const rng = Rng.seeded(2, 'bench-projector');
  const lin = (o: number, i: number): [HostTensor, HostTensor] => [
    { dtype: 'F32', shape: [o, i], data: rng.uniform(new Float32Array(o * i), 1 / Math.sqrt(i)) },
    { dtype: 'F32', shape: [o], data: rng.uniform(new Float32Array(o), 1 / Math.sqrt(i)) },
  ];
  const [w0, b0] = lin(DECODER.hidden, VISION.hidden), [w2, b2] = lin(DECODER.hidden, DECODER.hidden);
  await writeSafetensors(path, {
    'model.mm_projector.0.weight': w0, 'model.mm_projector.0.bias': b0, 'model.mm_projector.2.weight': w2, 'model.mm_projector.2.bias': b2,
  }, { format: 'pt' });
}

// ---- data --------------------------------------------------------------------------------

const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A minimal RGB PNG (no dependency: sharp belongs to the vision package). */
function png(width: number, height: number, rgb: Uint8Array): Buffer {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) Buffer.from(rgb.buffer, rgb.byteOffset + y * width * 3, width * 3).copy(raw, y * (width * 3 + 1) + 1);
  const chunk = (type: string, data: Buffer) => {
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const len = Buffer.alloc(4), crc = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const WORDS = ['a', 'red', 'blue', 'green', 'circle', 'square', 'on', 'the', 'left', 'right', 'of', 'small', 'large', 'picture', 'shows', 'with', 'and', 'background', 'bright', 'dark'];

async function writeData(dir: string): Promise<void> {
  const rng = Rng.seeded(3, 'bench-data');
  const sentence = (n: number) => Array.from({ length: n }, () => WORDS[rng.int(WORDS.length)]).join(' ');
  await mkdir(join(dir, 'images'), { recursive: true });
  const pre: unknown[] = [], inst: unknown[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    // 256x192 photos: LLaVA-1.5 pads them to a square, then resizes to 224.
    const W = 256, H = 192, px = new Uint8Array(W * H * 3);
    for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) + (k % 7) * 31) & 255;
    await writeFile(join(dir, 'images', `${i}.png`), png(W, H, px));
    pre.push({ id: `p${i}`, image: `${i}.png`, conversations: [{ from: 'human', value: '<image>\nDescribe the image briefly.' }, { from: 'gpt', value: `${sentence(12)}.` }] });
    inst.push({ id: `s${i}`, image: `${i}.png`, conversations: [
      { from: 'human', value: `<image>\nWhat is ${sentence(6)}?` }, { from: 'gpt', value: `${sentence(30)}.` },
    ] });
  }
  await writeFile(join(dir, 'pretrain.json'), JSON.stringify(pre));
  await writeFile(join(dir, 'instruct.json'), JSON.stringify(inst));
}

/** The first micro-batch, as our data pipeline makes it, for the PyTorch side. */
async function writeBatch(dir: string, cfg: TrainConfigInput): Promise<void> {
  const model = await loadTrainModel(resolveConfig(cfg));
  const ds = await LlavaDataset.open(cfg.data);
  const c = resolveConfig(cfg);
  const t: Record<string, HostTensor> = {};
  const pixels: Float32Array[] = [];
  for (let b = 0; b < BATCH; b++) {
    const s = await loadSample(ds, b, { tokenizer: model.tokenizer, template: c.template, modelMaxLength: model.maxLength, imageFolder: c.imageFolder, preprocess: model.vision.config.preprocess, aspect: c.imageAspectRatio });
    t[`ids.${b}`] = { dtype: 'I64', shape: [s.ids.length], data: BigInt64Array.from(s.ids, BigInt) };
    t[`labels.${b}`] = { dtype: 'I64', shape: [s.labels.length], data: BigInt64Array.from(s.labels, BigInt) };
    pixels.push(s.pixels!);
  }
  const S = VISION.image, per = 3 * S * S;
  const pv = new Float32Array(BATCH * per);
  pixels.forEach((p, i) => pv.set(p, i * per));
  t.pixel_values = { dtype: 'F32', shape: [BATCH, 3, S, S], data: pv };
  await writeSafetensors(join(dir, 'batch.safetensors'), t);
  await ds.close();
  await model.close();
}

// ---- runs ----------------------------------------------------------------------------------

interface Timing { stepMs: number; tokPerS: number; firstLoss: number }

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function ours(cfg: TrainConfigInput): Promise<Timing> {
  const stamps: number[] = [];
  const recs: StepRecord[] = [];
  let t0 = performance.now();
  await train(cfg, {
    progress: { write: () => true },
    onStep: (r) => { const t = performance.now(); stamps.push(t - t0); t0 = t; recs.push(r); },
  });
  const timed = stamps.slice(WARMUP), tps = recs.slice(WARMUP).map((r) => r.tokens_per_s);
  return { stepMs: median(timed), tokPerS: median(tps), firstLoss: recs[0].loss };
}

function torchAvailable(): string | null {
  try {
    return execFileSync(PY, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Context for the ratio: one [1356, 512] x [512, 1408] fp32 MatMul (the FFN up-projection of the LoRA batch) in each engine. */
async function ortMatmulGflops(): Promise<number> {
  const M = 1356, K = 512, N = 1408;
  const g = new GraphBuilder('mm');
  const a = g.input('a', 'float32', [M, K]), b = g.input('b', 'float32', [K, N]);
  g.output(g.matmul(a, b), 'c');
  const s = await createSession(exportOnnx(g.build()), { threads: THREADS });
  const feeds = { a: { dtype: 'float32' as const, dims: [M, K], data: new Float32Array(M * K).fill(0.5) }, b: { dtype: 'float32' as const, dims: [K, N], data: new Float32Array(K * N).fill(0.25) } };
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < 10; i++) { const t = performance.now(); await s.run(feeds); times.push(performance.now() - t); }
  await s.release();
  return (2 * M * K * N) / (median(times) / 1000) / 1e9;
}

function torchMatmulGflops(): number {
  const code = `import torch, time
torch.set_num_threads(${THREADS})
a = torch.randn(1356, 512); b = torch.randn(512, 1408)
for _ in range(2): a @ b
ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(2 * 1356 * 512 * 1408 / sorted(ts)[2] / 1e9)`;
  return Number(execFileSync(PY, ['-c', code], { encoding: 'utf8' }).trim());
}

function torchRun(dir: string, stage: Stage): Record<string, Timing> {
  const args = [TORCH_SCRIPT, dir, stage, String(TORCH_STEPS), String(THREADS), String(LORA.r), String(LORA.alpha)];
  const r = spawnSync(PY, args, { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`PyTorch bench failed: ${r.stderr.split('\n').slice(-3).join(' ')}`);
  const out: Record<string, Timing> = {};
  for (const line of r.stdout.trim().split('\n')) {
    const j = JSON.parse(line) as { variant: string; step_ms: number[]; tokens: number; loss_first: number };
    const ms = median(j.step_ms.length > 1 ? j.step_ms.slice(1) : j.step_ms);
    out[j.variant] = { stepMs: ms, tokPerS: j.tokens / (ms / 1000), firstLoss: j.loss_first };
  }
  return out;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-train-'));
  try {
    process.stdout.write(`bench:train: writing a small MobiLlama-V into ${dir} …\n`);
    await writeRandomDecoderCheckpoint(join(dir, 'decoder'), {
      ...DECODER, ffnLayout: 'once', format: 'safetensors', dtype: 'F32', seed: 1,
    });
    await writeClipVision(join(dir, 'vision'));
    await writeProjector(join(dir, 'projector.safetensors'));
    await writeData(dir);
    const torch = torchAvailable();
    const rows: string[][] = [];
    const stages: { stage: Stage; data: string; extra: Partial<TrainConfigInput> }[] = [
      { stage: 'pretrain', data: 'pretrain.json', extra: { template: 'plain' } },
      { stage: 'lora', data: 'instruct.json', extra: { loraR: LORA.r, loraAlpha: LORA.alpha } },
    ];
    for (const { stage, data, extra } of stages) {
      const cfg: TrainConfigInput = {
        stage, vision: join(dir, 'vision'), decoder: join(dir, 'decoder'), projector: join(dir, 'projector.safetensors'),
        data: join(dir, data), imageFolder: join(dir, 'images'), output: join(dir, `out-${stage}`), batchSize: BATCH, maxSteps: STEPS,
        saveSteps: 0, shuffle: false, lrScheduler: 'constant', warmupRatio: 0, threads: THREADS, ...extra,
      };
      const o = await ours(cfg);
      process.stdout.write(`${stage}: ours ${o.stepMs.toFixed(0)} ms/step${torch ? '; PyTorch running …' : ''}\n`);
      rows.push([stage, 'ours (ORT + JS AdamW)', o.stepMs.toFixed(0), o.tokPerS.toFixed(0), o.firstLoss.toFixed(4), '']);
      if (torch) {
        await writeBatch(dir, cfg);
        const t = torchRun(dir, stage);
        for (const [variant, label] of [['hf', 'PyTorch, HF loss (all logits)'], ['targets', 'PyTorch, logits at targets']] as const) {
          const x = t[variant];
          rows.push([stage, label, x.stepMs.toFixed(0), x.tokPerS.toFixed(0), x.firstLoss.toFixed(4), (x.stepMs / o.stepMs).toFixed(2)]);
        }
      }
    }
    const head = ['stage', 'engine', 'ms/step', 'tokens/s', 'loss step 1', 'torch/ours time'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
    process.stdout.write(`\nbatch ${BATCH} × (image 224/14 = 256 patch tokens + text), ${THREADS} threads, median of steps ${WARMUP + 1}..${STEPS} (PyTorch: of steps 2..${TORCH_STEPS})\n`);
    process.stdout.write(`vision ${VISION.hidden}w×${VISION.layers}L, decoder ${DECODER.hidden}w×${DECODER.layers}L (shared FFN ${DECODER.intermediate}), vocab ${DECODER.vocab}, LoRA r${LORA.r}/α${LORA.alpha}\n\n`);
    process.stdout.write(`${line(head)}\n| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |\n${rows.map(line).join('\n')}\n`);
    if (!torch) process.stdout.write(`\nPyTorch is unavailable (${PY} cannot import torch; apt-get install python3-torch): only our numbers.\n`);
    else {
      process.stdout.write(`\nPyTorch ${torch}. Our step includes data loading (overlapped), the JS AdamW pass and feeding the params; PyTorch's is forward + backward + AdamW on a preloaded batch.\n`);
      process.stdout.write(`fp32 MatMul [1356x512]·[512x1408], ${THREADS} threads: ORT ${(await ortMatmulGflops()).toFixed(1)} GFLOP/s, PyTorch ${torchMatmulGflops().toFixed(1)} GFLOP/s (its BLAS decides most of the ratio).\n`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
