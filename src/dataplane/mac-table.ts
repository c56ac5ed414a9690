// A bridge's MAC learning table: open addressing over typed arrays in a SharedArrayBuffer
// (no allocation when learning or looking up), entries that age out, static entries that
// never move. Each PMD learns into a table of its own (one writer, no locks); the others
// read it through a per-slot sequence number, so that a half-written entry is never used.

/** How long a learned MAC stays without traffic from it (OVS and Linux bridges: 300 s). */
export const DEFAULT_AGING_S = 300;
const EMPTY = -1;

export function macTableBytes(capacity: number): number {
  return capacity * 5 * 4;
}

/*
 * Speed: a MAC is two int32 halves (high 16 bits, low 32 bits) and time is whole seconds,
 * so that every value passed around fits a small integer: a 48-bit double would be boxed
 * (a heap allocation) at each call that is not inlined.
 */

export class MacTable {
  readonly capacity: number;
  private readonly mask: number;
  private readonly macHi: Int32Array;
  private readonly macLo: Int32Array;
  /** second of the last frame from the MAC */
  private readonly lastSeen: Int32Array;
  private readonly ports: Int32Array;
  /** per slot: odd while the writer changes it (a seqlock), bit 30 = static entry */
  private readonly seq: Int32Array;
  private readonly agingS: number;
  /** learn() found no free slot */
  full = 0;
  /** set by lookup(): when the entry found was last refreshed */
  foundSeen = 0;

  constructor(capacity = 4096, agingS = DEFAULT_AGING_S, buffer = new SharedArrayBuffer(macTableBytes(capacity)), initialize = true) {
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError(`MAC table capacity ${capacity} is not a power of 2`);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.macHi = new Int32Array(buffer, 0, capacity);
    this.macLo = new Int32Array(buffer, 4 * capacity, capacity);
    this.lastSeen = new Int32Array(buffer, 8 * capacity, capacity);
    this.ports = new Int32Array(buffer, 12 * capacity, capacity);
    this.seq = new Int32Array(buffer, 16 * capacity, capacity);
    if (initialize) this.ports.fill(EMPTY);
    this.agingS = agingS;
  }

  private slot(hi: number, lo: number): number {
    return (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 0) & this.mask;
  }

  private isStatic(i: number): boolean {
    return (this.seq[i] & STATIC) !== 0;
  }

  /**
   * The port a MAC (hi, lo) was seen on, or -1 (unknown or aged out). `shared`: the
   * table is another PMD's, so every slot read is checked against its sequence number.
   */
  lookup(hi: number, lo: number, now: number, shared = false): number {
    let i = this.slot(hi, lo);
    for (let probes = 0; probes < this.capacity; probes++) {
      const before = shared ? Atomics.load(this.seq, i) : 0;
      const port = this.ports[i];
      if (port === EMPTY) return -1;
      if (this.macLo[i] === lo && this.macHi[i] === hi) {
        const seen = this.lastSeen[i];
        // An entry being rewritten (odd) or rewritten meanwhile is treated as unknown:
        // the frame is flooded, never sent to a port read from a torn entry.
        if (shared && ((before & 1) !== 0 || Atomics.load(this.seq, i) !== before)) return -1;
        this.foundSeen = seen;
        return (before & STATIC) !== 0 || this.isStatic(i) || now - seen < this.agingS ? port : -1;
      }
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** Records that MAC (hi, lo) was seen on port (the owner's thread only). Static entries keep their port. */
  learn(hi: number, lo: number, port: number, now: number): void {
    let i = this.slot(hi, lo);
    let reusable = -1;
    for (let probes = 0; probes < this.capacity; probes++) {
      const p = this.ports[i];
      if (p === EMPTY) break;
      if (this.macLo[i] === lo && this.macHi[i] === hi) {
        if (this.isStatic(i)) return;
        if (p === port) this.lastSeen[i] = now; // a refresh: readers may see either time
        else this.write(i, hi, lo, port, now);
        return;
      }
      if (reusable < 0 && !this.isStatic(i) && now - this.lastSeen[i] >= this.agingS) reusable = i;
      i = (i + 1) & this.mask;
    }
    // Entries are never removed (no tombstones): an aged-out slot on the probe path is
    // reused, after the path was searched for the MAC itself.
    const at = reusable >= 0 ? reusable : this.ports[i] === EMPTY ? i : -1;
    if (at < 0) {
      this.full++;
      return;
    }
    this.write(at, hi, lo, port, now);
  }

  private write(i: number, hi: number, lo: number, port: number, now: number): void {
    // Seqlock: odd while the slot changes, so that readers on other threads skip it.
    const s = Atomics.add(this.seq, i, 1) + 1;
    this.macHi[i] = hi;
    this.macLo[i] = lo;
    this.lastSeen[i] = now;
    this.ports[i] = port;
    Atomics.store(this.seq, i, (s + 1) & ~STATIC);
  }

  addStatic(hi: number, lo: number, port: number): void {
    this.learn(hi, lo, port, 0);
    let i = this.slot(hi, lo);
    for (let probes = 0; probes < this.capacity && this.ports[i] !== EMPTY; probes++) {
      if (this.macLo[i] === lo && this.macHi[i] === hi) {
        this.write(i, hi, lo, port, 0);
        Atomics.or(this.seq, i, STATIC);
        return;
      }
      i = (i + 1) & this.mask;
    }
  }
}

const STATIC = 1 << 30;

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
