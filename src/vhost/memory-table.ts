// A frontend's memory table: each region fd is checked with fstat (a region past the end
// of its file would SIGBUS the data plane on first touch) and against the port's memory
// policy, then kept: the data-plane process maps it (and a new one maps it again), the
// control thread never does.
import { closeAll, fileSystemType, fstatSize, HUGETLBFS_MAGIC, sealAgainstShrinking, SysError, TMPFS_MAGIC } from '../sys/libc.ts';
import type { GuestRegion } from './dataplane-link.ts';
import { ProtocolError, type MemRegionDesc } from './protocol.ts';

/** A region of a memory table and its file, held while the region is in force. */
export interface HeldRegion extends MemRegionDesc {
  fd: number;
  /** names it to the data plane, which maps it once */
  id: number;
}

let nextRegionId = 1;
/** A name for a region (or another file) the data plane is to map. */
export const newRegionId = (): number => nextRegionId++;

/** strict: refuse guest memory a frontend could shrink under vrouter; warn: accept and log it */
export type MemoryPolicy = 'strict' | 'warn';

/** Names for the f_type of file systems guest memory is found on by mistake. */
const FILE_SYSTEM_NAMES = new Map<number, string>([
  [0xef53, 'ext2/ext3/ext4'],
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0x794c7630, 'overlayfs'],
  [0x6969, 'nfs'],
]);

/**
 * Checks every region and keeps its fd; on any failure closes them all.
 * A region file is trusted when it is on tmpfs or hugetlbfs (page cache that is never
 * written back to a disk) and sealed against shrinking (QEMU's memory-backend-memfd is;
 * DPDK virtio-user's memfds and any file under a path are not): a file shrunk under a
 * mapping raises SIGBUS, which kills the whole process. Under the 'strict' policy any
 * other file is refused; under 'warn' it is mapped and `warnings` says what is wrong.
 */
export function checkRegions(
  descs: readonly MemRegionDesc[],
  fds: readonly number[],
  policy: MemoryPolicy,
  request: 'SET_MEM_TABLE' | 'ADD_MEM_REG' | 'SET_INFLIGHT_FD' = 'SET_MEM_TABLE',
): { regions: HeldRegion[]; warnings: string[] } {
  const mapped: HeldRegion[] = [];
  const warnings: string[] = [];
  const which = (i: number) => (request === 'SET_MEM_TABLE' ? `region ${i}` : request === 'SET_INFLIGHT_FD' ? 'the inflight buffer' : 'the region');
  try {
    descs.forEach((d, i) => {
      const fsType = fileSystemType(fds[i]);
      if (fsType !== TMPFS_MAGIC && fsType !== HUGETLBFS_MAGIC) {
        const name = FILE_SYSTEM_NAMES.get(fsType) ?? 'a file system';
        const reason = `${which(i)}: its file is on ${name} (f_type 0x${fsType.toString(16)}), not tmpfs or hugetlbfs`;
        if (policy === 'strict') throw new ProtocolError(`${request}: ${reason}; memoryPolicy "strict" refuses it`);
        warnings.push(`${request}: ${reason}`);
      }
      // Sealed before fstat, so that the size checked is a size the file keeps.
      if (!sealAgainstShrinking(fds[i])) {
        const reason = `${which(i)}: its file cannot be sealed against shrinking (not a memfd that allows sealing)`;
        if (policy === 'strict') throw new ProtocolError(`${request}: ${reason}; memoryPolicy "strict" refuses it`);
        warnings.push(`${request}: ${reason}: a frontend that truncates it would crash vrouter`);
      }
      const fileSize = fstatSize(fds[i]);
      const mapLength = d.mmapOffset + d.size;
      if (fileSize < mapLength) {
        throw new ProtocolError(`${request}: ${which(i)} needs ${mapLength} bytes of its file, which has ${fileSize}`);
      }
      mapped.push({ ...d, fd: fds[i], id: newRegionId() });
    });
    closeAll(fds.slice(descs.length));
    return { regions: mapped, warnings };
  } catch (err) {
    closeAll(fds);
    throw err instanceof SysError ? new ProtocolError(`${request}: ${err.message}`) : err;
  }
}

/** Closes the regions' files; returns their ids, for the data plane to unmap. */
export function releaseRegions(regions: readonly HeldRegion[]): number[] {
  closeAll(regions.map((r) => r.fd));
  return regions.map((r) => r.id);
}

/** What the data plane needs to map and view the regions. */
export function regionsForDataplane(regions: readonly HeldRegion[]): GuestRegion[] {
  return regions.map((r) => ({ id: r.id, guestPhysAddr: r.guestPhysAddr, userAddr: r.userAddr, size: r.size, mmapOffset: r.mmapOffset, fd: r.fd }));
}

/**
 * Why a region in force can no longer be viewed, or null: its file shrank below what the
 * table maps (the frontend truncated it; a PMD that touches the lost pages dies of SIGBUS).
 */
export function shrunkRegion(regions: readonly HeldRegion[]): string | null {
  for (const r of regions) {
    const needed = r.mmapOffset + r.size;
    let size: number;
    try {
      size = fstatSize(r.fd);
    } catch (err) {
      return `the file of the region at guest address 0x${r.guestPhysAddr.toString(16)} cannot be checked: ${(err as Error).message}`;
    }
    if (size < needed) return `the file of the region at guest address 0x${r.guestPhysAddr.toString(16)} shrank to ${size} bytes; the memory table maps ${needed}`;
  }
  return null;
}
