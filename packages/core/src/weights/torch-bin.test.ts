import { existsSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bytesOf, toFloat32, type HostTensor } from '../tensor.js';
import { unpickle, PyDict, TensorRef } from './pickle.js';
import { openShardedIndex } from './sharded.js';
import { openTorchBin } from './torch-bin.js';
import { WeightFileError, type WeightSource } from './types.js';

// Fixtures come from scripts/fixtures/make_torch_bin_fixtures.py (real torch.save output).
const FIXTURES = fileURLToPath(new URL('../../fixtures/torch-bin/', import.meta.url));
const fixture = (...p: string[]): string => join(FIXTURES, ...p);

interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
  strides: number[];
  storage_offset: number;
  contiguous: boolean;
  byte_offset: number | null;
  byte_length: number;
  alias_group: number;
  values: (number | string)[];
}

function expected(name: string): ExpectedTensor[] {
  return (JSON.parse(readFileSync(fixture(name), 'utf8')) as { tensors: ExpectedTensor[] }).tensors;
}

/** Flat values as the fixture JSON writes them: floats widened exactly, int64 as strings. */
function flatValues(t: HostTensor): (number | string)[] {
  switch (t.dtype) {
    case 'F16': case 'BF16': return Array.from(toFloat32(t).data);
    case 'I64': return Array.from(t.data as BigInt64Array, (v) => v.toString());
    default: return Array.from(t.data as ArrayLike<number>);
  }
}

async function rejection(p: Promise<unknown>): Promise<WeightFileError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(WeightFileError);
    return e as WeightFileError;
  }
  throw new Error('expected a rejection');
}

async function readAt(file: string, offset: number, length: number): Promise<Uint8Array> {
  const h = await open(file, 'r');
  try {
    const buf = new Uint8Array(length);
    await h.read(buf, 0, length, offset);
    return buf;
  } finally {
    await h.close();
  }
}

async function withSource<T>(src: Promise<WeightSource>, fn: (s: WeightSource) => Promise<T>): Promise<T> {
  const s = await src;
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

describe('openTorchBin: values match torch', () => {
  const files = ['fp32.bin', 'bf16.bin', 'f16.bin', 'ints.bin', 'shared.bin', 'zip64.bin', 'littleendian.bin'];
  for (const f of files) {
    it(f, async () => {
      const exp = expected(f.replace('.bin', '.expected.json'));
      await withSource(openTorchBin(fixture(f)), async (src) => {
        expect(src.names()).toEqual(exp.map((t) => t.name));
        for (const e of exp) {
          const info = src.info(e.name);
          expect(info.dtype).toBe(e.dtype);
          expect(info.shape).toEqual(e.shape);
          const t = await src.read(e.name);
          expect(t.dtype).toBe(e.dtype);
          expect(t.shape).toEqual(e.shape);
          expect(flatValues(t), e.name).toEqual(e.values);
          if (e.dtype === 'BOOL') expect(t.data).toBeInstanceOf(Uint8Array);
          if (e.dtype === 'F16' || e.dtype === 'BF16') expect(t.data).toBeInstanceOf(Uint16Array);

          // location only for contiguous tensors, pointing at exactly these bytes.
          if (e.contiguous) {
            expect(info.location, e.name).toEqual({ file: fixture(f), byteOffset: e.byte_offset, byteLength: e.byte_length });
            const onDisk = await readAt(fixture(f), info.location!.byteOffset, info.location!.byteLength);
            expect(onDisk).toEqual(new Uint8Array(bytesOf(t.data)));
          } else {
            expect(info.location, e.name).toBeUndefined();
          }
        }
        // Same storage + offset + shape + strides <=> same storageKey.
        for (const a of exp) {
          for (const b of exp) {
            expect(src.info(a.name).storageKey === src.info(b.name).storageKey, `${a.name} vs ${b.name}`)
              .toBe(a.alias_group === b.alias_group);
          }
        }
      });
    });
  }
});

describe('openTorchBin: shared storages and views', () => {
  it('dedups b = a and nn.Parameter, materializes transposes, slices and steps', async () => {
    await withSource(openTorchBin(fixture('shared.bin')), async (src) => {
      const key = (n: string): string => src.info(n).storageKey;
      expect(key('a_alias')).toBe(key('a'));
      expect(key('param')).toBe(key('a'));
      expect(key('a_t')).not.toBe(key('a'));
      expect(key('a_rows')).not.toBe(key('a'));
      for (const n of ['a_t', 'a_cols', 'a_step']) expect(src.info(n).location).toBeUndefined();
      // a = arange(24).reshape(4, 6) * 0.5 - 3
      const a = (i: number, j: number): number => (i * 6 + j) * 0.5 - 3;
      expect(Array.from((await src.read('a_cols')).data as Float32Array))
        .toEqual([0, 1, 2, 3].flatMap((i) => [a(i, 1), a(i, 2)]));
      expect(Array.from((await src.read('a_t')).data as Float32Array))
        .toEqual([0, 1, 2, 3, 4, 5].flatMap((j) => [0, 1, 2, 3].map((i) => a(i, j))));
      expect(Array.from((await src.read('a_step')).data as Float32Array)).toEqual([a(0, 0), a(0, 3), a(2, 0), a(2, 3)]);
      const elem = await src.read('a_elem');
      expect(elem.shape).toEqual([]);
      expect(Array.from(elem.data as Float32Array)).toEqual([a(3, 5)]);
      expect((await src.read('empty')).data.length).toBe(0);
    });
  });

  it('reports unknown names and reads after close', async () => {
    const src = await openTorchBin(fixture('fp32.bin'));
    expect(src.has('lm_head.weight')).toBe(true);
    expect(src.has('nope')).toBe(false);
    expect(() => src.info('nope')).toThrow(WeightFileError);
    await src.close();
    const e = await rejection(src.read('lm_head.weight'));
    expect(e.message).toContain('fp32.bin');
  });
});

describe('openTorchBin: hostile pickles are refused, nothing runs', () => {
  const markers = JSON.parse(readFileSync(fixture('hostile.markers.json'), 'utf8')) as Record<string, string>;
  const cases: [string, string][] = [
    ['hostile-posix-system.bin', 'posix.system'],
    ['hostile-builtins-eval.bin', 'builtins.eval'],
    ['hostile-stack-global.bin', 'os.system'],
  ];
  for (const [file, global] of cases) {
    it(`${file} -> ${global}`, async () => {
      const marker = markers[file];
      rmSync(marker, { force: true });
      const e = await rejection(openTorchBin(fixture(file)));
      expect(e.message).toContain(`refusing to load ${fixture(file)}: pickle references ${global}, which a state dict never needs`);
      expect(existsSync(marker)).toBe(false);
    });
  }

  it('refuses unknown opcodes by name and calls of storage classes', () => {
    // PROTO 2, INST 'posix system' ... : INST is a code path a state dict never uses.
    const inst = Uint8Array.from([0x80, 0x02, 0x28, ...Buffer.from('iposix\nsystem\n'), 0x2e]);
    expect(() => unpickle(inst, { source: 'x.bin' })).toThrow(/x\.bin.*unsupported pickle opcode INST \(0x69\)/);
    const call = Uint8Array.from([0x80, 0x02, ...Buffer.from('ctorch\nFloatStorage\n'), 0x29, 0x52, 0x2e]);
    expect(() => unpickle(call, { source: 'x.bin' })).toThrow(/calls torch\.FloatStorage/);
    const truncated = Uint8Array.from([0x80, 0x02, 0x58, 0x10, 0, 0, 0, 0x61]);
    expect(() => unpickle(truncated, { source: 'x.bin' })).toThrow(/truncated/);
  });

  it('builds a state dict from protocol 4 opcodes (FRAME, MEMOIZE, STACK_GLOBAL)', () => {
    // {'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 2), 0, (2,), (1,), False, OrderedDict())}
    const s = (x: string): number[] => [0x8c, x.length, ...Buffer.from(x)];
    const body = [
      0x7d, 0x94, ...s('w'), 0x94,
      ...s('torch._utils'), ...s('_rebuild_tensor_v2'), 0x93, 0x94,
      0x28, 0x28, ...s('storage'), ...s('torch'), ...s('FloatStorage'), 0x93, ...s('0'), ...s('cpu'), 0x4b, 2, 0x74, 0x51,
      0x4b, 0, 0x4b, 2, 0x85, 0x4b, 1, 0x85, 0x89, ...s('collections'), ...s('OrderedDict'), 0x93, 0x29, 0x52, 0x74,
      0x52, 0x73, 0x2e,
    ];
    const frame = [0x95, body.length, 0, 0, 0, 0, 0, 0, 0];
    const root = unpickle(Uint8Array.from([0x80, 0x04, ...frame, ...body]), { source: 'p4.bin' });
    expect(root).toBeInstanceOf(PyDict);
    const w = (root as PyDict).map.get('w');
    expect(w).toBeInstanceOf(TensorRef);
    expect((w as TensorRef).storage).toMatchObject({ dtype: 'F32', key: '0', numel: 2 });
    expect((w as TensorRef).shape).toEqual([2]);
  });
});

describe('openTorchBin: unsupported and broken files', () => {
  it('legacy (pre-zip) format asks for a re-save', async () => {
    const e = await rejection(openTorchBin(fixture('legacy.bin')));
    expect(e.message).toContain(fixture('legacy.bin'));
    expect(e.message).toMatch(/legacy \(pre-zip\) PyTorch checkpoint format/);
    expect(e.message).toMatch(/re-save it with a current torch/);
  });

  it('big-endian checkpoints are refused', async () => {
    const e = await rejection(openTorchBin(fixture('bigendian.bin')));
    expect(e.message).toContain('bigendian.bin');
    expect(e.message).toMatch(/big-endian/);
  });

  it('compressed entries are refused', async () => {
    const e = await rejection(openTorchBin(fixture('compressed.bin')));
    expect(e.message).toMatch(/compressed \(method 8\)/);
    expect(e.message).toContain('compressed.bin');
  });

  for (const f of ['truncated.bin', 'corrupt.bin', 'not-a-checkpoint.bin']) {
    it(`${f} is a WeightFileError naming the file`, async () => {
      const e = await rejection(openTorchBin(fixture(f)));
      expect(e.message).toContain(fixture(f));
    });
  }

  it('a missing file is a WeightFileError', async () => {
    const e = await rejection(openTorchBin(fixture('does-not-exist.bin')));
    expect(e.message).toContain('does-not-exist.bin');
  });

  // fp32.bin stores no shared storages, so data/3 belongs to its 4th tensor.
  const fourth = expected('fp32.expected.json')[3].name;
  it('a missing storage entry names the tensor and the entry', async () => {
    const e = await rejection(openTorchBin(fixture('missing-storage.bin')));
    expect(e.message).toContain('missing-storage.bin');
    expect(e.message).toContain(`"${fourth}"`);
    expect(e.message).toMatch(/fp32\/data\/3 is missing/);
  });

  it('a storage entry too short for its tensor names the tensor', async () => {
    const e = await rejection(openTorchBin(fixture('short-storage.bin')));
    expect(e.message).toContain('short-storage.bin');
    expect(e.message).toContain(`"${fourth}"`);
    expect(e.message).toContain('fp32/data/3');
  });
});

describe('openShardedIndex', () => {
  it('merges pytorch_model-0000X-of-00002.bin shards', async () => {
    const exp = (JSON.parse(readFileSync(fixture('sharded', 'expected.json'), 'utf8')) as {
      tensors: { name: string; file: string; dtype: string; shape: number[]; values: number[] }[];
    }).tensors;
    const opened: string[] = [];
    const openShard = (f: string): Promise<WeightSource> => { opened.push(basename(f)); return openTorchBin(f); };
    await withSource(openShardedIndex(fixture('sharded', 'pytorch_model.bin.index.json'), openShard), async (src) => {
      expect(opened).toEqual(['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin']);
      expect(src.names()).toEqual(exp.map((t) => t.name));
      for (const e of exp) {
        const info = src.info(e.name);
        expect(info.shape).toEqual(e.shape);
        expect(info.location?.file).toBe(fixture('sharded', e.file));
        expect(flatValues(await src.read(e.name))).toEqual(e.values);
      }
    });
  });

  it('names the tensor and shard when the shard lacks a mapped tensor', async () => {
    const e = await rejection(openShardedIndex(fixture('sharded', 'bad-missing-tensor.index.json'), openTorchBin));
    expect(e.message).toContain('bad-missing-tensor.index.json');
    expect(e.message).toContain('"ghost.weight"');
    expect(e.message).toContain('pytorch_model-00001-of-00002.bin');
  });

  it('names the shard and a tensor when a shard file is missing', async () => {
    const e = await rejection(openShardedIndex(fixture('sharded', 'bad-missing-shard.index.json'), openTorchBin));
    expect(e.message).toContain('pytorch_model-00003-of-00003.bin');
    expect(e.message).toContain('"lm_head.weight"');
  });
});
