// Connection tracking for the acl stage: one table in shared memory that every PMD reads
// and writes, so that a flow whose two directions are polled by different PMDs is one
// entry. Entries are keyed by the flow's 5-tuple with its two endpoints in a fixed order
// (the lower address, then port, first): both directions hash to the same entry.
//
// Layout: a 64-byte header, a tag per slot (the key's hash: 0 for a slot never used), then
// slots of 64 bytes (one cache line). Slots go in buckets of 8, whose tags share half a
// cache line: a lookup reads the tags of its two buckets and then only the slots whose tag
// is its own (NB: a tag inside each slot cost 8 cache misses per bucket, 550 ns per packet
// at a million flows). A flow lives in one of two buckets (two-choice hashing: the table
// fills to over 90 % before a bucket pair is full), so a lookup reads at most 16 tags and
// an insert never probes further: a full pair is "table full", never a longer search.
//
// Each slot has a sequence word: even when stable, odd while one writer changes the slot.
// A writer takes it with a compare-and-exchange from the even value it read (so two PMDs
// never write one slot at once, and a writer whose view is stale fails instead of
// overwriting), writes plain words, and releases with the next even value. A reader reads
// the sequence, the words, and the sequence again, and discards what it read if the
// sequence moved: no reader ever waits on a writer. The stage reads a burst's slots with
// plain loads and checks their sequences again after them all (peek(), settle(),
// stable()): see settle() for why that is enough on x86-64.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { PORT_SLOTS, read32 } from '../../src/pipeline/api.ts';
import type { FlowKeys } from './classifier.ts';
import { FlowCache } from './flow-cache.ts';
import type { ConntrackConfig } from './rules.ts';

const MAGIC = 0x61636c63; // "aclc": prepare() initialised the table
/** Header words: the table's own, then per port slot the entries its flows hold. */
const H_PORT_ENTRIES = 16;
const HEADER_WORDS = H_PORT_ENTRIES + PORT_SLOTS;
const H_MAGIC = 0;
const H_SEED = 1;
const H_SLOTS = 2;
/**
 * Moved on (Atomics.add) by every write that ends a flow's entry, gives its slot to
 * another flow or changes its state, once the write holds the slot: every write but a
 * refresh of the expiry. The PMDs' flow caches read a slot again only after it moved
 * (flow-cache.ts).
 */
const H_CHANGES = 3;
export const BUCKET_SLOTS = 8;
const SLOT_WORDS = 16;
// Slot words
const SEQ = 0;
/** seconds (the stage's clock): the entry is live while now < expires */
const EXPIRES = 2;
const STATUS = 3;
/** the batch.mark of the rule that let the flow in (its policer) */
const MARK = 4;
const PORTS = 5;
const PROTO = 6;
/** the port slot + 1 of the packet that opened the flow: whose entry it is (H_PORT_ENTRIES) */
const ORIGIN = 7;
const ADDR = 8;

// STATUS bits: a TCP state in the low 4 bits, then what has been seen
export const TCP_SYN_SENT = 1;
export const TCP_SYN_RECV = 2;
export const TCP_ESTABLISHED = 3;
export const TCP_FIN_WAIT = 4;
export const TCP_TIME_WAIT = 5;
export const TCP_CLOSED = 6;
const STATE_MASK = 0x0f;
const FIN_FROM_ORIGINATOR = 0x10;
const FIN_FROM_REPLIER = 0x20;
/** a packet from the side that did not open the flow has been seen */
const REPLIED = 0x40;
/** the side that opened the flow is endpoint A of the key (the lower one) */
const ORIGINATOR_IS_A = 0x80;

// TCP flags byte (RFC 9293 3.1)
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const IPPROTO_SCTP = 132;

/** peek(): no slot of the key's buckets carries its tag (the flow has no entry) */
export const MISS = -1;
/** peek(): a slot with the key's tag was mid-write, expired or another flow's: ask lookup() */
export const UNSURE = -2;
/** peekBurst4(): not an IPv4 TCP, UDP or SCTP packet, left to the caller */
export const NOT_PEEKED = -3;

/** insert(): the entry is made */
export const INSERTED = 0;
/** insert(): both buckets of the flow are full of live flows */
export const TABLE_FULL = 1;
/** insert(): the port's flows hold maxFlowsPerPort entries */
export const PORT_FULL = 2;

// Odd multipliers of the IPv4 key's hash (murmur3's and the golden ratio's)
const M1 = 0xcc9e2d51;
const M2 = 0x1b873593;
const M3 = 0x85ebca6b;
const M4 = 0xc2b2ae35;
const M5 = 0x9e3779b1;

/** A reader that saw a slot mid-write tries again this many times, then takes it as a miss. */
const READ_TRIES = 4;
/** Slots a sweep looks at per betweenBursts() call: a few µs. */
export const AGE_SLICE = 256;
/** Slots found mid-write that the next sweep checks again (see age()). */
const SUSPECTS = 16;

/** Slots for maxFlows: a power of 2, at least two buckets. */
export function slotCount(maxFlows: number): number {
  return Math.max(2 * BUCKET_SLOTS, 2 ** Math.ceil(Math.log2(maxFlows)));
}

export function conntrackBytes(maxFlows: number): number {
  return (HEADER_WORDS + slotCount(maxFlows) * (1 + SLOT_WORDS)) * 4;
}

/** Run once by prepare() on the zero-filled region: an empty table with a random hash seed. */
export function initConntrack(memory: ArrayBufferLike, seed: number): void {
  const h = new Uint32Array(memory, 0, HEADER_WORDS);
  h[H_SEED] = seed >>> 0;
  h[H_SLOTS] = (memory.byteLength / 4 - HEADER_WORDS) / (1 + SLOT_WORDS);
  // Published last: a view made before this would not trust the seed.
  Atomics.store(new Int32Array(memory, 0, 1), H_MAGIC, MAGIC);
}

export function isInitialised(memory: ArrayBufferLike): boolean {
  return Atomics.load(new Int32Array(memory, 0, 1), H_MAGIC) === MAGIC;
}

/**
 * Live flows, and slots holding an entry (live, or expired and not swept yet), of the
 * table's capacity: an admin-side count that scans the table.
 */
export function liveFlows(memory: ArrayBufferLike, now: number): { flows: number; entries: number; capacity: number } {
  const u = new Uint32Array(memory);
  const slots = u[H_SLOTS];
  let flows = 0;
  let entries = 0;
  for (let s = 0; s < slots; s++) {
    if (u[HEADER_WORDS + s] === 0) continue;
    entries++;
    if (u[HEADER_WORDS + slots + s * SLOT_WORDS + EXPIRES] > now) flows++;
  }
  return { flows, entries, capacity: slots };
}

/**
 * liveFlows() for a gauge read at every scrape: a table scanned at most once a period (a
 * second), its counts reused meanwhile. Prometheus may scrape ten times a second, and a scan
 * of the largest table (2^23 slots) takes some ms of the supervisor's CPU, a core a host's
 * guests or generator share.
 */
export class FlowCounts {
  private memory: ArrayBufferLike | null = null;
  private scannedAtMs = -Infinity;
  private counts = { flows: 0, entries: 0, capacity: 0 };
  private readonly periodMs: number;
  private readonly clockMs: () => number;

  constructor(periodMs = 1000, clockMs: () => number = () => performance.now()) {
    this.periodMs = periodMs;
    this.clockMs = clockMs;
  }

  /** The counts of the table in `memory` at `nowSeconds`, as scanned within the period. */
  read(memory: ArrayBufferLike, nowSeconds: number): { flows: number; entries: number; capacity: number } {
    const at = this.clockMs();
    if (memory !== this.memory || !(at - this.scannedAtMs < this.periodMs)) {
      this.counts = liveFlows(memory, nowSeconds);
      this.memory = memory;
      this.scannedAtMs = at;
    }
    return this.counts;
  }
}

/** Entries the flows opened from port slot `port` hold (live, or expired and not swept yet). */
export function portEntries(memory: ArrayBufferLike, port: number): number {
  return Atomics.load(new Int32Array(memory, 0, HEADER_WORDS), H_PORT_ENTRIES + port);
}

/** A PMD's view of the table, with the scratch of one lookup. */
export class Conntrack {
  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly bucketMask: number;
  /** where the slots start, after the tags */
  private readonly slotsBase: number;
  private readonly seed: number;
  /** per word of an IPv4 key, the seed mixed differently (so that no word's effect on the hash is the same for every seed) */
  private readonly seedA: number;
  private readonly seedB: number;
  private readonly seedC: number;
  private readonly seedD: number;
  /** this PMD's flow cache over the table */
  readonly cache: FlowCache;
  private readonly timeouts: ConntrackConfig['timeouts'];
  private readonly maxPerPort: number;
  /** the normalised key of the packet at hand: address A (4 words), B (4), ports, protocol */
  private readonly probe = new Uint32Array(10);
  private probeTag = 0;
  private bucket1 = 0;
  private bucket2 = 0;
  /** the packet at hand comes from endpoint A */
  srcIsA = false;
  /**
   * After a lookup or peek that found the flow: its slot's sequence then, for
   * update()/reopen(), and its status and mark as read under that sequence.
   */
  foundSeq = 0;
  foundStatus = 0;
  foundMark = 0;
  foundExpires = 0;
  /** the sweep: this PMD's share of the slots [sweepFrom, sweepTo), and where it is */
  private readonly sweepFrom: number;
  private readonly sweepTo: number;
  private sweepAt: number;
  private readonly suspectSlot = new Int32Array(SUSPECTS).fill(-1);
  private readonly suspectSeq = new Int32Array(SUSPECTS);

  constructor(memory: ArrayBufferLike, config: ConntrackConfig, pmd: number, pmdCount: number) {
    if (!isInitialised(memory)) throw new Error('the conntrack table was not initialised (prepare() has not run)');
    this.i32 = new Int32Array(memory);
    this.u32 = new Uint32Array(memory);
    const slots = this.u32[H_SLOTS];
    this.bucketMask = slots / BUCKET_SLOTS - 1;
    this.slotsBase = HEADER_WORDS + slots;
    this.seed = this.u32[H_SEED];
    this.seedA = fmix(this.seed ^ 0x3c6ef372);
    this.seedB = fmix(this.seed ^ 0xa54ff53a);
    this.seedC = fmix(this.seed ^ 0x510e527f);
    this.seedD = fmix(this.seed ^ 0x9b05688c);
    this.cache = new FlowCache(this.i32, fmix(this.seed ^ 0x1f83d9ab ^ pmd), H_CHANGES);
    this.timeouts = config.timeouts;
    this.maxPerPort = config.maxFlowsPerPort;
    this.sweepFrom = Math.floor((slots * pmd) / pmdCount);
    this.sweepTo = Math.floor((slots * (pmd + 1)) / pmdCount);
    this.sweepAt = this.sweepFrom;
  }

  /**
   * Sets the key from a packet's bytes: addresses at d[srcAt] and d[dstAt] (1 word for
   * IPv4, 4 for IPv6). Reads the bytes itself: NB an address above 2^30 passed as a number
   * is a heap number unless the call is inlined.
   */
  setKey(d: Uint8Array, srcAt: number, dstAt: number, v6: boolean, srcPort: number, dstPort: number, protocol: number): void {
    const p = this.probe;
    const n = v6 ? 4 : 1;
    for (let j = 0; j < 4; j++) {
      p[j] = j < n ? read32(d, srcAt + 4 * j) : 0;
      p[4 + j] = j < n ? read32(d, dstAt + 4 * j) : 0;
    }
    this.normalise(v6, srcPort, dstPort, protocol);
  }

  /** Sets the key from packet i's parsed addresses (keys.src4/dst4, or src6/dst6 for IPv6). */
  setKeyOf(keys: FlowKeys, i: number, v6: boolean, srcPort: number, dstPort: number, protocol: number): void {
    if (!v6) {
      this.setKey4(keys.src4, keys.dst4, i, srcPort, dstPort, protocol);
      return;
    }
    const p = this.probe;
    const s = keys.src6;
    const t = keys.dst6;
    const w = i << 2;
    for (let j = 0; j < 4; j++) {
      p[j] = s[w + j];
      p[4 + j] = t[w + j];
    }
    this.normalise(true, srcPort, dstPort, protocol);
  }

  /**
   * The IPv4 key of packet i from its parsed addresses: the common case, written out (the
   * endpoints ordered by two compares, four words hashed). Takes the arrays, not the
   * addresses, for the reason setKey() gives.
   */
  setKey4(src: Uint32Array, dst: Uint32Array, i: number, srcPort: number, dstPort: number, protocol: number): void {
    const p = this.probe;
    const s = src[i];
    const t = dst[i];
    const srcIsA = s !== t ? s < t : srcPort <= dstPort;
    p[0] = srcIsA ? s : t;
    p[4] = srcIsA ? t : s;
    p[1] = 0;
    p[2] = 0;
    p[3] = 0;
    p[5] = 0;
    p[6] = 0;
    p[7] = 0;
    p[8] = srcIsA ? ((srcPort << 16) | dstPort) >>> 0 : ((dstPort << 16) | srcPort) >>> 0;
    p[9] = (4 << 8) | protocol;
    this.srcIsA = srcIsA;
    this.hashKey(false);
  }

  /** Puts the endpoints of the probe's addresses in key order (the lower first), then hashes. */
  private normalise(v6: boolean, srcPort: number, dstPort: number, protocol: number): void {
    const p = this.probe;
    let order = 0;
    for (let j = 0; j < 4 && order === 0; j++) if (p[j] !== p[4 + j]) order = p[j] < p[4 + j] ? -1 : 1;
    if (order === 0) order = srcPort <= dstPort ? -1 : 1;
    if (order > 0) {
      for (let j = 0; j < 4; j++) {
        const x = p[j];
        p[j] = p[4 + j];
        p[4 + j] = x;
      }
      p[8] = ((dstPort << 16) | srcPort) >>> 0;
    } else {
      p[8] = ((srcPort << 16) | dstPort) >>> 0;
    }
    this.srcIsA = order < 0;
    p[9] = ((v6 ? 6 : 4) << 8) | protocol;
    this.hashKey(v6);
  }

  /**
   * The probe's tag and buckets. An IPv4 key hashes only its four words that are not
   * always 0, with four products summed (they run side by side, where murmur3's rounds
   * wait on each other: 5 ns against 8 per packet), then murmur3's finaliser; peekBurst4()
   * computes the same inline. Each word is XORed with its own mix of the seed before its
   * multiply, so that flows an attacker picks do not land in the same buckets.
   */
  private hashKey(v6: boolean): void {
    const p = this.probe;
    let h: number;
    if (v6) {
      // murmur3's 32-bit mixing (Appleby), seeded per table
      h = this.seed;
      for (let j = 0; j < 10; j++) {
        h = Math.imul(h ^ p[j], M1);
        h = Math.imul((h << 15) | (h >>> 17), M2);
      }
      h = fmix(h);
    } else {
      h = fmix(Math.imul(p[0] ^ this.seedA, M1) + Math.imul(p[4] ^ this.seedB, M2) + Math.imul(p[8] ^ this.seedC, M3) + Math.imul(p[9] ^ this.seedD, M5));
    }
    this.probeTag = h | 1;
    this.bucket1 = h & this.bucketMask;
    this.bucket2 = (this.bucket1 ^ secondBucket(h)) & this.bucketMask;
  }

  private keyIn(base: number): boolean {
    const u = this.u32;
    const p = this.probe;
    return u[base + PORTS] === p[8] && u[base + PROTO] === p[9] &&
      u[base + ADDR] === p[0] && u[base + ADDR + 1] === p[1] && u[base + ADDR + 2] === p[2] && u[base + ADDR + 3] === p[3] &&
      u[base + ADDR + 4] === p[4] && u[base + ADDR + 5] === p[5] && u[base + ADDR + 6] === p[6] && u[base + ADDR + 7] === p[7];
  }

  private findIn(bucket: number, now: number): number {
    const u = this.u32;
    const i32 = this.i32;
    const tag = this.probeTag;
    const tags = HEADER_WORDS + bucket * BUCKET_SLOTS;
    const first = this.slotsBase + bucket * BUCKET_SLOTS * SLOT_WORDS;
    for (let s = 0; s < BUCKET_SLOTS; s++) {
      // a racy first look, to skip the others' slots without an atomic read
      if (i32[tags + s] !== tag) continue;
      const base = first + s * SLOT_WORDS;
      for (let tries = 0; tries < READ_TRIES; tries++) {
        // Atomics: the sequence around the reads detects a writer that changed the slot
        // meanwhile (we would read half of one flow and half of another).
        const seq = Atomics.load(i32, base + SEQ);
        if ((seq & 1) !== 0) continue;
        const match = i32[tags + s] === tag && u[base + EXPIRES] > now && this.keyIn(base);
        const status = u[base + STATUS];
        const mark = u[base + MARK];
        if (Atomics.load(i32, base + SEQ) !== seq) continue;
        if (!match) break;
        this.foundSeq = seq;
        this.foundStatus = status;
        this.foundMark = mark;
        return base;
      }
    }
    return -1;
  }

  /** The live entry of the key set by setKey(), as a handle for status()/update(), or -1. */
  lookup(now: number): number {
    const at = this.findIn(this.bucket1, now);
    return at >= 0 ? at : this.findIn(this.bucket2, now);
  }

  /**
   * lookup() without Atomics, for a burst: the slot of the key's live entry, whose
   * sequence, status and mark are then in foundSeq, foundStatus and foundMark, or MISS or
   * UNSURE. What it read counts only once settle() has run and stable(slot, foundSeq)
   * says the slot did not change meanwhile.
   */
  peek(now: number): number {
    const first = this.peekIn(this.bucket1, now);
    if (first >= 0) return first;
    const second = this.peekIn(this.bucket2, now);
    if (second >= 0) return second;
    return first === UNSURE || second === UNSURE ? UNSURE : MISS;
  }

  private peekIn(bucket: number, now: number): number {
    const u = this.u32;
    const tag = this.probeTag;
    const tags = HEADER_WORDS + bucket * BUCKET_SLOTS;
    const first = this.slotsBase + bucket * BUCKET_SLOTS * SLOT_WORDS;
    let result = MISS;
    for (let s = 0; s < BUCKET_SLOTS; s++) {
      if (this.i32[tags + s] !== tag) continue;
      const base = first + s * SLOT_WORDS;
      const seq = this.i32[base + SEQ];
      const expires = u[base + EXPIRES];
      if ((seq & 1) === 0 && expires > now && this.keyIn(base)) {
        this.foundSeq = seq;
        this.foundStatus = u[base + STATUS];
        this.foundMark = u[base + MARK];
        this.foundExpires = expires;
        return base;
      }
      // mid-write, expired, or a tag shared with another flow: lookup() looks again
      result = UNSURE;
    }
    return result;
  }

  /**
   * peek() for every IPv4 TCP, UDP and SCTP packet of a burst (parsed into `keys`, whose
   * `status` is `l4`: headers.ts's HEADERS_L4), in one loop over the burst. Per packet i, found[i] is what
   * peek() would return, or NOT_PEEKED for the packets it leaves to the caller; for a
   * slot, seqs, statuses, marks and expiries hold what the slot held, and fromA[i] is
   * srcIsA. The key, its hash and the scan of the two buckets inline, as setKey4() and
   * peek() do them. NB: setKey4() and peek() called per packet cost 40-45 ns (too big for
   * V8 to inline, each call loading the table's views anew); this loop, 28.
   */
  peekBurst4(
    keys: FlowKeys, status: Uint8Array, l4: number, count: number, now: number,
    found: Int32Array, seqs: Int32Array, statuses: Uint32Array, marks: Uint32Array, expiries: Uint32Array, fromA: Uint8Array,
  ): void {
    const version = keys.ipVersion;
    const protocols = keys.protocol;
    const src = keys.src4;
    const dst = keys.dst4;
    const srcPorts = keys.srcPort;
    const dstPorts = keys.dstPort;
    const u = this.u32;
    const i32 = this.i32;
    const mask = this.bucketMask;
    const slotsBase = this.slotsBase;
    const seedA = this.seedA;
    const seedB = this.seedB;
    const seedC = this.seedC;
    const seedD = this.seedD;
    for (let i = 0; i < count; i++) {
      const protocol = protocols[i];
      if (status[i] !== l4 || version[i] !== 4 || (protocol !== IPPROTO_UDP && protocol !== IPPROTO_TCP && protocol !== IPPROTO_SCTP)) {
        found[i] = NOT_PEEKED;
        continue;
      }
      // the key as setKey4() makes it
      const s = src[i];
      const t = dst[i];
      const sp = srcPorts[i];
      const dp = dstPorts[i];
      const srcIsA = s !== t ? s < t : sp <= dp;
      const a = srcIsA ? s : t;
      const b = srcIsA ? t : s;
      const ports = srcIsA ? ((sp << 16) | dp) >>> 0 : ((dp << 16) | sp) >>> 0;
      const word9 = (4 << 8) | protocol;
      // the hash as hashKey() makes it
      const h = fmix(Math.imul(a ^ seedA, M1) + Math.imul(b ^ seedB, M2) + Math.imul(ports ^ seedC, M3) + Math.imul(word9 ^ seedD, M5));
      const tag = h | 1;
      const bucket1 = h & mask;
      fromA[i] = srcIsA ? 1 : 0;
      // as peek(): the first bucket, then the second
      let result = MISS;
      for (let pass = 0; pass < 2 && result < 0; pass++) {
        const bucket = pass === 0 ? bucket1 : (bucket1 ^ secondBucket(h)) & mask;
        const tags = HEADER_WORDS + bucket * BUCKET_SLOTS;
        const first = slotsBase + bucket * BUCKET_SLOTS * SLOT_WORDS;
        for (let j = 0; j < BUCKET_SLOTS; j++) {
          if (i32[tags + j] !== tag) continue;
          const base = first + j * SLOT_WORDS;
          const seq = i32[base + SEQ];
          const expires = u[base + EXPIRES];
          // an IPv4 entry's other address words are 0 (fill() writes setKey4()'s probe)
          if ((seq & 1) === 0 && u[base + PROTO] === word9 && u[base + PORTS] === ports && u[base + ADDR] === a && u[base + ADDR + 4] === b && expires > now) {
            seqs[i] = seq;
            statuses[i] = u[base + STATUS];
            marks[i] = u[base + MARK];
            expiries[i] = expires;
            result = base;
            break;
          }
          result = UNSURE;
        }
      }
      found[i] = result;
    }
  }

  /**
   * Notes in the flow cache packet i's flow (IPv4 TCP, UDP or SCTP, parsed into `keys`),
   * whose entry a checked read found in `slot`, with the sequence and the words it read
   * then. Entered only when a packet of the flow in that direction would change nothing
   * but the expiry (see FlowCache); else the entry for its key is emptied.
   */
  remember(keys: FlowKeys, i: number, slot: number, seq: number, status: number, mark: number, expires: number, srcIsA: boolean, now: number): void {
    const protocol = keys.protocol[i];
    const fromOriginator = ((status & ORIGINATOR_IS_A) !== 0) === srcIsA;
    const steady = (fromOriginator || (status & REPLIED) !== 0) && (protocol !== IPPROTO_TCP || (status & STATE_MASK) === TCP_ESTABLISHED);
    this.cache.fill(keys.src4, keys.dst4, i, keys.srcPort[i], keys.dstPort[i], protocol, slot, seq, mark, expires, steady ? this.timeoutOf(protocol, status) : 0, now);
  }

  /**
   * Between a burst's peek()s and its stable() checks. The slot words were read with plain
   * loads, each sequence before the words it guards (a branch on it comes first), and
   * stable() reads the sequence again after them. x86-64 (the only target: src/sys is
   * written for its ABI) keeps loads in program order (Intel SDM vol. 3A, 9.2.2: "Reads
   * are not reordered with other reads"), and a writer takes the sequence (a locked
   * CAS) before it writes a word: so a slot whose sequence is even and the same both
   * times was not written in between, as with Atomics. What the plain loads lack is a
   * promise from the JIT: it may take the second read of a sequence word for the first
   * and drop it.
   */
  settle(): void {
    // Atomics: a call the JIT cannot see through, between the reads of the burst's slots
    // and the second reads of their sequences, so that no load is merged or moved across
    // it (one per burst, where a lookup() pays two per packet).
    Atomics.load(this.i32, H_MAGIC);
  }

  /** After settle(): whether the slot a peek() found still has the sequence it had then. */
  stable(entry: number, seq: number): boolean {
    return this.i32[entry + SEQ] === seq;
  }

  status(entry: number): number {
    return this.u32[entry + STATUS];
  }

  mark(entry: number): number {
    return this.u32[entry + MARK];
  }

  /** Whether the packet at hand goes the way the flow was opened. */
  fromOriginator(entry: number): boolean {
    return ((this.u32[entry + STATUS] & ORIGINATOR_IS_A) !== 0) === this.srcIsA;
  }

  private timeout(status: number): number {
    return this.timeoutOf(this.probe[9] & 0xff, status);
  }

  private timeoutOf(protocol: number, status: number): number {
    const t = this.timeouts;
    if (protocol === IPPROTO_TCP) {
      const state = status & STATE_MASK;
      if (state === TCP_ESTABLISHED) return t.tcpEstablished;
      if (state === TCP_TIME_WAIT || state === TCP_CLOSED) return t.tcpClosed;
      return t.tcpTransitory;
    }
    if (protocol === IPPROTO_UDP) return (status & REPLIED) !== 0 ? t.udpStream : t.udp;
    if (protocol === IPPROTO_ICMP || protocol === IPPROTO_ICMPV6) return t.icmp;
    return t.other;
  }

  /** Whether a packet whose source is endpoint A (srcIsA) or B comes from the side that opened the entry of `status`. */
  static fromOriginator(status: number, srcIsA: boolean): boolean {
    return ((status & ORIGINATOR_IS_A) !== 0) === srcIsA;
  }

  /** A TCP entry that a SYN would open anew (the old connection closed): the caller asks the rules. */
  static closed(status: number): boolean {
    const state = status & STATE_MASK;
    return state === TCP_TIME_WAIT || state === TCP_CLOSED;
  }

  /**
   * A packet of the flow passed (tcpFlags for TCP, else 0): moves the TCP state, notes a
   * reply, and pushes the expiry on. Writes only when something changed (at most about once
   * a second for a steady flow), and gives up if another PMD wrote the slot since the
   * lookup: its packet refreshed the entry too, and a lost state change is caught up by the
   * next packet that carries it (at worst the entry keeps a longer timeout).
   */
  update(entry: number, tcpFlags: number, now: number): void {
    this.refresh(entry, this.foundSeq, this.foundStatus, this.srcIsA, tcpFlags, now);
  }

  /**
   * update() for a slot found by peek(): `seq` and `old` (its status) as read then, and
   * whether the packet comes from endpoint A. The protocol is the slot's (its key is the
   * packet's: the sequence was checked). True when the slot needed no write.
   */
  refresh(entry: number, seq: number, old: number, srcIsA: boolean, tcpFlags: number, now: number): boolean {
    const u = this.u32;
    const fromOriginator = ((old & ORIGINATOR_IS_A) !== 0) === srcIsA;
    let status = fromOriginator ? old : old | REPLIED;
    const protocol = u[entry + PROTO] & 0xff;
    if (protocol === IPPROTO_TCP) status = nextTcpStatus(status, tcpFlags, fromOriginator);
    const expires = now + this.timeoutOf(protocol, status);
    if (status === old && expires === u[entry + EXPIRES]) return true;
    // Atomics: take the slot only if no one wrote it since our lookup read it (a CAS from
    // that sequence), so we never refresh a slot that was meanwhile given to another flow.
    // A plain store of the expiry alone would race with a writer that closes the entry (a
    // reset on another PMD): a closed connection could live on for tcpEstablished. This
    // runs about once a second per flow, not per packet.
    if (Atomics.compareExchange(this.i32, entry + SEQ, seq, seq + 1) !== seq) return false;
    if (status !== old) this.noteChange();
    u[entry + STATUS] = status;
    u[entry + EXPIRES] = expires;
    // Atomics: publishes the words above to readers, who check the sequence.
    Atomics.store(this.i32, entry + SEQ, seq + 2);
    return false;
  }

  /** A closed TCP entry opened again by a SYN from `port` the rules let in: the entry starts over, as that port's. */
  reopen(entry: number, tcpFlags: number, mark: number, now: number, port: number): boolean {
    const seq = this.foundSeq;
    // Atomics: as in update(): only the slot as our lookup saw it.
    if (Atomics.compareExchange(this.i32, entry + SEQ, seq, seq + 1) !== seq) return false;
    this.noteChange();
    this.disown(entry);
    this.fill(entry, tcpFlags, mark, now, port);
    Atomics.store(this.i32, entry + SEQ, seq + 2);
    return true;
  }

  /** The entry at `entry` (held: its sequence odd) no longer counts for the port that opened it. */
  private disown(entry: number): void {
    const origin = this.u32[entry + ORIGIN];
    if (origin > 0 && origin <= PORT_SLOTS) Atomics.sub(this.i32, H_PORT_ENTRIES + origin - 1, 1);
    this.u32[entry + ORIGIN] = 0;
  }

  /** Writes the key's entry, opened from `port`, at `entry` (held, and owned by no port). */
  private fill(entry: number, tcpFlags: number, mark: number, now: number, port: number): void {
    const u = this.u32;
    let status = this.srcIsA ? ORIGINATOR_IS_A : 0;
    if ((this.probe[9] & 0xff) === IPPROTO_TCP) {
      // A SYN opens a handshake; any other segment is a connection already under way (one
      // that began before the rule allowed it, or before a restart): taken up as
      // established, as Linux does with nf_conntrack_tcp_loose.
      status |= (tcpFlags & (SYN | ACK)) === SYN ? TCP_SYN_SENT : TCP_ESTABLISHED;
    }
    const p = this.probe;
    for (let j = 0; j < 8; j++) u[entry + ADDR + j] = p[j];
    u[entry + PORTS] = p[8];
    u[entry + PROTO] = p[9];
    u[entry + STATUS] = status;
    u[entry + MARK] = mark;
    u[entry + EXPIRES] = now + this.timeout(status);
    u[entry + ORIGIN] = port + 1;
    Atomics.add(this.i32, H_PORT_ENTRIES + port, 1);
    u[HEADER_WORDS + ((entry - this.slotsBase) >>> 4)] = this.probeTag;
  }

  private insertIn(bucket: number, tcpFlags: number, mark: number, now: number, port: number): boolean {
    const u = this.u32;
    const i32 = this.i32;
    const tags = HEADER_WORDS + bucket * BUCKET_SLOTS;
    const first = this.slotsBase + bucket * BUCKET_SLOTS * SLOT_WORDS;
    for (let s = 0; s < BUCKET_SLOTS; s++) {
      const base = first + s * SLOT_WORDS;
      if (u[tags + s] !== 0 && u[base + EXPIRES] > now) continue;
      const seq = Atomics.load(i32, base + SEQ);
      if ((seq & 1) !== 0 || (u[tags + s] !== 0 && u[base + EXPIRES] > now)) continue;
      // An empty slot was no flow's since its entry was ended (a change then).
      const ended = u[tags + s] !== 0;
      // Atomics: two PMDs may pick the same free slot for two new flows; the CAS from the
      // sequence we read lets one of them have it (and fails if the slot was refreshed or
      // filled since we looked), the other tries the next slot.
      if (Atomics.compareExchange(i32, base + SEQ, seq, seq + 1) !== seq) continue;
      if (ended) {
        this.noteChange();
        this.disown(base);
      }
      this.fill(base, tcpFlags, mark, now, port);
      Atomics.store(i32, base + SEQ, seq + 2);
      return true;
    }
    return false;
  }

  /**
   * A new entry for the key set by setKey(), opened by this packet, from port slot `port`:
   * INSERTED, or TABLE_FULL when both of its buckets are full of live flows, or PORT_FULL
   * when the port's flows hold maxFlowsPerPort entries (the packet is dropped then). Two
   * PMDs that see the first packets of one flow at once may both insert it: the lookup
   * finds either, and the spare one expires unused. (Two PMDs may also both pass the
   * port's limit at once: it is exceeded by at most one entry per PMD.)
   */
  insert(tcpFlags: number, mark: number, now: number, port: number): number {
    if (Atomics.load(this.i32, H_PORT_ENTRIES + port) >= this.maxPerPort) return PORT_FULL;
    // The emptier bucket first: with the fuller one first, buckets fill in turn and the
    // table refused flows from 75 % full; chosen by tags alone (an expired entry not swept
    // yet counts as taken), so that the choice reads no slot.
    const first = this.used(this.bucket1) <= this.used(this.bucket2) ? this.bucket1 : this.bucket2;
    const second = first === this.bucket1 ? this.bucket2 : this.bucket1;
    return this.insertIn(first, tcpFlags, mark, now, port) || this.insertIn(second, tcpFlags, mark, now, port) ? INSERTED : TABLE_FULL;
  }

  private used(bucket: number): number {
    const u = this.u32;
    const tags = HEADER_WORDS + bucket * BUCKET_SLOTS;
    let n = 0;
    for (let s = 0; s < BUCKET_SLOTS; s++) if (u[tags + s] !== 0) n++;
    return n;
  }

  /**
   * Frees the expired entries of the next AGE_SLICE slots of this PMD's share (each PMD
   * sweeps its own share, so no two sweep one slot). Not needed for correctness (lookups
   * skip, and inserts reuse, expired slots): it keeps the table's content true for a count.
   * A slot found mid-write twice, a sweep apart (seconds, where a write takes nanoseconds),
   * belongs to a writer that died in the middle (a PMD terminated by the watchdog): it is
   * released and emptied, else no one could ever write it again. True when the slice
   * ended the sweep of this PMD's share.
   */
  age(now: number): boolean {
    const u = this.u32;
    const i32 = this.i32;
    const end = Math.min(this.sweepAt + AGE_SLICE, this.sweepTo);
    for (let s = this.sweepAt; s < end; s++) {
      const base = this.slotsBase + s * SLOT_WORDS;
      const seq = Atomics.load(i32, base + SEQ);
      if ((seq & 1) !== 0) {
        this.suspect(s, seq);
        continue;
      }
      if (u[HEADER_WORDS + s] === 0 || u[base + EXPIRES] > now) continue;
      // Atomics: as in insertIn(): the slot is emptied only if no one wrote it since we read it
      if (Atomics.compareExchange(i32, base + SEQ, seq, seq + 1) !== seq) continue;
      this.noteChange();
      this.disown(base);
      u[HEADER_WORDS + s] = 0;
      Atomics.store(i32, base + SEQ, seq + 2);
    }
    const done = end >= this.sweepTo;
    this.sweepAt = done ? this.sweepFrom : end;
    return done;
  }

  /** Once a write that is more than a refresh of an expiry holds its slot (H_CHANGES). */
  private noteChange(): void {
    // Atomics: the count moves after the slot's sequence turned odd. A flow cache that
    // reads the new count then finds the slot's sequence moved too; one that read the old
    // count, and the slot before the write, reads the new count at its next burst. Moved
    // before the sequence, a cache could read the new count, then the slot before the
    // write began, and serve the old entry in the new epoch until the second ends.
    Atomics.add(this.i32, H_CHANGES, 1);
  }

  private suspect(slot: number, seq: number): void {
    const slots = this.suspectSlot;
    let free = -1;
    for (let k = 0; k < SUSPECTS; k++) {
      if (slots[k] === slot) {
        const base = this.slotsBase + slot * SLOT_WORDS;
        if (this.suspectSeq[k] === seq) {
          // Atomics: takes the dead writer's hold over (odd to the next odd) only if it is
          // still the same one, empties the slot, and releases it.
          if (Atomics.compareExchange(this.i32, base + SEQ, seq, seq + 2) === seq) {
            this.noteChange();
            // Its count stays as the writer left it: off by one at most, for a writer that died.
            if (this.u32[HEADER_WORDS + slot] !== 0) this.disown(base);
            this.u32[HEADER_WORDS + slot] = 0;
            Atomics.store(this.i32, base + SEQ, seq + 3);
          }
        }
        slots[k] = -1;
        return;
      }
      if (slots[k] < 0 && free < 0) free = k;
    }
    if (free >= 0) {
      slots[free] = slot;
      this.suspectSeq[free] = seq;
    }
  }
}

/** murmur3's 32-bit finaliser: every bit of the result depends on every bit of h. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, M3);
  h ^= h >>> 13;
  h = Math.imul(h, M4);
  return h ^ (h >>> 16);
}

/**
 * What the second bucket is XORed with: the hash mixed again (murmur3's finaliser), so
 * that it depends on every bit of the hash, not on the low bits that chose the first (NB:
 * a plain multiply did); odd, so the two buckets differ.
 */
function secondBucket(h: number): number {
  return fmix(h ^ 0x9e3779b9) | 1;
}

/** The TCP status after a segment with `flags` from one side (RST, SYN-ACK, handshake ACK, FINs). */
export function nextTcpStatus(status: number, flags: number, fromOriginator: boolean): number {
  const state = status & STATE_MASK;
  if ((flags & RST) !== 0) return (status & ~STATE_MASK) | TCP_CLOSED;
  if (state === TCP_TIME_WAIT || state === TCP_CLOSED) return status;
  let next = state;
  if (state === TCP_SYN_SENT && !fromOriginator && (flags & (SYN | ACK)) === (SYN | ACK)) next = TCP_SYN_RECV;
  else if (state === TCP_SYN_RECV && fromOriginator && (flags & (SYN | ACK)) === ACK) next = TCP_ESTABLISHED;
  let seen = status & (FIN_FROM_ORIGINATOR | FIN_FROM_REPLIER);
  if ((flags & FIN) !== 0 && state !== TCP_SYN_SENT) {
    seen |= fromOriginator ? FIN_FROM_ORIGINATOR : FIN_FROM_REPLIER;
    next = seen === (FIN_FROM_ORIGINATOR | FIN_FROM_REPLIER) ? TCP_TIME_WAIT : TCP_FIN_WAIT;
  }
  return (status & ~(STATE_MASK | FIN_FROM_ORIGINATOR | FIN_FROM_REPLIER)) | seen | next;
}
