/**
 * Errors a user can cause (a bad path, a corrupt file, a bad flag) and fix: printed as one
 * line, exit code 2. Everything else is a bug: one line too, exit code 1 (stack with DEBUG=1).
 */
export const USER_ERROR_NAMES = new Set([
  'WeightFileError', 'ConfigError', 'ImageError', 'UsageError', 'TokenizerError', 'DataError', 'InputError',
]);

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof Error && USER_ERROR_NAMES.has(e.name)) return 2;
  if (e instanceof Error && 'code' in e && typeof e.code === 'string' && e.code.startsWith('commander.')) return 2;
  return 1;
}

export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0];
}
