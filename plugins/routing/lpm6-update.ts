// IPv6 routes added and removed in place, in a Poptrie that PMDs are reading. A node's
// children are one contiguous block found from its BASE1 word, so a subtree changes by
// copy and relink (built aside, then one word switched to it):
// - a route longer than /16 rebuilds only the deepest node whose routes it joins or leaves
//   (the rest of the trie is what a full compile would make of the same routes), into free
//   space: a new copy of that node's block of siblings holds the rebuilt node, and the
//   parent's BASE1 word is switched to it with one store; the old block and the old
//   node's subtree are freed (and reused after TableSpace's grace period);
// - a route of /16 or shorter rewrites the direct entries it covers (one word each), and
//   rebuilds the subtries under them, whose leaves it was pushed into.
// A lookup follows either the old words or the new ones, never a block half written.
// Changes made together (update()) rebuild each node, and copy each block, once: a block
// is up to 256 nodes (32 KiB), and a /32's /48s are all in one.
import { NO_ROUTE } from './lpm4.ts';
import {
  BASE0, BASE1, DIRECT_ENTRIES, INLINE, keysOf, LEAFVEC, NODE_SHIFT, NODE_WORDS, PATH, PATH_LENGTH, PATH_MISS, popcount32, sortedUnique, TrieBuilder, VEC, VEC_RANK,
  type Lpm6Table,
} from './lpm6.ts';
import { TableSpace } from './table-space.ts';

/** A route as the writer keeps it: the prefix's 16 bytes, bits beyond the length cleared. */
export interface Route6Entry {
  bytes: Uint8Array;
  length: number;
  nextHop: number;
}

/** bytes[offset .. offset + 16) with the bits beyond length cleared. */
export function mask6(bytes: ArrayLike<number>, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let b = 0; b < 16; b++) {
    const kept = length - 8 * b;
    out[b] = bytes[offset + b] & (kept >= 8 ? 0xff : kept <= 0 ? 0 : (0xff00 >>> kept) & 0xff);
  }
  return out;
}

/** A route's key: its masked bytes as eight 16-bit characters, then the length. */
export function route6Key(masked: Uint8Array, length: number): string {
  let key = '';
  for (let b = 0; b < 16; b += 2) key += String.fromCharCode((masked[b] << 8) | masked[b + 1]);
  return key + String.fromCharCode(length);
}

/** A change for Lpm6Writer.update(): the route set (its next hop) or removed (null). */
export interface Route6Change {
  /** the prefix's 16 bytes */
  bytes: ArrayLike<number>;
  length: number;
  nextHop: number | null;
}

/** A node on a route's way down: its index, and the address byte it starts at (before its path). */
interface Step {
  node: number;
  depth: number;
}

/** A node to rebuild, with what locates it: a prefix under it, its parent, the nodes above. */
interface Target {
  top: number;
  bytes: Uint8Array;
  node: number;
  depth: number;
  parent: Step;
  above: number[];
}

export class Lpm6Writer {
  readonly table: Lpm6Table;
  /** the routes in the table, by route6Key */
  readonly routes = new Map<string, Route6Entry>();
  /** the routes longer than /16, by their first 16 bits: the routes of one subtrie */
  private readonly deep = new Map<number, Map<string, Route6Entry>>();
  private readonly direct: Int32Array;
  private readonly nodes: Int32Array;
  private readonly nodeBytes: Uint8Array;
  /** per direct entry, also one that points to a subtrie: the next hop and length + 1 of the longest /16 or shorter route covering it */
  private readonly directValue = new Int32Array(DIRECT_ENTRIES);
  private readonly directDepth = new Uint8Array(DIRECT_ENTRIES);
  /** the space, in nodes */
  private readonly space: TableSpace;
  /** compileLpm6's leaves, not node-aligned: freed leaves there are not reused (a new compile reclaims them) */
  private readonly compiledLeaves: { from: number; to: number };

  /** Over a table from compileLpm6 of `routes` (the same ones, later entries winning). */
  constructor(table: Lpm6Table, routes: { prefix: Uint8Array; length: ArrayLike<number>; nextHop: ArrayLike<number> }, now?: () => number) {
    this.table = table;
    this.direct = new Int32Array(table.direct);
    this.nodes = new Int32Array(table.nodes);
    this.nodeBytes = new Uint8Array(table.nodes);
    const compiledWords = table.nodeCount * NODE_WORDS + table.leafCount;
    this.compiledLeaves = { from: table.nodeCount * NODE_WORDS, to: compiledWords };
    this.space = new TableSpace(Math.ceil(compiledWords / NODE_WORDS), Math.floor(this.nodes.length / NODE_WORDS), now);
    for (let i = 0; i < routes.length.length; i++) {
      const length = routes.length[i];
      const entry = { bytes: mask6(routes.prefix, 16 * i, length), length, nextHop: routes.nextHop[i] };
      this.remember(entry);
    }
    // The direct values, shorter routes first so that longer ones overwrite them.
    const short = [...this.routes.values()].filter((r) => r.length <= 16).sort((a, b) => a.length - b.length);
    for (const r of short) {
      const first = (r.bytes[0] << 8) | r.bytes[1];
      this.directValue.fill(r.nextHop, first, first + (1 << (16 - r.length)));
      this.directDepth.fill(r.length + 1, first, first + (1 << (16 - r.length)));
    }
  }

  /** nodes in use (freed ones count until they may be reused) */
  get usedNodes(): number {
    return this.space.used;
  }

  /**
   * Adds the route, or gives its prefix a new next hop. Returns false when the table has no
   * room for the rebuilt subtree: the table is then part-way and must be compiled anew.
   */
  set(prefix: ArrayLike<number>, offset: number, length: number, nextHop: number): boolean {
    return this.update([{ bytes: mask6(prefix, offset, length), length, nextHop }]);
  }

  /** Removes the route, if there is one. Returns false as set() does. */
  delete(prefix: ArrayLike<number>, offset: number, length: number): boolean {
    return this.update([{ bytes: mask6(prefix, offset, length), length, nextHop: null }]);
  }

  /**
   * Makes the changes, one route each (no prefix twice): the routes of /16 or shorter in
   * order, then each node to rebuild once, whatever number of changes fall under it, and
   * each block of siblings copied once for all its rebuilt nodes. Returns false as set() does.
   */
  update(changes: readonly Route6Change[]): boolean {
    const roots = new Set<number>();
    const deep: { bytes: Uint8Array; length: number; removed: boolean }[] = [];
    for (const c of changes) {
      const bytes = mask6(c.bytes, 0, c.length);
      const removed = c.nextHop === null;
      if (!removed) this.remember({ bytes, length: c.length, nextHop: c.nextHop! });
      else if (!this.forget(bytes, c.length)) continue;
      if (c.length > 16) deep.push({ bytes, length: c.length, removed });
      else if (removed) {
        const parent = this.covering(bytes, c.length);
        this.setDirect(bytes, c.length, parent.depth, parent.nextHop, (d) => d === c.length + 1, roots);
      } else this.setDirect(bytes, c.length, c.length + 1, c.nextHop!, (d) => d <= c.length + 1, roots);
    }
    // The node each longer route changes: the deepest on its way whose routes it joins,
    // or, for one removed, the deepest that keeps routes (its parent then keeps the slot).
    const targets = new Map<number, Target>();
    for (const c of deep) {
      const top = (c.bytes[0] << 8) | c.bytes[1];
      if (roots.has(top)) continue;
      const chain = this.descend(c.bytes, c.length);
      let k = chain.length - 1;
      if (c.removed) while (k > 0 && this.routesUnder(top, c.bytes, chain[k].depth).length === 0) k--;
      if (k <= 0) roots.add(top);
      else targets.set(chain[k].node, { top, bytes: c.bytes, node: chain[k].node, depth: chain[k].depth, parent: chain[k - 1], above: chain.slice(0, k).map((s) => s.node) });
    }
    // Nodes under another one rebuilt are rebuilt with it; the rest go by parent, the
    // deepest parents first: a parent relinked in place is then copied, relinked, with
    // its own parent's block.
    const byParent = new Map<number, Target[]>();
    for (const target of targets.values()) {
      if (roots.has(target.top) || target.above.some((n) => targets.has(n))) continue;
      const siblings = byParent.get(target.parent.node);
      if (siblings === undefined) byParent.set(target.parent.node, [target]);
      else siblings.push(target);
    }
    const parents = [...byParent.values()].sort((a, b) => b[0].parent.depth - a[0].parent.depth);
    for (const rebuilt of parents) if (!this.rebuildChildren(rebuilt)) return false;
    for (const top of roots) if (!this.rebuildRoot(top)) return false;
    return true;
  }

  /**
   * What a change of the route to prefix/length costs in place, in routes visited: those of
   * the subtries it rebuilds (under its /16, or under each /16 it covers).
   */
  changeCost(bytes: Uint8Array, length: number): number {
    const top = (bytes[0] << 8) | bytes[1];
    if (length > 16) return (this.deep.get(top)?.size ?? 0) + 1;
    const first = top & ~((1 << (16 - length)) - 1);
    let cost = 0;
    for (let t = first; t < first + (1 << (16 - length)); t++) cost += (this.deep.get(t)?.size ?? 0) + 1;
    return cost;
  }

  private remember(entry: Route6Entry): void {
    const key = route6Key(entry.bytes, entry.length);
    this.routes.set(key, entry);
    if (entry.length <= 16) return;
    const top = (entry.bytes[0] << 8) | entry.bytes[1];
    let subtrie = this.deep.get(top);
    if (subtrie === undefined) this.deep.set(top, (subtrie = new Map()));
    subtrie.set(key, entry);
  }

  /** Whether there was such a route. */
  private forget(bytes: Uint8Array, length: number): boolean {
    const key = route6Key(bytes, length);
    if (!this.routes.delete(key)) return false;
    if (length <= 16) return true;
    const top = (bytes[0] << 8) | bytes[1];
    const subtrie = this.deep.get(top)!;
    subtrie.delete(key);
    if (subtrie.size === 0) this.deep.delete(top);
    return true;
  }

  /** The longest route shorter than `length` covering the prefix, among those of /16 or shorter. */
  private covering(bytes: Uint8Array, length: number): { nextHop: number; depth: number } {
    for (let l = length - 1; l >= 0; l--) {
      const r = this.routes.get(route6Key(mask6(bytes, 0, l), l));
      if (r !== undefined) return { nextHop: r.nextHop, depth: l + 1 };
    }
    return { nextHop: NO_ROUTE, depth: 0 };
  }

  /**
   * The direct entries prefix/length covers whose depth passes `replaces` get (depth,
   * nextHop); those with a subtrie, whose leaves the value was pushed into, join `roots`.
   */
  private setDirect(bytes: Uint8Array, length: number, depth: number, nextHop: number, replaces: (d: number) => boolean, roots: Set<number>): void {
    const first = (bytes[0] << 8) | bytes[1];
    for (let top = first; top < first + (1 << (16 - length)); top++) {
      if (!replaces(this.directDepth[top])) continue;
      this.directValue[top] = nextHop;
      this.directDepth[top] = depth;
      if (this.direct[top] >= 0) this.direct[top] = nextHop;
      else roots.add(top);
    }
  }

  /**
   * The nodes a lookup of the prefix passes, from its subtrie's root, down to the deepest
   * whose routes the route is one of (those longer than the node's first byte, under it).
   */
  private descend(bytes: Uint8Array, length: number): Step[] {
    const nodes = this.nodes;
    const nodeBytes = this.nodeBytes;
    const entry = this.direct[(bytes[0] << 8) | bytes[1]];
    const chain: Step[] = [];
    if (entry >= 0) return chain;
    let node = ~entry;
    let depth = 2;
    for (;;) {
      chain.push({ node, depth });
      const at = node << NODE_SHIFT;
      const pathLength = nodes[at + PATH_LENGTH];
      const slotByte = depth + pathLength;
      if (length <= 8 * slotByte + 8) return chain;
      for (let p = 0; p < pathLength; p++) if (bytes[depth + p] !== nodeBytes[(at + PATH) * 4 + p]) return chain;
      const v = bytes[slotByte];
      const w = v >>> 5;
      const vec = nodes[at + VEC + w];
      if ((vec & (1 << v)) === 0) return chain;
      node = nodes[at + BASE1] + nodeBytes[(at + VEC_RANK) * 4 + w] + popcount32(vec & ~(-2 << v)) - 1;
      depth = slotByte + 1;
    }
  }

  /** The routes of the subtrie `top` under the first `depth` bytes of prefix, longer than 8 * depth bits. */
  private routesUnder(top: number, bytes: Uint8Array, depth: number): Route6Entry[] {
    const out: Route6Entry[] = [];
    const subtrie = this.deep.get(top);
    if (subtrie === undefined) return out;
    next: for (const r of subtrie.values()) {
      if (r.length <= 8 * depth) continue;
      for (let b = 2; b < depth; b++) if (r.bytes[b] !== bytes[b]) continue next;
      out.push(r);
    }
    return out;
  }

  /** The subtrie of a direct entry built afresh (or gone, with no routes left), linked by one store. */
  private rebuildRoot(top: number): boolean {
    const bytes = Uint8Array.of(top >>> 8, top & 0xff);
    const routes = this.routesUnder(top, bytes, 2);
    const inherited = this.directValue[top];
    const old = this.direct[top] < 0 ? ~this.direct[top] : -1;
    if (routes.length === 0) this.direct[top] = inherited;
    else {
      const root = this.space.alloc(1);
      if (root < 0 || !this.place(buildSubtree(routes, 2, inherited), 0, root)) return false;
      // Atomics.store: the new subtrie is whole before a lookup can reach it.
      Atomics.store(this.direct, top, ~root);
    }
    if (old >= 0) {
      this.freeBelow(old);
      this.space.release(old, 1);
    }
    return true;
  }

  /**
   * Nodes of one block of siblings built afresh: the parent keeps its slots and children,
   * and gets a copy of the block, with the rebuilt nodes in it, by one store.
   */
  private rebuildChildren(rebuilt: readonly Target[]): boolean {
    const parent = rebuilt[0].parent.node << NODE_SHIFT;
    const block = this.nodes[parent + BASE1];
    const count = childCount(this.nodes, parent);
    const copy = this.space.alloc(count);
    if (copy < 0) return false;
    for (let c = 0; c < count; c++) {
      const target = rebuilt.find((r) => r.node === block + c);
      if (target !== undefined) {
        const inherited = this.nodes[(target.node << NODE_SHIFT) + PATH_MISS];
        if (!this.place(buildSubtree(this.routesUnder(target.top, target.bytes, target.depth), target.depth, inherited), 0, copy + c)) return false;
        continue;
      }
      const from = (block + c) << NODE_SHIFT;
      const to = (copy + c) << NODE_SHIFT;
      this.nodes.copyWithin(to, from, from + NODE_WORDS);
      if (this.nodes[from + BASE0] === from + INLINE) this.nodes[to + BASE0] = to + INLINE;
    }
    // Atomics.store: the block is whole before a lookup can reach it.
    Atomics.store(this.nodes, parent + BASE1, copy);
    for (const target of rebuilt) this.freeBelow(target.node);
    this.space.release(block, count);
    return true;
  }

  /** Copies node b of a builder, and all below it, into the table as node `target`. */
  private place(builder: TrieBuilder, b: number, target: number): boolean {
    const from = b << NODE_SHIFT;
    const to = target << NODE_SHIFT;
    const nodes = this.nodes;
    nodes.set(builder.nodes.subarray(from, from + NODE_WORDS), to);
    const base0 = builder.nodes[from + BASE0];
    if (base0 >= 0) nodes[to + BASE0] = to + INLINE;
    else {
      const leaves = leafCount(builder.nodes, from);
      const at = this.space.alloc(Math.ceil(leaves / NODE_WORDS));
      if (at < 0) return false;
      nodes.set(builder.leaves.subarray(~base0, ~base0 + leaves), at << NODE_SHIFT);
      nodes[to + BASE0] = at << NODE_SHIFT;
    }
    const children = childCount(builder.nodes, from);
    nodes[to + BASE1] = 0;
    if (children === 0) return true;
    const block = this.space.alloc(children);
    if (block < 0) return false;
    nodes[to + BASE1] = block;
    const first = builder.nodes[from + BASE1];
    for (let c = 0; c < children; c++) if (!this.place(builder, first + c, block + c)) return false;
    return true;
  }

  /** Frees what hangs below a node: its leaves if not inline, its children and theirs. */
  private freeBelow(node: number): void {
    const at = node << NODE_SHIFT;
    const base0 = this.nodes[at + BASE0];
    if (base0 !== at + INLINE && (base0 < this.compiledLeaves.from || base0 >= this.compiledLeaves.to)) {
      this.space.release(base0 >>> NODE_SHIFT, Math.ceil(leafCount(this.nodes, at) / NODE_WORDS));
    }
    const children = childCount(this.nodes, at);
    if (children === 0) return;
    const block = this.nodes[at + BASE1];
    for (let c = 0; c < children; c++) this.freeBelow(block + c);
    this.space.release(block, children);
  }
}

/** A trie of the routes from address byte `depth`, in a builder's arrays (its node 0 the root). */
function buildSubtree(routes: readonly Route6Entry[], depth: number, inherited: number): TrieBuilder {
  const n = routes.length;
  const cols = { prefix: new Uint8Array(16 * n), length: new Uint8Array(n), nextHop: new Uint32Array(n) };
  routes.forEach((r, i) => {
    cols.prefix.set(r.bytes, 16 * i);
    cols.length[i] = r.length;
    cols.nextHop[i] = r.nextHop;
  });
  const keys = keysOf(cols);
  const sorted = sortedUnique(keys);
  const builder = new TrieBuilder(keys, sorted);
  builder.build(builder.allocNodes(1), depth, 0, sorted.length, inherited);
  return builder;
}

function childCount(nodes: Int32Array, at: number): number {
  let n = 0;
  for (let w = 0; w < 8; w++) n += popcount32(nodes[at + VEC + w]);
  return n;
}

function leafCount(nodes: Int32Array, at: number): number {
  let n = 0;
  for (let w = 0; w < 8; w++) n += popcount32(nodes[at + LEAFVEC + w]);
  return n;
}
