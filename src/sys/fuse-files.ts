// Files on FUSE among the fds a frontend sends. Such a file's daemon is a process of the
// frontend's choosing: close() of any fd of it sends FLUSH to the daemon and waits for the
// answer, and fstat() and fstatfs() ask it too, so a frontend that stops its daemon would
// hold whichever thread makes the call. A file on an overlay mount reaches its layers' file
// systems in those calls, and a layer may be on FUSE. What a file is on is read here
// without a call to its file system: /proc/self/fdinfo names the fd's mount (mnt_id), and
// the mountinfo of this process, or of the frontend's (whose mount namespace may differ),
// names its type. A mount in neither (made in a mount namespace of a third process, or
// detached from every namespace while a file of it stays open) is told by its file
// system's device: the kernel's own (memfds, huge-page memfds) are known, and every FUSE
// mount has a backing device of its own, which /sys/class/bdi lists under its number.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { closeAll, fileDevice, hugePageMemfdCreate, memfdCreate } from './libc.ts';

/**
 * For each of fds, what the file it refers to is on, when a close, stat or statfs of it may
 * wait for a process outside the kernel: "fuse.bindfs" (its mount's type), "overlay (whose
 * layers may be on FUSE)", "fuse or nfs (device 0:39, mounted where ...)", or a file system
 * on such a mount that is neither the kernel's own nor FUSE's ("a file system vrouter
 * cannot name (device 0:55, ...)"), which may be an overlay too. Null for anything else:
 * an eventfd, a socket, a memfd, a file on tmpfs or hugetlbfs that vrouter or the frontend
 * has mounted. Each mountinfo table is read once for all of them (a memory table's eight
 * memfds are in neither).
 */
export function fuseFileSystems(fds: readonly number[], peerPid: number): (string | null)[] {
  const tables = new Map<string, string | null>();
  const table = (path: string) => {
    if (!tables.has(path)) tables.set(path, readTable(path));
    return tables.get(path)!;
  };
  return fds.map((fd) => fuseFileSystem(fd, peerPid, table));
}

/** fuseFileSystems() for one fd; `table` gives a mountinfo table's text (null: unreadable). */
function fuseFileSystem(fd: number, peerPid: number, table: (path: string) => string | null): string | null {
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
  const type = mountType(table('/proc/self/mountinfo'), mountId) ?? (peerPid > 0 ? mountType(table(`/proc/${peerPid}/mountinfo`), mountId) : null);
  if (type === null) return unseenMountFileSystem(fd);
  if (type === 'overlay') return 'overlay (whose layers may be on FUSE)';
  return type === 'fuse' || type === 'fuseblk' || type.startsWith('fuse.') ? type : null;
}

function readTable(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The type of mount `id` in a mountinfo table's text ("ID PARENT MAJ:MIN ROOT POINT OPTIONS [FIELDS] - TYPE SOURCE ..."), or null. */
function mountType(text: string | null, id: number): string | null {
  if (text === null) return null;
  const prefix = `${id} `;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    return dash > 0 && dash + 1 < fields.length ? fields[dash + 1] : null;
  }
  return null;
}

/**
 * fuseFileSystems() for a file on a mount neither vrouter nor the frontend has. The
 * kernel's own mounts (those of memfds and huge-page memfds, in no mountinfo) are known by
 * their devices. FUSE names each mount's backing device by the file system's device
 * number ("0:39"; a fuseblk mount's "8:1-fuseblk"), as NFS does, the one other file system
 * with a device of major 0 that does. Anything else there cannot be named without asking
 * it (an overlay stacked on FUSE among them), and is refused too: a frontend whose process
 * vrouter cannot see (another pid namespace's) has its memory files on mounts of vrouter's
 * namespace, or in memfds. Without /sys (a container that hides it) a FUSE mount there is
 * refused as one of those.
 */
function unseenMountFileSystem(fd: number): string | null {
  let device: { major: number; minor: number };
  try {
    device = fileDevice(fd);
  } catch (err) {
    return `a file system vrouter cannot name (${(err as Error).message}, mounted where neither vrouter nor the frontend sees it)`;
  }
  const name = `${device.major}:${device.minor}`;
  if (kernelFileDevices().has(name)) return null;
  const where = `device ${name}, mounted where neither vrouter nor the frontend sees it`;
  if (existsSync(`/sys/class/bdi/${name}-fuseblk`)) return `fuseblk (${where})`;
  if (device.major === 0 && existsSync(`/sys/class/bdi/${name}`)) return `fuse or nfs (${where})`;
  return `a file system vrouter cannot name (${where})`;
}

let kernelDevices: Set<string> | null = null;

/** The devices of the kernel's memfd mounts: a memfd's, and a huge-page memfd's of every size the kernel has (/sys/kernel/mm/hugepages). */
function kernelFileDevices(): Set<string> {
  if (kernelDevices !== null) return kernelDevices;
  const devices = new Set<string>();
  const fds: number[] = [];
  // What cannot be made here (no huge pages of a size, a memfd refused) no frontend sends either.
  try {
    fds.push(memfdCreate('vrouter-device-probe', { sealing: false }));
    for (const dir of existsSync('/sys/kernel/mm/hugepages') ? readdirSync('/sys/kernel/mm/hugepages') : []) {
      const kb = /^hugepages-(\d+)kB$/.exec(dir);
      const fd = kb === null ? -1 : hugePageMemfdCreate('vrouter-device-probe', Number(kb[1]) * 1024);
      if (fd >= 0) fds.push(fd);
    }
    for (const fd of fds) {
      const d = fileDevice(fd);
      devices.add(`${d.major}:${d.minor}`);
    }
  } catch {
    // The devices found so far.
  } finally {
    closeAll(fds);
  }
  kernelDevices = devices;
  return devices;
}
