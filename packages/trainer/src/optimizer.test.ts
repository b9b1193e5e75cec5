import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensors } from '@mobillama/core';
import { adamwStep, clipCoefficient, globalGradNorm, newAdamWState } from './optimizer.js';
import type { Param } from './params.js';
import { decays } from './params.js';
import { lrAt, lrLambda, warmupStepsFor } from './schedule.js';
import { FIXTURE } from './test-fixtures.js';

describe('AdamW', () => {
  it('follows torch.optim.AdamW for 3 steps, gradients near eps and zero included', async () => {
    const src = await openSafetensors(join(FIXTURE, 'adamw.safetensors'));
    const f64 = async (n: string) => (await src.read(n)).data as Float64Array;
    const p: Param = { name: 'p', shape: [9], data: Float32Array.from(await f64('p0')), decay: true };
    const state = newAdamWState([p]);
    for (let s = 1; s <= 3; s++) {
      adamwStep([p], new Map([['p', Float32Array.from(await f64(`grad${s}`))]]), state, 1e-2, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 });
      const want = await f64(`p${s}`);
      for (let i = 0; i < 9; i++) expect(Math.abs(p.data[i] - want[i]), `step ${s} [${i}]`).toBeLessThan(1e-6);
    }
    expect(state.step).toBe(3);
    await src.close();
  });

  it('does not decay biases and norm weights (HF Trainer groups)', () => {
    expect(['model.mm_projector.0.bias', 'model.norm.weight', 'model.layers.3.input_layernorm.weight',
      'vision_model.pre_layrnorm.weight', 'vision_model.encoder.layers.0.layer_norm1.weight'].map(decays)).toEqual([false, false, false, false, false]);
    expect(['model.mm_projector.0.weight', 'model.embed_tokens.weight', 'lm_head.weight', 'model.layers.0.self_attn.q_proj.lora_A.weight'].map(decays)).toEqual([true, true, true, true]);
    const w: Param = { name: 'w', shape: [1], data: Float32Array.of(1), decay: true };
    const b: Param = { name: 'b', shape: [1], data: Float32Array.of(1), decay: false };
    const st = newAdamWState([w, b]);
    adamwStep([w, b], new Map([['w', Float32Array.of(0)], ['b', Float32Array.of(0)]]), st, 0.1, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 });
    expect(w.data[0]).toBeCloseTo(0.95, 7);
    expect(b.data[0]).toBe(1);
  });

  it('a param with lrScale steps and decays as its own param group with lr·lrScale', () => {
    const g = () => new Map([['a', Float32Array.of(0.3, -2)]]);
    const a: Param = { name: 'a', shape: [2], data: Float32Array.of(1, 2), decay: true, lrScale: 0.1 };
    const b: Param = { name: 'a', shape: [2], data: Float32Array.of(1, 2), decay: true };
    const sa = newAdamWState([a]), sb = newAdamWState([b]);
    const opts = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 };
    for (let s = 0; s < 3; s++) {
      adamwStep([a], g(), sa, 0.05, opts);
      adamwStep([b], g(), sb, 0.005, opts);
    }
    expect(Array.from(a.data)).toEqual(Array.from(b.data));
    expect(a.data[0]).not.toBe(1);
  });

  it('gradScale scales gradients before the moments (mean over tokens, clipping)', () => {
    const a: Param = { name: 'a', shape: [2], data: Float32Array.of(1, 2), decay: true };
    const b: Param = { name: 'a', shape: [2], data: Float32Array.of(1, 2), decay: true };
    const sa = newAdamWState([a]), sb = newAdamWState([b]);
    const o = { beta1: 0.9, beta2: 0.999, eps: 1e-3, weightDecay: 0 };
    adamwStep([a], new Map([['a', Float32Array.of(0.004, -0.002)]]), sa, 0.1, o);
    adamwStep([b], new Map([['a', Float32Array.of(0.04, -0.02)]]), sb, 0.1, o, 0.1);
    expect(Array.from(b.data)).toEqual(Array.from(a.data));
  });

  it('global norm and clip coefficient as torch.nn.utils.clip_grad_norm_', () => {
    const g = new Map([['x', Float32Array.of(3, 0)], ['y', Float32Array.of(0, 4)]]);
    expect(globalGradNorm(g)).toBe(5);
    expect(globalGradNorm(g, 0.5)).toBe(2.5);
    expect(clipCoefficient(5, 1)).toBeCloseTo(1 / (5 + 1e-6), 12);
    expect(clipCoefficient(0.5, 1)).toBe(1);
    expect(clipCoefficient(100, 0)).toBe(1);
  });
});

describe('learning-rate schedules (transformers get_*_schedule_with_warmup)', () => {
  const o = { warmupSteps: 10, totalSteps: 110 };
  it('warms up linearly from 0: the first step has lr 0', () => {
    expect(lrLambda(0, { ...o, kind: 'cosine' })).toBe(0);
    expect(lrLambda(5, { ...o, kind: 'linear' })).toBe(0.5);
    expect(lrAt(1, { ...o, kind: 'constant', baseLr: 2e-5 })).toBe(0);
    expect(lrAt(11, { ...o, kind: 'constant', baseLr: 2e-5 })).toBe(2e-5);
  });
  it('cosine: half-cycle from 1 to 0 over the remaining steps', () => {
    expect(lrLambda(10, { ...o, kind: 'cosine' })).toBe(1);
    expect(lrLambda(60, { ...o, kind: 'cosine' })).toBeCloseTo(0.5, 12);
    expect(lrLambda(35, { ...o, kind: 'cosine' })).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)), 12);
    expect(lrLambda(110, { ...o, kind: 'cosine' })).toBeCloseTo(0, 12);
  });
  it('linear: to 0 at the last step', () => {
    expect(lrLambda(60, { ...o, kind: 'linear' })).toBe(0.5);
    expect(lrLambda(110, { ...o, kind: 'linear' })).toBe(0);
  });
  it('no warmup: constant is 1 from the first step', () => {
    expect(lrLambda(0, { warmupSteps: 0, totalSteps: 5, kind: 'constant' })).toBe(1);
  });
  it('warmup steps: explicit steps win, else ceil(total × ratio)', () => {
    expect(warmupStepsFor(1000, 0, 0.03)).toBe(30);
    expect(warmupStepsFor(10, 0, 0.03)).toBe(1);
    expect(warmupStepsFor(1000, 7, 0.03)).toBe(7);
    expect(warmupStepsFor(1000, 0, 0)).toBe(0);
  });
});
