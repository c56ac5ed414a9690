// routing: vrouter as an IPv4 and IPv6 router, as a stage of the pipeline. Frames to the
// router's MAC on a port with addresses (or on a bridge with addresses) are routed: to a
// next hop found by longest-prefix match, its MAC from the neighbour table (ARP, NDP);
// ARP and NDP for the router's addresses are answered, router advertisements sent, and
// ICMP errors go back where a packet cannot go on. Frames of ports without addresses, and
// frames between the hosts of a bridge, are left to the bridge stage that follows.
//
// The route table is built in the control plane (prepare: compiled in the job pool, or
// changed in place); the neighbour table is shared by every PMD; both live in shared memory
// and outlive a PMD.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import {
  ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EGRESS_UNDECIDED, LIST_PAUSE, NO_LEARNED_ROUTES, PLUGIN_API_VERSION, PluginConfigError, formatAddress, formatMac, macHi, macLo, maskBytes, parseAddress, parseNetwork, read16, read32,
  type ChangedPrefixes, type LearnedRoute, type PacketBatch, type Plugin, type PluginContext, type PluginSetup, type Prefix, type TableView, type Topology,
} from '../../src/pipeline/api.ts';
import { parseRoutingConfig, prefixOf, type NeighbourConfig, type RoutingConfig } from './config.ts';
import { keyOf } from './fib.ts';
import { fibCounts, fibMatch, learnFib, planFib } from './fib-tables.ts';
import { interfacesOf, neighbourRegionOf, ownerOf, subnetEdgeOf } from './interfaces.ts';
import { ipv4In } from './ipv4.ts';
import { ipv6In } from './ipv6.ts';
import { arpIn, sendRouterAdvertisement } from './neighbour-io.ts';
import { neighbourTableBytes, NeighbourTable, STATE_NAMES, STATIC } from './neighbours.ts';
import { learnedWritten, staticsWritten, type Written } from './neighbours-written.ts';
import { COUNTERS, DROP_REASONS, HELD_CHECK_MS, Router } from './router.ts';
import { discardHeld, releaseHeld } from './held.ts';
import { sayFarewells } from './ra-farewell.ts';
import { announce, interfacesToAnnounce } from './announce.ts';
import { describe } from './describe.ts';

/** Neighbour table slots aged per poll round (the whole table every few thousand rounds). */
const SWEEP_SLOTS = 64;
const SWEEP_EVERY_MS = 100;
/**
 * Poll rounds between two looks at the clock for advertisements due: a busy round takes a
 * microsecond or more, an idle one up to pmd.sleepMaxUs (10 ms by default): 0.6 s.
 */
const RA_CHECK_ROUNDS = 64;
/** Routes a listing passes over between two pauses (LIST_PAUSE). */
const ROWS_PER_PAUSE = 256;

/** The router's clock (ms) is the batch's; tests may set one of their own. */
export const clock: { now: (() => number) | null } = { now: null };

function createState(ctx: PluginContext<RoutingConfig>): Router {
  const r = new Router(ctx);
  // PMD 0 announces what a change at run time gave new addresses or a new MAC.
  if (ctx.pmd === 0 && ctx.previous !== null) {
    r.announceDue = interfacesToAnnounce(r.interfaces, r.portNames, ctx.previous);
    r.announcing = r.announceDue.reduce((n, due) => n + due, 0);
  }
  return r;
}

function process(batch: PacketBatch, r: Router): void {
  const ingress = batch.ingress;
  const ifIndex = r.byPort[ingress];
  r.now = clock.now === null ? batch.now : clock.now();
  r.clock[0] = r.now;
  if (ifIndex < 0) {
    if (r.mirrored[ingress] >= 0) fromLinux(r, batch, r.mirrored[ingress]);
    // Packets held from a port no longer routed go on, or are dropped, all the same.
    if (r.heldCount > 0) releaseHeld(r, batch);
    return;
  }
  const iface = r.interfaces[ifIndex];
  const d = batch.data;
  if (r.words16 !== batch.words16) {
    r.words16 = batch.words16;
    r.words32 = batch.words32;
  }
  r.cacheIface = -1;
  r.ipv4Hops.clear();
  r.routedInBatch = 0;
  if (r.heldCount > 0) releaseHeld(r, batch);
  if (r.now >= r.raDue[ifIndex]) advertise(r, batch);
  if (r.announcing > 0 && r.announceDue[ifIndex] === 1) {
    r.announceDue[ifIndex] = 0;
    r.announcing--;
    announce(r, batch, iface);
  }
  const egress = batch.egress;
  const count = batch.count;
  const w16 = r.words16;
  const w32 = r.words32;
  const macWord0 = r.macWord0[ifIndex];
  const macHalf2 = r.macHalf2[ifIndex];
  const securedHi = r.securedHi[ingress];
  const securedLo = r.securedLo[ingress];
  for (let i = 0; i < count; i++) {
    if (egress[i] !== EGRESS_UNDECIDED) continue;
    const off = batch.offset(i);
    const length = batch.length(i);
    if (length < 14) continue;
    const group = (d[off] & 1) !== 0;
    // Frames start 64-byte aligned: the destination MAC is a 32-bit and a 16-bit word.
    const toRouter = !group && w32[off >>> 2] === macWord0 && w16[(off >>> 1) + 2] === macHalf2;
    if (!toRouter && !group) continue;
    if (securedHi >= 0 && (macHi(d, off + 6) !== securedHi || macLo(d, off + 6) !== securedLo)) {
      batch.dropAs(i, r.drop.source_mac_denied);
      continue;
    }
    const type = read16(d, off + 12);
    if (type === ETHERTYPE_IPV4) {
      if (toRouter) ipv4In(r, batch, i, iface, off, length);
      else if (r.mirrorPort[ifIndex] >= 0 && isLocalMulticast4(d, off, length)) r.punt(batch, i, iface);
    } else if (type === ETHERTYPE_IPV6) ipv6In(r, batch, i, iface, toRouter);
    else if (type === ETHERTYPE_ARP) arpIn(r, batch, i, iface);
  }
  if (r.routedInBatch > 0) r.count(ingress, r.counter.routed, r.routedInBatch);
}

/**
 * What Linux sends from a port's mirror (its TAP interface) leaves through the port as it
 * is: Linux is the router there for what vrouter does not do itself (BGP, OSPF, SSH).
 */
function fromLinux(r: Router, batch: PacketBatch, port: number): void {
  const egress = batch.egress;
  let sent = 0;
  for (let i = 0; i < batch.count; i++) {
    if (egress[i] !== EGRESS_UNDECIDED) continue;
    egress[i] = port;
    batch.local[i] = 1;
    sent++;
  }
  if (sent > 0) r.count(port, r.counter.sent_by_linux, sent);
}

/** An IPv4 packet to 224.0.0.0/24 (OSPF, VRRP, RIP: the link's routers), for a mirror. */
function isLocalMulticast4(d: Uint8Array, off: number, length: number): boolean {
  const ip = off + 14;
  return length >= 34 && d[ip] >> 4 === 4 && d[ip + 16] === 224 && d[ip + 17] === 0 && d[ip + 18] === 0;
}

/**
 * Router advertisements due: the periodic ones on every interface with IPv6 addresses (PMD
 * 0 only), and on any PMD those owed to a solicitation that came too soon after the last.
 */
function advertise(r: Router, batch: PacketBatch): void {
  for (const iface of r.interfaces) {
    if (r.now < r.raDue[iface.index]) continue;
    // An interface whose ports are all down stays due: its first port up gets one at once.
    if (iface.v6.length > 0 && r.firstPortUp(iface) < 0) continue;
    // RFC 4861 6.2.4: intervals jittered, so that routers on a link do not synchronise.
    r.raDue[iface.index] = r.pmd === 0 && !r.stopping ? r.now + r.config.raInterval * 1000 * (0.75 + Math.random() * 0.25) : Infinity;
    if (iface.v6.length > 0) sendRouterAdvertisement(r, batch, iface, -1);
  }
}

function betweenBursts(r: Router): void {
  // Announcements owed (announce.ts) go out in a batch of a port of theirs once one is up.
  if (r.announcing > 0) {
    for (const iface of r.interfaces) {
      const up = r.announceDue[iface.index] === 1 ? r.firstPortUp(iface) : -1;
      if (up >= 0) r.wantBatch(up);
    }
  }
  if (r.heldCount > 0) {
    // Not the last burst's time: the packets held must go on, or be dropped, without one.
    const at = clock.now === null ? performance.timeOrigin + performance.now() : clock.now();
    if (at >= r.heldCheckDue) {
      r.heldCheckDue = at + HELD_CHECK_MS;
      r.wantHeldBatches();
    }
  }
  // Advertisements due (the periodic ones on PMD 0, those owed to a solicitation) go out in a batch of a port of
  // theirs: with no burst from a routed port they were not sent, and hosts lose their
  // default route once its lifetime (30 minutes) ends. The clock read every so many rounds.
  if (++r.raCheckRounds >= RA_CHECK_ROUNDS) {
    r.raCheckRounds = 0;
    const at = clock.now === null ? performance.timeOrigin + performance.now() : clock.now();
    for (const iface of r.interfaces) {
      if (at < r.raDue[iface.index] || iface.v6.length === 0) continue;
      // Due on a port that is up: a port that comes up gets one at once.
      const up = r.firstPortUp(iface);
      if (up < 0) continue;
      r.wantBatch(up);
      break;
    }
  }
  // The time of the last burst: with no traffic there is nothing to age in a hurry.
  const now = clock.now === null ? r.now : clock.now();
  if (now - r.lastSweep < SWEEP_EVERY_MS) return;
  r.lastSweep = now;
  // Each PMD ages a part of the table: PMD p the slots p, p + n, ... of each sweep.
  r.clock[0] = now;
  r.sweepAt = r.neighbours.sweep(r.sweepAt, SWEEP_SLOTS);
}

/**
 * vrouter stops: each interface that advertises the router sends a last advertisement, of
 * router lifetime 0 (RFC 4861 6.2.5), so that its hosts stop sending to it as their default
 * router at once, not once the lifetime they were given runs out (up to half an hour),
 * and take another router if they have one. From PMD 0, as the periodic ones; a batch of
 * one of the interface's ports sends them (advertise()).
 */
function stopping(r: Router): void {
  if (r.stopping) return;
  r.stopping = true;
  discardHeld(r);
  if (r.pmd !== 0) return;
  for (const iface of r.interfaces) {
    if (!iface.advertises || iface.v6.length === 0) continue;
    const up = r.firstPortUp(iface);
    if (up < 0) continue;
    r.raDue[iface.index] = -Infinity;
    r.wantBatch(up);
  }
}

/**
 * The PMDs are to be replaced by ones on `next` (ports changed at run time; the same at an
 * upgrade): the last advertisements owed to the ports that change (ra-farewell.ts), and
 * the packets held dropped, counted, rather than lost with this PMD (held.ts).
 */
function leaving(r: Router, next: Topology): void {
  sayFarewells(r, next);
  discardHeld(r);
}

/**
 * In the control plane: routes checked against the interfaces, then compiled (job pool) or
 * changed in place in the tables in use (fib-tables.ts), the learned ones with them when
 * compiled; static neighbours written to the table.
 */
async function prepare(setup: PluginSetup<RoutingConfig>): Promise<Record<string, ArrayBufferLike>> {
  const { interfaces, byPort } = interfacesOf(setup.topology);
  const fib = planFib(setup, interfaces);
  const region = setup.shared[neighbourRegionOf(setup.topology)];
  const table = new NeighbourTable(region, setup.topology.ports.length);
  // Only a region allocated now: the PMDs running keep the seed they read (an older table,
  // unseeded, that emptied out hashes as it did).
  if (setup.fresh(neighbourRegionOf(setup.topology))) table.seedIfNew();
  // Every entry checked before any is written: a refused config writes none.
  const seen = new Map<string, number>();
  const statics = setup.config.neighbours.map((n, k) => {
    const port = setup.topology.ports.find((p) => p.name === n.port);
    if (port === undefined) {
      const bridge = setup.topology.bridges.includes(n.port);
      throw new PluginConfigError(`neighbours[${k}].port`, bridge ? `"${n.port}" is a bridge: name the member port the neighbour is on` : `no port named "${n.port}"`);
    }
    const iface = byPort[port.index];
    if (iface < 0) throw new PluginConfigError(`neighbours[${k}].port`, `${n.port} has no router addresses (nor has its bridge)`);
    const owner = ownerOf(interfaces, n.address);
    if (owner !== null) throw new PluginConfigError(`neighbours[${k}].address`, `${n.address.text} is this router's own address (on ${owner.name})`);
    const edge = subnetEdgeOf(interfaces[iface], n.address);
    if (edge !== null) throw new PluginConfigError(`neighbours[${k}].address`, `${n.address.text} is ${edge} (on ${interfaces[iface].name}), not a host`);
    // A second entry would overwrite the first in the table: refused, as Linux answers a neighbour added again (EEXIST).
    const key = `${iface} ${n.address.text}`;
    const twin = seen.get(key);
    if (twin !== undefined) throw new PluginConfigError(`neighbours[${k}].address`, `${n.address.text} on ${interfaces[iface].name} is already neighbours[${twin}]`);
    seen.set(key, k);
    return { n, iface, port: port.index };
  });
  writeNeighbours(staticsWritten, region, table, statics, true);
  // Neighbours a route source learned (permanent ones Linux has on a mirror): static entries
  // while they last. One that cannot be written (no room, a port not routed) is left out,
  // not refused: it is not the config's. One the config has too stays the config's.
  const learned = setup.config.learnedNeighbours.flatMap((n) => {
    const port = setup.topology.ports.find((p) => p.name === n.port);
    const iface = port === undefined ? -1 : byPort[port.index];
    return iface < 0 ? [] : [{ n, iface, port: port!.index }];
  });
  writeNeighbours(learnedWritten, region, table, learned, false, (n) => setup.config.neighbours.some((c) => c.address.text === n.address.text));
  return fib.apply();
}

/** In the control plane: the learned routes to `prefixes` changed, in place or compiled with the rest (fib-tables.ts). */
function routesLearned(setup: PluginSetup<RoutingConfig>, prefixes: ChangedPrefixes): Promise<Record<string, ArrayBufferLike>> {
  return learnFib(setup, interfacesOf(setup.topology).interfaces, prefixes);
}

const addressWords = (n: NeighbourConfig) => [0, 1, 2, 3].map((q) => (q * 4 < n.address.bytes.length ? read32(n.address.bytes, q * 4) | 0 : 0));


/**
 * Writes `entries` into the table as STATIC, and takes out those `record` says were
 * written for it last time and are no longer among them (a STATIC entry never ages: left,
 * it would hold its MAC for good), but those `kept`. One that finds no room is refused if
 * `refuse` (what was written before it stays recorded, so that the config in force,
 * prepared again, takes it out), left out if not.
 */
function writeNeighbours(record: WeakMap<ArrayBufferLike, Written>, region: ArrayBufferLike, table: NeighbourTable, entries: readonly { n: NeighbourConfig; iface: number; port: number }[], refuse: boolean, kept: (n: NeighbourConfig) => boolean = () => false): void {
  const before: Written = record.get(region) ?? new Map();
  const now: Written = new Map();
  // One time for the lot: these are written at once, in the control plane.
  table.clock[0] = Date.now();
  entries.forEach(({ n, iface, port }, k) => {
    const w = addressWords(n);
    if (table.confirm(iface, n.address.family, w[0], w[1], w[2], w[3], n.mac[0], n.mac[1], port, STATIC, true) >= 0) now.set(`${iface} ${n.address.text}`, { iface, n });
    else if (refuse) {
      record.set(region, new Map([...before, ...now]));
      throw new PluginConfigError(`neighbours[${k}]`, 'no room in the neighbour table (raise neighbourLimit)');
    }
  });
  for (const [key, { iface, n }] of before) {
    if (now.has(key) || kept(n)) continue;
    const w = addressWords(n);
    table.remove(iface, n.address.family, w[0], w[1], w[2], w[3]);
  }
  record.set(region, now);
}

/** What GET /routes (the routes table) takes. */
const ROUTES_QUERY: Record<string, string> = {
  prefix: 'only the routes to this prefix (192.0.2.0/24)',
  lookup: 'only the routes to the longest prefix in the forwarding table that holds this address: the prefix a packet to it is routed by',
  type: 'only the routes of this type: connected, static, blackhole, netlink, fpm',
  limit: 'at most this many routes',
  offset: 'after this many',
};
const ROUTE_TYPES = ['connected', 'static', 'blackhole', 'netlink', 'fpm'];

/**
 * The routes: connected ones from the interfaces' addresses, then the configured, then the
 * learned (a learned one may be overruled by the config, or not resolve), each made as it
 * is read: a route source may hold a million. The query picks some (ROUTES_QUERY).
 */
function listRoutes(view: TableView<RoutingConfig>, query: Readonly<Record<string, string>>): Iterable<Record<string, unknown> | null> {
  const { interfaces } = interfacesOf(view.topology);
  const learned = view.learnedRoutes ?? NO_LEARNED_ROUTES;
  const number = (name: string, fallback: number) => {
    const value = query[name];
    if (value === undefined) return fallback;
    if (!/^\d{1,9}$/.test(value)) throw new PluginConfigError(name, `must be a whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  };
  const limit = number('limit', Infinity);
  const offset = number('offset', 0);
  const type = query.type;
  if (type !== undefined && !ROUTE_TYPES.includes(type)) throw new PluginConfigError('type', `must be one of ${ROUTE_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  const parsed = (name: string, parse: (text: string) => Prefix) => {
    try {
      return parse(query[name]);
    } catch (err) {
      throw new PluginConfigError(name, (err as Error).message);
    }
  };
  // Only one prefix: given, or the one the FIB matches for the address.
  let only: Prefix | null = query.prefix === undefined ? null : parsed('prefix', parseNetwork);
  if (query.lookup !== undefined) {
    const match = fibMatch(view.shared, parsed('lookup', parseAddress));
    if (match === null) return [];
    only = parseNetwork(match);
  }
  const onlyKey = only === null ? null : keyOf(only);
  const wanted = (prefix: Prefix) => onlyKey === null || keyOf(prefix) === onlyKey;
  function* every(): Generator<Record<string, unknown>> {
    for (const f of interfaces) {
      for (const p of [...f.v4, ...f.v6]) {
        const network: Prefix = { ...p, bytes: maskBytes(p.bytes, p.length) };
        if (wanted(network)) yield { prefix: `${formatAddress(network.bytes)}/${p.length}`, port: f.name, type: 'connected', address: p.text };
      }
    }
    for (const r of view.config.routes) {
      if (!wanted(prefixOf(r.prefix))) continue;
      yield { prefix: r.prefix, type: r.blackhole ? 'blackhole' : 'static', ...(r.via.length > 0 ? { via: r.via } : {}), ...(r.port !== null ? { port: r.port } : {}), metric: r.metric };
    }
    if (only !== null) {
      for (const r of learned.get(only.text)) yield learnedRow(r);
      return;
    }
    for (const routes of learned.all()) for (const r of routes) yield learnedRow(r);
  }
  function* picked(): Generator<Record<string, unknown> | null> {
    let skipped = 0;
    let given = 0;
    let passed = 0;
    if (given >= limit) return;
    for (const row of every()) {
      // Rows left out by the query, a million of them maybe: the endpoint's other work runs meanwhile.
      if ((type !== undefined && row.type !== type) || skipped++ < offset) {
        if (++passed % ROWS_PER_PAUSE === 0) yield LIST_PAUSE;
        continue;
      }
      yield row;
      if (++given >= limit) return;
    }
  }
  return picked();
}

/** A learned route as listed: its kind of source ("netlink", "fpm"), and the source itself. */
function learnedRow(r: LearnedRoute): Record<string, unknown> {
  return {
    prefix: r.prefix,
    type: r.source.split(' ')[0],
    source: r.source,
    ...(r.blackhole ? { blackhole: true } : {}),
    ...(r.via !== undefined && r.via.length > 0 ? { via: r.via } : {}),
    ...(r.port !== undefined ? { port: r.port } : {}),
    metric: r.metric,
  };
}

function listNeighbours(view: TableView<RoutingConfig>): Record<string, unknown>[] {
  const { interfaces } = interfacesOf(view.topology);
  const table = new NeighbourTable(view.shared[neighbourRegionOf(view.topology)], view.topology.ports.length);
  return table.entries().map((e) => {
    const bytes = new Uint8Array(e.family === 4 ? 4 : 16);
    e.address.slice(0, bytes.length / 4).forEach((w, q) => bytes.set([w >>> 24, (w >>> 16) & 0xff, (w >>> 8) & 0xff, w & 0xff], q * 4));
    return {
      address: formatAddress(bytes),
      interface: interfaces[e.iface]?.name ?? null,
      port: view.topology.ports[e.port]?.name ?? null,
      // whose share it counts in: the port that asked for it, once known the one it is on
      owner: view.topology.ports[e.owner]?.name ?? null,
      mac: e.state === 'incomplete' ? null : formatMac(e.macHi, e.macLo),
      state: e.state,
      confirmedMsAgo: Math.max(0, Math.round(Date.now() - e.confirmed)),
    };
  });
}

/** Routes (connected, the config's, and the learned ones in force: to a prefix the config has not, resolved), and neighbours by state. */
function gauges(view: TableView<RoutingConfig>): Record<string, number> {
  const { interfaces } = interfacesOf(view.topology);
  const counts = new NeighbourTable(view.shared[neighbourRegionOf(view.topology)], view.topology.ports.length).countByState();
  const byState: Record<string, number> = Object.fromEntries(STATE_NAMES.slice(1).map((s, i) => [`neighbours_${s}`, counts[i + 1]]));
  // Without making the list: /metrics is read often, and a route source may hold a million.
  const connected = interfaces.reduce((n, f) => n + f.v4.length + f.v6.length, 0);
  const learned = fibCounts(view.shared)?.learned ?? 0;
  return { routes: connected + view.config.routes.length + learned, learned_routes: learned, ...byState };
}

const plugin: Plugin<RoutingConfig, Router> = {
  name: 'routing',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  parseConfig: parseRoutingConfig,
  dropReasons: DROP_REASONS,
  counters: COUNTERS,
  gauges,
  tables: {
    routes: { description: 'a route: connected (from an interface address), static, blackhole, or learned from a route source (netlink, fpm)', query: ROUTES_QUERY, list: listRoutes },
    neighbours: { description: 'a neighbour: an address on an interface, its MAC and state (ARP, NDP, static)', list: listNeighbours },
  },
  // The routes are in the tables prepare() built: the PMDs need the rest only.
  pmdConfig: (config: RoutingConfig): RoutingConfig => ({ ...config, routes: [], neighbours: [], learnedNeighbours: [] }),
  sharedMemory(config: RoutingConfig, topology: Topology) {
    return { [neighbourRegionOf(topology)]: neighbourTableBytes(config.neighbourLimit) };
  },
  prepare,
  routesLearned,
  createState,
  process,
  describe,
  betweenBursts,
  stopping,
  leaving,
  tablesChanged: (r, update) => r.switchTables(update.config, update.shared),
  // A router that stops routing drops: nothing it would have decided goes anywhere.
  onError: 'drop',
};

export default plugin;
