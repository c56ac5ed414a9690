// Packet buffers: fixed-size slots in one shared buffer, named by u32 handles. Frames
// are copied out of guest memory into these (the copy is the security boundary), and rings
// between PMDs carry handles, never bytes. Each PMD owns one partition of the handles and
// allocates from it without locks; a buffer freed by another PMD travels back to its owner
// on a return ring (one SPSC ring per ordered PMD pair), in bursts.
import { sharedBuffer } from '../sys/shared-arena.ts';
import { SpscRing } from './spsc-ring.ts';
import { addressOf } from '../sys/libc.ts';

/**
 * u16 fields per handle in PacketPool.offload: the partial checksum's start in the frame
 * plus 1 (0: the frame's checksums are complete), and where from there it goes. A frame
 * and its fields travel together (copied with it, cleared when its buffer is taken).
 */
export const OFFLOAD_FIELDS = 2;
export const OFFLOAD_CSUM_START = 0;
export const OFFLOAD_CSUM_OFFSET = 1;

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

/** The memory every PMD's pool views: buffers and per-handle frame lengths. */
export interface PoolMemory {
  buffers: ArrayBufferLike;
  lengths: ArrayBufferLike;
  /** per handle, written by its owner: 1 while another PMD holds the buffer */
  away: ArrayBufferLike;
  /** per handle, OFFLOAD_FIELDS u16: what the frame leaves to do (see offloads.ts) */
  offload: ArrayBufferLike;
  /** handles per PMD (a power of 2: return rings of that size can never overflow) */
  perPmd: number;
  pmdCount: number;
}

export function createPoolMemory(pmdCount: number, perPmd: number): PoolMemory {
  if ((perPmd & (perPmd - 1)) !== 0) throw new RangeError(`buffers per PMD (${perPmd}) must be a power of 2`);
  // Shared pages are committed on first touch, and the LIFO free stacks keep
  // reusing the same few buffers: resident memory follows the traffic, not the capacity.
  return {
    buffers: sharedBuffer(pmdCount * perPmd * BUFFER_STRIDE),
    lengths: sharedBuffer(pmdCount * perPmd * 4),
    away: sharedBuffer(pmdCount * perPmd),
    offload: sharedBuffer(pmdCount * perPmd * OFFLOAD_FIELDS * 2),
    perPmd,
    pmdCount,
  };
}

const RETURN_BURST = 32;

export class PacketPool {
  readonly data: Uint8Array;
  /** the same memory as 32-bit words, for aligned copies */
  readonly words: Uint32Array;
  /** and as 16-bit words, for checksums */
  readonly words16: Uint16Array;
  /**
   * the address of data[0], for native copies: a shared buffer's backing store never
   * moves and is the same one in every PMD thread
   */
  readonly address: number;
  /** frame length of each buffer, by handle */
  readonly length: Uint32Array;
  /** OFFLOAD_FIELDS per handle: the checksum the frame leaves to do, if any */
  readonly offload: Uint16Array;
  readonly pmd: number;
  private readonly perPmd: number;
  private readonly away: Uint8Array;
  private readonly freeStack: Uint32Array;
  private freeCount: number;
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
    this.perPmd = memory.perPmd;
    this.data = new Uint8Array(memory.buffers);
    this.words = new Uint32Array(memory.buffers);
    this.words16 = new Uint16Array(memory.buffers);
    this.address = addressOf(this.data);
    this.length = new Uint32Array(memory.lengths);
    this.offload = new Uint16Array(memory.offload);
    this.away = new Uint8Array(memory.away);
    this.freeStack = new Uint32Array(memory.perPmd);
    // A PMD restarted after a crash starts with the buffers of its partition that are not
    // held by another PMD; those come back on the return rings as usual.
    const first = pmd * memory.perPmd;
    this.freeCount = 0;
    for (let h = first + memory.perPmd - 1; h >= first; h--) if (this.away[h] === 0) this.freeStack[this.freeCount++] = h;
    this.returnTo = Array.from({ length: memory.pmdCount }, (_, p) => returnTo[p] ?? null);
    this.returnFrom = Array.from({ length: memory.pmdCount }, (_, p) => returnFrom[p] ?? null);
    this.pendingReturn = this.returnTo.map(() => new Uint32Array(RETURN_BURST));
    this.pendingCount = new Int32Array(memory.pmdCount);
  }

  /** A pool for one thread alone (tests, benchmarks). */
  static standalone(capacity: number): PacketPool {
    return new PacketPool(createPoolMemory(1, capacity), 0);
  }

  get available(): number {
    return this.freeCount;
  }

  /** A free buffer's handle, or -1 when this PMD has none left. */
  alloc(): number {
    if (this.freeCount === 0 && this.reclaim() === 0) return -1;
    const handle = this.freeStack[--this.freeCount];
    // Whoever fills the buffer says what its frame leaves to do; most leave nothing.
    this.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = 0;
    return handle;
  }

  /** Copies frame `from` (its bytes, length and offload fields) into buffer `to`. */
  copyFrame(to: number, from: number): void {
    const len = this.length[from];
    const src = this.frameOffset(from);
    this.data.copyWithin(this.frameOffset(to), src, src + len);
    this.length[to] = len;
    this.offload[to * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = this.offload[from * OFFLOAD_FIELDS + OFFLOAD_CSUM_START];
    this.offload[to * OFFLOAD_FIELDS + OFFLOAD_CSUM_OFFSET] = this.offload[from * OFFLOAD_FIELDS + OFFLOAD_CSUM_OFFSET];
  }

  free(handle: number): void {
    const owner = (handle / this.perPmd) | 0;
    if (owner === this.pmd) {
      this.away[handle] = 0;
      this.freeStack[this.freeCount++] = handle;
      return;
    }
    const n = this.pendingCount[owner];
    this.pendingReturn[owner][n] = handle;
    this.pendingCount[owner] = n + 1;
    if (n + 1 === RETURN_BURST) this.flushReturns(owner);
  }

  /** Records that one of our buffers is handed to another PMD (it comes back by reclaim). */
  markAway(handle: number): void {
    if (((handle / this.perPmd) | 0) === this.pmd) this.away[handle] = 1;
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
      const room = this.freeStack.length - this.freeCount;
      const n = ring.dequeueBurst(this.freeStack, room, this.freeCount);
      for (let i = 0; i < n; i++) this.away[this.freeStack[this.freeCount + i]] = 0;
      this.freeCount += n;
      total += n;
    }
    return total;
  }

  /** Byte offset of a buffer's frame in `data`. */
  frameOffset(handle: number): number {
    return handle * BUFFER_STRIDE + HEADROOM;
  }
}
