// A range of a file mapped into the memory of a SharedArrayBuffer, so that threads view it
// as one. koffi's views of foreign memory are external buffers, which V8 counts as external
// memory of the isolate that makes them: a PMD that viewed hundreds of MB of guest memory at
// once (a new data plane taking the queues over) brought on a full garbage collection of its
// heap, 50 to 75 ms of it atomic here, inside forwarding's pause. The memory of a
// SharedArrayBuffer is counted by no isolate, and a view of it is an ordinary typed array.
//
// The buffer is allocated as any other: its memory is this process's, zeroed, and the
// buffer's alone. The file's pages then replace whole pages inside it (mmap MAP_FIXED), and
// fresh private pages replace those again before the buffer is let go (release), so that
// the allocator that frees it finds ordinary memory.
import { addressOf, mmapAnonymousAt, mmapSharedAt } from './libc.ts';

export interface SharedMapping {
  readonly buffer: SharedArrayBuffer;
  /** where the file's range starts in the buffer */
  readonly offset: number;
  /** the pages of the file that replaced the buffer's, for release */
  readonly addr: number;
  readonly length: number;
}

const PAGE = 4096;

/**
 * Maps `size` bytes of fd from `fileOffset` shared, read-write, inside a new buffer.
 * `pageBytes`: the file's page (its block size: 2 MiB on hugetlbfs), to which mmap aligns
 * both the address and the file offset.
 */
export function mapIntoSharedBuffer(fd: number, fileOffset: number, size: number, pageBytes: number): SharedMapping {
  const page = pageBytes >= PAGE && (pageBytes & (pageBytes - 1)) === 0 ? pageBytes : PAGE;
  // From the page the range starts in; the buffer has a page more, to align its first.
  const skip = fileOffset % page;
  const length = Math.ceil((skip + size) / page) * page;
  const buffer = new SharedArrayBuffer(length + page);
  const start = addressOf(new Uint8Array(buffer, 0, 1));
  const addr = Math.ceil(start / page) * page;
  try {
    mmapSharedAt(addr, fd, length, fileOffset - skip);
  } catch (err) {
    // A failed MAP_FIXED may have unmapped the range already: the buffer gets pages back.
    mmapAnonymousAt(addr, length);
    throw err;
  }
  return { buffer, offset: addr - start + skip, addr, length };
}

/** The file's pages leave the buffer (which reads zeros from then on); call once. */
export function releaseSharedMapping(m: SharedMapping): void {
  mmapAnonymousAt(m.addr, m.length);
}
