// A PMD's flow cache over the shared conntrack table (conntrack.ts): the packets of
// established flows pass the acl stage from it, as they are parsed (headers.ts).
/** log2 of the sets: 8,192 of two entries (512 KiB, inside L2) */
const SET_BITS = 13;
const ENTRIES = 2 << SET_BITS;
const WORDS = 8;
/** a set's two entries, one cache line: the second way is the first's WORDS further on */
export const SET_WORDS = 2 * WORDS;
// Words of an entry
export const FC_SRC = 0;
export const FC_DST = 1;
export const FC_PORTS = 2;
/**
 * the protocol in the low 8 bits (0 for an entry never filled, or emptied), above them the
 * cache's epoch when the entry's slot was last found unchanged (see sync()), so that the
 * check reads one cache line
 */
export const FC_PROTO = 3;
export const FC_PROTO_BITS = 8;
/** the flow's slot in the table: the table word there is the slot's sequence */
export const FC_SLOT = 4;
export const FC_SEQ = 5;
export const FC_MARK = 6;
/** the second (the stage's clock) the entry was noted in: it serves in that second only */
export const FC_NOTED = 7;
/** epochs are 24 bits (FC_PROTO); at the wrap the cache starts empty */
const EPOCH_MASK = 0xffffff;

/**
 * An exact-match cache as OVS-DPDK's EMC, two-way set associative: a flow's key picks a
 * set of two entries of WORDS words (half a cache line each, the set one line), keyed by a
 * packet's IPv4 addresses, ports and protocol as they come (one entry per direction). Two
 * ways, because a packet that misses sends its whole burst down the slower tracked path,
 * and direct-mapped, 16 % of the packets of 1,024 flows found none. An entry holds the flow's
 * slot, the slot's sequence, mark and expiry as a checked read of the slot found them, and
 * (with the protocol) the timeout a packet of this direction without SYN, FIN or RST would
 * set: so it only stands for flows such packets would not change (UDP answered, or from
 * its opener; TCP established). While the slot's sequence is still the one noted, no
 * writer has touched it since (each write moves it on by 2), and the noted words are the
 * slot's: one plain load of the sequence stands for the hash, the tag scan, the key
 * compare and the seqlock's two reads. Only this PMD reads and writes it. The stage
 * probes it as it parses (headers.ts, parseBurst()).
 *
 * Even that load is left out while the table's change count (conntrack.ts, H_CHANGES)
 * stands still: it moves with every write that ends a flow's entry, gives its slot to
 * another flow or changes its state (once the writer holds the slot, so that a cache that
 * sees the new count sees the slot's sequence moved too), that is every write but a
 * refresh of the expiry, which the noted second covers. An entry whose slot was found
 * unchanged in the cache's current epoch (one per change count seen, sync()) serves
 * without it; after a change, at its next packet, the slot's sequence decides, and the
 * entry takes the new epoch. With 1,024 flows and the default table (262,144 slots of a
 * cache line each), that load was a miss per packet: 23 ns of the full pipeline's 265 in
 * the benchmark.
 */
export class FlowCache {
  /** entries of WORDS words */
  readonly entries = new Int32Array(ENTRIES * WORDS);
  /** the conntrack table's words, for the slots' sequences */
  readonly table: Int32Array;
  readonly seed: number;
  /** the table's word that counts changes (conntrack.ts, H_CHANGES), and its value at the last sync() */
  private readonly changesAt: number;
  private changesSeen: number;
  /** 1 to EPOCH_MASK: entries stamped with it need no read of their slot */
  epoch = 1;

  constructor(table: Int32Array, seed: number, changesAt: number) {
    this.table = table;
    this.seed = seed;
    this.changesAt = changesAt;
    this.changesSeen = table[changesAt];
  }

  /**
   * Once per burst, before its packets are checked: a new epoch when the table changed
   * since the last burst. A plain load: a change made while the burst is checked is seen
   * by the next one, as a packet checked just before the change would be.
   */
  sync(): number {
    const changes = this.table[this.changesAt];
    if (changes === this.changesSeen) return this.epoch;
    this.changesSeen = changes;
    this.epoch = (this.epoch + 1) & EPOCH_MASK;
    if (this.epoch === 0) {
      // No entry may carry an epoch again that it was stamped with 2^24 epochs ago.
      this.entries.fill(0);
      this.epoch = 1;
    }
    return this.epoch;
  }

  /**
   * The first word of a flow's set (its first way), for the packet's addresses (as the 4
   * bytes read big-endian, | 0) and ports (srcPort << 16 | dstPort). The flow's entry is
   * there or SET_WORDS / 2 further on.
   */
  static at(seed: number, src: number, dst: number, ports: number): number {
    // One more shift and multiply than a plain multiplicative hash: with addresses that
    // differ in their low bits alone (a subnet's hosts), that one lost 3 times more flows
    // to full sets than a random spread would.
    const h = Math.imul(src ^ Math.imul(dst ^ seed, 0xcc9e2d51) ^ ports, 0x1b873593);
    return (Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> (32 - SET_BITS)) * SET_WORDS;
  }

  /**
   * Notes packet i's flow (its addresses in src4/dst4, as parsed) in `slot`, as a checked
   * read found it at second `now`, in this epoch. A timeout of 0 (a packet without SYN, FIN
   * or RST would change the entry), or an expiry other than the one such a packet sets now
   * (now + timeout: the packet would push it on, a write), empties the flow's entry instead.
   */
  fill(src4: Uint32Array, dst4: Uint32Array, i: number, srcPort: number, dstPort: number, protocol: number, slot: number, seq: number, mark: number, expires: number, timeout: number, now: number): void {
    const e = this.entries;
    const s = src4[i] | 0;
    const t = dst4[i] | 0;
    const ports = (srcPort << 16) | dstPort;
    const set = FlowCache.at(this.seed, s, t, ports);
    const mine = this.holds(set, s, t, ports, protocol) ? set : this.holds(set + WORDS, s, t, ports, protocol) ? set + WORDS : -1;
    if (timeout === 0 || expires !== now + timeout) {
      if (mine >= 0) e[mine + FC_PROTO] = 0;
      return;
    }
    // Entries of other flows noted this second stay (more flows than a set holds would
    // else take each other's place at every packet): the first flows of each second keep
    // theirs. Their slots are not read (NB: with 100,000 random flows that read was a miss
    // to memory per packet: 594 ns per established packet, against 470 without it).
    const c = mine >= 0 ? mine : !this.notedNow(set, now) ? set : !this.notedNow(set + WORDS, now) ? set + WORDS : -1;
    if (c < 0) return;
    e[c + FC_SRC] = s;
    e[c + FC_DST] = t;
    e[c + FC_PORTS] = ports;
    e[c + FC_PROTO] = protocol | (this.epoch << FC_PROTO_BITS);
    e[c + FC_SLOT] = slot;
    e[c + FC_SEQ] = seq;
    e[c + FC_MARK] = mark;
    e[c + FC_NOTED] = now;
  }

  /** Whether entry c holds the flow of this key. */
  private holds(c: number, src: number, dst: number, ports: number, protocol: number): boolean {
    const e = this.entries;
    return e[c + FC_SRC] === src && e[c + FC_DST] === dst && e[c + FC_PORTS] === ports && (e[c + FC_PROTO] & 0xff) === protocol;
  }

  /** Whether entry c holds a flow noted this second `now`. */
  private notedNow(c: number, now: number): boolean {
    const e = this.entries;
    return e[c + FC_PROTO] !== 0 && e[c + FC_NOTED] === now;
  }
}

