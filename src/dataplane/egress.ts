// The one egress step of a PMD: counts the drops a burst's stages decided, writes the other
// frames into their destination guests' RX queues (directly when this PMD runs one of the
// port's RX queues, else through the ring to the PMD that does), and frees the buffers.
// Frames other PMDs hand over arrive here too.
import { DOORBELL_SERVING, DOORBELL_SLEEPING } from '../vhost/dataplane-link.ts';
import { eventfdSignal } from '../sys/libc.ts';
import type { Batch } from './batch.ts';
import { CONTROL_WORDS, type CaptureWriter } from './capture.ts';
import { BATCH_MAX } from './batch.ts';
import { EGRESS_CONSUMED, EGRESS_DROP, EGRESS_FLOOD, EGRESS_UNDECIDED } from './egress-codes.ts';
import { countDrops, CSUM_COMPLETED, DROP, DROPS_BASE, GSO_SEGMENTS, portBase, TX_BYTES, TX_PACKETS } from './counters.ts';
import { BURST, deliverBurst, type QueueOwner } from './guest-io.ts';
import { completeChecksum, isSegmented, MAX_GSO_SEGMENTS, OFFLOAD_CSUM_TO_GUEST, segmentSuperFrame, takesSegmentation } from './offloads.ts';
import { OFFLOAD_CSUM_START, OFFLOAD_FIELDS, type PacketPool } from './packet-pool.ts';
import type { PmdConfig, PmdShared, PortRuntime } from './port-runtime.ts';
import { SpscRing } from './spsc-ring.ts';
import type { DeferredPayloads } from './deferred-payloads.ts';
import { carriesNoVlan, longestFrame, tagFrame, VLAN_NONE, VLAN_PORT, VLAN_TAG_LEN } from './vlan.ts';

/**
 * The most segments one flush cuts, over all its ports (a super-frame's first cut may go
 * a little past it): what a burst of super-frames to one port can need. A flooded
 * super-frame is cut again for each member that does not take it whole; without a bound
 * a guest's burst of 32 would have the PMD cut 2,048 segments for every member of its
 * bridge, and the other ports the PMD serves would wait. Past it, no_buffer.
 */
const SEGMENTS_PER_FLUSH = BURST * MAX_GSO_SEGMENTS;

/** A ring entry: destination port in the top bits, buffer handle below. */
export const HANDLE_BITS = 20;
const HANDLE_MASK = (1 << HANDLE_BITS) - 1;
/** refs value of a buffer handed to another PMD: no longer ours to free */
const GIVEN = 255;

export class Egress {
  private readonly cfg: PmdConfig;
  private readonly ports: PortRuntime[];
  private readonly pool: PacketPool;
  private readonly counters: Float64Array;
  private readonly doorbell: Int32Array;
  /** a queue found corrupt while written to: the PMD stops it */
  private readonly queueFailed: (port: PortRuntime, owner: QueueOwner) => void;
  private readonly rxHolders: Int32Array;
  /** rings to each other PMD (producer end); null for ourselves */
  private readonly ringsOut: (SpscRing | null)[];
  private readonly peerBells: Int32Array[];
  private readonly peerWakeFds: number[];
  /** per buffer handle: how many destinations this burst sends it to, or GIVEN */
  private readonly refs: Uint8Array;
  /** destination ports with frames pending in this burst */
  private readonly touched: Int32Array;
  private touchedCount = 0;
  /** per destination PMD: ring entries collected in this burst */
  private readonly outbox: Uint32Array[];
  private readonly outboxCount: Int32Array;
  private readonly inbox = new Uint32Array(BURST);
  /** per port: the ports of its bridge (where its EGRESS_FLOOD frames go) */
  private readonly floodDomains: readonly (readonly number[])[];
  /** records the frames written to a port being captured */
  private readonly capture: CaptureWriter;
  /** a port's frames with its super-frames cut into segments (cutSegments), and the segments' buffers to give back */
  private readonly segmented = new Uint32Array(BATCH_MAX * MAX_GSO_SEGMENTS);
  private readonly madeSegments = new Uint32Array(BATCH_MAX * MAX_GSO_SEGMENTS);
  /** segments the flush may still cut (SEGMENTS_PER_FLUSH) */
  private segmentsLeft = 0;
  private madeCount = 0;
  /** frames of the burst whose rest is still in their sender's memory: copied from there to guests here, made whole for anything else */
  private readonly deferred: DeferredPayloads;
  /** copies of flooded frames tagged for a VLAN port (toVlan), freed after the flush */
  private readonly vlanCopies: Uint32Array;
  private vlanCopyCount = 0;
  private readonly oneFrame = new Uint32Array(1);
  /** whether a port has VLANs (transmitWithVlans) */
  private readonly vlans: boolean;

  constructor(
    cfg: PmdConfig,
    shared: PmdShared,
    ports: PortRuntime[],
    pool: PacketPool,
    counters: Float64Array,
    queueFailed: (port: PortRuntime, owner: QueueOwner) => void,
    capture: CaptureWriter,
    deferred: DeferredPayloads,
  ) {
    this.capture = capture;
    this.deferred = deferred;
    this.cfg = cfg;
    this.ports = ports;
    this.pool = pool;
    this.counters = counters;
    this.queueFailed = queueFailed;
    const me = cfg.id;
    this.rxHolders = new Int32Array(shared.rxQueueHolders);
    this.ringsOut = Array.from({ length: cfg.pmdCount }, (_, p) => {
      const buffer = shared.dataRings[me][p];
      return buffer === null ? null : new SpscRing(buffer, shared.dataRingCapacity);
    });
    this.peerBells = shared.wakers.map((w) => new Int32Array(w.doorbell));
    this.peerWakeFds = shared.wakers.map((w) => w.wakeFd);
    this.doorbell = this.peerBells[me];
    this.refs = new Uint8Array(shared.pool.handleCount);
    this.touched = new Int32Array(cfg.ports.length);
    this.outbox = Array.from({ length: cfg.pmdCount }, () => new Uint32Array(BATCH_MAX * Math.max(1, cfg.ports.length)));
    this.outboxCount = new Int32Array(cfg.pmdCount);
    this.floodDomains = cfg.ports.map((p) => (p.bridge < 0 ? [] : cfg.bridges[p.bridge]));
    this.vlanCopies = new Uint32Array(BATCH_MAX * Math.max(1, cfg.ports.length));
    this.vlans = cfg.ports.some((p) => p.parent >= 0);
  }

  /** Counts the batch's drops on its ingress port, delivers the rest, frees every buffer. */
  transmit(batch: Batch): void {
    if (this.vlans) {
      this.transmitWithVlans(batch);
      return;
    }
    const pool = this.pool;
    const handles = batch.handles;
    const refs = this.refs;
    const counters = this.counters;
    const egress = batch.egress;
    // egress = EGRESS_DROP - reason: the reason's counter is at drops - egress.
    const drops = portBase(batch.ingress) + DROPS_BASE + EGRESS_DROP;
    const members = this.floodDomains[batch.ingress];
    for (let i = 0; i < batch.count; i++) {
      const h = handles[i];
      const dst = egress[i];
      refs[h] = 0;
      if (dst <= EGRESS_DROP) {
        if (dst !== EGRESS_CONSUMED) counters[drops - dst]++;
        continue;
      }
      if (dst === EGRESS_FLOOD) {
        for (let m = 0; m < members.length; m++) {
          if (members[m] !== batch.ingress) {
            refs[h]++;
            this.enqueue(this.ports[members[m]], h);
          }
        }
        // Flooded from a port in no bridge, or alone in its own: it went nowhere, counted.
        if (refs[h] === 0) counters[drops - EGRESS_UNDECIDED]++;
      } else {
        refs[h] = 1;
        // enqueue(), written out for the frames of one destination: V8 left it a call.
        const port = this.ports[dst];
        if (port.pendingCount === 0) this.touched[this.touchedCount++] = port.cfg.index;
        port.pending[port.pendingCount++] = h;
        if (pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] !== 0 && isSegmented(pool, h)) port.superPending = true;
      }
    }
    this.flush();
    pool.freeBurst(handles, batch.count, refs, GIVEN);
  }

  /**
   * transmit() where some ports have VLANs: frames to a VLAN port tagged for its parent,
   * tagged frames kept from crossing a parent (vlanEgress). A loop of its own: the checks
   * in transmit()'s loop cost a PMD without VLANs a quarter of its bridged rate (the real
   * PMD's code, compiled whole, lost inlining to them).
   */
  private transmitWithVlans(batch: Batch): void {
    const pool = this.pool;
    const handles = batch.handles;
    const refs = this.refs;
    const counters = this.counters;
    const egress = batch.egress;
    const drops = portBase(batch.ingress) + DROPS_BASE + EGRESS_DROP;
    const members = this.floodDomains[batch.ingress];
    for (let i = 0; i < batch.count; i++) {
      const h = handles[i];
      const dst = egress[i];
      refs[h] = 0;
      if (dst <= EGRESS_DROP) {
        if (dst !== EGRESS_CONSUMED) counters[drops - dst]++;
        continue;
      }
      if (dst === EGRESS_FLOOD) {
        let sent = 0;
        for (let m = 0; m < members.length; m++) {
          if (members[m] === batch.ingress) continue;
          const member = this.ports[members[m]];
          sent++;
          if (member.vlanRole !== VLAN_NONE && this.vlanEgress(member, h, false)) continue;
          refs[h]++;
          this.enqueue(member, h);
        }
        if (sent === 0) counters[drops - EGRESS_UNDECIDED]++;
      } else {
        refs[h] = 1;
        const port = this.ports[dst];
        if (port.vlanRole !== VLAN_NONE && this.vlanEgress(port, h, true)) continue;
        this.enqueue(port, h);
      }
    }
    this.flush();
    pool.freeBurst(handles, batch.count, refs, GIVEN);
    if (this.vlanCopyCount > 0) {
      pool.freeBurst(this.vlanCopies, this.vlanCopyCount, refs, GIVEN);
      this.vlanCopyCount = 0;
    }
  }

  /**
   * Frame h to a port with VLANs, or a VLAN port: true if this took care of it (tagged
   * for a VLAN port; refused, counted, for a parent: a tagged frame of the parent's own
   * segment would enter a VLAN past its port), false if it goes to the port as it is.
   */
  private vlanEgress(port: PortRuntime, h: number, alone: boolean): boolean {
    if (port.vlanRole === VLAN_PORT) {
      this.toVlan(port, h, alone);
      return true;
    }
    if (carriesNoVlan(this.pool, h)) return false;
    countDrops(this.counters, portBase(port.cfg.index), DROP.vlan_refused);
    return true;
  }

  /**
   * Frame h to VLAN port `vlan`: tagged, to its parent. `alone`: the frame's one
   * destination, tagged in its buffer; else a copy is (a flood, whose other members take
   * the frame as it is). Counted as the VLAN port's once handed to the parent.
   */
  private toVlan(vlan: PortRuntime, h: number, alone: boolean): void {
    const pool = this.pool;
    const counters = this.counters;
    const base = portBase(vlan.cfg.index);
    this.deferred.materialize(pool, h);
    // The VLAN's frames (a super-frame's segments) are as long as its MTU allows, and with
    // the tag as long as the parent's; a tag of their own would stack inside the VLAN's.
    const parent = this.ports[vlan.cfg.parent];
    const limit = vlan.cfg.maxFrame < parent.cfg.maxFrame - VLAN_TAG_LEN ? vlan.cfg.maxFrame : parent.cfg.maxFrame - VLAN_TAG_LEN;
    if (longestFrame(pool, h) > limit) {
      countDrops(counters, base, DROP.frame_too_long);
      return;
    }
    if (!carriesNoVlan(pool, h)) {
      countDrops(counters, base, DROP.vlan_refused);
      return;
    }
    let frame = h;
    if (!alone) {
      frame = pool.copyFrame(h);
      if (frame < 0) {
        countDrops(counters, base, DROP.no_buffer);
        return;
      }
      this.refs[frame] = 1;
      this.vlanCopies[this.vlanCopyCount++] = frame;
    }
    if (this.capturing(vlan)) {
      this.oneFrame[0] = frame;
      this.capture.egressBurst(vlan.cfg.index, pool, this.oneFrame, 1);
    }
    if (!tagFrame(pool, frame, vlan.cfg.vlan)) {
      countDrops(counters, base, DROP.frame_too_long);
      return;
    }
    counters[base + TX_PACKETS]++;
    counters[base + TX_BYTES] += pool.length[frame] - VLAN_TAG_LEN;
    this.enqueue(parent, frame);
  }

  /** Frames another PMD switched to ports whose RX queue we hold. */
  drainRing(ring: SpscRing): number {
    const inbox = this.inbox;
    const n = ring.dequeueBurst(inbox, BURST);
    for (let i = 0; i < n; i++) {
      const entry = inbox[i];
      const handle = entry & HANDLE_MASK;
      inbox[i] = handle;
      this.refs[handle] = 1;
      this.enqueue(this.ports[entry >>> HANDLE_BITS], handle);
    }
    if (n > 0) this.flush();
    this.pool.freeBurst(inbox, n, this.refs, GIVEN);
    return n;
  }

  private enqueue(port: PortRuntime, handle: number): void {
    if (port.pendingCount === 0) this.touched[this.touchedCount++] = port.cfg.index;
    port.pending[port.pendingCount++] = handle;
    if (isSegmented(this.pool, handle)) port.superPending = true;
  }

  /** Writes each destination's frames: into its RX queue here, or to the PMD that holds one. */
  private flush(): void {
    this.segmentsLeft = SEGMENTS_PER_FLUSH;
    for (let t = 0; t < this.touchedCount; t++) {
      const port = this.ports[this.touched[t]];
      this.doorbell[DOORBELL_SERVING] = port.cfg.index;
      const out = port.rxOut;
      if (port.uplink !== null) {
        // A kernel interface takes frames whole: segments cut, checksums done.
        this.makeWhole(port);
        const handles = port.superPending ? this.segmented : port.pending;
        const n = this.fitting(port, handles, port.superPending ? this.cutSegments(port, 0) : port.pendingCount);
        this.completeChecksums(port, handles, n);
        this.captureEgress(port, handles, n);
        port.uplink.transmit(this.pool, handles, n);
        if (port.superPending) this.freeSegments();
      } else if (out !== null && !out.queue.failed) {
        const n = port.superPending ? this.cutSegments(port, out.offloads) : port.pendingCount;
        const handles = port.superPending ? this.segmented : port.pending;
        // deliverBurst completes what the guest does not take left to do; a capture is
        // to show the frames as they leave, so then it is done before.
        if (this.capturing(port)) {
          this.makeWhole(port);
          if ((out.offloads & OFFLOAD_CSUM_TO_GUEST) === 0) this.completeChecksums(port, handles, n);
        }
        this.captureEgress(port, handles, n);
        deliverBurst(out, port.mergeable, this.pool, handles, n, this.deferred);
        if (port.superPending) this.freeSegments();
        if (out.queue.failed) this.queueFailed(port, out);
      } else if (out !== null) {
        // Failed since its last delivery (its call eventfd blocked the PMD: notify.ts).
        countDrops(this.counters, portBase(port.cfg.index), DROP.port_down, port.pendingCount);
        this.queueFailed(port, out);
      } else {
        const holder = this.rxHolder(port.cfg.index);
        if (holder < 0) {
          countDrops(this.counters, portBase(port.cfg.index), DROP.port_down, port.pendingCount);
        } else {
          // The other PMD reads the buffer after this burst's chains went back to the sender.
          this.makeWhole(port);
          this.handOver(port, holder);
        }
      }
      port.pendingCount = 0;
      port.superPending = false;
    }
    this.touchedCount = 0;
    for (let p = 0; p < this.outboxCount.length; p++) if (this.outboxCount[p] > 0) this.sendOutbox(p);
  }

  /**
   * Keeps the first `count` of `handles` no longer than the port's frames, in order, and
   * counts the others as frame_too_long: the kernel would take them, as a Linux bridge or
   * OVS would not (a guest's RX queue gets the same check in deliverBurst). Returns how many
   * are kept.
   */
  private fitting(port: PortRuntime, handles: Uint32Array, count: number): number {
    const pool = this.pool;
    const maxFrame = port.cfg.maxFrame;
    let kept = 0;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      if (pool.length[h] <= maxFrame) handles[kept++] = h;
    }
    if (kept < count) countDrops(this.counters, portBase(port.cfg.index), DROP.frame_too_long, count - kept);
    return kept;
  }

  /** The port's pending frames whole in their buffers (their rest copied out of the sender's memory). */
  private makeWhole(port: PortRuntime): void {
    if (this.deferred.count === 0) return;
    for (let i = 0; i < port.pendingCount; i++) this.deferred.materialize(this.pool, port.pending[i]);
  }

  /**
   * Checksums guests left to do, done in the buffers: for a kernel interface (Linux in a
   * mirror's namespace, or a peer past an uplink, would drop the frames otherwise), or
   * before a capture of what leaves for a guest that takes none.
   */
  private completeChecksums(port: PortRuntime, handles: Uint32Array, count: number): void {
    const pool = this.pool;
    let completed = 0;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      if (pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] === 0) continue;
      completeChecksum(pool, h);
      completed++;
    }
    if (completed > 0) this.counters[portBase(port.cfg.index) + CSUM_COMPLETED] += completed;
  }

  /**
   * The port's pending frames into `segmented`, each super-frame the port does not take
   * (`offloads`: what its connection negotiated; 0 for a kernel interface) cut into its
   * segments, in new buffers that freeSegments() gives back once written. A super-frame
   * the pool has no buffers for is dropped (no_buffer). Returns how many frames to write.
   */
  private cutSegments(port: PortRuntime, offloads: number): number {
    const pool = this.pool;
    const out = this.segmented;
    let n = 0;
    let made = 0;
    for (let i = 0; i < port.pendingCount; i++) {
      const h = port.pending[i];
      if (!isSegmented(pool, h) || takesSegmentation(pool, h, offloads)) {
        out[n++] = h;
        continue;
      }
      const k = this.segmentsLeft > 0 ? segmentSuperFrame(pool, h, out, n) : -1;
      if (k < 0) {
        countDrops(this.counters, portBase(port.cfg.index), DROP.no_buffer);
        continue;
      }
      this.segmentsLeft -= k;
      for (let j = 0; j < k; j++) this.madeSegments[this.madeCount + made + j] = out[n + j];
      made += k;
      n += k;
    }
    this.madeCount += made;
    if (made > 0) this.counters[portBase(port.cfg.index) + GSO_SEGMENTS] += made;
    return n;
  }

  /** Gives back the buffers of the segments cutSegments() made, once they are written. */
  private freeSegments(): void {
    for (let i = 0; i < this.madeCount; i++) this.pool.free(this.madeSegments[i]);
    this.madeCount = 0;
  }

  /** Frames written to a port, if it is being captured: by the PMD that writes them out (here), once. */
  private captureEgress(port: PortRuntime, handles: Uint32Array, count: number): void {
    if (this.capturing(port)) this.capture.egressBurst(port.cfg.index, this.pool, handles, count);
  }

  private capturing(port: PortRuntime): boolean {
    return this.capture.control[port.cfg.index * CONTROL_WORDS] !== 0;
  }

  /** Another PMD that runs an RX queue of the port, or -1. */
  private rxHolder(port: number): number {
    const base = port * this.cfg.pmdCount;
    for (let p = 0; p < this.cfg.pmdCount; p++) if (p !== this.cfg.id && this.rxHolders[base + p] === 1) return p;
    return -1;
  }

  /** Queues a port's pending frames for PMD `to`: the buffer itself when this is its only destination, else a copy. */
  private handOver(port: PortRuntime, to: number): void {
    const pool = this.pool;
    const box = this.outbox[to];
    let n = this.outboxCount[to];
    const tag = port.cfg.index << HANDLE_BITS;
    for (let i = 0; i < port.pendingCount; i++) {
      const h = port.pending[i];
      if (this.refs[h] === 1) {
        this.refs[h] = GIVEN;
        pool.markAway(h);
        box[n++] = (tag | h) >>> 0;
        continue;
      }
      this.refs[h]--;
      const copy = pool.copyFrame(h);
      if (copy < 0) {
        countDrops(this.counters, portBase(port.cfg.index), DROP.no_buffer);
        continue;
      }
      this.refs[copy] = 0;
      pool.markAway(copy);
      box[n++] = (tag | copy) >>> 0;
    }
    this.outboxCount[to] = n;
  }

  private sendOutbox(to: number): void {
    const box = this.outbox[to];
    const n = this.outboxCount[to];
    const sent = this.ringsOut[to]!.enqueueBurst(box, n);
    // A full ring is a counted drop, never a wait: the buffers stay ours.
    for (let i = sent; i < n; i++) {
      const entry = box[i];
      const h = entry & HANDLE_MASK;
      countDrops(this.counters, portBase(entry >>> HANDLE_BITS), DROP.ring_full);
      // An original goes back to its burst, which frees it; a copy is freed here.
      if (this.refs[h] === GIVEN) this.refs[h] = 1;
      else this.pool.free(h);
    }
    this.outboxCount[to] = 0;
    if (sent > 0 && Atomics.load(this.peerBells[to], DOORBELL_SLEEPING) === 1) eventfdSignal(this.peerWakeFds[to]);
  }
}
