// The forwarding table: routes resolved against the interfaces into next-hop groups
// (next-hops.ts), and longest-prefix-match tables whose result is a group. Built in the
// control plane (fib-tables.ts: compiled in the job pool, or changed in place) into
// SharedArrayBuffers that every PMD reads.
import { PluginConfigError, read32, type Prefix } from '../../src/pipeline/api.ts';
import { connectedInterface, ownerOf, subnetEdgeOf, type Interface } from './interfaces.ts';
import { prefixOf, type RouteConfig, type RoutingConfig } from './config.ts';
import { Lpm4, LPM4_FORMAT } from './lpm4.ts';
import { mask4, route4Key } from './lpm4-update.ts';
import { Lpm6, LPM6_FORMAT } from './lpm6.ts';
import { mask6, route6Key } from './lpm6-update.ts';
import { KIND_BLACKHOLE, KIND_CONNECTED, KIND_GATEWAY, LOCAL_SIGNATURE, nextHopsView, type Member, type NextHops } from './next-hops.ts';

export { KIND_BLACKHOLE, KIND_CONNECTED, KIND_GATEWAY, KIND_LOCAL, LOCAL_GROUP, MEMBER_WORDS, NO_ROUTE, type NextHops } from './next-hops.ts';

/** A route as resolved: its prefix (bits beyond the length cleared) and its group's signature. */
export interface Resolved4 {
  prefix: number;
  length: number;
  group: string;
}
export interface Resolved6 {
  bytes: Uint8Array;
  length: number;
  group: string;
}

/** The routes in force, by route4Key / route6Key, and the groups they name, by signature. */
export interface ResolvedFib {
  groups: Map<string, Member[]>;
  v4: Map<number, Resolved4>;
  v6: Map<string, Resolved6>;
}

function interfaceByName(interfaces: readonly Interface[], name: string, field: string): number {
  const i = interfaces.findIndex((f) => f.name === name);
  if (i < 0) throw new PluginConfigError(field, `"${name}" is not a port or bridge with addresses (routed: ${interfaces.map((f) => f.name).join(', ') || 'none'})`);
  return i;
}

/** What names a group: its members, in order (ECMP picks a member by flow hash modulo the count). */
export function signatureOf(members: readonly Member[]): string {
  return members.map((m) => `${m.kind} ${m.iface} ${m.gateway?.text ?? ''}`).join(',');
}

/** A route's key in the FIB (route4Key or route6Key): its prefix masked, and its length. */
export function keyOf(p: Prefix): number | string {
  return p.family === 4 ? route4Key(mask4(read32(p.bytes, 0), p.length), p.length) : route6Key(mask6(p.bytes, 0, p.length), p.length);
}

/** The static routes to one prefix, in the config's order, and what they say together. */
export interface PrefixRoutes {
  routes: RouteConfig[];
  /** equal for two configs whose routes to the prefix resolve the same */
  says: string;
}

/** What each route says, kept while it lives: a route is parsed once for every config it is in. */
const said = new WeakMap<RouteConfig, string>();
function saysOf(r: RouteConfig): string {
  let says = said.get(r);
  if (says === undefined) {
    says = `${r.metric} ${r.blackhole ? 'blackhole' : ''} ${r.port ?? ''} ${r.via.join(' ')}`;
    said.set(r, says);
  }
  return says;
}

/** The static routes by prefix (its canonical text), in the config's order. */
export function staticRoutes(config: RoutingConfig): Map<string, PrefixRoutes> {
  const out = new Map<string, PrefixRoutes>();
  for (const r of config.routes) addStatic(out, r);
  return out;
}

/** Adds a route (the last so far in the config's order) to the routes by prefix. */
export function addStatic(statics: Map<string, PrefixRoutes>, r: RouteConfig): void {
  const says = saysOf(r);
  const same = statics.get(r.prefix);
  if (same === undefined) statics.set(r.prefix, { routes: [r], says });
  else {
    same.routes.push(r);
    same.says += `; ${says}`;
  }
}

/**
 * The members of the config's routes to one prefix: those of the lowest metric (several
 * gateways there are an ECMP group), checked against the interfaces. Throws
 * PluginConfigError naming the route at fault.
 */
export function membersOf(config: RoutingConfig, routes: readonly RouteConfig[], interfaces: readonly Interface[]): Member[] {
  let best = Infinity;
  for (const r of routes) best = Math.min(best, r.metric);
  // The same route twice would be an ECMP group of one gateway, twice: refused, as Linux
  // answers a route added again (EEXIST).
  for (let k = 1; k < routes.length; k++) {
    const twin = routes.findIndex((r, j) => j < k && saysOf(r) === saysOf(routes[k]));
    if (twin >= 0) throw new PluginConfigError(`routes[${config.routes.indexOf(routes[k])}]`, `the same route as routes[${config.routes.indexOf(routes[twin])}] (${routes[k].prefix} ${describeTarget(routes[k])})`);
  }
  const members: Member[] = [];
  for (const r of routes) if (r.metric === best) members.push(...routeMembersOf(config, r, interfaces));
  if (members.some((m) => m.kind === KIND_BLACKHOLE) && members.length > 1) {
    throw new PluginConfigError(`routes[${config.routes.indexOf(routes[0])}]`, 'a blackhole route and another with the same prefix and metric');
  }
  return members;
}

/** A route's target as an operator writes it: `via 10.0.1.2 port a metric 5`, `blackhole`. */
function describeTarget(r: RouteConfig): string {
  const parts = r.blackhole ? ['blackhole'] : [...(r.via.length > 0 ? [`via ${r.via.join(', ')}`] : []), ...(r.port === null ? [] : [`port ${r.port}`])];
  return [...parts, `metric ${r.metric}`].join(' ');
}

/** Stands for a route's field until a mistake needs its place in the config (found then). */
const SOME_ROUTE = 'routes[?]';

function routeMembersOf(config: RoutingConfig, r: RouteConfig, interfaces: readonly Interface[]): Member[] {
  try {
    return routeMembers(r, SOME_ROUTE, interfaces);
  } catch (err) {
    if (!(err instanceof PluginConfigError) || !err.field.startsWith(SOME_ROUTE)) throw err;
    throw new PluginConfigError(`routes[${config.routes.indexOf(r)}]${err.field.slice(SOME_ROUTE.length)}`, err.message.slice(err.field.length + 2));
  }
}

/** What a route says, as far as its members go. */
export interface RouteTarget {
  via: readonly string[];
  port: string | null;
  blackhole: boolean;
}

/** The members a route says, checked against the interfaces (throws PluginConfigError naming `field`). */
export function routeMembers(r: RouteTarget, field: string, interfaces: readonly Interface[]): Member[] {
  if (r.blackhole) return [{ kind: KIND_BLACKHOLE, iface: -1, gateway: null }];
  const named = r.port === null ? -1 : interfaceByName(interfaces, r.port, `${field}.port`);
  if (r.via.length === 0) return [{ kind: KIND_CONNECTED, iface: named, gateway: null }];
  return r.via.map((text, v) => {
    const via = prefixOf(text);
    const viaField = r.via.length > 1 ? `${field}.via[${v}]` : `${field}.via`;
    const linkLocal = via.family === 6 && via.bytes[0] === 0xfe && (via.bytes[1] & 0xc0) === 0x80;
    // A packet sent there would come back to the router: Linux refuses such a gateway too.
    const owner = ownerOf(interfaces, via);
    if (owner !== null) throw new PluginConfigError(viaField, `${via.text} is this router's own address (on ${owner.name}), not a gateway`);
    let iface = named;
    if (iface < 0) {
      if (linkLocal) throw new PluginConfigError(`${field}.port`, `is required: ${via.text} is link-local, valid on any port`);
      iface = connectedInterface(interfaces, via);
      if (iface < 0) throw new PluginConfigError(viaField, `${via.text} is in no connected subnet (gateways must be directly reachable)`);
    } else if (!linkLocal && connectedInterface([interfaces[iface]], via) < 0) {
      throw new PluginConfigError(viaField, `${via.text} is not in a subnet of ${r.port}`);
    }
    const edge = subnetEdgeOf(interfaces[iface], via);
    if (edge !== null) throw new PluginConfigError(viaField, `${via.text} is ${edge} (on ${interfaces[iface].name}), not a gateway`);
    return { kind: KIND_GATEWAY, iface, gateway: via };
  });
}

/**
 * The routes of the interfaces: their connected subnets, and the router's own addresses
 * (members null: the LOCAL group). They win over static routes to the same prefix.
 */
export function interfaceRoutes(interfaces: readonly Interface[]): { prefix: Prefix; members: Member[] | null }[] {
  const out: { prefix: Prefix; members: Member[] | null }[] = [];
  for (const iface of interfaces) {
    for (const p of [...iface.v4, ...iface.v6]) out.push({ prefix: p, members: [{ kind: KIND_CONNECTED, iface: iface.index, gateway: null }] });
  }
  for (const iface of interfaces) {
    for (const p of [...iface.v4, ...iface.v6]) out.push({ prefix: { ...p, length: p.family === 4 ? 32 : 128 }, members: null });
    out.push({ prefix: { family: 6, bytes: iface.linkLocal, length: 128, text: '' }, members: null });
  }
  return out;
}

export function emptyFib(): ResolvedFib {
  return { groups: new Map([[LOCAL_SIGNATURE, []]]), v4: new Map(), v6: new Map() };
}

/** Puts a route into `fib`, in place of one to the same prefix and length (its group's signature given if known). */
export function addRoute(fib: ResolvedFib, p: Prefix, members: Member[] | null, signature?: string): void {
  if (p.family === 4) return addRoute4(fib, read32(p.bytes, 0), p.length, members, signature);
  const group = members === null ? LOCAL_SIGNATURE : (signature ?? signatureOf(members));
  if (members !== null && !fib.groups.has(group)) fib.groups.set(group, members);
  const bytes = mask6(p.bytes, 0, p.length);
  fib.v6.set(route6Key(bytes, p.length), { bytes, length: p.length, group });
}

/** addRoute for an IPv4 prefix given as a number and a length. */
export function addRoute4(fib: ResolvedFib, address: number, length: number, members: Member[] | null, signature?: string): void {
  const group = members === null ? LOCAL_SIGNATURE : (signature ?? signatureOf(members));
  if (members !== null && !fib.groups.has(group)) fib.groups.set(group, members);
  const prefix = mask4(address, length);
  fib.v4.set(route4Key(prefix, length), { prefix, length, group });
}

/**
 * Every route in force: the static routes, then those of the interfaces, which replace
 * static ones to the same prefix. Throws PluginConfigError naming the route at fault.
 */
export function resolveRoutes(config: RoutingConfig, interfaces: readonly Interface[], statics = staticRoutes(config)): ResolvedFib {
  const fib = emptyFib();
  for (const [text, routes] of statics) {
    const members = membersOf(config, routes.routes, interfaces);
    if (members.length > 0) addRoute(fib, prefixOf(text), members);
  }
  for (const r of interfaceRoutes(interfaces)) addRoute(fib, r.prefix, r.members);
  return fib;
}

/** Regions the FIB lives in, by name (Plugin.prepare returns them). */
export const FIB_REGIONS = ['lpm4-tbl24', 'lpm4-tbl8', 'lpm6-direct', 'lpm6-nodes', 'fib-meta', 'nexthops'] as const;

/** The readers a PMD builds over the regions. */
export function openFib(shared: Readonly<Record<string, ArrayBufferLike>>): { lpm4: Lpm4; lpm6: Lpm6; nextHops: NextHops } {
  const meta = new Int32Array(shared['fib-meta']);
  return {
    lpm4: new Lpm4({ format: LPM4_FORMAT, tbl24: shared['lpm4-tbl24'], tbl8: shared['lpm4-tbl8'], tbl8Groups: meta[0] }),
    lpm6: new Lpm6({ format: LPM6_FORMAT, direct: shared['lpm6-direct'], nodes: shared['lpm6-nodes'], nodeCount: meta[1], leafCount: meta[2] }),
    nextHops: nextHopsView(shared.nexthops),
  };
}

/** Whether readers are over these very regions (the tables were changed in place). */
export function sameFib(fib: { lpm4: Lpm4; lpm6: Lpm6; nextHops: NextHops }, shared: Readonly<Record<string, ArrayBufferLike>>): boolean {
  return (
    fib.lpm4.table.tbl24 === shared['lpm4-tbl24'] &&
    fib.lpm4.table.tbl8 === shared['lpm4-tbl8'] &&
    fib.lpm6.table.direct === shared['lpm6-direct'] &&
    fib.lpm6.table.nodes === shared['lpm6-nodes'] &&
    fib.nextHops.words.buffer === shared.nexthops
  );
}
