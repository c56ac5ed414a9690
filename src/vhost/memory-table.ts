// Mapping a frontend's memory table: each region fd is checked with fstat (a region past
// the end of its file would SIGBUS the process on first touch) and against the port's
// memory policy, mapped once, then closed.
import { closeAll, fileSystemType, fstatSize, HUGETLBFS_MAGIC, mmapShared, munmap, sealAgainstShrinking, SysError, TMPFS_MAGIC } from '../sys/libc.ts';
import type { MemoryRegion } from '../virtio/guest-memory.ts';
import { ProtocolError, type MemRegionDesc } from './protocol.ts';

export interface MappedRegion extends MemRegionDesc {
  /** where the whole file range [0, mmapOffset + size) is mapped */
  mapAddr: bigint;
  mapLength: number;
}

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
 * Maps every region; on any failure unmaps what was mapped. Always closes the fds.
 * A region file is trusted when it is on tmpfs or hugetlbfs (page cache that is never
 * written back to a disk) and sealed against shrinking (QEMU's memory-backend-memfd is;
 * DPDK virtio-user's memfds and any file under a path are not): a file shrunk under a
 * mapping raises SIGBUS, which kills the whole process. Under the 'strict' policy any
 * other file is refused; under 'warn' it is mapped and `warnings` says what is wrong.
 */
export function mapRegions(
  descs: readonly MemRegionDesc[],
  fds: readonly number[],
  policy: MemoryPolicy,
  request: 'SET_MEM_TABLE' | 'ADD_MEM_REG' = 'SET_MEM_TABLE',
): { regions: MappedRegion[]; warnings: string[] } {
  const mapped: MappedRegion[] = [];
  const warnings: string[] = [];
  const which = (i: number) => (request === 'SET_MEM_TABLE' ? `region ${i}` : 'the region');
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
      mapped.push({ ...d, mapAddr: mmapShared(fds[i], mapLength), mapLength });
    });
    return { regions: mapped, warnings };
  } catch (err) {
    unmapRegions(mapped);
    throw err instanceof SysError ? new ProtocolError(`${request}: ${err.message}`) : err;
  } finally {
    closeAll(fds);
  }
}

export function unmapRegions(regions: readonly MappedRegion[]): void {
  for (const r of regions) munmap(r.mapAddr, r.mapLength);
}

/** What a PMD needs to view the regions. */
export function regionsForDataplane(regions: readonly MappedRegion[]): MemoryRegion[] {
  return regions.map((r) => ({
    guestPhysAddr: r.guestPhysAddr,
    userAddr: r.userAddr,
    size: r.size,
    hostAddr: (r.mapAddr + BigInt(r.mmapOffset)).toString(),
  }));
}
