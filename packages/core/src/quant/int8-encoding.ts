import { readFileSync } from 'node:fs';
import { arch } from 'node:os';

/**
 * How int8 weights go into DynamicQuantizeMatMul. It quantizes the activations to uint8; on
 * x86 without VNNI, MLAS multiplies uint8 × int8 pairs with vpmaddubsw, whose int16 pair sums
 * saturate on full-range int8 weights (measured on an AVX2 EPYC: 18% relative error against
 * 0.4%, top-1 agreement with fp32 down to ~50%). There the same values go in as uint8 with zero
 * point 128 (`u8`), which MLAS multiplies without saturating; with VNNI (and on ARM) int8
 * (`s8`) is exact and the fastest kernel.
 */
export type Int8WeightEncoding = 's8' | 'u8';

/** The encoding for a CPU, from its architecture and /proc/cpuinfo text (null: unknown, so the safe one on x86). */
export function int8EncodingFor(cpuArch: string, cpuinfo: string | null): Int8WeightEncoding {
  if (cpuArch !== 'x64' && cpuArch !== 'ia32') return 's8';
  if (cpuinfo === null) return 'u8';
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1].split(/\s+/) ?? [];
  return flags.includes('avx512_vnni') || flags.includes('avx_vnni') ? 's8' : 'u8';
}

let cached: Int8WeightEncoding | null = null;

/** This machine's encoding; MOBILLAMA_INT8_WEIGHTS=s8|u8 overrides it (benchmarks, tests). */
export function int8WeightEncoding(): Int8WeightEncoding {
  const forced = process.env.MOBILLAMA_INT8_WEIGHTS;
  if (forced === 's8' || forced === 'u8') return forced;
  if (cached === null) {
    let info: string | null = null;
    try { info = readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux: unknown */ }
    cached = int8EncodingFor(arch(), info);
  }
  return cached;
}
