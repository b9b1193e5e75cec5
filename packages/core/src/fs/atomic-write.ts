import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Writes `path` through a temp file beside it: `write` fills the file, which is fsynced and
 * renamed over `path` only when `write` succeeds. A failure (or a kill) never leaves a
 * half-written `path`; the temp file is removed on failure.
 */
export async function writeFileAtomicWith<T>(path: string, write: (fh: FileHandle) => Promise<T>): Promise<T> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, 'w');
  let result: T;
  try {
    result = await write(fh);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  return result;
}

/** Writes chunks (or a string, as UTF-8) to `path` atomically (see writeFileAtomicWith). */
export async function writeFileAtomic(path: string, chunks: readonly Uint8Array[] | string): Promise<void> {
  await writeFileAtomicWith(path, async (fh) => {
    if (typeof chunks === 'string') await fh.writeFile(chunks, 'utf8');
    else for (const c of chunks) await writeAll(fh, c);
  });
}

/** Writes a buffer whole, in pieces of at most 1 GiB (one write() call cannot take more than 2 GiB). */
export async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length; off += 1 << 30) await fh.write(bytes, off, Math.min(1 << 30, bytes.length - off));
}
