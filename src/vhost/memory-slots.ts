// Memory regions added and removed one at a time (CONFIGURE_MEM_SLOTS: QEMU's DIMMs and
// virtio-mem memslots plugged into a running guest). The table that results must keep
// every invariant of a SET_MEM_TABLE table, so that the PMDs view it the same way.
import { memoryTableProblem } from '../virtio/guest-memory.ts';
import { MAX_MEM_SLOTS, regionsOverlap, type MemRegionDesc } from './protocol.ts';

/**
 * Why `added` cannot join the regions in force, or null. Overlap in frontend addresses is
 * refused too: vring addresses are translated through them, and must name one region.
 */
export function additionProblem(inForce: readonly MemRegionDesc[], added: MemRegionDesc): string | null {
  if (inForce.length >= MAX_MEM_SLOTS) return `all ${MAX_MEM_SLOTS} memory slots are in use`;
  for (const [i, r] of inForce.entries()) {
    const overlap = regionsOverlap(r, added);
    if (overlap !== null) return `the region overlaps region ${i} in force (${describeRegion(r)}) in ${overlap}`;
  }
  return memoryTableProblem([...inForce, added]);
}

/** The index of the region in force with the same guest address, size and user address, or -1. */
export function regionIndex(inForce: readonly MemRegionDesc[], named: MemRegionDesc): number {
  return inForce.findIndex((r) => r.guestPhysAddr === named.guestPhysAddr && r.size === named.size && r.userAddr === named.userAddr);
}

export function describeRegion(r: MemRegionDesc): string {
  return `guest 0x${r.guestPhysAddr.toString(16)} +0x${r.size.toString(16)}, user 0x${r.userAddr.toString(16)}`;
}
