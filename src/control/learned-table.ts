// One route source's routes, kept from its netlink messages (a namespace's tables, or what
// zebra sends over FPM) and turned into routes as the routing stage takes them: a gateway
// and, where the route leaves through a port's Linux mirror, that port. Nexthop objects
// (Linux 5.3+, which FRR's zebra uses) are resolved to their gateways.
import type { AddressEvent, NeighbourEvent, NexthopEvent, RouteEvent, TableEvent } from '../sys/netlink.ts';

/** A learned route, in the form of a route of the config (plugins/routing/config.ts) with its source. */
export interface LearnedRoute {
  prefix: string;
  via?: string[];
  port?: string;
  metric: number;
  blackhole?: true;
  source: string;
}

/** A neighbour Linux there was told of (`ip neigh add`, a routing daemon): NUD_PERMANENT */
export interface LearnedNeighbour {
  address: string;
  mac: string;
  port: string;
}

/** What the route sources hold together: routes, and, from the mirrors' namespaces, addresses (by port) and permanent neighbours. */
export interface Learned {
  routes: LearnedRoute[];
  addresses: Record<string, string[]>;
  neighbours: LearnedNeighbour[];
}

export const NOTHING_LEARNED: Learned = { routes: [], addresses: {}, neighbours: [] };

const MAIN_TABLE = 254;
const NUD_PERMANENT = 0x80;
/** rtm_protocol of the routes Linux makes itself (the connected subnets of addresses): vrouter has its own */
const RTPROT_KERNEL = 2;
const NEXTHOP_GROUP_DEPTH = 2;

/** Why a route of the source is not one of vrouter's. */
export type LeftOut = 'other table' | 'kernel' | 'type' | 'no gateway' | 'gateway family' | 'unknown nexthop';

export class LearnedTable {
  readonly source: string;
  /** ifindex -> interface name, in the source's namespace */
  private readonly links = new Map<number, string>();
  private readonly nexthops = new Map<number, NexthopEvent>();
  /** by table, prefix and metric (what tells Linux routes apart) */
  private readonly routes = new Map<string, RouteEvent>();
  /** interfaces' addresses and permanent neighbours, by interface and address */
  private readonly addresses = new Map<string, AddressEvent>();
  private readonly neighbours = new Map<string, NeighbourEvent>();
  /** keys seen since the sync began; null when no sync is going on */
  private seen: Set<string> | null = null;
  /** interface name -> the port it mirrors (a port's Linux mirror in this namespace) */
  private mirrors: ReadonlyMap<string, string>;

  constructor(source: string, mirrors: ReadonlyMap<string, string> = new Map()) {
    this.source = source;
    this.mirrors = mirrors;
  }

  /** The mirrors changed (ports added or removed): routes through them are read again. */
  setMirrors(mirrors: ReadonlyMap<string, string>): void {
    this.mirrors = mirrors;
  }

  /** Applies events; returns whether the routes may have changed. */
  apply(events: readonly (TableEvent | { kind: string })[]): boolean {
    let changed = false;
    for (const e of events) {
      switch (e.kind) {
        case 'sync-start':
          this.seen = new Set();
          break;
        case 'sync-end':
          changed = this.sweep() || changed;
          break;
        case 'link': {
          const l = e as Extract<TableEvent, { kind: 'link' }>;
          if (l.op === 'add') this.links.set(l.ifindex, l.name);
          else this.links.delete(l.ifindex);
          changed = true;
          break;
        }
        case 'nexthop': {
          const n = e as NexthopEvent;
          this.seen?.add(`nh ${n.id}`);
          if (n.op === 'add') this.nexthops.set(n.id, n);
          else this.nexthops.delete(n.id);
          changed = true;
          break;
        }
        case 'address': {
          const a = e as AddressEvent;
          const key = `a ${a.ifindex} ${a.address}/${a.prefixLength}`;
          this.seen?.add(key);
          if (a.op === 'add') this.addresses.set(key, a);
          else this.addresses.delete(key);
          changed = true;
          break;
        }
        case 'neighbour': {
          const n = e as NeighbourEvent;
          const key = `n ${n.ifindex} ${n.address}`;
          this.seen?.add(key);
          if (n.op === 'add' && (n.state & NUD_PERMANENT) !== 0 && n.mac !== null) this.neighbours.set(key, n);
          else if (!this.neighbours.delete(key)) break;
          changed = true;
          break;
        }
        case 'route': {
          const r = e as RouteEvent;
          if (r.table !== MAIN_TABLE) break;
          const key = `${r.prefix} ${r.metric}`;
          this.seen?.add(key);
          if (r.op === 'add') this.routes.set(key, r);
          else this.removeRoute(key, r);
          changed = true;
          break;
        }
      }
    }
    return changed;
  }

  /** A 'remove' takes away the gateways it lists (one of an IPv6 multipath route), and the route when none are left or it lists none. */
  private removeRoute(key: string, r: RouteEvent): void {
    const known = this.routes.get(key);
    if (known === undefined) return;
    const gone = (n: { via: string | null; ifindex: number }) => r.nexthops.some((m) => m.via === n.via && m.ifindex === n.ifindex);
    const left = r.nexthops.length === 0 ? [] : known.nexthops.filter((n) => !gone(n));
    if (left.length === 0) this.routes.delete(key);
    else this.routes.set(key, { ...known, nexthops: left });
  }

  /** Forgets everything (the source is gone); returns whether it held routes. */
  clear(): boolean {
    const had = this.routes.size + this.addresses.size + this.neighbours.size > 0;
    this.routes.clear();
    this.addresses.clear();
    this.neighbours.clear();
    this.nexthops.clear();
    this.links.clear();
    this.seen = null;
    return had;
  }

  /** Starts a sweep: what is not seen again before sweep() goes. */
  mark(): void {
    this.seen = new Set();
  }

  /** Removes what the sync since mark() did not repeat; returns whether anything went. */
  sweep(): boolean {
    const seen = this.seen;
    this.seen = null;
    if (seen === null) return false;
    let removed = false;
    for (const key of this.routes.keys()) {
      if (!seen.has(key)) {
        this.routes.delete(key);
        removed = true;
      }
    }
    for (const id of this.nexthops.keys()) if (!seen.has(`nh ${id}`)) this.nexthops.delete(id);
    for (const table of [this.addresses, this.neighbours]) {
      for (const key of table.keys()) {
        if (seen.has(key)) continue;
        table.delete(key);
        removed = true;
      }
    }
    return removed;
  }

  get size(): number {
    return this.routes.size;
  }

  /** The routes as the routing stage takes them, and how many were left out, by why. */
  learned(): { routes: LearnedRoute[]; leftOut: Partial<Record<LeftOut, number>> } {
    const routes: LearnedRoute[] = [];
    const leftOut: Partial<Record<LeftOut, number>> = {};
    for (const r of this.routes.values()) {
      const out = this.routeOf(r);
      if (typeof out === 'string') leftOut[out] = (leftOut[out] ?? 0) + 1;
      else routes.push(...out);
    }
    return { routes, leftOut };
  }

  /** Routes to the same prefix and metric are one ECMP group: one entry per port the gateways are on. */
  private routeOf(r: RouteEvent): LearnedRoute[] | LeftOut {
    if (r.protocol === RTPROT_KERNEL) return 'kernel';
    const base = { prefix: r.prefix, metric: r.metric, source: this.source };
    if (r.type === 'blackhole' || r.type === 'unreachable' || r.type === 'prohibit') return [{ ...base, blackhole: true }];
    if (r.type !== 'unicast') return 'type';
    const hops = r.nhid === null ? r.nexthops.map((n) => ({ via: n.via, ifindex: n.ifindex, blackhole: false })) : this.resolve(r.nhid, NEXTHOP_GROUP_DEPTH);
    if (hops === null) return 'unknown nexthop';
    if (hops.some((h) => h.blackhole)) return [{ ...base, blackhole: true }];
    // by port ('' for none: the gateway's connected subnet says which), its gateways
    const byPort = new Map<string, string[]>();
    for (const h of hops) {
      const mirrored = this.portOf(h.ifindex) ?? '';
      if (h.via === null) {
        // Straight out of an interface: only a mirror's means a port of vrouter's.
        if (mirrored === '') return 'no gateway';
        return [{ ...base, port: mirrored }];
      }
      if (h.via.includes(':') !== (r.family === 6)) return 'gateway family';
      const vias = byPort.get(mirrored) ?? [];
      if (!vias.includes(h.via)) vias.push(h.via);
      byPort.set(mirrored, vias);
    }
    if (byPort.size === 0) return 'no gateway';
    return [...byPort].map(([port, via]) => (port === '' ? { ...base, via } : { ...base, via, port }));
  }

  /**
   * The addresses Linux has on the mirrors' interfaces, by the port mirrored: those the
   * port has already are the caller's to leave out. Link-local ones are Linux's own (the
   * router has its own, the same: the mirror has the port's MAC).
   */
  learnedAddresses(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const a of this.addresses.values()) {
      const port = this.portOf(a.ifindex);
      if (port === undefined || /^fe[89ab]/i.test(a.address)) continue;
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

  /** A nexthop object's gateways (a group's members' too), or null if one is unknown. */
  private resolve(id: number, depth: number): { via: string | null; ifindex: number; blackhole: boolean }[] | null {
    const n = this.nexthops.get(id);
    if (n === undefined) return null;
    if (n.group.length === 0) return [{ via: n.via, ifindex: n.ifindex, blackhole: n.blackhole }];
    if (depth === 0) return null;
    const out = [];
    for (const m of n.group) {
      const hops = this.resolve(m.id, depth - 1);
      if (hops === null) return null;
      out.push(...hops);
    }
    return out;
  }
}
