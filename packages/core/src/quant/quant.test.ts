import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../graph/builder.js';
import { exportOnnx } from '../graph/onnx-export.js';
import { createSession } from '../runtime/session.js';
import { memoryWeight } from '../weights/refs.js';
import { dequantizeQ4, dequantizeQ8, quantizeQ4, quantizeQ8 } from './block.js';
import { matchesModule, parseQuantizeMode, readQuantizationConfig } from './layout.js';
import { int8EncodingFor, type Int8WeightEncoding } from './int8-encoding.js';
import { dequantizeLinear, floatLinear, linearInto, quantizedLinearFrom, type LinearWeight } from './linear.js';

function rand(n: number, seed: number): Float32Array {
  let x = seed >>> 0;
  return new Float32Array(n).map(() => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return (x / 2 ** 32 - 0.5) * 2;
  });
}

describe('block quantization', () => {
  it('q8: per-channel symmetric, error at most half a step per channel', () => {
    const [out, inn] = [7, 45];
    const w = rand(out * inn, 1);
    const q = quantizeQ8(w, out, inn);
    expect(q.qweight.length).toBe(out * inn);
    const back = dequantizeQ8(q, out, inn);
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inn; i++) expect(Math.abs(back[o * inn + i] - w[o * inn + i])).toBeLessThanOrEqual(q.scales[o] / 2 + 1e-7);
    }
    // The stored matrix is transposed: [in, out].
    expect(q.qweight[1 * out + 0]).toBe(Math.round(w[1] / q.scales[0]));
  });

  // Symmetric blocks clip the opposite extreme to +7 steps (Q4_0), so their bound is one step.
  it.each([false, true])('q4 (zero points: %s): blocks of 32 with a padded tail, bounded error', (zeroPoints) => {
    const [out, inn] = [5, 80]; // 3 blocks, the last one half padding
    const w = rand(out * inn, 2);
    const q = quantizeQ4(w, out, inn, { zeroPoints });
    expect(q.qweight.length).toBe(out * 3 * 16);
    expect(q.scales.length).toBe(out * 3);
    expect(q.zeros?.length).toBe(zeroPoints ? out * 2 : undefined);
    const back = dequantizeQ4(q, out, inn);
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inn; i++) {
        const s = Math.abs(q.scales[o * 3 + Math.floor(i / 32)]);
        expect(Math.abs(back[o * inn + i] - w[o * inn + i])).toBeLessThanOrEqual((zeroPoints ? s / 2 : s) + 1e-6);
      }
    }
  });

  it('q4 symmetric maps the largest magnitude of a block exactly (Q4_0)', () => {
    const w = new Float32Array(32).map((_, i) => (i === 5 ? -3 : (i % 7) / 10));
    const q = quantizeQ4(w, 1, 32);
    expect(dequantizeQ4(q, 1, 32)[5]).toBeCloseTo(-3, 6);
    expect(quantizeQ4(new Float32Array(32), 1, 32).scales[0]).toBe(-0); // an all-zero block stays zero
  });

  it('refuses bad shapes and block sizes', () => {
    expect(() => quantizeQ8(new Float32Array(5), 2, 3)).toThrow(/\[2, 3\]/);
    expect(() => quantizeQ4(new Float32Array(48), 1, 48, { blockSize: 24 })).toThrow(/power of two/);
  });
});

describe('quantized linear kernels in ORT agree with the dequantized weights', () => {
  // ORT's kernels quantize activations too (DynamicQuantizeMatMul per tensor to uint8,
  // MatMulNBits accuracy_level 4 per block to int8), so the agreement is close, not exact.
  // Full-range int8 weights against uint8 activations saturate MLAS's pair sums on x86 without
  // VNNI (int8-encoding.ts): the default encoding must be exact on whatever machine runs this,
  // and the uint8 one everywhere.
  const cases: { name: string; mode: 'q8' | 'q4'; zeroPoints?: boolean; inn: number; tol: number; int8Weights?: Int8WeightEncoding }[] = [
    { name: 'q8 DynamicQuantizeMatMul', mode: 'q8', inn: 64, tol: 0.02 },
    { name: 'q8 DynamicQuantizeMatMul, 1024 wide, this CPU\'s encoding', mode: 'q8', inn: 1024, tol: 0.02 },
    { name: 'q8 DynamicQuantizeMatMul, 1024 wide, as uint8 with zero point 128', mode: 'q8', inn: 1024, tol: 0.02, int8Weights: 'u8' },
    { name: 'q4 MatMulNBits, symmetric', mode: 'q4', inn: 64, tol: 0.02 },
    { name: 'q4 MatMulNBits, zero points, odd block count, padded tail', mode: 'q4', zeroPoints: true, inn: 80, tol: 0.02 },
  ];
  it.each(cases)('$name', async ({ mode, zeroPoints, inn, tol, int8Weights }) => {
    const out = 24, rows = 3;
    const w = rand(out * inn, 3);
    const lin = quantizedLinearFrom('layer', w, out, inn, mode, { zeroPoints });
    const deq = await dequantizeLinear(lin);
    const g = new GraphBuilder('lin');
    const x = g.input('x', 'float32', [rows, inn]);
    g.output(linearInto(g, x, lin, null, { int8Weights }), 'y');
    g.output(linearInto(g, x, floatLinear(memoryWeight('w_ref', { dtype: 'F32', shape: [out, inn], data: deq }))), 'ref');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const r = await s.run({ x: { dtype: 'float32', dims: [rows, inn], data: rand(rows * inn, 4) } });
    await s.release();
    const y = r.y.data as Float32Array, ref = r.ref.data as Float32Array;
    const scale = Math.max(...Array.from(ref, Math.abs));
    for (let i = 0; i < y.length; i++) expect(Math.abs(y[i] - ref[i]) / scale).toBeLessThan(tol);
  });

  it('a bias is added by every kernel', async () => {
    const out = 8, inn = 32;
    const w = rand(out * inn, 5);
    const b = rand(out, 6);
    const g = new GraphBuilder('bias');
    const x = g.input('x', 'float32', [1, inn]);
    const bias = g.weight('b', { dtype: 'F32', shape: [out], data: b });
    const lins: LinearWeight[] = [
      floatLinear(memoryWeight('w', { dtype: 'F32', shape: [out, inn], data: w })),
      quantizedLinearFrom('a', w, out, inn, 'q8'), quantizedLinearFrom('c', w, out, inn, 'q4'),
    ];
    lins.forEach((l, i) => g.output(linearInto(g, x, l, bias), `y${i}`));
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const r = await s.run({ x: { dtype: 'float32', dims: [1, inn], data: new Float32Array(inn) } });
    await s.release();
    for (let i = 0; i < 3; i++) expect(Array.from(r[`y${i}`].data as Float32Array)).toEqual(Array.from(b));
  });
});

describe('int8 weight encoding per CPU', () => {
  const cpuinfo = (flags: string) => `processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 ${flags} fma\n\nprocessor\t: 1\n`;
  it('int8 where the CPU multiplies it exactly (VNNI, ARM), uint8 on other x86 and where unknown', () => {
    expect(int8EncodingFor('x64', cpuinfo('avx2 avx512f avx512_vnni'))).toBe('s8');
    expect(int8EncodingFor('x64', cpuinfo('avx2 avx_vnni'))).toBe('s8');
    expect(int8EncodingFor('x64', cpuinfo('avx2 avx512f avx512bw'))).toBe('u8');
    expect(int8EncodingFor('x64', cpuinfo('avx2 avx512_vnni_x'))).toBe('u8');
    expect(int8EncodingFor('x64', null)).toBe('u8');
    expect(int8EncodingFor('arm64', null)).toBe('s8');
  });
});

describe('layout', () => {
  it('validates the config field', () => {
    expect(readQuantizationConfig(undefined)).toBeNull();
    expect(readQuantizationConfig({ format: 'mobillama-v', version: 1, weights: 'q4', block_size: 32 })?.weights).toBe('q4');
    expect(() => readQuantizationConfig({ format: 'gptq', version: 1, weights: 'q4' })).toThrow(/GPTQ/);
    expect(() => readQuantizationConfig({ format: 'mobillama-v', version: 2, weights: 'q4' })).toThrow(/version 2/);
    expect(() => readQuantizationConfig({ format: 'mobillama-v', version: 1, weights: 'q3' })).toThrow(/q3/);
    expect(() => readQuantizationConfig({ format: 'mobillama-v', version: 1, weights: 'q4', block_size: 20 })).toThrow(/block_size/);
  });

  it('matches module patterns by name component', () => {
    const p = ['model.layers.*.self_attn.q_proj', 'lm_head'];
    expect(matchesModule('model.layers.12.self_attn.q_proj', p)).toBe(true);
    expect(matchesModule('model.layers.1.2.self_attn.q_proj', p)).toBe(false);
    expect(matchesModule('lm_head', p)).toBe(true);
    expect(matchesModule('xlm_head', p)).toBe(false);
  });

  it('parses quantization modes', () => {
    expect(parseQuantizeMode('Q4')).toBe('q4');
    expect(parseQuantizeMode('int8')).toBe('q8');
    expect(() => parseQuantizeMode('q2')).toThrow(/q2/);
  });
});
