// The routing plugin's config: "routes" and "neighbours" from the top level of the file,
// the rest from its "plugins" entry. parseConfig checks the form of each entry; what needs
// the interfaces (a gateway in a connected subnet, a port that exists) is checked by
// resolve() in fib.ts, with the same field names.
import { PluginConfigError, parseAddress, parseMac, parseNetwork, type Prefix } from '../../src/pipeline/api.ts';

export interface RouteConfig {
  prefix: Prefix;
  /** gateways (several: ECMP); empty for a route straight out of `port`, or a blackhole */
  via: Prefix[];
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
  /** entries of the neighbour table (a power of 2) */
  neighbourLimit: number;
  /** ICMP errors each PMD may send: per second, and in a burst (Linux: 1000/s, burst 50) */
  icmpRate: number;
  icmpBurst: number;
  /** seconds between unsolicited Router Advertisements (RFC 4861 6.2.1: 4 .. 1800) */
  raInterval: number;
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
 * Addresses already parsed in this config, by parser and text: a big route table names a few
 * gateways a million times, and parsing one costs microseconds. Cleared for each config.
 */
const parsed = new Map<(v: unknown) => Prefix, Map<string, Prefix>>();

function address(value: unknown, field: string, parse: (v: unknown) => Prefix): Prefix {
  let seen = parsed.get(parse);
  if (seen === undefined) parsed.set(parse, (seen = new Map()));
  const known = typeof value === 'string' ? seen.get(value) : undefined;
  if (known !== undefined) return known;
  try {
    const p = parse(value);
    if (typeof value === 'string') seen.set(value, p);
    return p;
  } catch (err) {
    throw new PluginConfigError(field, (err as Error).message);
  }
}

function portName(value: unknown, field: string): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || value === '') throw new PluginConfigError(field, 'must be a port (or bridge) name');
  return value;
}

function parseRoute(raw: unknown, field: string): RouteConfig {
  const r = object(raw, field, ['prefix', 'via', 'port', 'metric', 'blackhole']);
  const prefix = address(r.prefix, `${field}.prefix`, parseNetwork);
  if (r.prefix !== undefined && typeof r.prefix === 'string' && !r.prefix.includes('/')) throw new PluginConfigError(`${field}.prefix`, `needs a prefix length (${r.prefix}/${prefix.family === 4 ? 32 : 128} for one host)`);
  const vias = r.via === undefined ? [] : Array.isArray(r.via) ? r.via : [r.via];
  const via = vias.map((v, i) => address(v, Array.isArray(r.via) ? `${field}.via[${i}]` : `${field}.via`, parseAddress));
  const wrong = via.findIndex((v) => v.family !== prefix.family);
  if (wrong >= 0) throw new PluginConfigError(`${field}.via`, `${via[wrong].text} is IPv${via[wrong].family}, the prefix IPv${prefix.family}`);
  const blackhole = r.blackhole === undefined ? false : r.blackhole === true ? true : r.blackhole === false ? false : (() => { throw new PluginConfigError(`${field}.blackhole`, 'must be true or false'); })();
  const port = portName(r.port, `${field}.port`);
  if (blackhole && (via.length > 0 || port !== null)) throw new PluginConfigError(`${field}.blackhole`, 'a blackhole route has no "via" and no "port"');
  if (!blackhole && via.length === 0 && port === null) throw new PluginConfigError(field, 'needs "via" (a gateway), "port" (a directly attached destination), or "blackhole": true');
  return { prefix, via, port, metric: integer(r.metric, `${field}.metric`, 0, 2 ** 31 - 1, 0), blackhole };
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
  const port = portName(n.port, `${field}.port`);
  if (port === null) throw new PluginConfigError(`${field}.port`, 'is required: the port (or bridge) the neighbour is on');
  return { address: address(n.address, `${field}.address`, parseAddress), mac, port };
}

function list<T>(value: unknown, field: string, parse: (v: unknown, f: string) => T): T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new PluginConfigError(field, 'must be an array');
  return value.map((v, i) => parse(v, `${field}[${i}]`));
}

export function parseRoutingConfig(raw: Obj): RoutingConfig {
  parsed.clear();
  try {
    return parseAll(raw);
  } finally {
    parsed.clear();
  }
}

function parseAll(raw: Obj): RoutingConfig {
  const c = object(raw, '', ['routes', 'neighbours', 'neighbourLimit', 'icmpRate', 'icmpBurst', 'raInterval', 'heldPackets']);
  const neighbourLimit = integer(c.neighbourLimit, 'neighbourLimit', 64, 1 << 20, 4096);
  if ((neighbourLimit & (neighbourLimit - 1)) !== 0) throw new PluginConfigError('neighbourLimit', `must be a power of 2, got ${neighbourLimit}`);
  return {
    routes: list(c.routes, 'routes', parseRoute),
    neighbours: list(c.neighbours, 'neighbours', parseNeighbour),
    neighbourLimit,
    icmpRate: integer(c.icmpRate, 'icmpRate', 0, 1_000_000, 1000),
    icmpBurst: integer(c.icmpBurst, 'icmpBurst', 1, 100_000, 50),
    raInterval: integer(c.raInterval, 'raInterval', 4, 1800, 30),
    heldPackets: integer(c.heldPackets, 'heldPackets', 0, 1024, 64),
  };
}
