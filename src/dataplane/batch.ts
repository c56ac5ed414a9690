// A burst on its way through a PMD, as struct-of-arrays metadata: the stages only write
// their decisions here, per packet; one egress step then counts the drops, delivers the
// rest and frees the buffers (VPP's error-drop node). A stage may also add packets of its
// own (an ARP request, an ICMP error) with emit().
import { EGRESS_DROP, EGRESS_UNDECIDED } from './egress-codes.ts';
export { EGRESS_CONSUMED, EGRESS_DROP, EGRESS_FLOOD, EGRESS_UNDECIDED } from './egress-codes.ts';
import { BURST } from './guest-io.ts';
import { DATA_ROOM, OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, type PacketPool } from './packet-pool.ts';
import { completeChecksum, forgetOffloads, l3Offset, leavesChecksum } from './offloads.ts';
import type { DeferredPayloads } from './deferred-payloads.ts';

/** Packets a stage may add to a burst, beyond the BURST received. */
export const EMIT_MAX = 32;
/** The most packets one batch holds. */
export const BATCH_MAX = BURST + EMIT_MAX;

/** Implements the plugin API's PacketBatch (src/pipeline/api.ts). */
export class Batch {
  private readonly pool: PacketPool;
  /** the packet buffers (see offset()) */
  readonly data: Uint8Array;
  /** the most bytes a frame may grow to (setLength) */
  readonly frameRoom = DATA_ROOM;
  count = 0;
  /** ms since the epoch, read once per poll round (see the plugin API) */
  now = 0;
  /** the port the burst came from (a burst is one queue's) */
  ingress = 0;
  readonly handles = new Uint32Array(BATCH_MAX);
  /**
   * Per packet, one number for speed (one array to fill and to read): the destination
   * port, EGRESS_FLOOD, or a drop: EGRESS_DROP - reason.
   */
  readonly egress = new Int32Array(BATCH_MAX);
  /** per packet, 0 at the start: a number a stage passes on to later ones */
  readonly mark = new Uint32Array(BATCH_MAX);
  /** per packet: 1 for the router's own packets (emitted, or answers written in place) */
  readonly local = new Uint8Array(BATCH_MAX);
  /** per packet: 1 once saveSource() kept its source MAC in the headroom */
  private readonly sourceSaved = new Uint8Array(BATCH_MAX);

  /** the same memory as data, in 16-bit and 32-bit words (PacketBatch) */
  readonly words16: Uint16Array;
  readonly words32: Uint32Array;
  /** the pool's per-handle lengths and offload fields, one load nearer (wireLength runs per packet) */
  private readonly lengths: Uint32Array;
  private readonly offload: Uint16Array;

  /** frames whose rest is still in their sender's memory (see deferred-payloads.ts) */
  private readonly deferred: DeferredPayloads | null;

  constructor(pool: PacketPool, deferred: DeferredPayloads | null = null) {
    this.pool = pool;
    this.deferred = deferred;
    this.lengths = pool.length;
    this.offload = pool.offload;
    this.data = pool.data;
    this.words16 = new Uint16Array(pool.data.buffer, pool.data.byteOffset, pool.data.byteLength >>> 1);
    this.words32 = new Uint32Array(pool.data.buffer, pool.data.byteOffset, pool.data.byteLength >>> 2);
  }

  /** Where packet i's frame starts in data: a multiple of 64 (HEADROOM and the buffer stride are). */
  offset(i: number): number {
    return this.pool.frameOffset(this.handles[i]);
  }

  length(i: number): number {
    return this.pool.length[this.handles[i]];
  }

  /**
   * Sets packet i's frame length (at most its buffer's room; the caller wrote the bytes).
   * What the frame left to do is kept only while it still fits: a checksum field cut off
   * is not finished, and a super-frame cut to its headers is a frame (cutting it would make
   * no segment). One with a segment's payload or less is cut into one, its headers made
   * right for its length.
   */
  setLength(i: number, length: number): void {
    const h = this.handles[i];
    // A frame changed in length is kept whole in its buffer from here on.
    if (this.deferred !== null) this.deferred.materialize(this.pool, h);
    const room = this.pool.room(h);
    const kept = length > room ? room : length;
    this.pool.length[h] = kept;
    const fields = h * OFFLOAD_FIELDS;
    const offload = this.pool.offload;
    const start = offload[fields + OFFLOAD_CSUM_START];
    if (start === 0) return;
    if (start - 1 + offload[fields + OFFLOAD_CSUM_OFFSET] + 2 > kept) forgetOffloads(this.pool, h);
    else if (offload[fields + OFFLOAD_GSO_TYPE] !== 0 && kept <= offload[fields + OFFLOAD_HDR_LEN]) offload[fields + OFFLOAD_GSO_TYPE] = 0;
  }

  /** For a super-frame, the length of the IP packets it is cut into (see the plugin API); else 0. */
  segmentLength(i: number): number {
    const fields = this.handles[i] * OFFLOAD_FIELDS;
    const offload = this.pool.offload;
    if (offload[fields + OFFLOAD_CSUM_START] === 0 || offload[fields + OFFLOAD_GSO_TYPE] === 0) return 0;
    return offload[fields + OFFLOAD_HDR_LEN] - l3Offset(this.data, this.offset(i)) + offload[fields + OFFLOAD_GSO_SIZE];
  }

  /** The bytes packet i puts on the wire: a super-frame's every segment repeats its headers. */
  wireLength(i: number): number {
    const h = this.handles[i];
    const fields = h * OFFLOAD_FIELDS;
    const offload = this.offload;
    const len = this.lengths[h];
    if (offload[fields + OFFLOAD_CSUM_START] === 0 || offload[fields + OFFLOAD_GSO_TYPE] === 0) return len;
    const hdr = offload[fields + OFFLOAD_HDR_LEN];
    const segments = Math.ceil((len - hdr) / offload[fields + OFFLOAD_GSO_SIZE]);
    return len + (segments - 1) * hdr;
  }

  /** Starts a burst of `count` handles already in `handles`, nothing decided yet. */
  begin(ingress: number, count: number): void {
    this.ingress = ingress;
    this.count = count;
    // A loop, not fill(): TypedArray.prototype.fill is a call into the runtime, four of
    // them a burst cost more than these stores.
    const egress = this.egress;
    const mark = this.mark;
    const local = this.local;
    const sourceSaved = this.sourceSaved;
    for (let i = 0; i < count; i++) {
      egress[i] = EGRESS_UNDECIDED;
      mark[i] = 0;
      local[i] = 0;
      sourceSaved[i] = 0;
    }
  }

  /**
   * Adds an empty packet bound for `egress` (a port or EGRESS_FLOOD) and returns its
   * index, or -1 when the batch is full or no buffer is free. The caller writes the frame
   * at offset() and calls setLength().
   */
  emit(egress: number): number {
    if (this.count === BATCH_MAX) return -1;
    const handle = this.pool.alloc();
    if (handle < 0) return -1;
    const i = this.count++;
    this.handles[i] = handle;
    this.pool.length[handle] = 0;
    this.egress[i] = egress;
    this.mark[i] = 0;
    this.local[i] = 1;
    this.sourceSaved[i] = 0;
    return i;
  }

  /** Packet i is about to hold a frame a stage writes anew: nothing left to do from its sender's (see the plugin API). */
  rewritten(i: number): void {
    const h = this.handles[i];
    if (this.deferred !== null) this.deferred.materialize(this.pool, h);
    forgetOffloads(this.pool, h);
  }

  /** Completes a checksum packet i leaves to do (see the plugin API). */
  completeChecksum(i: number): void {
    const h = this.handles[i];
    if (!leavesChecksum(this.pool, h)) return;
    if (this.deferred !== null) this.deferred.materialize(this.pool, h);
    completeChecksum(this.pool, h);
  }

  /** Marks packet i dropped for `reason` (counters.ts DROP). */
  dropAs(i: number, reason: number): void {
    this.egress[i] = EGRESS_DROP - reason;
  }

  /** Whether a stage dropped (or consumed) packet i. */
  dropped(i: number): boolean {
    const e = this.egress[i];
    return e <= EGRESS_DROP && e !== EGRESS_UNDECIDED;
  }

  /**
   * Keeps packet i's source MAC, as received, in the 6 bytes before its frame: a stage
   * that rewrites the Ethernet header calls this first, so that later stages can still
   * answer the sender (receivedSource()).
   */
  saveSource(i: number): void {
    if (this.sourceSaved[i] === 1) return;
    // A 16-bit and a 32-bit move (frames start 64-byte aligned, so bytes 6-7 and off - 6
    // are 16-bit aligned, bytes 8-11 and off - 4 32-bit aligned): copyWithin would cost a
    // call into the runtime, tens of ns, and this runs for every routed packet.
    const off = this.offset(i);
    this.words16[(off >>> 1) - 3] = this.words16[(off >>> 1) + 3];
    this.words32[(off >>> 2) - 1] = this.words32[(off >>> 2) + 2];
    this.sourceSaved[i] = 1;
  }

  /** Offset in data of the 6-byte source MAC packet i arrived with. */
  receivedSource(i: number): number {
    const off = this.offset(i);
    return this.sourceSaved[i] === 1 ? off - 6 : off + 6;
  }
}
