// A packed virtqueue seen from the device side (VIRTIO v1.2, 2.8): one descriptor ring that
// driver and device both write, wrap counters in place of indexes, event suppression areas
// in place of avail/used flags. The checks are the split ring's (split-queue.ts): every
// buffer is translated through the memory table, chains and indirect tables are bounded,
// and nothing the guest writes makes one chain cost more than maxChain + 1 descriptor reads
// (and its indirect table's entries).
//
// Positions are `index | wrap counter << 15`, the vring base vhost-user gives packed rings.
// vrouter returns chains in the order it takes them, so used descriptors land exactly where
// the chains they return started (2.8.7 "in order"), and the used position always equals
// the available one between bursts.
import type { GuestMemory } from './guest-memory.ts';
import {
  MAX_PACKED_QUEUE_SIZE,
  NET_HDR_LEN,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from './constants.ts';
import { CHAIN_BAD, CHAIN_TOO_LONG, CLAIM_AHEAD_MAX, CLAIM_HEADER_MIN_LEN, claimKept, MAX_CHAIN_DESCRIPTORS, NO_CHAIN, ringPart, type InflightRecovery, type Virtqueue } from './virtqueue.ts';
import type { QueueLayout } from './split-queue.ts';

const WRAP = 0x8000;
const INDEX = 0x7fff;
/** where both sides start on a new ring: index 0, wrap counters 1 (2.8.1) */
export const FRESH_RING = WRAP;
const AVAIL_AND_USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

// The two marks a descriptor at a position of wrap counter `w` (position & WRAP, bit 15)
// has when it is available (2.8.1: AVAIL equals the driver's wrap counter and USED does
// not): (w >> 8) | (w ^ WRAP); when it is used (2.8.7: both equal the device's): (w >> 8) | w.
// Written out where they are tested or written, for every chain: V8, its inlining budget
// spent on the burst's loops, left even one-line methods for them as calls there.

/**
 * Whether any descriptor has USED set: a new ring's never has (drivers allocate the ring
 * zeroed, and make descriptors available in wrap 1 with USED clear); a ring that went round
 * has, on the used descriptors a device wrote in wrap 1, or on those made available again
 * in wrap 0. Then a zero left in our event suppression area is index 0 of wrap 0, not a new
 * ring. Read once, when a queue is built on a new ring's base and a zero area.
 */
function wentRound(desc: [ArrayBuffer, number], size: number): boolean {
  const words = new Uint16Array(desc[0], desc[1], 8 * size);
  for (let i = 0; i < size; i++) if ((words[8 * i + 7] & VIRTQ_DESC_F_USED) !== 0) return true;
  return false;
}

export class PackedQueue implements Virtqueue {
  readonly size: number;
  readonly mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /**
   * VIRTIO_F_IN_ORDER on a queue the device only reads (a guest's TX queue): the driver
   * takes one used descriptor, with the last buffer's id, for a batch of buffers used in
   * order (2.8.9), and skips as far as that buffer. One cache line of the guest's ring
   * written a burst instead of one per four chains. A batch with lengths goes whole.
   */
  private readonly inOrder: boolean;
  readonly maxChain: number;
  /** descriptor i: addr (u32 4i, 4i+1), len (u32 4i+2), id (u16 8i+6), flags (u16 8i+7) */
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  /** the driver's event suppression area: off_wrap, flags (when it wants interrupts) */
  private readonly driverEvent16: Uint16Array;
  /** ours: off_wrap, flags (when we want kicks) */
  private readonly deviceEvent16: Uint16Array;
  lastAvailIdx: number;
  usedIdx: number;
  failed = false;
  failure = '';
  descriptorsRead = 0;
  readonly segWindow = new Int32Array(MAX_CHAIN_DESCRIPTORS);
  readonly segOffset = new Float64Array(MAX_CHAIN_DESCRIPTORS);
  readonly segLength = new Uint32Array(MAX_CHAIN_DESCRIPTORS);
  chainBytes = 0;
  /** buffer id of the chain takeChain() last took (its last descriptor's), and its ring descriptors */
  chainId = 0;
  private chainDescs = 0;
  readonly inflightRecovery: InflightRecovery | null = null;
  /**
   * Used descriptors returned and not yet published: a used descriptor overwrites the
   * chain's first descriptor, and a frame rolled back takes its chains again, so nothing
   * is written into the ring before publishUsed().
   */
  private readonly returnedId: Uint16Array;
  private readonly returnedLen: Uint32Array;
  private readonly returnedAt: Uint16Array;
  private returnedCount = 0;
  /** whether a chain returned since the last publishUsed() has a length (the device wrote into it) */
  private returnedWritten = false;
  /**
   * claimChains(): the aheadCount one-descriptor chains from the position it started at,
   * as read then (buffer id, window, offset, length; length 0: not translated), served to
   * takeChain() in order while its position is the next one's (aheadNext, aheadPosition).
   */
  private readonly aheadId = new Uint16Array(CLAIM_AHEAD_MAX);
  private readonly aheadWindow = new Int32Array(CLAIM_AHEAD_MAX);
  private readonly aheadOffset = new Float64Array(CLAIM_AHEAD_MAX);
  private readonly aheadLength = new Uint32Array(CLAIM_AHEAD_MAX);
  /** 1: its claim wrote the virtio-net header (see headerWritten) */
  private readonly aheadHeader = new Uint8Array(CLAIM_AHEAD_MAX);
  private aheadCount = 0;
  private aheadNext = 0;
  private aheadPosition = 0;

  private constructor(mem: GuestMemory, layout: QueueLayout, position: number, desc: [ArrayBuffer, number], driverEvent: [ArrayBuffer, number], deviceEvent: [ArrayBuffer, number]) {
    this.mem = mem;
    this.size = layout.size;
    this.eventIdx = layout.eventIdx;
    this.inOrder = layout.inOrder === true;
    this.indirect = layout.indirect;
    this.maxChain = layout.size < MAX_CHAIN_DESCRIPTORS ? layout.size : MAX_CHAIN_DESCRIPTORS;
    this.desc32 = new Uint32Array(desc[0], desc[1], 4 * layout.size);
    this.desc16 = new Uint16Array(desc[0], desc[1], 8 * layout.size);
    this.driverEvent16 = new Uint16Array(driverEvent[0], driverEvent[1], 2);
    this.deviceEvent16 = new Uint16Array(deviceEvent[0], deviceEvent[1], 2);
    this.lastAvailIdx = position;
    this.usedIdx = position;
    this.returnedId = new Uint16Array(layout.size);
    this.returnedLen = new Uint32Array(layout.size);
    this.returnedAt = new Uint16Array(layout.size);
    this.deviceEvent16[0] = position;
  }

  /**
   * Builds the views of a queue, or returns why it cannot: 2.8.10.1 alignment (descriptor
   * ring 16, event suppression areas 4), any size up to 2^15, each part inside guest
   * memory. layout.lastAvailIdx is a position (index | wrap << 15); -1 resumes where the
   * last owner stopped, which each publishUsed() leaves in our event suppression area's
   * off_wrap: drivers read that field only while its flags say DESC, which we never set.
   * A fresh ring's base with a position left there resumes there too (see below).
   */
  static create(mem: GuestMemory, layout: QueueLayout): PackedQueue | string {
    const { size } = layout;
    if (!Number.isInteger(size) || size < 1 || size > MAX_PACKED_QUEUE_SIZE) return `packed queue size ${size} is not 1 to ${MAX_PACKED_QUEUE_SIZE}`;
    const desc = ringPart(mem, 'descriptor ring', layout.descAddr, 16 * size, 16);
    if (typeof desc === 'string') return desc;
    const driverEvent = ringPart(mem, 'driver event suppression area', layout.availAddr, 4, 4);
    if (typeof driverEvent === 'string') return driverEvent;
    const deviceEvent = ringPart(mem, 'device event suppression area', layout.usedAddr, 4, 4);
    if (typeof deviceEvent === 'string') return deviceEvent;
    const left = new Uint16Array(deviceEvent[0], deviceEvent[1], 1)[0];
    let position = layout.lastAvailIdx;
    // A frontend that lost track of the ring (QEMU reconnecting to a restarted backend
    // cannot read a packed ring's position back, as it reads used->idx of a split one)
    // sends a fresh ring's base; a fresh ring's area is zero (drivers allocate it zeroed),
    // so one that holds a position was left by a device that had moved on.
    if (position < 0 || (position === FRESH_RING && left !== 0 && (left & INDEX) < size)) position = left;
    else if (position === FRESH_RING && left === 0 && wentRound(desc, size)) position = 0;
    if ((position & INDEX) >= size || position > 0xffff) return `position ${position & INDEX} (wrap ${position >> 15}) is outside a ring of ${size}`;
    return new PackedQueue(mem, layout, position, desc, driverEvent, deviceEvent);
  }

  /** Whether the descriptor at lastAvailIdx is available: `size` (a bound on the chains) or 0. */
  pending(): number {
    const at = this.lastAvailIdx & INDEX;
    // Atomics orders this read before the descriptor reads that follow (2.8.21.1).
    const flags = Atomics.load(this.desc16, at * 8 + 7);
    this.aheadCount = 0;
    const w = this.lastAvailIdx & WRAP;
    return (flags & AVAIL_AND_USED) === ((w >> 8) | (w ^ WRAP)) ? this.size : 0;
  }

  fail(why: string): void {
    this.failed = true;
    this.failure = why;
  }

  /**
   * See SplitQueue.claimChains: the buffers' lines, not the used descriptors' (they lie in
   * the lines the driver polls and writes: claimed, 1.01 to 1.03 of the time a frame), at
   * most CLAIM_AHEAD_MAX, up to the first descriptor not available or not one
   * device-writable buffer on its own. The chains read, translated, serve takeChain() in
   * order (0.97 to 0.98 of the time a frame, with the header written by the claims), until
   * the next pending(): read once, as a split ring's, so a driver that rewrites a
   * descriptor it made available gets the buffer it first made available. As a split
   * ring's, all chains are read and kept first, then claimed back to back: a claim waits
   * in the store buffer for its line, and the stores that keep a chain, behind it, waited
   * too (0.89 to 0.94 of the time a frame against claiming each as it was read).
   */
  claimChains(count: number, frameAt: number): void {
    const desc16 = this.desc16;
    const desc32 = this.desc32;
    const mem = this.mem;
    const n = count < CLAIM_AHEAD_MAX ? count : CLAIM_AHEAD_MAX;
    const withHeaders = frameAt === NET_HDR_LEN;
    let position = this.lastAvailIdx;
    this.aheadNext = 0;
    this.aheadPosition = position;
    let i = 0;
    for (; i < n; i++) {
      const at = position & INDEX;
      const flags = desc16[at * 8 + 7];
      const w = position & WRAP;
      if ((flags & AVAIL_AND_USED) !== ((w >> 8) | (w ^ WRAP)) || (flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)) !== VIRTQ_DESC_F_WRITE) break;
      const len = desc32[at * 4 + 2];
      this.aheadId[i] = desc16[at * 8 + 6];
      this.aheadLength[i] = 0;
      // The last translation's window first, written out (see GuestMemory.translateAt).
      const addr = desc32[at * 4] + desc32[at * 4 + 1] * 4294967296;
      const inLast = addr >= mem.gpaStart[mem.window] && addr + len <= mem.gpaEnd[mem.window];
      if (inLast) mem.offset = addr - mem.gpaStart[mem.window];
      this.aheadHeader[i] = 0;
      if (len > 0 && (inLast || mem.translateAt(desc32, at * 4, len))) {
        this.aheadWindow[i] = mem.window;
        this.aheadOffset[i] = mem.offset;
        this.aheadLength[i] = len;
        if (withHeaders && len >= CLAIM_HEADER_MIN_LEN && (mem.offset & 3) === 0) this.aheadHeader[i] = 1;
      }
      position = at + 1 < this.size ? position + 1 : (position & WRAP) ^ WRAP;
    }
    this.aheadCount = i;
    claimKept(mem, i, this.aheadLength, this.aheadWindow, this.aheadOffset, this.aheadHeader, frameAt);
  }

  /** See Virtqueue.headerWritten: set for a chain served from the claims' reads. */
  headerWritten = false;

  forgetClaims(): void {
    this.aheadCount = 0;
  }

  indexWord(): number {
    return this.desc16[(this.lastAvailIdx & INDEX) * 8 + 7];
  }

  hasChain(): boolean {
    const w = this.lastAvailIdx & WRAP;
    return this.returnedCount < this.size && (this.desc16[(this.lastAvailIdx & INDEX) * 8 + 7] & AVAIL_AND_USED) === ((w >> 8) | (w ^ WRAP));
  }

  /** The position n descriptors after `position`, the wrap counter flipped on each lap. */
  private advance(position: number, n: number): number {
    const index = (position & INDEX) + n;
    return index < this.size ? (position & WRAP) | index : ((position & WRAP) ^ WRAP) | (index - this.size);
  }

  /**
   * See Virtqueue.takeChain. A chain is the descriptors from lastAvailIdx up to the first
   * without NEXT, wrapping at the ring's end (2.8.6); its buffer id is the last one's. A
   * bad chain is still skipped whole and returned, so the queue moves on; one that never
   * ends (NEXT on all `size` descriptors), or goes on past maxChain, means the ring is
   * corrupt: the queue fails (fail()), and NO_CHAIN comes back.
   * The plain reads after the flags are ordered by the branch on them (x86 keeps loads in
   * order), as the split ring's entries are by its one avail->idx read.
   */
  takeChain(writable: boolean, maxBytes: number): number {
    // In flight between two publishUsed() calls: at most a ring's worth (a driver flipping
    // flags under the device would otherwise keep one burst taking chains).
    if (this.returnedCount === this.size) return NO_CHAIN;
    const position = this.lastAvailIdx;
    let at = position & INDEX;
    this.headerWritten = false;
    if (this.aheadNext < this.aheadCount) {
      if (writable && position === this.aheadPosition) {
        const k = this.aheadNext++;
        this.aheadPosition = at + 1 < this.size ? position + 1 : (position & WRAP) ^ WRAP;
        const len = this.aheadLength[k];
        if (len > 0) {
          // One device-writable descriptor, translated whole: the fast path below, done.
          this.descriptorsRead++;
          this.chainId = this.aheadId[k];
          this.chainDescs = 1;
          this.lastAvailIdx = this.aheadPosition;
          if (len > maxBytes) return CHAIN_TOO_LONG;
          this.segWindow[0] = this.aheadWindow[k];
          this.segOffset[0] = this.aheadOffset[k];
          this.segLength[0] = len;
          this.chainBytes = len;
          this.headerWritten = this.aheadHeader[k] === 1;
          return 1;
        }
      } else this.aheadCount = 0;
    }
    const desc16 = this.desc16;
    const desc32 = this.desc32;
    let flags = desc16[at * 8 + 7];
    const w = position & WRAP;
    if ((flags & AVAIL_AND_USED) !== ((w >> 8) | (w ^ WRAP))) return NO_CHAIN;
    const wantFlag = writable ? VIRTQ_DESC_F_WRITE : 0;
    const mem = this.mem;
    // Fast path: one direct descriptor (header and frame together).
    if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)) === wantFlag) {
      const len = desc32[at * 4 + 2];
      if (len > 0) {
        this.descriptorsRead++;
        this.chainId = desc16[at * 8 + 6];
        this.chainDescs = 1;
        this.lastAvailIdx = at + 1 < this.size ? position + 1 : (position & WRAP) ^ WRAP;
        if (len > maxBytes) return CHAIN_TOO_LONG;
        const addr = desc32[at * 4] + desc32[at * 4 + 1] * 4294967296;
        if (addr >= mem.gpaStart[mem.window] && addr + len <= mem.gpaEnd[mem.window]) mem.offset = addr - mem.gpaStart[mem.window];
        else if (!mem.translateAt(desc32, at * 4, len)) return CHAIN_BAD;
        this.segWindow[0] = mem.window;
        this.segOffset[0] = mem.offset;
        this.segLength[0] = len;
        this.chainBytes = len;
        return 1;
      }
    }
    return this.takeLongChain(position, flags, wantFlag, maxBytes);
  }

  /**
   * takeChain() for every chain but one direct descriptor: NB kept apart so that the fast
   * path above stays small enough for V8 to inline into the data path.
   */
  private takeLongChain(position: number, flags: number, wantFlag: number, maxBytes: number): number {
    const desc16 = this.desc16;
    const desc32 = this.desc32;
    const mem = this.mem;
    let at = position & INDEX;
    let error = 0; // CHAIN_BAD or CHAIN_TOO_LONG once found: the rest is only skipped
    let descs = 0;
    let steps = 0;
    let segments = 0;
    let total = 0;
    for (;;) {
      if (descs === this.size) {
        this.fail(`descriptor chain from ${position & INDEX} never ends (NEXT on every descriptor)`);
        return NO_CHAIN;
      }
      // No chain may have more: its end is where the next chain starts, so one longer could
      // only be skipped by walking on, up to the ring's size in reads a burst (32,768),
      // again every burst the guest re-arms it with two stores. It fails the queue instead.
      if (descs > this.maxChain) {
        this.fail(`descriptor chain from ${position & INDEX} has more than ${this.maxChain} descriptors`);
        return NO_CHAIN;
      }
      if (descs > 0) flags = desc16[at * 8 + 7];
      descs++;
      this.descriptorsRead++;
      if (error === 0) {
        // The address is put together by translateAt(), as in the split ring's walk.
        const len = desc32[at * 4 + 2];
        if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
          // 2.8.19: the table's entries are the chain's remaining buffers, in order (NEXT
          // and id in them mean nothing). INDIRECT with NEXT is refused (as 2.7.5.3.1
          // says of split rings), so a table ends its chain; it may not hold more buffers
          // than the chain may still take.
          if (!this.indirect || (flags & VIRTQ_DESC_F_NEXT) !== 0 || len === 0 || (len & 15) !== 0 || len / 16 > this.maxChain - steps || !mem.translateAt(desc32, at * 4, len)) {
            error = CHAIN_BAD;
          } else {
            const table = mem.data[mem.window];
            const base = mem.offset;
            const entries = len / 16;
            for (let e = 0; e < entries; e++) {
              const o = base + e * 16;
              const entryLen = table.getUint32(o + 8, true);
              this.descriptorsRead++;
              steps++;
              // 2.8.19: "MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect
              // descriptor": refused rather than ignored, as the split ring does.
              const entryFlags = table.getUint16(o + 14, true);
              if ((entryFlags & VIRTQ_DESC_F_WRITE) !== wantFlag || (entryFlags & VIRTQ_DESC_F_INDIRECT) !== 0) {
                error = CHAIN_BAD;
                break;
              }
              if (entryLen === 0) continue;
              if (!mem.translateIn(table, o, entryLen)) {
                error = CHAIN_BAD;
                break;
              }
              // segments <= steps <= maxChain: the segment arrays cannot overflow.
              this.segWindow[segments] = mem.window;
              this.segOffset[segments] = mem.offset;
              this.segLength[segments] = entryLen;
              segments++;
              total += entryLen;
              if (total > maxBytes) {
                error = CHAIN_TOO_LONG;
                break;
              }
            }
          }
        } else if (steps === this.maxChain || (flags & VIRTQ_DESC_F_WRITE) !== wantFlag) {
          error = CHAIN_BAD;
        } else {
          steps++;
          if (len > 0) {
            if (!mem.translateAt(desc32, at * 4, len)) {
              error = CHAIN_BAD;
            } else {
              this.segWindow[segments] = mem.window;
              this.segOffset[segments] = mem.offset;
              this.segLength[segments] = len;
              segments++;
              total += len;
              if (total > maxBytes) error = CHAIN_TOO_LONG;
            }
          }
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      at = at + 1 < this.size ? at + 1 : 0;
    }
    this.chainId = desc16[at * 8 + 6];
    this.chainDescs = descs;
    this.lastAvailIdx = this.advance(position, descs);
    this.chainBytes = total;
    return error !== 0 ? error : segments;
  }

  returnChain(len: number): void {
    const k = this.returnedCount++;
    this.returnedId[k] = this.chainId;
    this.returnedLen[k] = len;
    if (len !== 0) this.returnedWritten = true;
    this.returnedAt[k] = this.usedIdx;
    this.usedIdx = this.advance(this.usedIdx, this.chainDescs);
  }

  forgetUsed(to: number): void {
    while (this.returnedCount > 0 && this.usedIdx !== to) this.usedIdx = this.returnedAt[--this.returnedCount];
  }

  /**
   * Writes the returned chains' used descriptors (2.8.7: id, len, then flags with AVAIL and
   * USED both equal to the used wrap counter; WRITE when the device wrote into the buffer),
   * the first one's id and flags last and with Atomics.store, a full barrier: the driver reads
   * from that descriptor on, so it sees the whole burst or none of it. Then says whether the
   * driver wants an interrupt (2.8.10).
   */
  publishUsed(from: number): boolean {
    if (!this.writeUsed(true)) return false;
    return this.wantsInterrupt(from);
  }

  /** publishUsed() without its barrier and its interrupt decision (see SplitQueue.exposeUsed): the first id and flags written last, with a plain store. */
  exposeUsed(_from: number): boolean {
    return this.writeUsed(false);
  }

  callWanted(from: number): boolean {
    return this.wantsInterrupt(from);
  }

  /** The used descriptors of the chains returned since the last write; false if there were none. */
  private writeUsed(barrier: boolean): boolean {
    const n = this.returnedCount;
    if (n === 0) return false;
    const desc32 = this.desc32;
    // In order and only read: the batch's first slot says it all (see inOrder); its length is 0.
    const batched = this.inOrder && !this.returnedWritten;
    const firstAt = this.returnedAt[0] & INDEX;
    desc32[firstAt * 4 + 2] = this.returnedLen[0];
    // Each descriptor's id (bytes 12-13) and flags (14-15) go in one store: a store to a
    // line the driver's CPU holds waits in the store buffer, and so does every store behind
    // it (0.97 to 0.98 of the time a frame against storing id and flags apart, packed
    // 64-byte frames).
    for (let k = 1; k < n && !batched; k++) {
      const at = this.returnedAt[k] & INDEX;
      const len = this.returnedLen[k];
      desc32[at * 4 + 2] = len;
      const w = this.returnedAt[k] & WRAP;
      desc32[at * 4 + 3] = this.returnedId[k] | (((w >> 8) | w | (len > 0 ? VIRTQ_DESC_F_WRITE : 0)) << 16);
    }
    const w = this.returnedAt[0] & WRAP;
    const idAndFlags = this.returnedId[batched ? n - 1 : 0] | (((w >> 8) | w | (this.returnedLen[0] > 0 ? VIRTQ_DESC_F_WRITE : 0)) << 16);
    if (barrier) Atomics.store(desc32, firstAt * 4 + 3, idAndFlags);
    else desc32[firstAt * 4 + 3] = idAndFlags;
    this.returnedCount = 0;
    this.returnedWritten = false;
    this.deviceEvent16[0] = this.usedIdx;
    return true;
  }

  /**
   * 2.8.10: the driver's flags: DISABLE, ENABLE, or (EVENT_IDX) DESC: an interrupt once the
   * used descriptor at off_wrap is written, decided as vring_need_event() does on
   * positions counted across one wrap.
   */
  private wantsInterrupt(from: number): boolean {
    const flags = this.driverEvent16[1];
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const offWrap = this.driverEvent16[0];
    const now = this.usedIdx & INDEX;
    let old = from & INDEX;
    let event = offWrap & INDEX;
    if (now <= old) old -= this.size;
    if ((offWrap & WRAP) !== (this.usedIdx & WRAP)) event -= this.size;
    return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** 2.8.10: kicks wanted (ENABLE); Atomics.store orders it before the caller's pending() check. */
  enableNotifications(): void {
    Atomics.store(this.deviceEvent16, 1, RING_EVENT_FLAGS_ENABLE);
  }

  suppressNotifications(): void {
    this.deviceEvent16[1] = RING_EVENT_FLAGS_DISABLE;
  }
}
