import { readFile } from 'node:fs/promises';

/** A model folder's configuration is missing, unreadable or inconsistent with its weights. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Reads a JSON file; failures are one-line ConfigErrors naming the file. */
export async function readJsonFile<T>(path: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ConfigError(`${path}: not valid JSON`);
  }
}
