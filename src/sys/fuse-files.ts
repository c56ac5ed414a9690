// Files on FUSE among the fds a frontend sends. Such a file's daemon is a process of the
// frontend's choosing: close() of any fd of it sends FLUSH to the daemon and waits for the
// answer, and fstat() and fstatfs() ask it too, so a frontend that stops its daemon would
// hold whichever thread makes the call. What a file is on is read here without a call to
// its file system: /proc/self/fdinfo names the fd's mount (mnt_id), and the mountinfo of
// this process, or of the frontend's (whose mount namespace may differ), names its type.
import { readFileSync, readlinkSync } from 'node:fs';

/**
 * The FUSE file system type ("fuse.bindfs", "fuseblk") of the file fd refers to, or null
 * for anything else (an eventfd, a socket, a memfd, a file on tmpfs, or a mount found in
 * neither table).
 */
export function fuseFileSystem(fd: number, peerPid: number): string | null {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
  // Anonymous inodes, sockets and pipes: no file system of anyone's.
  if (!target.startsWith('/')) return null;
  let mountId: number;
  try {
    const m = /^mnt_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (m === null) return null;
    mountId = Number(m[1]);
  } catch {
    return null;
  }
  const type = mountType('/proc/self/mountinfo', mountId) ?? (peerPid > 0 ? mountType(`/proc/${peerPid}/mountinfo`, mountId) : null);
  return type !== null && (type === 'fuse' || type === 'fuseblk' || type.startsWith('fuse.')) ? type : null;
}

/** The type of mount `id` in a mountinfo table ("ID PARENT MAJ:MIN ROOT POINT OPTIONS [FIELDS] - TYPE SOURCE ..."), or null. */
function mountType(table: string, id: number): string | null {
  let text: string;
  try {
    text = readFileSync(table, 'utf8');
  } catch {
    return null;
  }
  const prefix = `${id} `;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    return dash > 0 && dash + 1 < fields.length ? fields[dash + 1] : null;
  }
  return null;
}
