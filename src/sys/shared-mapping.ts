// A range of a file mapped into the memory of a SharedArrayBuffer, so that threads view it
// as one. koffi's views of foreign memory are external buffers, which V8 counts as external
// memory of the isolate that makes them: a PMD that viewed hundreds of MB of guest memory at
// once (a new data plane taking the queues over) brought on a full garbage collection of its
// heap, 54 to 77 ms of it atomic here, inside forwarding's pause or just after it. The memory of a
// SharedArrayBuffer is counted by no isolate, and a view of it is an ordinary typed array.
//
// The buffer is allocated as any other, its memory this process's and the buffer's alone;
// its whole pages are then reserved (inaccessible, nothing committed), and the file's pages
// replace some of them (mmap MAP_FIXED). Released, they are reserved again: an access faults,
// as one to unmapped memory did. Buffers are kept for the next mapping of their size rather
// than left to the garbage collector: when a buffer is collected is the collector's choice
// (a PMD that allocates nothing may not collect for hours), and until then it holds its
// address space, which a frontend mapping and dropping large tables in a loop would exhaust.
import { addressOf, mmapReservedAt, mmapSharedAt } from './libc.ts';

export interface SharedMapping {
  readonly buffer: SharedArrayBuffer;
  /** where the file's range starts in the buffer */
  readonly offset: number;
  /** the pages of the file in the buffer, for release */
  readonly addr: number;
  readonly length: number;
}

const PAGE = 4096;
/**
 * Bytes at either end of a buffer's memory that stay its own, never reserved or mapped
 * over: the allocator that gave it writes there when it frees it (glibc: its free-list
 * links at the start, the next chunk's size field at the end), at the latest when the
 * process ends. A buffer whose start fell on a page had that page reserved, and the free
 * faulted (SIGSEGV as a test process ended).
 */
const ALLOCATOR_BYTES = 64;
/**
 * The smallest buffer made, in address space (its pages are reserved: nothing is committed).
 * glibc's malloc, which gives V8 a buffer's memory, maps every request this large on its own
 * (its threshold for that never rises past 32 MiB), and free() unmaps it whole. A smaller
 * buffer came from the heap, whose memory, once freed, is handed out again: pages of it still
 * reserved or mapped over then faulted the allocation that took them (SIGSEGV as a test
 * process ended, its buffers freed).
 */
const SMALLEST_BUFFER_BYTES = 32 * 2 ** 20;
/** The largest buffer kept for reuse: a range of up to 1 GiB (a window of guest memory) at any offset of a file of pages up to 2 MiB. */
export const LARGEST_KEPT_BYTES = 2 ** 30 + 8 * 2 ** 20;
/** Released buffers free to take, by size: a power of two, or LARGEST_KEPT_BYTES. */
const keptBuffers = new Map<number, SharedArrayBuffer[]>();
/** buffers holding a mapping: each released once, a kept one taken again only then */
const holding = new Set<SharedArrayBuffer>();

/** The size of buffer kept for a mapping that needs `bytes`, or 0 if none is (files of pages over 2 MiB). */
function keptSize(bytes: number): number {
  if (bytes > LARGEST_KEPT_BYTES) return 0;
  const power = 2 ** Math.ceil(Math.log2(Math.max(bytes, SMALLEST_BUFFER_BYTES)));
  return power <= 2 ** 30 ? power : LARGEST_KEPT_BYTES;
}

/** A new buffer, its whole pages reserved but for ALLOCATOR_BYTES at either end. */
function reservedBuffer(bytes: number): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(bytes);
  const start = addressOf(new Uint8Array(buffer, 0, 1));
  const first = Math.ceil((start + ALLOCATOR_BYTES) / PAGE) * PAGE;
  const end = Math.floor((start + bytes - ALLOCATOR_BYTES) / PAGE) * PAGE;
  if (end > first) mmapReservedAt(first, end - first);
  return buffer;
}

/**
 * Maps `size` bytes of fd from `fileOffset` shared, read-write, inside a buffer.
 * `pageBytes`: the file's page (its block size: 2 MiB on hugetlbfs), to which mmap aligns
 * both the address and the file offset.
 */
export function mapIntoSharedBuffer(fd: number, fileOffset: number, size: number, pageBytes: number): SharedMapping {
  const page = pageBytes >= PAGE && (pageBytes & (pageBytes - 1)) === 0 ? pageBytes : PAGE;
  // From the page the range starts in; the buffer has a page more, to align its first,
  // and the allocator's bytes at both ends.
  const skip = fileOffset % page;
  const length = Math.ceil((skip + size) / page) * page;
  const bytes = length + page + 2 * ALLOCATOR_BYTES;
  // A buffer of the next size up: a range takes at most twice its size of address space.
  // A file of larger pages (1 GiB on hugetlbfs) gets a buffer of its own, not kept.
  const kept = keptSize(bytes);
  const buffer = kept > 0 ? (keptBuffers.get(kept)?.pop() ?? reservedBuffer(kept)) : reservedBuffer(bytes);
  holding.add(buffer);
  const start = addressOf(new Uint8Array(buffer, 0, 1));
  const addr = Math.ceil((start + ALLOCATOR_BYTES) / page) * page;
  const mapping = { buffer, offset: addr - start + skip, addr, length };
  try {
    mmapSharedAt(addr, fd, length, fileOffset - skip);
  } catch (err) {
    // A failed MAP_FIXED may have unmapped the range already: reserved again.
    releaseSharedMapping(mapping);
    throw err;
  }
  return mapping;
}

/** The file's pages leave the buffer (an access there faults from then on); once only, later calls do nothing. */
export function releaseSharedMapping(m: SharedMapping): void {
  if (!holding.delete(m.buffer)) return;
  mmapReservedAt(m.addr, m.length);
  const kept = keptSize(m.buffer.byteLength);
  if (kept !== m.buffer.byteLength) return;
  const free = keptBuffers.get(kept);
  if (free === undefined) keptBuffers.set(kept, [m.buffer]);
  else free.push(m.buffer);
}
