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
/** words of an entry (a cache line): its key, the verdict, the bytes seen */
const WORDS = 16;
// Words of an entry
/** ingress port << 16 | IP version << 8 | protocol; 0 for an entry never filled or emptied */
const F_TAG = 0;
const F_ID = 1;
const F_SRC = 2;
const F_DST = 6;
/** the verdict: the caller's code (index.ts) */
const F_VERDICT = 10;
const F_MARK = 11;
/** the packet's bytes (after the IP header and any fragment header) its fragments brought so far */
const F_SEEN = 12;
/** where the packet ends, once its last fragment came; else 0 */
const F_END = 13;
/** live entries per ingress port are counted for ports below this */
const PORTS = 256;
/** slots the sweep looks at a call */
const SWEEP_SLOTS = 16;

/** How long a first fragment's verdict serves its later fragments (the fragments of one packet are sent back to back). */
export const FRAGMENT_TIMEOUT_MS = 2000;

/**
 * A PMD's table, keyed by ingress port, source, destination, protocol and Identification
 * (RFC 791 3.2; for IPv6, RFC 8200 4.5's source, destination and Identification, and the
 * Fragment header's Next Header, which all of a packet's fragments carry). The ingress
 * port is in the key so that no port's fragments follow another's first fragment (rules
 * on inPort hold), and none can empty another's entry. A packet's fragments reach the PMD
 * that polls the queue they came in by, so the table is the PMD's own: a guest sends them
 * on one queue, and a NIC or the kernel's fanout hashes fragments by their addresses.
 *
 * An entry serves until its packet's bytes all went by (the last fragment tells where the
 * packet ends: fragments may come in any order) or FRAGMENT_TIMEOUT_MS. Four-way set
 * associative, the set picked by a seeded hash; in a set of four live entries a new one
 * takes the place of the oldest entry of a port holding at least as many live entries as
 * its own, or none: a port that floods the table with first fragments gives up its own
 * entries, never those of a port holding fewer.
 */
export class FragmentTable {
  private readonly entries = new Int32Array(ENTRIES * WORDS);
  private readonly expires = new Float64Array(ENTRIES);
  /** live entries per ingress port, and in all (the sweep runs only while some are) */
  private readonly perPort = new Int32Array(PORTS);
  live = 0;
  private readonly seed: number;
  private sweepAt = 0;
  /** after find(): the verdict and mark of the entry found */
  verdict = 0;
  mark = 0;

  constructor(seed: number) {
    this.seed = seed | 0;
  }

  /**
   * The entry of a packet's fragments (`src` and `dst` words at `at` in the arrays: one
   * for IPv4, four for IPv6), or -1.
   */
  find(ingress: number, version: number, protocol: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, nowMs: number): number {
    const tag = tagOf(ingress, version, protocol);
    const words = version === 6 ? 4 : 1;
    const set = this.setOf(tag, id, src, dst, at, words);
    const e = this.entries;
    for (let way = 0; way < WAYS; way++) {
      const slot = set + way;
      const w = slot * WORDS;
      if (e[w + F_TAG] !== tag || e[w + F_ID] !== (id | 0) || !sameKey(e, w, src, dst, at, words)) continue;
      if (this.expires[slot] <= nowMs) {
        this.empty(slot);
        return -1;
      }
      this.verdict = e[w + F_VERDICT];
      this.mark = e[w + F_MARK];
      return slot;
    }
    return -1;
  }

  /**
   * A later fragment of the entry's packet went by, `bytes` long, `end` where its packet
   * ends when it is the last fragment (else 0): once all the packet's bytes came, the
   * entry is emptied.
   */
  took(slot: number, bytes: number, end: number): void {
    const w = slot * WORDS;
    const e = this.entries;
    e[w + F_SEEN] += bytes;
    if (end !== 0) e[w + F_END] = end;
    if (e[w + F_END] !== 0 && e[w + F_SEEN] >= e[w + F_END]) this.empty(slot);
  }

  /**
   * Keeps the verdict of a first fragment of `bytes` bytes; false when its set had no
   * entry to give it (its later fragments are then judged alone).
   */
  remember(ingress: number, version: number, protocol: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, bytes: number, verdict: number, mark: number, nowMs: number): boolean {
    const tag = tagOf(ingress, version, protocol);
    const words = version === 6 ? 4 : 1;
    const set = this.setOf(tag, id, src, dst, at, words);
    const e = this.entries;
    const port = ingress & (PORTS - 1);
    const own = this.perPort[port];
    // the packet's own entry (its first fragment sent again), else a free one, else the
    // oldest of a port holding at least as many as this one
    let slot = -1;
    let free = -1;
    let victim = -1;
    for (let way = 0; way < WAYS; way++) {
      const s = set + way;
      const w = s * WORDS;
      const t = e[w + F_TAG];
      if (t !== 0 && this.expires[s] <= nowMs) this.empty(s);
      if (e[w + F_TAG] === 0) {
        if (free < 0) free = s;
        continue;
      }
      if (t === tag && e[w + F_ID] === (id | 0) && sameKey(e, w, src, dst, at, words)) {
        slot = s;
        break;
      }
      if (this.perPort[(t >>> 16) & (PORTS - 1)] >= own && (victim < 0 || this.expires[s] < this.expires[victim])) victim = s;
    }
    if (slot < 0) {
      if (free >= 0) slot = free;
      else if (victim >= 0) {
        this.empty(victim);
        slot = victim;
      } else return false;
      this.perPort[port]++;
      this.live++;
    }
    const w = slot * WORDS;
    e[w + F_TAG] = tag;
    e[w + F_ID] = id;
    for (let k = 0; k < 4; k++) {
      e[w + F_SRC + k] = k < words ? src[at + k] : 0;
      e[w + F_DST + k] = k < words ? dst[at + k] : 0;
    }
    e[w + F_VERDICT] = verdict;
    e[w + F_MARK] = mark;
    e[w + F_SEEN] = bytes;
    e[w + F_END] = 0;
    this.expires[slot] = nowMs + FRAGMENT_TIMEOUT_MS;
    return true;
  }

  /** Between bursts, while entries live: the next few slots are looked at, and expired ones emptied (so the per-port counts stay true). */
  sweep(nowMs: number): void {
    for (let k = 0; k < SWEEP_SLOTS; k++) {
      const s = this.sweepAt;
      this.sweepAt = (s + 1) & (ENTRIES - 1);
      if (this.entries[s * WORDS + F_TAG] !== 0 && this.expires[s] <= nowMs) this.empty(s);
    }
  }

  private empty(slot: number): void {
    const w = slot * WORDS;
    const tag = this.entries[w + F_TAG];
    if (tag === 0) return;
    this.perPort[(tag >>> 16) & (PORTS - 1)]--;
    this.live--;
    this.entries[w + F_TAG] = 0;
    this.expires[slot] = 0;
  }

  /** The first slot of a key's set (tagOf(): port, version, protocol). */
  setOf(tag: number, id: number, src: Uint32Array, dst: Uint32Array, at: number, words: number): number {
    // FNV-1a over the key's words from a secret basis, then MurmurHash3's fmix32, which
    // carries the high bits down (the set is taken from the low ones)
    let h = (0x811c9dc5 ^ this.seed) | 0;
    h = Math.imul(h ^ tag, 0x01000193);
    h = Math.imul(h ^ id, 0x01000193);
    for (let k = 0; k < words; k++) {
      h = Math.imul(h ^ src[at + k], 0x01000193);
      h = Math.imul(h ^ dst[at + k], 0x01000193);
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return (h & ((1 << SET_BITS) - 1)) * WAYS;
  }
}

function tagOf(ingress: number, version: number, protocol: number): number {
  // never 0: the version is 4 or 6
  return (ingress << 16) | (version << 8) | protocol;
}

function sameKey(e: Int32Array, w: number, src: Uint32Array, dst: Uint32Array, at: number, words: number): boolean {
  for (let k = 0; k < words; k++) {
    if (e[w + F_SRC + k] !== (src[at + k] | 0) || e[w + F_DST + k] !== (dst[at + k] | 0)) return false;
  }
  return true;
}
