// The configuration file: parsed and validated as a whole before anything starts, first
// against its schema (config-schema.ts), then for what a schema cannot say. Every error names
// the field at fault (ports[1].mtu) and the reason; unknown keys are refused.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import { Compile, type Static } from './typebox.ts';
import { PORT_SLOTS, QUEUE_PAIRS_MAX } from '../dataplane/counters.ts';
import type { MemoryPolicy } from '../vhost/memory-table.ts';
import { BRIDGE_STAGE, BUILT_IN_PLUGINS, builtInPluginPath, type PluginSpec } from '../pipeline/loader.ts';
import { derivedRouterMac, formatAddress, ipv4SubnetEdge, isLoopbackAddress, maskBytes, notAUnicastAddress, parseAddress, parsePrefix, type Prefix, type Topology } from '../pipeline/api.ts';
import { ADMIN_TCP_LISTEN, configDocumentSchema, PLUGIN_TOP_LEVEL_KEYS } from './config-schema.ts';
import { firstViolation } from './schema-violation.ts';
import { NOTHING_LEARNED, type Learned } from './learned-table.ts';
import { jsonShapeProblem } from './json-shape.ts';

export interface PortConfig {
  name: string;
  /** vhost-user: a VM's device over a socket; tap: a TAP interface vrouter creates; af_packet: an existing interface, through packet rings; af_xdp: one through AF_XDP sockets; vlan: an 802.1Q VLAN of another port */
  type: 'vhost-user' | 'tap' | 'af_packet' | 'af_xdp' | 'vlan';
  /** vlan: the port whose VLAN this is (null for the other types) */
  parent: string | null;
  /** vlan: the VLAN ID, 1-4094 (0 for the other types) */
  vlan: number;
  /** absolute path of the vhost-user socket ('' for the other types) */
  socket: string;
  /** tap, af_packet, af_xdp: the interface's name */
  interface: string | null;
  /** ports with the same bridge name are switched together by MAC learning */
  bridge: string | null;
  /** server: vrouter listens and the frontend connects; client: the other way round */
  mode: 'server' | 'client';
  /** the guest's MAC on this port: a static entry in the port's bridge */
  mac: string | null;
  mtu: number;
  /** queue pairs offered to the frontend; tap: the interface's queues (IFF_MULTI_QUEUE), an fd each; af_packet: sockets in a PACKET_FANOUT group, each a queue; af_xdp: the interface's queues 0 to queues - 1, a socket each; vlan: 0 (its frames go through its parent's) */
  queues: number;
  /** queue pair -> the CPU of the PMD that polls it (others are spread round-robin) */
  rxqAffinity: Record<number, number>;
  /** most MAC addresses the bridge learns from this port (per PMD table) */
  macLimit: number;
  /** only `mac` may be a source address on this port; other frames are dropped */
  portSecurity: boolean;
  /** reverse-path filter of the packets routed from this port */
  rpf: ReversePathFilter;
  /** IPv6 router advertisements sent on the port (with IPv6 addresses) */
  routerAdvertisements: boolean;
  /** guest memory files that cannot be sealed against shrinking or are not on tmpfs/hugetlbfs */
  memoryPolicy: MemoryPolicy;
  /** vhost-user: offer checksum offload */
  offloads: boolean;
  /** server mode: permission bits and group of the socket file */
  socketMode: number;
  socketGroup: number | null;
  /** the uid a frontend must run as (SO_PEERCRED), or null for any */
  peerUid: number | null;
  /** the router's addresses on this port (CIDR, normalised): it routes for the port's subnets */
  addresses: string[];
  /** the router's MAC on this port (default: derived from the port name) */
  routerMac: string;
  /** a routed port's mirror in Linux (linuxMirror): its TAP interface, in that namespace */
  linuxMirror: { netns: string; interface: string } | null;
  /** a port that is another's Linux mirror: a TAP port vrouter adds for it (mirrorPortOf) */
  mirror: MirrorOf | null;
}

/** What a mirror's TAP interface gets from the port it mirrors. */
export interface MirrorOf {
  /** the mirrored port's name */
  of: string;
  netns: string;
  /** the router's MAC and addresses on the mirrored port */
  mac: string;
  addresses: string[];
}

/** A route source besides the config ("routeSources"); fpm.peers: the addresses zebra may connect from (canonical text), or null: any (a loopback listen only) */
export type RouteSourceConfig = { type: 'netlink'; netns: string } | { type: 'fpm'; host: string; port: number; peers: string[] | null };

/** A bridge's own settings ("bridges"): with addresses, the router has an interface in it. */
export interface BridgeConfig {
  addresses: string[];
  routerMac: string;
  mtu: number;
  /** reverse-path filter of the packets the router takes in the bridge */
  rpf: ReversePathFilter;
  /** IPv6 router advertisements sent in the bridge (with IPv6 addresses) */
  routerAdvertisements: boolean;
}

/** strict: a source must be routed back out of the interface it came in by; loose: by any route but a blackhole */
export type ReversePathFilter = 'off' | 'strict' | 'loose';


export interface PmdSettings {
  /** the CPU of each PMD thread */
  cores: number[];
  /** the longest idle sleep of a PMD in µs; 0 polls without ever sleeping */
  sleepMaxUs: number;
  /** keep a data-plane process loaded and waiting, to take over when the running one dies */
  spare: boolean;
}

/** vrouter's threads but the PMDs */
export interface ControlSettings {
  /** their nice value (the PMDs and the job pool run at 0) */
  nice: number;
}

/** The nice value of the control threads unless "control" says otherwise: above best-effort work. */
export const CONTROL_NICE_DEFAULT = -10;

export interface VrouterConfig {
  ports: PortConfig[];
  pmd: PmdSettings;
  control: ControlSettings;
  /** the stages of every burst, in order: "bridge" (built in) and plugins by name */
  pipeline: string[];
  /** every stage of the pipeline, in order, as a plugin (the bridge too) */
  plugins: PluginSpec[];
  bridges: Record<string, BridgeConfig>;
  admin: AdminConfig;
  /** the route sources: those listed, then each linuxMirror namespace not listed */
  routeSources: RouteSourceConfig[];
}

/** The admin endpoint: where it listens, and the token that changes need. */
export interface AdminConfig {
  /** "unix:/path" or "127.0.0.1:PORT" / "[::1]:PORT" (or another address, with a token) */
  listen: { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number; loopback: boolean };
  /** a file holding the bearer token every request but GET needs, or null */
  tokenFile: string | null;
  /** ms a connection has to start its first request and a request to bring its headers */
  headersTimeoutMs: number;
  /** ms an answer may wait with nothing of it read before its connection ends */
  stalledAnswerMs: number;
}

/** The admin endpoint's limits unless the config says otherwise (admin.headersTimeout, admin.stalledAnswerTimeout). */
export const ADMIN_TIMEOUTS = { headersMs: 10_000, stalledAnswerMs: 30_000 };

export class ConfigError extends Error {
  readonly code = 'VR_CONFIG';
  readonly field: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'ConfigError';
    this.field = field;
  }
}

export const LIMITS = {
  ports: PORT_SLOTS,
  mtuMin: 68,
  mtuMax: 9000,
  queuesMax: QUEUE_PAIRS_MAX,
  sleepMaxUs: 100_000,
  socketPathBytes: 107,
  /** the MAC table holds 4096 entries per bridge and PMD */
  macLimitMax: 4096,
  macLimitDefault: 256,
  uidMax: 2 ** 32 - 2,
} as const;

/** The admin token's least length: a short one is guessed. */
export const ADMIN_TOKEN_MIN = 16;

/**
 * The config document's schema (config-schema.ts) with these limits: the file is checked
 * against it, so are the bodies of PUT /config and POST /ports, and /openapi.json shows it.
 */
export const ConfigDocument = configDocumentSchema(LIMITS);
export type ConfigDocument = Static<typeof ConfigDocument>;
/** An entry of "ports", as written: also the body of POST /ports. */
export const PortEntry = ConfigDocument.properties.ports.items;
type PortEntry = Static<typeof PortEntry>;

const documentValidator = Compile(ConfigDocument);

/** The document against the schema: its first mistake as a ConfigError, naming the field. */
function checkDocument(raw: unknown): ConfigDocument {
  const violation = firstViolation(documentValidator, raw);
  if (violation !== null) throw new ConfigError(violation.field, violation.reason);
  return raw as ConfigDocument;
}

const ADMIN_TCP = new RegExp(`^${ADMIN_TCP_LISTEN}$`);

/** A CPU of this machine: the schema knows what a CPU number is, not how many there are. */
function existingCpu(cpu: number, field: string, cpuCount: number): number {
  if (cpu >= cpuCount) throw new ConfigError(field, `must be an integer from 0 to ${cpuCount - 1} (the CPUs of this machine), got ${cpu}`);
  return cpu;
}

/** 4096-byte chunk, less XDP_PACKET_HEADROOM (256) and the Ethernet header and a VLAN tag (18) */
const AF_XDP_MTU_MAX = 3822;

/** Keys of a port that only a vhost-user port has. */
const VHOST_USER_ONLY = ['socket', 'mode', 'offloads', 'memoryPolicy', 'socketMode', 'socketGroup', 'peerUid'] as const;
/** Keys a VLAN port has not: its frames come and go through its parent's queues. */
const NOT_VLAN = [...VHOST_USER_ONLY, 'interface', 'queues', 'rxqAffinity'] as const;

function parsePort(p: PortEntry, field: string, baseDir: string, cpuCount: number, pmdCores: number[]): PortConfig {
  const type = p.type ?? 'vhost-user';
  if (type === 'vlan') {
    if (p.parent === undefined) throw new ConfigError(`${field}.parent`, 'a vlan port needs "parent": the port whose VLAN it is');
    if (p.vlan === undefined) throw new ConfigError(`${field}.vlan`, 'a vlan port needs "vlan": its VLAN ID, 1-4094');
    const extra = NOT_VLAN.find((k) => p[k] !== undefined);
    if (extra !== undefined) throw new ConfigError(`${field}.${extra}`, 'does not apply to a vlan port: its frames come and go through its parent\'s queues');
  } else if (p.parent !== undefined || p.vlan !== undefined) {
    throw new ConfigError(`${field}.${p.parent !== undefined ? 'parent' : 'vlan'}`, 'applies to vlan ports only ("type": "vlan")');
  } else if (type !== 'vhost-user') {
    if (p.interface === undefined) {
      throw new ConfigError(`${field}.interface`, type === 'tap' ? 'a tap port needs "interface": the name of the TAP interface vrouter creates' : `an ${type} port needs "interface": the kernel interface it sends and receives on`);
    }
    const extra = VHOST_USER_ONLY.find((k) => p[k] !== undefined);
    if (extra !== undefined) throw new ConfigError(`${field}.${extra}`, `applies to vhost-user ports only (this port is "type": "${type}")`);
    if (type === 'af_xdp' && (p.mtu ?? 1500) > AF_XDP_MTU_MAX) throw new ConfigError(`${field}.mtu`, `an af_xdp port's frames must fit a 4 KiB UMEM chunk after the kernel's 256 bytes of headroom: MTU at most ${AF_XDP_MTU_MAX}`);
  } else {
    if (p.interface !== undefined) throw new ConfigError(`${field}.interface`, 'applies to tap, af_packet and af_xdp ports only (a vhost-user port has a "socket")');
    if (p.socket === undefined) throw new ConfigError(`${field}.socket`, 'a vhost-user port needs "socket": the path of its vhost-user socket');
  }
  const socket = p.socket === undefined ? '' : resolve(baseDir, p.socket);
  if (Buffer.byteLength(socket) > LIMITS.socketPathBytes) {
    throw new ConfigError(`${field}.socket`, `${socket} is longer than the ${LIMITS.socketPathBytes} bytes a UNIX socket path may have`);
  }
  const mode = p.mode ?? 'server';
  const mac = p.mac === undefined ? null : unicastMac(p.mac, `${field}.mac`);
  const queues = type === 'vlan' ? 0 : (p.queues ?? 1);
  const rxqAffinity: Record<number, number> = {};
  for (const [q, cpu] of Object.entries(p.rxqAffinity ?? {})) {
    const at = `${field}.rxqAffinity.${q}`;
    if (Number(q) >= queues) throw new ConfigError(at, `unknown key: the port has queue pairs 0 to ${queues - 1} ("queues": ${queues})`);
    const core = existingCpu(cpu, at, cpuCount);
    if (!pmdCores.includes(core)) throw new ConfigError(at, `CPU ${core} runs no PMD (pmd.cores is [${pmdCores.join(', ')}])`);
    rxqAffinity[Number(q)] = core;
  }
  const routerMac = p.routerMac === undefined ? derivedRouterMac(p.name) : unicastMac(p.routerMac, `${field}.routerMac`);
  if (mac !== null && p.bridge === undefined && p.addresses !== undefined && mac === routerMac) {
    throw new ConfigError(`${field}.mac`, `${mac} is the router's own MAC on the port (routerMac): the guest needs another`);
  }
  const portSecurity = p.portSecurity ?? false;
  if (portSecurity && mac === null) throw new ConfigError(`${field}.portSecurity`, 'needs the port\'s "mac": the one source address it allows');
  const rpf = p.rpf ?? 'off';
  if (rpf !== 'off' && p.bridge !== undefined) throw new ConfigError(`${field}.rpf`, `the port is in bridge ${p.bridge}: the router's filter in that segment goes in bridges.${p.bridge}.rpf`);
  if (rpf !== 'off' && (p.addresses ?? []).length === 0) throw new ConfigError(`${field}.rpf`, 'needs the port\'s "addresses": only a routed port\'s packets are filtered');
  if (p.routerAdvertisements !== undefined && p.bridge !== undefined) throw new ConfigError(`${field}.routerAdvertisements`, `the port is in bridge ${p.bridge}: the router advertises in that segment as bridges.${p.bridge}.routerAdvertisements says`);
  if (p.routerAdvertisements === true && (p.addresses ?? []).length === 0) throw new ConfigError(`${field}.routerAdvertisements`, 'needs the port\'s "addresses": a router advertises only where it has an address');
  if (mode === 'client' && (p.socketMode !== undefined || p.socketGroup !== undefined)) {
    throw new ConfigError(`${field}.${p.socketMode !== undefined ? 'socketMode' : 'socketGroup'}`, 'applies to server mode only (in client mode the frontend creates the socket)');
  }
  return {
    name: p.name,
    type,
    parent: p.parent ?? null,
    vlan: p.vlan ?? 0,
    socket,
    interface: p.interface ?? null,
    bridge: p.bridge ?? null,
    mode,
    mac,
    // A VLAN's default is its parent's, set once the parent is known (withParents).
    mtu: p.mtu ?? (type === 'vlan' ? 0 : 1500),
    queues,
    rxqAffinity,
    macLimit: p.macLimit ?? LIMITS.macLimitDefault,
    portSecurity,
    rpf,
    routerAdvertisements: p.routerAdvertisements ?? type === 'vhost-user',
    memoryPolicy: p.memoryPolicy ?? 'warn',
    offloads: p.offloads ?? true,
    socketMode: p.socketMode === undefined ? 0o600 : fileMode(p.socketMode, `${field}.socketMode`),
    socketGroup: p.socketGroup === undefined ? null : groupId(p.socketGroup, `${field}.socketGroup`),
    peerUid: p.peerUid ?? null,
    addresses: portAddresses(p, field),
    routerMac,
    linuxMirror: p.linuxMirror === undefined ? null : linuxMirror(p, field),
    mirror: null,
  };
}

const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
/** What a port's Linux mirror is called among the ports (its counters, captures). */
export const mirrorPortName = (port: string) => `${port}.linux`;

function linuxMirror(p: PortEntry, field: string): { netns: string; interface: string } {
  const m = p.linuxMirror!;
  if ((p.addresses ?? []).length === 0) throw new ConfigError(`${field}.linuxMirror`, 'needs the port\'s "addresses": only a routed port has a mirror in Linux');
  if (p.bridge !== undefined) throw new ConfigError(`${field}.linuxMirror`, 'a port in a bridge has no mirror of its own (it is not a routed port)');
  const name = m.interface ?? p.name;
  if (!INTERFACE_NAME.test(name)) throw new ConfigError(`${field}.linuxMirror.interface`, `is needed: the port's name "${p.name}" is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)`);
  return { netns: m.netns, interface: name };
}

/** The TAP port that mirrors a routed port in Linux: in the mirror's namespace, with the port's MAC, MTU and addresses. */
function mirrorPortOf(p: PortConfig): PortConfig {
  const m = p.linuxMirror!;
  return {
    ...p,
    name: mirrorPortName(p.name),
    type: 'tap',
    parent: null,
    vlan: 0,
    socket: '',
    interface: m.interface,
    mac: null,
    queues: 1,
    rxqAffinity: {},
    portSecurity: false,
    rpf: 'off',
    routerAdvertisements: false,
    addresses: [],
    linuxMirror: null,
    mirror: { of: p.name, netns: m.netns, mac: p.routerMac, addresses: p.addresses },
  };
}

/** Each port, each followed by its Linux mirror if it has one; names and interfaces checked for clashes. */
function withMirrors(ports: PortConfig[]): PortConfig[] {
  const all = ports.flatMap((p) => (p.linuxMirror === null ? [p] : [p, mirrorPortOf(p)]));
  ports.forEach((p, i) => {
    if (p.linuxMirror === null) return;
    const name = mirrorPortName(p.name);
    const clash = ports.findIndex((q) => q.name === name);
    if (clash >= 0) throw new ConfigError(`ports[${clash}].name`, `"${name}" is the name of ports[${i}]'s Linux mirror`);
    const twin = ports.findIndex((q, j) => j < i && q.linuxMirror?.netns === p.linuxMirror!.netns && q.linuxMirror.interface === p.linuxMirror!.interface);
    if (twin >= 0) throw new ConfigError(`ports[${i}].linuxMirror.interface`, `${p.linuxMirror.interface} in ${p.linuxMirror.netns} is already the mirror of ports[${twin}]`);
  });
  if (all.length > LIMITS.ports) throw new ConfigError('ports', `at most ${LIMITS.ports} ports, each Linux mirror counting as one: ${all.length} with the mirrors`);
  return all;
}

/**
 * The addresses Linux has on ports' mirrors, beside the ports' own: the router's too. Those
 * that are not valid interface addresses, or that the port has already, are left out.
 */
function withLearnedAddresses(ports: PortConfig[], learned: Readonly<Record<string, readonly string[]>>): PortConfig[] {
  return ports.map((p) => {
    const extra = (Object.hasOwn(learned, p.name) ? learned[p.name] : []).flatMap((a) => {
      try {
        return interfaceAddresses([a], 'learned');
      } catch {
        return [];
      }
    });
    const added = [...new Set(extra)].filter((a) => !p.addresses.includes(a));
    return added.length === 0 ? p : { ...p, addresses: [...p.addresses, ...added] };
  });
}

/** "routeSources", then a netlink source for each mirror's namespace not listed. */
function parseRouteSources(given: ConfigDocument['routeSources'] = [], ports: PortConfig[]): RouteSourceConfig[] {
  const sources: RouteSourceConfig[] = given.map((s, i) => {
    if (s.type === 'netlink') return { type: 'netlink', netns: s.netns };
    const m = ADMIN_TCP.exec(s.listen)!;
    const port = Number(m[3]);
    if (port < 1 || port > 65535) throw new ConfigError(`routeSources[${i}].listen`, `the port must be from 1 to 65535, got ${port}`);
    const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]);
    const peers = s.peers?.map((a, k) => {
      try {
        return formatAddress(parseAddress(a).bytes);
      } catch (err) {
        throw new ConfigError(`routeSources[${i}].peers[${k}]`, (err as Error).message);
      }
    }) ?? null;
    // FPM has no authentication of its own: whoever connects installs routes.
    if (peers === null && !isLoopback(host, `routeSources[${i}].listen`)) throw new ConfigError(`routeSources[${i}].peers`, `is required when listening on ${s.listen}, which is not loopback: anyone who reaches it could install routes (list the addresses zebra connects from)`);
    return { type: 'fpm', host, port, peers };
  });
  const key = (s: RouteSourceConfig) => (s.type === 'netlink' ? `netlink ${s.netns}` : `fpm ${s.host}:${s.port}`);
  const dup = firstRepeat(sources.map(key));
  if (dup >= 0) throw new ConfigError(`routeSources[${dup}]`, `${key(sources[dup])} is listed twice`);
  for (const p of ports) {
    const netns = p.linuxMirror?.netns;
    if (netns !== undefined && !sources.some((s) => s.type === 'netlink' && s.netns === netns)) sources.push({ type: 'netlink', netns });
  }
  return sources;
}

/** A MAC of the schema's form that is also unicast: the I/G bit (bit 0 of the first octet) clear. */
function unicastMac(value: string, field: string): string {
  if ((parseInt(value.slice(0, 2), 16) & 1) === 1) throw new ConfigError(field, `${value} is a multicast address`);
  // Linux refuses it as an interface's address too (is_valid_ether_addr).
  if (value === '00:00:00:00:00:00') throw new ConfigError(field, `${value} is all zero: no station has it`);
  return value.toLowerCase();
}

/**
 * Why an interface address cannot be one of a router's, or null: a destination the router
 * does not forward (RFC 1812 5.3.7, RFC 4291 2.5.2-2.7: unspecified, loopback, multicast,
 * 240/4), or the subnet's own network or broadcast address (RFC 919; a /31 or /32 has none).
 */
function notAHostAddress(p: Prefix): string | null {
  const special = notAUnicastAddress(p);
  if (special !== null) return `${special}: not an interface's`;
  const edge = p.family === 4 ? ipv4SubnetEdge(p.bytes, p.length) : null;
  if (edge === 'network') return 'is the subnet\'s network address (its host bits are all 0)';
  if (edge === 'broadcast') return 'is the subnet\'s broadcast address (its host bits are all 1)';
  return null;
}

/** IPv6 needs links of at least this MTU (RFC 8200 5); Linux drops IPv6 from a link below it. */
const IPV6_MIN_MTU = 1280;

/** Why an interface (`what`: port or bridge) of this MTU cannot have these addresses, or null. */
function ipv6MtuShortfall(mtu: number, addresses: readonly string[], what: string): string | null {
  return mtu < IPV6_MIN_MTU && addresses.some((a) => a.includes(':')) ? `is below ${IPV6_MIN_MTU}, the least IPv6 allows (RFC 8200), and the ${what} has IPv6 addresses` : null;
}

/** An L3 port's addresses; a bridge member's belong to its bridge (bridges.NAME.addresses). */
function portAddresses(p: PortEntry, field: string): string[] {
  if (p.addresses === undefined) return [];
  const addresses = interfaceAddresses(p.addresses, `${field}.addresses`);
  if (p.bridge !== undefined && addresses.length > 0) {
    throw new ConfigError(`${field}.addresses`, `the port is in bridge ${p.bridge}: the router's addresses in that segment go in bridges.${p.bridge}.addresses`);
  }
  const mtu = p.mtu ?? 1500;
  const shortfall = ipv6MtuShortfall(mtu, addresses, 'port');
  if (shortfall !== null) throw new ConfigError(`${field}.mtu`, `${mtu} ${shortfall}`);
  return addresses;
}

/** The router's addresses on an interface: "10.0.1.1/24", "2001:db8:1::1/64", normalised. */
function interfaceAddresses(value: string[], field: string): string[] {
  const out = value.map((a, i) => {
    let p;
    try {
      p = parsePrefix(a);
    } catch (err) {
      throw new ConfigError(`${field}[${i}]`, (err as Error).message);
    }
    if (!a.includes('/')) throw new ConfigError(`${field}[${i}]`, `${JSON.stringify(a)} needs its prefix length (e.g. ${a}/24): it defines the connected subnet`);
    if (p.length === 0) throw new ConfigError(`${field}[${i}]`, 'a /0 subnet is not an interface address');
    const notHost = notAHostAddress(p);
    if (notHost !== null) throw new ConfigError(`${field}[${i}]`, `${p.text} ${notHost}`);
    return p.text;
  });
  const dup = firstRepeat(out);
  if (dup >= 0) throw new ConfigError(`${field}[${dup}]`, `${out[dup]} is listed twice`);
  return out;
}

/** The index of the first value seen before it in the list, or -1: one pass (an indexOf for each was quadratic in a long list). */
function firstRepeat(values: readonly string[]): number {
  const seen = new Set<string>();
  for (let i = 0; i < values.length; i++) {
    if (seen.has(values[i])) return i;
    seen.add(values[i]);
  }
  return -1;
}

/** `ports`: with their mirrors; `configured`: as in the config (fields name their places there). */
function parseBridges(given: ConfigDocument['bridges'] = {}, ports: PortConfig[], configured: readonly PortConfig[]): Record<string, BridgeConfig> {
  const used = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  for (const name of Object.keys(given)) if (!used.includes(name)) throw new ConfigError(`bridges.${name}`, `no port is in a bridge of that name (bridges: ${used.join(', ') || 'none'})`);
  return Object.fromEntries(
    used.map((name) => {
      const field = `bridges.${name}`;
      // Own keys only: a bridge named "constructor" is none of Object's.
      const b = (Object.hasOwn(given, name) ? given[name] : undefined) ?? {};
      const members = ports.filter((p) => p.bridge === name);
      const addresses = interfaceAddresses(b.addresses ?? [], `${field}.addresses`);
      const routerMac = b.routerMac === undefined ? derivedRouterMac(`bridge:${name}`) : unicastMac(b.routerMac, `${field}.routerMac`);
      const mtu = b.mtu ?? Math.min(...members.map((p) => p.mtu));
      const why = ipv6MtuShortfall(mtu, addresses, 'bridge');
      if (why !== null) {
        if (b.mtu !== undefined) throw new ConfigError(`${field}.mtu`, `${mtu} ${why}`);
        const small = configured.findIndex((p) => p.bridge === name && p.mtu === mtu);
        throw new ConfigError(`ports[${small}].mtu`, `${mtu} (the bridge's MTU, its smallest port's) ${why}`);
      }
      checkMembersMacs(configured, name, routerMac);
      const rpf = b.rpf ?? 'off';
      if (rpf !== 'off' && addresses.length === 0) throw new ConfigError(`${field}.rpf`, 'needs the bridge\'s "addresses": only what the router takes in the bridge is filtered');
      if (b.routerAdvertisements === true && addresses.length === 0) throw new ConfigError(`${field}.routerAdvertisements`, 'needs the bridge\'s "addresses": a router advertises only where it has an address');
      // A bridge with an uplink in it is the LAN's segment: the LAN has routers of its own.
      return [name, { addresses, routerMac, mtu, rpf, routerAdvertisements: b.routerAdvertisements ?? members.every((p) => towardGuest(p, ports)) }];
    }),
  );
}

/**
 * Guests' MACs in one bridge are its static entries: one MAC on two ports, or the router's
 * own, would take frames from the port they belong on.
 */
function checkMembersMacs(ports: readonly PortConfig[], bridge: string, routerMac: string): void {
  const seen = new Map<string, number>();
  ports.forEach((p, i) => {
    if (p.bridge !== bridge || p.mac === null) return;
    if (p.mac === routerMac) throw new ConfigError(`ports[${i}].mac`, `${p.mac} is the router's own MAC in bridge ${bridge} (bridges.${bridge}.routerMac): the guest needs another`);
    const twin = seen.get(p.mac);
    if (twin !== undefined) throw new ConfigError(`ports[${i}].mac`, `${p.mac} is already the mac of ports[${twin}] (${ports[twin].name}) in bridge ${bridge}: a MAC is on one port`);
    seen.set(p.mac, i);
  });
}

/** "0660" (a string: JSON has no octal numbers) */
function fileMode(value: string, field: string): number {
  const mode = parseInt(value, 8);
  if ((mode & 0o600) !== 0o600) throw new ConfigError(field, `${value} must let the owner read and write (vrouter itself)`);
  if ((mode & 0o007) !== 0) throw new ConfigError(field, `${value} lets any local user connect: give access through socketGroup instead`);
  return mode;
}

/** A group by number or by name (from /etc/group). */
function groupId(value: number | string, field: string): number {
  if (typeof value === 'number') return value;
  let groups = '';
  try {
    groups = readFileSync('/etc/group', 'utf8');
  } catch {
    // no group database: only numbers work
  }
  const line = groups.split('\n').find((l) => l.split(':')[0] === value);
  if (line === undefined) throw new ConfigError(field, `no group named ${JSON.stringify(value)} in /etc/group`);
  return Number(line.split(':')[2]);
}

function parsePmd(p: ConfigDocument['pmd'] = {}, cpuCount: number): PmdSettings {
  const cores = p.cores?.map((c, i) => existingCpu(c, `pmd.cores[${i}]`, cpuCount)) ?? [cpuCount - 1];
  const dup = cores.find((c, i) => cores.indexOf(c) !== i);
  if (dup !== undefined) throw new ConfigError('pmd.cores', `CPU ${dup} is listed twice`);
  return { cores, sleepMaxUs: p.sleepMaxUs ?? 10_000, spare: p.spare ?? true };
}

const ROUTING_STAGE = 'routing';

/**
 * "plugins": {"NAME": {"path": "./x.ts", ...its config}} and "pipeline": ["routing", "NAME"].
 * A built-in plugin is named in the pipeline without a path; its "plugins" entry, if any,
 * holds only its config. Without "pipeline", frames are bridged; with one, the bridge
 * stage comes right after routing (or first) when it is not named.
 * A built-in's top-level key given without its stage in the pipeline is a mistake (the
 * routes would do nothing), and says so.
 */
function parsePipeline(doc: ConfigDocument, ports: PortConfig[], baseDir: string, learned: Learned): { pipeline: string[]; plugins: PluginSpec[] } {
  const specs = new Map<string, PluginSpec>();
  for (const [name, entry] of Object.entries(doc.plugins ?? {})) {
    const field = `plugins.${name}`;
    const { path, ...config } = entry as { path?: string; [key: string]: unknown };
    if (BUILT_IN_PLUGINS.includes(name)) {
      if (path !== undefined) throw new ConfigError(`${field}.path`, `"${name}" is built in: it takes no path`);
      const clash = Object.keys(config).find((k) => (PLUGIN_TOP_LEVEL_KEYS as Record<string, { plugin: string } | undefined>)[k]?.plugin === name);
      if (clash !== undefined) throw new ConfigError(`${field}.${clash}`, `"${clash}" is given at the top level of the config`);
      const own = ['learnedRoutes', 'learnedNeighbours'].find((k) => name === ROUTING_STAGE && k in config);
      if (own !== undefined) throw new ConfigError(`${field}.${own}`, 'unknown key: what is learned comes from "routeSources"');
      specs.set(name, { name, path: builtInPluginPath(name), config });
      continue;
    }
    if (path === undefined) throw new ConfigError(`${field}.path`, 'must be the path of the plugin module');
    specs.set(name, { name, path: resolve(baseDir, path), config });
  }
  for (const name of BUILT_IN_PLUGINS) if (!specs.has(name)) specs.set(name, { name, path: builtInPluginPath(name), config: {} });
  let pipeline = [BRIDGE_STAGE];
  const stages = doc.pipeline;
  if (stages !== undefined) {
    const twice = firstRepeat(stages);
    pipeline = stages.map((stage, i) => {
      if (!specs.has(stage)) {
        throw new ConfigError(`pipeline[${i}]`, `${JSON.stringify(stage)} is neither a built-in plugin (${BUILT_IN_PLUGINS.join(', ')}) nor one defined in "plugins"`);
      }
      if (i === twice) throw new ConfigError(`pipeline[${i}]`, `"${stage}" is listed twice`);
      return stage;
    });
    // Always there (after routing), so that a port may join a bridge at run time: the
    // pipeline's stages are fixed while vrouter runs. On ports in no bridge it does nothing.
    const routing = pipeline.indexOf(ROUTING_STAGE);
    if (!pipeline.includes(BRIDGE_STAGE)) pipeline.splice(routing + 1, 0, BRIDGE_STAGE);
    const bridge = pipeline.indexOf(BRIDGE_STAGE);
    if (routing >= 0 && bridge >= 0 && bridge < routing) {
      throw new ConfigError(`pipeline[${stages.indexOf(ROUTING_STAGE)}]`, '"routing" must come before "bridge": it takes the frames addressed to the router before they are switched');
    }
  }
  const unused = [...specs.keys()].find((name) => !pipeline.includes(name) && !BUILT_IN_PLUGINS.includes(name));
  if (unused !== undefined) throw new ConfigError(`plugins.${unused}`, 'is not in the pipeline');
  // The top-level keys of built-ins go into their config.
  for (const [key, { plugin }] of Object.entries(PLUGIN_TOP_LEVEL_KEYS)) {
    const value = doc[key as keyof typeof PLUGIN_TOP_LEVEL_KEYS];
    if (value === undefined) continue;
    if (!pipeline.includes(plugin)) throw new ConfigError(key, `needs the "${plugin}" stage in "pipeline"`);
    specs.get(plugin)!.config[key] = value;
  }
  // The neighbours the route sources learned are the routing stage's too, after the
  // config's. Their routes are not part of the config: the stage reads them where the
  // route sources keep them (Plugin.routesLearned), a million of them perhaps.
  if (pipeline.includes(ROUTING_STAGE) && learned.neighbours.length > 0) specs.get(ROUTING_STAGE)!.config.learnedNeighbours = learned.neighbours;
  // An ACL rule may name a policer: the acl stage marks its packets with the policer's place.
  if (pipeline.includes('acl')) {
    const policers = Array.isArray(doc.policers) ? (doc.policers as unknown[]) : [];
    specs.get('acl')!.config.policerNames = policers.map((p) => (typeof p === 'object' && p !== null ? String((p as Record<string, unknown>).name) : ''));
  }
  if (!pipeline.includes(ROUTING_STAGE)) {
    const i = ports.findIndex((p) => p.addresses.length > 0);
    if (i >= 0) throw new ConfigError(`ports[${i}].addresses`, `needs the "${ROUTING_STAGE}" stage in "pipeline"`);
  }
  return { pipeline, plugins: pipeline.map((stage) => specs.get(stage)!) };
}

/**
 * "admin": {"listen": "unix:/path" | "HOST:PORT", "tokenFile": "path"}; without it, a UNIX
 * socket admin.sock next to the config file. A TCP address other than loopback needs a token:
 * the endpoint changes the router.
 */
function parseAdmin(a: ConfigDocument['admin'] = {}, baseDir: string): AdminConfig {
  const tokenFile = a.tokenFile === undefined ? null : resolve(baseDir, a.tokenFile);
  const timeouts = {
    headersTimeoutMs: a.headersTimeout === undefined ? ADMIN_TIMEOUTS.headersMs : Math.round(a.headersTimeout * 1000),
    stalledAnswerMs: a.stalledAnswerTimeout === undefined ? ADMIN_TIMEOUTS.stalledAnswerMs : Math.round(a.stalledAnswerTimeout * 1000),
  };
  const listen = a.listen ?? `unix:${resolve(baseDir, 'admin.sock')}`;
  if (listen.startsWith('unix:')) {
    const path = resolve(baseDir, listen.slice(5));
    if (Buffer.byteLength(path) > LIMITS.socketPathBytes) throw new ConfigError('admin.listen', `${path} is longer than the ${LIMITS.socketPathBytes} bytes a UNIX socket path may have`);
    return { listen: { kind: 'unix', path }, tokenFile, ...timeouts };
  }
  const m = ADMIN_TCP.exec(listen)!; // the schema let only "unix:…" and these through
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new ConfigError('admin.listen', `the port must be from 1 to 65535, got ${port}`);
  const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]);
  const loopback = isLoopback(host, 'admin.listen');
  if (!loopback && tokenFile === null) throw new ConfigError('admin.tokenFile', `is required when the admin endpoint listens on ${listen}, which is not loopback: anyone who reaches it could change the router`);
  return { listen: { kind: 'tcp', host, port, loopback }, tokenFile, ...timeouts };
}

/**
 * The admin token, read from admin.tokenFile once, when the endpoint starts (and by
 * `vrouter --check`): not at each parse of the config, so that a change made while the
 * file is being replaced is not refused for it.
 */
export function readAdminToken(path: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError('admin.tokenFile', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (token.length < ADMIN_TOKEN_MIN) throw new ConfigError('admin.tokenFile', `the token in ${path} is shorter than ${ADMIN_TOKEN_MIN} characters`);
  // What an Authorization header can carry as it is: else the daemon starts, and no client can send it.
  if (!/^[\x20-\x7e\t]+$/.test(token)) throw new ConfigError('admin.tokenFile', `the token in ${path} holds a line break, a control character or a character past ASCII, which vrouterctl and other HTTP clients cannot send in a header: use printable ASCII (openssl rand -hex 32)`);
  return token;
}

/**
 * Validates a parsed config document: first against the schema, then what a schema cannot
 * say. Relative paths are taken from baseDir. `learned`: what the route sources hold now
 * (routes and neighbours for the routing stage, addresses Linux has on mirrors for their ports).
 */
export function parseConfig(raw: unknown, baseDir: string, cpuCount = cpus().length, learned: Learned = NOTHING_LEARNED): VrouterConfig {
  const doc = checkDocument(raw);
  const pmd = parsePmd(doc.pmd, cpuCount);
  const given = doc.ports.map((p, i) => parsePort(p, `ports[${i}]`, baseDir, cpuCount, pmd.cores));
  given.forEach((p, i) => {
    const k = p.type === 'vlan' ? i : given.findIndex((q) => q.type === p.type && q.socket === p.socket && q.interface === p.interface);
    const j = given.findIndex((q) => q.name === p.name);
    if (j !== i) throw new ConfigError(`ports[${i}].name`, `"${p.name}" is already the name of ports[${j}]`);
    if (k !== i) {
      if (p.type !== 'vhost-user') throw new ConfigError(`ports[${i}].interface`, `${p.interface} is already the interface of ports[${k}]`);
      throw new ConfigError(`ports[${i}].socket`, `${p.socket} is already the socket of ports[${k}]`);
    }
  });
  withParents(doc.ports, given);
  const ports = withLearnedAddresses(withMirrors(given), learned.addresses);
  const bridges = parseBridges(doc.bridges, ports, given);
  checkSubnetsApart(given, bridges);
  const stages = parsePipeline(doc, given, baseDir, learned);
  if (!stages.pipeline.includes(ROUTING_STAGE)) {
    const b = Object.entries(bridges).find(([, c]) => c.addresses.length > 0);
    if (b !== undefined) throw new ConfigError(`bridges.${b[0]}.addresses`, `needs the "${ROUTING_STAGE}" stage in "pipeline"`);
  }
  if (doc.routeSources !== undefined && !stages.pipeline.includes(ROUTING_STAGE)) throw new ConfigError('routeSources', `needs the "${ROUTING_STAGE}" stage in "pipeline"`);
  const control = { nice: doc.control?.nice ?? CONTROL_NICE_DEFAULT };
  return { ports, pmd, control, bridges, ...stages, admin: parseAdmin(doc.admin, baseDir), routeSources: parseRouteSources(doc.routeSources, ports) };
}

/**
 * Each VLAN port checked against its parent (a port of another type, one port per VLAN of
 * it, an MTU within the parent's), and given the parent's MTU and router advertisements
 * by default: a guest's VLAN is a guest's segment, an uplink's VLAN the LAN's.
 */
function withParents(entries: readonly PortEntry[], given: PortConfig[]): void {
  given.forEach((p, i) => {
    if (p.type !== 'vlan') return;
    const field = `ports[${i}]`;
    const parent = given.find((q) => q.name === p.parent);
    if (parent === undefined) throw new ConfigError(`${field}.parent`, `no port is called "${p.parent}"`);
    if (parent.type === 'vlan') throw new ConfigError(`${field}.parent`, `${parent.name} is a vlan port itself: a VLAN's parent is a port with queues (802.1ad double tags are not taken apart)`);
    if (p.bridge !== null && p.bridge === parent.bridge) throw new ConfigError(`${field}.bridge`, `its parent ${parent.name} is in bridge ${p.bridge} too: what the bridge floods would leave the parent twice, once tagged`);
    const sibling = given.findIndex((q) => q !== p && q.type === 'vlan' && q.parent === p.parent && p.bridge !== null && q.bridge === p.bridge);
    if (sibling >= 0 && sibling < i) throw new ConfigError(`${field}.bridge`, `ports[${sibling}], another VLAN of ${parent.name}, is in bridge ${p.bridge} too: what the bridge floods would leave ${parent.name} twice`);
    const twin = given.findIndex((q) => q.type === 'vlan' && q.parent === p.parent && q.vlan === p.vlan);
    if (twin !== i) throw new ConfigError(`${field}.vlan`, `VLAN ${p.vlan} of ${p.parent} is already ports[${twin}]`);
    if (entries[i].mtu === undefined) {
      p.mtu = parent.mtu;
      const shortfall = ipv6MtuShortfall(p.mtu, p.addresses, 'port');
      if (shortfall !== null) throw new ConfigError(`${field}.mtu`, `${p.mtu} (its parent's MTU) ${shortfall}`);
    } else if (p.mtu > parent.mtu) throw new ConfigError(`${field}.mtu`, `${p.mtu} is more than its parent ${parent.name}'s MTU (${parent.mtu}): a tagged frame of the VLAN must fit the parent's`);
    if (entries[i].routerAdvertisements === undefined) p.routerAdvertisements = parent.type === 'vhost-user';
  });
}

/** Whether a port leads to a guest: a vhost-user port, or a VLAN of one. */
function towardGuest(p: PortConfig, ports: readonly PortConfig[]): boolean {
  const port = p.type === 'vlan' ? ports.find((q) => q.name === p.parent) : p;
  return port?.type === 'vhost-user';
}

/**
 * A connected subnet is on one interface (an L3 port or a bridge): on two, the routes to it
 * are the same prefix, one of them wins, and the hosts behind the other cannot be reached.
 * (Nested subnets are kept: the longest prefix decides, as in Linux.)
 */
function checkSubnetsApart(ports: readonly PortConfig[], bridges: Record<string, BridgeConfig>): void {
  /** by subnet ("10.0.1.0/24") and by address ("10.0.1.1"): the interface that has it, and the address's field */
  const subnets = new Map<string, { owner: string; field: string; address: string }>();
  const hosts = new Map<string, { owner: string; field: string }>();
  const add = (owner: string, field: string, addresses: readonly string[]) => {
    addresses.forEach((address, k) => {
      const p = parsePrefix(address);
      const subnet = `${formatAddress(maskBytes(p.bytes, p.length))}/${p.length}`;
      const other = subnets.get(subnet);
      if (other !== undefined && other.owner !== owner) throw new ConfigError(`${field}[${k}]`, `${address} is in the subnet of ${other.address} on ${other.owner} (${other.field}): a subnet is on one interface`);
      subnets.set(subnet, { owner, field: `${field}[${k}]`, address });
      // In nested subnets too: the router would answer ARP for it on both, and own it on one.
      const host = formatAddress(p.bytes);
      const twin = hosts.get(host);
      if (twin !== undefined && twin.owner !== owner) throw new ConfigError(`${field}[${k}]`, `${host} is already the router's address on ${twin.owner} (${twin.field}): an address is on one interface`);
      hosts.set(host, { owner, field: `${field}[${k}]` });
    });
  };
  ports.forEach((p, i) => {
    if (p.bridge === null) add(`port ${p.name}`, `ports[${i}].addresses`, p.addresses);
  });
  for (const [name, b] of Object.entries(bridges)) add(`bridge ${name}`, `bridges.${name}.addresses`, b.addresses);
}

/**
 * The ports and bridges as plugins see them (Plugin.sharedMemory, PluginContext). `slots`
 * places each port at its slot (see port-slots.ts); a slot with no port is listed with an
 * empty name and no settings, so that an index is a slot everywhere. Without it, a port's
 * slot is its place in the config.
 */
export function topologyOf(config: VrouterConfig, slots: readonly (string | null)[] = config.ports.map((p) => p.name)): Topology {
  const byName = new Map(config.ports.map((p) => [p.name, p]));
  const ports = slots.map((name, index) => {
    const p = name === null ? undefined : byName.get(name);
    return p === undefined ? { index, name: '', bridge: null, settings: {} } : { index, name: p.name, bridge: p.bridge, settings: { ...p } };
  });
  const bridges = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  return { ports, bridges, bridgeSettings: Object.fromEntries(bridges.map((b) => [b, { ...config.bridges[b] }])), pmdCount: config.pmd.cores.length };
}

/** Reads and validates a config file; errors name the file as well as the field. */
export function loadConfigFile(path: string): VrouterConfig {
  return readConfigFile(path).config;
}

/** A config file as written (the document) and as validated. */
export function readConfigFile(path: string): { document: unknown; config: VrouterConfig } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, `cannot read: ${(err as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(path, `not valid JSON: ${(err as Error).message}`);
  }
  const problem = jsonShapeProblem(text, document);
  if (problem !== null) throw new ConfigError(problem.field, problem.reason);
  return { document, config: parseConfig(document, dirname(resolve(path))) };
}

/** Whether a listening address is loopback (127/8, ::1); `field` names it in the error for one that is not an address. */
function isLoopback(host: string, field: string): boolean {
  try {
    return isLoopbackAddress(parsePrefix(host));
  } catch (err) {
    throw new ConfigError(field, (err as Error).message);
  }
}
