// Per-address buckets (one policer per source or destination address, as iptables hashlimit):
// a bounded table in shared memory mapping an address to a bucket of a PolicerTable, written
// by every PMD without a lock. An address that finds no room meters into one overflow bucket
// shared by all such addresses, so a flood of new sources is still held to one rate.
//
// Layout: a 64-byte header (magic, capacity, the hash seed), then per slot 8 Int32 words: state, last second seen, the address
// (4 words; IPv4 as ::ffff:a.b.c.d), 2 spare. Slot i's bucket is policer i of the bucket table;
// the overflow bucket is policer `capacity`.
//
// A slot's state word is 0 (empty), LIVE with 30 bits of the address's hash, or CLAIMING with
// the second the claim began. A PMD takes a slot (empty, idle past the timeout, or a claim left
// stale by a PMD that died half-way) with one compareExchange on the state word, so no two PMDs
// ever write one slot; it writes the address, refills the bucket, then stores LIVE. Readers
// match LIVE slots only. Two PMDs that see a new address in the same microseconds may both
// claim a slot for it: the address then has two buckets for one burst's time, after which
// every PMD finds the first in probe order and the other ages out.
import type { PolicerTable } from './policer.ts';

/** slots probed per lookup: an address lives within WINDOW slots of its hash */
export const WINDOW = 16;
const MAGIC = 0x41444452; // "ADDR"
const HEADER_WORDS = 16;
/** header word of the hash seed */
const SEED = 2;
const SLOT_WORDS = 8;
const STATE = 0;
const SEEN = 1;
const KEY = 2;
const LIVE = 2;
const CLAIMING = 1;
const TAG_MASK = 0x3fffffff;
/** a claim takes microseconds: one older than this was left by a PMD that stopped */
const STALE_CLAIM_SECONDS = 2;

export function addressTableBytes(capacity: number): number {
  return (HEADER_WORDS + capacity * SLOT_WORDS) * 4;
}

/**
 * Lays the table out in zero-filled shared memory (every slot empty), with a random hash
 * seed: without one a guest could work out offline a set of addresses that share another
 * address's window and, keeping them live, send that address's traffic to the overflow
 * bucket, shared with whatever floods it.
 */
export function formatAddressTable(buffer: ArrayBufferLike, capacity: number, seed = crypto.getRandomValues(new Int32Array(1))[0]): void {
  const words = new Int32Array(buffer);
  words[1] = capacity;
  words[SEED] = seed;
  // The magic last: a view made before this would not trust the seed.
  Atomics.store(words, 0, MAGIC);
}

/** Empties every slot (the buckets' configuration changed: old entries would keep old buckets). */
export function clearAddressTable(buffer: ArrayBufferLike): void {
  const words = new Int32Array(buffer);
  for (let i = HEADER_WORDS; i < words.length; i += SLOT_WORDS) Atomics.store(words, i + STATE, 0);
}

/**
 * Murmur3's mixing over the seed and the four words, its 32-bit finalizer last: spreads
 * neighbouring addresses apart, and where an address lands depends on the seed through the
 * finalizer, whatever its last word. An int32 (a uint32 past 2^31 would be a heap number
 * if V8 does not inline this).
 */
function hashAddress(seed: number, k0: number, k1: number, k2: number, k3: number): number {
  let h = Math.imul(k0 ^ seed, 0xcc9e2d51);
  h = Math.imul((h << 15) | (h >>> 17), 0x1b873593) ^ k1;
  h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
  h = Math.imul(h ^ k2, 0x85ebca6b);
  h ^= k3;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** One PMD's view of an address table and its buckets. */
export class AddressTable {
  readonly capacity: number;
  /** the bucket addresses share when the table has no room for them */
  readonly overflow: number;
  readonly buckets: PolicerTable;
  private readonly words: Int32Array;
  private readonly mask: number;
  private readonly idleSeconds: number;
  private readonly seed: number;

  constructor(slots: ArrayBufferLike, buckets: PolicerTable, idleSeconds: number) {
    this.words = new Int32Array(slots);
    if (Atomics.load(this.words, 0) !== MAGIC) throw new RangeError('not an address table (formatAddressTable)');
    this.capacity = this.words[1];
    if (buckets.capacity !== this.capacity + 1) throw new RangeError(`address table of ${this.capacity}: needs ${this.capacity + 1} buckets, has ${buckets.capacity}`);
    this.mask = this.capacity - 1;
    this.overflow = this.capacity;
    this.buckets = buckets;
    this.idleSeconds = idleSeconds;
    this.seed = this.words[SEED] ^ 0x9e3779b9;
  }

  /** The first slot of an address's window (diagnostics, tests). */
  windowOf(k0: number, k1: number, k2: number, k3: number): number {
    return (hashAddress(this.seed, k0, k1, k2, k3) >>> 2) & this.mask;
  }

  /**
   * The bucket of an address (4 words, big-endian, each as an int32 or a uint32), taking a slot
   * for it if it has none, at the time of the buckets (buckets.time[0]); `overflow` when its
   * probe window has no slot to spare. No allocation, no exception.
   */
  bucketOf(k0: number, k1: number, k2: number, k3: number): number {
    const words = this.words;
    const h = hashAddress(this.seed, k0, k1, k2, k3);
    const tag = (((h & TAG_MASK) << 2) | LIVE) | 0;
    const start = h >>> 2;
    const nowSec = Math.floor(this.buckets.time[0] / 1e6);
    // One retry: a lost race for a slot means another PMD just took one nearby.
    for (let attempt = 0; attempt < 2; attempt++) {
      let free = -1;
      let freeState = 0;
      let oldest = -1;
      let oldestState = 0;
      let oldestSeen = 0;
      for (let j = 0; j < WINDOW; j++) {
        const slot = (start + j) & this.mask;
        const at = HEADER_WORDS + slot * SLOT_WORDS;
        // Atomics.load: the address words below were written before the LIVE store we see.
        const state = Atomics.load(words, at + STATE);
        if (state === tag && words[at + KEY] === (k0 | 0) && words[at + KEY + 1] === (k1 | 0) && words[at + KEY + 2] === (k2 | 0) && words[at + KEY + 3] === (k3 | 0)) {
          // A plain store, once a second: a race only blurs which idle slot goes first.
          if (words[at + SEEN] !== nowSec) words[at + SEEN] = nowSec;
          return slot;
        }
        if (state === 0) {
          if (free < 0) {
            free = slot;
            freeState = 0;
          }
        } else if ((state & 3) === CLAIMING) {
          if (free < 0 && ((nowSec - (state >>> 2)) & TAG_MASK) >= STALE_CLAIM_SECONDS) {
            free = slot;
            freeState = state;
          }
        } else {
          const seen = words[at + SEEN];
          if (oldest < 0 || seen < oldestSeen) {
            oldest = slot;
            oldestState = state;
            oldestSeen = seen;
          }
        }
      }
      if (free < 0 && oldest >= 0 && nowSec - oldestSeen >= this.idleSeconds) {
        free = oldest;
        freeState = oldestState;
      }
      if (free < 0) return this.overflow;
      const at = HEADER_WORDS + free * SLOT_WORDS;
      const claim = (((nowSec & TAG_MASK) << 2) | CLAIMING) | 0;
      // compareExchange: only one PMD takes a slot; the others see CLAIMING or the new LIVE.
      if (Atomics.compareExchange(words, at + STATE, freeState, claim) !== freeState) continue;
      words[at + SEEN] = nowSec;
      words[at + KEY] = k0;
      words[at + KEY + 1] = k1;
      words[at + KEY + 2] = k2;
      words[at + KEY + 3] = k3;
      // RFC 2697, 3 / RFC 2698, 3: a new meter's buckets "are initially (at time 0) full".
      this.buckets.refill(free);
      // Atomics.store: publishes the address and the refilled bucket before the tag is seen.
      Atomics.store(words, at + STATE, tag);
      return free;
    }
    return this.overflow;
  }

  /** Slots holding an address now (for the admin side and tests). */
  liveCount(): number {
    let n = 0;
    for (let i = 0; i < this.capacity; i++) if ((Atomics.load(this.words, HEADER_WORDS + i * SLOT_WORDS + STATE) & 3) === LIVE) n++;
    return n;
  }
}
