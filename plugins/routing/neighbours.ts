// The neighbour table (ARP and NDP, RFC 826 / RFC 4861 7.3): next-hop addresses to MACs,
// per interface, with states. One table in shared memory for all PMDs: an answer that
// arrives on one PMD resolves the next hop for every PMD, and a restarted PMD finds every
// entry. Open addressing over a window of PROBE_WINDOW slots (a bounded cost per lookup
// whatever a flood of addresses does), each slot guarded by a seqlock whose odd values
// also serve as the writers' lock.
//
// Slot layout, 16 int32 words (64 bytes): seq, state, interface, family, address (4 words,
// IPv4 in the first), MAC high 16 bits, MAC low 32 bits, port (where the MAC was seen: a
// bridge member), probes sent and the entry's owner, then two float64: when the entry was
// last confirmed and when it was last probed (ms, Date.now()).
//
// Every entry is charged to a port: while it is being resolved, the port whose packet asked
// for it; once known, the port its MAC was seen on (where the neighbour is; the config's
// port for a static one). A port holds at most its share of the table: a guest that floods
// next hops that never answer, or ARP from forged senders, keeps no other port's traffic
// from resolving, whichever interface the addresses are on and whoever else shares its
// bridge; and a port whose packets reach many neighbours elsewhere (an uplink's) is charged
// only for those it is still asking for.

import { PORT_SLOTS } from '../../src/pipeline/api.ts';

export const EMPTY = 0;
/** being resolved: requests sent, no answer yet */
export const INCOMPLETE = 1;
/** confirmed less than REACHABLE_MS ago */
export const REACHABLE = 2;
/** older than that: still used, confirmed again by a unicast probe */
export const STALE = 3;
/** did not answer MAX_PROBES requests: packets to it get host unreachable for a while */
export const FAILED = 4;
/** from the config: never aged, never overwritten */
export const STATIC = 5;
export const STATE_NAMES = ['empty', 'incomplete', 'reachable', 'stale', 'failed', 'static'] as const;

/** RFC 4861 10: REACHABLE_TIME 30 s, RETRANS_TIMER 1 s, MAX_MULTICAST_SOLICIT 3 */
export const REACHABLE_MS = 30_000;
export const RETRANS_MS = 1000;
export const MAX_PROBES = 3;
/** how long a failed entry no packet asks for again is kept (then its slot is free) */
export const FAILED_HOLD_MS = 20_000;
/** entries not confirmed for this long are removed (Linux gc_stale_time: 60 s) */
export const GC_STALE_MS = 60_000;

const WORDS = 16;
export const NEIGHBOUR_BYTES = WORDS * 4;
const SEQ = 0;
const STATE = 1;
const IFACE = 2;
const FAMILY = 3;
const ADDR = 4;
const MAC_HI = 8;
const MAC_LO = 9;
const PORT = 10;
/** low 16 bits: requests sent; high 16: the owner's port + 1 (0: none) */
const PROBES = 11;
const PROBES_MASK = 0xffff;
const OWNER_SHIFT = 16;
/** float64 indices (in 8-byte units) of a slot's times */
const CONFIRMED_F64 = 6;
const PROBED_F64 = 7;
const PROBE_WINDOW = 16;
/** a writer waiting this many times for a slot gives up (another PMD died holding it) */
const LOCK_SPINS = 1000;

/** After the slots: 256 words of counts, among them per port how many slots it owns (its share is capacity / ports). */
const COUNT_WORDS = 256;
const COUNTS_BYTES = COUNT_WORDS * 4;
/**
 * Where the ports' counts start among those words: after the first 64, where a table an
 * earlier version of the plugin filled counted per interface (an upgrade keeps the table).
 */
const OWNER_COUNTS_AT = 64;
/** ports a table counts (their counts end within the 256 words) */
const MAX_OWNERS = PORT_SLOTS;
/** Among the counts' words, after the ports': the table's hash seed (0: none, see home()). */
const SEED_AT = OWNER_COUNTS_AT + MAX_OWNERS;

/** A port an entry can be charged to, or -1 (none: no port's share is checked or counted). */
function chargeable(port: number): number {
  return port >= 0 && port < MAX_OWNERS ? port : -1;
}

export function neighbourTableBytes(capacity: number): number {
  return capacity * NEIGHBOUR_BYTES + COUNTS_BYTES;
}

export class NeighbourTable {
  readonly capacity: number;
  private readonly words: Int32Array;
  private readonly times: Float64Array;
  private readonly mask: number;
  // What find() read, consistent under the slot's seqlock.
  foundState = EMPTY;
  foundMacHi = 0;
  foundMacLo = 0;
  foundPort = -1;
  foundProbes = 0;
  foundConfirmed = 0;
  foundProbed = 0;
  /** sweep(): slots seen locked by a writer, to free those a dead PMD left locked (made by the first sweep: a reader of the table sweeps nothing) */
  private lockedSeen: Int32Array | null = null;

  /** slots owned per port (shared by the PMDs): a flood from one port cannot take the others' share */
  private readonly held: Int32Array;
  /** the most slots a port owns (a static entry past it is refused; a port at it takes only its own slots) */
  readonly share: number;
  /** the table's hash seed, as seedIfNew() wrote it when the table was made */
  private readonly counts: Int32Array;
  private seed: number;

  /**
   * clock[0]: the time (ms) entries are confirmed, probed, claimed and aged at, written by
   * the owner (the routing stage, once a burst). Read here, not passed: a time in ms is a
   * heap number at every call V8 does not inline, and these run for every ARP or NDP packet
   * of a flood.
   */
  readonly clock: Float64Array;

  /** `portCount`: the ports of the topology, among which the table is shared; `clock`: see `clock`. */
  constructor(buffer: ArrayBufferLike, portCount: number, clock: Float64Array = new Float64Array(1)) {
    this.clock = clock;
    this.capacity = (buffer.byteLength - COUNTS_BYTES) / NEIGHBOUR_BYTES;
    if ((this.capacity & (this.capacity - 1)) !== 0) throw new RangeError('the neighbour table capacity must be a power of 2');
    if (portCount > MAX_OWNERS) throw new RangeError(`at most ${MAX_OWNERS} ports`);
    this.words = new Int32Array(buffer, 0, this.capacity * WORDS);
    this.times = new Float64Array(buffer, 0, this.capacity * 8);
    this.held = new Int32Array(buffer, this.capacity * NEIGHBOUR_BYTES + OWNER_COUNTS_AT * 4, MAX_OWNERS);
    this.share = Math.max(16, Math.floor(this.capacity / Math.max(1, portCount)));
    this.mask = this.capacity - 1;
    this.counts = new Int32Array(buffer, this.capacity * NEIGHBOUR_BYTES, COUNT_WORDS);
    this.seed = Atomics.load(this.counts, SEED_AT);
  }

  /**
   * Gives a table with no entry yet a random hash seed, once, before any entry is written
   * (the control plane, as it prepares the table; the PMDs read the seed as they open it).
   * A table kept from a version without seeds, entries in it, keeps hashing without one.
   */
  seedIfNew(): void {
    if (this.seed !== 0) return;
    const w = this.words;
    for (let slot = 0; slot < this.capacity; slot++) if (w[slot * WORDS + STATE] !== EMPTY) return;
    const seed = crypto.getRandomValues(new Int32Array(1))[0] | 1;
    Atomics.compareExchange(this.counts, SEED_AT, 0, seed);
    this.seed = Atomics.load(this.counts, SEED_AT);
  }

  /**
   * The first slot of an address's window. Seeded, the slot is the seeded mix of the whole
   * hash: without it a guest could work out offline which addresses share the window of
   * another port's next hop (the hash is linear enough that the rest of the address cancels
   * out), and keep that window full.
   */
  private home(iface: number, a0: number, a1: number, a2: number, a3: number): number {
    let h = Math.imul(a0 ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(a1 + iface, 0xc2b2ae35);
    h = Math.imul(h ^ (h >>> 15) ^ a2, 0x27d4eb2f) ^ Math.imul(a3, 0x165667b1);
    if (this.seed === 0) return (h ^ (h >>> 13)) & this.mask;
    h = Math.imul(h ^ this.seed, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) & this.mask;
  }

  private matches(at: number, iface: number, family: number, a0: number, a1: number, a2: number, a3: number): boolean {
    const w = this.words;
    return w[at + IFACE] === iface && w[at + FAMILY] === family && w[at + ADDR] === a0 && w[at + ADDR + 1] === a1 && w[at + ADDR + 2] === a2 && w[at + ADDR + 3] === a3;
  }

  /** The slot of an address, with its fields in found*, or -1. */
  find(iface: number, family: number, a0: number, a1: number, a2: number, a3: number): number {
    const w = this.words;
    const home = this.home(iface, a0, a1, a2, a3);
    for (let p = 0; p < PROBE_WINDOW; p++) {
      const slot = (home + p) & this.mask;
      const at = slot * WORDS;
      // Seqlock read: a writer on another PMD makes seq odd while it writes; a read that
      // saw an odd or changed seq may be torn, and is taken as a miss for this packet.
      const seq = Atomics.load(w, at + SEQ);
      if ((seq & 1) === 1) continue;
      const state = w[at + STATE];
      if (state === EMPTY || !this.matches(at, iface, family, a0, a1, a2, a3)) continue;
      this.foundState = state;
      this.foundMacHi = w[at + MAC_HI];
      this.foundMacLo = w[at + MAC_LO];
      this.foundPort = w[at + PORT];
      this.foundProbes = w[at + PROBES] & PROBES_MASK;
      this.foundConfirmed = this.times[slot * 8 + CONFIRMED_F64];
      this.foundProbed = this.times[slot * 8 + PROBED_F64];
      if (Atomics.load(w, at + SEQ) !== seq) continue;
      return slot;
    }
    return -1;
  }

  private lock(slot: number): number {
    const w = this.words;
    const at = slot * WORDS + SEQ;
    for (let spin = 0; spin < LOCK_SPINS; spin++) {
      const seq = Atomics.load(w, at);
      // Even: free. The exchange makes it odd: readers see a write in progress, and no
      // other writer (on another PMD) gets the slot until it is even again.
      if ((seq & 1) === 0 && Atomics.compareExchange(w, at, seq, seq + 1) === seq) return seq + 1;
    }
    return -1;
  }

  private unlock(slot: number, seq: number): void {
    Atomics.store(this.words, slot * WORDS + SEQ, seq + 1);
  }

  /**
   * Records what an address resolves to (an answer, or a static entry), creating the
   * entry if `create`; the entry is `port`'s from then on (where the MAC was seen: an entry
   * moves there from the port that asked for it), unless that port holds its share: it
   * then stays charged where it was. Else one port's guest, asking for thousands of
   * addresses another port of its own answers, filled the table through that port, its own
   * share emptied by each answer. A static entry is never changed but by another static one.
   * Returns the slot, or -1 (not there and not created, or no room in its window or in the
   * port's share).
   */
  confirm(iface: number, family: number, a0: number, a1: number, a2: number, a3: number, macHi: number, macLo: number, port: number, state: number, create: boolean): number {
    let slot = this.find(iface, family, a0, a1, a2, a3);
    if (slot >= 0 && this.foundState === STATIC && state !== STATIC) return slot;
    const existed = slot >= 0;
    if (!existed) {
      if (!create) return -1;
      slot = this.claim(port, iface, a0, a1, a2, a3);
      if (slot < 0) return -1;
    }
    const seq = this.lock(slot);
    if (seq < 0) return -1;
    const w = this.words;
    const at = slot * WORDS;
    const mine = chargeable(port);
    const owner = existed && w[at + STATE] !== EMPTY && mine >= 0 && this.ownerAt(at) !== mine && Atomics.load(this.held, mine) >= this.share ? this.ownerAt(at) : port;
    this.setKey(at, iface, family, a0, a1, a2, a3, owner);
    w[at + MAC_HI] = macHi;
    w[at + MAC_LO] = macLo;
    w[at + PORT] = port;
    w[at + STATE] = state;
    this.times[slot * 8 + CONFIRMED_F64] = this.clock[0];
    this.unlock(slot, seq);
    return slot;
  }

  /**
   * Starts resolving an address for a packet from port `owner`: an INCOMPLETE entry, the
   * port's. Returns its slot or -1 (no room in its window or in the port's share).
   */
  startResolving(iface: number, family: number, a0: number, a1: number, a2: number, a3: number, owner: number): number {
    const existing = this.find(iface, family, a0, a1, a2, a3);
    if (existing >= 0) return existing;
    const slot = this.claim(owner, iface, a0, a1, a2, a3);
    if (slot < 0) return -1;
    const seq = this.lock(slot);
    if (seq < 0) return -1;
    const w = this.words;
    const at = slot * WORDS;
    this.setKey(at, iface, family, a0, a1, a2, a3, owner);
    w[at + MAC_HI] = 0;
    w[at + MAC_LO] = 0;
    w[at + PORT] = -1;
    w[at + STATE] = INCOMPLETE;
    this.times[slot * 8 + CONFIRMED_F64] = this.clock[0];
    this.times[slot * 8 + PROBED_F64] = 0;
    this.unlock(slot, seq);
    return slot;
  }

  /**
   * Writes a slot's key and owner, no requests sent yet (the writer holds its lock), moving
   * the slot between ports' shares. `owner` -1: no port's.
   */
  private setKey(at: number, iface: number, family: number, a0: number, a1: number, a2: number, a3: number, owner: number): void {
    const w = this.words;
    const mine = chargeable(owner);
    const before = w[at + STATE] === EMPTY ? -1 : this.ownerAt(at);
    if (before !== mine) {
      if (before >= 0) Atomics.sub(this.held, before, 1);
      if (mine >= 0) Atomics.add(this.held, mine, 1);
    }
    w[at + PROBES] = (mine + 1) << OWNER_SHIFT;
    w[at + IFACE] = iface;
    w[at + FAMILY] = family;
    w[at + ADDR] = a0;
    w[at + ADDR + 1] = a1;
    w[at + ADDR + 2] = a2;
    w[at + ADDR + 3] = a3;
  }

  /** The port a slot's entry is charged to, or -1 (none: a slot an earlier version wrote). */
  private ownerAt(at: number): number {
    return chargeable((this.words[at + PROBES] >>> OWNER_SHIFT) - 1);
  }

  /** The slot at `at` (locked) leaves its owner's share. */
  private release(at: number): void {
    const owner = this.ownerAt(at);
    if (owner >= 0) Atomics.sub(this.held, owner, 1);
  }

  /** Slots a port owns now. */
  heldBy(port: number): number {
    return Atomics.load(this.held, port);
  }

  /**
   * A free slot in the address's window for port `owner`: an empty one, else the one least
   * recently confirmed among those that are not static and not being resolved right now.
   */
  private claim(owner: number, iface: number, a0: number, a1: number, a2: number, a3: number): number {
    const now = this.clock[0];
    const w = this.words;
    const home = this.home(iface, a0, a1, a2, a3);
    // A port at its share takes only slots it owns itself.
    const mine = chargeable(owner);
    const full = mine >= 0 && Atomics.load(this.held, mine) >= this.share;
    let victim = -1;
    let oldest = Infinity;
    for (let p = 0; p < PROBE_WINDOW; p++) {
      const slot = (home + p) & this.mask;
      const state = w[slot * WORDS + STATE];
      if (state === EMPTY) {
        if (full) continue;
        return slot;
      }
      if (state === STATIC || (full && this.ownerAt(slot * WORDS) !== mine)) continue;
      const confirmed = this.times[slot * 8 + CONFIRMED_F64];
      // A flood of unresolvable addresses must not evict the neighbours in use.
      if (state === INCOMPLETE && now - confirmed < MAX_PROBES * RETRANS_MS) continue;
      if (state === REACHABLE && now - confirmed < REACHABLE_MS) continue;
      if (confirmed < oldest) {
        oldest = confirmed;
        victim = slot;
      }
    }
    return victim;
  }

  /** Counts a request sent for the entry in `slot`; returns the probes sent so far. */
  probed(slot: number): number {
    const seq = this.lock(slot);
    if (seq < 0) return MAX_PROBES;
    const at = slot * WORDS;
    // Counted up to the mask, never into the owner's bits (an entry fails after MAX_PROBES,
    // and its count starts again whenever it is confirmed or changes state).
    const word = this.words[at + PROBES];
    const probes = (word & PROBES_MASK) === PROBES_MASK ? PROBES_MASK : (word & PROBES_MASK) + 1;
    this.words[at + PROBES] = (word & ~PROBES_MASK) | probes;
    this.times[slot * 8 + PROBED_F64] = this.clock[0];
    this.unlock(slot, seq);
    return probes;
  }

  /** Removes an entry, static or not (a static one its source withdrew); false if there is none. */
  remove(iface: number, family: number, a0: number, a1: number, a2: number, a3: number): boolean {
    const slot = this.find(iface, family, a0, a1, a2, a3);
    if (slot < 0) return false;
    const seq = this.lock(slot);
    if (seq < 0) return false;
    const at = slot * WORDS;
    if (this.words[at + STATE] !== EMPTY && this.matches(at, iface, family, a0, a1, a2, a3)) {
      this.release(at);
      this.words[at + STATE] = EMPTY;
    }
    this.unlock(slot, seq);
    return true;
  }

  setState(slot: number, state: number): void {
    const seq = this.lock(slot);
    if (seq < 0) return;
    const at = slot * WORDS;
    if (this.words[at + STATE] !== STATIC) {
      this.words[at + STATE] = state;
      this.words[at + PROBES] &= ~PROBES_MASK;
      this.times[slot * 8 + CONFIRMED_F64] = this.clock[0];
    }
    this.unlock(slot, seq);
  }

  /**
   * Ages `count` slots from `from`: removes entries unconfirmed for GC_STALE_MS and failed
   * ones past their hold; frees slots a dead writer left locked (seen locked with the
   * same seq on two sweeps). Returns the next slot to sweep.
   */
  sweep(from: number, count: number): number {
    const now = this.clock[0];
    const w = this.words;
    const lockedSeen = (this.lockedSeen ??= new Int32Array(this.capacity));
    for (let i = 0; i < count; i++) {
      const slot = (from + i) & this.mask;
      const at = slot * WORDS;
      const seq = Atomics.load(w, at + SEQ);
      if ((seq & 1) === 1) {
        if (lockedSeen[slot] === seq) {
          if (w[at + STATE] !== EMPTY) this.release(at);
          w[at + STATE] = EMPTY;
          // Only if still the same: a live writer would have moved on.
          Atomics.compareExchange(w, at + SEQ, seq, seq + 1);
        }
        lockedSeen[slot] = seq;
        continue;
      }
      lockedSeen[slot] = 0;
      const state = w[at + STATE];
      if (state === EMPTY || state === STATIC) continue;
      const age = now - this.times[slot * 8 + CONFIRMED_F64];
      const expired = state === FAILED ? age > FAILED_HOLD_MS : state === INCOMPLETE ? age > MAX_PROBES * RETRANS_MS + FAILED_HOLD_MS : age > GC_STALE_MS + REACHABLE_MS;
      if (!expired) continue;
      const locked = this.lock(slot);
      if (locked < 0) continue;
      this.release(at);
      w[at + STATE] = EMPTY;
      this.unlock(slot, locked);
    }
    return (from + count) & this.mask;
  }

  /** How many entries are in each state (by STATE_NAMES' index): /metrics, without an object per entry. */
  countByState(): number[] {
    const counts = STATE_NAMES.map(() => 0);
    const w = this.words;
    for (let at = STATE; at < this.capacity * WORDS; at += WORDS) {
      const state = w[at];
      if (state > EMPTY && state < counts.length) counts[state]++;
    }
    return counts;
  }

  /** Every entry, for the admin endpoint and tests (allocates: not for the data path). */
  entries(): { iface: number; family: number; address: number[]; macHi: number; macLo: number; port: number; owner: number; state: string; confirmed: number }[] {
    const out = [];
    const w = this.words;
    for (let slot = 0; slot < this.capacity; slot++) {
      const at = slot * WORDS;
      if (w[at + STATE] === EMPTY) continue;
      out.push({
        iface: w[at + IFACE],
        family: w[at + FAMILY],
        address: [w[at + ADDR] >>> 0, w[at + ADDR + 1] >>> 0, w[at + ADDR + 2] >>> 0, w[at + ADDR + 3] >>> 0],
        macHi: w[at + MAC_HI],
        macLo: w[at + MAC_LO],
        port: w[at + PORT],
        owner: this.ownerAt(at),
        state: STATE_NAMES[w[at + STATE]] ?? 'unknown',
        confirmed: this.times[slot * 8 + CONFIRMED_F64],
      });
    }
    return out;
  }
}
