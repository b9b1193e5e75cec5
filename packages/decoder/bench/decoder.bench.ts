/**
 * Decoder benchmark at MobiLlama-0.5B dims with random fp32 weights in the published
 * layout (22 identical per-layer FFN copies, two torch .bin shards + index, config.json
 * claiming 4 KV heads while the weights are MHA).
 *
 *   pnpm bench:decoder [--threads 2] [--quick] [--skip-rss-analysis] [--out FILE] [--quantize f32,q8,q4]
 *
 * --quantize runs the generation once per weight format and adds a table comparing them,
 * each against its own bounds (bytes per weight plus the KV cache, the rate of its GEMM
 * kernel). q8/q4 load checkpoints written once by `mobillama-v quantize` (cached beside
 * the fp32 one; quantizing at load gives the same model).
 *
 * The checkpoint is generated once into benchmarks/.work/ and reused. Every model load
 * runs in a child process so its peak RSS (VmHWM) is its own. Measured numbers are set
 * against bounds measured here too: decode against weight bytes per token / memcpy
 * bandwidth, prefill against FLOPs / the rate of one ORT fp32 MatMul 512x2048x5632.
 * The markdown table goes to benchmarks/decoder.md (--quick: benchmarks/.work/) and stdout.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  GraphBuilder, createSession, exportOnnx, floatLinear, linearInto, memoryWeight, quantizedLinearFrom,
  type Graph, type Node as GraphNode, type QuantizeMode, type Value,
} from '@mobillama/core';
import { DECODER_IO, TextGenerator, attentionBias, buildDecoderGraph, loadDecoder, quantizeDecoderFolder } from '@mobillama/decoder';
// Diagnostics build sessions with options core does not expose (prepacking off), so they
// reach into core's runtime module directly; nothing else in the repo should.
import { ort } from '../../core/src/runtime/ort.js';
import { sessionOptions } from '../../core/src/runtime/session.js';

type Tensor = InstanceType<typeof ort.Tensor>;
type InferenceSession = Awaited<ReturnType<typeof ort.InferenceSession.create>>;
import { writeRandomDecoderCheckpoint, type RandomDecoderSpec } from '../src/testing/random-checkpoint.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const SCRIPT = fileURLToPath(import.meta.url);

interface Profile {
  readonly name: string;
  readonly spec: RandomDecoderSpec;
  readonly cacheDir: string;
  readonly out: string;
  readonly promptTokens: number;
  readonly newTokens: number;
  /** Bytes per memcpy pass. */
  readonly memcpyBytes: number;
  /** Variant probe: prompt and decode steps. */
  readonly probePrompt: number;
  readonly probeSteps: number;
}

const REAL: Profile = {
  name: 'MobiLlama-0.5B dims',
  spec: {
    hidden: 2048, layers: 22, heads: 32, kvHeads: 32, intermediate: 5632, vocab: 32000, configKvHeadsTrap: 4,
    ffnLayout: 'per-layer-copies', format: 'bin', dtype: 'F32', seed: 0, shards: 2,
  },
  cacheDir: join(ROOT, 'benchmarks/.work/mobillama-05b-random'),
  out: join(ROOT, 'benchmarks/decoder.md'),
  promptTokens: 512, newTokens: 128, memcpyBytes: 1 << 30, probePrompt: 32, probeSteps: 16,
};

const QUICK: Profile = {
  name: 'tiny dims (--quick smoke test)',
  spec: {
    hidden: 128, layers: 4, heads: 4, kvHeads: 4, intermediate: 352, vocab: 32000, configKvHeadsTrap: 2,
    ffnLayout: 'per-layer-copies', format: 'bin', dtype: 'F32', seed: 0, shards: 2,
  },
  cacheDir: join(ROOT, 'benchmarks/.work/mobillama-tiny-random'),
  out: join(ROOT, 'benchmarks/.work/decoder.quick.md'),
  promptTokens: 64, newTokens: 16, memcpyBytes: 64 << 20, probePrompt: 8, probeSteps: 4,
};

// ---------------------------------------------------------------- memory probes

interface MemStatus {
  /** Peak resident set (VmHWM), bytes. */
  readonly hwm: number;
  readonly rss: number;
  readonly anon: number;
  readonly file: number;
}

function memStatus(): MemStatus {
  const text = readFileSync('/proc/self/status', 'utf8');
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { hwm: kb('VmHWM'), rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

// ---------------------------------------------------------------- child: full generation run

interface GenerateResult {
  readonly loadMs: number;
  readonly afterLoad: MemStatus;
  readonly atEnd: MemStatus;
  readonly maxRssBytes: number;
  readonly promptTokens: number;
  readonly newTokens: number;
  readonly prefillTokS: number;
  readonly decodeTokS: number;
  /** Median and 10th/90th percentile of the per-token decode latency (ms). */
  readonly decodeMsMedian: number;
  readonly decodeMsP10: number;
  readonly decodeMsP90: number;
  readonly ttftMs: number;
  readonly ffnOfLayer: readonly number[];
  readonly numKvHeads: number;
}

/** A seeded prompt: BOS then ids in [3, vocab). */
function promptIds(n: number, vocab: number): number[] {
  let x = 12345;
  const ids = [1];
  while (ids.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    ids.push(3 + (x % (vocab - 3)));
  }
  return ids;
}

async function childGenerate(dir: string, threads: number, prompt: number, newTokens: number): Promise<GenerateResult> {
  const t0 = performance.now();
  const gen = await TextGenerator.fromPretrained(dir, { threads });
  const loadMs = performance.now() - t0;
  const afterLoad = memStatus();
  const vocab = gen.model.config.vocabSize;
  // A short warm-up so the measured run is steady state, not ORT's first-run allocations.
  await gen.generate(promptIds(8, vocab), { maxNewTokens: 2, ignoreEos: true });
  // Streamed, to time every decode step: a shared host's memory bandwidth varies, so the
  // median step says more than the mean.
  const stream = gen.stream(promptIds(prompt, vocab), { maxNewTokens: newTokens, ignoreEos: true, temperature: 0 });
  const stamps: number[] = [];
  let next = await stream.next();
  while (!next.done) {
    if (next.value.token >= 0) stamps.push(performance.now());
    next = await stream.next();
  }
  const r = next.value;
  const steps = stamps.slice(1).map((t, i) => t - stamps[i]).sort((a, b) => a - b);
  const q = (f: number): number => steps[Math.min(steps.length - 1, Math.floor(f * steps.length))];
  const atEnd = memStatus();
  const { ffnOfLayer, numKvHeads } = gen.model.config;
  await gen.dispose();
  return {
    loadMs, afterLoad, atEnd, maxRssBytes: process.resourceUsage().maxRSS * 1024,
    promptTokens: r.timings.promptTokens, newTokens: r.tokens.length,
    prefillTokS: r.timings.prefillTokS, decodeTokS: r.timings.decodeTokS, ttftMs: r.timings.ttftMs,
    decodeMsMedian: q(0.5), decodeMsP10: q(0.1), decodeMsP90: q(0.9),
    ffnOfLayer, numKvHeads,
  };
}

// ---------------------------------------------------------------- child: memory variants

/**
 * Session variants that locate the load-time memory: each builds the same decoder graph
 * (optionally rewritten) and creates the session with other options.
 */
const VARIANTS = {
  'loader-only': 'loadDecoder() only: our loader (embeddings in memory, FFN sharing check), no ORT session',
  default: 'as DecoderModel.load: MatMul(x, Transpose(W)), optimization level all, prepacking on',
  'no-prepack': 'same graph, session.disable_prepacking=1',
  'opt-disabled': 'same graph, graph optimizations disabled (no constant folding: Transpose runs every step)',
  'fused-transB': 'graph rewritten: FusedMatMul(x, W, transB=1) (com.microsoft), no Transpose node',
  'fused-transB-no-prepack': 'FusedMatMul(transB=1) and session.disable_prepacking=1',
  'fused-transB-no-prepack-opt-disabled': 'FusedMatMul(transB=1), prepacking off, optimizations off: nothing rewrites a weight, so ORT can serve them from the mapped file',
} as const;
type Variant = keyof typeof VARIANTS;

interface VariantResult {
  readonly variant: Variant;
  readonly loaderMs: number;
  readonly afterLoader: MemStatus;
  readonly afterSession?: MemStatus;
  readonly atEnd?: MemStatus;
  readonly sessionMs?: number;
  readonly prefillMs?: number;
  /** Median decode step (ms). */
  readonly decodeMsPerToken?: number;
  /** Greedy tokens generated: equal across variants when the rewrite keeps the math. */
  readonly tokens?: readonly number[];
}

/** Replace `MatMul(x, Transpose(W, [1, 0]))` of an initializer W by `FusedMatMul(x, W, transB=1)`. */
function fuseTransposedWeights(graph: Graph): Graph {
  const inits = new Set(graph.initializers.map((i) => i.value.id));
  const transposed = new Map<number, Value>(); // transpose output id -> weight
  for (const n of graph.nodes) {
    const input = n.inputs[0];
    const perm = n.attrs.perm;
    if (n.op === 'Transpose' && input && inits.has(input.id) && Array.isArray(perm) && perm.join() === '1,0') transposed.set(n.outputs[0].id, input);
  }
  const usedElsewhere = new Set<number>();
  for (const n of graph.nodes) {
    n.inputs.forEach((v, i) => { if (v && transposed.has(v.id) && !(n.op === 'MatMul' && i === 1)) usedElsewhere.add(v.id); });
  }
  for (const o of graph.outputs) usedElsewhere.add(o.id);
  const nodes: GraphNode[] = [];
  for (const n of graph.nodes) {
    if (n.op === 'Transpose' && transposed.has(n.outputs[0].id) && !usedElsewhere.has(n.outputs[0].id)) continue;
    const b = n.inputs[1];
    if (n.op === 'MatMul' && b && transposed.has(b.id) && !usedElsewhere.has(b.id)) {
      nodes.push({ op: 'FusedMatMul', domain: 'com.microsoft', inputs: [n.inputs[0], transposed.get(b.id)!], outputs: n.outputs, attrs: { transB: 1, alpha: { float: 1 } } });
    } else nodes.push(n);
  }
  return { ...graph, nodes };
}

async function childVariant(dir: string, threads: number, variant: Variant, prompt: number, steps: number): Promise<VariantResult> {
  const t00 = performance.now();
  const loaded = await loadDecoder(dir);
  const loaderMs = performance.now() - t00;
  const afterLoader = memStatus();
  if (variant === 'loader-only') return { variant, loaderMs, afterLoader };
  let graph = buildDecoderGraph(loaded.config, loaded.weights);
  if (variant.startsWith('fused-transB')) graph = fuseTransposedWeights(graph);
  const artifact = exportOnnx(graph);
  const base = sessionOptions(artifact, { threads, optimizationLevel: variant.endsWith('opt-disabled') ? 'disabled' : 'all' });
  const extraSession = { ...(base.extra as { session: Record<string, string> }).session };
  if (variant.includes('no-prepack')) extraSession['session.disable_prepacking'] = '1';
  const t0 = performance.now();
  const session: InferenceSession = await ort.InferenceSession.create(artifact.model, { ...base, extra: { session: extraSession } });
  const sessionMs = performance.now() - t0;
  const afterSession = memStatus();

  // The forward pass of DecoderModel, on this session: prefill, then greedy decode steps.
  const { hiddenSize: H, numLayers: L, numKvHeads: KV, headDim: D, vocabSize: V } = loaded.config;
  const io = DECODER_IO;
  const table = loaded.weights.embedTokens.data;
  const f32 = (data: Float32Array, dims: number[]): Tensor => new ort.Tensor('float32', data, dims);
  const i64 = (xs: number[], dims: number[]): Tensor => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), dims);
  let keys: Tensor[] = Array.from({ length: L }, () => f32(new Float32Array(0), [1, KV, 0, D]));
  let values = keys;
  let past = 0;
  const step = async (ids: number[]): Promise<number> => {
    const T = ids.length;
    const embeds = new Float32Array(T * H);
    ids.forEach((id, i) => embeds.set(table.subarray(id * H, (id + 1) * H), i * H));
    const feeds: Record<string, Tensor> = {
      [io.embeds]: f32(embeds, [1, T, H]),
      [io.positions]: i64(ids.map((_, i) => past + i), [1, T]),
      [io.bias]: f32(attentionBias([new Array<number>(past + T).fill(1)], past, T), [1, 1, T, past + T]),
      [io.logitsIndex]: i64([T - 1], [1]),
    };
    for (let i = 0; i < L; i++) { feeds[io.pastKey(i)] = keys[i]; feeds[io.pastValue(i)] = values[i]; }
    const out = await session.run(feeds);
    keys = Array.from({ length: L }, (_, i) => out[io.presentKey(i)]);
    values = Array.from({ length: L }, (_, i) => out[io.presentValue(i)]);
    past += T;
    const logits = out[io.logits].data as Float32Array;
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
    return best;
  };
  const t1 = performance.now();
  const tokens = [await step(promptIds(prompt, V))];
  const prefillMs = performance.now() - t1;
  const times: number[] = [];
  for (let s = 0; s < steps; s++) {
    const t = performance.now();
    tokens.push(await step([tokens[tokens.length - 1]]));
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const atEnd = memStatus();
  await session.release();
  await loaded.source.close();
  return { variant, loaderMs, afterLoader, afterSession, atEnd, sessionMs, prefillMs, decodeMsPerToken: times[times.length >> 1], tokens };
}

// ---------------------------------------------------------------- parent: bounds

/** memcpy bandwidth samples: bytes copied per second by Buffer.copy of a large buffer, per pass. */
function measureMemcpy(bytes: number, passes = 7): number[] {
  const src = Buffer.alloc(bytes, 1), dst = Buffer.alloc(bytes, 2); // touched: no page faults timed
  const rates: number[] = [];
  for (let i = 0; i <= passes; i++) {
    const t0 = performance.now();
    src.copy(dst);
    const t = performance.now() - t0;
    if (i > 0) rates.push(bytes / (t / 1000));
  }
  return rates;
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

interface GemmRate { readonly m: number; readonly k: number; readonly n: number; readonly ms: number; readonly gflops: number }

/**
 * Median time of a [m, k] x [k, n] product with a constant weight: an fp32 MatMul, or with
 * `format` the kernel the decoder runs for that weight format (FusedMatMul, int8
 * DynamicQuantizeMatMul, 4-bit MatMulNBits).
 */
async function measureGemm(m: number, k: number, n: number, threads: number, format?: Format): Promise<GemmRate> {
  const g = new GraphBuilder('gemm');
  const x = g.input('x', 'float32', [m, k]);
  const wData = new Float32Array(k * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  if (format === undefined) g.output(g.matmul(x, g.param(memoryWeight('w', { dtype: 'F32', shape: [k, n], data: wData }))), 'y');
  else if (format === 'f32') g.output(linearInto(g, x, floatLinear(memoryWeight('w', { dtype: 'F32', shape: [n, k], data: wData }))), 'y');
  else g.output(linearInto(g, x, quantizedLinearFrom('w', wData, n, k, format)), 'y');
  const session = await createSession(exportOnnx(g.build()), { threads });
  const feeds = { x: { dtype: 'float32' as const, dims: [m, k], data: new Float32Array(m * k).fill(0.01) } };
  const times: number[] = [];
  const reps = m === 1 ? 30 : 7;
  for (let i = 0; i < reps + 2; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    if (i >= 2) times.push(performance.now() - t0);
  }
  await session.release();
  times.sort((a, b) => a - b);
  const ms = times[times.length >> 1];
  return { m, k, n, ms, gflops: (2 * m * k * n) / (ms / 1000) / 1e9 };
}

// ---------------------------------------------------------------- parent: checkpoint, children

async function ensureCheckpoint(p: Profile): Promise<{ reused: boolean; seconds: number; fileBytes: number; uniqueWeightBytes: number }> {
  const stampPath = `${p.cacheDir}.stamp.json`;
  const want = JSON.stringify(p.spec);
  if (existsSync(stampPath)) {
    const stamp = JSON.parse(readFileSync(stampPath, 'utf8')) as { spec: string; files: Record<string, number>; uniqueWeightBytes: number; seconds: number };
    const complete = stamp.spec === want && Object.entries(stamp.files).every(([f, size]) => existsSync(join(p.cacheDir, f)) && statSync(join(p.cacheDir, f)).size === size);
    if (complete) {
      const fileBytes = Object.values(stamp.files).reduce((a, b) => a + b, 0);
      return { reused: true, seconds: stamp.seconds, fileBytes, uniqueWeightBytes: stamp.uniqueWeightBytes };
    }
  }
  await rm(p.cacheDir, { recursive: true, force: true });
  await rm(stampPath, { force: true });
  process.stderr.write(`generating ${p.cacheDir} ...\n`);
  const t0 = performance.now();
  const info = await writeRandomDecoderCheckpoint(p.cacheDir, p.spec);
  const seconds = (performance.now() - t0) / 1000;
  const files = Object.fromEntries(info.files.map((f) => [f, statSync(join(p.cacheDir, f)).size]));
  // The stamp is written last, beside the folder (which holds only the checkpoint).
  await writeFile(stampPath, `${JSON.stringify({ spec: want, files, uniqueWeightBytes: info.uniqueWeightBytes, seconds }, null, 1)}\n`);
  return { reused: false, seconds, fileBytes: info.fileBytes, uniqueWeightBytes: info.uniqueWeightBytes };
}

type ChildJob =
  | { kind: 'generate'; dir: string; threads: number; prompt: number; newTokens: number }
  | { kind: 'variant'; dir: string; threads: number; variant: Variant; prompt: number; steps: number };

/** Run a job in a fresh Node process (same tsx loader) and return its result line. */
function runChild<T>(job: ChildJob): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, SCRIPT, '--child', JSON.stringify(job)], {
      stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('BENCH_RESULT '));
      if (code !== 0 || !line) reject(new Error(`benchmark child (${job.kind}) exited with ${code}`));
      else resolvePromise(JSON.parse(line.slice('BENCH_RESULT '.length)) as T);
    });
  });
}

// ---------------------------------------------------------------- report

const GB = 1e9;
const fmtGB = (b: number | undefined): string => (b === undefined || Number.isNaN(b) ? '–' : `${(b / GB).toFixed(2)} GB`);
const fix = (x: number | undefined, d = 1): string => (x === undefined ? '–' : x.toFixed(d));

function cpuModel(): string {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? 'unknown';
    const avx512 = /^flags\s*:.*\bavx512f\b/m.test(info);
    return `${model}${avx512 ? ' (AVX-512)' : ''}`;
  } catch {
    return cpus()[0]?.model ?? 'unknown';
  }
}

interface Report {
  readonly profile: Profile;
  readonly threads: number;
  readonly ckpt: Awaited<ReturnType<typeof ensureCheckpoint>>;
  /** Median memcpy rate over passes before and after the runs; the bound uses it. */
  readonly memcpy: number;
  readonly memcpyMin: number;
  readonly memcpyMax: number;
  /** Mean of the MatMul timings before and after the runs; the bound uses it. */
  readonly gemm: GemmRate;
  /** GFLOP/s before and after. */
  readonly gemmRange: readonly [number, number];
  readonly gemv: GemmRate;
  readonly gen: GenerateResult;
  readonly variants: readonly VariantResult[];
  /** Per weight format (--quantize): the run and its kernel's rates. */
  readonly formats: readonly FormatRun[];
  /** Load average when the runs started and ended. */
  readonly load: readonly [number, number];
}

type Format = 'f32' | QuantizeMode;

interface FormatRun {
  readonly format: Format;
  /** Seconds `mobillama-v quantize` took (cached runs: when it was written). */
  readonly quantizeSeconds?: number;
  readonly gen: GenerateResult;
  readonly gemm: GemmRate;
  readonly gemv: GemmRate;
}

/** Bytes per weight as ORT holds the linear layers: fp32, int8 + one fp32 scale per row, 4 bits + one fp32 scale per 32. */
const BYTES_PER_WEIGHT: Record<Format, number> = { f32: 4, q8: 1, q4: 0.5 + 4 / 32 };

/** The format comparison: each run against its own bounds. */
function renderFormats(r: Report): string[] {
  if (!r.formats.length) return [];
  const s = r.profile.spec;
  const H = s.hidden, I = s.intermediate, L = s.layers, V = s.vocab, D = H / s.heads;
  const attnParams = H * s.heads * D + 2 * H * s.kvHeads * D + s.heads * D * H;
  const ffnParams = 3 * H * I;
  const pct = (x: number, b: number): string => `${((100 * x) / b).toFixed(0)}%`;
  const rows = r.formats.map((f) => {
    const bpw = BYTES_PER_WEIGHT[f.format];
    // A decode step reads every layer's attention, the shared FFN once and lm_head (norms are
    // noise), and the fp32 KV cache at the mean context (the capacity lowering scans up to 64 more slots).
    const meanContext = f.gen.promptTokens + f.gen.newTokens / 2 + 32;
    const bytes = bpw * (L * attnParams + ffnParams + V * H) + 2 * L * s.kvHeads * D * 4 * meanContext;
    const decodeBound = r.memcpy / bytes;
    const T = f.gen.promptTokens;
    const flops = 2 * T * L * (attnParams + ffnParams) + 4 * T * T * s.heads * D * L + 2 * H * V;
    const prefillBound = T / (flops / (f.gemm.gflops * 1e9));
    const g = f.gen;
    return `| ${f.format}${f.quantizeSeconds === undefined ? '' : ` (quantized in ${f.quantizeSeconds.toFixed(0)} s)`} | ${(g.loadMs / 1000).toFixed(1)} s | ${fmtGB(g.afterLoad.hwm)} / ${fmtGB(g.atEnd.hwm)} | ` +
      `${fix(g.prefillTokS)} tok/s (${pct(g.prefillTokS, prefillBound)} of ${fix(prefillBound)}: ${fix(f.gemm.gflops)} GOP/s kernel) | ${fix(g.ttftMs, 0)} ms | ` +
      `${fix(1000 / g.decodeMsMedian, 2)} tok/s, ${fix(g.decodeMsMedian, 0)} ms (${fix(g.decodeMsP10, 0)}–${fix(g.decodeMsP90, 0)}) | ` +
      `${fix(decodeBound, 1)} tok/s (${fmtGB(bytes)}/token) | ${pct(1000 / g.decodeMsMedian, decodeBound)} | ${fix(f.gemv.ms, 2)} ms |`;
  });
  return [
    '',
    `## Weight formats (q8/q4: checkpoints written by \`mobillama-v quantize\`; ${r.formats[0].gen.promptTokens}-token prompt, ${r.formats[0].gen.newTokens} new tokens)`,
    '',
    '| format | load | HWM after load / at end | prefill | TTFT | decode, median step (p10–p90) | decode bound | of bound | kernel 1x' + `${H}x${I} |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Kernels: f32 FusedMatMul(transB), q8 DynamicQuantizeMatMul (int8 per output channel), q4 MatMulNBits (4-bit blocks of 32, accuracy_level 4); ` +
      `the prefill bound uses each kernel's measured ${r.formats[0].gemm.m}x${H}x${I} rate, the decode bound (bytes per weight ` +
      `(${r.formats.map((f) => `${f.format} ${BYTES_PER_WEIGHT[f.format]}`).join(', ')}) + the fp32 KV cache at the mean context) / memcpy bandwidth. ` +
      'One ORT session per model serves prefill and decode: the HWM columns are the one copy of the weights plus activations and the KV cache.',
  ];
}

function render(r: Report): string {
  const s = r.profile.spec;
  const H = s.hidden, I = s.intermediate, L = s.layers, V = s.vocab, D = H / s.heads;
  const attnParams = H * s.heads * D + 2 * H * s.kvHeads * D + s.heads * D * H;
  const ffnParams = 3 * H * I;
  const normParams = (2 * L + 1) * H;
  // Bytes of weights a decode step reads: every layer's attention, the FFN, lm_head, norms (fp32 in ORT).
  const uniqueBytes = 4 * (L * attnParams + ffnParams + V * H + normParams);
  const streamedBytes = 4 * (L * attnParams + L * ffnParams + V * H + normParams);
  const decodeBound = r.memcpy / uniqueBytes;
  const decodeBoundStreamed = r.memcpy / streamedBytes;
  const T = r.gen.promptTokens;
  // Prefill FLOPs: all projections for T rows, full T x T attention scores and mix (the
  // graph computes them all, masked), lm_head for the last row only.
  const flops = 2 * T * L * (attnParams + ffnParams) + 4 * T * T * s.heads * D * L + 2 * H * V;
  const prefillBound = T / (flops / (r.gemm.gflops * 1e9));
  const pct = (x: number, b: number): string => `${((100 * x) / b).toFixed(0)}%`;
  const g = r.gen;
  const lines = [
    `# Decoder benchmark: ${r.profile.name}, random fp32 weights`,
    '',
    `Generated by \`pnpm bench:decoder${r.profile === QUICK ? ' --quick' : ''} --threads ${r.threads}\` on ${new Date().toISOString().slice(0, 10)}.`,
    '',
    `- Machine: ${cpuModel()}, ${cpus().length} cores, ${(readMemTotal() / 2 ** 30).toFixed(0)} GiB RAM; ${r.threads} ORT threads`,
    `- Node ${process.version}, onnxruntime-node ${ort.env.versions.node ?? '?'}; 1-min load average ${r.load[0].toFixed(1)} at start, ${r.load[1].toFixed(1)} at end (the bench itself adds ~1–2)`,
    `- Model: hidden ${H}, ${L} layers, ${s.heads} heads (head_dim ${D}), KV heads ${s.kvHeads} in the weights / ${s.configKvHeadsTrap ?? s.kvHeads} in config.json, intermediate ${I}, vocab ${V}; ` +
      `loaded as ${g.numKvHeads} KV heads, FFN groups [${[...new Set(g.ffnOfLayer)].join(',')}] (one shared FFN: ${g.ffnOfLayer.every((x) => x === 0)})`,
    `- Checkpoint: ${s.ffnLayout} FFN, ${s.shards ?? 1} torch .bin shard(s) + index, ${fmtGB(r.ckpt.fileBytes)} on disk, ${fmtGB(r.ckpt.uniqueWeightBytes)} unique weights; ` +
      `${r.ckpt.reused ? `reused (generated earlier in ${r.ckpt.seconds.toFixed(0)} s)` : `generated in ${r.ckpt.seconds.toFixed(0)} s`}`,
    '',
    '| metric | measured | bound | of bound |',
    '|---|---|---|---|',
    `| load time (config, weights, sharing check, ORT session) | ${(g.loadMs / 1000).toFixed(1)} s | | |`,
    `| peak RSS after load (VmHWM) | ${fmtGB(g.afterLoad.hwm)} | unique fp32 weights ${fmtGB(uniqueBytes + 4 * V * H)} (with embeddings) | ${pct(g.afterLoad.hwm, uniqueBytes + 4 * V * H)} |`,
    `| peak RSS at end of run (VmHWM) | ${fmtGB(g.atEnd.hwm)} | | |`,
    `| RSS after load: anon / file-backed | ${fmtGB(g.afterLoad.anon)} / ${fmtGB(g.afterLoad.file)} | | |`,
    `| prefill, ${T}-token prompt | ${fix(g.prefillTokS)} tok/s | ${fix(prefillBound)} tok/s (${(flops / 1e9).toFixed(0)} GFLOP / ${fix(r.gemm.gflops)} GFLOP/s) | ${pct(g.prefillTokS, prefillBound)} |`,
    `| time to first token (${T}-token prompt) | ${fix(g.ttftMs, 0)} ms | ${fix((1000 * T) / prefillBound, 0)} ms | |`,
    `| decode, ${g.newTokens} new tokens (EOS ignored), mean | ${fix(g.decodeTokS, 2)} tok/s | ${fix(decodeBound, 2)} tok/s (${fmtGB(uniqueBytes)} unique weight bytes/token / ${fix(r.memcpy / GB)} GB/s) | ${pct(g.decodeTokS, decodeBound)} |`,
    `| decode step latency: median (p10–p90) | ${fix(g.decodeMsMedian, 0)} ms (${fix(g.decodeMsP10, 0)}–${fix(g.decodeMsP90, 0)}) = ${fix(1000 / g.decodeMsMedian, 2)} tok/s | ${fix(1000 / decodeBound, 0)} ms | ${pct(1000 / g.decodeMsMedian, decodeBound)} |`,
    `| decode bound if the shared FFN is re-read from DRAM by every layer | | ${fix(decodeBoundStreamed, 2)} tok/s (${fmtGB(streamedBytes)}/token) | ${pct(g.decodeTokS, decodeBoundStreamed)} |`,
    '',
    'Measured here for the bounds:',
    '',
    '| kernel | time | rate |',
    '|---|---|---|',
    `| memcpy (Buffer.copy, ${fmtGB(r.profile.memcpyBytes)}; median of 14 passes before and after the runs, min–max) | ${fix((1000 * r.profile.memcpyBytes) / r.memcpy, 1)} ms | ${fix(r.memcpy / GB)} GB/s (${fix(r.memcpyMin / GB)}–${fix(r.memcpyMax / GB)}) |`,
    `| ORT MatMul fp32 ${r.gemm.m}x${r.gemm.k}x${r.gemm.n}, constant weight (median before and after the runs, averaged) | ${fix(r.gemm.ms, 1)} ms | ${fix(r.gemm.gflops)} GFLOP/s (before ${fix(r.gemmRange[0])}, after ${fix(r.gemmRange[1])}) |`,
    `| ORT MatMul fp32 ${r.gemv.m}x${r.gemv.k}x${r.gemv.n} (decode-shaped, median) | ${fix(r.gemv.ms, 2)} ms | ${fix(r.gemv.gflops)} GFLOP/s, ${fix((4 * r.gemv.k * r.gemv.n) / (r.gemv.ms / 1000) / GB)} GB/s of weights |`,
  ];
  if (r.variants.length) {
    lines.push(
      '',
      `Load-time memory by session variant (each in a fresh process; VmHWM = peak RSS so far; decode = ${r.profile.probeSteps} greedy steps after a ${r.profile.probePrompt}-token prompt):`,
      '',
      '| variant | loader | HWM after loader | HWM after session | RSS after session (anon / file) | HWM at end | RSS at end (anon / file) | session create | decode ms/token (median) | same tokens as default |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...r.variants.map((v) => {
        const ref = r.variants.find((x) => x.variant === 'default')?.tokens;
        const same = !v.tokens || !ref ? '–' : v.tokens.join() === ref.join() ? 'yes' : 'NO';
        const split = (m?: MemStatus): string => (m ? `${fmtGB(m.anon)} / ${fmtGB(m.file)}` : '–');
        return `| ${v.variant} | ${(v.loaderMs / 1000).toFixed(1)} s | ${fmtGB(v.afterLoader.hwm)} | ${fmtGB(v.afterSession?.hwm)} | ${split(v.afterSession)} | ${fmtGB(v.atEnd?.hwm)} | ${split(v.atEnd)} | ` +
          `${v.sessionMs === undefined ? '–' : `${(v.sessionMs / 1000).toFixed(1)} s`} | ${fix(v.decodeMsPerToken, 1)} | ${same} |`;
      }),
      '',
      ...r.variants.map((v) => `- ${v.variant}: ${VARIANTS[v.variant]}`),
    );
  }
  lines.push(...renderFormats(r));
  lines.push(
    '',
    'Bounds: decode = weight bytes read per token (every layer\'s attention, the shared FFN once, lm_head, norms; fp32) / memcpy bandwidth; ' +
      'prefill = FLOPs (projections for every prompt row, full masked T×T attention, lm_head for the last row) / the measured MatMul rate. ' +
      'Prefill and decode come from one streamed generation after a short warm-up, in a child process whose peak RSS is its own. ' +
      'This is a shared VM: memory bandwidth drifts by 2x over minutes, so compare the memcpy range and the decode latency spread before reading small differences.',
    '',
  );
  return lines.join('\n');
}

/** 1-minute load average: other work on the machine skews every timing here. */
function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

function readMemTotal(): number {
  const m = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      threads: { type: 'string', default: '2' },
      out: { type: 'string' },
      'skip-rss-analysis': { type: 'boolean', default: false },
      quantize: { type: 'string' },
      child: { type: 'string' },
    },
  });
  if (values.child) {
    const job = JSON.parse(values.child) as ChildJob;
    const result = job.kind === 'generate'
      ? await childGenerate(job.dir, job.threads, job.prompt, job.newTokens)
      : await childVariant(job.dir, job.threads, job.variant, job.prompt, job.steps);
    process.stdout.write(`BENCH_RESULT ${JSON.stringify(result)}\n`);
    return;
  }
  const profile = values.quick ? QUICK : REAL;
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${values.threads}`);
  const log = (m: string): void => { process.stderr.write(`[bench:decoder] ${m}\n`); };

  const loadStart = loadAverage();
  const ckpt = await ensureCheckpoint(profile);
  log(`checkpoint ${ckpt.reused ? 'reused' : `generated in ${ckpt.seconds.toFixed(1)} s`}: ${fmtGB(ckpt.fileBytes)}`);
  const memcpyBefore = measureMemcpy(profile.memcpyBytes);
  log(`memcpy ${memcpyBefore.map((x) => fix(x / GB)).join(' ')} GB/s`);
  const { hidden: H, intermediate: I } = profile.spec;
  const gemm = await measureGemm(profile.promptTokens, H, I, threads);
  const gemv = await measureGemm(1, H, I, threads);
  log(`MatMul ${gemm.m}x${H}x${I}: ${fix(gemm.ms)} ms (${fix(gemm.gflops)} GFLOP/s); M=1: ${fix(gemv.ms, 2)} ms`);

  const gen = await runChild<GenerateResult>({ kind: 'generate', dir: profile.cacheDir, threads, prompt: profile.promptTokens, newTokens: profile.newTokens });
  log(`load ${fix(gen.loadMs / 1000)} s, HWM ${fmtGB(gen.atEnd.hwm)}, prefill ${fix(gen.prefillTokS)} tok/s, decode ${fix(gen.decodeTokS, 2)} tok/s`);
  const variants: VariantResult[] = [];
  if (!values['skip-rss-analysis']) {
    for (const variant of Object.keys(VARIANTS) as Variant[]) {
      const v = await runChild<VariantResult>({ kind: 'variant', dir: profile.cacheDir, threads, variant, prompt: profile.probePrompt, steps: profile.probeSteps });
      log(`${variant}: HWM ${fmtGB(v.atEnd?.hwm ?? v.afterLoader.hwm)}, decode ${fix(v.decodeMsPerToken)} ms/token`);
      variants.push(v);
    }
  }
  const formats: FormatRun[] = [];
  for (const f of (values.quantize ?? '').split(',').filter(Boolean) as Format[]) {
    if (!(f in BYTES_PER_WEIGHT)) throw new Error(`--quantize takes f32, q8 and q4, got ${f}`);
    const fGemm = await measureGemm(profile.promptTokens, H, I, threads, f);
    const fGemv = await measureGemm(1, H, I, threads, f);
    let dir = profile.cacheDir, quantizeSeconds: number | undefined;
    if (f !== 'f32') {
      dir = `${profile.cacheDir}-${f}`;
      const stamp = `${dir}.stamp.json`;
      const spec = JSON.stringify(profile.spec);
      const old = existsSync(stamp) ? JSON.parse(readFileSync(stamp, 'utf8')) as { spec: string; seconds: number } : null;
      if (old?.spec === spec && existsSync(join(dir, 'model.safetensors'))) quantizeSeconds = old.seconds;
      else {
        await rm(dir, { recursive: true, force: true });
        const t0 = performance.now();
        await quantizeDecoderFolder(profile.cacheDir, dir, f);
        quantizeSeconds = (performance.now() - t0) / 1000;
        await writeFile(stamp, JSON.stringify({ spec, seconds: quantizeSeconds }));
      }
    }
    const fGen = await runChild<GenerateResult>({ kind: 'generate', dir, threads, prompt: profile.promptTokens, newTokens: profile.newTokens });
    log(`${f}: load ${fix(fGen.loadMs / 1000)} s, HWM ${fmtGB(fGen.atEnd.hwm)}, prefill ${fix(fGen.prefillTokS)} tok/s, decode ${fix(fGen.decodeTokS, 2)} tok/s`);
    formats.push({ format: f, quantizeSeconds, gen: fGen, gemm: fGemm, gemv: fGemv });
  }
  // Again after the runs: the host's memory bandwidth drifts, so the bound uses the median of both.
  const memcpyAfter = measureMemcpy(profile.memcpyBytes);
  const gemmAfter = await measureGemm(profile.promptTokens, H, I, threads);
  log(`after: memcpy ${memcpyAfter.map((x) => fix(x / GB)).join(' ')} GB/s, MatMul ${fix(gemmAfter.gflops)} GFLOP/s`);
  const all = [...memcpyBefore, ...memcpyAfter];
  const md = render({
    profile, threads, ckpt, memcpy: median(all), memcpyMin: Math.min(...all), memcpyMax: Math.max(...all),
    gemm: { ...gemm, ms: (gemm.ms + gemmAfter.ms) / 2, gflops: (2 * gemm.m * gemm.k * gemm.n) / ((gemm.ms + gemmAfter.ms) / 2000) / 1e9 },
    gemmRange: [gemm.gflops, gemmAfter.gflops], gemv, gen, variants, formats, load: [loadStart, loadAverage()],
  });
  const out = values.out ? resolve(values.out) : profile.out;
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, md);
  process.stdout.write(`${md}\n(written to ${out})\n`);
}

await main();
