import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

const TORCH = `${ROOT}packages/core/fixtures/torch-bin/`;
const DEC = `${ROOT}packages/decoder/fixtures/`;

describe('mobillama-v inspect', () => {
  it('lists a sharded .bin checkpoint folder as JSON with safetensors dtype names', async () => {
    const r = await runCli(['inspect', `${DEC}mobillama-bf16-sharded`, '--json']);
    expect(r.code).toBe(0);
    const { tensors } = JSON.parse(r.stdout) as { tensors: { name: string; dtype: string; shape: number[] }[] };
    expect(tensors.find((t) => t.name === 'lm_head.weight')).toEqual({ name: 'lm_head.weight', dtype: 'BF16', shape: [320, 64] });
    expect(tensors.some((t) => t.name === 'model.layers.1.mlp.gate_proj.weight')).toBe(false);
  });

  it('lists a safetensors file as a table', async () => {
    const r = await runCli(['inspect', `${DEC}llama-gqa-st/model.safetensors`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/model\.layers\.0\.self_attn\.k_proj\.weight\s+F32\s+\[32, 64\]/);
  });

  it.each([
    ['hostile-posix-system.bin', /posix\.system/],
    ['hostile-builtins-eval.bin', /builtins\.eval/],
    ['truncated.bin', /truncated\.bin: .*truncated/],
    ['legacy.bin', /legacy .*re-save/],
    ['corrupt.bin', /corrupt\.bin/],
  ])('refuses %s with exit code 2 and one line', async (file, msg) => {
    const r = await runCli(['inspect', TORCH + file]);
    expect(expectCleanFailure(r)).toMatch(msg);
  });

  it('a hostile pickle runs nothing', async () => {
    const markers = (await import(`${TORCH}hostile.markers.json`, { with: { type: 'json' } })).default as Record<string, string>;
    await runCli(['inspect', `${TORCH}hostile-posix-system.bin`]);
    for (const m of Object.values(markers)) expect(existsSync(m)).toBe(false);
  });

  it('a missing path is a clean failure', async () => {
    expect(expectCleanFailure(await runCli(['inspect', '/no/such/file.safetensors']))).toMatch(/ENOENT/);
  });
});

describe('mobillama-v generate', () => {
  it('--prompt-ids --json gives the PyTorch reference greedy tokens', async () => {
    const r = await runCli(['generate', '--decoder', `${DEC}mobillama-tiny-bin`, '--prompt-ids', '1,73,5,38,193,231,87',
      '--max-new-tokens', '6', '--temperature', '0', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { tokens: number[]; text: string; timings: Record<string, number> };
    expect(out.tokens).toEqual([67, 196, 231, 121, 169, 27]);
    expect(typeof out.text).toBe('string');
    expect(Object.keys(out.timings).sort()).toEqual(['decode_tok_s', 'prefill_tok_s', 'prompt_tokens', 'ttft_ms']);
  });

  it.each([
    [['--prompt-ids', '1,2'], /--decoder/],
    [['--decoder', `${DEC}mobillama-tiny-bin`], /exactly one of --prompt and --prompt-ids/],
    [['--decoder', `${DEC}mobillama-tiny-bin`, '--prompt-ids', '1,x'], /comma-separated token ids/],
    [['--decoder', `${DEC}mobillama-tiny-bin`, '--prompt-ids', '1', '--temperature', '-1'], /--temperature must be/],
    [['--decoder', '/no/such/dir', '--prompt-ids', '1'], /no\/such\/dir/],
    [['--decoder', `${DEC}mobillama-tiny-bin`, '--prompt-ids', '1,99999'], /outside the model's vocabulary/],
  ])('bad input %j is a clean failure', async (args, msg) => {
    expect(expectCleanFailure(await runCli(['generate', ...args]))).toMatch(msg);
  });
});
