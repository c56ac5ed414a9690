// IPv6 longest-prefix match for the routing plugin: a route list compiled into a compressed
// multibit trie in shared buffers (built anywhere, read by every PMD thread), and a small
// reader class that looks up the 16 address bytes where they lie in a packet buffer.
//
// Design: Poptrie, Asai and Ohara, "Poptrie: A Compressed Trie with Population Count for
// Fast and Scalable Software IP Routing Table Lookup", ACM SIGCOMM 2015: a multibit trie
// with leaf pushing (Srinivasan and Varghese, "Fast Address Lookups Using Controlled
// Prefix Expansion", ACM TOCS 1999) whose nodes keep, instead of 2^stride slots, two
// bitmaps: `vec` marks the slots that lead to a child node, `leafvec` the slots where a run
// of equal next hops begins. A node's children are contiguous, and so are its leaves (one
// per run), so a slot's child or leaf is found by counting the bits set before it.
// Adaptations here:
// - Poptrie's direct pointing on the first 16 bits: 65536 entries, as the 16-8-8 stride
//   plan of a plain multibit trie.
// - Strides of 8 bits, so that each level reads one address byte as it lies in the packet
//   (no shifting across bytes); the 256-bit bitmaps are eight 32-bit words, and the bits
//   set in the words before a slot's word are stored per word (a rank byte), so a level
//   costs one popcount of one word (Poptrie uses 6-bit strides and 64-bit popcnt, which
//   JavaScript lacks).
// - Path compression: a level where the routes below all share the address byte and none
//   ends becomes a byte to compare in the next node (see build()). /48s and /64s spread
//   over the address space otherwise make chains of one-child nodes, one dependent memory
//   read each.
// - Up to 4 leaves inline in their node, and lookupBurst over a table larger than the
//   caches advances its lookups together, level by level, so that their reads overlap.
// Why not the plain 16-8-8 trie (DPDK's rte_lpm6 with its 24-8-8 strides): its nodes are
// 1 KiB each, and a /48 or /64 under little-shared upper bits costs 4 to 6 nodes, some
// hundreds of MiB for 100k such routes. A node here is 128 bytes.
//
// The tables are built from the whole route list (compileLpm6 is a pure function of its
// arguments); lpm6-update.ts then changes them in place, a subtree at a time, while PMDs read.
import { isSharedBuffer, sharedBuffer } from '../../src/pipeline/api.ts';
import { checkLength, checkNextHop, LpmError, NO_ROUTE } from './lpm4.ts';

/** Layout version of an Lpm6Table, checked by the reader. */
export const LPM6_FORMAT = 'poptrie-16-8/1';

/**
 * A route: `prefix` holds the 16 address bytes in network order; bits beyond `length` are
 * ignored. `nextHop` is 1 .. MAX_NEXT_HOP (lookups return NO_ROUTE, 0, for no route).
 */
export interface Route6 {
  prefix: Uint8Array | readonly number[];
  length: number;
  nextHop: number;
}

/** The same routes as columns: route i is (prefix[16i .. 16i + 16), length[i], nextHop[i]). */
export interface Route6Columns {
  prefix: Uint8Array;
  length: Uint8Array;
  nextHop: Uint32Array;
}

/**
 * A compiled table: plain data, safe to structured-clone (postMessage shares the buffers,
 * it does not copy them). Never written after compileLpm6 returns.
 */
export interface Lpm6Table {
  format: typeof LPM6_FORMAT;
  /** 65536 int32 entries, by the first 16 bits: >= 0 a next hop (NO_ROUTE included); < 0: ~entry is a node index */
  direct: ArrayBufferLike;
  /**
   * nodeCount nodes of NODE_WORDS int32 words (layout below), then leafCount int32 next
   * hops, then room for more (lpm6-update.ts places nodes and leaves anywhere in it)
   */
  nodes: ArrayBufferLike;
  nodeCount: number;
  /** the leaves of the nodes with more than INLINE_LEAVES of them */
  leafCount: number;
}

// A node: NODE_WORDS int32 words. The first 64 bytes hold what a lookup passing through
// reads (path, child bitmap, child ranks), the rest what the last level reads; they are
// whole cache lines when the allocator aligns the buffer to 64 bytes (JavaScript cannot).
// Slot v (the node's address byte) is bit v & 31 of word v >>> 5 of each bitmap. Rank and
// path bytes are read through a Uint8Array over the same buffer, as they were written, so
// the layout does not depend on the machine's byte order.
/** the number of path bytes (0 .. 13) the address must match before the node's own byte */
export const PATH_LENGTH = 0;
/** index of the node's first child */
export const BASE1 = 1;
/** words 2..3 as 8 bytes: bits set in vec words 0 .. w-1, for w = 0..7 (at most 224) */
export const VEC_RANK = 2;
/** words 4..7 as bytes: the path */
export const PATH = 4;
/** words 8..15: slot v leads to a child node */
export const VEC = 8;
/** the next hop of an address that leaves the path (also: what the node's parent slot held, leaf pushing) */
export const PATH_MISS = 16;
/** index in the table's words of the node's first leaf: its own INLINE words, or after the last node */
export const BASE0 = 17;
/** words 18..19 as 8 bytes: bits set in leafvec words 0 .. w-1 */
export const LEAF_RANK = 18;
/** words 20..27: slot v begins a run of leaves with one next hop (slot 0 always does) */
export const LEAFVEC = 20;
/**
 * words 28..31: the leaves of a node that has at most INLINE_LEAVES, most nodes where a
 * route ends (the slots before it, its own, those after): read with leafvec, not one
 * dependent memory read later.
 */
export const INLINE = 28;
const INLINE_LEAVES = 4;
/** a node's offset is index << 5 */
export const NODE_WORDS = 32;
export const NODE_SHIFT = 5;
/** node offsets in bytes (index << 7) stay below 2^31 */
export const MAX_NODES = 1 << 23;
export const DIRECT_ENTRIES = 1 << 16;
/** lookupBurst works through longer bursts in pieces of this many */
const MAX_BURST = 256;
/**
 * Tables larger than this are read in lockstep by default: about where they stop fitting
 * the caches of a core (2 MiB L2 on the machines measured; the L3 is shared).
 */
export const LOCKSTEP_MIN_BYTES = 2 << 20;

/** Bits set in a 32-bit word (SWAR; JavaScript has no popcount). Every step stays int32. */
export function popcount32(x: number): number {
  x = (x - ((x >>> 1) & 0x55555555)) | 0;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** Masked keys (16 bytes each), lengths and next hops, validated. */
export interface Keys {
  count: number;
  bytes: Uint8Array;
  lengths: Uint8Array;
  nextHops: Int32Array;
}

export function keysOf(routes: readonly Route6[] | Route6Columns): Keys {
  let count: number;
  const columns = !Array.isArray(routes);
  if (columns) {
    const cols = routes as Route6Columns;
    count = cols.length.length;
    if (cols.prefix.length !== 16 * count || cols.nextHop.length !== count) {
      throw new LpmError('LPM_BAD_ROUTE', 'routes', `columns do not hold ${count} routes (${cols.prefix.length} prefix bytes, ${cols.nextHop.length} next hops)`);
    }
  } else count = (routes as readonly Route6[]).length;
  const keys: Keys = { count, bytes: new Uint8Array(16 * count), lengths: new Uint8Array(count), nextHops: new Int32Array(count) };
  for (let i = 0; i < count; i++) {
    let length: number;
    let nextHop: number;
    if (columns) {
      const cols = routes as Route6Columns;
      length = cols.length[i];
      nextHop = cols.nextHop[i];
      checkLength(length, 128, `routes.length[${i}]`);
      checkNextHop(nextHop, `routes.nextHop[${i}]`);
      keys.bytes.set(cols.prefix.subarray(16 * i, 16 * i + 16), 16 * i);
    } else {
      const r = (routes as readonly Route6[])[i];
      length = r.length;
      nextHop = r.nextHop;
      checkLength(length, 128, `routes[${i}].length`);
      checkNextHop(nextHop, `routes[${i}].nextHop`);
      const p = r.prefix;
      if (p == null || p.length !== 16) throw new LpmError('LPM_BAD_ROUTE', `routes[${i}].prefix`, 'is not 16 bytes');
      for (let b = 0; b < 16; b++) {
        const byte = p[b];
        if (!Number.isInteger(byte) || byte < 0 || byte > 255) throw new LpmError('LPM_BAD_ROUTE', `routes[${i}].prefix[${b}]`, `${byte} is not a byte`);
        keys.bytes[16 * i + b] = byte;
      }
    }
    keys.lengths[i] = length;
    keys.nextHops[i] = nextHop;
    // Clear the bits beyond the length (as DPDK's rte_lpm6_add does with the depth).
    for (let b = length >>> 3; b < 16; b++) {
      const kept = length - 8 * b;
      keys.bytes[16 * i + b] &= kept <= 0 ? 0 : (0xff00 >>> kept) & 0xff;
    }
  }
  return keys;
}

/**
 * Route indices ordered by prefix (bytes, most significant first), then length; of two
 * routes with the same prefix and length only the later in the list is kept. In this
 * order, the routes under one prefix are contiguous, and within them a prefix comes before
 * the longer ones it covers (its later bytes are zero).
 */
export function sortedUnique(keys: Keys): Int32Array {
  const n = keys.count;
  const words = new Uint32Array(4 * n);
  const view = new DataView(keys.bytes.buffer, keys.bytes.byteOffset, keys.bytes.byteLength);
  for (let i = 0; i < 4 * n; i++) words[i] = view.getUint32(4 * i);
  const lengths = keys.lengths;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => {
    for (let w = 0; w < 4; w++) {
      const x = words[4 * a + w];
      const y = words[4 * b + w];
      if (x !== y) return x < y ? -1 : 1;
    }
    return lengths[a] - lengths[b] || a - b;
  });
  let m = 0;
  for (let k = 0; k < n; k++) {
    const i = order[k];
    const j = k + 1 < n ? order[k + 1] : -1;
    const same = j >= 0 && lengths[i] === lengths[j] && words[4 * i] === words[4 * j] && words[4 * i + 1] === words[4 * j + 1] && words[4 * i + 2] === words[4 * j + 2] && words[4 * i + 3] === words[4 * j + 3];
    if (!same) order[m++] = i;
  }
  return order.subarray(0, m);
}

/** Builds the trie into growable arrays, then copies it into shared buffers (or lpm6-update.ts places it). */
export class TrieBuilder {
  private readonly keys: Keys;
  private readonly routes: Int32Array;
  nodes = new Int32Array(NODE_WORDS * 1024);
  /** the same memory as nodes, for the rank and path bytes */
  nodeBytes = new Uint8Array(this.nodes.buffer);
  nodeCount = 0;
  /** leaves not inline; BASE0 of their node is ~(index here) until compileLpm6 places them */
  leaves = new Int32Array(4096);
  leafCount = 0;
  /** per depth: the next hop of each slot of the node being built */
  private readonly slots: Int32Array[] = [];
  /** per depth: the node's routes that end inside it (at most 2 + 4 + .. + 256 = 510, after duplicates are gone) */
  private readonly inside: Int32Array[] = [];
  private readonly vec = new Int32Array(8);
  private readonly leafvec = new Int32Array(8);

  constructor(keys: Keys, routes: Int32Array) {
    this.keys = keys;
    this.routes = routes;
    for (let d = 0; d < 16; d++) {
      this.slots.push(new Int32Array(256));
      this.inside.push(new Int32Array(512));
    }
  }

  allocNodes(count: number): number {
    const first = this.nodeCount;
    this.nodeCount += count;
    if (this.nodeCount > MAX_NODES) throw new LpmError('LPM_TABLE_FULL', 'routes', `more than ${MAX_NODES} trie nodes`);
    if (this.nodeCount * NODE_WORDS > this.nodes.length) {
      const bigger = new Int32Array(Math.max(this.nodes.length * 2, this.nodeCount * NODE_WORDS));
      bigger.set(this.nodes);
      this.nodes = bigger;
      this.nodeBytes = new Uint8Array(bigger.buffer);
    }
    return first;
  }

  private addLeaf(nextHop: number): void {
    if (this.leafCount === this.leaves.length) {
      const bigger = new Int32Array(this.leaves.length * 2);
      bigger.set(this.leaves);
      this.leaves = bigger;
    }
    this.leaves[this.leafCount++] = nextHop;
  }

  /**
   * Fills node `node`, reached at address byte `depth`, from the routes routes[lo .. hi),
   * which share the first `depth` bytes and are longer than 8 * depth bits; `inherited` is
   * the next hop of the longest shorter prefix above (leaf pushing).
   */
  build(node: number, depth: number, lo: number, hi: number, inherited: number): void {
    const { bytes, lengths, nextHops } = this.keys;
    const routes = this.routes;
    const at = node << NODE_SHIFT;

    // Path compression (PATRICIA, Morrison, JACM 1968; the skip of Nilsson and Karlsson's
    // LC-trie, IEEE JSAC 1999): while no route ends at this byte and all the routes share it, the
    // level would be a node with one child and a single leaf run; it becomes one path byte
    // of this node instead. Sorted, the routes share the byte if the first and the last
    // do, and a route ending here would be the first (its later bytes are zero).
    let pathLength = 0;
    while (lengths[routes[lo]] > 8 * depth + 8 && bytes[16 * routes[lo] + depth] === bytes[16 * routes[hi - 1] + depth]) {
      this.nodeBytes[(at + PATH) * 4 + pathLength++] = bytes[16 * routes[lo] + depth];
      depth++;
    }
    this.nodes[at + PATH_LENGTH] = pathLength;
    this.nodes[at + PATH_MISS] = inherited;

    const slots = this.slots[depth];
    const inside = this.inside[depth];
    const last = 8 * depth + 8;
    slots.fill(inherited);

    // Routes ending in this node expand to slot ranges, shorter first so that a longer
    // one overwrites what it covers; children are counted (one per distinct byte).
    let insideCount = 0;
    let children = 0;
    const vec = this.vec.fill(0);
    let previous = -1;
    for (let k = lo; k < hi; k++) {
      const r = routes[k];
      if (lengths[r] <= last) inside[insideCount++] = r;
      else {
        const v = bytes[16 * r + depth];
        if (v !== previous) {
          children++;
          vec[v >>> 5] |= 1 << v;
          previous = v;
        }
      }
    }
    for (let length = last - 7; length <= last; length++) {
      for (let j = 0; j < insideCount; j++) {
        const r = inside[j];
        if (lengths[r] !== length) continue;
        const first = bytes[16 * r + depth];
        slots.fill(nextHops[r], first, first + (1 << (last - length)));
      }
    }

    const firstChild = this.allocNodes(children);
    const nodes = this.nodes;
    const leafvec = this.leafvec.fill(0);
    let runs = 0;
    for (let v = 0; v < 256; v++) {
      if (v === 0 || slots[v] !== slots[v - 1]) {
        leafvec[v >>> 5] |= 1 << v;
        runs++;
      }
    }
    if (runs <= INLINE_LEAVES) {
      nodes[at + BASE0] = at + INLINE;
      for (let v = 0, j = 0; v < 256; v++) if (v === 0 || slots[v] !== slots[v - 1]) nodes[at + INLINE + j++] = slots[v];
    } else {
      nodes[at + BASE0] = ~this.leafCount;
      for (let v = 0; v < 256; v++) if (v === 0 || slots[v] !== slots[v - 1]) this.addLeaf(slots[v]);
    }
    const nodeBytes = this.nodeBytes;
    let vecRank = 0;
    let leafRank = 0;
    for (let w = 0; w < 8; w++) {
      nodes[at + VEC + w] = vec[w];
      nodes[at + LEAFVEC + w] = leafvec[w];
      nodeBytes[(at + VEC_RANK) * 4 + w] = vecRank;
      nodeBytes[(at + LEAF_RANK) * 4 + w] = leafRank;
      vecRank += popcount32(vec[w]);
      leafRank += popcount32(leafvec[w]);
    }
    nodes[at + BASE1] = firstChild;

    // Children in slot order, each over its contiguous run of routes.
    let child = firstChild;
    for (let k = lo; k < hi; ) {
      const r = routes[k];
      if (lengths[r] <= last) {
        k++;
        continue;
      }
      const v = bytes[16 * r + depth];
      let end = k + 1;
      while (end < hi && bytes[16 * routes[end] + depth] === v) end++;
      this.build(child++, depth + 1, k, end, slots[v]);
      k = end;
    }
  }
}

/**
 * Compiles a route list into a Poptrie. The longest prefix covering an address wins; of
 * two routes with the same prefix and length, the later in the list wins. Throws LpmError
 * (LPM_BAD_ROUTE) naming the first bad route.
 */
export function compileLpm6(routes: readonly Route6[] | Route6Columns, options: { spareNodes?: number } = {}): Lpm6Table {
  const keys = keysOf(routes);
  const sorted = sortedUnique(keys);
  const { bytes, lengths, nextHops } = keys;

  // Prefixes of up to 16 bits expand into direct entries, shorter first.
  const direct = new Int32Array(sharedBuffer(DIRECT_ENTRIES * 4));
  for (let length = 0; length <= 16; length++) {
    for (let k = 0; k < sorted.length; k++) {
      const r = sorted[k];
      if (lengths[r] !== length) continue;
      const first = (bytes[16 * r] << 8) | bytes[16 * r + 1];
      direct.fill(nextHops[r], first, first + (1 << (16 - length)));
    }
  }

  // Longer ones go into one trie per first 16 bits; sorted, they are contiguous per entry.
  const deep = sorted.filter((r) => lengths[r] > 16);
  const builder = new TrieBuilder(keys, deep);
  for (let k = 0; k < deep.length; ) {
    const r = deep[k];
    const top = (bytes[16 * r] << 8) | bytes[16 * r + 1];
    let end = k + 1;
    while (end < deep.length && ((bytes[16 * deep[end]] << 8) | bytes[16 * deep[end] + 1]) === top) end++;
    const node = builder.allocNodes(1);
    builder.build(node, 2, k, end, direct[top]);
    direct[top] = ~node;
    k = end;
  }

  // The leaves not inline go after the last node; room for changes in place after them,
  // in whole nodes.
  const nodeWords = builder.nodeCount * NODE_WORDS;
  const usedNodes = Math.ceil((nodeWords + builder.leafCount) / NODE_WORDS);
  const spare = Math.min(options.spareNodes ?? 0, MAX_NODES - usedNodes);
  const nodes = sharedBuffer(spare > 0 ? (usedNodes + spare) * NODE_WORDS * 4 : (nodeWords + builder.leafCount) * 4);
  const words = new Int32Array(nodes);
  words.set(builder.nodes.subarray(0, nodeWords));
  words.set(builder.leaves.subarray(0, builder.leafCount), nodeWords);
  for (let at = 0; at < nodeWords; at += NODE_WORDS) if (words[at + BASE0] < 0) words[at + BASE0] = nodeWords + ~words[at + BASE0];
  return { format: LPM6_FORMAT, direct: direct.buffer as ArrayBufferLike, nodes, nodeCount: builder.nodeCount, leafCount: builder.leafCount };
}

/**
 * Reads an Lpm6Table; any number of threads may each hold one over the same buffers, also
 * while lpm6-update.ts changes them (a changed subtree is linked in by one word).
 */
export class Lpm6 {
  readonly table: Lpm6Table;
  private readonly direct: Int32Array;
  private readonly nodes: Int32Array;
  /** the same memory as nodes, for the rank and path bytes */
  private readonly nodeBytes: Uint8Array;
  /** lookupBurst's lookups still descending: their index in the burst, their node, their next address byte */
  private readonly pending = new Int32Array(MAX_BURST);
  private readonly pendingNode = new Int32Array(MAX_BURST);
  private readonly pendingAt = new Int32Array(MAX_BURST);
  /** where lookupLockstep's first pass stores what it read, so that the reads are not optimised away */
  private readonly sink = new Int32Array(1);

  /**
   * lookupBurst advances the burst's lookups together, level by level (see
   * lookupLockstep), rather than one after the other. Measured, ns a lookup in lockstep
   * against one after the other (best of 15, /48 and /64 routes, on a busy 2-vCPU VM):
   * 0.3 MiB table 88 / 34, 1.8 MiB 131 / 118, 3.4 MiB 178 / 190, 13.5 MiB 172 / 506. By
   * default it does when the table is larger than LOCKSTEP_MIN_BYTES.
   */
  readonly lockstep: boolean;

  constructor(table: Lpm6Table, lockstep?: boolean) {
    if (table.format !== LPM6_FORMAT) throw new LpmError('LPM_BAD_TABLE', 'format', `${String(table.format)} is not ${LPM6_FORMAT}`);
    const check = (field: 'direct' | 'nodes', bytes: number): void => {
      const buffer = table[field];
      // nodes may have room for changes after what was compiled
      if (!isSharedBuffer(buffer) || buffer.byteLength < bytes || (field === 'direct' && buffer.byteLength !== bytes)) {
        throw new LpmError('LPM_BAD_TABLE', field, `not a shared buffer of ${bytes} bytes${field === 'nodes' ? ' or more' : ''}`);
      }
    };
    check('direct', DIRECT_ENTRIES * 4);
    check('nodes', (table.nodeCount * NODE_WORDS + table.leafCount) * 4);
    this.table = table;
    this.direct = new Int32Array(table.direct);
    this.nodes = new Int32Array(table.nodes);
    this.nodeBytes = new Uint8Array(table.nodes);
    this.lockstep = lockstep ?? this.bytes > LOCKSTEP_MIN_BYTES;
  }

  /** Bytes of the table in use (its nodes and leaves, not the room after them). */
  get bytes(): number {
    return this.table.direct.byteLength + (this.table.nodeCount * NODE_WORDS + this.table.leafCount) * 4;
  }

  /**
   * The next hop of the longest prefix covering the address in bytes[offset .. offset + 16)
   * (network order, as in an IPv6 header), or NO_ROUTE. The caller has checked that the
   * 16 bytes are there (a truncated packet is dropped before routing).
   */
  lookup(bytes: Uint8Array, offset: number): number {
    const entry = this.direct[(bytes[offset] << 8) | bytes[offset + 1]];
    if (entry >= 0) return entry;
    const nodes = this.nodes;
    const nodeBytes = this.nodeBytes;
    let node = ~entry << NODE_SHIFT;
    // At most 14 levels; the bound only guards against a table not made by compileLpm6
    // (a node of the last byte has no children, a path never reaches it).
    const end = offset + 16;
    for (let at = offset + 2; at < end; at++) {
      const pathLength = nodes[node + PATH_LENGTH];
      if (pathLength !== 0) {
        const path = (node + PATH) * 4;
        for (let p = 0; p < pathLength; p++) if (bytes[at + p] !== nodeBytes[path + p]) return nodes[node + PATH_MISS];
        at += pathLength;
      }
      const v = bytes[at];
      const w = v >>> 5;
      // bits 0 .. v & 31 of word w: the slots up to v
      const upTo = ~(-2 << v);
      const vec = nodes[node + VEC + w];
      if ((vec & (1 << v)) === 0) {
        return nodes[nodes[node + BASE0] + nodeBytes[(node + LEAF_RANK) * 4 + w] + popcount32(nodes[node + LEAFVEC + w] & upTo) - 1];
      }
      node = (nodes[node + BASE1] + nodeBytes[(node + VEC_RANK) * 4 + w] + popcount32(vec & upTo) - 1) << NODE_SHIFT;
    }
    return NO_ROUTE;
  }

  /**
   * results[i] = lookup(bytes, offsets[i]) for i < count: the addresses of a burst of
   * packets in one buffer, each with its 16 bytes there.
   */
  lookupBurst(bytes: Uint8Array, offsets: Uint32Array, results: Uint32Array, count: number): void {
    if (this.lockstep) {
      for (let from = 0; from < count; from += MAX_BURST) this.lookupLockstep(bytes, offsets, results, from, Math.min(count, from + MAX_BURST));
    } else {
      for (let i = 0; i < count; i++) results[i] = this.lookup(bytes, offsets[i]);
    }
  }

  /**
   * The lookups of offsets[from .. to) advanced together one trie level at a time. NB: a
   * lookup is a chain of dependent loads (one node per level), and a node not in cache
   * costs 140 ns or more (measured on a 2-vCPU VM: random reads in 16 MiB, dependent
   * 142 ns, independent 12 ns); one level of all the burst's lookups at a time gives the
   * CPU independent loads to overlap. In cache it costs more instructions than it saves.
   */
  private lookupLockstep(bytes: Uint8Array, offsets: Uint32Array, results: Uint32Array, from: number, to: number): void {
    const direct = this.direct;
    const nodes = this.nodes;
    const nodeBytes = this.nodeBytes;
    const pending = this.pending;
    const pendingNode = this.pendingNode;
    const pendingAt = this.pendingAt;
    let active = 0;
    for (let i = from; i < to; i++) {
      const offset = offsets[i];
      const entry = direct[(bytes[offset] << 8) | bytes[offset + 1]];
      if (entry >= 0) results[i] = entry;
      else {
        results[i] = NO_ROUTE;
        pending[active] = i;
        pendingAt[active] = offset + 2;
        pendingNode[active++] = ~entry << NODE_SHIFT;
      }
    }
    // As in lookup(), the bound only guards against a table not made by compileLpm6.
    for (let level = 0; active > 0 && level < 14; level++) {
      // NB: a first pass only reads both cache lines of each pending node (JavaScript has
      // no prefetch): a few instructions per lookup, so the misses of the whole burst are
      // in flight at once; the pass that uses the nodes then finds them in cache. Twice as
      // fast as without it on a 13 MiB table (measured: 302 against 600 ns a lookup, on
      // a busy machine).
      let touched = 0;
      for (let k = 0; k < active; k++) touched |= nodes[pendingNode[k] + PATH_LENGTH] | nodes[pendingNode[k] + LEAF_RANK];
      this.sink[0] = touched;
      let still = 0;
      for (let k = 0; k < active; k++) {
        const i = pending[k];
        const node = pendingNode[k];
        let at = pendingAt[k];
        const pathLength = nodes[node + PATH_LENGTH];
        if (pathLength !== 0) {
          const path = (node + PATH) * 4;
          let p = 0;
          while (p < pathLength && bytes[at + p] === nodeBytes[path + p]) p++;
          if (p < pathLength) {
            results[i] = nodes[node + PATH_MISS];
            continue;
          }
          at += pathLength;
        }
        const v = bytes[at];
        const w = v >>> 5;
        const upTo = ~(-2 << v);
        const vec = nodes[node + VEC + w];
        if ((vec & (1 << v)) === 0) {
          results[i] = nodes[nodes[node + BASE0] + nodeBytes[(node + LEAF_RANK) * 4 + w] + popcount32(nodes[node + LEAFVEC + w] & upTo) - 1];
        } else {
          pending[still] = i;
          pendingAt[still] = at + 1;
          pendingNode[still++] = (nodes[node + BASE1] + nodeBytes[(node + VEC_RANK) * 4 + w] + popcount32(vec & upTo) - 1) << NODE_SHIFT;
        }
      }
      active = still;
    }
  }
}
