// A bridge's MAC learning table: open addressing over typed arrays in a shared buffer
// (no allocation when learning or looking up), entries that age out, static entries that
// never move. Each PMD learns into a table of its own (one writer, no locks); the others
// read it through a per-slot sequence number, so that a half-written entry is never used.
//
// A guest may send frames from as many source MACs as it likes, so the table is built to
// stay useful under a flood: every operation examines a fixed window of slots (never the
// whole table), each port learns at most its limit of MACs, and when a window is full a
// new MAC evicts an old one instead of being refused.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { sharedBuffer } from '../../src/pipeline/api.ts';


/** How long a learned MAC stays without traffic from it (OVS and Linux bridges: 300 s). */
export const DEFAULT_AGING_S = 300;
/**
 * Slots a lookup or learn examines from a MAC's home slot. 16 int32s are one 64-byte cache
 * line per array; at the load a 4096-slot table sees (a few hundred MACs per bridge) a MAC
 * is almost always in its first or second slot, and a full window is rare until the table
 * is some 90 % full, when eviction takes over.
 */
export const PROBE_WINDOW = 16;

/** learn() results */
export const LEARNED = 0;
/** the port already has its limit of learned MACs: the MAC is not learned */
export const LEARN_REFUSED = 1;
/** every slot of the window holds a static entry: the MAC is not learned */
export const LEARN_NO_ROOM = 2;

/** ports[] of a slot never used: a probe stops here */
const EMPTY = -1;
/** ports[] of a removed entry (a tombstone): a probe goes on past it, a learn may reuse it */
const DELETED = -2;
/** in seq[]: the entry is static (seq counts in steps of 2 below this bit) */
const STATIC = 1 << 30;

export function macTableBytes(capacity: number): number {
  return capacity * 5 * 4;
}

/*
 * Speed: a MAC is two int32 halves (high 16 bits, low 32 bits) and time is whole seconds,
 * so that every value passed around fits a small integer: a 48-bit double would be boxed
 * (a heap allocation) at each call that is not inlined.
 *
 * Correctness of the bounded probe: a MAC sits within PROBE_WINDOW slots of its home slot,
 * and no slot between its home and itself is EMPTY (a learn takes the first reusable slot,
 * and a tombstone becomes EMPTY only when no entry lies past it on its probe path). A
 * lookup may therefore stop at the first EMPTY slot.
 */

export class MacTable {
  readonly capacity: number;
  private readonly mask: number;
  /** slots examined per operation: PROBE_WINDOW, or the whole of a smaller table */
  private readonly window: number;
  private readonly macHi: Int32Array;
  private readonly macLo: Int32Array;
  /** second of the last frame from the MAC */
  private readonly lastSeen: Int32Array;
  /** the port of the entry, or EMPTY, or DELETED */
  private readonly ports: Int32Array;
  /** per slot: odd while the writer changes it (a seqlock), bit 30 = static entry */
  private readonly seq: Int32Array;
  private readonly agingS: number;
  /** per port (owner only): entries learned on it, aged ones included until removed */
  private readonly learned: Int32Array;
  private readonly learnLimit: Int32Array;
  /** DELETED slots (owner only) */
  private tombstones = 0;
  /** scratch of the tombstone purge, per slot: 1 if some entry's probe path crosses it */
  private readonly crossed: Uint8Array;
  /** learn() found only static entries in the window */
  full = 0;
  /** live entries a learn replaced because its window was full */
  evicted = 0;
  /** set by lookup(): when the entry found was last refreshed */
  foundSeen = 0;
  /** whether the entry lookupOwn() found last is static (a port's configured mac) */
  foundStatic = false;

  /**
   * `initialize`: this thread owns the table and starts it empty; a reader passes false.
   * Ports 0 .. portCount - 1 may learn, each without a limit until setLearnLimit().
   */
  constructor(capacity = 4096, agingS = DEFAULT_AGING_S, buffer = sharedBuffer(macTableBytes(capacity)), initialize = true, portCount = 1) {
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError(`MAC table capacity ${capacity} is not a power of 2`);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.window = Math.min(PROBE_WINDOW, capacity);
    this.macHi = new Int32Array(buffer, 0, capacity);
    this.macLo = new Int32Array(buffer, 4 * capacity, capacity);
    this.lastSeen = new Int32Array(buffer, 8 * capacity, capacity);
    this.ports = new Int32Array(buffer, 12 * capacity, capacity);
    this.seq = new Int32Array(buffer, 16 * capacity, capacity);
    this.agingS = agingS;
    this.learned = new Int32Array(portCount);
    this.learnLimit = new Int32Array(portCount).fill(capacity);
    this.crossed = new Uint8Array(initialize ? capacity : 0);
    // A restarted PMD starts again from an empty table (its counts start at 0) while the
    // other PMDs may be reading it: each slot is emptied through the seqlock.
    if (initialize) for (let i = 0; i < capacity; i++) this.setPort(i, EMPTY);
    this.tombstones = 0;
  }

  /** At most `limit` MACs are learned on the port; static entries do not count. */
  setLearnLimit(port: number, limit: number): void {
    this.learnLimit[port] = limit;
  }

  /** MACs learned on the port (entries aged out but not yet removed included). */
  learnedOn(port: number): number {
    return this.learned[port];
  }

  private home(hi: number, lo: number): number {
    const x = Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1);
    // The low bits of a product depend only on the low bits of its factors: folding the
    // high half in keeps MACs that differ only above bit 12 out of one probe window.
    return (x ^ (x >>> 16)) & this.mask;
  }

  /**
   * The port a MAC (hi, lo) was seen on, or -1 (unknown or aged out). `shared`: the table
   * is another PMD's; a caller that knows which it reads may call the thin function itself.
   */
  lookup(hi: number, lo: number, now: number, shared = false): number {
    return shared ? this.lookupShared(hi, lo, now) : this.lookupOwn(hi, lo, now);
  }

  /** lookup() in the table this thread writes: no sequence numbers needed. */
  lookupOwn(hi: number, lo: number, now: number): number {
    const ports = this.ports;
    let i = this.home(hi, lo);
    for (let probe = 0; probe < this.window; probe++) {
      const port = ports[i];
      if (port === EMPTY) return -1;
      if (this.macLo[i] === lo && this.macHi[i] === hi && port >= 0) {
        const seen = this.lastSeen[i];
        this.foundSeen = seen;
        this.foundStatic = (this.seq[i] & STATIC) !== 0;
        return now - seen < this.agingS || this.foundStatic ? port : -1;
      }
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /**
   * lookup() in another PMD's table. The probe reads slots without the sequence numbers
   * (an Atomics.load per slot would double the cost of a miss); only the slot that
   * matches is read again between two loads of its sequence number and must match again.
   */
  lookupShared(hi: number, lo: number, now: number): number {
    const ports = this.ports;
    let i = this.home(hi, lo);
    for (let probe = 0; probe < this.window; probe++) {
      const port = ports[i];
      // An EMPTY (or DELETED) read mid-write is a MAC not learned yet: a miss floods the
      // frame, nothing worse; so does any slot the writer changes while we read it.
      if (port === EMPTY) return -1;
      if (this.macLo[i] === lo && this.macHi[i] === hi && port >= 0) return this.readShared(i, hi, lo, now);
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** The port of slot i if it holds MAC (hi, lo), read under its seqlock; else -1. */
  private readShared(i: number, hi: number, lo: number, now: number): number {
    const seq = this.seq;
    const before = Atomics.load(seq, i);
    const port = this.ports[i];
    const match = this.macLo[i] === lo && this.macHi[i] === hi;
    const seen = this.lastSeen[i];
    // Being rewritten (odd), or rewritten meanwhile: treated as unknown, so that a frame
    // is flooded, never sent to a port read from a torn entry.
    if ((before & 1) !== 0 || Atomics.load(seq, i) !== before || !match || port < 0) return -1;
    this.foundSeen = seen;
    return (before & STATIC) !== 0 || now - seen < this.agingS ? port : -1;
  }

  /**
   * Records that MAC (hi, lo) was seen on port (the owner's thread only); returns LEARNED,
   * LEARN_REFUSED or LEARN_NO_ROOM. Static entries keep their port.
   */
  learn(hi: number, lo: number, port: number, now: number): number {
    const ports = this.ports;
    let i = this.home(hi, lo);
    let free = -1;
    for (let probe = 0; probe < this.window; probe++) {
      const p = ports[i];
      if (p === EMPTY) {
        if (free < 0) free = i;
        break;
      }
      if (p >= 0 && this.macLo[i] === lo && this.macHi[i] === hi) return this.seenAgain(i, p, hi, lo, port, now);
      if (free < 0 && this.reusable(i, p, now)) free = i;
      i = (i + 1) & this.mask;
    }
    // A port at its limit may still take back a slot of its own that aged out.
    if (this.learned[port] >= this.learnLimit[port] && (free < 0 || ports[free] !== port)) return LEARN_REFUSED;
    if (free < 0) free = this.victim(this.home(hi, lo), port);
    if (free < 0) {
      this.full++;
      return LEARN_NO_ROOM;
    }
    const old = ports[free];
    if (old >= 0) this.learned[old]--;
    this.learned[port]++;
    this.write(free, hi, lo, port, now, 0);
    return LEARNED;
  }

  /** A known MAC seen again: a refresh, or a station that moved to another port. */
  private seenAgain(i: number, p: number, hi: number, lo: number, port: number, now: number): number {
    if ((this.seq[i] & STATIC) !== 0) return LEARNED;
    if (p === port) {
      // Only a changed second is stored: the other PMDs read this cache line.
      if (this.lastSeen[i] !== now) this.lastSeen[i] = now; // readers may see either time
      return LEARNED;
    }
    if (this.learned[port] >= this.learnLimit[port]) return LEARN_REFUSED;
    this.learned[p]--;
    this.learned[port]++;
    this.write(i, hi, lo, port, now, 0);
    return LEARNED;
  }

  /** A tombstone, or a learned entry that aged out. */
  private reusable(i: number, p: number, now: number): boolean {
    return p === DELETED || ((this.seq[i] & STATIC) === 0 && now - this.lastSeen[i] >= this.agingS);
  }

  /**
   * The entry a new MAC replaces when its window holds only live entries: the learning
   * port's own least recently seen one if it has any there (a port that floods MACs then
   * pushes out its own entries, not its neighbours'), else the least recently seen learned
   * entry (the one least likely to carry traffic). Never a static entry; -1 if all are.
   */
  private victim(home: number, port: number): number {
    const ports = this.ports;
    let own = -1;
    let ownSeen = 0;
    let any = -1;
    let anySeen = 0;
    let i = home;
    for (let probe = 0; probe < this.window; probe++) {
      if ((this.seq[i] & STATIC) === 0) {
        const seen = this.lastSeen[i];
        if (ports[i] === port && (own < 0 || seen < ownSeen)) {
          own = i;
          ownSeen = seen;
        }
        if (any < 0 || seen < anySeen) {
          any = i;
          anySeen = seen;
        }
      }
      i = (i + 1) & this.mask;
    }
    const at = own >= 0 ? own : any;
    if (at >= 0) this.evicted++;
    return at;
  }

  /**
   * Removes every learned entry that aged out, so that its port's count goes down (a port
   * at its limit learns again) and lookups stop early at EMPTY slots again. The owner
   * calls it about once a second, between bursts: it walks the whole table (some µs).
   */
  ageOut(now: number): number {
    const removed = this.removeAged(now);
    if (removed > 0 && this.tombstones > 0) this.purgeTombstones();
    return removed;
  }

  private removeAged(now: number): number {
    // Speed: locals, since the call to remove() would make every field be loaded again.
    const ports = this.ports;
    const lastSeen = this.lastSeen;
    const seq = this.seq;
    const agingS = this.agingS;
    let removed = 0;
    for (let i = 0; i < this.capacity; i++) {
      const p = ports[i];
      if (p >= 0 && now - lastSeen[i] >= agingS && (seq[i] & STATIC) === 0) {
        this.learned[p]--;
        this.remove(i);
        removed++;
      }
    }
    return removed;
  }

  /**
   * Makes EMPTY again every tombstone no entry's probe path crosses. After a flood has aged
   * out, a table left full of tombstones would make every miss probe a whole window.
   */
  private purgeTombstones(): void {
    const ports = this.ports;
    const crossed = this.crossed;
    crossed.fill(0);
    for (let i = 0; i < this.capacity; i++) {
      if (ports[i] < 0) continue;
      // The slots from the entry's home up to it: a lookup passes them on its way.
      for (let j = this.home(this.macHi[i], this.macLo[i]); j !== i; j = (j + 1) & this.mask) crossed[j] = 1;
    }
    for (let i = 0; i < this.capacity; i++) if (ports[i] === DELETED && crossed[i] === 0) this.setPort(i, EMPTY);
  }

  /** Empties slot i: a tombstone, or EMPTY (with the tombstones just before it) when the next slot is EMPTY. */
  private remove(i: number): void {
    const ports = this.ports;
    if (ports[(i + 1) & this.mask] !== EMPTY) {
      this.setPort(i, DELETED);
      return;
    }
    this.setPort(i, EMPTY);
    let j = (i - 1) & this.mask;
    for (let steps = 1; steps < this.window && ports[j] === DELETED; steps++) {
      this.setPort(j, EMPTY);
      j = (j - 1) & this.mask;
    }
  }

  // Seqlock: every change to a slot makes its sequence number odd first and even (and
  // different) after, so that a reader on another thread that read it before and after
  // its reads of the slot, and saw the same even value, read no half-written entry.

  private write(i: number, hi: number, lo: number, port: number, now: number, flags: number): void {
    if (this.ports[i] === DELETED) this.tombstones--;
    const s = Atomics.add(this.seq, i, 1) + 1;
    this.macHi[i] = hi;
    this.macLo[i] = lo;
    this.lastSeen[i] = now;
    this.ports[i] = port;
    Atomics.store(this.seq, i, ((s + 1) & ~STATIC) | flags);
  }

  private setPort(i: number, port: number): void {
    this.tombstones += (port === DELETED ? 1 : 0) - (this.ports[i] === DELETED ? 1 : 0);
    const s = Atomics.add(this.seq, i, 1) + 1;
    this.ports[i] = port;
    Atomics.store(this.seq, i, (s + 1) & ~STATIC);
  }

  /**
   * A static entry: never ages, never moves, never evicted. It takes the MAC's own slot if
   * the MAC was learned, else a free slot, else the slot of a learned entry (as learn()
   * evicts). False if the window holds only static entries.
   */
  addStatic(hi: number, lo: number, port: number): boolean {
    const ports = this.ports;
    const home = this.home(hi, lo);
    let i = home;
    let at = -1;
    for (let probe = 0; probe < this.window; probe++) {
      const p = ports[i];
      if (p >= 0 && this.macLo[i] === lo && this.macHi[i] === hi) {
        at = i;
        break;
      }
      if (at < 0 && p < 0) at = i;
      if (p === EMPTY) break;
      i = (i + 1) & this.mask;
    }
    if (at < 0) at = this.victim(home, port);
    if (at < 0) return false;
    const old = ports[at];
    if (old >= 0 && (this.seq[at] & STATIC) === 0) this.learned[old]--;
    this.write(at, hi, lo, port, 0, STATIC);
    return true;
  }
}

/** The high 16 bits of the MAC at byte offset off of a frame. */
export function macHigh(frame: Uint8Array, off: number): number {
  return (frame[off] << 8) | frame[off + 1];
}

/** The low 32 bits of the MAC at byte offset off of a frame (as an int32). */
export function macLow(frame: Uint8Array, off: number): number {
  return (frame[off + 2] << 24) | (frame[off + 3] << 16) | (frame[off + 4] << 8) | frame[off + 5];
}

/** "aa:bb:cc:dd:ee:ff" (validated by the caller) as [high 16 bits, low 32 bits as int32]. */
export function parseMac(text: string): [number, number] {
  const b = text.split(':').map((h) => parseInt(h, 16));
  return [(b[0] << 8) | b[1], (b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]];
}

/** Seconds on a monotonic clock: the MAC tables' time, a small integer for decades. */
export function nowSeconds(): number {
  return Math.floor(performance.now() / 1000);
}
