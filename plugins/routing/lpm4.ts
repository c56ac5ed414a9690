// IPv4 longest-prefix match for the routing plugin: a route list compiled into DIR-24-8
// tables in shared buffers (built anywhere, e.g. in a piscina worker, and read by every
// PMD thread), and a small reader class whose lookup is one or two typed-array loads.
//
// Design: DIR-24-8-BASIC, Gupta, Lin, McKeown, "Routing Lookups in Hardware at Memory
// Access Speeds", IEEE INFOCOM 1998, as DPDK's rte_lpm implements it. A first-level table
// of 2^24 entries is indexed by the top 24 bits of the address; an entry holds the next hop
// of the longest prefix of length <= 24 covering it, or points to a 256-entry second-level
// block ("tbl8 group") indexed by the last 8 bits, made for each /24 that holds a longer
// prefix. Chosen because a lookup is at most two dependent loads with no loop and no
// branch beyond the one on the entry's sign; its cost is memory (64 MiB for the first
// level, 1 KiB per /24 with longer prefixes), which a router can afford once per table.
//
// The tables are built from the whole route list (compileLpm4 is a pure function of its
// arguments); lpm4-update.ts then changes them in place, a route at a time, while PMDs read.

import { isSharedBuffer, sharedBuffer } from '../../src/pipeline/api.ts';

/** What a lookup returns when no route covers the address: next hops start at 1. */
export const NO_ROUTE = 0;
/** The largest next hop a route may carry: entries are int32, and negative ones are links. */
export const MAX_NEXT_HOP = 0x7fffffff;
/** Layout version of an Lpm4Table, checked by the reader. */
export const LPM4_FORMAT = 'dir-24-8/1';

/**
 * A route. `prefix` is the network address as a u32 in host order (10.0.0.0 is 0x0a000000;
 * an int32 with the same bits is accepted); bits beyond `length` are ignored, as DPDK's
 * rte_lpm_add masks the address with the depth. `nextHop` is 1 .. MAX_NEXT_HOP.
 */
export interface Route4 {
  prefix: number;
  length: number;
  nextHop: number;
}

/**
 * The same routes as columns: route i is (prefix[i], length[i], nextHop[i]). Cheaper to
 * build and to post to a worker (three buffers, no million objects) than Route4[].
 */
export interface Route4Columns {
  prefix: Uint32Array;
  length: Uint8Array;
  nextHop: Uint32Array;
}

/**
 * A compiled table: plain data, safe to structured-clone (postMessage shares the buffers,
 * it does not copy them). Never written after compileLpm4 returns.
 */
export interface Lpm4Table {
  format: typeof LPM4_FORMAT;
  /** 2^24 int32 entries: >= 0 a next hop (NO_ROUTE included); < 0: ~entry is the index in tbl8 of a group's first entry */
  tbl24: ArrayBufferLike;
  /** tbl8Groups groups of 256 int32 next hops (those past the compiled ones: room for changes in place) */
  tbl8: ArrayBufferLike;
  tbl8Groups: number;
}

/** Error codes of LpmError. */
export const LPM_ERRORS = {
  LPM_BAD_ROUTE: 'a route field is missing or out of range',
  LPM_TABLE_FULL: 'more second-level blocks than the entry format can address',
  LPM_BAD_TABLE: 'a table passed to a reader is not what the compiler produces',
} as const;

/** A route list or table refused; `field` names the culprit (`routes[12].length`). */
export class LpmError extends Error {
  readonly code: keyof typeof LPM_ERRORS;
  readonly field: string;
  constructor(code: keyof typeof LPM_ERRORS, field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'LpmError';
    this.code = code;
    this.field = field;
  }
}

const TBL24_ENTRIES = 1 << 24;
/** ~(group << 8) must stay negative: group < 2^23 (an 8 GiB tbl8, far beyond any real table) */
const MAX_TBL8_GROUPS = 1 << 23;

/** Throws LpmError unless nextHop is an integer 1 .. MAX_NEXT_HOP. */
export function checkNextHop(nextHop: number, field: string): void {
  if (!Number.isInteger(nextHop) || nextHop < 1 || nextHop > MAX_NEXT_HOP) {
    throw new LpmError('LPM_BAD_ROUTE', field, `next hop ${nextHop} is not an integer 1 .. ${MAX_NEXT_HOP}`);
  }
}

/** Throws LpmError unless length is an integer 0 .. max. */
export function checkLength(length: number, max: number, field: string): void {
  if (!Number.isInteger(length) || length < 0 || length > max) {
    throw new LpmError('LPM_BAD_ROUTE', field, `prefix length ${length} is not an integer 0 .. ${max}`);
  }
}

function columnsOf(routes: readonly Route4[]): Route4Columns {
  const n = routes.length;
  const cols: Route4Columns = { prefix: new Uint32Array(n), length: new Uint8Array(n), nextHop: new Uint32Array(n) };
  for (let i = 0; i < n; i++) {
    const r = routes[i];
    const p = r.prefix;
    if (!Number.isInteger(p) || p < -0x80000000 || p > 0xffffffff) {
      throw new LpmError('LPM_BAD_ROUTE', `routes[${i}].prefix`, `${p} is not a u32`);
    }
    checkLength(r.length, 32, `routes[${i}].length`);
    checkNextHop(r.nextHop, `routes[${i}].nextHop`);
    cols.prefix[i] = p;
    cols.length[i] = r.length;
    cols.nextHop[i] = r.nextHop;
  }
  return cols;
}

function checkColumns(cols: Route4Columns): void {
  const n = cols.prefix.length;
  if (cols.length.length !== n || cols.nextHop.length !== n) {
    throw new LpmError('LPM_BAD_ROUTE', 'routes', `columns of different lengths (${n}, ${cols.length.length}, ${cols.nextHop.length})`);
  }
  for (let i = 0; i < n; i++) {
    if (cols.length[i] > 32) checkLength(cols.length[i], 32, `routes.length[${i}]`);
    const nh = cols.nextHop[i];
    if (nh < 1 || nh > MAX_NEXT_HOP) checkNextHop(nh, `routes.nextHop[${i}]`);
  }
}

/** What a table changed in place needs besides the table (lpm4-update.ts). */
export interface Lpm4Depths {
  /** per tbl24 entry that is a next hop: the length + 1 of the route it came from (0: none) */
  tbl24: ArrayBufferLike;
  /** the same per tbl8 entry */
  tbl8: ArrayBufferLike;
  /** groups in use: the rest of tbl8 is room for more */
  usedGroups: number;
}

export interface Lpm4Options {
  /** tbl8 groups to leave free for routes added later */
  spareGroups?: number;
  /** also record each entry's prefix length (Lpm4Depths), for changes in place */
  depths?: boolean;
}

/**
 * Compiles a route list into DIR-24-8 tables. The longest prefix covering an address wins;
 * of two routes with the same prefix and length, the later in the list wins. Throws
 * LpmError (LPM_BAD_ROUTE) naming the first bad route.
 */
export function compileLpm4(routes: readonly Route4[] | Route4Columns, options: Lpm4Options = {}): Lpm4Table & { depths?: Lpm4Depths } {
  let cols: Route4Columns;
  if (Array.isArray(routes)) cols = columnsOf(routes);
  else {
    cols = routes as Route4Columns;
    checkColumns(cols);
  }
  const n = cols.prefix.length;
  const prefixes = cols.prefix;
  const lengths = cols.length;
  const nextHops = cols.nextHop;

  // Counting sort of the route indices by length, stable: filling shorter prefixes first
  // lets a longer one simply overwrite the range it covers, and within one length the
  // later of two duplicates overwrites the earlier.
  const start = new Int32Array(34);
  for (let i = 0; i < n; i++) start[lengths[i] + 1]++;
  for (let l = 1; l < 34; l++) start[l] += start[l - 1];
  const byLength = new Int32Array(n);
  const next = start.slice(0, 33);
  for (let i = 0; i < n; i++) byLength[next[lengths[i]]++] = i;

  const tbl24Buffer = sharedBuffer(TBL24_ENTRIES * 4);
  const tbl24 = new Int32Array(tbl24Buffer);
  // Depths are the control plane's own (the PMDs never read them), but shared memory all
  // the same: in a job, made where the tables are (written once, sparse), not copied back.
  const depth24 = options.depths ? new Uint8Array(sharedBuffer(TBL24_ENTRIES)) : null;

  // Lengths 0 .. 16 fill 256 .. 2^24 entries each: a duplicate is skipped (only the last
  // of each prefix is filled), so that a list repeating a short prefix costs no more than
  // one fill. Longer duplicates cost at most 256 entries each and are simply rewritten.
  const winner = new Int32Array(1 << 16).fill(-1);
  for (let l = 0; l <= 24; l++) {
    const shift = 32 - l;
    const span = 1 << (24 - l);
    if (l <= 16) {
      for (let k = start[l]; k < start[l + 1]; k++) {
        const i = byLength[k];
        winner[l === 0 ? 0 : prefixes[i] >>> shift] = i;
      }
    }
    for (let k = start[l]; k < start[l + 1]; k++) {
      const i = byLength[k];
      const key = l === 0 ? 0 : prefixes[i] >>> shift;
      if (l <= 16) {
        if (winner[key] !== i) continue;
        winner[key] = -1;
      }
      const first = key << (24 - l);
      tbl24.fill(nextHops[i], first, first + span);
      depth24?.fill(l + 1, first, first + span);
    }
  }

  // One tbl8 group per /24 holding a longer prefix: count them (a bitmap of the 2^24 /24s)
  // so that the buffer is allocated once at its final size.
  const seen = new Int32Array(TBL24_ENTRIES >>> 5);
  let groups = 0;
  for (let k = start[25]; k < n; k++) {
    const slash24 = prefixes[byLength[k]] >>> 8;
    const bit = 1 << (slash24 & 31);
    if ((seen[slash24 >>> 5] & bit) === 0) {
      seen[slash24 >>> 5] |= bit;
      groups++;
    }
  }
  if (groups > MAX_TBL8_GROUPS) {
    throw new LpmError('LPM_TABLE_FULL', 'routes', `${groups} /24s hold longer prefixes; at most ${MAX_TBL8_GROUPS} can`);
  }
  const capacity = Math.min(groups + (options.spareGroups ?? 0), MAX_TBL8_GROUPS);
  const tbl8Buffer = sharedBuffer(capacity * 256 * 4);
  const tbl8 = new Int32Array(tbl8Buffer);
  const depth8 = options.depths ? new Uint8Array(sharedBuffer(capacity * 256)) : null;
  let used = 0;
  for (let l = 25; l <= 32; l++) {
    const span = 1 << (32 - l);
    const mask = -span;
    for (let k = start[l]; k < start[l + 1]; k++) {
      const i = byLength[k];
      const prefix = prefixes[i];
      const slash24 = prefix >>> 8;
      let entry = tbl24[slash24];
      if (entry >= 0) {
        // The group starts as the /24's entry: addresses under no longer prefix keep the
        // route they had, so that one read answers (prefix expansion, as in the paper).
        const base = used++ << 8;
        tbl8.fill(entry, base, base + 256);
        depth8?.fill(depth24![slash24], base, base + 256);
        entry = ~base;
        tbl24[slash24] = entry;
      }
      const first = ~entry | (prefix & 0xff & mask);
      tbl8.fill(nextHops[i], first, first + span);
      depth8?.fill(l + 1, first, first + span);
    }
  }
  const table = { format: LPM4_FORMAT, tbl24: tbl24Buffer, tbl8: tbl8Buffer, tbl8Groups: capacity } as const;
  if (depth24 === null) return table;
  return { ...table, depths: { tbl24: depth24.buffer as ArrayBufferLike, tbl8: depth8!.buffer as ArrayBufferLike, usedGroups: groups } };
}

/**
 * Reads an Lpm4Table; any number of threads may each hold one over the same buffers, also
 * while lpm4-update.ts changes them (each entry is one word, written whole).
 */
export class Lpm4 {
  readonly table: Lpm4Table;
  private readonly tbl24: Int32Array;
  private readonly tbl8: Int32Array;

  constructor(table: Lpm4Table) {
    if (table.format !== LPM4_FORMAT) throw new LpmError('LPM_BAD_TABLE', 'format', `${String(table.format)} is not ${LPM4_FORMAT}`);
    if (!isSharedBuffer(table.tbl24) || table.tbl24.byteLength !== TBL24_ENTRIES * 4) {
      throw new LpmError('LPM_BAD_TABLE', 'tbl24', `not a shared buffer of ${TBL24_ENTRIES * 4} bytes`);
    }
    if (!isSharedBuffer(table.tbl8) || table.tbl8.byteLength !== table.tbl8Groups * 1024) {
      throw new LpmError('LPM_BAD_TABLE', 'tbl8', `not a shared buffer of ${table.tbl8Groups} groups of 1024 bytes`);
    }
    this.table = table;
    this.tbl24 = new Int32Array(table.tbl24);
    this.tbl8 = new Int32Array(table.tbl8);
  }

  /** Bytes of the table's buffers. */
  get bytes(): number {
    return this.table.tbl24.byteLength + this.table.tbl8.byteLength;
  }

  /** The next hop of the longest prefix covering addr (a u32, or an int32 with the same bits), or NO_ROUTE. */
  lookup(addr: number): number {
    const entry = this.tbl24[addr >>> 8];
    return entry >= 0 ? entry : this.tbl8[~entry | (addr & 0xff)];
  }

  /** results[i] = lookup(addrs[i]) for i < count. */
  lookupBurst(addrs: Uint32Array, results: Uint32Array, count: number): void {
    // NB: the arrays in locals; the loop's loads are independent, so the CPU overlaps
    // the cache misses of a burst's addresses.
    const tbl24 = this.tbl24;
    const tbl8 = this.tbl8;
    for (let i = 0; i < count; i++) {
      const addr = addrs[i];
      const entry = tbl24[addr >>> 8];
      results[i] = entry >= 0 ? entry : tbl8[~entry | (addr & 0xff)];
    }
  }
}
