// The acl stage's fragment table: what the stage did with the first fragment of a packet,
// kept for the packet's later fragments (a shallow virtual reassembly, as VPP's
// ip4-sv-reassembly; Linux reassembles whole before netfilter sees a packet). A later
// fragment has no ports, ICMP header or TCP flags: judged alone by the rules, it matches
// only those that name none, so with `"aclDefault": "deny"` the rest of a permitted or
// tracked packet was dropped (a large DNS answer, NFS over UDP, an iperf3 UDP test), and
// with a permit default the rest of a denied one went on.

/** log2 of the sets: 256 of four entries */
const SET_BITS = 8;
const WAYS = 4;
const ENTRIES = WAYS << SET_BITS;
/** words of an entry: its key, then the verdict */
const WORDS = 12;
// Words of an entry
/** IP version << 8 | protocol; 0 for an entry never filled or emptied */
const F_TAG = 0;
const F_ID = 1;
const F_SRC = 2;
const F_DST = 6;
/** 0: permitted, else the egress code the first fragment was dropped with (batch.ts) */
const F_DROP = 10;
const F_MARK = 11;

/** How long a first fragment's verdict serves its later fragments (the fragments of one packet are sent back to back). */
export const FRAGMENT_TIMEOUT_MS = 2000;

/**
 * A PMD's table, keyed as RFC 791 and RFC 8200 4.5 reassemble: source, destination,
 * protocol and Identification. A packet's fragments reach the PMD that polls the queue
 * they came in by, so the table is the PMD's own: a guest sends them on one queue, and a
 * NIC or the kernel's fanout hashes fragments by their addresses alone. Four-way set
 * associative; a full set gives up its oldest entry, whose later fragments are then
 * judged by the rules alone. The hash is seeded so that a guest cannot aim its packets at
 * one set.
 */
export class FragmentTable {
  private readonly entries = new Int32Array(ENTRIES * WORDS);
  private readonly expires = new Float64Array(ENTRIES);
  private readonly seed: number;
  /** after find(): the verdict of the entry found */
  drop = 0;
  mark = 0;

  constructor(seed: number) {
    this.seed = seed | 0;
  }

  /**
   * The entry of a packet's fragments (`src` and `dst` words at `at` in the arrays: one
   * for IPv4, four for IPv6), or -1.
   */
  find(version: number, protocol: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, nowMs: number): number {
    const tag = (version << 8) | protocol;
    const words = version === 6 ? 4 : 1;
    const set = this.setOf(tag, id, src, dst, at, words);
    const e = this.entries;
    for (let way = 0; way < WAYS; way++) {
      const slot = set + way;
      const w = slot * WORDS;
      if (e[w + F_TAG] !== tag || e[w + F_ID] !== (id | 0) || this.expires[slot] <= nowMs) continue;
      if (!sameKey(e, w, src, dst, at, words)) continue;
      this.drop = e[w + F_DROP];
      this.mark = e[w + F_MARK];
      return slot;
    }
    return -1;
  }

  /** Keeps the verdict of a first fragment: `drop` 0 for permitted, else its egress code. */
  remember(version: number, protocol: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, drop: number, mark: number, nowMs: number): void {
    const tag = (version << 8) | protocol;
    const words = version === 6 ? 4 : 1;
    const set = this.setOf(tag, id, src, dst, at, words);
    const e = this.entries;
    // the packet's own entry (a first fragment sent again), else a free one, else the oldest
    let slot = -1;
    let oldest = set;
    for (let way = 0; way < WAYS; way++) {
      const s = set + way;
      const w = s * WORDS;
      if (e[w + F_TAG] === tag && e[w + F_ID] === (id | 0) && sameKey(e, w, src, dst, at, words)) {
        slot = s;
        break;
      }
      if (slot < 0 && (e[w + F_TAG] === 0 || this.expires[s] <= nowMs)) slot = s;
      if (this.expires[s] < this.expires[oldest]) oldest = s;
    }
    if (slot < 0) slot = oldest;
    const w = slot * WORDS;
    e[w + F_TAG] = tag;
    e[w + F_ID] = id;
    for (let k = 0; k < 4; k++) {
      e[w + F_SRC + k] = k < words ? src[at + k] : 0;
      e[w + F_DST + k] = k < words ? dst[at + k] : 0;
    }
    e[w + F_DROP] = drop;
    e[w + F_MARK] = mark;
    this.expires[slot] = nowMs + FRAGMENT_TIMEOUT_MS;
  }

  /** Empties an entry: its packet's last fragment went by. */
  forget(slot: number): void {
    this.entries[slot * WORDS + F_TAG] = 0;
    this.expires[slot] = 0;
  }

  private setOf(tag: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, words: number): number {
    // FNV-1a over the key's words, from a secret basis
    let h = (0x811c9dc5 ^ this.seed) | 0;
    h = Math.imul(h ^ tag, 0x01000193);
    h = Math.imul(h ^ id, 0x01000193);
    for (let k = 0; k < words; k++) {
      h = Math.imul(h ^ src[at + k], 0x01000193);
      h = Math.imul(h ^ dst[at + k], 0x01000193);
    }
    h ^= h >>> 15;
    return ((h >>> 0) & ((1 << SET_BITS) - 1)) * WAYS;
  }
}

function sameKey(e: Int32Array, w: number, src: Uint32Array, dst: Uint32Array, at: number, words: number): boolean {
  for (let k = 0; k < words; k++) {
    if (e[w + F_SRC + k] !== (src[at + k] | 0) || e[w + F_DST + k] !== (dst[at + k] | 0)) return false;
  }
  return true;
}
