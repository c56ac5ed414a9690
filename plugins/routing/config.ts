// The routing plugin's config: "routes" and "neighbours" from the top level of the file,
// the rest from its "plugins" entry. parseConfig checks the form of each entry; what needs
// the interfaces (a gateway in a connected subnet, a port that exists) is checked by
// resolve() in fib.ts, with the same field names.
//
// Routes hold their addresses as canonical text, not parsed: the config is parsed and
// compared on each change (a route added through the admin endpoint), and text costs a
// fraction of bytes in typed arrays there; the parsed form is kept here (prefixOf), for
// the routes of the last two configs, and each route as parsed, with the entry it came from.
import { PluginConfigError, listEditOf, notAUnicastAddress, notRoutedNetwork, parseAddress, parseEdited, parseMac, parseNetwork, type Prefix } from '../../src/pipeline/api.ts';

export interface RouteConfig {
  /** the network, as Prefix.text: "10.0.0.0/24" */
  prefix: string;
  /** gateways (several: ECMP), as Prefix.text; empty for a route straight out of `port`, or a blackhole */
  via: string[];
  port: string | null;
  metric: number;
  /** packets to it are dropped (counted), as Linux's `ip route add blackhole` */
  blackhole: boolean;
}

export interface NeighbourConfig {
  address: Prefix;
  mac: [number, number];
  port: string;
}

export interface RoutingConfig {
  routes: RouteConfig[];
  neighbours: NeighbourConfig[];
  /** permanent neighbours Linux has on ports' mirrors (a route source's): static entries too, while they last */
  learnedNeighbours: NeighbourConfig[];
  /** entries of the neighbour table (a power of 2) */
  neighbourLimit: number;
  /** ICMP errors each PMD may send: per second, and in a burst (Linux: 1000/s, burst 50) */
  icmpRate: number;
  icmpBurst: number;
  /**
   * packets each PMD may hand to one interface's Linux mirror: per second, and in a burst.
   * Each costs a system call; a guest flooding the router's address must not take the PMD.
   */
  puntRate: number;
  puntBurst: number;
  /** seconds between unsolicited Router Advertisements (RFC 4861 6.2.1: 4 .. 1800) */
  raInterval: number;
  /** the advertisements' DNS servers (RDNSS, RFC 8106), as Prefix.text */
  raDns: string[];
  /** the advertisements' DNS search list (DNSSL, RFC 8106): domain names, no final dot */
  raSearchDomains: string[];
  /** the M flag: addresses from DHCPv6 (RFC 4861 4.2) */
  raManaged: boolean;
  /** the O flag: other configuration (DNS, NTP) from DHCPv6 */
  raOtherConfig: boolean;
  /** the A flag of /64 prefixes: hosts form addresses of their own in them (SLAAC) */
  raAutonomous: boolean;
  /** seconds hosts keep the router as a default router; null: 3 x raInterval, 1800 at least */
  raRouterLifetime: number | null;
  /** the default router preference (RFC 4191 2.2): 1 high, 0 medium, 3 low (the field's bits) */
  raPreference: number;
  /** packets held while their next hop is resolved, per PMD */
  heldPackets: number;
}

type Obj = Record<string, unknown>;

function object(value: unknown, field: string, keys: readonly string[]): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PluginConfigError(field, 'must be an object');
  for (const k of Object.keys(value)) if (!keys.includes(k)) throw new PluginConfigError(field ? `${field}.${k}` : k, `unknown key (known: ${keys.join(', ')})`);
  return value as Obj;
}

function integer(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw new PluginConfigError(field, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return value;
}

/**
 * Prefixes and addresses already parsed, by text, in this config (`current`) and the one
 * before (`previous`): a big route table names a few gateways a million times, and the
 * next config repeats most of the last one's routes; parsing one costs microseconds. Each
 * config starts a new generation, so that what is kept stays within two configs' worth.
 */
interface Parsed {
  networks: Map<string, Prefix>;
  addresses: Map<string, Prefix>;
}
const generation = (): Parsed => ({ networks: new Map(), addresses: new Map() });
let current = generation();
let previous = generation();
const PARSERS = { networks: parseNetwork, addresses: parseAddress };

function address(value: unknown, field: string, kind: keyof Parsed): Prefix {
  if (typeof value === 'string') {
    const known = current[kind].get(value) ?? previous[kind].get(value);
    if (known !== undefined) {
      current[kind].set(value, known);
      return known;
    }
  }
  try {
    const p = PARSERS[kind](value);
    current[kind].set(value as string, p);
    return p;
  } catch (err) {
    throw new PluginConfigError(field, (err as Error).message);
  }
}

/** A route's prefix or gateway (RouteConfig's text) parsed: from the last configs parsed, or again. */
export function prefixOf(text: string): Prefix {
  return address(text, '', text.includes('/') ? 'networks' : 'addresses');
}

function portName(value: unknown, field: string): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || value === '') throw new PluginConfigError(field, 'must be a port (or bridge) name');
  return value;
}

/**
 * Routes parsed, by the entry of the document they came from: a change of routes leaves
 * most entries as they were (the control plane never changes one in place), and a list
 * that no edit made (or whose source is gone) is parsed entry by entry.
 */
const parsedRoutes = new WeakMap<object, RouteConfig>();
/** Each list of routes parsed, by the document's list: a list made from it by an edit (listEditOf) takes its kept routes from here. */
const parsedLists = new WeakMap<readonly unknown[], RouteConfig[]>();

/** "routes": each entry parsed before taken as it was (its field named only for a mistake). */
function routes(value: unknown): RouteConfig[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new PluginConfigError('routes', 'must be an array');
  // The list in force parsed again (a change of something else): a list is never changed once parsed.
  const known = parsedLists.get(value);
  if (known !== undefined) return known;
  const edit = listEditOf(value);
  const before = edit === undefined ? undefined : parsedLists.get(edit.source);
  const parsed = (edit !== undefined && before !== undefined ? parseEdited(value, edit, before, route) : null) ?? value.map(route);
  parsedLists.set(value, parsed);
  return parsed;
}

function route(raw: unknown, i: number): RouteConfig {
  let parsed = typeof raw === 'object' && raw !== null ? parsedRoutes.get(raw) : undefined;
  if (parsed === undefined) {
    parsed = parseRoute(raw, `routes[${i}]`);
    if (typeof raw === 'object' && raw !== null) parsedRoutes.set(raw, parsed);
  }
  return parsed;
}

function parseRoute(raw: unknown, field: string): RouteConfig {
  const r = object(raw, field, ['prefix', 'via', 'port', 'metric', 'blackhole']);
  const prefix = address(r.prefix, `${field}.prefix`, 'networks');
  if (r.prefix !== undefined && typeof r.prefix === 'string' && !r.prefix.includes('/')) throw new PluginConfigError(`${field}.prefix`, `needs a prefix length (${r.prefix}/${prefix.family === 4 ? 32 : 128} for one host)`);
  const notRouted = notRoutedNetwork(prefix);
  if (notRouted !== null) throw new PluginConfigError(`${field}.prefix`, `${prefix.text} ${notRouted}: packets to it are dropped as not routable, never routed`);
  const vias = r.via === undefined ? [] : Array.isArray(r.via) ? r.via : [r.via];
  const via = vias.map((v, i) => address(v, Array.isArray(r.via) ? `${field}.via[${i}]` : `${field}.via`, 'addresses'));
  const wrong = via.findIndex((v) => v.family !== prefix.family);
  if (wrong >= 0) throw new PluginConfigError(`${field}.via`, `${via[wrong].text} is IPv${via[wrong].family}, the prefix IPv${prefix.family}`);
  const blackhole = r.blackhole === undefined ? false : r.blackhole === true ? true : r.blackhole === false ? false : (() => { throw new PluginConfigError(`${field}.blackhole`, 'must be true or false'); })();
  const port = portName(r.port, `${field}.port`);
  if (blackhole && (via.length > 0 || port !== null)) throw new PluginConfigError(`${field}.blackhole`, 'a blackhole route has no "via" and no "port"');
  if (!blackhole && via.length === 0 && port === null) throw new PluginConfigError(field, 'needs "via" (a gateway), "port" (a directly attached destination), or "blackhole": true');
  return { prefix: prefix.text, via: via.map((v) => v.text), port, metric: integer(r.metric, `${field}.metric`, 0, 2 ** 31 - 1, 0), blackhole };
}

function parseNeighbour(raw: unknown, field: string): NeighbourConfig {
  const n = object(raw, field, ['address', 'mac', 'port']);
  let mac: [number, number];
  try {
    mac = parseMac(n.mac);
  } catch (err) {
    throw new PluginConfigError(`${field}.mac`, (err as Error).message);
  }
  if ((mac[0] & 0x100) !== 0) throw new PluginConfigError(`${field}.mac`, 'is a multicast address');
  if (mac[0] === 0 && mac[1] === 0) throw new PluginConfigError(`${field}.mac`, 'is all zero: no station has it');
  const port = portName(n.port, `${field}.port`);
  if (port === null) throw new PluginConfigError(`${field}.port`, 'is required: the port the neighbour is on (in a bridge, the member port)');
  const at = address(n.address, `${field}.address`, 'addresses');
  const notUnicast = notAUnicastAddress(at);
  if (notUnicast !== null) throw new PluginConfigError(`${field}.address`, `${at.text} ${notUnicast}: a neighbour is one host`);
  return { address: at, mac, port };
}

/**
 * What a route source learned: an entry the config's checks refuse (a multicast MAC in a
 * namespace's neighbour table) is left out, never the reason a config is refused.
 */
function learnedList<T>(value: unknown, parse: (v: unknown, f: string) => T): T[] {
  if (!Array.isArray(value)) return [];
  const kept: T[] = [];
  for (const v of value) {
    try {
      kept.push(parse(v, 'learnedNeighbours'));
    } catch {
      // left out
    }
  }
  return kept;
}

function list<T>(value: unknown, field: string, parse: (v: unknown, f: string) => T): T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new PluginConfigError(field, 'must be an array');
  return value.map((v, i) => parse(v, `${field}[${i}]`));
}

export function parseRoutingConfig(raw: Obj): RoutingConfig {
  previous = current;
  current = generation();
  return parseAll(raw);
}

function parseAll(raw: Obj): RoutingConfig {
  const c = object(raw, '', ['routes', 'neighbours', 'learnedNeighbours', 'neighbourLimit', 'icmpRate', 'icmpBurst', 'puntRate', 'puntBurst', 'raInterval', 'raDns', 'raSearchDomains', 'raManaged', 'raOtherConfig', 'raAutonomous', 'raRouterLifetime', 'raPreference', 'heldPackets']);
  const neighbourLimit = integer(c.neighbourLimit, 'neighbourLimit', 64, 1 << 20, 4096);
  if ((neighbourLimit & (neighbourLimit - 1)) !== 0) throw new PluginConfigError('neighbourLimit', `must be a power of 2, got ${neighbourLimit}`);
  const raInterval = integer(c.raInterval, 'raInterval', 4, 1800, 30);
  return {
    // Learned routes are not here (PluginSetup.learnedRoutes): a config's routes win over
    // them for their prefixes.
    routes: routes(c.routes),
    neighbours: list(c.neighbours, 'neighbours', parseNeighbour),
    learnedNeighbours: learnedList(c.learnedNeighbours, parseNeighbour),
    neighbourLimit,
    icmpRate: integer(c.icmpRate, 'icmpRate', 0, 1_000_000, 1000),
    icmpBurst: integer(c.icmpBurst, 'icmpBurst', 1, 100_000, 50),
    puntRate: integer(c.puntRate, 'puntRate', 1, 10_000_000, 20_000),
    puntBurst: integer(c.puntBurst, 'puntBurst', 1, 1_000_000, 2_000),
    raInterval,
    ...advertisementContent(c, raInterval),
    heldPackets: integer(c.heldPackets, 'heldPackets', 0, 1024, 64),
  };
}

/** RDNSS addresses an advertisement carries at most (RFC 8106 sets no limit; resolvers use three). */
export const RA_DNS_MAX = 8;
/** Bytes the search list takes in its option at most (names as DNS labels, RFC 1035 3.1). */
export const RA_SEARCH_BYTES_MAX = 256;
const PREFERENCES: Record<string, number> = { high: 1, medium: 0, low: 3 };

function flag(value: unknown, field: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new PluginConfigError(field, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** What router advertisements say beyond the interface's own prefixes and MTU. */
function advertisementContent(c: Obj, raInterval: number): Pick<RoutingConfig, 'raDns' | 'raSearchDomains' | 'raManaged' | 'raOtherConfig' | 'raAutonomous' | 'raRouterLifetime' | 'raPreference'> {
  const dns = list(c.raDns, 'raDns', (v, field) => {
    const at = address(v, field, 'addresses');
    if (at.family !== 6) throw new PluginConfigError(field, `${at.text} is IPv4: advertisements name IPv6 DNS servers`);
    const notUnicast = notAUnicastAddress(at);
    if (notUnicast !== null) throw new PluginConfigError(field, `${at.text} ${notUnicast}: a DNS server is one host`);
    return at.text;
  });
  if (dns.length > RA_DNS_MAX) throw new PluginConfigError('raDns', `${dns.length} servers, at most ${RA_DNS_MAX}`);
  const domains = list(c.raSearchDomains, 'raSearchDomains', domainName);
  const searchBytes = domains.reduce((n, d) => n + d.length + 2, 0);
  if (searchBytes > RA_SEARCH_BYTES_MAX) throw new PluginConfigError('raSearchDomains', `the names take ${searchBytes} bytes in the option, at most ${RA_SEARCH_BYTES_MAX}`);
  let lifetime: number | null = null;
  if (c.raRouterLifetime !== undefined) {
    lifetime = integer(c.raRouterLifetime, 'raRouterLifetime', 0, 9000, 0);
    // RFC 4861 6.2.1: zero, or from MaxRtrAdvInterval to 9000 s
    if (lifetime !== 0 && lifetime < raInterval) throw new PluginConfigError('raRouterLifetime', `${lifetime} s is shorter than raInterval (${raInterval} s): hosts would drop the router between two advertisements (0, not a default router, or ${raInterval} to 9000)`);
  }
  let preference = 0;
  if (c.raPreference !== undefined) {
    if (typeof c.raPreference !== 'string' || !(c.raPreference in PREFERENCES)) throw new PluginConfigError('raPreference', `must be "high", "medium" or "low", got ${JSON.stringify(c.raPreference)}`);
    preference = PREFERENCES[c.raPreference];
    // RFC 4191 2.2: a router that is no default router advertises no preference
    if (lifetime === 0 && preference !== 0) throw new PluginConfigError('raPreference', 'a router with raRouterLifetime 0 is no default router: its preference must be "medium" (RFC 4191 2.2)');
  }
  return {
    raDns: dns,
    raSearchDomains: domains,
    raManaged: flag(c.raManaged, 'raManaged', false),
    raOtherConfig: flag(c.raOtherConfig, 'raOtherConfig', false),
    raAutonomous: flag(c.raAutonomous, 'raAutonomous', true),
    raRouterLifetime: lifetime,
    raPreference: preference,
  };
}

/** A domain name of the search list: letters, digits and hyphens in labels of 1 to 63 (RFC 1123 2.1), lower case, no final dot. */
function domainName(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new PluginConfigError(field, 'must be a domain name');
  const name = value.endsWith('.') ? value.slice(0, -1) : value;
  if (name.length === 0 || name.length > 253) throw new PluginConfigError(field, `${JSON.stringify(value)}: a domain name has 1 to 253 characters`);
  const bad = name.split('.').find((label) => !/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
  if (bad !== undefined) throw new PluginConfigError(field, `${JSON.stringify(value)}: label ${JSON.stringify(bad)} is not 1 to 63 letters, digits and inner hyphens`);
  return name.toLowerCase();
}
