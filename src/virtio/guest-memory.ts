// Guest memory as a device sees it: the regions of a vhost-user memory table, each mapped
// once by the control thread and viewed zero-copy here. Every guest address the data path
// touches is translated (and bounds-checked) through this table.
import { view } from '../sys/libc.ts';

/** One region of a memory table, as the control thread hands it over (postMessage-safe). */
export interface MemoryRegion {
  /** guest physical address of the first byte */
  guestPhysAddr: number;
  /** frontend (QEMU) virtual address of the first byte: SET_VRING_ADDR uses these */
  userAddr: number;
  size: number;
  /** host address where this process mapped the region, as a decimal string (a u64) */
  hostAddr: string;
}

/**
 * A region larger than one view is seen through windows of WINDOW_BYTES that overlap by
 * WINDOW_OVERLAP, so that any range up to WINDOW_OVERLAP bytes lies whole inside one window
 * (koffi.view aborts the process above 4 GiB).
 */
export const WINDOW_BYTES = 2 ** 30;
export const WINDOW_OVERLAP = 2 ** 20;

export class GuestMemory {
  readonly count: number;
  readonly gpaStart: Float64Array;
  readonly gpaEnd: Float64Array;
  readonly uvaStart: Float64Array;
  readonly uvaEnd: Float64Array;
  /** one byte view per window; the index a translation returns */
  readonly bytes: Uint8Array[];
  readonly data: DataView[];
  /** the same windows as 32-bit words, for aligned copies */
  readonly words: Uint32Array[];
  /** set by translate(): window index and byte offset inside it */
  window = 0;
  offset = 0;

  constructor(regions: readonly MemoryRegion[]) {
    const windows: { gpa: number; uva: number; size: number; host: bigint }[] = [];
    for (const r of regions) {
      const base = BigInt(r.hostAddr);
      for (let off = 0; off < r.size; off += WINDOW_BYTES - WINDOW_OVERLAP) {
        const size = Math.min(WINDOW_BYTES, r.size - off);
        windows.push({ gpa: r.guestPhysAddr + off, uva: r.userAddr + off, size, host: base + BigInt(off) });
        if (off + size >= r.size) break;
      }
    }
    this.count = windows.length;
    this.gpaStart = new Float64Array(windows.map((w) => w.gpa));
    this.gpaEnd = new Float64Array(windows.map((w) => w.gpa + w.size));
    this.uvaStart = new Float64Array(windows.map((w) => w.uva));
    this.uvaEnd = new Float64Array(windows.map((w) => w.uva + w.size));
    this.bytes = windows.map((w) => new Uint8Array(view(w.host, w.size)));
    this.data = this.bytes.map((b) => new DataView(b.buffer));
    // Windows start page-aligned; a trailing partial word is reached through `bytes`.
    this.words = this.bytes.map((b) => new Uint32Array(b.buffer, 0, b.length >>> 2));
  }

  /**
   * Finds the window holding guest physical range [addr, addr + len). On success sets
   * this.window and this.offset and returns true; false if any byte lies outside guest
   * memory. Hot path: no allocation, a linear scan over a handful of windows.
   */
  translate(addr: number, len: number): boolean {
    const end = addr + len;
    const gpaStart = this.gpaStart;
    const gpaEnd = this.gpaEnd;
    for (let i = 0; i < this.count; i++) {
      if (addr >= gpaStart[i] && end <= gpaEnd[i]) {
        this.window = i;
        this.offset = addr - gpaStart[i];
        return true;
      }
    }
    return false;
  }

  /** Like translate() for a frontend virtual address (vring addresses). */
  translateUserAddr(addr: number, len: number): boolean {
    const end = addr + len;
    for (let i = 0; i < this.count; i++) {
      if (addr >= this.uvaStart[i] && end <= this.uvaEnd[i]) {
        this.window = i;
        this.offset = addr - this.uvaStart[i];
        return true;
      }
    }
    return false;
  }
}
