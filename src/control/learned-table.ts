// One route source's routes, kept from its netlink messages (a namespace's tables, or what
// zebra sends over FPM) and turned into routes as the routing stage takes them: a gateway
// and, where the route leaves through a port's Linux mirror, that port. Nexthop objects
// (Linux 5.3+, which FRR's zebra uses) are resolved to their gateways.
//
// A source may hold a full BGP table (a million prefixes): a route is a slot of a few
// typed arrays (its nexthops interned: a million routes name a few gateways), an IPv4
// prefix a small integer rather than a string, and what changed is told by prefix
// (takeChanged), so that each change costs in proportion to what changed.
import { ipv4PrefixKey, type LearnedRoute } from '../pipeline/api.ts';
import type { AddressEvent, IpFamily, Nexthop, NeighbourEvent, NexthopEvent, RouteEvent, TableEvent } from '../sys/netlink.ts';

export type { LearnedRoute };

/** A neighbour Linux there was told of (`ip neigh add`, a routing daemon): NUD_PERMANENT */
export interface LearnedNeighbour {
  address: string;
  mac: string;
  port: string;
}

/** What the route sources hold besides routes: the addresses on mirrors (by port) and permanent neighbours. */
export interface Learned {
  addresses: Record<string, string[]>;
  neighbours: LearnedNeighbour[];
}

export const NOTHING_LEARNED: Learned = { addresses: {}, neighbours: [] };

const MAIN_TABLE = 254;
const NUD_PERMANENT = 0x80;
/** rtm_protocol of the routes Linux makes itself (the connected subnets of addresses): vrouter has its own */
const RTPROT_KERNEL = 2;
/** rtm_protocol of the routes Linux makes from a router advertisement received: another router's word, not the namespace's routing */
const RTPROT_RA = 9;
const NEXTHOP_GROUP_DEPTH = 2;
/**
 * The most members of member groups (groups of groups) resolved in all between two changes
 * of the nexthop objects: past it, routes through further groups of groups are left out as
 * 'unknown nexthop' until the next change. A million: tens of ms of the supervisor's time.
 */
const NESTED_VISITS_PER_EPOCH = 1_000_000;
/** The most gateways one route may resolve to (its group's members, theirs): more, and it is left out as 'unknown nexthop'. */
const MAX_GROUP_HOPS = 1024;
/** The most routes one source (a namespace, an FPM listener with all its connections) keeps: four full Internet tables. */
export const MAX_ROUTES = 4_000_000;
/**
 * The most routes one prefix keeps (different metrics): more are left out as 'over limit'
 * (each route added walks its prefix's routes: a peer sending a million metrics of one
 * prefix made that quadratic).
 */
export const MAX_ROUTES_PER_PREFIX = 256;
/** The most gateways a route may list itself (as many as it may resolve to): more, and it is left out as 'over limit'. */
export const MAX_HOPS = MAX_GROUP_HOPS;

/** The routes a source's tables hold together, and the most they may. */
export interface RouteLimit {
  held: number;
  most: number;
}

/** Why a route of the source is not one of vrouter's. */
export type LeftOut = 'other table' | 'kernel' | 'type' | 'no gateway' | 'gateway family' | 'unknown nexthop' | 'over limit';

/** Keys of IPv4 prefixes longer than /24 (or with host bits set) start here: the others' are below. */
const LONG_KEYS = 2 ** 29;

/**
 * A prefix's key in a table: an IPv4 prefix in canonical form as one number, anything else
 * its text. A prefix of /24 or shorter (most of a full table) is its first 24 bits times 32
 * plus its length: below 2^29, a small integer that a Map keeps without a heap number.
 */
export function prefixKey(text: string): number | string {
  const key = ipv4PrefixKey(text);
  if (key < 0) return text;
  const address = Math.floor(key / 64);
  const length = key % 64;
  return length <= 24 && (address & 255) === 0 ? (address >>> 8) * 32 + length : LONG_KEYS + key;
}

const familyOf = (key: number | string): IpFamily => (typeof key === 'number' || !key.includes(':') ? 4 : 6);

/** The text of a prefix's key (prefixKey). */
export function prefixText(key: number | string): string {
  if (typeof key === 'string') return key;
  const a = key < LONG_KEYS ? Math.floor(key / 32) * 256 : Math.floor((key - LONG_KEYS) / 64);
  const length = key < LONG_KEYS ? key % 32 : (key - LONG_KEYS) % 64;
  return `${Math.floor(a / 16777216)}.${Math.floor(a / 65536) & 255}.${Math.floor(a / 256) & 255}.${a & 255}/${length}`;
}

const sameNexthop = (a: NexthopEvent, b: NexthopEvent) =>
  a.via === b.via && a.ifindex === b.ifindex && a.blackhole === b.blackhole && a.group.length === b.group.length && a.group.every((m, i) => m.id === b.group[i].id && m.weight === b.group[i].weight);

interface Hop {
  via: string | null;
  ifindex: number;
}

/** Routes become one route per port their gateways are on (a part each), or are left out, and why. */
interface Part {
  via?: readonly string[];
  port?: string;
  blackhole?: true;
}
type Resolution = readonly Part[] | LeftOut;
const BLACKHOLE: readonly Part[] = [{ blackhole: true }];

/** The nexthops of routes that list the same ones (ECMP weights are not kept), once for all of them. */
interface HopSet {
  key: string;
  hops: readonly Hop[];
  family: IpFamily;
  refs: number;
  /** what they resolve to, in the epoch of links and mirrors `epoch` */
  resolution: Resolution | null;
  epoch: number;
}

/** What a route is, as far as vrouter is concerned. */
const UNICAST = 0;
/** blackhole, unreachable, prohibit: packets to it are dropped */
const REJECT = 1;
/** a type vrouter has no use for (local, broadcast, multicast, throw ...) */
const OTHER_TYPE = 2;
/** one Linux made itself */
const KERNEL = 3;

const NONE = -1;

/**
 * The routes, a slot each: one prefix and metric (what tells Linux routes apart), as
 * columns. Other metrics of the prefix follow in `next`, as do free slots.
 */
class RouteSlots {
  metric = new Uint32Array(0);
  kind = new Uint8Array(0);
  /** the nexthop object it uses (an id is a u32: doubles hold every one), or NONE */
  nhid = new Float64Array(0);
  /** its nexthops (HopSet id), or NONE */
  hops = new Int32Array(0);
  /** the sync it was last seen in (mark(), sweep()) */
  seen = new Uint32Array(0);
  next = new Int32Array(0);
  private free = NONE;
  private used = 0;

  alloc(): number {
    if (this.free !== NONE) {
      const slot = this.free;
      this.free = this.next[slot];
      return slot;
    }
    if (this.used === this.metric.length) this.grow();
    return this.used++;
  }

  release(slot: number): void {
    this.next[slot] = this.free;
    this.free = slot;
  }

  clear(): void {
    this.free = NONE;
    this.used = 0;
  }

  private grow(): void {
    const size = Math.max(1024, Math.ceil(this.metric.length * 1.5));
    const grown = <T extends Uint32Array | Int32Array | Uint8Array | Float64Array>(a: T, make: (n: number) => T) => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.metric = grown(this.metric, (n) => new Uint32Array(n));
    this.kind = grown(this.kind, (n) => new Uint8Array(n));
    this.nhid = grown(this.nhid, (n) => new Float64Array(n));
    this.hops = grown(this.hops, (n) => new Int32Array(n));
    this.seen = grown(this.seen, (n) => new Uint32Array(n));
    this.next = grown(this.next, (n) => new Int32Array(n));
  }
}

export class LearnedTable {
  readonly source: string;
  /** ifindex -> interface name, in the source's namespace */
  private readonly links = new Map<number, string>();
  private readonly nexthops = new Map<number, NexthopEvent>();
  /** by prefix (prefixKey), the slot of the first of its routes */
  private readonly routes = new Map<number | string, number>();
  private readonly slots = new RouteSlots();
  private count = 0;
  /** routes and other entries not kept: the source held its most already, or they were past MAX_ROUTES_PER_PREFIX or MAX_HOPS */
  private overLimit = 0;
  /**
   * What this table charges its source's limit beyond one a route: each gateway of a set of
   * several past the first, each nexthop object and group member, address, neighbour and
   * link. A peer's frame of nexthop groups or addresses costs the supervisor's heap as much
   * as routes do, and is bounded with them.
   */
  private charged = 0;
  /** the routes its source holds, in all its tables, and the most it may */
  private readonly limit: RouteLimit;
  /** nexthop sets by id (null: a free id), and ids by their key */
  private readonly hopSets: (HopSet | null)[] = [];
  private readonly hopSetIds = new Map<string, number>();
  private readonly freeHopSets: number[] = [];
  /** nexthop objects resolved (by id and family) in the epoch `resolvedIn`: forgotten when it passes */
  private readonly resolved = new Map<number, Resolution>();
  private resolvedIn = 0;
  /** members of member groups walked in the epoch `resolvedIn` (see NESTED_VISITS_PER_EPOCH) */
  private nestedVisits = 0;
  /** bumped when links of mirrors, the mirrors or the nexthop objects change: what was resolved before is stale */
  private epoch = 0;
  /** prefixes whose routes may have changed since takeChanged(); every one when `allChanged` */
  private changed = new Set<number | string>();
  private allChanged = false;
  /** nexthop objects changed since takeChanged(): the routes that use them changed */
  private changedNexthops = new Set<number>();
  /** interfaces' addresses and permanent neighbours, by interface and address */
  private readonly addresses = new Map<string, AddressEvent>();
  private readonly neighbours = new Map<string, NeighbourEvent>();
  /** the sync going on (mark()), or the last; routes seen in it carry its number */
  private sync = 0;
  /** keys other than routes seen since the sync began; null when no sync is going on */
  private seen: Set<string> | null = null;
  /** interface name -> the port it mirrors (a port's Linux mirror in this namespace) */
  private mirrors: ReadonlyMap<string, string>;

  /**
   * `limit`: shared by the tables of one source (an FPM listener's connections).
   * `kernel`: the events are Linux's (a netlink source), which removes the IPv4 routes of a
   * nexthop object removed without a word (IPv6 ones it reports): they go here too.
   */
  constructor(source: string, mirrors: ReadonlyMap<string, string> = new Map(), limit: RouteLimit = { held: 0, most: MAX_ROUTES }, kernel = false) {
    this.source = source;
    this.mirrors = mirrors;
    this.limit = limit;
    this.kernel = kernel;
  }

  private readonly kernel: boolean;
  /** By nexthop object id: the IPv4 routes that use it (kernel tables only), so that a removal walks the routes only when some do */
  private readonly ipv4Users = new Map<number, number>();

  private countUser(key: number | string, nhid: number, n: number): void {
    if (!this.kernel || typeof key !== 'number' || nhid < 0) return;
    const users = (this.ipv4Users.get(nhid) ?? 0) + n;
    if (users > 0) this.ipv4Users.set(nhid, users);
    else this.ipv4Users.delete(nhid);
  }

  /**
   * Nexthop objects removed while IPv4 routes used them, whose routes flushRemoved() takes
   * out: in one pass over the routes for all the removals of a batch of events (a flush of
   * a hundred objects would otherwise walk a million routes a hundred times).
   */
  private readonly removedNexthops = new Set<number>();

  /** Linux's silent flush: the IPv4 routes that use a nexthop object removed (removedNexthops) go, as they went there. */
  private flushRemoved(): void {
    if (this.removedNexthops.size === 0) return;
    const removed = this.removedNexthops;
    const s = this.slots;
    // A Map's entries may be deleted or set while it is walked: unlink() does both.
    for (const [key, head] of this.routes) {
      if (typeof key !== 'number') continue;
      let before = NONE;
      for (let slot = head; slot !== NONE; ) {
        const next = s.next[slot];
        if (removed.has(s.nhid[slot])) {
          this.unlink(key, before, slot);
          this.changed.add(key);
        } else before = slot;
        slot = next;
      }
    }
    removed.clear();
  }

  /** The mirrors changed (ports added or removed): routes through them are read again. Returns whether they did change. */
  setMirrors(mirrors: ReadonlyMap<string, string>): boolean {
    const same = mirrors.size === this.mirrors.size && [...mirrors].every(([name, port]) => this.mirrors.get(name) === port);
    this.mirrors = mirrors;
    if (same) return false;
    this.epoch++;
    this.allChanged = true;
    return true;
  }

  /** Applies events; returns whether the routes, addresses or neighbours may have changed. */
  apply(events: readonly (TableEvent | { kind: string })[]): boolean {
    let changed = false;
    for (const e of events) {
      // An object removed above is made again, or a route names it: the routes through the
      // one removed go first.
      if (this.removedNexthops.size > 0 && this.namesRemoved(e)) this.flushRemoved();
      switch (e.kind) {
        case 'sync-start':
          this.mark();
          break;
        case 'sync-end':
          changed = this.sweep() || changed;
          break;
        case 'link': {
          const l = e as Extract<TableEvent, { kind: 'link' }>;
          const before = this.links.get(l.ifindex);
          // The same link again (a flag changed, a resync's dump): nothing its name says changed.
          if (before === (l.op === 'add' ? l.name : undefined)) break;
          if (l.op === 'add') {
            if (before === undefined && !this.charge(1)) {
              this.overLimit++;
              break;
            }
            this.links.set(l.ifindex, l.name);
          } else {
            this.links.delete(l.ifindex);
            this.refund(1);
          }
          // Routes name the port of a mirror's interface: only a mirror's link changes them.
          if ((before !== undefined && this.mirrors.has(before)) || this.mirrors.has(l.name)) {
            this.epoch++;
            this.allChanged = true;
          }
          changed = true;
          break;
        }
        case 'nexthop': {
          const n = e as NexthopEvent;
          this.seen?.add(`nh ${n.id}`);
          const known = this.nexthops.get(n.id);
          // One sent again as it was (zebra after a reconnection) changes no route.
          if (n.op === 'add' && known !== undefined && sameNexthop(known, n)) break;
          if (n.op === 'add') {
            if (known !== undefined) this.refund(1 + known.group.length);
            if (!this.charge(1 + n.group.length)) {
              // Left out; the one it replaced goes (what zebra means by it is not kept).
              this.overLimit++;
              if (known === undefined) break;
              this.nexthops.delete(n.id);
            } else this.nexthops.set(n.id, n);
          } else if (this.nexthops.delete(n.id)) {
            this.refund(1 + known!.group.length);
            if (this.ipv4Users.has(n.id)) this.removedNexthops.add(n.id);
          } else break;
          this.changedNexthops.add(n.id);
          this.epoch++;
          changed = true;
          break;
        }
        case 'address': {
          const a = e as AddressEvent;
          const key = `a ${a.ifindex} ${a.address}/${a.prefixLength}`;
          this.seen?.add(key);
          if (a.op === 'add') {
            if (!this.addresses.has(key) && !this.charge(1)) {
              this.overLimit++;
              break;
            }
            this.addresses.set(key, a);
          } else if (this.addresses.delete(key)) this.refund(1);
          changed = true;
          break;
        }
        case 'neighbour': {
          const n = e as NeighbourEvent;
          const key = `n ${n.ifindex} ${n.address}`;
          this.seen?.add(key);
          if (n.op === 'add' && (n.state & NUD_PERMANENT) !== 0 && n.mac !== null) {
            if (!this.neighbours.has(key) && !this.charge(1)) {
              this.overLimit++;
              break;
            }
            this.neighbours.set(key, n);
          } else if (this.neighbours.delete(key)) this.refund(1);
          else break;
          changed = true;
          break;
        }
        case 'route': {
          const r = e as RouteEvent;
          if (r.table !== MAIN_TABLE) break;
          const key = prefixKey(r.prefix);
          // A route sent again as it was (zebra's table after a reconnection, a dump after
          // an overrun) changes nothing.
          if (r.op === 'add' ? !this.setRoute(key, r) : !this.removeRoute(key, r)) break;
          this.changed.add(key);
          changed = true;
          break;
        }
      }
    }
    this.flushRemoved();
    return changed;
  }

  /** Whether the event makes again, or a route of it names, a nexthop object removed in this batch. */
  private namesRemoved(e: TableEvent | { kind: string }): boolean {
    if (e.kind === 'nexthop') return (e as NexthopEvent).op === 'add' && this.removedNexthops.has((e as NexthopEvent).id);
    if (e.kind !== 'route') return false;
    const nhid = (e as RouteEvent).nhid;
    return nhid !== null && this.removedNexthops.has(nhid);
  }

  /** Adds the route, or replaces the one to its prefix and metric; returns whether that changed anything. */
  private setRoute(key: number | string, r: RouteEvent): boolean {
    const kind = r.protocol === RTPROT_KERNEL || r.protocol === RTPROT_RA ? KERNEL : r.type === 'blackhole' || r.type === 'unreachable' || r.type === 'prohibit' ? REJECT : r.type === 'unicast' ? UNICAST : OTHER_TYPE;
    if (r.nexthops.length > MAX_HOPS) return this.refuse(key, r);
    const hops = r.nhid === null ? this.hopSet(r.nexthops, r.family) : NONE;
    // A set of gateways new to the table, past the limit (hopSet charged it, to know).
    if (this.limit.held > this.limit.most) {
      this.release(hops);
      return this.refuse(key, r);
    }
    const nhid = r.nhid ?? NONE;
    const seen = this.seen !== null ? this.sync : 0;
    const s = this.slots;
    let last = NONE;
    let routesOfPrefix = 0;
    for (let slot = this.routes.get(key) ?? NONE; slot !== NONE; slot = s.next[slot]) {
      routesOfPrefix++;
      if (s.metric[slot] === r.metric) {
        const same = s.kind[slot] === kind && s.nhid[slot] === nhid && s.hops[slot] === hops;
        this.release(s.hops[slot]);
        this.countUser(key, s.nhid[slot], -1);
        this.countUser(key, nhid, 1);
        s.kind[slot] = kind;
        s.nhid[slot] = nhid;
        s.hops[slot] = hops;
        s.seen[slot] = seen;
        return !same;
      }
      last = slot;
    }
    // A peer that never stops sending must not take the supervisor's heap: past the most a
    // source keeps, new routes are left out and counted.
    if (this.limit.held >= this.limit.most || routesOfPrefix >= MAX_ROUTES_PER_PREFIX) {
      this.release(hops);
      this.overLimit++;
      return false;
    }
    const slot = s.alloc();
    this.countUser(key, nhid, 1);
    s.metric[slot] = r.metric;
    s.kind[slot] = kind;
    s.nhid[slot] = nhid;
    s.hops[slot] = hops;
    s.seen[slot] = seen;
    s.next[slot] = NONE;
    if (last === NONE) this.routes.set(key, slot);
    else s.next[last] = slot;
    this.count++;
    this.limit.held++;
    return true;
  }

  /**
   * Leaves a route out (counted as 'over limit'); the route it would replace goes, as what
   * the peer means by it is not kept. Returns whether one went.
   */
  private refuse(key: number | string, r: RouteEvent): boolean {
    this.overLimit++;
    // A removal that lists no gateway takes the route whole.
    return this.removeRoute(key, { ...r, nexthops: [] });
  }

  /**
   * A 'remove' takes away the gateways it lists (one of an IPv6 multipath route), and the
   * route when none are left or it lists none. Returns whether there was such a route.
   */
  private removeRoute(key: number | string, r: RouteEvent): boolean {
    const s = this.slots;
    let before = NONE;
    let slot = this.routes.get(key) ?? NONE;
    while (slot !== NONE && s.metric[slot] !== r.metric) {
      before = slot;
      slot = s.next[slot];
    }
    if (slot === NONE) return false;
    // A set: a removal of 4,000 hops against a route of 4,000 (one FPM frame each) compared every pair.
    const removed = new Set(r.nexthops.map((m) => `${m.via} ${m.ifindex}`));
    const gone = (n: Hop) => removed.has(`${n.via} ${n.ifindex}`);
    const known = s.hops[slot] === NONE ? null : this.hopSets[s.hops[slot]]!;
    const left = r.nexthops.length === 0 || known === null ? [] : known.hops.filter((n) => !gone(n));
    if (left.length > 0) {
      const hops = this.hopSet(left, r.family);
      this.release(s.hops[slot]);
      s.hops[slot] = hops;
      // The gateways left, a set new to the table past the limit: the route goes, counted.
      if (this.limit.held <= this.limit.most) return true;
      this.overLimit++;
    }
    this.unlink(key, before, slot);
    return true;
  }

  private unlink(key: number | string, before: number, slot: number): void {
    const s = this.slots;
    const next = s.next[slot];
    if (before !== NONE) s.next[before] = next;
    else if (next !== NONE) this.routes.set(key, next);
    else this.routes.delete(key);
    this.countUser(key, s.nhid[slot], -1);
    this.release(s.hops[slot]);
    s.release(slot);
    this.count--;
    this.limit.held--;
  }

  /**
   * Charges n to the source's limit; false, and nothing charged, when that would pass it
   * (`anyway`: charged all the same, for a caller that checks the limit right after).
   */
  private charge(n: number, anyway = false): boolean {
    if (n <= 0) return true;
    if (!anyway && this.limit.held + n > this.limit.most) return false;
    this.limit.held += n;
    this.charged += n;
    return true;
  }

  private refund(n: number): void {
    if (n <= 0) return;
    this.limit.held -= n;
    this.charged -= n;
  }

  /** The id of the interned set of these nexthops (counted once more), or NONE for none. */
  private hopSet(nexthops: readonly (Nexthop | Hop)[], family: IpFamily): number {
    if (nexthops.length === 0) return NONE;
    let key = `${family}`;
    for (const n of nexthops) key += ` ${n.via ?? '-'}%${n.ifindex}`;
    let id = this.hopSetIds.get(key);
    if (id === undefined) {
      id = this.freeHopSets.pop() ?? this.hopSets.length;
      this.hopSets[id] = { key, hops: nexthops.map((n) => ({ via: n.via, ifindex: n.ifindex })), family, refs: 0, resolution: null, epoch: -1 };
      this.hopSetIds.set(key, id);
      this.charge(nexthops.length - 1, true);
    }
    this.hopSets[id]!.refs++;
    return id;
  }

  private release(id: number): void {
    if (id === NONE) return;
    const set = this.hopSets[id]!;
    if (--set.refs > 0) return;
    this.refund(set.hops.length - 1);
    this.hopSetIds.delete(set.key);
    this.hopSets[id] = null;
    this.freeHopSets.push(id);
  }

  /** Forgets everything (the source is gone): every prefix it had changed. Returns whether it held anything. */
  clear(): boolean {
    const had = this.routes.size + this.addresses.size + this.neighbours.size > 0;
    for (const key of this.routes.keys()) this.changed.add(key);
    this.routes.clear();
    this.slots.clear();
    this.overLimit = 0;
    this.limit.held -= this.count + this.charged;
    this.charged = 0;
    this.count = 0;
    this.hopSets.length = 0;
    this.hopSetIds.clear();
    this.freeHopSets.length = 0;
    this.resolved.clear();
    this.addresses.clear();
    this.neighbours.clear();
    this.nexthops.clear();
    this.changedNexthops.clear();
    this.ipv4Users.clear();
    this.links.clear();
    this.seen = null;
    return had;
  }

  /** Starts a sweep: what is not seen again before sweep() goes. */
  mark(): void {
    this.sync++;
    this.seen = new Set();
  }

  /** Removes what the sync since mark() did not repeat; returns whether anything went. */
  sweep(): boolean {
    const seen = this.seen;
    this.seen = null;
    if (seen === null) return false;
    let removed = false;
    const s = this.slots;
    for (const [key, head] of this.routes) {
      let before = NONE;
      for (let slot = head, next = s.next[slot]; slot !== NONE; slot = next, next = slot === NONE ? NONE : s.next[slot]) {
        if (s.seen[slot] === this.sync) {
          before = slot;
          continue;
        }
        this.unlink(key, before, slot);
        this.changed.add(key);
        removed = true;
      }
    }
    for (const [id, n] of this.nexthops) {
      if (seen.has(`nh ${id}`)) continue;
      this.nexthops.delete(id);
      this.refund(1 + n.group.length);
      this.changedNexthops.add(id);
      this.epoch++;
      removed = true;
    }
    for (const table of [this.addresses, this.neighbours]) {
      for (const key of table.keys()) {
        if (seen.has(key)) continue;
        table.delete(key);
        this.refund(1);
        removed = true;
      }
    }
    return removed;
  }

  /** routes kept (a prefix and metric each), those left out among them */
  get size(): number {
    return this.count;
  }

  /** whether it holds nothing: no route, nexthop object, address or neighbour */
  get empty(): boolean {
    return this.routes.size + this.nexthops.size + this.addresses.size + this.neighbours.size === 0;
  }

  /**
   * The prefixes (prefixKey) whose routes may have changed since the last call, and
   * forgets them: those of routes added or removed, and of routes whose nexthop objects or
   * mirrors changed.
   */
  takeChanged(): Set<number | string> {
    if (this.allChanged) {
      for (const key of this.routes.keys()) this.changed.add(key);
    } else if (this.changedNexthops.size > 0) {
      // The objects changed and the groups that hold them: the routes that use any of them.
      const affected = new Set(this.changedNexthops);
      for (let depth = 0; depth < NEXTHOP_GROUP_DEPTH; depth++) {
        for (const n of this.nexthops.values()) if (n.group.some((m) => affected.has(m.id))) affected.add(n.id);
      }
      const s = this.slots;
      for (const [key, head] of this.routes) {
        for (let slot = head; slot !== NONE; slot = s.next[slot]) {
          if (s.nhid[slot] >= 0 && affected.has(s.nhid[slot])) {
            this.changed.add(key);
            break;
          }
        }
      }
    }
    this.allChanged = false;
    this.changedNexthops.clear();
    const out = this.changed;
    this.changed = new Set();
    return out;
  }

  /** Whether the table has routes to the prefix (prefixKey), left out or not. */
  has(key: number | string): boolean {
    return this.routes.has(key);
  }

  /** The keys (prefixKey) of the prefixes the table has routes to. */
  prefixes(): IterableIterator<number | string> {
    return this.routes.keys();
  }

  /** Appends the routes to a prefix (its key and text) as the routing stage takes them: those not left out. */
  routesTo(key: number | string, text: string, out: LearnedRoute[]): void {
    const s = this.slots;
    for (let slot = this.routes.get(key) ?? NONE; slot !== NONE; slot = s.next[slot]) {
      const resolution = this.resolutionOf(slot, familyOf(key));
      if (typeof resolution === 'string') continue;
      const metric = s.metric[slot];
      // Object literals of a few fixed shapes: made a million times for a full table.
      for (const part of resolution) {
        if (part.blackhole === true) out.push({ prefix: text, metric, source: this.source, blackhole: true });
        else if (part.port === undefined) out.push({ prefix: text, metric, source: this.source, via: part.via });
        else if (part.via === undefined) out.push({ prefix: text, metric, source: this.source, port: part.port });
        else out.push({ prefix: text, metric, source: this.source, via: part.via, port: part.port });
      }
    }
  }

  /** How many routes the routing stage takes, and how many were left out, by why. */
  status(): { routes: number; leftOut: Partial<Record<LeftOut, number>> } {
    let routes = 0;
    const leftOut: Partial<Record<LeftOut, number>> = {};
    for (const [key, head] of this.routes) {
      for (let slot = head; slot !== NONE; slot = this.slots.next[slot]) {
        const resolution = this.resolutionOf(slot, familyOf(key));
        if (typeof resolution === 'string') leftOut[resolution] = (leftOut[resolution] ?? 0) + 1;
        else routes += resolution.length;
      }
    }
    if (this.overLimit > 0) leftOut['over limit'] = this.overLimit;
    return { routes, leftOut };
  }

  /** Every route as the routing stage takes it, and how many were left out, by why (all of them made: for a small table). */
  learned(): { routes: LearnedRoute[]; leftOut: Partial<Record<LeftOut, number>> } {
    const routes: LearnedRoute[] = [];
    for (const key of this.routes.keys()) this.routesTo(key, prefixText(key), routes);
    return { routes, leftOut: this.status().leftOut };
  }

  /** Routes to the same prefix and metric are one ECMP group: one entry per port the gateways are on. */
  private resolutionOf(slot: number, family: IpFamily): Resolution {
    const kind = this.slots.kind[slot];
    if (kind === KERNEL) return 'kernel';
    if (kind === REJECT) return BLACKHOLE;
    if (kind === OTHER_TYPE) return 'type';
    const nhid = this.slots.nhid[slot];
    if (nhid < 0) {
      if (this.slots.hops[slot] === NONE) return 'no gateway';
      const set = this.hopSets[this.slots.hops[slot]]!;
      if (set.epoch !== this.epoch) {
        set.resolution = this.partsOf(set.hops, family);
        set.epoch = this.epoch;
      }
      return set.resolution!;
    }
    const id = nhid * 2 + (family === 6 ? 1 : 0);
    if (this.resolvedIn !== this.epoch) {
      this.resolved.clear();
      this.resolvedIn = this.epoch;
      this.nestedVisits = 0;
    }
    const known = this.resolved.get(id);
    if (known !== undefined) return known;
    const hops = this.resolve(nhid, NEXTHOP_GROUP_DEPTH);
    const resolution: Resolution = hops === null ? 'unknown nexthop' : hops.some((h) => h.blackhole) ? BLACKHOLE : this.partsOf(hops, family);
    this.resolved.set(id, resolution);
    return resolution;
  }

  private partsOf(hops: readonly Hop[], family: IpFamily): Resolution {
    // by port ('' for none: the gateway's connected subnet says which), its gateways
    const byPort = new Map<string, Set<string>>();
    for (const h of hops) {
      const mirrored = this.portOf(h.ifindex) ?? '';
      if (h.via === null) {
        // Straight out of an interface: only a mirror's means a port of vrouter's.
        if (mirrored === '') return 'no gateway';
        return [{ port: mirrored }];
      }
      if (h.via.includes(':') !== (family === 6)) return 'gateway family';
      const vias = byPort.get(mirrored) ?? new Set<string>();
      vias.add(h.via);
      byPort.set(mirrored, vias);
    }
    if (byPort.size === 0) return 'no gateway';
    return [...byPort].map(([port, set]) => (port === '' ? { via: [...set] } : { via: [...set], port }));
  }

  /**
   * The addresses Linux has on the mirrors' interfaces, by the port mirrored: those the
   * port has already are the caller's to leave out. Link-local ones are Linux's own (the
   * router has its own, the same: the mirror has the port's MAC); those with a lifetime
   * were configured by a router advertisement or DHCP on the link, not by the operator.
   */
  learnedAddresses(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const a of this.addresses.values()) {
      const port = this.portOf(a.ifindex);
      if (port === undefined || /^fe[89ab]/i.test(a.address) || a.expires === true) continue;
      out.set(port, [...(out.get(port) ?? []), `${a.address}/${a.prefixLength}`]);
    }
    return out;
  }

  /** The permanent neighbours on the mirrors' interfaces. */
  learnedNeighbours(): LearnedNeighbour[] {
    const out: LearnedNeighbour[] = [];
    for (const n of this.neighbours.values()) {
      const port = this.portOf(n.ifindex);
      if (port !== undefined) out.push({ address: n.address, mac: n.mac!, port });
    }
    return out;
  }

  /** The port whose mirror is interface `ifindex`, if it is one. */
  private portOf(ifindex: number): string | undefined {
    return this.mirrors.get(this.links.get(ifindex) ?? '');
  }

  /**
   * A nexthop object's gateways (a group's members' too, each once), or null if one is
   * unknown. A group of more than MAX_GROUP_HOPS gateways in all is unknown too: groups of
   * groups multiply (a route to a group of 8,000 groups of 8,000 would be 64 million hops,
   * from one 64 KiB FPM frame; Linux refuses nested groups, FPM is not Linux). The members
   * of member groups walked in an epoch are metered (NESTED_VISITS_PER_EPOCH): a route's
   * walk is bounded by its own group's size, which the source paid for, but not the walks
   * of member groups shared by many groups, each walked again for each (1,000 routes to
   * 1,000 groups of the same 1,000 groups of 1,000 gateways were 10^9 steps, for an FPM
   * peer to have walked again at every change of one gateway).
   */
  private resolve(id: number, depth: number, seen = new Set<number>()): { via: string | null; ifindex: number; blackhole: boolean }[] | null {
    const n = this.nexthops.get(id);
    if (n === undefined) return null;
    if (n.group.length === 0) return [{ via: n.via, ifindex: n.ifindex, blackhole: n.blackhole }];
    if (depth === 0) return null;
    const nested = depth < NEXTHOP_GROUP_DEPTH;
    const out = [];
    for (const m of n.group) {
      if (nested && ++this.nestedVisits > NESTED_VISITS_PER_EPOCH) return null;
      if (seen.has(m.id)) continue;
      seen.add(m.id);
      const hops = this.resolve(m.id, depth - 1, seen);
      if (hops === null) return null;
      out.push(...hops);
      if (out.length > MAX_GROUP_HOPS) return null;
    }
    return out;
  }
}
