/**
 * Random MobiLlama/LLaMA checkpoints for tests and benchmarks, written the way the
 * published ones are laid out (HF config.json + torch .bin or safetensors, optionally
 * sharded with an index), at any size: tensors are generated one at a time with a cheap
 * seeded PRNG and streamed to disk, so a 5 GB fp32 checkpoint needs ~300 MB of memory and
 * well under a minute of CPU.
 *
 * Values depend only on (seed, the tensor's value source): the shared FFN's source is the
 * same whichever layout stores it, so 'per-layer-copies', 'shared-storage' and 'once'
 * checkpoints with one seed are the same model.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DTYPE_BYTES, numel, writeAll, writeFileAtomic, writeFileAtomicWith, writeTorchBin, type HostTensor } from '@mobillama/core';

/**
 * How the FFN weights are stored:
 * - 'per-layer-copies': one shared FFN, stored under every layer's names as identical
 *   separate copies (the released MobiLlama-05B fp32 checkpoint, ~5 GB).
 * - 'shared-storage': one shared FFN, every layer's names pointing at ONE storage (what
 *   torch.save writes for the shared module); .bin only.
 * - 'once': one shared FFN, stored under layer 0's names only (the bf16 chat checkpoint).
 * - 'distinct': a different FFN per layer (plain LLaMA).
 */
export type FfnLayout = 'per-layer-copies' | 'shared-storage' | 'once' | 'distinct';

export interface RandomDecoderSpec {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  /** KV heads in the weights (k_proj/v_proj have kvHeads × head_dim rows). */
  readonly kvHeads: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly ffnLayout: FfnLayout;
  readonly format: 'bin' | 'safetensors';
  readonly dtype: 'F32' | 'BF16';
  readonly seed: number;
  /** config.json's num_key_value_heads, when it should disagree with the weights (MobiLlama-05B says 4, its weights are MHA). */
  readonly configKvHeadsTrap?: number;
  /** Weight files (default 1): more writes `*-0000k-of-0000N.*` plus the HF index. */
  readonly shards?: number;
  /** config.json max_position_embeddings (default 2048). */
  readonly maxPositions?: number;
}

export interface RandomCheckpointInfo {
  /** Files written, relative to the folder. */
  readonly files: readonly string[];
  /** Bytes of the weight files. */
  readonly fileBytes: number;
  /** Bytes of distinct weight values (a shared FFN counted once), in the stored dtype. */
  readonly uniqueWeightBytes: number;
  readonly tensors: number;
}

interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** Where the values come from: tensors with one source hold the same values. */
  readonly source: string;
  readonly kind: 'weight' | 'norm';
}

/** Weights are uniform in [-a, a] with a = 0.02·√3, i.e. std 0.02 (HF's initializer_range). */
const WEIGHT_HALF_RANGE = 0.02 * Math.sqrt(3);
/** RMSNorm weights are 1 ± 0.05. */
const NORM_HALF_RANGE = 0.05;

/** FNV-1a of a string mixed with the seed: one independent PRNG stream per tensor source. */
function streamSeed(seed: number, source: string): number {
  let h = 0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1);
  for (let i = 0; i < source.length; i++) h = Math.imul(h ^ source.charCodeAt(i), 0x01000193);
  return h === 0 ? 0x6d2b79f5 : h | 0;
}

/**
 * Fill with xorshift32 values uniform in center ± halfRange: a few ns per element, so
 * the 535 M unique floats of MobiLlama-0.5B take a couple of seconds.
 */
function fillUniform(out: Float32Array, seed: number, center: number, halfRange: number): void {
  let x = seed | 0;
  const scale = halfRange / 2147483648;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = center + x * scale;
  }
}

/** float32 → bfloat16 bits, round to nearest even (values here are finite). */
function toBf16(v: Float32Array): Uint16Array {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  const out = new Uint16Array(v.length);
  for (let i = 0; i < u.length; i++) {
    const b = u[i];
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

function generate(t: TensorSpec, seed: number, dtype: 'F32' | 'BF16'): HostTensor {
  const values = new Float32Array(numel(t.shape));
  if (t.kind === 'norm') fillUniform(values, streamSeed(seed, t.source), 1, NORM_HALF_RANGE);
  else fillUniform(values, streamSeed(seed, t.source), 0, WEIGHT_HALF_RANGE);
  return dtype === 'F32' ? { dtype, shape: t.shape, data: values } : { dtype, shape: t.shape, data: toBf16(values) };
}

/** The state dict in Hugging Face LLaMA order. */
function tensorSpecs(s: RandomDecoderSpec): TensorSpec[] {
  const H = s.hidden, D = s.hidden / s.heads, I = s.intermediate;
  const w = (name: string, shape: number[], source = name): TensorSpec => ({ name, shape, source, kind: 'weight' });
  const out: TensorSpec[] = [w('model.embed_tokens.weight', [s.vocab, H])];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.`;
    out.push(
      w(`${p}self_attn.q_proj.weight`, [s.heads * D, H]),
      w(`${p}self_attn.k_proj.weight`, [s.kvHeads * D, H]),
      w(`${p}self_attn.v_proj.weight`, [s.kvHeads * D, H]),
      w(`${p}self_attn.o_proj.weight`, [H, s.heads * D]),
    );
    if (s.ffnLayout !== 'once' || i === 0) {
      const src = (m: string) => (s.ffnLayout === 'distinct' ? `${p}mlp.${m}.weight` : `shared_mlp.${m}.weight`);
      out.push(
        w(`${p}mlp.gate_proj.weight`, [I, H], src('gate_proj')),
        w(`${p}mlp.up_proj.weight`, [I, H], src('up_proj')),
        w(`${p}mlp.down_proj.weight`, [H, I], src('down_proj')),
      );
    }
    out.push(
      { name: `${p}input_layernorm.weight`, shape: [H], source: `${p}input_layernorm.weight`, kind: 'norm' },
      { name: `${p}post_attention_layernorm.weight`, shape: [H], source: `${p}post_attention_layernorm.weight`, kind: 'norm' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [H], source: 'model.norm.weight', kind: 'norm' }, w('lm_head.weight', [s.vocab, H]));
  return out;
}

function configJson(s: RandomDecoderSpec): Record<string, unknown> {
  return {
    _name_or_path: 'random-mobillama',
    architectures: ['MobiLlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: 'silu',
    hidden_size: s.hidden,
    initializer_range: 0.02,
    intermediate_size: s.intermediate,
    max_position_embeddings: s.maxPositions ?? 2048,
    model_type: 'llama',
    num_attention_heads: s.heads,
    num_hidden_layers: s.layers,
    num_key_value_heads: s.configKvHeadsTrap ?? s.kvHeads,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    torch_dtype: s.dtype === 'F32' ? 'float32' : 'bfloat16',
    transformers_version: '4.36.1',
    use_cache: true,
    vocab_size: s.vocab,
  };
}

function validate(s: RandomDecoderSpec): void {
  const ints: [string, number][] = [
    ['hidden', s.hidden], ['layers', s.layers], ['heads', s.heads], ['kvHeads', s.kvHeads],
    ['intermediate', s.intermediate], ['vocab', s.vocab], ['shards', s.shards ?? 1],
  ];
  for (const [k, v] of ints) if (!Number.isInteger(v) || v < 1) throw new RangeError(`random checkpoint: ${k} must be a positive integer, got ${v}`);
  if (s.hidden % s.heads !== 0) throw new RangeError(`random checkpoint: hidden ${s.hidden} is not a multiple of heads ${s.heads}`);
  if (s.heads % s.kvHeads !== 0) throw new RangeError(`random checkpoint: heads ${s.heads} is not a multiple of kvHeads ${s.kvHeads}`);
  if (s.format === 'safetensors' && s.ffnLayout === 'shared-storage') {
    throw new Error("random checkpoint: safetensors cannot store one tensor under several names (transformers drops the duplicates, which is the 'once' layout)");
  }
}

/** Split tensors into `n` consecutive shards of roughly equal stored bytes. */
function shardOf(specs: readonly TensorSpec[], bytesOf: (t: TensorSpec, i: number) => number, n: number): number[] {
  const sizes = specs.map(bytesOf);
  const total = sizes.reduce((a, b) => a + b, 0);
  const shard: number[] = [];
  let acc = 0, k = 0;
  sizes.forEach((b, i) => {
    // Move on once this shard has its share, keeping at least one tensor per later shard.
    if (k < n - 1 && acc >= (total * (k + 1)) / n && specs.length - i >= n - k - 1) k++;
    shard.push(k);
    acc += b;
  });
  return shard;
}

/** A streaming safetensors writer: header from the specs, then each tensor's bytes, then rename. */
async function writeSafetensorsStream(path: string, names: readonly string[], shapes: readonly (readonly number[])[], dtype: 'F32' | 'BF16', produce: (i: number) => HostTensor): Promise<number> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  names.forEach((name, i) => {
    const len = numel(shapes[i]) * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: shapes[i], data_offsets: [offset, offset + len] };
    offset += len;
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(head.length - 8));
  head.write(json, 8, 'utf8');
  await writeFileAtomicWith(path, async (fh) => {
    await fh.write(head);
    for (let i = 0; i < names.length; i++) {
      const t = produce(i);
      await writeAll(fh, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  });
  return head.length + offset;
}

/**
 * Writes a random decoder checkpoint into `dir` (created if needed; it must not hold
 * other files): config.json, the weights, and with `shards` > 1 the HF index. No tokenizer
 * files: with vocab 32000 the loader falls back to the bundled LLaMA tokenizer.
 */
export async function writeRandomDecoderCheckpoint(dir: string, spec: RandomDecoderSpec): Promise<RandomCheckpointInfo> {
  validate(spec);
  const n = spec.shards ?? 1;
  const bin = spec.format === 'bin';
  const file = (k: number): string => (n === 1
    ? (bin ? 'pytorch_model.bin' : 'model.safetensors')
    : `${bin ? 'pytorch_model' : 'model'}-${String(k + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.${bin ? 'bin' : 'safetensors'}`);
  const indexName = bin ? 'pytorch_model.bin.index.json' : 'model.safetensors.index.json';
  const ours = new Set(['config.json', ...Array.from({ length: n }, (_, k) => file(k)), ...(n > 1 ? [indexName] : [])]);
  await mkdir(dir, { recursive: true });
  const foreign = (await readdir(dir)).filter((f) => !ours.has(f));
  if (foreign.length) throw new Error(`writeRandomDecoderCheckpoint: ${dir} already holds other files (${foreign.slice(0, 3).join(', ')}); use an empty folder`);

  const specs = tensorSpecs(spec);
  const es = DTYPE_BYTES[spec.dtype];
  const sharedSources = spec.ffnLayout === 'distinct' ? new Set<string>() : new Set(specs.filter((t) => t.source.startsWith('shared_mlp.')).map((t) => t.source));
  // Stored bytes per tensor: under 'shared-storage' only the first name of a source in a file holds bytes.
  const firstOfSource = new Set<string>();
  const stored = (t: TensorSpec): number => {
    if (spec.ffnLayout === 'shared-storage' && firstOfSource.has(t.source)) return 0;
    firstOfSource.add(t.source);
    return numel(t.shape) * es;
  };
  const shards = shardOf(specs, stored, n);

  // The shared FFN is generated once and kept (3 tensors) while it is written 1-22 times.
  const cache = new Map<string, HostTensor>();
  const valuesOf = (t: TensorSpec): HostTensor => {
    const hit = cache.get(t.source);
    if (hit) return hit;
    const g = generate(t, spec.seed, spec.dtype);
    if (sharedSources.has(t.source)) cache.set(t.source, g);
    return g;
  };

  let fileBytes = 0;
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < n; k++) {
    const mine = specs.filter((_, i) => shards[i] === k);
    const path = join(dir, file(k));
    for (const t of mine) weightMap[t.name] = file(k);
    if (bin) {
      // Aliases point at the first name of the same source in this file (torch.save of a shared module).
      const aliasOf: Record<string, string> = {};
      if (spec.ffnLayout === 'shared-storage') {
        const first = new Map<string, string>();
        for (const t of mine) {
          const f = first.get(t.source);
          if (f === undefined) first.set(t.source, t.name);
          else aliasOf[t.name] = f;
        }
      }
      function* tensors(): Generator<[string, HostTensor]> {
        for (const t of mine) yield [t.name, valuesOf(t)];
      }
      fileBytes += (await writeTorchBin(path, tensors(), { shareStorageOf: aliasOf })).bytes;
    } else {
      fileBytes += await writeSafetensorsStream(path, mine.map((t) => t.name), mine.map((t) => t.shape), spec.dtype, (i) => valuesOf(mine[i]));
    }
  }
  const unique = new Map(specs.map((t) => [t.source, numel(t.shape) * es]));
  const uniqueWeightBytes = [...unique.values()].reduce((a, b) => a + b, 0);
  if (n > 1) {
    const totalSize = specs.reduce((a, t) => a + numel(t.shape) * es, 0);
    await writeFileAtomic(join(dir, indexName), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2)}\n`);
  }
  // config.json last: a folder with a config has all its weights.
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(configJson(spec), null, 2)}\n`);
  return { files: [...ours].sort(), fileBytes, uniqueWeightBytes, tensors: specs.length };
}
