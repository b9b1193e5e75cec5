import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeGgml } from './ggml-types.js';
import { openGguf } from './reader.js';
import { GGUF_MAGIC, gguf, writeGguf, type GgufValue } from './writer.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'gguf-writer-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

const values = (n: number, k = 1): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 0.3);

describe('GGUF writer', () => {
  it('writes the v3 header, every metadata type and aligned tensors that read back', async () => {
    const path = join(dir, 'a.gguf');
    const md: [string, GgufValue][] = [
      ['general.architecture', gguf.str('llama')],
      ['t.u8', { type: 'uint8', value: 200 }],
      ['t.i8', { type: 'int8', value: -5 }],
      ['t.u16', { type: 'uint16', value: 65000 }],
      ['t.i16', { type: 'int16', value: -300 }],
      ['t.u32', gguf.u32(4_000_000_000)],
      ['t.i32', gguf.i32(-7)],
      ['t.f32', gguf.f32(1e-5)],
      ['t.f64', { type: 'float64', value: Math.PI }],
      ['t.u64', { type: 'uint64', value: 2n ** 40n }],
      ['t.i64', { type: 'int64', value: -(2n ** 40n) }],
      ['t.bool', gguf.bool(true)],
      ['t.strs', gguf.strings(['▁the', '<0x0A>', ''])],
      ['t.f32s', gguf.f32s(Float32Array.of(-1.5, 0))],
      ['t.i32s', gguf.i32s(Int32Array.of(1, 6, 3))],
    ];
    const a = values(64 * 3), b = values(5, 2), c = values(32 * 4, 3), d = values(32 * 2, 4);
    const res = await writeGguf(path, md, [
      { name: 'a', ne: [64, 3], type: 'F32', data: () => encodeGgml('F32', a) },
      { name: 'b', ne: [5], type: 'F32', data: () => encodeGgml('F32', b) },
      { name: 'c', ne: [32, 4], type: 'Q8_0', data: async () => encodeGgml('Q8_0', c) },
      { name: 'd', ne: [32, 2], type: 'Q4_0', data: () => encodeGgml('Q4_0', d) },
      { name: 'e', ne: [32, 2], type: 'F16', data: () => encodeGgml('F16', d) },
    ]);
    const bytes = await readFile(path);
    expect(bytes.length).toBe(res.bytes);
    expect(bytes.readUInt32LE(0)).toBe(GGUF_MAGIC);
    expect(bytes.toString('latin1', 0, 4)).toBe('GGUF');
    expect(bytes.readUInt32LE(4)).toBe(3);
    expect(bytes.readBigUInt64LE(8)).toBe(5n);
    expect(bytes.readBigUInt64LE(16)).toBe(BigInt(md.length));
    expect(res.dataOffset % 32).toBe(0);

    const f = await openGguf(path);
    try {
      expect(f.version).toBe(3);
      expect(f.metadata.get('general.architecture')).toBe('llama');
      expect(f.metadata.get('t.u8')).toBe(200);
      expect(f.metadata.get('t.i8')).toBe(-5);
      expect(f.metadata.get('t.u16')).toBe(65000);
      expect(f.metadata.get('t.i16')).toBe(-300);
      expect(f.metadata.get('t.u32')).toBe(4_000_000_000);
      expect(f.metadata.get('t.i32')).toBe(-7);
      expect(f.metadata.get('t.f32')).toBe(Math.fround(1e-5));
      expect(f.metadata.get('t.f64')).toBe(Math.PI);
      expect(f.metadata.get('t.u64')).toBe(2n ** 40n);
      expect(f.metadata.get('t.i64')).toBe(-(2n ** 40n));
      expect(f.metadata.get('t.bool')).toBe(true);
      expect(f.metadata.get('t.strs')).toEqual(['▁the', '<0x0A>', '']);
      expect(f.metadata.get('t.f32s')).toEqual([-1.5, 0]);
      expect(f.metadata.get('t.i32s')).toEqual([1, 6, 3]);
      expect(f.metadataTypes.get('t.f32')).toBe('float32');
      expect(f.metadataTypes.get('t.u32')).toBe('uint32');
      expect(f.dataOffset).toBe(res.dataOffset);
      expect(f.tensors.map((t) => [t.name, t.type, t.ne])).toEqual([
        ['a', 'F32', [64, 3]], ['b', 'F32', [5]], ['c', 'Q8_0', [32, 4]], ['d', 'Q4_0', [32, 2]], ['e', 'F16', [32, 2]],
      ]);
      for (const t of f.tensors) expect((t.fileOffset - f.dataOffset) % 32).toBe(0);
      expect(Array.from(await f.readTensor('a'))).toEqual(Array.from(a));
      expect(Array.from(await f.readTensor('b'))).toEqual(Array.from(b));
      const cBack = await f.readTensor('c');
      cBack.forEach((v, i) => expect(Math.abs(v - c[i])).toBeLessThan(0.3 / 127));
      const dBack = await f.readTensor('d');
      dBack.forEach((v, i) => expect(Math.abs(v - d[i])).toBeLessThan(0.3 / 7));
      expect(Buffer.from(await f.readTensorBytes('d'))).toEqual(Buffer.from(encodeGgml('Q4_0', d)));
    } finally {
      await f.close();
    }
  });

  it('refuses wrong byte counts and leaves no file or temp file behind', async () => {
    const path = join(dir, 'bad.gguf');
    await expect(writeGguf(path, [], [{ name: 'x', ne: [32], type: 'F32', data: () => new Uint8Array(12) }]))
      .rejects.toThrow(/produced 12 bytes, expected 128/);
    expect((await readdir(dir)).filter((f) => f.includes('bad'))).toEqual([]);
    await expect(writeGguf(path, [], [{ name: 'x', ne: [48], type: 'Q4_0', data: () => new Uint8Array(0) }])).rejects.toThrow(/multiple of 32/);
    await expect(writeGguf(path, [], [
      { name: 'x', ne: [1], type: 'F32', data: () => new Uint8Array(4) },
      { name: 'x', ne: [1], type: 'F32', data: () => new Uint8Array(4) },
    ])).rejects.toThrow(/twice/);
  });

  it('writes general.alignment for a non-default alignment and aligns to it', async () => {
    const path = join(dir, 'al.gguf');
    await writeGguf(path, [['general.architecture', gguf.str('llama')]], [
      { name: 'x', ne: [3], type: 'F32', data: () => encodeGgml('F32', values(3)) },
      { name: 'y', ne: [3], type: 'F32', data: () => encodeGgml('F32', values(3)) },
    ], { alignment: 64 });
    const f = await openGguf(path);
    expect(f.alignment).toBe(64);
    expect(f.metadata.get('general.alignment')).toBe(64);
    expect(f.dataOffset % 64).toBe(0);
    expect(f.tensors[1].fileOffset - f.tensors[0].fileOffset).toBe(64);
    await f.close();
  });
});
