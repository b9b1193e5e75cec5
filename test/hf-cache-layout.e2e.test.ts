import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runCli } from './cli-helpers.js';

// The Hugging Face hub cache keeps every file of a snapshot as a symlink into blobs/
// (models--org--name/snapshots/<rev>/config.json -> ../../blobs/<sha256>). ORT checks that
// external data, once resolved, lies inside the folder it was given: a model folder of
// symlinks must still load.

// fp32 weights are read by ORT from the files in place (fp16 ones are widened in memory).
const MODEL = `${ROOT}packages/pipeline/fixtures/tiny-llava`;
const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

async function filesUnder(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = join(prefix, e.name);
    if (e.isDirectory()) out.push(...await filesUnder(dir, rel));
    else out.push(rel);
  }
  return out;
}

/** `src` copied into a hub-cache layout; returns the snapshot folder. */
async function asHubCache(src: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'hub-'));
  dirs.push(root);
  const repo = join(root, 'models--org--tiny-llava');
  const snapshot = join(repo, 'snapshots', '0123abc');
  await mkdir(join(repo, 'blobs'), { recursive: true });
  for (const rel of await filesUnder(src)) {
    const bytes = await readFile(join(src, rel));
    const blob = join(repo, 'blobs', createHash('sha256').update(bytes).digest('hex'));
    await writeFile(blob, bytes);
    const link = join(snapshot, rel);
    await mkdir(dirname(link), { recursive: true });
    await symlink(relative(dirname(link), blob), link);
  }
  return snapshot;
}

describe('a model folder of symlinks (Hugging Face hub cache layout)', () => {
  it('answers exactly as the plain folder does', async () => {
    const snapshot = await asHubCache(MODEL);
    const args = ['--image', join(MODEL, 'image.png'), 'Describe it.', '--template', 'plain', '--max-new-tokens', '6', '--json'];
    const plain = await runCli(['ask', '--model', MODEL, ...args]);
    const linked = await runCli(['ask', '--model', snapshot, ...args]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(linked.code, linked.stderr).toBe(0);
    const tokens = (r: { stdout: string }) => (JSON.parse(r.stdout) as { tokens: number[] }).tokens;
    expect(tokens(linked)).toEqual(tokens(plain));
  });
});
