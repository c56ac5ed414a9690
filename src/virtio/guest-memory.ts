// Guest memory as a device sees it: the regions of a vhost-user memory table, each mapped
// once by the data-plane process and viewed zero-copy here. Every guest address the data
// path touches is translated (and bounds-checked) through this table.
import { mapIntoSharedBuffer, releaseSharedMapping, type SharedMapping } from '../sys/shared-mapping.ts';

/**
 * One region of a memory table as a PMD gets it (postMessage-safe): its addresses, and its
 * memory as the windows of windowSpans(size), each inside a SharedArrayBuffer
 * (shared-mapping.ts).
 */
export interface MemoryRegion {
  /** guest physical address of the first byte */
  guestPhysAddr: number;
  /** frontend (QEMU) virtual address of the first byte: SET_VRING_ADDR uses these */
  userAddr: number;
  size: number;
  windows: GuestWindow[];
}

/** A window's bytes: buffer[offset, offset + its span's size). */
export interface GuestWindow {
  buffer: SharedArrayBuffer;
  offset: number;
}

/**
 * A region larger than one view is seen through windows of WINDOW_BYTES that overlap by
 * WINDOW_OVERLAP, so that any range up to WINDOW_OVERLAP bytes lies whole inside one window
 * (and offsets inside a window stay small integers, which the per-frame code adds fast).
 */
export const WINDOW_BYTES = 2 ** 30;
export const WINDOW_OVERLAP = 2 ** 20;

/** Limits on one memory table: each window is mapped and viewed on its own, and translation scans them. */
export const MAX_GUEST_MEMORY_BYTES = 256 * 2 ** 30;
export const MAX_WINDOWS = 300;

/** Where each window of a region of `size` bytes starts in it, and its length. */
export function windowSpans(size: number): { offset: number; size: number }[] {
  const spans: { offset: number; size: number }[] = [];
  for (let off = 0; off < size; off += WINDOW_BYTES - WINDOW_OVERLAP) {
    spans.push({ offset: off, size: Math.min(WINDOW_BYTES, size - off) });
    if (off + WINDOW_BYTES >= size) break;
  }
  return spans;
}

/**
 * A region's windows mapped from its file (`fileOffset`: where the region starts in it),
 * each into a buffer of its own: a region's `windows`, and for releaseSharedMapping once no
 * one views them.
 */
export function mapRegionWindows(fd: number, fileOffset: number, size: number, pageBytes: number): SharedMapping[] {
  const mappings: SharedMapping[] = [];
  try {
    for (const span of windowSpans(size)) mappings.push(mapIntoSharedBuffer(fd, fileOffset + span.offset, span.size, pageBytes));
  } catch (err) {
    mappings.forEach(releaseSharedMapping);
    throw err;
  }
  return mappings;
}

interface Window {
  gpa: number;
  uva: number;
  size: number;
  bytes: GuestWindow;
}

/** Why a table of regions of these sizes is over the limits above, or null. */
function limitsProblem(sizes: readonly number[]): string | null {
  const total = sizes.reduce((sum, size) => sum + size, 0);
  if (total > MAX_GUEST_MEMORY_BYTES) return `${total} bytes of guest memory, more than the ${MAX_GUEST_MEMORY_BYTES / 2 ** 30} GiB a port may map`;
  // Counted only once the total is known to be bounded: a few hundred windows at most.
  const windows = sizes.reduce((sum, size) => sum + windowSpans(size).length, 0);
  return windows > MAX_WINDOWS ? `memory table needs more than ${MAX_WINDOWS} windows` : null;
}

/** Why a table of regions of these sizes cannot be mapped, or null (checked before mmap). */
export function memoryTableProblem(regions: readonly { size: number }[]): string | null {
  return limitsProblem(regions.map((r) => r.size));
}

/** The windows of a table; throws RangeError past the limits above. */
function planWindows(regions: readonly MemoryRegion[]): Window[] {
  const problem = limitsProblem(regions.map((r) => r.size));
  if (problem !== null) throw new RangeError(problem);
  const windows: Window[] = [];
  for (const r of regions) {
    const spans = windowSpans(r.size);
    if (r.windows.length !== spans.length) throw new RangeError(`a region of ${r.size} bytes came with ${r.windows.length} windows, not ${spans.length}`);
    spans.forEach((span, k) => windows.push({ gpa: r.guestPhysAddr + span.offset, uva: r.userAddr + span.offset, size: span.size, bytes: r.windows[k] }));
  }
  return windows;
}

function viewWindow(w: Window): Uint8Array {
  if (w.bytes.offset + w.size > w.bytes.buffer.byteLength) throw new RangeError(`a window of ${w.size} bytes at ${w.bytes.offset} of a buffer of ${w.bytes.buffer.byteLength}`);
  return new Uint8Array(w.bytes.buffer, w.bytes.offset, w.size);
}

/**
 * Builds a GuestMemory one window per step, so that a PMD given a large table keeps
 * forwarding between steps instead of stopping for the whole build.
 */
export class GuestMemoryBuilder {
  private readonly regions: readonly MemoryRegion[];
  private readonly windows: Window[];
  private readonly views: Uint8Array[] = [];

  /** Throws RangeError if the table is over the limits. */
  constructor(regions: readonly MemoryRegion[]) {
    this.regions = regions;
    this.windows = planWindows(regions);
  }

  get done(): boolean {
    return this.views.length === this.windows.length;
  }

  /** Views the next window. */
  step(): void {
    if (!this.done) this.views.push(viewWindow(this.windows[this.views.length]));
  }

  finish(): GuestMemory {
    while (!this.done) this.step();
    return new GuestMemory(this.regions, this.views);
  }
}

export class GuestMemory {
  readonly count: number;
  readonly gpaStart: Float64Array;
  readonly gpaEnd: Float64Array;
  readonly uvaStart: Float64Array;
  readonly uvaEnd: Float64Array;
  /** one byte view per window; the index a translation returns */
  readonly bytes: Uint8Array[];
  readonly data: DataView[];
  /** the same windows as 32-bit words, and as 64-bit ones (Float64Array: moved, never computed on), for aligned copies */
  readonly words: Uint32Array[];
  readonly doubles: Float64Array[];
  /** set by translate(): window index and byte offset inside it */
  window = 0;
  offset = 0;
  /** an address as two 32-bit words, for translateAt() */
  private readonly addressWords = new Uint32Array(2);

  /** Views every window at once (tests, tools); a PMD builds them a window at a time (GuestMemoryBuilder). */
  constructor(regions: readonly MemoryRegion[], views?: readonly Uint8Array[]) {
    const windows = planWindows(regions);
    this.count = windows.length;
    this.gpaStart = new Float64Array(windows.map((w) => w.gpa));
    this.gpaEnd = new Float64Array(windows.map((w) => w.gpa + w.size));
    this.uvaStart = new Float64Array(windows.map((w) => w.uva));
    this.uvaEnd = new Float64Array(windows.map((w) => w.uva + w.size));
    this.bytes = views ? [...views] : windows.map(viewWindow);
    this.data = this.bytes.map((b) => new DataView(b.buffer, b.byteOffset, b.length));
    // A window starts 8-aligned in its buffer (regions are page-aligned in their files); a trailing partial word is reached through `bytes`.
    this.words = this.bytes.map((b) => new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2));
    this.doubles = this.bytes.map((b) => new Float64Array(b.buffer, b.byteOffset, b.length >>> 3));
  }

  /**
   * Finds the window holding guest physical range [addr, addr + len). On success sets
   * this.window and this.offset and returns true; false if any byte lies outside guest
   * memory. Hot path: no allocation, a linear scan over a handful of windows.
   */
  translate(addr: number, len: number): boolean {
    // No whole address a descriptor could hold (NaN, negative, 2^64 or more, a fraction):
    // outside memory, before its words would wrap into one inside.
    if (!(addr >= 0 && addr < 18446744073709551616) || Math.floor(addr) !== addr) return false;
    const words = this.addressWords;
    words[0] = addr % 4294967296;
    words[1] = Math.floor(addr / 4294967296);
    return this.translateAt(words, 0, len);
  }

  /**
   * translate() of a descriptor's buffer: its address the two 32-bit words at `at` in
   * `words`. The address is put together here, and the windows scanned here too, so that
   * where V8 inlines neither this nor what it would call, only small integers are passed:
   * a 64-bit address (past 2^31: a guest of more than 2 GiB) passed to a call is a heap
   * number. The rings' per-frame walks try the window of the last translation (`window`: a
   * burst's buffers mostly lie in one) before they call this, the test written out there:
   * past V8's inlining budget in the PMD's loop this stays a call (2 to 8 % fewer ns a
   * 64-byte frame without it). Any window that holds the whole range serves: windows
   * overlap, and each views the same memory.
   */
  translateAt(words: Uint32Array, at: number, len: number): boolean {
    const addr = words[at] + words[at + 1] * 4294967296;
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

  /** translateAt() of a descriptor in an indirect table: its address the two 32-bit words at byte `at` of `view`. */
  translateIn(view: DataView, at: number, len: number): boolean {
    const words = this.addressWords;
    words[0] = view.getUint32(at, true);
    words[1] = view.getUint32(at + 4, true);
    return this.translateAt(words, 0, len);
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
