import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, writeSafetensors } from './safetensors.js';
import { WeightFileError } from './types.js';
import type { HostTensor } from '../tensor.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'st-test-'));
});

const tensors: Record<string, HostTensor> = {
  a: { dtype: 'F32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, -6.5) },
  b: { dtype: 'F16', shape: [2], data: Uint16Array.of(0x3c00, 0xc000) },
  c: { dtype: 'BF16', shape: [1], data: Uint16Array.of(0x3f80) },
  d: { dtype: 'I64', shape: [3], data: BigInt64Array.of(1n, -2n, 3n ** 30n) },
  e: { dtype: 'I32', shape: [], data: Int32Array.of(7) },
  f: { dtype: 'BOOL', shape: [2, 1], data: Uint8Array.of(1, 0) },
};

/** Writes a file with a hand-made header and `dataLen` zero bytes of data. */
async function writeRaw(name: string, header: unknown, dataLen: number, headerLenOverride?: bigint): Promise<string> {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  const p = join(dir, name);
  await writeFile(p, Buffer.concat([len, json, Buffer.alloc(dataLen)]));
  return p;
}

describe('safetensors', () => {
  it('round-trips every dtype, shape and metadata', async () => {
    const p = join(dir, 'rt.safetensors');
    await writeSafetensors(p, tensors, { format: 'pt' });
    const src = await openSafetensors(p);
    expect(src.names().sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const r = await src.read(name);
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect(Array.from(r.data as ArrayLike<number>)).toEqual(Array.from(t.data as ArrayLike<number>));
    }
    // locations point at the exact bytes, 8-byte aligned as the reference writer does
    const raw = await readFile(p);
    const loc = src.info('a').location!;
    expect(loc.byteOffset % 8).toBe(0);
    expect(new Float32Array(raw.buffer.slice(raw.byteOffset + loc.byteOffset, raw.byteOffset + loc.byteOffset + loc.byteLength))).toEqual(tensors.a.data);
    await src.close();
  });

  it('writes atomically: no temp files left, a failed write keeps the old file', async () => {
    const p = join(dir, 'atomic.safetensors');
    await writeSafetensors(p, { a: tensors.a });
    const before = await readFile(p);
    const bad = { x: { dtype: 'F32', shape: [4], data: new Float32Array(3) } } as Record<string, HostTensor>;
    await expect(writeSafetensors(p, bad)).rejects.toThrow(/do not match/);
    expect(await readFile(p)).toEqual(before);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('rejects an absurd header length, naming the file', async () => {
    const p = await writeRaw('absurd.safetensors', {}, 0, 1n << 40n);
    await expect(openSafetensors(p)).rejects.toThrow(/absurd\.safetensors: header length/);
  });

  it('rejects truncated data, naming the tensor', async () => {
    const p = await writeRaw('trunc.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8);
    await expect(openSafetensors(p)).rejects.toThrow(/trunc\.safetensors: tensor w: .*truncated/);
  });

  it('rejects overlapping tensors', async () => {
    const p = await writeRaw('overlap.safetensors', {
      a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
    }, 24);
    await expect(openSafetensors(p)).rejects.toThrow(/overlap/);
  });

  it('rejects an unknown dtype and a size mismatch', async () => {
    const p1 = await writeRaw('dtype.safetensors', { w: { dtype: 'Q4', shape: [4], data_offsets: [0, 2] } }, 2);
    await expect(openSafetensors(p1)).rejects.toThrow(/tensor w: unknown dtype "Q4"/);
    const p2 = await writeRaw('size.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, 12);
    await expect(openSafetensors(p2)).rejects.toThrow(/tensor w: 12 bytes stored/);
  });

  it('rejects non-JSON headers and tiny files with WeightFileError', async () => {
    const p = join(dir, 'junk.safetensors');
    await writeFile(p, Buffer.from('\x05\x00\x00\x00\x00\x00\x00\x00hello'));
    await expect(openSafetensors(p)).rejects.toBeInstanceOf(WeightFileError);
    await writeFile(p, 'abc');
    await expect(openSafetensors(p)).rejects.toThrow(/too short/);
    await expect(openSafetensors(join(dir, 'missing.safetensors'))).rejects.toThrow(/cannot open .*ENOENT/);
  });
});
