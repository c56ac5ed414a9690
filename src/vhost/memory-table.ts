// Mapping a frontend's memory table: each region fd is checked with fstat (a region past
// the end of its file would SIGBUS the process on first touch), mapped once, then closed.
import { closeAll, fstatSize, mmapShared, munmap, sealAgainstShrinking, SysError } from '../sys/libc.ts';
import type { MemoryRegion } from '../virtio/guest-memory.ts';
import { ProtocolError, type MemRegionDesc } from './protocol.ts';

export interface MappedRegion extends MemRegionDesc {
  /** where the whole file range [0, mmapOffset + size) is mapped */
  mapAddr: bigint;
  mapLength: number;
}

/**
 * Maps every region; on any failure unmaps what was mapped. Always closes the fds.
 * Regions whose file could not be sealed against shrinking are listed in `unsealed`:
 * the frontend could then crash the process by truncating it (QEMU seals its memfds).
 */
export function mapRegions(descs: readonly MemRegionDesc[], fds: readonly number[], unsealed: number[] = []): MappedRegion[] {
  const mapped: MappedRegion[] = [];
  try {
    descs.forEach((d, i) => {
      if (!sealAgainstShrinking(fds[i])) unsealed.push(i);
      const fileSize = fstatSize(fds[i]);
      const mapLength = d.mmapOffset + d.size;
      if (fileSize < mapLength) {
        throw new ProtocolError(`SET_MEM_TABLE: region ${i} needs ${mapLength} bytes of its file, which has ${fileSize}`);
      }
      mapped.push({ ...d, mapAddr: mmapShared(fds[i], mapLength), mapLength });
    });
    return mapped;
  } catch (err) {
    unmapRegions(mapped);
    throw err instanceof SysError ? new ProtocolError(`SET_MEM_TABLE: ${err.message}`) : err;
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
