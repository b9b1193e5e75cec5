import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors, type HostTensor } from '@mobillama/core';
import { BIN, ROOT, expectCleanFailure, runCli } from './cli-helpers.js';

// `mobillama-v train` end to end on the trainer's tiny golden model (packages/trainer/fixtures/tiny-vlm).

const FIX = `${ROOT}packages/trainer/fixtures/tiny-vlm/`;
const VISION = `${ROOT}packages/vision/fixtures/clip-tiny`;
const MODEL = ['--vision', VISION, '--decoder', `${FIX}decoder`, '--image-folder', `${FIX}images`, '--threads', '2'];

const dirs: string[] = [];
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'train-e2e-'));
  dirs.push(d);
  return d;
}

async function tensors(path: string): Promise<Record<string, HostTensor>> {
  const src = await openSafetensors(path);
  const out: Record<string, HostTensor> = {};
  for (const n of src.names()) out[n] = await src.read(n);
  await src.close();
  return out;
}

async function logLines(dir: string): Promise<Record<string, number>[]> {
  const text = await readFile(join(dir, 'log.jsonl'), 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, number>);
}

describe('mobillama-v train', () => {
  it('stage 1 from --config (flags win): log.jsonl, loss.svg, checkpoints, mm_projector.safetensors', async () => {
    const out = await tmp();
    const cfg = join(out, 'train.json');
    await writeFile(cfg, JSON.stringify({
      stage: 'pretrain', vision: VISION, decoder: `${FIX}decoder`, data: `${FIX}pretrain.json`, image_folder: `${FIX}images`,
      output: join(out, 'run'), 'max-steps': 99, saveSteps: 2, 'batch-size': 2, 'no-shuffle': true, threads: 2,
    }));
    const r = await runCli(['train', '--config', cfg, '--max-steps', '3']);
    expect(r.code, r.stderr).toBe(0);
    const run = join(out, 'run');
    expect(JSON.parse(r.stdout)).toMatchObject({ steps: 3, output: run, resumed_from: null });
    const log = await logLines(run);
    expect(log.map((l) => l.step)).toEqual([1, 2, 3]);
    for (const l of log) {
      expect(Object.keys(l).sort()).toEqual(['grad_norm', 'loss', 'lr', 'seconds', 'step', 'tokens_per_s']);
      expect(l.loss).toBeGreaterThan(0);
      expect(l.tokens_per_s).toBeGreaterThan(0);
    }
    expect(log[0].lr).toBe(0); // warmup ratio 0.03 → 1 warmup step, lr 0 first (as HF)
    expect(log[1].lr).toBeCloseTo(1e-3, 12);
    // Not a TTY: one plain line per step on stderr.
    expect(r.stderr.split('\n').filter((l) => l.startsWith('step ')).length).toBe(3);
    expect(await readFile(join(run, 'loss.svg'), 'utf8')).toMatch(/^<svg/);
    for (const f of ['checkpoint-2/optimizer.safetensors', 'checkpoint-2/trainer_state.json', 'checkpoint-3/mm_projector.safetensors', 'train_config.json']) {
      expect(existsSync(join(run, f)), f).toBe(true);
    }
    const proj = await tensors(join(run, 'mm_projector.safetensors'));
    expect(Object.keys(proj).sort()).toEqual(['model.mm_projector.0.bias', 'model.mm_projector.0.weight', 'model.mm_projector.2.bias', 'model.mm_projector.2.weight']);
    expect(proj['model.mm_projector.0.weight'].shape).toEqual([48, 32]);
  });

  it('the golden step from the command line leaves the projector where torch.optim.AdamW does', async () => {
    const out = await tmp();
    const r = await runCli(['train', '--stage', 'pretrain', '--template', 'vicuna_v1', ...MODEL, '--projector', `${FIX}projector.safetensors`,
      '--data', `${FIX}data.json`, '--output', out, '--learning-rate', '1e-3', '--lr-scheduler', 'constant', '--warmup-ratio', '0',
      '--max-grad-norm', '0', '--no-shuffle', '--batch-size', '2', '--max-steps', '1', '--weight-decay', '0.1']);
    expect(r.code, r.stderr).toBe(0);
    const got = await tensors(join(out, 'mm_projector.safetensors'));
    const golden = await tensors(`${FIX}golden.safetensors`);
    for (const k of Object.keys(got)) {
      const a = got[k].data as Float32Array, b = golden[`after_wd0.1.${k}`].data as Float64Array;
      let d = 0;
      for (let i = 0; i < b.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
      expect(d, k).toBeLessThan(1e-6);
    }
  });

  it('a run killed with SIGKILL and resumed logs exactly the losses of an uninterrupted run', async () => {
    const args = ['train', '--stage', 'lora', '--lora-r', '4', '--lora-alpha', '8', ...MODEL, '--data', `${FIX}data.json`,
      '--max-steps', '60', '--save-steps', '5', '--save-total-limit', '2', '--seed', '11', '--learning-rate', '1e-3'];
    const whole = await tmp(), killed = await tmp();
    const r = await runCli([...args, '--output', whole]);
    expect(r.code, r.stderr).toBe(0);

    const child = spawn(process.execPath, [BIN, ...args, '--output', killed], { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
    for (;;) {
      if ((await logLines(killed)).length >= 12) break;
      await new Promise((res) => setTimeout(res, 2));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const before = await logLines(killed);
    expect(before.length).toBeLessThan(60); // killed mid-run

    const resumed = await runCli([...args, '--output', killed, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(JSON.parse(resumed.stdout).resumed_from).toMatch(/checkpoint-\d+$/);
    const a = await logLines(whole), b = await logLines(killed);
    expect(b.map((l) => l.step)).toEqual(a.map((l) => l.step));
    expect(b.map((l) => [l.loss, l.grad_norm, l.lr])).toEqual(a.map((l) => [l.loss, l.grad_norm, l.lr]));
    for (const f of ['mm_projector.safetensors', 'adapter_model.safetensors']) {
      expect(Buffer.compare(await readFile(join(whole, f)), await readFile(join(killed, f))), f).toBe(0);
    }
    for (const d of [whole, killed]) expect((await readdir(d)).filter((e) => e.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-55', 'checkpoint-60']);
  });

  it('finetune writes a decoder the other commands can load', async () => {
    const out = await tmp();
    const r = await runCli(['train', '--stage', 'finetune', ...MODEL, '--data', `${FIX}text.json`, '--output', out, '--max-steps', '1', '--eval-data', `${FIX}text.json`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/eval: loss \d/);
    expect(JSON.parse((await readFile(join(out, 'eval.jsonl'), 'utf8')).trim())).toMatchObject({ step: 1, eval_tokens: expect.any(Number) });
    const g = await runCli(['generate', '--decoder', join(out, 'decoder'), '--prompt-ids', '1,5,6', '--max-new-tokens', '2', '--json']);
    expect(g.code, g.stderr).toBe(0);
    expect(JSON.parse(g.stdout).tokens).toHaveLength(2);
  });

  it.each([
    [['--stage', 'pretrain', ...MODEL, '--output', '/tmp/x'], /--data is required/],
    [['--stage', 'stage9', ...MODEL, '--data', `${FIX}data.json`, '--output', '/tmp/x'], /--stage must be one of pretrain, finetune, lora/],
    [['--stage', 'pretrain', ...MODEL, '--data', `${FIX}data.json`, '--output', '/tmp/x', '--learning-rate', 'fast'], /--learning-rate must be a number/],
    [['--stage', 'pretrain', ...MODEL, '--data', `${FIX}data.json`, '--output', '/tmp/x', '--batch-size', '0'], /--batch-size must be a positive integer/],
    [['--config', '/no/such.json'], /cannot read --config/],
  ])('bad usage exits 2 with one line (%#)', async (args, msg) => {
    expect(expectCleanFailure(await runCli(['train', ...args]))).toMatch(msg);
  });

  it('data problems name the sample and exit 2', async () => {
    const out = await tmp();
    const bad = join(out, 'bad.json');
    await writeFile(bad, JSON.stringify([
      { id: 'ok', image: 'red.png', conversations: [{ from: 'human', value: '<image>\nHi' }, { from: 'gpt', value: 'red' }] },
      { id: 'no-such-image', image: 'missing.png', conversations: [{ from: 'human', value: '<image>\nHi' }, { from: 'gpt', value: 'x' }] },
    ]));
    const r = await runCli(['train', '--stage', 'pretrain', ...MODEL, '--data', bad, '--output', join(out, 'o'), '--batch-size', '2', '--max-steps', '2']);
    expect(expectCleanFailure(r)).toMatch(/sample no-such-image: cannot read image .*missing\.png/);
    // Met mid-run (after step 1 was logged), the error is still the last line, exit 2, no stack.
    const mid = await runCli(['train', '--stage', 'pretrain', ...MODEL, '--data', bad, '--output', join(out, 'o2'), '--no-shuffle', '--max-steps', '2']);
    expect(mid.code).toBe(2);
    expect(mid.stderr.trimEnd().split('\n').at(-1)).toMatch(/^mobillama-v: sample no-such-image: cannot read image/);
    expect(mid.stderr).not.toMatch(/\n\s+at /);
    const cfgBad = join(out, 'c.json');
    await writeFile(cfgBad, JSON.stringify({ stage: 'pretrain', learning_rat: 1 }));
    expect(expectCleanFailure(await runCli(['train', '--config', cfgBad]))).toMatch(/unknown key "learning_rat"/);
  });

  it('refuses an output folder that already has checkpoints unless --resume', async () => {
    const out = await tmp();
    const args = ['train', '--stage', 'pretrain', ...MODEL, '--data', `${FIX}pretrain.json`, '--output', out, '--max-steps', '1'];
    expect((await runCli(args)).code).toBe(0);
    expect(expectCleanFailure(await runCli(args))).toMatch(/already holds checkpoint-1: pass --resume/);
    const again = await runCli([...args, '--resume']);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ steps: 1, resumed_from: expect.stringMatching(/checkpoint-1$/) });
  });
});
