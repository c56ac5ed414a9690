// The inflight buffer of a connection (INFLIGHT_SHMFD, GET_INFLIGHT_FD and SET_INFLIGHT_FD):
// a file with one area per vring in which the PMDs mark the chains they took and have not
// yet returned (src/virtio/inflight.ts). vrouter makes it when the frontend asks; the
// frontend keeps it and hands it back to the vrouter it reconnects to, which resumes each
// vring from it. Like guest memory, it is checked and held here and mapped by the data plane.
import { closeAll, fstatSize, ftruncate, memfdCreate, sealAgainstShrinking } from '../sys/libc.ts';
import { inflightQueueBytes } from '../virtio/inflight.ts';
import { isSplitQueueSize, MAX_QUEUE_SIZE } from '../virtio/constants.ts';
import type { InflightFile } from './dataplane-link.ts';
import { checkRegions, newRegionId, regionsForDataplane, type HeldRegion, type MemoryPolicy } from './memory-table.ts';
import { ProtocolError, type InflightDesc } from './protocol.ts';

export interface InflightBuffer {
  region: HeldRegion;
  numQueues: number;
  queueSize: number;
}

/** Why a description does not fit a port of `vrings` vrings, or null. */
function descProblem(d: InflightDesc, vrings: number): string | null {
  if (d.numQueues < 1 || d.numQueues > vrings) return `${d.numQueues} queues (the port has ${vrings} vrings)`;
  if (!isSplitQueueSize(d.queueSize)) return `queue size ${d.queueSize} is not a power of 2 up to ${MAX_QUEUE_SIZE}`;
  return null;
}

/** GET_INFLIGHT_FD: a new, blank buffer (a sealed memfd) for the queues the frontend names. */
export function createInflightBuffer(d: InflightDesc, vrings: number): InflightBuffer {
  const problem = descProblem(d, vrings);
  if (problem !== null) throw new ProtocolError(`GET_INFLIGHT_FD: ${problem}`);
  const size = d.numQueues * inflightQueueBytes(d.queueSize);
  const fd = memfdCreate('vrouter-inflight');
  try {
    ftruncate(fd, size);
    // The frontend gets the fd: sealed, it cannot shrink the file under the data plane.
    if (!sealAgainstShrinking(fd)) throw new Error('cannot seal the inflight buffer');
  } catch (err) {
    closeAll([fd]);
    throw err;
  }
  const region: HeldRegion = { guestPhysAddr: 0, userAddr: 0, size, mmapOffset: 0, fd, id: newRegionId() };
  return { region, numQueues: d.numQueues, queueSize: d.queueSize };
}

/**
 * SET_INFLIGHT_FD: the frontend's buffer, checked as guest memory is (file system, seal,
 * size: see checkRegions) and against the queues it describes. Closes the fd if refused.
 */
export function adoptInflightBuffer(d: InflightDesc, fd: number, vrings: number, policy: MemoryPolicy): { buffer: InflightBuffer; warnings: string[] } {
  const problem =
    descProblem(d, vrings) ??
    (d.mmapSize < d.numQueues * inflightQueueBytes(d.queueSize) ? `mmap size ${d.mmapSize} is less than the ${d.numQueues * inflightQueueBytes(d.queueSize)} bytes ${d.numQueues} queues of ${d.queueSize} need` : null) ??
    (d.mmapOffset % 64 !== 0 ? `mmap offset ${d.mmapOffset} is not a multiple of 64` : null);
  if (problem !== null) {
    closeAll([fd]);
    throw new ProtocolError(`SET_INFLIGHT_FD: ${problem}`);
  }
  const { regions, warnings } = checkRegions([{ guestPhysAddr: 0, userAddr: 0, size: d.mmapSize, mmapOffset: d.mmapOffset }], [fd], policy, 'SET_INFLIGHT_FD');
  // Only what the queues need is mapped: a larger mmap size would take address space for nothing.
  const region = { ...regions[0], size: d.numQueues * inflightQueueBytes(d.queueSize) };
  return { buffer: { region, numQueues: d.numQueues, queueSize: d.queueSize }, warnings };
}

/**
 * The area of vring `vring` (of `size` descriptors) for its PMD, or why it has none: a
 * vring past the buffer's queues, or larger than its queue size, is not tracked.
 */
export function inflightArea(buffer: InflightBuffer, vring: number, size: number): InflightFile | string {
  if (vring >= buffer.numQueues) return `the inflight buffer has ${buffer.numQueues} queues`;
  if (size > buffer.queueSize) return `the inflight buffer is for queues of up to ${buffer.queueSize}`;
  const bytes = inflightQueueBytes(buffer.queueSize);
  return { region: regionsForDataplane([buffer.region])[0], offset: vring * bytes, bytes };
}

/** Why the buffer can no longer be viewed (its file shrank), or null. */
export function shrunkInflightBuffer(buffer: InflightBuffer): string | null {
  const needed = buffer.region.mmapOffset + buffer.region.size;
  try {
    const size = fstatSize(buffer.region.fd);
    return size < needed ? `the inflight buffer's file shrank to ${size} bytes; ${needed} are mapped` : null;
  } catch (err) {
    return `the inflight buffer's file cannot be checked: ${(err as Error).message}`;
  }
}
