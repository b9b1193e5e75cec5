import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runTsx } from './cli-helpers.js';

// The runnable examples in examples/, run as a user runs them (tsx), on the shipped micro model.

const runExample = (file: string, args: readonly string[] = []) => runTsx(join(ROOT, 'examples', file), args);

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

describe('examples/', () => {
  it('ask.ts answers about an image from code (whole and streamed)', async () => {
    const r = await runExample('ask.ts', [join(ROOT, 'examples/images/red-circle.png'), 'What color is the circle?']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Q: What color is the circle?\nA: Red.');
    expect(r.stdout).toMatch(/Q: Describe the image briefly\.\nA: *A red circle\./);
  });

  it('finetune-projector.ts trains the projector on examples/pairs and asks with it', async () => {
    const out = await mkdtemp(join(tmpdir(), 'example-projector-'));
    dirs.push(out);
    const r = await runExample('finetune-projector.ts', ['--out', out, '--steps', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.match(/^step \d+: loss [\d.]+$/gm)).toHaveLength(3);
    expect(r.stdout).toContain('trained model.mm_projector.0.weight');
    expect(existsSync(join(out, 'mm_projector.safetensors'))).toBe(true);
    expect(r.stdout).toMatch(/Q: What color is the circle\?\nA: \S/);
  });

  it('openai-client.ts serves the model in-process and calls it with the openai client', async () => {
    const r = await runExample('openai-client.ts');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Q: What color is the circle?\nA: Red.');
    expect(r.stdout).toMatch(/usage: \{"prompt_tokens":\d+,"completion_tokens":\d+,"total_tokens":\d+/);
    expect(r.stdout).toContain('streamed: Red.');
  });
});
