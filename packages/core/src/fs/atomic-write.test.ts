import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileAtomic, writeFileAtomicWith } from './atomic-write.js';

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });
const tempDir = async () => { const d = await mkdtemp(join(tmpdir(), 'atomic-')); dirs.push(d); return d; };

describe('writeFileAtomicWith', () => {
  it('writes the file and returns what the writer returns', async () => {
    const d = await tempDir();
    const n = await writeFileAtomicWith(join(d, 'a.bin'), async (fh) => { await fh.write(Buffer.from('hello')); return 5; });
    expect(n).toBe(5);
    expect(await readFile(join(d, 'a.bin'), 'utf8')).toBe('hello');
    expect(await readdir(d)).toEqual(['a.bin']);
  });

  it('leaves the old file whole and no temp file behind when the writer fails midway', async () => {
    const d = await tempDir();
    const f = join(d, 'model.safetensors');
    await writeFile(f, 'old contents');
    await expect(writeFileAtomicWith(f, async (fh) => {
      await fh.write(Buffer.from('half of the new'));
      throw new Error('disk full');
    })).rejects.toThrow('disk full');
    expect(await readFile(f, 'utf8')).toBe('old contents');
    expect(await readdir(d)).toEqual(['model.safetensors']);
  });

  it('writeFileAtomic takes a string or chunks', async () => {
    const d = await tempDir();
    await writeFileAtomic(join(d, 's.json'), '{"a":1}\n');
    await writeFileAtomic(join(d, 'c.bin'), [new Uint8Array([1, 2]), new Uint8Array([3])]);
    expect(await readFile(join(d, 's.json'), 'utf8')).toBe('{"a":1}\n');
    expect([...await readFile(join(d, 'c.bin'))]).toEqual([1, 2, 3]);
  });
});
