// IPv4 routes added and removed in place, in a DIR-24-8 table that PMDs are reading: a
// change rewrites only the entries its prefix covers (as DPDK's rte_lpm_add and
// rte_lpm_delete do), in the control plane, while lookups go on in other threads.
//
// Why a reader never routes wrongly: every entry is one 32-bit word, written whole, and
// holds the answer for its addresses either before or after the change. A /24 that gets
// its first longer prefix gets a tbl8 group filled completely before the tbl24 word points
// to it; a group whose last longer prefix goes is unlinked by one word (its /24's next
// hop), and reused only after TableSpace's grace period.
//
// Besides the table, the writer keeps in its own memory each entry's depth (the length + 1
// of the route that set it; compileLpm4's `depths`) and the routes by prefix.
import { NO_ROUTE, type Lpm4Depths, type Lpm4Table } from './lpm4.ts';
import { TableSpace } from './table-space.ts';

const GROUP_ENTRIES = 256;

/** Keys of routes longer than /24 start here; those of /24 and shorter are below. */
const LONG_ROUTES = 2 ** 29;

/**
 * A route's key: the masked prefix and the length in one exact number. A /24 or shorter
 * (most of a full table) is its first 24 bits times 32 plus its length: below 2^29, a small
 * integer, which a Map keeps without a heap number of its own (a million routes: 16 MiB less).
 */
export function route4Key(prefix: number, length: number): number {
  return length <= 24 ? (prefix >>> 8) * 32 + length : LONG_ROUTES + (prefix >>> 0) * 8 + (length - 25);
}

/** The masked prefix of a route4Key. */
export function route4Prefix(key: number): number {
  return key < LONG_ROUTES ? Math.floor(key / 32) * 256 : Math.floor((key - LONG_ROUTES) / 8);
}

/** The length of a route4Key. */
export function route4Length(key: number): number {
  return key < LONG_ROUTES ? key % 32 : 25 + ((key - LONG_ROUTES) % 8);
}

/** prefix with the bits beyond length cleared, as a u32 */
export function mask4(prefix: number, length: number): number {
  return length === 0 ? 0 : (prefix & (-1 << (32 - length))) >>> 0;
}

export class Lpm4Writer {
  readonly table: Lpm4Table;
  /** the routes in the table: route4Key -> next hop */
  readonly routes = new Map<number, number>();
  private readonly tbl24: Int32Array;
  private readonly tbl8: Int32Array;
  private readonly depth24: Uint8Array;
  private readonly depth8: Uint8Array;
  private readonly groups: TableSpace;

  /** Over a table compiled with depths, from `routes` (the same ones, later entries winning). */
  constructor(table: Lpm4Table, depths: Lpm4Depths, routes: { prefix: ArrayLike<number>; length: ArrayLike<number>; nextHop: ArrayLike<number> }, now?: () => number) {
    this.table = table;
    this.tbl24 = new Int32Array(table.tbl24);
    this.tbl8 = new Int32Array(table.tbl8);
    this.depth24 = new Uint8Array(depths.tbl24);
    this.depth8 = new Uint8Array(depths.tbl8);
    this.groups = new TableSpace(depths.usedGroups, table.tbl8Groups, now);
    for (let i = 0; i < routes.length.length; i++) {
      this.routes.set(route4Key(mask4(routes.prefix[i], routes.length[i]), routes.length[i]), routes.nextHop[i]);
    }
  }

  /** tbl8 groups in use (freed ones count until they may be reused) */
  get usedGroups(): number {
    return this.groups.used;
  }

  /**
   * Adds the route, or gives its prefix a new next hop. Returns false, changing nothing,
   * when tbl8 has no room for the group the route needs (compile the table anew, bigger).
   */
  set(prefix: number, length: number, nextHop: number): boolean {
    prefix = mask4(prefix, length);
    const depth = length + 1;
    if (length <= 24) {
      const first = length === 0 ? 0 : prefix >>> 8;
      this.overwrite(first, first + (1 << (24 - length)), depth, nextHop, depth, false);
    } else {
      const slash24 = prefix >>> 8;
      const entry = this.tbl24[slash24];
      if (entry >= 0) {
        const group = this.groups.alloc(1);
        if (group < 0) return false;
        const base = group * GROUP_ENTRIES;
        // The group starts as its /24's entry, as compileLpm4 makes it.
        this.tbl8.fill(entry, base, base + GROUP_ENTRIES);
        this.depth8.fill(this.depth24[slash24], base, base + GROUP_ENTRIES);
        this.fillGroup(base, prefix, length, depth, nextHop, depth, false);
        // Atomics.store: the group's entries are all written before a reader can follow
        // the pointer to them (a plain store could be reordered ahead of the fill).
        Atomics.store(this.tbl24, slash24, ~base);
      } else this.fillGroup(~entry, prefix, length, depth, nextHop, depth, false);
    }
    this.routes.set(route4Key(prefix, length), nextHop);
    return true;
  }

  /** Removes the route, if there is one: its addresses go to the longest shorter prefix. */
  delete(prefix: number, length: number): void {
    prefix = mask4(prefix, length);
    if (!this.routes.delete(route4Key(prefix, length))) return;
    const { nextHop, depth: parentDepth } = this.covering(prefix, length);
    const depth = length + 1;
    if (length <= 24) {
      const first = length === 0 ? 0 : prefix >>> 8;
      this.overwrite(first, first + (1 << (24 - length)), parentDepth, nextHop, depth, true);
      return;
    }
    const slash24 = prefix >>> 8;
    const base = ~this.tbl24[slash24];
    this.fillGroup(base, prefix, length, parentDepth, nextHop, depth, true);
    // A group left with no prefix longer than /24 holds one next hop: its /24 takes it back.
    for (let j = base; j < base + GROUP_ENTRIES; j++) if (this.depth8[j] > 25) return;
    this.depth24[slash24] = this.depth8[base];
    Atomics.store(this.tbl24, slash24, this.tbl8[base]);
    this.groups.release(base / GROUP_ENTRIES, 1);
  }

  /** The next hop and depth of the longest route shorter than `length` covering prefix. */
  private covering(prefix: number, length: number): { nextHop: number; depth: number } {
    for (let l = length - 1; l >= 0; l--) {
      const nextHop = this.routes.get(route4Key(mask4(prefix, l), l));
      if (nextHop !== undefined) return { nextHop, depth: l + 1 };
    }
    return { nextHop: NO_ROUTE, depth: 0 };
  }

  /**
   * tbl24 entries [from, to), and the groups they point to: those set by a route of
   * depth `replaced` (exact), or of `replaced` or less, get (depth, nextHop).
   */
  private overwrite(from: number, to: number, depth: number, nextHop: number, replaced: number, exact: boolean): void {
    const tbl24 = this.tbl24;
    const depth24 = this.depth24;
    for (let i = from; i < to; i++) {
      const entry = tbl24[i];
      if (entry < 0) this.fillRange(~entry, ~entry + GROUP_ENTRIES, depth, nextHop, replaced, exact);
      else if (exact ? depth24[i] === replaced : depth24[i] <= replaced) {
        depth24[i] = depth;
        tbl24[i] = nextHop;
      }
    }
  }

  /** The entries of the group at `base` that prefix/length covers: as overwrite(). */
  private fillGroup(base: number, prefix: number, length: number, depth: number, nextHop: number, replaced: number, exact: boolean): void {
    const first = base + (prefix & 0xff);
    this.fillRange(first, first + (1 << (32 - length)), depth, nextHop, replaced, exact);
  }

  private fillRange(from: number, to: number, depth: number, nextHop: number, replaced: number, exact: boolean): void {
    const tbl8 = this.tbl8;
    const depth8 = this.depth8;
    for (let j = from; j < to; j++) {
      if (exact ? depth8[j] === replaced : depth8[j] <= replaced) {
        depth8[j] = depth;
        tbl8[j] = nextHop;
      }
    }
  }
}
