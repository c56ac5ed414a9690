// Frames between a kernel interface and the packet buffers through an AF_XDP socket (copy
// mode): the kernel writes received frames into UMEM chunks taken from the fill ring and
// posts them on the rx ring; the PMD copies each out and gives its chunk straight back to
// the fill ring. Frames to send are copied into the chunk of their transmit slot and posted
// on the tx ring; one sendto() per burst has the kernel send them (copy mode sends only in
// a system call), and the completion ring says how many slots are free again.
//
// Every position the PMD keeps lives in the rings' words (rx consumer, fill producer, tx
// producer, completion consumer): a PMD that takes over after a restart resumes from them.
// The kernel's descriptors are checked like a guest's: an address or length outside the
// receive chunks is counted (bad_descriptor) and never read.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { view } from '../sys/libc.ts';
import { nativeCopy } from './native-copy.ts';
import { XDP_RING_NEED_WAKEUP, xdpDrops, xdpKick, type XdpLayout } from '../sys/xdp.ts';
import { countDrops, DROP, QUEUE_RX_BYTES, QUEUE_RX_PACKETS, QUEUE_TX_BYTES, QUEUE_TX_PACKETS, RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS } from './counters.ts';
import { DATA_ROOM, type PacketPool } from './packet-pool.ts';
import type { Uplink } from './port-runtime.ts';

const ETHER_HDR_LEN = 14;
/** receive calls between two reads of the kernel's drop counts (a system call) while frames come, and ms while none do */
const STATS_EVERY = 4096;
const STATS_IDLE_MS = 20;

/** An AF_XDP socket's rings as the PMD that polls it sees them: addresses of each mapping. */
export interface XdpMappings {
  umem: bigint;
  rx: bigint;
  tx: bigint;
  fill: bigint;
  completion: bigint;
}

/** An AF_XDP port's queue as the PMD that polls it sees it. */
export class XdpRings implements Uplink {
  readonly fd: number;
  /** the UMEM: the receive chunks, then the transmit ones */
  private readonly umem: Uint8Array;
  private readonly chunkBytes: number;
  /** bytes of UMEM the kernel may write received frames into: the receive chunks */
  private readonly rxBytes: number;
  private readonly txBase: number;
  private readonly rxMask: number;
  private readonly txMask: number;
  /** each ring as u32 words; *Prod, *Cons, *Flags, *Desc: word indices in it */
  private readonly rx: Uint32Array;
  private readonly rxProd: number;
  private readonly rxCons: number;
  private readonly rxDesc: number;
  private readonly fill: Uint32Array;
  private readonly fillProd: number;
  private readonly fillCons: number;
  private readonly fillDesc: number;
  private readonly tx: Uint32Array;
  private readonly txProd: number;
  private readonly txCons: number;
  private readonly txFlags: number;
  private readonly txDesc: number;
  private readonly completion: Uint32Array;
  private readonly compProd: number;
  private readonly compCons: number;
  private readonly counters: Float64Array;
  private readonly counterBase: number;
  private readonly queueCounterBase: number;
  private readonly maxFrame: number;
  /** the kernel's drop counts (see xdpDrops), as read now and when last read */
  private readonly kernelDrops = new Float64Array(3);
  private readonly kernelDropsSeen = new Float64Array(3);
  private statsCountdown = STATS_EVERY;
  private statsDueAt = 0;
  /** descriptors posted that the kernel may not have taken yet (see flushTransmit()) */
  private txPending = false;

  constructor(fd: number, layout: XdpLayout, maps: XdpMappings, counters: Float64Array, counterBase: number, queueCounterBase: number, maxFrame: number) {
    this.fd = fd;
    this.umem = new Uint8Array(view(maps.umem, layout.umemBytes));
    this.chunkBytes = layout.chunkBytes;
    this.rxBytes = layout.rxFrames * layout.chunkBytes;
    this.txBase = this.rxBytes;
    this.rxMask = layout.rxSize - 1;
    this.txMask = layout.txSize - 1;
    this.rx = new Uint32Array(view(maps.rx, layout.rx.desc + layout.rxSize * 16));
    this.rxProd = layout.rx.producer >> 2;
    this.rxCons = layout.rx.consumer >> 2;
    this.rxDesc = layout.rx.desc >> 2;
    this.fill = new Uint32Array(view(maps.fill, layout.fill.desc + layout.rxSize * 8));
    this.fillProd = layout.fill.producer >> 2;
    this.fillCons = layout.fill.consumer >> 2;
    this.fillDesc = layout.fill.desc >> 2;
    this.tx = new Uint32Array(view(maps.tx, layout.tx.desc + layout.txSize * 16));
    this.txProd = layout.tx.producer >> 2;
    this.txCons = layout.tx.consumer >> 2;
    this.txFlags = layout.tx.flags >> 2;
    this.txDesc = layout.tx.desc >> 2;
    this.completion = new Uint32Array(view(maps.completion, layout.completion.desc + layout.txSize * 8));
    this.compProd = layout.completion.producer >> 2;
    this.compCons = layout.completion.consumer >> 2;
    this.counters = counters;
    this.counterBase = counterBase;
    this.queueCounterBase = queueCounterBase;
    this.maxFrame = Math.min(maxFrame, DATA_ROOM, layout.chunkBytes);
    // What the kernel dropped before this PMD took the socket was counted by the one before.
    xdpDrops(fd, this.kernelDropsSeen);
  }

  /** Copies up to `max` received frames into packet buffers from `start`; returns how many. */
  receive(pool: PacketPool, handles: Uint32Array, start: number, max: number): number {
    if (this.txPending) this.flushTransmit();
    const rx = this.rx;
    const fill = this.fill;
    const counters = this.counters;
    const base = this.counterBase;
    // Acquire: the descriptors (and the frames they name) are written before the producer moves.
    const produced = Atomics.load(rx, this.rxProd);
    let cons = rx[this.rxCons];
    const waiting = (produced - cons) >>> 0;
    // The kernel's drops show in its counts only (a frame too long for a chunk comes with no
    // descriptor at all): read every STATS_EVERY calls while frames come (not more often on a
    // backlog: a system call per burst would deepen it), and when idle once the time is due
    // (a clock read, ~60 ns, only when there is nothing to do).
    if (waiting === 0) {
      if (performance.now() >= this.statsDueAt) this.countKernelDrops();
      return 0;
    }
    if (--this.statsCountdown === 0) this.countKernelDrops();
    // More waiting than the ring holds: the words are not the kernel's; take nothing.
    if (waiting > this.rxMask + 1) return 0;
    const n = waiting < max ? waiting : max;
    let fillProd = fill[this.fillProd];
    // Acquire: the kernel has read the fill entries it has consumed before they are rewritten.
    const fillRoom = this.rxMask + 1 - ((fillProd - Atomics.load(fill, this.fillCons)) >>> 0);
    let refilled = 0;
    let taken = 0;
    let bytes = 0;
    const chunkMask = this.chunkBytes - 1;
    for (let i = 0; i < n; i++) {
      const d = this.rxDesc + ((cons & this.rxMask) << 2);
      cons = (cons + 1) >>> 0;
      const addr = rx[d];
      const addrHigh = rx[d + 1];
      const len = rx[d + 2];
      // Security checks: the descriptor must name bytes of one receive chunk.
      if (addrHigh !== 0 || addr >= this.rxBytes || (addr & chunkMask) + len > this.chunkBytes) {
        countDrops(counters, base, DROP.bad_descriptor);
        continue;
      }
      if (len < ETHER_HDR_LEN || len > this.maxFrame) {
        countDrops(counters, base, len > this.maxFrame ? DROP.frame_too_long : DROP.frame_too_short);
      } else {
        const handle = pool.alloc();
        if (handle < 0) {
          countDrops(counters, base, DROP.no_buffer);
        } else {
          nativeCopy.call(this.umem, pool.data, pool.frameOffset(handle), addr, addr + len);
          pool.length[handle] = len;
          handles[start + taken++] = handle;
          bytes += len;
        }
      }
      // The chunk goes back to the kernel. The fill ring has room for every receive chunk;
      // a chunk named twice by the kernel could overfill it, and is not given back twice.
      if (refilled < fillRoom) {
        const f = this.fillDesc + ((fillProd & this.rxMask) << 1);
        fill[f] = addr & ~chunkMask;
        fill[f + 1] = 0;
        fillProd = (fillProd + 1) >>> 0;
        refilled++;
      }
    }
    // Release, the rx consumer first: a PMD that dies between the two stores loses these
    // chunks (fewer to receive into) rather than giving the kernel one chunk twice.
    Atomics.store(rx, this.rxCons, cons);
    Atomics.store(fill, this.fillProd, fillProd);
    counters[base + RX_PACKETS] += taken;
    counters[base + RX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_RX_PACKETS] += taken;
    counters[this.queueCounterBase + QUEUE_RX_BYTES] += bytes;
    return taken;
  }

  /** Frames the kernel dropped on receipt (no room, too long) or refused to send, since last read. */
  private countKernelDrops(): void {
    this.statsCountdown = STATS_EVERY;
    this.statsDueAt = performance.now() + STATS_IDLE_MS;
    const now = this.kernelDrops;
    const seen = this.kernelDropsSeen;
    if (!xdpDrops(this.fd, now)) return;
    const base = this.counterBase;
    if (now[0] > seen[0]) countDrops(this.counters, base, DROP.receive_ring_full, now[0] - seen[0]);
    if (now[1] > seen[1]) countDrops(this.counters, base, DROP.frame_too_long, now[1] - seen[1]);
    if (now[2] > seen[2]) countDrops(this.counters, base, DROP.interface_refused, now[2] - seen[2]);
    seen[0] = now[0];
    seen[1] = now[1];
    seen[2] = now[2];
  }

  /** Tells the kernel to take the posted descriptors, if it asks to be told; false if it refused for good (the interface gone or down). */
  private kick(): boolean {
    // The flag as the kernel set it after our producer store (copy mode: always set).
    return (Atomics.load(this.tx, this.txFlags) & XDP_RING_NEED_WAKEUP) === 0 || xdpKick(this.fd);
  }

  /**
   * Each poll round while descriptors are posted: in copy mode a kick sends at most 32
   * (the kernel's max_tx_budget) and one that finds the send buffer or the driver's queue
   * full sends none, and nothing tells the kernel to go on but another kick. So while its
   * consumer index is behind our producer, it is told again (until it refuses for good:
   * the next frames sent start again).
   */
  private flushTransmit(): void {
    if (Atomics.load(this.tx, this.txCons) === this.tx[this.txProd]) this.txPending = false;
    else this.txPending = this.kick();
  }

  /** Copies `count` frames into transmit slots and has the kernel send them; the buffers stay the caller's. */
  transmit(pool: PacketPool, handles: Uint32Array, count: number): void {
    const tx = this.tx;
    const completion = this.completion;
    const counters = this.counters;
    const base = this.counterBase;
    // Copy mode: the kernel copies a frame out when it takes its descriptor, and takes them
    // in order; so each completion frees the oldest slot, whichever address it names (not read).
    const completed = Atomics.load(completion, this.compProd);
    let compCons = completion[this.compCons];
    const done = (completed - compCons) >>> 0;
    if (done <= this.txMask + 1) compCons = (compCons + done) >>> 0;
    // Release: the completion entries are read (none are) before the kernel may reuse them.
    Atomics.store(completion, this.compCons, compCons);
    let prod = tx[this.txProd];
    const inFlight = (prod - compCons) >>> 0;
    let room = inFlight <= this.txMask + 1 ? this.txMask + 1 - inFlight : 0;
    let sent = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      const len = pool.length[h];
      if (room === 0 || len > this.chunkBytes) {
        countDrops(counters, base, DROP.interface_refused);
        continue;
      }
      const slot = prod & this.txMask;
      const chunk = this.txBase + slot * this.chunkBytes;
      const source = pool.frameOffset(h);
      nativeCopy.call(pool.data, this.umem, chunk, source, source + len);
      const d = this.txDesc + (slot << 2);
      tx[d] = chunk;
      tx[d + 1] = 0;
      tx[d + 2] = len;
      tx[d + 3] = 0;
      prod = (prod + 1) >>> 0;
      room--;
      sent++;
      bytes += len;
    }
    // Release: the descriptors and frames are written before the kernel sees the producer move.
    if (sent > 0) Atomics.store(tx, this.txProd, prod);
    // A kick refused (the interface gone) leaves the frames posted: the slots stay taken,
    // and frames after them are counted refused until the interface takes them. A full
    // ring the kernel has not taken is a reason to kick too.
    if (sent > 0 || Atomics.load(tx, this.txCons) !== prod) this.txPending = this.kick();
    counters[base + TX_PACKETS] += sent;
    counters[base + TX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_TX_PACKETS] += sent;
    counters[this.queueCounterBase + QUEUE_TX_BYTES] += bytes;
  }
}
