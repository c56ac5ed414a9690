// Moving frames between a guest's virtqueues and packet buffers, a burst at a time:
// the guest's TX queue into buffers (receiveBurst) and buffers into the guest's RX queue
// (deliverBurst), with the 12-byte virtio-net header stripped and added.
import { CHAIN_TOO_LONG, NO_CHAIN, type Virtqueue } from '../virtio/virtqueue.ts';
import type { GuestMemory } from '../virtio/guest-memory.ts';
import { NET_HDR_LEN, NET_HDR_NUM_BUFFERS_OFFSET, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../virtio/constants.ts';
import { DATA_ROOM, OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, PacketPool, SUPER_DATA_ROOM } from './packet-pool.ts';
import { countDrops, CSUM_COMPLETED, DROP, QUEUE_RX_BYTES, QUEUE_RX_PACKETS, QUEUE_TX_BYTES, QUEUE_TX_PACKETS, RX_BYTES, RX_CSUM_PARTIAL, RX_GSO_BYTES, RX_GSO_FRAMES, RX_PACKETS, TX_BYTES, TX_CSUM_PARTIAL, TX_GSO_BYTES, TX_GSO_FRAMES, TX_PACKETS } from './counters.ts';
import { completeChecksum, isSegmented, leavesChecksum, OFFLOAD_COMPLETE_NOW, OFFLOAD_CSUM_FROM_GUEST, OFFLOAD_CSUM_TO_GUEST, OFFLOAD_HEADER_BAD, OFFLOAD_TSO_FROM_GUEST, takeOffloadHeader, takesSegmentation } from './offloads.ts';
import { publishAndCall } from './notify.ts';
import { nativeCopy } from './native-copy.ts';
import { HEADER_BYTES, MAX_HEAD_BYTES, MIN_REST_BYTES, type DeferredPayloads } from './deferred-payloads.ts';

export const BURST = 32;
const ETHER_HDR_LEN = 14;

/**
 * The most receive chains one frame may take with MRG_RXBUF. The longest frame is 9030
 * bytes with its header (MTU 9000); Linux posts mergeable buffers of at least 1518 bytes
 * (GOOD_PACKET_LEN in mergeable_min_buf_len()) and DPDK one mbuf (2 KiB by default), so a
 * frame takes 6 at most; 64 still carries it over buffers of 141 bytes on average. A frame
 * that needs more is dropped and the chains stay posted for a smaller one.
 */
export const MAX_FRAME_CHAINS = 64;

/**
 * Descriptor reads one deliverBurst() may spend; past it the rest of the burst is dropped
 * unwalked, so a guest's receive buffers cost the PMD at most this plus one chain
 * (maxChain + 1) per burst. Measured at worst 35 us a burst (1024 one-descriptor chains
 * written and rolled back), against 13 us for 32 frames of 1514 bytes delivered. 32
 * jumbo frames need at most 192 (6 Linux mergeable buffers or 5 DPDK mbufs each), or 640
 * into the big-packets chains of older Linux (an indirect descriptor and MAX_SKB_FRAGS +
 * 2); 16 frames at MAX_FRAME_CHAINS one-descriptor chains still fit. Super-frames to a
 * guest that takes them whole (GUEST_TSO) may need more: past the budget the rest of the
 * burst is dropped (guest_buffers_fragmented), and TCP sends it again.
 */
export const DELIVER_DESCRIPTOR_BUDGET = 1024;

/**
 * Descriptor reads one receiveBurst() may spend before it leaves the remaining chains for
 * the next poll round (nothing is dropped): without it a burst of 32 chains at maxChain
 * would cost 32 x 129 reads; at the budget it measured 6 us. Frames of one or two
 * descriptors, as Linux and DPDK send them without offloads, never reach it; 32 chains of
 * Linux's most (MAX_SKB_FRAGS + 2 = 19, through an indirect table) take two rounds.
 */
export const RECEIVE_DESCRIPTOR_BUDGET = 512;

/**
 * Copies from this many bytes on go through Node's Buffer.prototype.copy (a memmove in
 * C++, called with the two views and small-integer offsets), shorter ones through a loop
 * over 64-bit elements when both sides are 8-byte aligned (the 64-bit loop), else over
 * 32-bit words: the native call costs ~33 ns whatever the length, the loops ~0.13 and ~0.25
 * ns a byte. Measured here (bench/micro/copy.ts, Node 24, ns per copy, guest to buffer /
 * buffer to guest; copyWithin only within one memory, so never between a guest and the
 * buffers):
 *   bytes  word loop    64-bit loop  set(cached subarray)  copyWithin  memcpy (koffi)  Buffer.copy
 *     64   14 / 14      8 / 8        30 / 28               19 / 23     33 / 33         33 / 33
 *    256   41 / 41      21 / 21      97 / 97               28 / 31     34 / 34         34 / 34
 *    512   76 / 79      39 / 41      177 / 183             38 / 42     38 / 38         38 / 37
 *   1518   227 / 220    126 / 130    500 / 510             92 / 100    57 / 56         53 / 54
 *   9000   1293 / 1288  692 / 703    2806 / 2825           399 / 388   148 / 139       148 / 139
 * Node's copy rather than libc's memmove through koffi, which costs as much in this loop: a
 * koffi call takes its two addresses as numbers, past 2^31 a heap number each (16 bytes of
 * garbage), which in the PMD, its caches full of frames, cost about as much as the copy
 * (the data path micro-benchmark at 1518 bytes copied twice: 462 ns a frame with koffi, 347
 * to 385 with Node's copy, and no young collection where it had 5 to 7 in 2 s). Buffer.copy
 * copies "even if the target memory region overlaps" (Node's documentation), as a frame
 * copied once goes from one guest's memory to another place that guest may have made
 * overlap it.
 */
export const NATIVE_COPY_MIN = 256;
/** NATIVE_COPY_MIN for copies the 64-bit loop may do */
export const NATIVE_COPY_MIN_ALIGNED = 512;

/**
 * Copies len bytes between two memories, each seen as bytes and as 32-bit and 64-bit
 * words. Frames sit 4-byte aligned on both sides (buffers are, and the virtio-net header
 * is 12 bytes), often 8 (a DPDK frontend's frames and buffers, the packet buffers
 * themselves), so the loops serve the short ones; an unaligned short copy goes byte by
 * byte (Uint8Array.set would need a subarray: an allocation). The 64-bit elements are
 * Float64Array's, only loaded and stored, which moves their bits unchanged (NaNs included:
 * test/unit/guest-io.test.ts checks every tier of V8).
 * Each caller proves that [srcOff, srcOff + len) lies inside src and [dstOff, dstOff + len)
 * inside dst (see the comments at the call sites): the loops would leave out what lies
 * past a view and Buffer.copy copy less, a frame cut short without a word.
 */
function copyBytes(dst: Uint8Array, dstWords: Uint32Array, dstDoubles: Float64Array, dstOff: number, src: Uint8Array, srcWords: Uint32Array, srcDoubles: Float64Array, srcOff: number, len: number): void {
  const aligned8 = ((dstOff | srcOff) & 7) === 0;
  if (len >= (aligned8 ? NATIVE_COPY_MIN_ALIGNED : NATIVE_COPY_MIN)) {
    nativeCopy.call(src, dst, dstOff, srcOff, srcOff + len);
  } else if (aligned8) {
    copyDoubles(dst, dstWords, dstDoubles, dstOff, src, srcWords, srcDoubles, srcOff, len);
  } else if (((dstOff | srcOff) & 3) === 0) {
    const words = len >>> 2;
    const dw = dstOff >>> 2;
    const sw = srcOff >>> 2;
    for (let i = 0; i < words; i++) dstWords[dw + i] = srcWords[sw + i];
    for (let i = words << 2; i < len; i++) dst[dstOff + i] = src[srcOff + i];
  } else {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i];
  }
}

/**
 * copyBytes() between 8-byte aligned offsets. Apart, so that copyBytes() stays small
 * enough for V8 to inline where it is called. The
 * per-frame copies of short frames (copyLater, scatter) call it directly where copyBytes()
 * would (the test written out there: past V8's inlining budget, even a one-line helper
 * stays a call), which took 2 to 5 % fewer ns a 64-byte frame in the PMD.
 */
function copyDoubles(dst: Uint8Array, dstWords: Uint32Array, dstDoubles: Float64Array, dstOff: number, src: Uint8Array, srcWords: Uint32Array, srcDoubles: Float64Array, srcOff: number, len: number): void {
  const doubles = len >>> 3;
  const dd = dstOff >>> 3;
  const sd = srcOff >>> 3;
  for (let i = 0; i < doubles; i++) dstDoubles[dd + i] = srcDoubles[sd + i];
  let at = doubles << 3;
  if ((len & 4) !== 0) {
    dstWords[(dstOff + at) >>> 2] = srcWords[(srcOff + at) >>> 2];
    at += 4;
  }
  for (; at < len; at++) dst[dstOff + at] = src[srcOff + at];
}

/** The longest frame a port may take or deliver: its own limit, never more than a buffer holds. */
function frameLimit(q: QueueOwner): number {
  return q.maxFrame < DATA_ROOM ? q.maxFrame : DATA_ROOM;
}

export interface QueueOwner {
  /** a SplitQueue or a PackedQueue, as the connection negotiated */
  queue: Virtqueue;
  callFd: number;
  /** the guest's kick eventfd: the PMD waits on it when idle (-1: none, the guest never kicks) */
  kickFd: number;
  /** counter block of the PMD and the port's base index in it */
  counters: Float64Array;
  counterBase: number;
  /** where the counters of the vring's queue pair start in `counters` (see queueBase) */
  queueCounterBase: number;
  /** longest frame (without virtio-net header) the port accepts or delivers */
  maxFrame: number;
  /** what the guest's connection negotiated: OFFLOAD_* bits (offloads.ts) */
  offloads: number;
}

/**
 * Takes up to `max` frames from a guest's TX queue into packet buffers, appending their
 * handles to `handles` from `start`. Bad chains are returned to the guest unread and
 * counted. Returns the number of frames taken; -1 if the queue was found corrupt.
 * Each chain is walked once, in at most maxChain + 1 descriptor reads, and the burst ends
 * early once RECEIVE_DESCRIPTOR_BUDGET is spent: at most 512 + 129 reads however the
 * guest builds its chains.
 * With `defer`, a frame whose last descriptor holds MIN_REST_BYTES or more of it and starts
 * at most MAX_HEAD_BYTES in, super-frames aside, is taken only up to there (and at least
 * HEADER_BYTES): the rest stays in the guest's memory (see deferred-payloads.ts), and so
 * do the chains, returned by defer.release() once the burst is delivered.
 */
export function receiveBurst(q: QueueOwner, pool: PacketPool, handles: Uint32Array, start: number, max: number, defer: DeferredPayloads | null = null): number {
  const vq = q.queue;
  let avail = vq.pending();
  // Failed since its last burst (its call eventfd blocked the PMD: notify.ts), and idle.
  if (avail <= 0) return vq.failed ? -1 : avail;
  if (avail > max) avail = max;
  const counters = q.counters;
  const base = q.counterBase;
  const maxFrame = frameLimit(q);
  // With TSO a guest may send super-frames, up to 64 KiB: any longer than maxFrame must be one.
  const maxTaken = (q.offloads & OFFLOAD_TSO_FROM_GUEST) !== 0 ? SUPER_DATA_ROOM : maxFrame;
  const usedFrom = vq.usedIdx;
  let taken = 0;
  let bytes = 0;
  let partial = 0;
  let superFrames = 0;
  let superBytes = 0;
  let completed = 0;
  let later = 0;
  vq.descriptorsRead = 0;
  // NB: the budget sits in the loop condition; a break inside measured slower.
  let i = 0;
  for (; i < avail && vq.descriptorsRead < RECEIVE_DESCRIPTOR_BUDGET; i++) {
    const segments = vq.takeChain(false, NET_HDR_LEN + maxTaken);
    if (segments === NO_CHAIN) break;
    vq.returnChain(0);
    if (segments < 0) {
      countDrops(counters, base, segments === CHAIN_TOO_LONG ? DROP.frame_too_long : DROP.bad_descriptor);
      continue;
    }
    const frameLen = vq.chainBytes - NET_HDR_LEN;
    if (frameLen < ETHER_HDR_LEN) {
      countDrops(counters, base, DROP.frame_too_short);
      continue;
    }
    const handle = frameLen <= DATA_ROOM ? pool.alloc() : pool.allocSuper();
    if (handle < 0) {
      countDrops(counters, base, DROP.no_buffer);
      continue;
    }
    // Gather the segments, the virtio-net header into the headroom just before the frame
    // (wherever the guest split it, it is then in one piece). The header counts only if the
    // connection negotiated checksum offload: without, it stays unread in the guest (often
    // a cache line of its own, last written by the guest's CPU).
    const dst = pool.frameOffset(handle) - NET_HDR_LEN;
    const headerCounts = (q.offloads & OFFLOAD_CSUM_FROM_GUEST) !== 0;
    const from = headerCounts ? 0 : NET_HDR_LEN;
    const head = defer === null ? 0 : headToLeave(vq, segments, frameLen, maxFrame);
    if (head !== 0 && segments === 1 && from === NET_HDR_LEN && later < LATER_MAX) {
      // A frame of one descriptor whose rest is left in the guest: its head is copied
      // with the burst's other frames (copyLater), the rest goes from where it is.
      const w = vq.segWindow[0];
      const src = vq.segOffset[0] + NET_HDR_LEN;
      laterWindow[later] = w;
      laterSrc[later] = src;
      laterDst[later] = dst + NET_HDR_LEN;
      laterLen[later] = head;
      later++;
      defer!.leave(handle, w, src + head, head, frameLen);
    } else if (head !== 0) {
      takeHead(vq, segments, pool, handle, head, frameLen, dst, from, defer!);
    } else if (segments === 1 && from === NET_HDR_LEN && frameLen <= maxFrame && later < LATER_MAX) {
      // Copied once the chains are walked (copyLater); nothing below reads the frame, and
      // a frame no longer than maxFrame is not dropped below.
      laterWindow[later] = vq.segWindow[0];
      laterSrc[later] = vq.segOffset[0] + NET_HDR_LEN;
      laterDst[later] = dst + NET_HDR_LEN;
      laterLen[later] = frameLen;
      later++;
    } else {
      gather(vq, segments, pool, dst + from, from, NET_HDR_LEN + frameLen);
    }
    pool.length[handle] = frameLen;
    let completeNow = false;
    if (headerCounts) {
      const taken = takeOffloadHeader(pool, handle, frameLen, q.offloads, maxFrame);
      completeNow = taken === OFFLOAD_COMPLETE_NOW;
      if (taken === OFFLOAD_HEADER_BAD) {
        countDrops(counters, base, DROP.offload_header_bad);
        if (defer !== null) defer.forget(handle);
        pool.free(handle);
        continue;
      }
    }
    // Longer than the port's frames (taken only with TSO negotiated): a super-frame, or too long.
    if (frameLen > maxFrame && !isSegmented(pool, handle)) {
      countDrops(counters, base, DROP.frame_too_long);
      if (defer !== null) defer.forget(handle);
      pool.free(handle);
      continue;
    }
    if (completeNow) {
      // The sum covers the whole frame: its rest comes out of the guest first.
      if (defer !== null && defer.window[handle] >= 0) defer.materialize(pool, handle, vq.mem);
      completeChecksum(pool, handle);
      completed++;
    }
    // Counted once taken: a frame dropped above is none of these.
    if (headerCounts && leavesChecksum(pool, handle)) {
      partial++;
      if (isSegmented(pool, handle)) {
        superFrames++;
        superBytes += frameLen;
      }
    }
    handles[start + taken++] = handle;
    bytes += frameLen;
  }
  // Before any chain goes back: the guest may reuse its buffers from then on.
  if (later > 0) copyLater(vq.mem, pool, later);
  // Chains whose frames are partly left in them go back once the burst is delivered.
  if (defer !== null && defer.count > 0) defer.begin(q, usedFrom);
  else publishAndCall(q, usedFrom);
  counters[base + RX_PACKETS] += taken;
  counters[base + RX_BYTES] += bytes;
  counters[base + RX_CSUM_PARTIAL] += partial;
  counters[base + RX_GSO_FRAMES] += superFrames;
  counters[base + RX_GSO_BYTES] += superBytes;
  if (completed > 0) counters[base + CSUM_COMPLETED] += completed;
  counters[q.queueCounterBase + QUEUE_RX_PACKETS] += taken;
  counters[q.queueCounterBase + QUEUE_RX_BYTES] += bytes;
  // A ring found corrupt midway: the frames taken before go on, the caller stops the queue.
  if (vq.failed) return taken > 0 ? taken : -1;
  return taken;
}

/**
 * The frames of one descriptor receiveBurst() copies once it has walked the burst's chains
 * (copyLater), or their heads where their rests are left in the guest (copied in the walk
 * by takeHead(), as a frame of several descriptors still is, a 1518-byte frame took 1.15
 * to 1.2 times the ns): then the copies run back to back, a few instructions each, and the
 * CPU fetches several frames from the guest's memory at once. Each is mostly a cache miss, last
 * written by the guest's CPU; copied between the walks, one frame's wait ended before the
 * next one's began.
 */
const LATER_MAX = BURST;
const laterWindow = new Int32Array(LATER_MAX);
const laterSrc = new Float64Array(LATER_MAX);
const laterDst = new Float64Array(LATER_MAX);
const laterLen = new Int32Array(LATER_MAX);
/** copyLater()'s first loads, xor-ed */
let laterLoaded = 0;

/**
 * Bounds (copyBytes checks none): each source is a frame's bytes past the virtio-net
 * header in its chain's one segment, [segOffset + NET_HDR_LEN, segOffset + segLength),
 * or the first `head` of them (head < frameLen), which takeChain took from
 * mem.translateAt() inside window w; each destination is the frame's place in its buffer,
 * frameLen <= maxFrame <= DATA_ROOM. The first loads read 4 bytes of each source (a frame
 * has at least 14, a head HEADER_BYTES).
 */
function copyLater(mem: GuestMemory, pool: PacketPool, n: number): void {
  // First one load of each frame, a few instructions apart: the CPU then fetches them all
  // at once, where between two copies it had only one or two under way (about 10 % fewer
  // ns a frame routed). What is loaded is kept, so that the loads are not left out.
  let loaded = 0;
  for (let k = 0; k < n; k++) loaded ^= mem.words[laterWindow[k]][laterSrc[k] >>> 2];
  laterLoaded = loaded;
  for (let k = 0; k < n; k++) {
    const w = laterWindow[k];
    const dst = laterDst[k];
    const src = laterSrc[k];
    const len = laterLen[k];
    if (((dst | src) & 7) === 0 && len < NATIVE_COPY_MIN_ALIGNED) copyDoubles(pool.data, pool.words, pool.doubles, dst, mem.bytes[w], mem.words[w], mem.doubles[w], src, len);
    else copyBytes(pool.data, pool.words, pool.doubles, dst, mem.bytes[w], mem.words[w], mem.doubles[w], src, len);
  }
}

/**
 * Copies bytes [from, end) of the chain last taken into the pool at dst.
 * Bounds (copyBytes checks none): takeChain took each [segOffset, + segLength) from
 * mem.translateAt(), true only when the whole range lies inside window w, and the copy from a
 * segment stays inside it; the callers pass end <= the chain's bytes = NET_HDR_LEN +
 * frameLen, frameLen <= the buffer's room (maxTaken, else CHAIN_TOO_LONG), and dst =
 * frameOffset(handle) - NET_HDR_LEN + from: the writes stay in HEADROOM, then DATA_ROOM of a
 * small buffer or SUPER_DATA_ROOM of a super one.
 */
function gather(vq: Virtqueue, segments: number, pool: PacketPool, dst: number, from: number, end: number): void {
  const mem = vq.mem;
  let at = 0; // where segment s starts in the chain
  for (let s = 0; s < segments && at < end; s++) {
    const segEnd = at + vq.segLength[s];
    if (segEnd > from) {
      const skip = from > at ? from - at : 0;
      const n = (segEnd < end ? segEnd : end) - at - skip;
      const w = vq.segWindow[s];
      copyBytes(pool.data, pool.words, pool.doubles, dst, mem.bytes[w], mem.words[w], mem.doubles[w], vq.segOffset[s] + skip, n);
      dst += n;
    }
    at = segEnd;
  }
}

/**
 * How much of the frame in the chain last taken goes into the buffer if its rest is left
 * in the guest: its bytes before the last descriptor, at least HEADER_BYTES. 0 when the
 * rest may not be left (the frame too short or too long for it, a head past
 * MAX_HEAD_BYTES, a rest under MIN_REST_BYTES). A short frame costs one compare here.
 */
function headToLeave(vq: Virtqueue, segments: number, frameLen: number, maxFrame: number): number {
  if (frameLen < HEADER_BYTES + MIN_REST_BYTES || frameLen > maxFrame) return 0;
  const before = vq.chainBytes - vq.segLength[segments - 1] - NET_HDR_LEN;
  const head = before < HEADER_BYTES ? HEADER_BYTES : before;
  return head <= MAX_HEAD_BYTES && frameLen - head >= MIN_REST_BYTES ? head : 0;
}

/**
 * The virtio-net header (from `from`: NET_HDR_LEN when it does not count) and `head` bytes
 * of the frame into the buffer; the rest, in the
 * chain's last segment (checked by the caller), left there unless the header asks for
 * segmentation (a super-frame is cut from its buffer), else copied too. A checksum left to
 * do is done from a whole buffer, by whoever does it (materialize() first).
 */
function takeHead(vq: Virtqueue, segments: number, pool: PacketPool, handle: number, head: number, frameLen: number, dst: number, from: number, defer: DeferredPayloads): void {
  const headEnd = NET_HDR_LEN + head;
  gather(vq, segments, pool, dst + from, from, headEnd);
  const last = segments - 1;
  const w = vq.segWindow[last];
  // The chain's bytes from headEnd on, all in the last segment (inside its window).
  const restOffset = vq.segOffset[last] + headEnd - (vq.chainBytes - vq.segLength[last]);
  // gso_type, as copied: no segments to cut (not copied, and ignored, without checksum offload).
  if (from !== 0 || pool.data[dst + 1] === 0) {
    defer.leave(handle, w, restOffset, head, frameLen);
  } else {
    const mem = vq.mem;
    copyBytes(pool.data, pool.words, pool.doubles, dst + headEnd, mem.bytes[w], mem.words[w], mem.doubles[w], restOffset, NET_HDR_LEN + frameLen - headEnd);
  }
}

/**
 * Writes the virtio-net header in front of a frame delivered to a guest that leaves nothing
 * to do: every field zero but num_buffers (bytes 10-11, little-endian). The first segment
 * of the chain holds it whole (checked by the callers). Kept this small so that it inlines:
 * it runs for every frame.
 */
function writeHeader(vq: Virtqueue, numBuffers: number): void {
  const w = vq.segWindow[0];
  const off = vq.segOffset[0];
  if ((off & 3) === 0) {
    const words = vq.mem.words[w];
    const i = off >>> 2;
    words[i] = 0;
    words[i + 1] = 0;
    words[i + 2] = numBuffers << 16;
  } else {
    const bytes = vq.mem.bytes[w];
    bytes.fill(0, off, off + NET_HDR_NUM_BUFFERS_OFFSET);
    bytes[off + NET_HDR_NUM_BUFFERS_OFFSET] = numBuffers & 0xff;
    bytes[off + NET_HDR_NUM_BUFFERS_OFFSET + 1] = numBuffers >> 8;
  }
}

/**
 * The header of frame `handle`, which leaves work to the guest (its offload fields): a
 * checksum (NEEDS_CSUM, csum_start, csum_offset) and, for a super-frame, its segments
 * (gso_type, hdr_len, gso_size). As writeHeader() otherwise.
 */
function writeOffloadHeader(vq: Virtqueue, numBuffers: number, pool: PacketPool, handle: number): void {
  const w = vq.segWindow[0];
  const off = vq.segOffset[0];
  const fields = handle * OFFLOAD_FIELDS;
  const gsoType = pool.offload[fields + OFFLOAD_GSO_TYPE];
  const word0 = VIRTIO_NET_HDR_F_NEEDS_CSUM | (gsoType << 8) | (gsoType === 0 ? 0 : pool.offload[fields + OFFLOAD_HDR_LEN] << 16);
  const word1 = (gsoType === 0 ? 0 : pool.offload[fields + OFFLOAD_GSO_SIZE]) | ((pool.offload[fields + OFFLOAD_CSUM_START] - 1) << 16);
  const word2 = pool.offload[fields + OFFLOAD_CSUM_OFFSET] | (numBuffers << 16);
  const bytes = vq.mem.bytes[w];
  for (let k = 0; k < 4; k++) {
    bytes[off + k] = (word0 >>> (8 * k)) & 0xff;
    bytes[off + 4 + k] = (word1 >>> (8 * k)) & 0xff;
    bytes[off + 8 + k] = (word2 >>> (8 * k)) & 0xff;
  }
}

/**
 * Writes frames into a guest's RX queue: with MRG_RXBUF a frame may span several
 * available chains (VIRTIO v1.2, 5.1.6.3.1), otherwise it must fit one chain. Buffers are
 * not freed here (a flooded frame goes to several ports). Returns how many were delivered.
 * The descriptor reads are metered: once DELIVER_DESCRIPTOR_BUDGET is spent, the rest of
 * the burst is dropped rather than walked, so that one guest cannot hold the PMD thread.
 */
export function deliverBurst(q: QueueOwner, mergeable: boolean, pool: PacketPool, handles: Uint32Array, count: number, defer: DeferredPayloads | null = null): number {
  const vq = q.queue;
  const counters = q.counters;
  const base = q.counterBase;
  const avail = vq.pending();
  if (avail < 0) {
    // The ring is corrupt (vq.failure says why): the caller stops it.
    countDrops(counters, base, DROP.port_down, count);
    return 0;
  }
  vq.claimChains(avail < count ? avail : count, NET_HDR_LEN);
  const usedFrom = vq.usedIdx;
  vq.descriptorsRead = 0;
  // A frame too small for the chains at misfitAt: no frame as long fits there either, so
  // it is not walked again this burst (the walk a rollback would repeat for every frame).
  let misfitAt = -1;
  let misfitLen = 0;
  const maxFrame = frameLimit(q);
  const partialOk = (q.offloads & OFFLOAD_CSUM_TO_GUEST) !== 0;
  let delivered = 0;
  let bytes = 0;
  let partial = 0;
  let completed = 0;
  let superFrames = 0;
  let superBytes = 0;
  let i = 0;
  for (; i < count; i++) {
    const handle = handles[i];
    const frameLen = pool.length[handle];
    // What the frame leaves to do: a super-frame always leaves its checksum too, so most
    // frames cost this one load. A super-frame comes here only to a guest that takes its
    // kind (the egress step cut the others' segments), with segments no longer than the
    // guest's frames.
    const fields = handle * OFFLOAD_FIELDS;
    const csumStart = pool.offload[fields + OFFLOAD_CSUM_START];
    const superFrame = csumStart !== 0 && pool.offload[fields + OFFLOAD_GSO_TYPE] !== 0;
    if (superFrame && (!takesSegmentation(pool, handle, q.offloads) || pool.offload[fields + OFFLOAD_HDR_LEN] + pool.offload[fields + OFFLOAD_GSO_SIZE] > maxFrame)) {
      countDrops(counters, base, DROP.frame_too_long);
      continue;
    }
    // Bounds of the copies out of the buffer (copyBytes checks none): frameLen <= maxFrame
    // <= DATA_ROOM, or a super-frame's <= SUPER_DATA_ROOM (a super buffer's: only those
    // hold frames longer than DATA_ROOM), keeps them inside the handle's buffer, and a
    // handle past the pool reads undefined here, which fails the test too.
    if (!(frameLen <= (superFrame ? SUPER_DATA_ROOM : maxFrame))) {
      countDrops(counters, base, DROP.frame_too_long);
      continue;
    }
    if (vq.lastAvailIdx === misfitAt && frameLen >= misfitLen) {
      countDrops(counters, base, DROP.guest_buffer_too_small);
      continue;
    }
    // A rest left in the sender's memory is copied from there (a frame whose length a
    // stage changed since is made whole first: the rest left is its old length's).
    let rest: DeferredPayloads | null = null;
    if (defer !== null && defer.window[handle] >= 0) {
      if (defer.length[handle] === frameLen) rest = defer;
      else defer.materialize(pool, handle);
    }
    // A checksum left to do goes as it is to a guest that takes it so; for the others
    // it is done here, in the buffer (any port the frame goes to next then gets it done).
    let leftToDo = csumStart !== 0;
    const completing = leftToDo && !partialOk;
    if (completing) {
      if (rest !== null) {
        rest.materialize(pool, handle);
        rest = null;
      }
      completeChecksum(pool, handle);
      leftToDo = false;
    }
    const result = mergeable ? writeMergeable(vq, pool, handle, frameLen, leftToDo, rest) : writeOneChain(vq, pool, handle, frameLen, leftToDo, rest);
    if (result > 0) {
      delivered++;
      bytes += frameLen;
      // Counted as delivered: a frame the guest had no room for is a drop, not a completion for it.
      if (completing) completed++;
      if (leftToDo) {
        partial++;
        if (superFrame) {
          superFrames++;
          superBytes += frameLen;
        }
      }
      continue;
    }
    if (result === NO_ROOM) {
      // The guest has no more buffers: the rest of the burst cannot be delivered either.
      countDrops(counters, base, DROP.guest_ring_full, count - i);
      break;
    }
    if (result === OVER_BUDGET) {
      countDrops(counters, base, DROP.guest_buffers_fragmented, count - i);
      break;
    }
    if (result === TOO_SMALL) {
      // The chains stay for a smaller frame.
      misfitAt = vq.lastAvailIdx;
      misfitLen = frameLen;
      countDrops(counters, base, DROP.guest_buffer_too_small);
    } else {
      // BAD_CHAIN: consumed with the frame.
      countDrops(counters, base, DROP.bad_descriptor);
    }
  }
  if (vq.usedIdx !== usedFrom) publishAndCall(q, usedFrom);
  counters[base + TX_PACKETS] += delivered;
  counters[base + TX_BYTES] += bytes;
  counters[base + TX_CSUM_PARTIAL] += partial;
  counters[base + CSUM_COMPLETED] += completed;
  counters[base + TX_GSO_FRAMES] += superFrames;
  counters[base + TX_GSO_BYTES] += superBytes;
  counters[q.queueCounterBase + QUEUE_TX_PACKETS] += delivered;
  counters[q.queueCounterBase + QUEUE_TX_BYTES] += bytes;
  return delivered;
}

const NO_ROOM = 0;
const TOO_SMALL = -1;
const BAD_CHAIN = -2;
const OVER_BUDGET = -3;

/**
 * Scatters `len` bytes of src from srcOff over the segments of the last walked chain, from
 * segment 0. Bounds: the callers pass a range of one buffer (see deliverBurst) or of the
 * range a frame's rest was left in (scatterWithRest), and each
 * segment [off, off + segLen) came from mem.translateAt(), inside its window; n <= segLen.
 */
function scatter(vq: Virtqueue, segments: number, src: Uint8Array, srcWords: Uint32Array, srcDoubles: Float64Array, srcOff: number, len: number, skip: number): number {
  const mem = vq.mem;
  let written = 0;
  for (let s = 0; s < segments && written < len; s++) {
    let segLen = vq.segLength[s];
    let off = vq.segOffset[s];
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    off += skip;
    segLen -= skip;
    skip = 0;
    const n = len - written < segLen ? len - written : segLen;
    const w = vq.segWindow[s];
    const from = srcOff + written;
    if (((off | from) & 7) === 0 && n < NATIVE_COPY_MIN_ALIGNED) copyDoubles(mem.bytes[w], mem.words[w], mem.doubles[w], off, src, srcWords, srcDoubles, from, n);
    else copyBytes(mem.bytes[w], mem.words[w], mem.doubles[w], off, src, srcWords, srcDoubles, from, n);
    written += n;
  }
  return written;
}

/**
 * scatter() for frame bytes [from, from + len) of a frame whose rest is left in the
 * sender's memory: those of its head from the buffer, the others from the sender's window. Returns the
 * bytes written (fewer once the chain is full). Bounds: from + len <= the frame's length,
 * the length its rest was left with (checked by the caller), so the reads stay in
 * [offset, + length - head) of the window, the range leave() was given.
 */
function scatterWithRest(vq: Virtqueue, segments: number, pool: PacketPool, handle: number, from: number, len: number, skip: number, rest: DeferredPayloads): number {
  const headLen = rest.head[handle];
  let written = 0;
  if (from < headLen) {
    const head = headLen - from < len ? headLen - from : len;
    written = scatter(vq, segments, pool.data, pool.words, pool.doubles, pool.frameOffset(handle) + from, head, skip);
    if (written < head) return written;
  }
  const mem = rest.mem!;
  const w = rest.window[handle];
  return written + scatter(vq, segments, mem.bytes[w], mem.words[w], mem.doubles[w], rest.offset[handle] + from + written - headLen, len - written, skip + written);
}

/**
 * Gives back what a frame took so far (nothing of it is published): its chains stay
 * available for the next frame. Returns `result`.
 */
function rollBack(vq: Virtqueue, startAvail: number, startUsed: number, result: number): number {
  vq.lastAvailIdx = startAvail;
  vq.forgetUsed(startUsed);
  // The frame may have written over the headers the claims wrote.
  vq.forgetClaims();
  return result;
}

/**
 * Drops the frame and returns the n chains from startAvail to the guest with length 0:
 * the last one is bad, and those before it (taken by the same frame) go with it so that
 * the queue moves on instead of stalling on the bad chain. Returns BAD_CHAIN.
 */
function consumeChains(vq: Virtqueue, startAvail: number, startUsed: number, n: number): number {
  vq.lastAvailIdx = startAvail;
  vq.forgetUsed(startUsed);
  for (let c = 0; c < n; c++) {
    // Taken again to be returned (a packed ring's chain is found by walking it).
    if (vq.takeChain(true, 0xffffffff) === NO_CHAIN) break;
    vq.returnChain(0);
  }
  return BAD_CHAIN;
}

/**
 * One frame into one chain (no MRG_RXBUF). Returns the chains used (1), NO_ROOM,
 * OVER_BUDGET, TOO_SMALL (the chain is left for a smaller frame) or BAD_CHAIN (consumed):
 * a chain that cannot hold the header and an Ethernet header fits no frame, and left at
 * the head of the queue it would stop the guest's receive path for good.
 */
function writeOneChain(vq: Virtqueue, pool: PacketPool, handle: number, frameLen: number, leftToDo: boolean, rest: DeferredPayloads | null): number {
  if (!vq.hasChain()) return NO_ROOM;
  if (vq.descriptorsRead >= DELIVER_DESCRIPTOR_BUDGET) return OVER_BUDGET;
  const start = vq.lastAvailIdx;
  const segments = vq.takeChain(true, 0xffffffff);
  if (segments === NO_CHAIN) return NO_ROOM;
  if (segments <= 0 || vq.segLength[0] < NET_HDR_LEN || vq.chainBytes < NET_HDR_LEN + ETHER_HDR_LEN) {
    return consumeChains(vq, start, vq.usedIdx, 1);
  }
  if (vq.chainBytes < NET_HDR_LEN + frameLen) {
    vq.lastAvailIdx = start;
    return TOO_SMALL;
  }
  if (leftToDo) writeOffloadHeader(vq, 1, pool, handle);
  else if (!vq.headerWritten) writeHeader(vq, 1);
  if (rest === null) scatter(vq, segments, pool.data, pool.words, pool.doubles, pool.frameOffset(handle), frameLen, NET_HDR_LEN);
  else scatterWithRest(vq, segments, pool, handle, 0, frameLen, NET_HDR_LEN, rest);
  vq.returnChain(NET_HDR_LEN + frameLen);
  return 1;
}

/**
 * One frame over as many chains as it needs (MRG_RXBUF), num_buffers in the header of the
 * first. If the guest runs out of chains midway, or the frame would need more than
 * MAX_FRAME_CHAINS, or the burst's descriptor budget runs out, nothing of this frame is
 * published: lastAvailIdx and usedIdx are rolled back. Returns the chains used or an
 * error code.
 */
function writeMergeable(vq: Virtqueue, pool: PacketPool, handle: number, frameLen: number, leftToDo: boolean, rest: DeferredPayloads | null): number {
  const startAvail = vq.lastAvailIdx;
  const startUsed = vq.usedIdx;
  const src = pool.data;
  const srcBase = pool.frameOffset(handle);
  let done = 0; // frame bytes written
  let chains = 0;
  let numBuffersWindow = 0;
  let numBuffersOffset = 0;
  while (done < frameLen || chains === 0) {
    if (!vq.hasChain()) return rollBack(vq, startAvail, startUsed, NO_ROOM);
    if (chains === MAX_FRAME_CHAINS) return rollBack(vq, startAvail, startUsed, TOO_SMALL);
    if (vq.descriptorsRead >= DELIVER_DESCRIPTOR_BUDGET) return rollBack(vq, startAvail, startUsed, OVER_BUDGET);
    const segments = vq.takeChain(true, 0xffffffff);
    if (segments === NO_CHAIN) return rollBack(vq, startAvail, startUsed, NO_ROOM);
    // VIRTIO v1.2, 5.1.6.3.1: "If VIRTIO_NET_F_MRG_RXBUF is negotiated, each buffer MUST
    // be at least the size of the struct virtio_net_hdr"; the first holds it whole.
    // NB: the first chain is judged by its first segment alone; also reading chainBytes
    // for it measured 10 % slower for 1518-byte frames.
    if (segments <= 0 || (chains === 0 ? vq.segLength[0] : vq.chainBytes) < NET_HDR_LEN) {
      return consumeChains(vq, startAvail, startUsed, chains + 1);
    }
    let used = 0;
    if (chains === 0) {
      if (leftToDo) writeOffloadHeader(vq, 1, pool, handle);
      else if (!vq.headerWritten) writeHeader(vq, 1);
      numBuffersWindow = vq.segWindow[0];
      numBuffersOffset = vq.segOffset[0] + NET_HDR_NUM_BUFFERS_OFFSET;
      used = NET_HDR_LEN;
    }
    const n = rest === null ? scatter(vq, segments, src, pool.words, pool.doubles, srcBase + done, frameLen - done, used) : scatterWithRest(vq, segments, pool, handle, done, frameLen - done, used, rest);
    done += n;
    used += n;
    vq.returnChain(used);
    chains++;
  }
  if (chains > 1) {
    const hdr = vq.mem.bytes[numBuffersWindow];
    hdr[numBuffersOffset] = chains & 0xff;
    hdr[numBuffersOffset + 1] = chains >> 8;
  }
  return chains;
}
