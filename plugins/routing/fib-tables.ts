// The FIB of a running router, as the control plane keeps it between changes: compiled
// whole in the job pool at start and for big changes (a million routes, a default route,
// new interfaces), and otherwise changed in place, route by route, in the tables the PMDs
// are reading (lpm4-update.ts, lpm6-update.ts, next-hops.ts): a route added through the
// admin endpoint costs microseconds, not a compile of every route. Only the prefixes whose
// routes changed since the last config are resolved again.
import type { PluginSetup, Prefix } from '../../src/pipeline/api.ts';
import { prefixOf, type RoutingConfig } from './config.ts';
import { addRoute, emptyFib, interfaceRoutes, keyOf, membersOf, resolveRoutes, staticRoutes, type PrefixRoutes, type ResolvedFib } from './fib.ts';
import type { FibJobInput, FibJobOutput } from './fib-job.ts';
import type { Interface } from './interfaces.ts';
import { LPM4_FORMAT } from './lpm4.ts';
import { Lpm4Writer } from './lpm4-update.ts';
import { LPM6_FORMAT } from './lpm6.ts';
import { Lpm6Writer, type Route6Change } from './lpm6-update.ts';
import { NextHopTable } from './next-hops.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
/**
 * Bigger changes are compiled whole, in the job pool rather than on the supervisor's
 * thread: more prefixes than this, or IPv4 routes covering more tbl24 entries (about
 * 20 ms of writes).
 */
const MOST_IN_PLACE = 4096;
const MOST_IN_PLACE_ENTRIES = 1 << 20;
/** A prefix shorter than this covers 2^17 or more tbl24 entries (IPv4), or 512 or more subtries (IPv6): compiled whole. */
const SHORTEST_IN_PLACE = 8;

/** One router's tables, their writers, and the routes they hold. */
interface FibTables {
  /** the interfaces the routes were resolved against */
  interfaces: string;
  /** the keys of the interfaces' routes: static routes to them are overruled */
  interfaceKeys: Set<number | string>;
  /** the static routes in the tables, by prefix */
  statics: Map<string, PrefixRoutes>;
  nextHops: NextHopTable;
  lpm4: Lpm4Writer;
  lpm6: Lpm6Writer;
  regions: Record<string, ArrayBufferLike>;
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
}

/**
 * The FIB for the config, checked (throws PluginConfigError naming the route at fault)
 * and not yet built: apply() changes the tables in use in place, or compiles new ones.
 */
export function planFib(setup: PluginSetup<RoutingConfig>, interfaces: readonly Interface[]): { apply(): Promise<Record<string, ArrayBufferLike>> } {
  const started = performance.now();
  const own = Object.values(setup.shared);
  const key = interfacesKey(interfaces);
  const running = own.map((b) => routers.get(b)).find((t) => t !== undefined && t.interfaces === key);
  const statics = staticRoutes(setup.config);
  const change = running === undefined ? null : changeOf(running, setup.config, statics, interfaces);
  // Resolved now, so that a mistake is found before anything is changed.
  const fib = change === null ? resolveRoutes(setup.config, interfaces, statics) : null;
  return {
    async apply() {
      if (running !== undefined && change !== null) {
        const changed = changeInPlace(running, change);
        if (changed !== null) {
          running.statics = statics;
          if (changed > 0) setup.log.info(`${changed} route changes made in place in ${(performance.now() - started).toFixed(1)} ms (${statics.size} static routes)`);
          return running.regions;
        }
      }
      const whole = fib ?? resolveRoutes(setup.config, interfaces, statics);
      const tables = await compileWhole(setup, whole, key, statics, interfaces);
      for (const b of own) routers.set(b, tables);
      setup.log.info(`${whole.v4.size + whole.v6.size} routes compiled in ${Math.round(performance.now() - started)} ms (${interfaces.length} interfaces)`);
      return tables.regions;
    },
  };
}

/** The routes of the prefixes whose static routes changed, resolved; null when there are too many. */
function changeOf(t: FibTables, config: RoutingConfig, statics: Map<string, PrefixRoutes>, interfaces: readonly Interface[]): FibChange | null {
  const changed: string[] = [];
  for (const [text, routes] of statics) if (t.statics.get(text)?.says !== routes.says) changed.push(text);
  for (const text of t.statics.keys()) if (!statics.has(text)) changed.push(text);
  if (changed.length > MOST_IN_PLACE) return null;
  const change: FibChange = { set: emptyFib(), removed4: [], removed6: [], entries: 0 };
  for (const text of changed) {
    const p: Prefix = prefixOf(text);
    const key = keyOf(p);
    if (t.interfaceKeys.has(key)) continue;
    if (p.length < SHORTEST_IN_PLACE) return null;
    if (p.family === 4) change.entries += p.length <= 24 ? 1 << (24 - p.length) : 1;
    const routes = statics.get(text);
    // Learned routes none of which resolves are no route (membersOf): removed like one.
    const members = routes === undefined ? [] : membersOf(config, routes.indices, interfaces);
    if (members.length > 0) addRoute(change.set, p, members);
    else if (p.family === 4) change.removed4.push(key as number);
    else change.removed6.push(key as string);
  }
  return change.entries > MOST_IN_PLACE_ENTRIES ? null : change;
}

async function compileWhole(setup: PluginSetup<RoutingConfig>, fib: ResolvedFib, interfaces: string, statics: Map<string, PrefixRoutes>, ifaces: readonly Interface[]): Promise<FibTables> {
  let members = 0;
  for (const m of fib.groups.values()) members += m.length;
  const nextHops = new NextHopTable(Math.max(256, 2 * fib.groups.size + 64), Math.max(1024, 2 * members + 256));
  const groupOf = (signature: string) => nextHops.acquire(signature, fib.groups.get(signature)!);
  const input: FibJobInput = {
    v4: { prefix: new Uint32Array(fib.v4.size), length: new Uint8Array(fib.v4.size), nextHop: new Uint32Array(fib.v4.size) },
    v6: { prefix: new Uint8Array(16 * fib.v6.size), length: new Uint8Array(fib.v6.size), nextHop: new Uint32Array(fib.v6.size) },
    // Room for what changes in place until the next compile: it takes over when room runs out.
    spareGroups: 1024,
    spareNodes: 16384,
  };
  let i = 0;
  for (const r of fib.v4.values()) {
    input.v4.prefix[i] = r.prefix;
    input.v4.length[i] = r.length;
    input.v4.nextHop[i++] = groupOf(r.group);
    if (r.length > 24) input.spareGroups += 1 / 8;
  }
  i = 0;
  for (const r of fib.v6.values()) {
    input.v6.prefix.set(r.bytes, 16 * i);
    input.v6.length[i] = r.length;
    input.v6.nextHop[i++] = groupOf(r.group);
    if (r.length > 16) input.spareNodes += 1 / 2;
  }
  input.spareGroups = Math.ceil(input.spareGroups);
  input.spareNodes = Math.ceil(input.spareNodes);
  const out = await setup.runJob<FibJobOutput>(new URL(`./fib-job${MODULE_EXT}`, import.meta.url), input);
  const meta = new Int32Array(out.regions['fib-meta']);
  const lpm4 = new Lpm4Writer({ format: LPM4_FORMAT, tbl24: out.regions['lpm4-tbl24'], tbl8: out.regions['lpm4-tbl8'], tbl8Groups: meta[0] }, out.depths, input.v4);
  const lpm6 = new Lpm6Writer({ format: LPM6_FORMAT, direct: out.regions['lpm6-direct'], nodes: out.regions['lpm6-nodes'], nodeCount: meta[1], leafCount: meta[2] }, input.v6);
  const interfaceKeys = new Set(interfaceRoutes(ifaces).map((r) => keyOf(r.prefix)));
  return { interfaces, interfaceKeys, statics, nextHops, lpm4, lpm6, regions: { ...out.regions, nexthops: nextHops.buffer } };
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
    t.lpm4.delete(Math.floor(key / 64), key % 64);
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
