import { GraphBuilder, type Value, type WeightRef } from '@mobillama/core';
import type { DecoderWeights } from '@mobillama/decoder';
import type { Param } from './params.js';
import type { Rng } from './rng.js';

/** A LoRA adapter on one Linear: W x + (alpha / r) · B A x, with A [r, in] and B [out, r]. */
export interface LoraAdapter {
  /** The base weight's name (a graph initializer; stays frozen). */
  readonly base: string;
  /** Module name without `.weight`, e.g. `model.layers.3.self_attn.q_proj`. */
  readonly module: string;
  readonly a: string;
  readonly b: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
}

export interface LoraOptions {
  readonly r: number;
  readonly alpha: number;
}

/** PEFT's target_modules for LLaVA-style LoRA on a LLaMA decoder: attention and MLP projections. */
export const LORA_TARGET_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/**
 * The adapters of a decoder: q/k/v/o of every layer, and the FFN projections once per FFN
 * (MobiLlama's one shared FFN gets one adapter, used by every layer, exactly as PEFT would
 * wrap the one shared LlamaMLP module once).
 */
export function loraAdapters(w: DecoderWeights): LoraAdapter[] {
  const out: LoraAdapter[] = [];
  const add = (ref: { name: string; shape: readonly number[] }) => {
    const module = ref.name.replace(/\.weight$/, '');
    out.push({ base: ref.name, module, a: `${module}.lora_A.weight`, b: `${module}.lora_B.weight`, inFeatures: ref.shape[1], outFeatures: ref.shape[0] });
  };
  for (const l of w.layers) for (const ref of [l.attn.q, l.attn.k, l.attn.v, l.attn.o]) add(ref);
  for (const f of w.ffns) for (const ref of [f.gate, f.up, f.down]) add(ref);
  return out;
}

/**
 * PEFT's initialisation: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0, so training
 * starts from the base model exactly. AdamW decays both (they are Linear weights).
 */
export function initLoraParams(adapters: readonly LoraAdapter[], opts: LoraOptions, rng: Rng): Param[] {
  const ps: Param[] = [];
  for (const a of adapters) {
    ps.push({ name: a.a, shape: [opts.r, a.inFeatures], data: rng.uniform(new Float32Array(opts.r * a.inFeatures), 1 / Math.sqrt(a.inFeatures)), decay: true });
    ps.push({ name: a.b, shape: [a.outFeatures, opts.r], data: new Float32Array(a.outFeatures * opts.r), decay: true });
  }
  return ps;
}

/**
 * A GraphBuilder that applies LoRA wherever a model multiplies by an adapted weight. The
 * decoder is written once (decoderInto) with nn.linear = MatMul(x, Transpose(W)); this
 * builder recognises the transpose of an adapted base weight and turns the MatMul into
 * x Wᵀ + s · (x Aᵀ) Bᵀ, the low-rank path on the activations (never materialising B A), so
 * the frozen W gets no gradient and the cost is what PEFT pays. `check()` proves every
 * adapter was used, so a change in how nn.linear is written cannot silently drop LoRA.
 */
export class LoraGraphBuilder extends GraphBuilder {
  private readonly byBase = new Map<string, LoraAdapter>();
  private readonly transposed = new Map<number, LoraAdapter>();
  private readonly used = new Map<string, number>();

  constructor(
    name: string, trainable: ReadonlySet<string>, adapters: readonly LoraAdapter[],
    private readonly scale: number,
    /** The A and B tensors by name (trainable: they become graph inputs). */
    private readonly refs: ReadonlyMap<string, WeightRef>,
  ) {
    super(name, trainable);
    for (const a of adapters) this.byBase.set(a.base, a);
  }

  override transpose(x: Value, perm: readonly number[]): Value {
    const out = super.transpose(x, perm);
    const a = this.byBase.get(x.name);
    if (a && perm.length === 2 && perm[0] === 1 && perm[1] === 0) this.transposed.set(out.id, a);
    return out;
  }

  override matmul(a: Value, b: Value): Value {
    const y = super.matmul(a, b);
    const ad = this.transposed.get(b.id);
    if (!ad) return y;
    this.used.set(ad.base, (this.used.get(ad.base) ?? 0) + 1);
    const A = this.param(this.refs.get(ad.a)!), B = this.param(this.refs.get(ad.b)!);
    const low = super.matmul(super.matmul(a, super.transpose(A, [1, 0])), super.transpose(B, [1, 0]));
    return this.add(y, this.mul(low, this.scalar(this.scale)));
  }

  /** How many times each adapter was applied (layers using a shared FFN apply its adapter each). */
  uses(): ReadonlyMap<string, number> {
    return this.used;
  }

  check(): void {
    const missing = [...this.byBase.keys()].filter((b) => !this.used.has(b));
    if (missing.length) throw new Error(`LoRA: adapters never applied (is nn.linear still MatMul(x, Transpose(W))?): ${missing.slice(0, 3).join(', ')}`);
  }
}

/**
 * PEFT's key for one of our LoRA tensors: `base_model.model.` + the module path in the HF
 * model (decoder prefix such as llava-hf's `language_model.` removed). A shared FFN's adapter
 * is stored once, under the first layer that uses it (layer 0 for MobiLlama): PEFT loading
 * into MobiLlama's one shared LlamaMLP sets it for every layer.
 */
export function peftKey(name: string, decoderPrefix: string): string {
  const inner = decoderPrefix && name.startsWith(decoderPrefix) ? name.slice(decoderPrefix.length) : name;
  return `base_model.model.${inner}`;
}

/** adapter_config.json as PEFT writes it for this adapter set. */
export function adapterConfig(opts: LoraOptions, baseModel: string, sharedFfn: boolean): Record<string, unknown> {
  return {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: baseModel,
    r: opts.r, lora_alpha: opts.alpha, lora_dropout: 0, bias: 'none', fan_in_fan_out: false, inference_mode: true,
    target_modules: [...LORA_TARGET_MODULES], modules_to_save: null,
    // Not a PEFT field: a note for readers of MobiLlama adapters.
    mobillama_shared_ffn: sharedFfn ? 'one FFN adapter, stored under model.layers.0.mlp.*, used by every layer' : undefined,
  };
}
