import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { bytesOf, floatToHalf, numel, type HostTensor } from '../tensor.js';
import { openTorchBin } from './torch-bin.js';
import { contiguousStrides, torchArchiveName, writeTorchBin, type WriteTorchBinOptions } from './torch-bin-writer.js';
import type { WeightSource } from './types.js';

// The committed fixture: written by writeTorchBin (set WRITE_TORCH_BIN_FIXTURE=1 to
// rewrite it) and checked once with real torch.load by
// scripts/fixtures/check_torch_bin_writer.py, which records its verdict next to it.
const FIXTURES = fileURLToPath(new URL('../../fixtures/torch-bin-writer/', import.meta.url));

const tmp = mkdtempSync(join(tmpdir(), 'torch-bin-writer-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A small deterministic value per index, exactly representable in bf16 and f16. */
const val = (i: number, k: number): number => ((i * 7 + k * 13) % 29 - 14) / 8;

function f32(shape: number[], k: number): HostTensor {
  return { dtype: 'F32', shape, data: Float32Array.from({ length: numel(shape) }, (_, i) => val(i, k)) };
}

/** Every dtype, a scalar, an empty tensor, a shared storage and separate identical copies. */
function fixtureTensors(): { tensors: [string, HostTensor][]; share: Record<string, string> } {
  const n = 6;
  const shared = f32([2, 3], 1);
  const tensors: [string, HostTensor][] = [
    ['f32', f32([3, 4], 0)],
    ['f16', { dtype: 'F16', shape: [2, 3], data: Uint16Array.from({ length: n }, (_, i) => floatToHalf(val(i, 2))) }],
    // bf16 bits: the top half of the float32 bits (values are exact in bf16).
    ['bf16', { dtype: 'BF16', shape: [n], data: Uint16Array.from(new Uint32Array(Float32Array.from({ length: n }, (_, i) => val(i, 3)).buffer), (b) => b >>> 16) }],
    ['i64', { dtype: 'I64', shape: [2, 2], data: BigInt64Array.from([-1n, 0n, 2n ** 40n, -(2n ** 62n)]) }],
    ['i32', { dtype: 'I32', shape: [3], data: Int32Array.from([-7, 0, 2 ** 31 - 1]) }],
    ['bool', { dtype: 'BOOL', shape: [2, 2], data: Uint8Array.from([1, 0, 0, 1]) }],
    ['scalar', { dtype: 'F32', shape: [], data: Float32Array.of(2.5) }],
    ['empty', { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) }],
    // MobiLlama's shared FFN under torch.save: one storage, several names.
    ['layers.0.mlp.weight', shared],
    ['layers.1.mlp.weight', shared],
    ['layers.2.mlp.weight', shared],
    // The released fp32 checkpoint: identical values, separate storages.
    ['copy.0', f32([2, 3], 1)],
    ['copy.1', f32([2, 3], 1)],
  ];
  return { tensors, share: { 'layers.1.mlp.weight': 'layers.0.mlp.weight', 'layers.2.mlp.weight': 'layers.0.mlp.weight' } };
}

async function withSource<T>(path: string, fn: (s: WeightSource) => Promise<T>): Promise<T> {
  const s = await openTorchBin(path);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

/** Round trip through our reader: names, dtypes, shapes, bytes, sharing, alignment. */
async function expectRoundTrip(path: string, tensors: [string, HostTensor][], share: Record<string, string>): Promise<void> {
  await withSource(path, async (src) => {
    expect(src.names()).toEqual(tensors.map(([n]) => n));
    for (const [name, t] of tensors) {
      const info = src.info(name);
      expect(info.dtype, name).toBe(t.dtype);
      expect(info.shape, name).toEqual(t.shape);
      expect(info.location, name).toBeDefined();
      expect(info.location!.byteOffset % 64, `${name} is 64-byte aligned`).toBe(0);
      const back = await src.read(name);
      expect(new Uint8Array(bytesOf(back.data)), name).toEqual(new Uint8Array(bytesOf(t.data)));
    }
    for (const [a] of tensors) {
      for (const [b] of tensors) {
        const sameStorage = (share[a] ?? a) === (share[b] ?? b);
        expect(src.info(a).storageKey === src.info(b).storageKey, `${a} vs ${b}`).toBe(sameStorage);
      }
    }
  });
}

describe('writeTorchBin', () => {
  it('round-trips every dtype, shared storages and identical copies through openTorchBin', async () => {
    const { tensors, share } = fixtureTensors();
    const path = join(tmp, 'roundtrip.bin');
    const r = await writeTorchBin(path, tensors, { shareStorageOf: share });
    expect(r).toMatchObject({ tensors: tensors.length, storages: tensors.length - 2, zip64: false });
    expect(r.bytes).toBe((await readFile(path)).length);
    await expectRoundTrip(path, tensors, share);
    // Nothing else is left in the folder (the temp file was renamed).
    expect(readdirSync(tmp).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('writes the layout torch.save writes: <stem>/data.pkl first, data/N, version 3', async () => {
    const path = join(tmp, 'pytorch_model-00001-of-00002.bin');
    await writeTorchBin(path, { a: f32([2], 0), b: f32([3], 1) });
    const bytes = await readFile(path);
    // Central directory names, in order.
    const eocd = bytes.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    const count = bytes.readUInt16LE(eocd + 10);
    let p = bytes.readUInt32LE(eocd + 16);
    const names: string[] = [];
    for (let i = 0; i < count; i++) {
      const nameLen = bytes.readUInt16LE(p + 28), extra = bytes.readUInt16LE(p + 30), comment = bytes.readUInt16LE(p + 32);
      expect(bytes.readUInt16LE(p + 10), 'stored').toBe(0);
      names.push(bytes.subarray(p + 46, p + 46 + nameLen).toString());
      p += 46 + nameLen + extra + comment;
    }
    const stem = 'pytorch_model-00001-of-00002';
    expect(names).toEqual([`${stem}/data.pkl`, `${stem}/data/0`, `${stem}/data/1`, `${stem}/version`]);
    expect(bytes.includes(Buffer.from(`${stem}/version`))).toBe(true);
    expect(bytes[0]).toBe(0x50);
  });

  it('accepts a lazy (async) iterable and writes one tensor at a time', async () => {
    const path = join(tmp, 'lazy.bin');
    const produced: string[] = [];
    async function* gen(): AsyncGenerator<[string, HostTensor]> {
      for (let k = 0; k < 4; k++) {
        produced.push(`t${k}`);
        yield [`t${k}`, f32([5, 7], k)];
      }
    }
    const r = await writeTorchBin(path, gen());
    expect(produced).toEqual(['t0', 't1', 't2', 't3']);
    expect(r.storages).toBe(4);
    await expectRoundTrip(path, [0, 1, 2, 3].map((k) => [`t${k}`, f32([5, 7], k)]), {});
  });

  it('a shareStorageOf function works like the map; the alias bytes are never read', async () => {
    const path = join(tmp, 'fnshare.bin');
    const w = f32([4, 4], 3);
    const hollow: HostTensor = { dtype: 'F32', shape: [4, 4], data: new Float32Array(0) };
    const opts: WriteTorchBinOptions = { shareStorageOf: (n) => (n === 'b' ? 'a' : undefined) };
    await writeTorchBin(path, [['a', w], ['b', hollow]], opts);
    await withSource(path, async (src) => {
      expect(src.info('b').storageKey).toBe(src.info('a').storageKey);
      expect(Array.from((await src.read('b')).data as Float32Array)).toEqual(Array.from(w.data as Float32Array));
    });
  });

  it('ZIP64 records (forced) are read back by our reader', async () => {
    const { tensors, share } = fixtureTensors();
    const path = join(tmp, 'zip64.bin');
    const r = await writeTorchBin(path, tensors, { shareStorageOf: share, zip64: 'always' });
    expect(r.zip64).toBe(true);
    const bytes = await readFile(path);
    expect(bytes.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06]))).toBe(true); // zip64 end record
    expect(bytes.includes(Buffer.from([0x50, 0x4b, 0x06, 0x07]))).toBe(true); // and its locator
    await expectRoundTrip(path, tensors, share);
  });

  it('refuses bad input and leaves no file behind (and an existing file untouched)', async () => {
    const path = join(tmp, 'bad.bin');
    await writeFile(path, 'old');
    const cases: [string, () => Promise<unknown>][] = [
      ['not written before', () => writeTorchBin(path, [['a', f32([2], 0)], ['b', f32([2], 0)]], { shareStorageOf: { b: 'zzz' } })],
      ['cannot share', () => writeTorchBin(path, [['a', f32([2], 0)], ['b', f32([3], 0)]], { shareStorageOf: { b: 'a' } })],
      ['do not match', () => writeTorchBin(path, [['a', { dtype: 'F32', shape: [3], data: new Float32Array(2) }]])],
      ['given twice', () => writeTorchBin(path, [['a', f32([2], 0)], ['a', f32([2], 0)]])],
    ];
    for (const [msg, run] of cases) await expect(run(), msg).rejects.toThrow(msg);
    // A generator that throws midway: the temp file is removed.
    function* failing(): Generator<[string, HostTensor]> {
      yield ['a', f32([2], 0)];
      throw new Error('producer failed');
    }
    await expect(writeTorchBin(path, failing())).rejects.toThrow('producer failed');
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('names the archive folder after the file stem, strides as torch computes them', () => {
    expect(torchArchiveName('/x/pytorch_model.bin')).toBe('pytorch_model');
    expect(torchArchiveName('a.b.pt')).toBe('a.b');
    expect(torchArchiveName('noext')).toBe('noext');
    expect(torchArchiveName('.bin')).toBe('archive');
    expect(contiguousStrides([2, 3, 4])).toEqual([12, 4, 1]);
    expect(contiguousStrides([0, 3])).toEqual([3, 1]);
    expect(contiguousStrides([])).toEqual([]);
  });
});

describe('writeTorchBin: committed fixture checked by torch.load', () => {
  const bin = join(FIXTURES, 'writer.bin');
  const zip64 = join(FIXTURES, 'writer-zip64.bin');

  it('the writer reproduces the committed fixtures byte for byte', async () => {
    const { tensors, share } = fixtureTensors();
    if (process.env.WRITE_TORCH_BIN_FIXTURE === '1') {
      await writeTorchBin(bin, tensors, { shareStorageOf: share });
      await writeTorchBin(zip64, tensors, { shareStorageOf: share, zip64: 'always' });
      writeFileSync(join(FIXTURES, 'writer.expected.json'), `${JSON.stringify({
        note: 'written by packages/core/src/weights/torch-bin-writer.test.ts (WRITE_TORCH_BIN_FIXTURE=1)',
        shared: share,
        tensors: tensors.map(([name, t]) => ({
          name, dtype: t.dtype, shape: t.shape,
          values: t.dtype === 'I64' ? Array.from(t.data as BigInt64Array, String)
            : t.dtype === 'F16' || t.dtype === 'BF16' ? Array.from(t.data as Uint16Array) // raw bits
              : Array.from(t.data as ArrayLike<number>),
        })),
      }, null, 1)}\n`);
    }
    for (const [file, z] of [[bin, false], [zip64, true]] as const) {
      // Same file name in another folder: the archive folder inside follows the name.
      mkdirSync(join(tmp, 'again'), { recursive: true });
      const again = join(tmp, 'again', basename(file));
      await writeTorchBin(again, tensors, { shareStorageOf: share, zip64: z ? 'always' : 'auto' });
      expect(await readFile(again)).toEqual(await readFile(file));
      await expectRoundTrip(file, tensors, share);
    }
  });

  it('torch.load accepted it (recorded by the python check; documentation only, CI has no torch)', () => {
    const checked = join(FIXTURES, 'writer.torch-check.json');
    expect(existsSync(checked)).toBe(true);
    const r = JSON.parse(readFileSync(checked, 'utf8')) as { ok: boolean; torch: string; files: string[] };
    expect(r.ok).toBe(true);
    expect(r.files).toEqual(['writer.bin', 'writer-zip64.bin']);
  });
});
