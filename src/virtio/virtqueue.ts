// What the data path needs of a virtqueue, split (split-queue.ts) or packed
// (packed-queue.ts): take the chain at the driver's position, return it used, publish a
// burst's used buffers at once. Positions (lastAvailIdx, usedIdx) are opaque numbers a
// caller may save and restore to take chains again (a frame rolled back).
import { NET_HDR_LEN } from './constants.ts';
import type { GuestMemory } from './guest-memory.ts';

/** takeChain() results below zero */
export const CHAIN_BAD = -1;
export const CHAIN_TOO_LONG = -2;
/** the driver has made no more chains available (or the burst took all it may) */
export const NO_CHAIN = -3;

/**
 * The most descriptors one chain may have, zero-length ones included, so that one chain
 * costs at most this many reads whatever its table holds. Linux sends at most
 * MAX_SKB_FRAGS + 2 (19, or 47 with CONFIG_MAX_SKB_FRAGS=45); a queue smaller than this
 * caps chains lower still (see maxChain).
 */
export const MAX_CHAIN_DESCRIPTORS = 128;

/** the most chains claimChains() reads ahead: a burst's, and a few more for frames over several */
export const CLAIM_AHEAD_MAX = 64;

/** The 8 bytes of a virtio-net header from its byte 4 on, num_buffers 1 and every other field 0, as a double to store (little-endian: the words 0 and 1 << 16). */
const HEADER_TAIL_ONE_BUFFER = new Float64Array(new Uint32Array([0, 1 << 16]).buffer)[0];

/**
 * The claims of claimChains(), back to back, of the first `count` buffers kept: buffer k
 * is [offsets[k], + lengths[k]) of window windows[k] (length 0: none). A claim writes the
 * cache lines a frame is about to be written to, so that they are on their way from the
 * driver's CPU while the burst goes on: a store waits in the store buffer until its line
 * comes, and every store behind it waits too, so the fewer, the more lines on their way
 * at once.
 * - headers[k] 1 (a split or packed ring's descriptors are read once): the stores that
 *   claim the header's line write the header of a frame that leaves the guest nothing to
 *   do and fits the buffer (every field 0, num_buffers 1), two stores where writing it
 *   after took three more (see Virtqueue.headerWritten); the frame's line gets a zero.
 *   The buffer is then 4-byte aligned and len >= CLAIM_HEADER_MIN_LEN.
 * - else a zero at the start of the buffer, where the virtio-net header goes, and `frameAt`
 *   bytes in, where the frame goes; nothing if the buffer is too short for both words or
 *   not 4-byte aligned.
 * Both written out here: as functions of their own V8 left them calls in this loop.
 */
export function claimKept(mem: GuestMemory, count: number, lengths: Uint32Array, windows: Int32Array, offsets: Float64Array, headers: Uint8Array, frameAt: number): void {
  for (let k = 0; k < count; k++) {
    const len = lengths[k];
    if (len === 0) continue;
    const w = windows[k];
    const offset = offsets[k];
    const words = mem.words[w];
    if (headers[k] === 1) {
      if ((offset & 7) === 0) {
        mem.doubles[w][offset >>> 3] = 0;
        words[(offset >>> 2) + 2] = 1 << 16;
      } else {
        words[offset >>> 2] = 0;
        mem.doubles[w][(offset + 4) >>> 3] = HEADER_TAIL_ONE_BUFFER;
      }
      words[(offset + NET_HDR_LEN) >>> 2] = 0;
    } else if (len >= frameAt + 4 && (offset & 3) === 0) {
      words[offset >>> 2] = 0;
      words[(offset + frameAt) >>> 2] = 0;
    }
  }
}

/**
 * The claims of a buffer [offset, + len) may write the header (see claimKept) when
 * the frame goes NET_HDR_LEN in (`frameAt`) and the buffer is 4-byte aligned and holds the
 * header and the frame's first word: len >= CLAIM_HEADER_MIN_LEN, (offset & 3) === 0.
 * (Tested in the claims' loops as written here: a function for it stayed a call there.)
 */
export const CLAIM_HEADER_MIN_LEN = NET_HDR_LEN + 4;

/** What a queue with an inflight record found in it when it started. */
export interface InflightRecovery {
  /** chains the previous owner took and never returned, taken again in their order */
  retaken: number;
  /** such chains not at the head of the available ring (not left by an in-order owner): returned unprocessed */
  returned: number;
  fresh: boolean;
  /** chains marked in a record that cannot be of this ring (more than the driver made available): it was started afresh */
  disagreed: number;
}

/**
 * A part of a ring (descriptors, a ring of indices, an event area): where its bytes are
 * (the window's buffer and the offset in it), or why it cannot be: not `align`-byte
 * aligned, or not wholly inside guest memory.
 */
export function ringPart(mem: GuestMemory, name: string, addr: number, bytes: number, align: number): [ArrayBuffer, number] | string {
  if (addr % align !== 0) return `${name} address 0x${addr.toString(16)} is not ${align}-byte aligned`;
  if (!mem.translateUserAddr(addr, bytes)) return `${name} at 0x${addr.toString(16)} (+${bytes}) is outside guest memory`;
  const buffer = mem.bytes[mem.window].buffer as ArrayBuffer;
  return [buffer, mem.bytes[mem.window].byteOffset + mem.offset];
}

export interface Virtqueue {
  readonly mem: GuestMemory;
  readonly size: number;
  /** the most descriptors a chain may have */
  readonly maxChain: number;
  /** set once the ring is found corrupt (fail()); the queue is then no longer polled */
  readonly failed: boolean;
  /** why it failed ('' while it has not), for the log */
  readonly failure: string;
  /** Marks the queue failed, saying why: the data path stops polling it, the caller stops it. */
  fail(why: string): void;
  /** the driver's position: the next chain takeChain() walks */
  lastAvailIdx: number;
  /** where the next used buffer goes; published by publishUsed() */
  usedIdx: number;
  /** descriptors read since a caller last set this to 0 (to meter a burst) */
  descriptorsRead: number;
  /** the segments of the last walked chain: window, offset and length of each */
  readonly segWindow: Int32Array;
  readonly segOffset: Float64Array;
  readonly segLength: Uint32Array;
  /** total bytes of the last walked chain */
  chainBytes: number;
  readonly inflightRecovery: InflightRecovery | null;
  /** whether chains are available: a count (split) or a bound (packed); -1 if the ring is corrupt */
  pending(): number;
  /** Whether takeChain() would find a chain (without reading it). */
  hasChain(): boolean;
  /**
   * A plain load of the word pending() reads first (split: avail->idx; packed: the next
   * descriptor's flags), for the caller to keep: see Pmd.loadIndexWords.
   */
  indexWord(): number;
  /**
   * Before frames are written into the next `count` chains (a guest's RX queue): claims
   * the cache lines of each one's buffer, at its start and `frameAt` bytes in, where it
   * writes the header (headerWritten; see SplitQueue.claimChains: a split ring claims its
   * used ring's lines too).
   */
  claimChains(count: number, frameAt: number): void;
  /**
   * Whether the chain takeChain() last took is one claimChains() wrote the virtio-net
   * header of a frame into (see claimKept): every field 0, num_buffers 1. A
   * writer whose frame has that header need not write it again.
   */
  readonly headerWritten: boolean;
  /** A frame written into chains is rolled back: what claimChains() wrote there is not so any more. */
  forgetClaims(): void;
  /**
   * Walks the chain at lastAvailIdx and moves past it. `writable` says which kind the
   * device expects (a virtio-net chain is all of one kind). Returns the segment count,
   * CHAIN_BAD, CHAIN_TOO_LONG once more than maxBytes, or NO_CHAIN.
   */
  takeChain(writable: boolean, maxBytes: number): number;
  /** Returns the chain takeChain() last took, len bytes written into it (not yet visible). */
  returnChain(len: number): void;
  /** Takes back the used buffers returned since usedIdx was `to` (none of them published). */
  forgetUsed(to: number): void;
  /** Makes the used buffers returned since `from` visible; says whether the guest wants an interrupt. */
  publishUsed(from: number): boolean;
  /**
   * publishUsed() in two halves, for a caller with one full barrier between them for
   * several queues (notify.ts): the used buffers written, in order, with plain stores
   * (false: there were none, and no interrupt is due)...
   */
  exposeUsed(from: number): boolean;
  /** ...and, after that barrier, whether the guest wants an interrupt for those since `from`. */
  callWanted(from: number): boolean;
  /** Before the PMD sleeps: ask the driver to kick for the next buffer. */
  enableNotifications(): void;
  /** A polling device wants no kicks. */
  suppressNotifications(): void;
}
