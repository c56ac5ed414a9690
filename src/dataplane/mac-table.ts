// A bridge's MAC learning table: open addressing over typed arrays (no allocation when
// learning or looking up), entries that age out, and static entries that never move.

/** How long a learned MAC stays without traffic from it (OVS and Linux bridges: 300 s). */
export const DEFAULT_AGING_MS = 300_000;
const EMPTY = -1;

export class MacTable {
  readonly capacity: number;
  private readonly mask: number;
  private readonly macs: Float64Array;
  private readonly ports: Int32Array;
  private readonly lastSeen: Float64Array;
  private readonly isStatic: Uint8Array;
  private readonly agingMs: number;
  /** learn() found no free slot */
  full = 0;

  constructor(capacity = 4096, agingMs = DEFAULT_AGING_MS) {
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError(`MAC table capacity ${capacity} is not a power of 2`);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.macs = new Float64Array(capacity);
    this.ports = new Int32Array(capacity).fill(EMPTY);
    this.lastSeen = new Float64Array(capacity);
    this.isStatic = new Uint8Array(capacity);
    this.agingMs = agingMs;
  }

  private slot(mac: number): number {
    // MACs are 48-bit integers held in doubles: mix both halves.
    const hi = (mac / 4294967296) | 0;
    return Math.imul((mac | 0) ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 0 & this.mask;
  }

  /** The port a MAC was seen on, or -1 (unknown or aged out). */
  lookup(mac: number, now: number): number {
    let i = this.slot(mac);
    for (let probes = 0; probes < this.capacity; probes++) {
      const port = this.ports[i];
      if (port === EMPTY) return -1;
      if (this.macs[i] === mac) {
        return this.isStatic[i] === 1 || now - this.lastSeen[i] < this.agingMs ? port : -1;
      }
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** Records that mac was seen on port. Static entries keep their port. */
  learn(mac: number, port: number, now: number): void {
    let i = this.slot(mac);
    let reusable = -1;
    for (let probes = 0; probes < this.capacity; probes++) {
      const p = this.ports[i];
      if (p === EMPTY) break;
      if (this.macs[i] === mac) {
        if (this.isStatic[i] === 0) {
          this.ports[i] = port;
          this.lastSeen[i] = now;
        }
        return;
      }
      if (reusable < 0 && this.isStatic[i] === 0 && now - this.lastSeen[i] >= this.agingMs) reusable = i;
      i = (i + 1) & this.mask;
    }
    // Entries are never removed (no tombstones): an aged-out slot on the probe path is
    // reused, after the path was searched for the MAC itself.
    const at = reusable >= 0 ? reusable : this.ports[i] === EMPTY ? i : -1;
    if (at < 0) {
      this.full++;
      return;
    }
    this.macs[at] = mac;
    this.ports[at] = port;
    this.lastSeen[at] = now;
    this.isStatic[at] = 0;
  }

  addStatic(mac: number, port: number): void {
    this.learn(mac, port, 0);
    const i = this.find(mac);
    if (i >= 0) {
      this.ports[i] = port;
      this.isStatic[i] = 1;
    }
  }

  private find(mac: number): number {
    let i = this.slot(mac);
    for (let probes = 0; probes < this.capacity && this.ports[i] !== EMPTY; probes++) {
      if (this.macs[i] === mac) return i;
      i = (i + 1) & this.mask;
    }
    return -1;
  }
}

/** The MAC at byte offset off of a frame, as a 48-bit integer. */
export function readMac(frame: Uint8Array, off: number): number {
  const low32 = ((frame[off + 2] << 24) | (frame[off + 3] << 16) | (frame[off + 4] << 8) | frame[off + 5]) >>> 0;
  return (frame[off] * 256 + frame[off + 1]) * 4294967296 + low32;
}

/** "aa:bb:cc:dd:ee:ff" to a 48-bit integer (the caller has validated the text). */
export function parseMac(text: string): number {
  return parseInt(text.replaceAll(':', ''), 16);
}
