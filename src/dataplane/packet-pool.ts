// Packet buffers: fixed-size slots in one shared buffer, named by u32 handles. Frames
// are copied out of guest memory into these (the copy is the security boundary; only the
// headers, for frames copied once: see deferred-payloads.ts), and rings
// between PMDs carry handles, never bytes. Each PMD owns one partition of the handles and
// allocates from it without locks; a buffer freed by another PMD travels back to its owner
// on a return ring (one SPSC ring per ordered PMD pair), in bursts. Besides the buffers for
// frames up to a 9000-byte MTU, a few per PMD hold a super-frame (TSO: up to 64 KiB of a
// TCP stream a guest leaves to be cut into segments): handles past all the small ones.
import { sharedBuffer } from '../sys/shared-arena.ts';
import { SpscRing } from './spsc-ring.ts';
import { isPowerOfTwo } from '../virtio/constants.ts';
import { addressOf } from '../sys/libc.ts';

/**
 * u16 fields per handle in PacketPool.offload: the partial checksum's start in the frame
 * plus 1 (0: the frame's checksums are complete), and where from there it goes; for a
 * super-frame its virtio-net gso_type (0: none), gso_size and the length of its headers
 * (Ethernet to TCP, each segment's). A super-frame always leaves its checksum to do, so
 * the other fields mean something only while CSUM_START is set: taking a buffer clears
 * that one field alone. A frame and its fields travel together (copied with it).
 */
export const OFFLOAD_FIELDS = 5;
export const OFFLOAD_CSUM_START = 0;
export const OFFLOAD_CSUM_OFFSET = 1;
export const OFFLOAD_GSO_TYPE = 2;
export const OFFLOAD_GSO_SIZE = 3;
export const OFFLOAD_HDR_LEN = 4;

/** Bytes before the frame, kept free for encapsulation. */
export const HEADROOM = 128;
/** Room for the largest frame: MTU 9000 + Ethernet header + one VLAN tag, rounded up. */
export const DATA_ROOM = 9088;
/**
 * HEADROOM + DATA_ROOM, rounded up to an odd multiple of 64 bytes: with a stride of a whole
 * number of KiB (9216) the headers of a burst's frames all fell into a few sets of the L1
 * cache and evicted each other (a header parse measured 14-20 ns against 10 on frames 2 KiB
 * apart); an odd number of cache lines spreads them over every set.
 */
export const BUFFER_STRIDE = 9280;
/** Room for a super-frame: an IPv4 or IPv6 packet of 64 KiB, its Ethernet header and a VLAN tag. */
export const SUPER_DATA_ROOM = 65560;
/**
 * A super-frame buffer spans this many small buffers' strides, and takes every this-many-th
 * handle: a handle's frame is at handle * BUFFER_STRIDE + HEADROOM whatever its kind, with
 * no branch in the offset every stage computes for every packet.
 */
export const SUPER_SPAN = 8;

/** The memory every PMD's pool views: buffers and per-handle frame lengths. */
export interface PoolMemory {
  buffers: ArrayBufferLike;
  lengths: ArrayBufferLike;
  /** per handle, written by its owner: 1 while another PMD holds the buffer */
  away: ArrayBufferLike;
  /** per handle, OFFLOAD_FIELDS u16: what the frame leaves to do (see offloads.ts) */
  offload: ArrayBufferLike;
  /** small buffers per PMD (a power of 2) */
  perPmd: number;
  /** super-frame buffers per PMD (a power of 2, at most perPmd) */
  superPerPmd: number;
  pmdCount: number;
  /** entries of a return ring: at least a PMD's handles of both kinds, so that it can never overflow */
  returnCapacity: number;
  /** handles are below this (super-frame buffers leave gaps: see SUPER_SPAN) */
  handleCount: number;
}

export function createPoolMemory(pmdCount: number, perPmd: number, superPerPmd = 0): PoolMemory {
  if (!isPowerOfTwo(perPmd)) throw new RangeError(`buffers per PMD (${perPmd}) must be a power of 2`);
  if ((superPerPmd !== 0 && !isPowerOfTwo(superPerPmd)) || superPerPmd > perPmd) throw new RangeError(`super-frame buffers per PMD (${superPerPmd}) must be a power of 2, at most ${perPmd}`);
  const handles = pmdCount * (perPmd + superPerPmd * SUPER_SPAN);
  // Shared pages are committed on first touch, and the LIFO free stacks keep
  // reusing the same few buffers: resident memory follows the traffic, not the capacity.
  return {
    buffers: sharedBuffer(handles * BUFFER_STRIDE),
    lengths: sharedBuffer(handles * 4),
    away: sharedBuffer(handles),
    offload: sharedBuffer(handles * OFFLOAD_FIELDS * 2),
    perPmd,
    superPerPmd,
    pmdCount,
    returnCapacity: superPerPmd === 0 ? perPmd : 2 * perPmd,
    handleCount: handles,
  };
}

const RETURN_BURST = 32;

export class PacketPool {
  readonly data: Uint8Array;
  /** the same memory as 32-bit words, and as 64-bit ones (Float64Array: moved, never computed on), for aligned copies */
  readonly words: Uint32Array;
  readonly doubles: Float64Array;
  /** and as 16-bit words, for checksums */
  readonly words16: Uint16Array;
  /**
   * the address of data[0], for the system calls that take it (a TAP port's read and
   * write): a shared buffer's backing store never moves and is the same one in every PMD
   * thread
   */
  readonly address: number;
  /** frame length of each buffer, by handle */
  readonly length: Uint32Array;
  /** OFFLOAD_FIELDS per handle: what the frame leaves to do, if anything (offloads.ts) */
  readonly offload: Uint16Array;
  readonly pmd: number;
  /** handles from here on are super-frame buffers (every SUPER_SPAN-th) */
  readonly superFrom: number;
  /** log2 of the handles each PMD owns of either kind (both are powers of 2): owners by shift, not division */
  private readonly smallShift: number;
  private readonly superShift: number;
  private readonly away: Uint8Array;
  private readonly freeStack: Uint32Array;
  private freeCount: number;
  private readonly superStack: Uint32Array;
  private superCount: number;
  /** handles a reclaim took off a return ring, before they go onto their stack */
  private readonly reclaimed: Uint32Array;
  /** by owner PMD: handles to give back, and the rings they go on (null for ourselves) */
  private readonly returnTo: (SpscRing | null)[];
  private readonly returnFrom: (SpscRing | null)[];
  private readonly pendingReturn: Uint32Array[];
  private readonly pendingCount: Int32Array;

  /**
   * returnTo[p]: producer end of the ring to PMD p; returnFrom[p]: consumer end of the
   * ring from PMD p (null on our own index, or with a single PMD).
   */
  constructor(memory: PoolMemory, pmd: number, returnTo: (SpscRing | null)[] = [], returnFrom: (SpscRing | null)[] = []) {
    this.pmd = pmd;
    this.smallShift = Math.log2(memory.perPmd);
    this.superShift = memory.superPerPmd === 0 ? 0 : Math.log2(memory.superPerPmd * SUPER_SPAN);
    this.superFrom = memory.pmdCount * memory.perPmd;
    this.data = new Uint8Array(memory.buffers);
    this.words = new Uint32Array(memory.buffers);
    this.doubles = new Float64Array(memory.buffers, 0, memory.buffers.byteLength >>> 3);
    this.words16 = new Uint16Array(memory.buffers);
    this.address = addressOf(this.data);
    this.length = new Uint32Array(memory.lengths);
    this.offload = new Uint16Array(memory.offload);
    this.away = new Uint8Array(memory.away);
    this.freeStack = new Uint32Array(memory.perPmd);
    this.superStack = new Uint32Array(memory.superPerPmd);
    this.reclaimed = new Uint32Array(memory.returnCapacity);
    // A PMD restarted after a crash starts with the buffers of its partition that are not
    // held by another PMD; those come back on the return rings as usual.
    const first = pmd * memory.perPmd;
    this.freeCount = 0;
    for (let h = first + memory.perPmd - 1; h >= first; h--) if (this.away[h] === 0) this.freeStack[this.freeCount++] = h;
    const firstSuper = this.superFrom + pmd * memory.superPerPmd * SUPER_SPAN;
    this.superCount = 0;
    for (let k = memory.superPerPmd - 1; k >= 0; k--) {
      const h = firstSuper + k * SUPER_SPAN;
      if (this.away[h] === 0) this.superStack[this.superCount++] = h;
    }
    this.returnTo = Array.from({ length: memory.pmdCount }, (_, p) => returnTo[p] ?? null);
    this.returnFrom = Array.from({ length: memory.pmdCount }, (_, p) => returnFrom[p] ?? null);
    this.pendingReturn = this.returnTo.map(() => new Uint32Array(RETURN_BURST));
    this.pendingCount = new Int32Array(memory.pmdCount);
  }

  /** A pool for one thread alone (tests, benchmarks). */
  static standalone(capacity: number, superCapacity = 0): PacketPool {
    return new PacketPool(createPoolMemory(1, capacity, superCapacity), 0);
  }

  /** free small buffers */
  get available(): number {
    return this.freeCount;
  }

  /** free super-frame buffers */
  get superAvailable(): number {
    return this.superCount;
  }

  /** A free buffer's handle, or -1 when this PMD has none left. */
  alloc(): number {
    // What comes back may be super-frame buffers only: the small stack is then still empty.
    if (this.freeCount === 0 && (this.reclaim() === 0 || this.freeCount === 0)) return -1;
    const handle = this.freeStack[--this.freeCount];
    // Whoever fills the buffer says what its frame leaves to do; most leave nothing.
    this.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = 0;
    return handle;
  }

  /** A free super-frame buffer's handle (room for SUPER_DATA_ROOM bytes), or -1. */
  allocSuper(): number {
    if (this.superCount === 0 && (this.reclaim() === 0 || this.superCount === 0)) return -1;
    const handle = this.superStack[--this.superCount];
    this.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = 0;
    return handle;
  }

  /** Whether `handle` is a super-frame buffer. */
  isSuper(handle: number): boolean {
    return handle >= this.superFrom;
  }

  /** The most bytes the frame of `handle` may have. */
  room(handle: number): number {
    return handle < this.superFrom ? DATA_ROOM : SUPER_DATA_ROOM;
  }

  /** Copies frame `from` into a new buffer of its kind (its bytes, length and offload fields): the copy's handle, or -1. */
  copyFrame(from: number): number {
    const to = from < this.superFrom ? this.alloc() : this.allocSuper();
    if (to < 0) return -1;
    const len = this.length[from];
    const src = this.frameOffset(from);
    this.data.copyWithin(this.frameOffset(to), src, src + len);
    this.length[to] = len;
    for (let f = 0; f < OFFLOAD_FIELDS; f++) this.offload[to * OFFLOAD_FIELDS + f] = this.offload[from * OFFLOAD_FIELDS + f];
    return to;
  }

  private ownerOf(handle: number): number {
    return handle < this.superFrom ? handle >>> this.smallShift : (handle - this.superFrom) >>> this.superShift;
  }

  free(handle: number): void {
    const owner = this.ownerOf(handle);
    if (owner === this.pmd) {
      this.away[handle] = 0;
      if (handle < this.superFrom) this.freeStack[this.freeCount++] = handle;
      else this.superStack[this.superCount++] = handle;
      return;
    }
    const n = this.pendingCount[owner];
    this.pendingReturn[owner][n] = handle;
    this.pendingCount[owner] = n + 1;
    if (n + 1 === RETURN_BURST) this.flushReturns(owner);
  }

  /**
   * free() of the first `count` of `handles`, but those whose `marks` entry is `kept`: one
   * call a burst, where V8 left free() a call for every frame.
   */
  freeBurst(handles: Uint32Array, count: number, marks: Uint8Array, kept: number): void {
    // The fields in locals: stored to in the loop, each would be loaded and checked again
    // for every frame. Only free() changes freeCount meanwhile, and not for a small buffer.
    const away = this.away;
    const freeStack = this.freeStack;
    const superFrom = this.superFrom;
    const smallShift = this.smallShift;
    const pmd = this.pmd;
    let freeCount = this.freeCount;
    for (let i = 0; i < count; i++) {
      const handle = handles[i];
      if (marks[handle] === kept) continue;
      // ownerOf() and free()'s own case for a small buffer, written out.
      if (handle < superFrom && handle >>> smallShift === pmd) {
        away[handle] = 0;
        freeStack[freeCount++] = handle;
      } else {
        this.free(handle);
      }
    }
    this.freeCount = freeCount;
  }

  /** Records that one of our buffers is handed to another PMD (it comes back by reclaim). */
  markAway(handle: number): void {
    if (this.ownerOf(handle) === this.pmd) this.away[handle] = 1;
  }

  /** Sends every buffer waiting to go back to its owner: once per poll round. */
  flushAllReturns(): void {
    for (let p = 0; p < this.pendingCount.length; p++) if (this.pendingCount[p] > 0) this.flushReturns(p);
  }

  private flushReturns(owner: number): void {
    // A return ring holds as many entries as the owner has buffers: it cannot be full.
    this.returnTo[owner]!.enqueueBurst(this.pendingReturn[owner], this.pendingCount[owner]);
    this.pendingCount[owner] = 0;
  }

  /** Takes back our buffers that other PMDs have freed. Returns how many came back. */
  reclaim(): number {
    let total = 0;
    for (let p = 0; p < this.returnFrom.length; p++) {
      const ring = this.returnFrom[p];
      if (ring === null) continue;
      const n = ring.dequeueBurst(this.reclaimed, this.reclaimed.length, 0);
      for (let i = 0; i < n; i++) {
        const h = this.reclaimed[i];
        this.away[h] = 0;
        if (h < this.superFrom) this.freeStack[this.freeCount++] = h;
        else this.superStack[this.superCount++] = h;
      }
      total += n;
    }
    return total;
  }

  /** Byte offset of a buffer's frame in `data`. */
  frameOffset(handle: number): number {
    return handle * BUFFER_STRIDE + HEADROOM;
  }
}
