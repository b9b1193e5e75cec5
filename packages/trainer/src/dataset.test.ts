import v8 from 'node:v8';
import vm from 'node:vm';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlavaDataset } from './dataset.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'trainer-ds-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

async function file(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

const turn = (from: string, value: string) => ({ from, value });

describe('LlavaDataset', () => {
  it('indexes a JSON array whose strings hold brackets, quotes, escapes and non-ASCII text', async () => {
    const entries = [
      { id: 'a', image: 'x/1.jpg', conversations: [turn('human', '<image>\nWhat } is ] this { [ "quoted" \\ \\" ?'), turn('gpt', 'Ünïcödé ✓ 🐱')] },
      { id: 7, conversations: [turn('human', 'text only'), turn('gpt', 'ok')] },
      { conversations: [turn('human', 'no id'), turn('gpt', 'fine')] },
    ];
    const p = await file('a.json', `\ufeff[\n ${entries.map((e) => JSON.stringify(e, null, 1)).join(' ,\n')} ]\n`);
    const ds = await LlavaDataset.open(p);
    expect(ds.length).toBe(3);
    expect(await ds.get(0)).toEqual({ id: 'a', image: 'x/1.jpg', conversations: entries[0].conversations });
    expect(await ds.get(1)).toEqual({ id: '7', conversations: entries[1].conversations });
    expect((await ds.get(2)).id).toBe('#2');
    await ds.close();
  });

  it('reads JSON Lines', async () => {
    const p = await file('b.jsonl', [1, 2, 3].map((i) => JSON.stringify({ id: i, conversations: [turn('human', `q${i}`), turn('gpt', `a${i}`)] })).join('\n') + '\n');
    const ds = await LlavaDataset.open(p);
    expect(ds.length).toBe(3);
    expect((await ds.get(2)).conversations[1].value).toBe('a3');
    await ds.close();
  });

  it.each([
    ['', /empty/],
    ['"just a string"', /not a JSON array/],
    ['[1, 2]', /entry 0 is not an object/],
    ['[]', /no samples/],
    ['[{"id": 1, "conversations": []', /truncated/],
    ['[{"a": "}"}]]', /unexpected data|unbalanced/],
  ])('refuses %j with a DataError', async (text, msg) => {
    const p = await file('bad.json', text);
    await expect(LlavaDataset.open(p)).rejects.toMatchObject({ name: 'DataError', message: expect.stringMatching(msg) });
  });

  it('names the sample id of a malformed entry when it is read', async () => {
    const p = await file('c.json', JSON.stringify([{ id: 'good', conversations: [turn('human', 'q')] }, { id: 'bad-one', conversations: [{ from: 'human' }] }]));
    const ds = await LlavaDataset.open(p);
    await expect(ds.get(1)).rejects.toMatchObject({ name: 'DataError', message: expect.stringMatching(/sample bad-one: conversations\[0\]/) });
    await ds.close();
  });

  it('a missing file is a DataError', async () => {
    await expect(LlavaDataset.open(join(dir, 'nope.json'))).rejects.toMatchObject({ name: 'DataError', message: expect.stringMatching(/ENOENT/) });
  });

  it('a 200k-entry file is indexed in one pass with memory far below its size', async () => {
    const p = join(dir, 'big.json');
    const out = createWriteStream(p);
    const N = 200_000;
    out.write('[');
    for (let i = 0; i < N; i++) {
      const e = { id: `s${i}`, image: `coco/train2017/${String(i).padStart(12, '0')}.jpg`, conversations: [turn('human', '<image>\nWhat is in the picture? Describe it in detail please.'), turn('gpt', `A photo number ${i} with {braces} and "quotes".`)] };
      out.write(`${i ? ',' : ''}${JSON.stringify(e)}`);
    }
    out.end(']');
    await new Promise<void>((r) => out.on('close', () => r()));
    // Measure what stays reachable, not garbage the collector hasn't reached yet.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage();
    const ds = await LlavaDataset.open(p);
    gc();
    const after = process.memoryUsage();
    const size = (await import('node:fs')).statSync(p).size;
    expect(ds.length).toBe(N);
    expect((await ds.get(N - 1)).id).toBe(`s${N - 1}`);
    expect((await ds.get(123_456)).conversations[1].value).toContain('123456');
    // 16 bytes per entry (doubling arrays) + one 1 MiB read buffer, against ~37 MB of JSON.
    const grew = (after.heapUsed - before.heapUsed) + (after.arrayBuffers - before.arrayBuffers);
    expect(grew).toBeLessThan(size / 4);
    await ds.close();
  });
});
