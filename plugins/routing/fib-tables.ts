// The FIB of a running router, as the control plane keeps it between changes: compiled
// whole in the job pool at start and for big changes (a million routes, a default route,
// new interfaces), and otherwise changed in place, route by route, in the tables the PMDs
// are reading (lpm4-update.ts, lpm6-update.ts, next-hops.ts): a route added through the
// admin endpoint, or learned from a route source, costs microseconds, not a compile of
// every route. Only the prefixes whose routes changed are resolved again: the config's
// since the last config, and those the route sources say changed (learnFib).
//
// The config's routes win over learned ones for their prefixes, the interfaces' over both.
// Learned routes are read where the route sources keep them (PluginSetup.learnedRoutes):
// the tables hold them, nothing else here does, but what their gateways resolve to.
import { ipv4PrefixKey, NO_LEARNED_ROUTES, parseNetwork, PluginConfigError, formatAddress, type ChangedPrefixes, type LearnedRoute, type LearnedRoutes, type PluginSetup, type Prefix } from '../../src/pipeline/api.ts';
import { prefixOf, type RouteConfig, type RoutingConfig } from './config.ts';
import { addRoute, addRoute4, addStatic, emptyFib, interfaceRoutes, keyOf, membersOf, resolveRoutes, routeMembers, signatureOf, staticRoutes, KIND_BLACKHOLE, type PrefixRoutes, type ResolvedFib } from './fib.ts';
import type { FibJobInput, FibJobOutput } from './fib-job.ts';
import type { Interface } from './interfaces.ts';
import { LPM4_FORMAT } from './lpm4.ts';
import { Lpm4Writer, mask4, route4Key, route4Length, route4Prefix } from './lpm4-update.ts';
import { LPM6_FORMAT } from './lpm6.ts';
import { Lpm6Writer, mask6, route6Key, type Route6Change } from './lpm6-update.ts';
import { NextHopTable, type Member } from './next-hops.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
/**
 * Bigger changes are compiled whole, in the job pool rather than on the supervisor's
 * thread: more prefixes than this, or IPv4 routes covering more tbl24 entries (about
 * 20 ms of writes).
 */
const MOST_IN_PLACE = 4096;
const MOST_IN_PLACE_ENTRIES = 1 << 20;
/** Routes the IPv6 subtries rebuilt in place may hold in all (a few tens of ms of the main thread). */
const MOST_IN_PLACE_VISITS6 = 1 << 22;
/** A prefix shorter than this covers 2^17 or more tbl24 entries (IPv4), or 512 or more subtries (IPv6): compiled whole. */
const SHORTEST_IN_PLACE = 8;

/** One router's tables, their writers, and the routes they hold. */
interface FibTables {
  /** the interfaces the routes were resolved against */
  interfaces: string;
  /** the keys of the interfaces' routes: static and learned routes to them are overruled */
  interfaceKeys: Set<number | string>;
  /** the static routes in the tables, by prefix */
  statics: Map<string, PrefixRoutes>;
  /** the config's routes they are (the next config's are compared with these) */
  routes: readonly RouteConfig[];
  /** the keys of the static routes' prefixes (but the interfaces'): learned routes to them are overruled */
  staticKeys: Set<number | string>;
  /** what learned routes resolve to, against these interfaces */
  learned: LearnedMembers;
  nextHops: NextHopTable;
  lpm4: Lpm4Writer;
  lpm6: Lpm6Writer;
  regions: Record<string, ArrayBufferLike>;
  /** a change in place stopped part-way (no room left): the tables hold some of it, and only a compile makes them whole again */
  partial: boolean;
}

/**
 * The tables of each router, found by any region of its shared memory: a region kept from
 * one config to the next (the neighbour table) says that this is the same router.
 */
const routers = new WeakMap<ArrayBufferLike, FibTables>();

/** What the FIB's interfaces are, as far as routes are concerned. */
function interfacesKey(interfaces: readonly Interface[]): string {
  return JSON.stringify(interfaces.map((f) => [f.name, [...f.v4, ...f.v6].map((p) => p.text), [...f.linkLocal]]));
}

/** The routes that changed since the tables were made: those to set (a group), and the keys to remove. */
interface FibChange {
  set: ResolvedFib;
  removed4: number[];
  removed6: string[];
  /** tbl24 entries the IPv4 changes cover */
  entries: number;
  /**
   * the routes of the IPv6 subtries the changes rebuild (Lpm6Writer.changeCost): past
   * MOST_IN_PLACE_VISITS6 the tables are compiled whole, in the job pool (thousands of
   * changes under one /16 of a million routes would each rebuild it, on the supervisor's
   * main thread)
   */
  visits6: number;
  /** the prefixes (canonical text) whose static routes changed */
  statics: string[];
  /** the routes to them now (null: none), for the tables' `statics` */
  staticRoutes: Map<string, PrefixRoutes | null>;
  /**
   * every prefix's routes now, when every prefix's were compared (staticsDiffering): the
   * tables' `statics` become these whole, the routes of prefixes that did not change
   * included, so that they hold the entries of the config in force (staticsTouched leaves
   * out of them the entries a later change removes)
   */
  allStatics: Map<string, PrefixRoutes> | null;
}

/**
 * The FIB for the config, checked (throws PluginConfigError naming the route at fault)
 * and not yet built: apply() changes the tables in use in place, or compiles new ones
 * (with the learned routes).
 */
export function planFib(setup: PluginSetup<RoutingConfig>, interfaces: readonly Interface[]): { apply(): Promise<Record<string, ArrayBufferLike>> } {
  const started = performance.now();
  const key = interfacesKey(interfaces);
  const running = runningFib(setup.shared, key);
  const learned = setup.learnedRoutes ?? NO_LEARNED_ROUTES;
  const change = running === undefined ? null : changeOf(running, setup.config, interfaces, learned);
  // Resolved now, so that a mistake is found before anything is changed.
  const statics = change === null ? staticRoutes(setup.config) : null;
  const fib = statics === null ? null : resolveRoutes(setup.config, interfaces, statics);
  return {
    async apply() {
      if (running !== undefined && change !== null) {
        const changed = changeInPlace(running, change);
        running.partial = changed === null;
        if (changed !== null) {
          if (change.allStatics !== null) running.statics = change.allStatics;
          else {
            for (const [text, routes] of change.staticRoutes) {
              if (routes === null) running.statics.delete(text);
              else running.statics.set(text, routes);
            }
          }
          running.routes = setup.config.routes;
          updateStaticKeys(running.staticKeys, change.statics, running.statics, running.interfaceKeys);
          if (changed > 0) setup.log.info(`${changed} route changes made in place in ${(performance.now() - started).toFixed(1)} ms (${running.statics.size} static routes)`);
          return running.regions;
        }
      }
      const all = statics ?? staticRoutes(setup.config);
      return compileWhole(setup, fib ?? resolveRoutes(setup.config, interfaces, all), key, all, interfaces, started);
    },
  };
}

/**
 * The learned routes to `prefixes` changed (Plugin.routesLearned): they are resolved, and
 * changed in place in the tables in use, or, for a big change, the tables are compiled
 * whole (the config's routes, the interfaces' and every learned one).
 */
export async function learnFib(setup: PluginSetup<RoutingConfig>, interfaces: readonly Interface[], prefixes: ChangedPrefixes): Promise<Record<string, ArrayBufferLike>> {
  const started = performance.now();
  const key = interfacesKey(interfaces);
  const running = runningFib(setup.shared, key);
  if (running !== undefined) {
    const change = learnedChangeOf(running, setup.learnedRoutes ?? NO_LEARNED_ROUTES, prefixes);
    const changed = change === null ? null : changeInPlace(running, change);
    running.partial ||= change !== null && changed === null;
    if (changed !== null) {
      if (changed > 0) setup.log.info(`${changed} learned route changes made in place in ${(performance.now() - started).toFixed(1)} ms`);
      return running.regions;
    }
  }
  const statics = running?.statics ?? staticRoutes(setup.config);
  return compileWhole(setup, resolveRoutes(setup.config, interfaces, statics), key, statics, interfaces, started);
}

/**
 * The tables in use over these regions, if resolved against these interfaces (any, without
 * `interfaces`). Tables whose own regions are all among them come first: after a refused
 * change the memory in force comes back whole (Supervisor.restoreTables), while the region
 * kept (the neighbour table) may lead to the tables compiled for the change refused.
 */
function runningFib(shared: Readonly<Record<string, ArrayBufferLike>>, interfaces?: string): FibTables | undefined {
  const regions = Object.values(shared);
  let led: FibTables | undefined;
  for (const b of regions) {
    const t = routers.get(b);
    if (t === undefined || (interfaces !== undefined && t.interfaces !== interfaces)) continue;
    if (Object.values(t.regions).every((r) => regions.includes(r))) return t;
    led ??= t;
  }
  return led;
}

/** The keys of the static routes' prefixes, but those the interfaces' routes overrule. */
function staticKeysOf(statics: Map<string, PrefixRoutes>, interfaceKeys: Set<number | string>): Set<number | string> {
  const keys = new Set<number | string>();
  for (const text of statics.keys()) {
    const key = keyOf(prefixOf(text));
    if (!interfaceKeys.has(key)) keys.add(key);
  }
  return keys;
}

/** The keys of the static routes' prefixes, after the routes to `changed` changed: only those are looked at again. */
function updateStaticKeys(keys: Set<number | string>, changed: readonly string[], statics: Map<string, PrefixRoutes>, interfaceKeys: Set<number | string>): void {
  for (const text of changed) {
    const key = keyOf(prefixOf(text));
    if (statics.has(text) && !interfaceKeys.has(key)) keys.add(key);
    else keys.delete(key);
  }
}

/**
 * The prefixes whose static routes may differ between the tables' routes and `now`, with
 * their routes in `now` (null: none). The lists are walked side by side: what is the same
 * object in the same order in both is taken as unchanged, every other entry's prefix may
 * have changed. An apply of route edits removes some entries and appends others, so that
 * only theirs are looked at; a list otherwise reordered gives up (null) past MOST_IN_PLACE.
 * A touched prefix's routes in `now` are its routes in the tables but those left out, then
 * the entries past the last one kept (in `now`, every kept entry comes before them): found
 * without a look at the other routes.
 */
function staticsTouched(t: FibTables, now: readonly RouteConfig[]): Map<string, PrefixRoutes | null> | null {
  const old = t.routes;
  const touched = new Map<string, PrefixRoutes | null>();
  const leftOut = new Set<RouteConfig>();
  let i = 0;
  let j = 0;
  while (i < old.length && j < now.length) {
    if (old[i] === now[j]) {
      i++;
      j++;
    } else {
      leftOut.add(old[i]);
      touched.set(old[i++].prefix, null);
      if (touched.size > MOST_IN_PLACE) return null;
    }
  }
  const newFrom = j;
  for (; i < old.length; i++) {
    leftOut.add(old[i]);
    touched.set(old[i].prefix, null);
  }
  for (; j < now.length; j++) touched.set(now[j].prefix, null);
  if (touched.size > MOST_IN_PLACE) return null;
  // Their routes, the untouched ones too, in the config's order.
  if (touched.size > 0) {
    const routes = new Map<string, PrefixRoutes>();
    for (const text of touched.keys()) {
      for (const r of t.statics.get(text)?.routes ?? []) if (!leftOut.has(r)) addStatic(routes, r);
    }
    for (let k = newFrom; k < now.length; k++) addStatic(routes, now[k]);
    for (const [text, prefixRoutes] of routes) touched.set(text, prefixRoutes);
  }
  return touched;
}

/** The same for any two lists: every prefix's routes compared; with them, every prefix's routes now. */
function staticsDiffering(t: FibTables, config: RoutingConfig): { differing: Map<string, PrefixRoutes | null>; statics: Map<string, PrefixRoutes> } {
  const statics = staticRoutes(config);
  const differing = new Map<string, PrefixRoutes | null>();
  for (const [text, routes] of statics) if (t.statics.get(text)?.says !== routes.says) differing.set(text, routes);
  for (const text of t.statics.keys()) if (!statics.has(text)) differing.set(text, null);
  return { differing, statics };
}

/** The routes of the prefixes whose static routes changed, resolved; null when there are too many. */
function changeOf(t: FibTables, config: RoutingConfig, interfaces: readonly Interface[], learned: LearnedRoutes): FibChange | null {
  if (t.partial) return null;
  let touched = staticsTouched(t, config.routes);
  let allStatics: Map<string, PrefixRoutes> | null = null;
  if (touched === null) ({ differing: touched, statics: allStatics } = staticsDiffering(t, config));
  const changed: string[] = [];
  for (const [text, routes] of touched) if (t.statics.get(text)?.says !== routes?.says) changed.push(text);
  if (changed.length > MOST_IN_PLACE) return null;
  const change: FibChange = { set: emptyFib(), removed4: [], removed6: [], entries: 0, visits6: 0, statics: changed, staticRoutes: touched, allStatics };
  for (const text of changed) {
    const p: Prefix = prefixOf(text);
    const key = keyOf(p);
    if (t.interfaceKeys.has(key)) continue;
    if (p.length < SHORTEST_IN_PLACE) return null;
    if (p.family === 4) change.entries += p.length <= 24 ? 1 << (24 - p.length) : 1;
    else change.visits6 += t.lpm6.changeCost(p.bytes, p.length);
    const routes = touched.get(text);
    if (routes) {
      addRoute(change.set, p, membersOf(config, routes.routes, interfaces));
      continue;
    }
    // No static route to it any more: a learned one takes it back, if there is one.
    const group = t.learned.of(learned.get(text));
    if (group !== null) addRoute(change.set, p, group.members, group.signature);
    else if (p.family === 4) change.removed4.push(key as number);
    else change.removed6.push(key as string);
  }
  return change.entries > MOST_IN_PLACE_ENTRIES || change.visits6 > MOST_IN_PLACE_VISITS6 ? null : change;
}

/** The learned routes of `prefixes` that are not overruled, resolved; null when there are too many. */
function learnedChangeOf(t: FibTables, learned: LearnedRoutes, prefixes: ChangedPrefixes): FibChange | null {
  if (t.partial) return null;
  if (prefixes.whole === true || prefixes.size > MOST_IN_PLACE) return null;
  const change: FibChange = { set: emptyFib(), removed4: [], removed6: [], entries: 0, visits6: 0, statics: [], staticRoutes: new Map(), allStatics: null };
  for (const text of prefixes) {
    const p = learnedPrefix(text);
    if (p === null) continue;
    const key = keyOf(p);
    if (t.interfaceKeys.has(key) || t.staticKeys.has(key)) continue;
    if (p.length < SHORTEST_IN_PLACE) return null;
    if (p.family === 4) change.entries += p.length <= 24 ? 1 << (24 - p.length) : 1;
    else change.visits6 += t.lpm6.changeCost(p.bytes, p.length);
    const group = t.learned.of(learned.get(text));
    if (group !== null) addRoute(change.set, p, group.members, group.signature);
    else if (p.family === 4) change.removed4.push(key as number);
    else change.removed6.push(key as string);
  }
  return change.entries > MOST_IN_PLACE_ENTRIES || change.visits6 > MOST_IN_PLACE_VISITS6 ? null : change;
}

/** A learned route's prefix, parsed; null if it is none (a source's is always one). */
function learnedPrefix(text: string): Prefix | null {
  try {
    return parseNetwork(text);
  } catch {
    return null;
  }
}

/** What learned routes to one prefix resolve to: their group's members, and its signature. */
interface LearnedGroup {
  members: Member[];
  signature: string;
}

const BLACKHOLE_MEMBERS: Member[] = [{ kind: KIND_BLACKHOLE, iface: -1, gateway: null }];
const BLACKHOLE_GROUP: LearnedGroup = { members: BLACKHOLE_MEMBERS, signature: signatureOf(BLACKHOLE_MEMBERS) };
const NO_GATEWAYS: readonly string[] = [];

/**
 * Learned routes resolved against the interfaces. A source's routes with the same gateways
 * share one `via` array (LearnedRoute): what it resolves to is kept by that array (and the
 * port), so that a million routes via a few gateways are resolved a few times. A route that
 * does not resolve (a gateway in no connected subnet, a port that is not routed) is left
 * out, not refused: it is not the config's.
 */
class LearnedMembers {
  private readonly interfaces: readonly Interface[];
  private readonly byVia = new WeakMap<readonly string[], Map<string, LearnedGroup | null>>();

  constructor(interfaces: readonly Interface[]) {
    this.interfaces = interfaces;
  }

  /** The group of the routes to one prefix, those of the lowest metric (several gateways: ECMP); null if none resolves. */
  of(routes: readonly LearnedRoute[]): LearnedGroup | null {
    if (routes.length <= 1) return routes.length === 0 ? null : this.one(routes[0]);
    let best = Infinity;
    for (const r of routes) best = Math.min(best, r.metric);
    const members: Member[] = [];
    for (const r of routes) {
      const group = r.metric === best ? this.one(r) : null;
      if (group !== null) members.push(...group.members);
    }
    if (members.length === 0) return null;
    // A source that says both a blackhole and gateways is in the middle of a change: the gateways win.
    const kept = members.length > 1 && members.some((m) => m.kind === KIND_BLACKHOLE) ? members.filter((m) => m.kind !== KIND_BLACKHOLE) : members;
    return { members: kept, signature: signatureOf(kept) };
  }

  private one(r: LearnedRoute): LearnedGroup | null {
    if (r.blackhole === true) return BLACKHOLE_GROUP;
    const via = r.via ?? NO_GATEWAYS;
    let byPort = this.byVia.get(via);
    if (byPort === undefined) this.byVia.set(via, (byPort = new Map()));
    let group = byPort.get(r.port ?? '');
    if (group === undefined) {
      try {
        const members = routeMembers({ via, port: r.port ?? null, blackhole: false }, 'learned', this.interfaces);
        group = { members, signature: signatureOf(members) };
      } catch (err) {
        if (!(err instanceof PluginConfigError)) throw err;
        group = null;
      }
      byPort.set(r.port ?? '', group);
    }
    return group;
  }
}

/**
 * Compiles the tables whole, in the job pool: the static and interfaces' routes of `fib`,
 * and every learned route to a prefix they do not have.
 */
async function compileWhole(setup: PluginSetup<RoutingConfig>, fib: ResolvedFib, interfaces: string, statics: Map<string, PrefixRoutes>, ifaces: readonly Interface[], started: number): Promise<Record<string, ArrayBufferLike>> {
  const learned = new LearnedMembers(ifaces);
  // Each group once, with the routes that use it; routes as columns of group indices.
  const groups: { signature: string; members: readonly Member[]; routes: number }[] = [];
  const groupIndex = new Map<string, number>();
  const indexOf = (signature: string, members: readonly Member[]) => {
    let k = groupIndex.get(signature);
    if (k === undefined) {
      groupIndex.set(signature, (k = groups.length));
      groups.push({ signature, members, routes: 0 });
    }
    groups[k].routes++;
    return k;
  };
  const v4 = { prefix: [] as number[], length: [] as number[], group: [] as number[] };
  const v6 = { bytes: [] as Uint8Array[], length: [] as number[], group: [] as number[] };
  for (const r of fib.v4.values()) {
    v4.prefix.push(r.prefix);
    v4.length.push(r.length);
    v4.group.push(indexOf(r.group, fib.groups.get(r.group)!));
  }
  for (const r of fib.v6.values()) {
    v6.bytes.push(r.bytes);
    v6.length.push(r.length);
    v6.group.push(indexOf(r.group, fib.groups.get(r.group)!));
  }
  let learnedCount = 0;
  for (const routes of (setup.learnedRoutes ?? NO_LEARNED_ROUTES).all()) {
    const text = routes[0].prefix;
    // IPv4 read without a parse: a full table is a million of them.
    const key4 = ipv4PrefixKey(text);
    if (key4 >= 0) {
      const length = key4 % 64;
      const prefix = mask4(Math.floor(key4 / 64), length);
      if (fib.v4.has(route4Key(prefix, length))) continue;
      const group = learned.of(routes);
      if (group === null) continue;
      v4.prefix.push(prefix);
      v4.length.push(length);
      v4.group.push(indexOf(group.signature, group.members));
      learnedCount++;
      continue;
    }
    const p = learnedPrefix(text);
    if (p === null || fib.v4.has(keyOf(p) as number) || fib.v6.has(keyOf(p) as string)) continue;
    const group = learned.of(routes);
    if (group === null) continue;
    if (p.family === 4) {
      v4.prefix.push(mask4(read4(p), p.length));
      v4.length.push(p.length);
      v4.group.push(indexOf(group.signature, group.members));
    } else {
      v6.bytes.push(mask6(p.bytes, 0, p.length));
      v6.length.push(p.length);
      v6.group.push(indexOf(group.signature, group.members));
    }
    learnedCount++;
  }
  let members = 0;
  for (const g of groups) members += g.members.length;
  const nextHops = new NextHopTable(Math.max(256, 2 * groups.length + 64), Math.max(1024, 2 * members + 256));
  const ids = groups.map((g) => nextHops.acquire(g.signature, g.members, g.routes));
  const n4 = v4.prefix.length;
  const n6 = v6.length.length;
  const input: FibJobInput = {
    v4: { prefix: Uint32Array.from(v4.prefix), length: Uint8Array.from(v4.length), nextHop: Uint32Array.from(v4.group, (k) => ids[k]) },
    v6: { prefix: new Uint8Array(16 * n6), length: Uint8Array.from(v6.length), nextHop: Uint32Array.from(v6.group, (k) => ids[k]) },
    // Room for what changes in place until the next compile: it takes over when room runs out.
    spareGroups: 1024,
    spareNodes: 16384,
  };
  for (let i = 0; i < n4; i++) if (v4.length[i] > 24) input.spareGroups += 1 / 8;
  for (let i = 0; i < n6; i++) {
    input.v6.prefix.set(v6.bytes[i], 16 * i);
    if (v6.length[i] > 16) input.spareNodes += 1 / 2;
  }
  input.spareGroups = Math.ceil(input.spareGroups);
  input.spareNodes = Math.ceil(input.spareNodes);
  const out = await setup.runJob<FibJobOutput>(new URL(`./fib-job${MODULE_EXT}`, import.meta.url), input);
  const meta = new Int32Array(out.regions['fib-meta']);
  const lpm4 = new Lpm4Writer({ format: LPM4_FORMAT, tbl24: out.regions['lpm4-tbl24'], tbl8: out.regions['lpm4-tbl8'], tbl8Groups: meta[0] }, out.depths, input.v4);
  const lpm6 = new Lpm6Writer({ format: LPM6_FORMAT, direct: out.regions['lpm6-direct'], nodes: out.regions['lpm6-nodes'], nodeCount: meta[1], leafCount: meta[2] }, input.v6);
  const interfaceKeys = new Set(interfaceRoutes(ifaces).map((r) => keyOf(r.prefix)));
  const tables: FibTables = { interfaces, interfaceKeys, statics, routes: setup.config.routes, staticKeys: staticKeysOf(statics, interfaceKeys), learned, nextHops, lpm4, lpm6, regions: { ...out.regions, nexthops: nextHops.buffer }, partial: false };
  for (const b of Object.values(setup.shared)) routers.set(b, tables);
  setup.log.info(`${n4 + n6} routes compiled in ${Math.round(performance.now() - started)} ms (${ifaces.length} interfaces, ${learnedCount} learned routes)`);
  return tables.regions;
}

const read4 = (p: Prefix) => ((p.bytes[0] << 24) | (p.bytes[1] << 16) | (p.bytes[2] << 8) | p.bytes[3]) >>> 0;

/** What the FIB holds: routes in all, and the learned ones among them (those not overruled, resolved). */
export function fibCounts(shared: Readonly<Record<string, ArrayBufferLike>>): { routes: number; learned: number } | null {
  const t = runningFib(shared);
  if (t === undefined) return null;
  const routes = t.lpm4.routes.size + t.lpm6.routes.size;
  return { routes, learned: routes - t.interfaceKeys.size - t.staticKeys.size };
}

/** The longest prefix in the FIB that holds an address (as its text), or null if none does. */
export function fibMatch(shared: Readonly<Record<string, ArrayBufferLike>>, address: Prefix): string | null {
  const t = runningFib(shared);
  if (t === undefined) return null;
  if (address.family === 4) {
    const a = read4(address);
    for (let l = 32; l >= 0; l--) if (t.lpm4.routes.has(route4Key(mask4(a, l), l))) return `${formatAddress(Uint8Array.of(mask4(a, l) >>> 24, (mask4(a, l) >>> 16) & 255, (mask4(a, l) >>> 8) & 255, mask4(a, l) & 255))}/${l}`;
    return null;
  }
  for (let l = 128; l >= 0; l--) {
    const bytes = mask6(address.bytes, 0, l);
    if (t.lpm6.routes.has(route6Key(bytes, l))) return `${formatAddress(bytes)}/${l}`;
  }
  return null;
}

/**
 * Makes the change in the tables; returns how many routes changed, or null when a table
 * ran out of room (the tables are then part-way, each entry the route before or after,
 * until the ones compiled in their place are in use).
 */
function changeInPlace(t: FibTables, change: FibChange): number | null {
  let count = 0;
  // New groups are written before the routes that use them; old ones freed after.
  for (const [key, r] of change.set.v4) {
    const before = t.lpm4.routes.get(key);
    if (before !== undefined && t.nextHops.signatureOf(before) === r.group) continue;
    const id = t.nextHops.acquire(r.group, change.set.groups.get(r.group)!);
    if (id < 0 || !t.lpm4.set(r.prefix, r.length, id)) return null;
    if (before !== undefined) t.nextHops.release(before);
    count++;
  }
  for (const key of change.removed4) {
    const id = t.lpm4.routes.get(key);
    if (id === undefined) continue;
    t.lpm4.delete(route4Prefix(key), route4Length(key));
    t.nextHops.release(id);
    count++;
  }
  // IPv6 in one update: each subtree it touches is rebuilt once.
  const released: number[] = [];
  const changes6: Route6Change[] = [];
  for (const [key, r] of change.set.v6) {
    const before = t.lpm6.routes.get(key)?.nextHop;
    if (before !== undefined && t.nextHops.signatureOf(before) === r.group) continue;
    const id = t.nextHops.acquire(r.group, change.set.groups.get(r.group)!);
    if (id < 0) return null;
    changes6.push({ bytes: r.bytes, length: r.length, nextHop: id });
    if (before !== undefined) released.push(before);
  }
  for (const key of change.removed6) {
    const route = t.lpm6.routes.get(key);
    if (route === undefined) continue;
    changes6.push({ bytes: route.bytes, length: route.length, nextHop: null });
    released.push(route.nextHop);
  }
  if (changes6.length > 0 && !t.lpm6.update(changes6)) return null;
  for (const id of released) t.nextHops.release(id);
  return count + changes6.length;
}
