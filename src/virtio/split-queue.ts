// A split virtqueue seen from the device side (VIRTIO v1.2, 2.7): views over the guest's
// descriptor table, available ring and used ring, and a checked walk of descriptor chains.
// The guest is untrusted: every index is bounds-checked, every chain walk is step-limited,
// every buffer is translated through the memory table before it is touched.
import { GuestMemory } from './guest-memory.ts';
import {
  isSplitQueueSize,
  MAX_QUEUE_SIZE,
  NET_HDR_LEN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './constants.ts';
import { CHAIN_BAD, CHAIN_TOO_LONG, CLAIM_AHEAD_MAX, CLAIM_HEADER_MIN_LEN, claimKept, MAX_CHAIN_DESCRIPTORS, NO_CHAIN, ringPart, type InflightRecovery, type Virtqueue } from './virtqueue.ts';
import { DESC_COUNTER, DESC_INFLIGHT, DESC_NEXT, INFLIGHT_DESC_BYTES, INFLIGHT_HEADER_BYTES, inflightEntry, OFF_LAST_BATCH_HEAD, OFF_USED_IDX, readInflight } from './inflight.ts';

export interface QueueLayout {
  size: number;
  /** frontend virtual addresses from SET_VRING_ADDR */
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /**
   * the next available index to process (SET_VRING_BASE); -1: resume where the used ring
   * says the last owner stopped (a PMD restarted after a crash)
   */
  lastAvailIdx: number;
  eventIdx: boolean;
  indirect: boolean;
  /** VIRTIO_F_RING_PACKED: descAddr is the descriptor ring, availAddr and usedAddr the driver's and device's event suppression areas */
  packed?: boolean;
  /** VIRTIO_F_IN_ORDER, on a queue the device only reads (a guest's TX queue): its buffers go back one used element (split) or descriptor (packed) a batch */
  inOrder?: boolean;
}

export { CHAIN_BAD, CHAIN_TOO_LONG, MAX_CHAIN_DESCRIPTORS, NO_CHAIN, type InflightRecovery };

export class SplitQueue implements Virtqueue {
  readonly size: number;
  readonly mask: number;
  readonly mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  /** flags, idx, ring[size], used_event */
  private readonly avail16: Uint16Array;
  /** flags, idx, ring[size] of {id u32, len u32}, avail_event (u16 view) */
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  lastAvailIdx: number;
  /** avail->idx as pending() last read it: takeChain() stops there */
  private availEnd = 0;
  /**
   * claimChains(): the aheadCount chains from aheadFrom on, as read then: each head and,
   * where aheadLength is not 0, its one descriptor's buffer (window, offset, length).
   * Forgotten by the next pending().
   */
  private readonly aheadHead = new Uint16Array(CLAIM_AHEAD_MAX);
  private readonly aheadWindow = new Int32Array(CLAIM_AHEAD_MAX);
  private readonly aheadOffset = new Float64Array(CLAIM_AHEAD_MAX);
  private readonly aheadLength = new Uint32Array(CLAIM_AHEAD_MAX);
  /** 1 where the claim writes the virtio-net header too (see claimKept) */
  private readonly aheadHeader = new Uint8Array(CLAIM_AHEAD_MAX);
  private aheadFrom = 0;
  private aheadCount = 0;
  /** the head of the chain takeChain() last took */
  chainId = 0;
  headerWritten = false;
  /** our copy of used->idx: published once per burst */
  usedIdx: number;
  /**
   * VIRTIO_F_IN_ORDER on a queue the device only reads, without an inflight record (which
   * reads the heads back from the used ring): 2.7.9 lets the device write one used element
   * a batch, in the batch's first slot, with the head of its last chain, and move the index
   * past the whole batch. Each element is a store into a line the driver's CPU reads; the
   * driver frees its buffers in order by the index alone (DPDK's in-order transmit cleanup
   * reads no element).
   */
  private readonly batchesReturns: boolean;
  /** the first slot whose element is not written: [batchFrom, usedIdx) went back unwritten, length 0 */
  private batchFrom = 0;
  /** the head returned at each slot of the batch */
  private readonly batchHead: Uint16Array;
  failed = false;
  failure = '';
  /**
   * The most descriptors a chain of this queue may have: VIRTIO v1.2, 2.7.5.3.1 "A driver
   * MUST NOT create a descriptor chain longer than the Queue Size of the device", and no
   * more than MAX_CHAIN_DESCRIPTORS.
   */
  readonly maxChain: number;
  /** descriptors walkChain() has read since a caller last set this to 0 (to meter a burst) */
  descriptorsRead = 0;

  /** the segments of the last walked chain: window, offset and length of each */
  readonly segWindow = new Int32Array(MAX_CHAIN_DESCRIPTORS);
  readonly segOffset = new Float64Array(MAX_CHAIN_DESCRIPTORS);
  readonly segLength = new Uint32Array(MAX_CHAIN_DESCRIPTORS);
  /** total bytes of the last walked chain */
  chainBytes = 0;

  /**
   * The inflight record (see inflight.ts), when the frontend gave one: a chain is marked
   * when its used element is written and unmarked once published. Every chain taken is
   * returned in the burst that took it, in the order taken, so the marked chains are
   * always those at the head of the available ring from used->idx on.
   */
  private readonly tracksInflight: boolean;
  private readonly inflight8: Uint8Array;
  private readonly inflight16: Uint16Array;
  private readonly inflight32: Uint32Array;
  private inflightCounter = 1;
  readonly inflightRecovery: InflightRecovery | null = null;

  private constructor(mem: GuestMemory, layout: QueueLayout, desc: [ArrayBuffer, number], avail: [ArrayBuffer, number], used: [ArrayBuffer, number], inflight: Uint8Array | null) {
    this.mem = mem;
    this.size = layout.size;
    this.mask = layout.size - 1;
    this.eventIdx = layout.eventIdx;
    this.indirect = layout.indirect;
    this.maxChain = layout.size < MAX_CHAIN_DESCRIPTORS ? layout.size : MAX_CHAIN_DESCRIPTORS;
    this.desc32 = new Uint32Array(desc[0], desc[1], 4 * layout.size);
    this.desc16 = new Uint16Array(desc[0], desc[1], 8 * layout.size);
    this.avail16 = new Uint16Array(avail[0], avail[1], 3 + layout.size);
    this.used16 = new Uint16Array(used[0], used[1], 3 + 4 * layout.size);
    this.used32 = new Uint32Array(used[0], used[1], 1 + 2 * layout.size);
    // Every chain taken is returned in the same burst, so used->idx is where the
    // previous owner's last published burst ended.
    this.lastAvailIdx = layout.lastAvailIdx < 0 ? Atomics.load(this.used16, 1) : layout.lastAvailIdx & 0xffff;
    this.usedIdx = this.lastAvailIdx;
    this.batchFrom = this.usedIdx;
    this.tracksInflight = inflight !== null;
    this.batchesReturns = layout.inOrder === true && inflight === null;
    this.batchHead = new Uint16Array(this.batchesReturns ? layout.size : 0);
    this.inflight8 = inflight ?? new Uint8Array(0);
    this.inflight16 = new Uint16Array(this.inflight8.buffer, this.inflight8.byteOffset, this.inflight8.byteLength >> 1);
    this.inflight32 = new Uint32Array(this.inflight8.buffer, this.inflight8.byteOffset, this.inflight8.byteLength >> 2);
    if (inflight !== null) this.inflightRecovery = this.recoverInflight(inflight);
  }

  /**
   * Where a queue with an inflight record resumes. Chains the previous owner took and did
   * not return are taken again: an owner that works in order (vrouter) left them at the
   * head of the available ring, from used->idx on, so the queue resumes there. Marked
   * chains found anywhere else cannot be placed in the ring: they are returned unprocessed
   * (length 0) and the queue resumes after them, where such an owner had got to.
   */
  private recoverInflight(area: Uint8Array): InflightRecovery {
    const ringUsed = Atomics.load(this.used16, 1);
    const state = readInflight(area, this.size, ringUsed);
    this.inflightCounter = state.nextCounter;
    const n = state.heads.length;
    if (n === 0) return { retaken: 0, returned: 0, fresh: state.fresh, disagreed: 0 };
    const madeAvailable = (Atomics.load(this.avail16, 1) - ringUsed) & 0xffff;
    if (n > madeAvailable || madeAvailable > this.size) {
      // More in flight than the driver made available: not a record of this ring.
      readInflight(area.fill(0), this.size, ringUsed);
      return { retaken: 0, returned: 0, fresh: true, disagreed: n };
    }
    const atHead = state.heads.every((head, i) => this.avail16[2 + ((ringUsed + i) & this.mask)] === head);
    this.lastAvailIdx = ringUsed;
    this.usedIdx = ringUsed;
    if (atHead) return { retaken: n, returned: 0, fresh: false, disagreed: 0 };
    for (const head of state.heads) this.putUsed(head, 0);
    this.publishUsed(ringUsed);
    this.lastAvailIdx = this.usedIdx;
    return { retaken: 0, returned: n, fresh: false, disagreed: 0 };
  }

  /**
   * Builds the views of a queue, or returns why it cannot: VIRTIO v1.2, 2.7: "Queue Size
   * value is always a power of 2."; alignment 16 / 2 / 4 for descriptor table, available and
   * used ring (2.7, the table's "Alignment" column); each part inside guest memory.
   */
  static create(mem: GuestMemory, layout: QueueLayout, inflight: Uint8Array | null = null): SplitQueue | string {
    const { size } = layout;
    if (!isSplitQueueSize(size)) {
      return `queue size ${size} is not a power of 2 up to ${MAX_QUEUE_SIZE}`;
    }
    const desc = ringPart(mem, 'descriptor table', layout.descAddr, 16 * size, 16);
    if (typeof desc === 'string') return desc;
    const avail = ringPart(mem, 'available ring', layout.availAddr, 6 + 2 * size, 2);
    if (typeof avail === 'string') return avail;
    const used = ringPart(mem, 'used ring', layout.usedAddr, 6 + 8 * size, 4);
    if (typeof used === 'string') return used;
    if (inflight !== null && inflight.byteLength < INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * size) {
      return `inflight record of ${inflight.byteLength} bytes is too small for a queue of ${size}`;
    }
    return new SplitQueue(mem, layout, desc, avail, used, inflight);
  }

  /**
   * How many chains the driver has made available, or -1 if avail->idx is corrupt.
   * VIRTIO v1.2, 2.7: "Queue Size corresponds to the maximum number of buffers in the
   * virtqueue": more made available than that is a corrupt index.
   */
  pending(): number {
    // Atomics orders this read before the descriptor reads that follow (2.7.13.3.1).
    const count = (Atomics.load(this.avail16, 1) - this.lastAvailIdx) & 0xffff;
    if (count > this.size) {
      this.fail(`available index jumped by ${count} on a queue of ${this.size}`);
      return -1;
    }
    this.availEnd = (this.lastAvailIdx + count) & 0xffff;
    this.aheadCount = 0;
    return count;
  }

  fail(why: string): void {
    this.failed = true;
    this.failure = why;
  }

  /**
   * Before frames are written into the next `count` chains pending() counted (a guest's
   * RX queue): reads them ahead of the walk and claims the cache lines their frames go
   * to, and those of the used ring they go back to. Those lines were last held by the
   * driver's CPU; a store to a line this CPU does not hold waits in the store buffer until
   * the line comes, and every store behind it waits too: written frame by frame, the lines
   * came one or two at a time. Here, back to back, many come at once: at the start of each
   * one-descriptor chain's buffer the virtio-net header of a frame that leaves the guest
   * nothing to do (headerWritten), with `frameAt` NET_HDR_LEN, else a zero; a zero `frameAt`
   * bytes in (the frame overwrites it); a zero in the first used element of each line
   * from usedIdx on (past the index the driver reads up to). The chain, translated, is
   * kept for takeChain() (forgotten by the next pending()). Nothing is kept or written
   * that the walk would refuse: a head past the table, more than one descriptor, a buffer
   * the device may not write or not inside guest memory. What is kept was read once: a
   * driver that rewrites a descriptor it made available gets the buffer it made available
   * first.
   */
  claimChains(count: number, frameAt: number): void {
    const avail16 = this.avail16;
    const desc32 = this.desc32;
    const desc16 = this.desc16;
    const mem = this.mem;
    const from = this.lastAvailIdx;
    const n = count < CLAIM_AHEAD_MAX ? count : CLAIM_AHEAD_MAX;
    const withHeaders = frameAt === NET_HDR_LEN;
    // The chains first, kept (stores to this thread's memory: they leave the store buffer
    // at once, with no claim before them to wait behind)...
    for (let i = 0; i < n; i++) {
      const head = avail16[2 + ((from + i) & this.mask)];
      this.aheadHead[i] = head;
      this.aheadLength[i] = 0;
      this.aheadHeader[i] = 0;
      if (head >= this.size) continue;
      const flags = desc16[head * 8 + 6];
      const len = desc32[head * 4 + 2];
      if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)) !== VIRTQ_DESC_F_WRITE || len === 0) continue;
      // The last translation's window first, written out (see GuestMemory.translateAt).
      const addr = desc32[head * 4] + desc32[head * 4 + 1] * 4294967296;
      if (addr >= mem.gpaStart[mem.window] && addr + len <= mem.gpaEnd[mem.window]) mem.offset = addr - mem.gpaStart[mem.window];
      else if (!mem.translateAt(desc32, head * 4, len)) continue;
      this.aheadWindow[i] = mem.window;
      this.aheadOffset[i] = mem.offset;
      this.aheadLength[i] = len;
      if (withHeaders && len >= CLAIM_HEADER_MIN_LEN && (mem.offset & 3) === 0) this.aheadHeader[i] = 1;
    }
    this.aheadFrom = from;
    this.aheadCount = n;
    // ...then the claims, back to back: nothing else in the store buffer between them.
    claimKept(mem, n, this.aheadLength, this.aheadWindow, this.aheadOffset, this.aheadHeader, frameAt);
    // And the used ring's lines they go back to, 8 elements a line: stores past the index
    // the driver reads up to, which it does not see. Each element's own stores came
    // later frame by frame, each line then one wait of the store buffer.
    const used32 = this.used32;
    for (let k = 0; k < n; k++) {
      const slot = (this.usedIdx + k) & this.mask;
      if (k === 0 || (slot & 7) === 0) used32[2 + slot * 2] = 0;
    }
  }

  forgetClaims(): void {
    this.aheadCount = 0;
  }

  indexWord(): number {
    return this.avail16[1];
  }

  hasChain(): boolean {
    return this.lastAvailIdx !== this.availEnd;
  }

  /** The chain at lastAvailIdx, if pending() saw it (see Virtqueue.takeChain). */
  takeChain(writable: boolean, maxBytes: number): number {
    const at = this.lastAvailIdx;
    if (at === this.availEnd) return NO_CHAIN;
    const i = (at - this.aheadFrom) & 0xffff;
    const ahead = writable && i < this.aheadCount;
    const head = ahead ? this.aheadHead[i] : this.avail16[2 + (at & this.mask)];
    this.chainId = head;
    this.lastAvailIdx = (at + 1) & 0xffff;
    this.headerWritten = false;
    if (ahead && this.aheadLength[i] > 0) {
      // One device-writable descriptor, translated whole: walkChain()'s fast path, done.
      const len = this.aheadLength[i];
      this.descriptorsRead++;
      if (len > maxBytes) return CHAIN_TOO_LONG;
      this.segWindow[0] = this.aheadWindow[i];
      this.segOffset[0] = this.aheadOffset[i];
      this.segLength[0] = len;
      this.chainBytes = len;
      this.headerWritten = this.aheadHeader[i] === 1;
      return 1;
    }
    return this.walkChain(head, writable, maxBytes);
  }

  returnChain(len: number): void {
    if (!this.batchesReturns) {
      this.putUsed(this.chainId, len);
    } else if (len === 0) {
      this.batchHead[this.usedIdx & this.mask] = this.chainId;
      this.usedIdx = (this.usedIdx + 1) & 0xffff;
    } else {
      this.writeBatch();
      this.putUsed(this.chainId, len);
      this.batchFrom = this.usedIdx;
    }
  }

  /** The batch's one used element (see batchesReturns), before the index moves past it. */
  private writeBatch(): void {
    if (this.batchFrom === this.usedIdx) return;
    const slot = (this.batchFrom & this.mask) * 2;
    this.used32[1 + slot] = this.batchHead[(this.usedIdx - 1) & this.mask];
    this.used32[2 + slot] = 0;
    this.batchFrom = this.usedIdx;
  }

  /** The head of the n-th available chain after lastAvailIdx. */
  availHead(n: number): number {
    return this.avail16[2 + ((this.lastAvailIdx + n) & this.mask)];
  }

  /**
   * Walks the chain that starts at head, checking every descriptor, and records its
   * segments. `writable` says which kind the device expects: VIRTIO v1.2, 2.7.5.1 "A device
   * MUST NOT write to a device-readable buffer"; a virtio-net chain is all of one kind.
   * Every descriptor counts, zero-length ones too: a walk reads at most maxChain of them
   * plus the one that points at an indirect table, whatever the guest put in its tables.
   * Returns the segment count, CHAIN_BAD, or CHAIN_TOO_LONG once more than maxBytes.
   */
  walkChain(head: number, writable: boolean, maxBytes: number): number {
    const mem = this.mem;
    const wantFlag = writable ? VIRTQ_DESC_F_WRITE : 0;
    // Fast path for speed: most chains are one direct descriptor (header and frame together).
    if (head < this.size) {
      const flags = this.desc16[head * 8 + 6];
      const len = this.desc32[head * 4 + 2];
      if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0 && (flags & VIRTQ_DESC_F_WRITE) === wantFlag && len > 0) {
        this.descriptorsRead++;
        if (len > maxBytes) return CHAIN_TOO_LONG;
        const addr = this.desc32[head * 4] + this.desc32[head * 4 + 1] * 4294967296;
        if (addr >= mem.gpaStart[mem.window] && addr + len <= mem.gpaEnd[mem.window]) mem.offset = addr - mem.gpaStart[mem.window];
        else if (!mem.translateAt(this.desc32, head * 4, len)) return CHAIN_BAD;
        this.segWindow[0] = mem.window;
        this.segOffset[0] = mem.offset;
        this.segLength[0] = len;
        this.chainBytes = len;
        return 1;
      }
    }
    let idx = head;
    let tableSize = this.size;
    let limit = this.maxChain;
    let indirectView: DataView | null = null;
    let indirectBase = 0;
    let steps = 0;
    let segments = 0;
    let total = 0;
    for (;;) {
      // Every descriptor counts, zero-length ones too: at the limit, whatever comes next
      // (a buffer, or a table of at least one) makes the chain too long. A loop ends here.
      if (idx >= tableSize || steps === limit) return CHAIN_BAD;
      this.descriptorsRead++;
      // The address is not read here: past 2^31 (a guest of more than 2 GiB) it is no small
      // integer, and a heap number at every call of translate() V8 did not inline.
      // translateAt() and translateIn() put it together themselves.
      let len: number, flags: number, next: number;
      if (indirectView === null) {
        len = this.desc32[idx * 4 + 2];
        flags = this.desc16[idx * 8 + 6];
        next = this.desc16[idx * 8 + 7];
      } else {
        const o = indirectBase + idx * 16;
        len = indirectView.getUint32(o + 8, true);
        flags = indirectView.getUint16(o + 12, true);
        next = indirectView.getUint16(o + 14, true);
      }
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // 2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an
        // indirect descriptor" and "MUST NOT set both VIRTQ_DESC_F_INDIRECT and
        // VIRTQ_DESC_F_NEXT in flags".
        if (!this.indirect || indirectView !== null || (flags & VIRTQ_DESC_F_NEXT) !== 0) return CHAIN_BAD;
        // 2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the Queue
        // Size of the device": a table of more entries is refused unread.
        if (len === 0 || (len & 15) !== 0 || len / 16 > this.size) return CHAIN_BAD;
        if (!mem.translateAt(this.desc32, idx * 4, len)) return CHAIN_BAD;
        indirectView = mem.data[mem.window];
        indirectBase = mem.offset;
        tableSize = len / 16;
        // The chain ends in this table: what came before it plus the table's entries.
        if (steps + tableSize < limit) limit = steps + tableSize;
        idx = 0;
        continue;
      }
      steps++;
      if ((flags & VIRTQ_DESC_F_WRITE) !== wantFlag) return CHAIN_BAD;
      if (len > 0) {
        // segments <= steps <= maxChain: the segment arrays cannot overflow.
        if (!(indirectView === null ? mem.translateAt(this.desc32, idx * 4, len) : mem.translateIn(indirectView, indirectBase + idx * 16, len))) return CHAIN_BAD;
        this.segWindow[segments] = mem.window;
        this.segOffset[segments] = mem.offset;
        this.segLength[segments] = len;
        segments++;
        total += len;
        if (total > maxBytes) return CHAIN_TOO_LONG;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = next;
    }
    this.chainBytes = total;
    return segments;
  }

  /** Records a used element for head (not yet visible to the guest: see publishUsed); returnChain() on a queue that batches its returns. */
  putUsed(head: number, len: number): void {
    const slot = (this.usedIdx & this.mask) * 2;
    this.used32[1 + slot] = head;
    this.used32[2 + slot] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    if (this.tracksInflight && head < this.size) this.markInflight(head);
  }

  /** Takes back the used elements written since `to` (none of them published). */
  forgetUsed(to: number): void {
    if (this.tracksInflight) this.unmarkUsed(to);
    // Slots from `to` on are free again; a batch that began before `to` now ends at it.
    if (this.batchesReturns && ((to - this.batchFrom) & 0xffff) > ((this.usedIdx - this.batchFrom) & 0xffff)) this.batchFrom = to;
    this.usedIdx = to;
  }

  /** Clears the inflight marks of the used elements written from `from` on. */
  private unmarkUsed(from: number): void {
    for (let i = from; i !== this.usedIdx; i = (i + 1) & 0xffff) {
      const head = this.used32[1 + (i & this.mask) * 2];
      if (head < this.size) this.inflight8[inflightEntry(head) + DESC_INFLIGHT] = 0;
    }
  }

  private markInflight(head: number): void {
    const at = inflightEntry(head);
    const counter = this.inflightCounter++;
    this.inflight32[(at + DESC_COUNTER) >> 2] = counter % 4294967296;
    this.inflight32[(at + DESC_COUNTER + 4) >> 2] = counter / 4294967296;
    this.inflight8[at + DESC_INFLIGHT] = 1;
  }

  /** Before used->idx moves: the batch about to be published, as the list the record keeps. */
  private linkInflightBatch(from: number): void {
    let last = this.inflight16[OFF_LAST_BATCH_HEAD >> 1];
    for (let i = from; i !== this.usedIdx; i = (i + 1) & 0xffff) {
      const head = this.used32[1 + (i & this.mask) * 2];
      if (head >= this.size) continue;
      this.inflight16[(inflightEntry(head) + DESC_NEXT) >> 1] = last;
      last = head;
    }
    this.inflight16[OFF_LAST_BATCH_HEAD >> 1] = last;
  }

  /** After used->idx moved: the batch is returned, its marks go, and the record says so. */
  private unmarkInflightBatch(from: number): void {
    this.unmarkUsed(from);
    this.inflight16[OFF_USED_IDX >> 1] = this.usedIdx;
  }

  /**
   * Makes the used elements written since `from` visible and says whether the guest wants
   * an interrupt for them (VIRTIO v1.2, 2.7.7.2 and 2.7.10).
   */
  publishUsed(from: number): boolean {
    // Atomics.store is a full barrier: the used elements are written before the index,
    // and the index before the used_event / flags read below (the device's side of what
    // 2.7.13.4.1 asks of the driver: "a suitable memory barrier before reading flags or
    // avail_event, to avoid missing a notification").
    if (this.tracksInflight) this.linkInflightBatch(from);
    if (this.batchesReturns) this.writeBatch();
    Atomics.store(this.used16, 1, this.usedIdx);
    if (this.tracksInflight) this.unmarkInflightBatch(from);
    return this.callWanted(from);
  }

  /**
   * publishUsed() without its barrier, for a caller that orders the index before the
   * reads of callWanted() with one barrier for several queues (see notify.ts): a plain
   * store, after the used elements in program order.
   */
  exposeUsed(from: number): boolean {
    if (this.tracksInflight) this.linkInflightBatch(from);
    if (this.batchesReturns) this.writeBatch();
    this.used16[1] = this.usedIdx;
    if (this.tracksInflight) this.unmarkInflightBatch(from);
    return true;
  }

  /** Whether the guest wants an interrupt for the used elements since `from`: read after a full barrier since the index was written. */
  callWanted(from: number): boolean {
    if (this.eventIdx) {
      const usedEvent = this.avail16[2 + this.size];
      return ((this.usedIdx - usedEvent - 1) & 0xffff) < ((this.usedIdx - from) & 0xffff);
    }
    return (this.avail16[0] & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Before the PMD sleeps: ask the driver to kick for the next buffer (VIRTIO v1.2,
   * 2.7.10: flags cleared, or avail_event = the next index we will read). Atomics.store
   * is a full barrier, so the caller's next pending() check cannot miss a buffer made
   * available before the driver saw this.
   */
  enableNotifications(): void {
    if (this.eventIdx) Atomics.store(this.used16, 2 + 4 * this.size, this.lastAvailIdx);
    else Atomics.store(this.used16, 0, 0);
  }

  /**
   * A polling device wants no kicks: VIRTIO v1.2, 2.7.10 (used->flags NO_NOTIFY) without
   * EVENT_IDX; with it, an avail_event just behind the driver's index (2.7.10.1).
   */
  suppressNotifications(): void {
    if (this.eventIdx) this.used16[2 + 4 * this.size] = (this.lastAvailIdx - 1) & 0xffff;
    else this.used16[0] = VIRTQ_USED_F_NO_NOTIFY;
  }
}
