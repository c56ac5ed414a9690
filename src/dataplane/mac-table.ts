// A bridge's MAC learning table: open addressing over typed arrays in a SharedArrayBuffer
// (no allocation when learning or looking up), entries that age out, static entries that
// never move. Each PMD learns into a table of its own (one writer, no locks); the others
// read it through a per-slot sequence number, so that a half-written entry is never used.

/** How long a learned MAC stays without traffic from it (OVS and Linux bridges: 300 s). */
export const DEFAULT_AGING_MS = 300_000;
const EMPTY = -1;

export function macTableBytes(capacity: number): number {
  return capacity * (8 + 8 + 4 + 4);
}

export class MacTable {
  readonly capacity: number;
  private readonly mask: number;
  private readonly macs: Float64Array;
  private readonly lastSeen: Float64Array;
  private readonly ports: Int32Array;
  /** per slot: odd while the writer changes it (a seqlock), bit 30 = static entry */
  private readonly seq: Int32Array;
  private readonly agingMs: number;
  /** learn() found no free slot */
  full = 0;
  /** set by lookup(): when the entry found was last refreshed */
  foundSeen = 0;

  constructor(capacity = 4096, agingMs = DEFAULT_AGING_MS, buffer = new SharedArrayBuffer(macTableBytes(capacity)), initialize = true) {
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError(`MAC table capacity ${capacity} is not a power of 2`);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.macs = new Float64Array(buffer, 0, capacity);
    this.lastSeen = new Float64Array(buffer, 8 * capacity, capacity);
    this.ports = new Int32Array(buffer, 16 * capacity, capacity);
    this.seq = new Int32Array(buffer, 20 * capacity, capacity);
    if (initialize) this.ports.fill(EMPTY);
    this.agingMs = agingMs;
  }

  private slot(mac: number): number {
    // MACs are 48-bit integers held in doubles: mix both halves.
    const hi = (mac / 4294967296) | 0;
    return (Math.imul((mac | 0) ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 0) & this.mask;
  }

  private isStatic(i: number): boolean {
    return (this.seq[i] & STATIC) !== 0;
  }

  /**
   * The port a MAC was seen on, or -1 (unknown or aged out). `shared`: the table is
   * another PMD's, so every slot read is checked against its sequence number.
   */
  lookup(mac: number, now: number, shared = false): number {
    let i = this.slot(mac);
    for (let probes = 0; probes < this.capacity; probes++) {
      const before = shared ? Atomics.load(this.seq, i) : 0;
      const port = this.ports[i];
      if (port === EMPTY) return -1;
      if (this.macs[i] === mac) {
        const seen = this.lastSeen[i];
        // An entry being rewritten (odd) or rewritten meanwhile is treated as unknown:
        // the frame is flooded, never sent to a port read from a torn entry.
        if (shared && ((before & 1) !== 0 || Atomics.load(this.seq, i) !== before)) return -1;
        this.foundSeen = seen;
        return (before & STATIC) !== 0 || this.isStatic(i) || now - seen < this.agingMs ? port : -1;
      }
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** Records that mac was seen on port (the owner's thread only). Static entries keep their port. */
  learn(mac: number, port: number, now: number): void {
    let i = this.slot(mac);
    let reusable = -1;
    for (let probes = 0; probes < this.capacity; probes++) {
      const p = this.ports[i];
      if (p === EMPTY) break;
      if (this.macs[i] === mac) {
        if (this.isStatic(i)) return;
        if (p === port) this.lastSeen[i] = now; // a refresh: readers may see either time
        else this.write(i, mac, port, now);
        return;
      }
      if (reusable < 0 && !this.isStatic(i) && now - this.lastSeen[i] >= this.agingMs) reusable = i;
      i = (i + 1) & this.mask;
    }
    // Entries are never removed (no tombstones): an aged-out slot on the probe path is
    // reused, after the path was searched for the MAC itself.
    const at = reusable >= 0 ? reusable : this.ports[i] === EMPTY ? i : -1;
    if (at < 0) {
      this.full++;
      return;
    }
    this.write(at, mac, port, now);
  }

  private write(i: number, mac: number, port: number, now: number): void {
    // Seqlock: odd while the slot changes, so that readers on other threads skip it.
    const s = Atomics.add(this.seq, i, 1) + 1;
    this.macs[i] = mac;
    this.lastSeen[i] = now;
    this.ports[i] = port;
    Atomics.store(this.seq, i, (s + 1) & ~STATIC);
  }

  addStatic(mac: number, port: number): void {
    this.learn(mac, port, 0);
    let i = this.slot(mac);
    for (let probes = 0; probes < this.capacity && this.ports[i] !== EMPTY; probes++) {
      if (this.macs[i] === mac) {
        this.write(i, mac, port, 0);
        Atomics.or(this.seq, i, STATIC);
        return;
      }
      i = (i + 1) & this.mask;
    }
  }
}

const STATIC = 1 << 30;

/** The MAC at byte offset off of a frame, as a 48-bit integer. */
export function readMac(frame: Uint8Array, off: number): number {
  const low32 = ((frame[off + 2] << 24) | (frame[off + 3] << 16) | (frame[off + 4] << 8) | frame[off + 5]) >>> 0;
  return (frame[off] * 256 + frame[off + 1]) * 4294967296 + low32;
}

/** "aa:bb:cc:dd:ee:ff" to a 48-bit integer (the caller has validated the text). */
export function parseMac(text: string): number {
  return parseInt(text.replaceAll(':', ''), 16);
}
