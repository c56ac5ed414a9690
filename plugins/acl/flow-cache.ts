// A PMD's flow cache over the shared conntrack table (conntrack.ts): the packets of
// established flows pass the acl stage from it, as they are parsed (headers.ts).
const BITS = 12;
const ENTRIES = 1 << BITS;
const WORDS = 8;
// Words of an entry
export const FC_SRC = 0;
export const FC_DST = 1;
export const FC_PORTS = 2;
/** the protocol; 0 for an entry never filled, or emptied */
export const FC_PROTO = 3;
/** the flow's slot in the table: the table word there is the slot's sequence */
export const FC_SLOT = 4;
export const FC_SEQ = 5;
export const FC_MARK = 6;
export const FC_EXPIRES = 7;

/**
 * An exact-match cache as OVS-DPDK's EMC:
 * direct-mapped, ENTRIES entries of WORDS words (half a cache line), keyed by a packet's
 * IPv4 addresses, ports and protocol as they come (one entry per direction). An entry
 * holds the flow's slot, the slot's sequence, mark and expiry as a checked read of the
 * slot found them, and the timeout a packet of this direction without SYN, FIN or RST
 * would set: so it only stands for flows such packets would not change (UDP answered,
 * or from its opener; TCP established). While the slot's sequence is still
 * the one noted, no writer has touched it since (each write moves it on by 2), and the
 * noted words are the slot's: one plain load of the sequence stands for the hash, the
 * tag scan, the key compare and the seqlock's two reads. Only this PMD reads and writes
 * it. The stage probes it as it parses (headers.ts, parseBurst()).
 */
export class FlowCache {
  /** entries of WORDS words; an entry's timeout is apart, at (its first word) >>> 3 */
  readonly entries = new Int32Array(ENTRIES * WORDS);
  readonly timeouts = new Int32Array(ENTRIES);
  /** the conntrack table's words, for the slots' sequences */
  readonly table: Int32Array;
  readonly seed: number;

  constructor(table: Int32Array, seed: number) {
    this.table = table;
    this.seed = seed;
  }

  /** An entry's first word, for the packet's addresses (as the 4 bytes read big-endian, | 0) and ports (srcPort << 16 | dstPort). */
  static at(seed: number, src: number, dst: number, ports: number): number {
    return (Math.imul(src ^ Math.imul(dst ^ seed, 0xcc9e2d51) ^ ports, 0x1b873593) >>> (32 - BITS)) * WORDS;
  }

  /**
   * Notes packet i's flow (its addresses in src4/dst4, as parsed) in `slot`, as a checked
   * read found it at second `now`; a timeout of 0 (a packet without SYN, FIN or RST would
   * change the entry) empties the flow's entry instead.
   */
  fill(src4: Uint32Array, dst4: Uint32Array, i: number, srcPort: number, dstPort: number, protocol: number, slot: number, seq: number, mark: number, expires: number, timeout: number, now: number): void {
    const e = this.entries;
    const s = src4[i] | 0;
    const t = dst4[i] | 0;
    const ports = (srcPort << 16) | dstPort;
    const c = FlowCache.at(this.seed, s, t, ports);
    const same = e[c + FC_SRC] === s && e[c + FC_DST] === t && e[c + FC_PORTS] === ports && e[c + FC_PROTO] === protocol;
    if (timeout === 0) {
      if (same) e[c + FC_PROTO] = 0;
      return;
    }
    // Another flow's entry noted this second stays (more flows than entries would else
    // take each other's place at every packet): the first flows of each second keep
    // theirs. Its slot is not read (NB: with 100,000 random flows that read was a miss to
    // memory per packet: 594 ns per established packet, against 470 without it).
    if (!same && e[c + FC_PROTO] !== 0 && e[c + FC_EXPIRES] === ((now + this.timeouts[c >>> 3]) | 0)) return;
    e[c + FC_SRC] = s;
    e[c + FC_DST] = t;
    e[c + FC_PORTS] = ports;
    e[c + FC_PROTO] = protocol;
    e[c + FC_SLOT] = slot;
    e[c + FC_SEQ] = seq;
    e[c + FC_MARK] = mark;
    e[c + FC_EXPIRES] = expires | 0;
    this.timeouts[c >>> 3] = timeout;
  }
}

