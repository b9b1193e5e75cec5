import { spawn } from 'node:child_process';
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

/** A user-facing failure: exit code 2, exactly one line on stderr, no stack trace. */
export function expectCleanFailure(r: CliResult): string {
  if (r.code !== 2) throw new Error(`expected exit code 2, got ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  if (lines.length !== 1 || /\n\s+at /.test(r.stderr)) throw new Error(`expected one stderr line, got: ${r.stderr}`);
  return lines[0];
}
