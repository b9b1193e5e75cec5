import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = `${ROOT}packages/cli/bin/mobillama-v.js`;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `mobillama-v` command in a child process. */
export function runCli(args: readonly string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Runs a TypeScript file under the repository as a user runs it (`node --import tsx FILE ARGS`). */
export function runTsx(file: string, args: readonly string[] = []): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { cwd: ROOT, env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end();
  });
}

/** A user-facing failure: exit code 2, exactly one line on stderr, no stack trace. */
export function expectCleanFailure(r: CliResult): string {
  if (r.code !== 2) throw new Error(`expected exit code 2, got ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  if (lines.length !== 1 || /\n\s+at /.test(r.stderr)) throw new Error(`expected one stderr line, got: ${r.stderr}`);
  return lines[0];
}

/** The shipped micro model (models/mobillama-v-micro). */
export const MICRO_MODEL = `${ROOT}models/mobillama-v-micro`;

/** The micro model's recipe data settings, as its training.json records them. */
export interface MicroDataRecipe {
  heldoutSeed: number;
  heldoutImages: number;
  heldoutQaPerImage: number;
  kinds: string[];
  colors: string[];
}

export async function microDataRecipe(): Promise<MicroDataRecipe> {
  return (JSON.parse(await readFile(`${MICRO_MODEL}/training.json`, 'utf8')) as { recipe: { data: MicroDataRecipe } }).recipe.data;
}

/** `data shapes` into `out`, in the micro model's world (its kinds and colours). */
export async function writeMicroWorldShapes(out: string, count: number, seed: number, qaPerImage: number): Promise<void> {
  const d = await microDataRecipe();
  const r = await runCli(['data', 'shapes', '--out', out, '--count', String(count), '--seed', String(seed), '--qa-per-image', String(qaPerImage),
    '--shapes', d.kinds.join(','), '--colors', d.colors.join(',')]);
  if (r.code !== 0) throw new Error(`data shapes failed (${r.code}): ${r.stderr}`);
}
