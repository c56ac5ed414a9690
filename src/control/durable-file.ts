// Replacing a file so that a crash or a power cut leaves the old file or the new one, never
// a part: written whole into a file beside it, flushed to disk, renamed over it, and the
// rename flushed. A path that is a symbolic link keeps it: the file it points to is replaced.
import { closeSync, fsyncSync, openSync, realpathSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** Replaces the file `path` names with `text` (mode 0600); returns the path written. Throws, with the file as it was, if that fails. */
export function replaceFileDurably(path: string, text: string): string {
  const target = existingTarget(path);
  const tmp = `${target}.${process.pid}.tmp`;
  try {
    writeDurably(tmp, text);
    renameSync(tmp, target);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // not a file of ours (the open failed on it)
    }
    throw new Error(`${target} is as it was: ${(err as Error).message}`);
  }
  syncDirectory(dirname(target));
  return target;
}

/** The file a path names, through its symbolic links; the path itself if there is no file (removed since the start). */
function existingTarget(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/** Writes a file (mode 0600) whole and flushes it to disk before returning. */
function writeDurably(path: string, text: string): void {
  const bytes = Buffer.from(text);
  const fd = openSync(path, 'w', 0o600);
  try {
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Flushes a directory's entries (a rename in it) to disk; where that is not possible, the rename stands as it is. */
function syncDirectory(path: string): void {
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // a file system without directory fsync
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
