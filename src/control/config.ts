// The configuration file: parsed and validated as a whole before anything starts. Every
// error names the field at fault (ports[1].mtu) and the reason; unknown keys are refused.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { MemoryPolicy } from '../vhost/memory-table.ts';
import { BRIDGE_STAGE, BUILT_IN_PLUGINS, builtInPluginPath, type PluginSpec } from '../pipeline/loader.ts';
import { derivedRouterMac, parsePrefix, type Topology } from '../pipeline/api.ts';

export interface PortConfig {
  name: string;
  /** absolute path of the vhost-user socket */
  socket: string;
  /** ports with the same bridge name are switched together by MAC learning */
  bridge: string | null;
  /** server: vrouter listens and the frontend connects; client: the other way round */
  mode: 'server' | 'client';
  /** the guest's MAC on this port: a static entry in the port's bridge */
  mac: string | null;
  mtu: number;
  /** queue pairs offered to the frontend */
  queues: number;
  /** queue pair -> the CPU of the PMD that polls it (others are spread round-robin) */
  rxqAffinity: Record<number, number>;
  /** most MAC addresses the bridge learns from this port (per PMD table) */
  macLimit: number;
  /** only `mac` may be a source address on this port; other frames are dropped */
  portSecurity: boolean;
  /** guest memory files that cannot be sealed against shrinking or are not on tmpfs/hugetlbfs */
  memoryPolicy: MemoryPolicy;
  /** server mode: permission bits and group of the socket file */
  socketMode: number;
  socketGroup: number | null;
  /** the uid a frontend must run as (SO_PEERCRED), or null for any */
  peerUid: number | null;
  /** the router's addresses on this port (CIDR, normalised): it routes for the port's subnets */
  addresses: string[];
  /** the router's MAC on this port (default: derived from the port name) */
  routerMac: string;
}

/** A bridge's own settings ("bridges"): with addresses, the router has an interface in it. */
export interface BridgeConfig {
  addresses: string[];
  routerMac: string;
  mtu: number;
}


export interface PmdSettings {
  /** the CPU of each PMD thread */
  cores: number[];
  /** the longest idle sleep of a PMD in µs; 0 polls without ever sleeping */
  sleepMaxUs: number;
}

export interface VrouterConfig {
  ports: PortConfig[];
  pmd: PmdSettings;
  /** the stages of every burst, in order: "bridge" (built in) and plugins by name */
  pipeline: string[];
  /** every stage of the pipeline, in order, as a plugin (the bridge too) */
  plugins: PluginSpec[];
  bridges: Record<string, BridgeConfig>;
  admin: AdminConfig;
}

/** The admin endpoint: where it listens, and the token that changes need. */
export interface AdminConfig {
  /** "unix:/path" or "127.0.0.1:PORT" / "[::1]:PORT" (or another address, with a token) */
  listen: { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number; loopback: boolean };
  /** a file holding the bearer token every request but GET needs, or null */
  tokenFile: string | null;
}


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
  ports: 64,
  mtuMin: 68,
  mtuMax: 9000,
  queuesMax: 8,
  sleepMaxUs: 100_000,
  socketPathBytes: 107,
  /** the MAC table holds 4096 entries per bridge and PMD */
  macLimitMax: 4096,
  macLimitDefault: 256,
  uidMax: 2 ** 32 - 2,
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const FILE_MODE = /^0?[0-7]{3}$/;

type Obj = Record<string, unknown>;

function object(value: unknown, field: string, keys: readonly string[]): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(field, 'must be an object');
  for (const k of Object.keys(value)) {
    if (!keys.includes(k)) throw new ConfigError(`${field}.${k}`.replace(/^\./, ''), `unknown key (known: ${keys.join(', ')})`);
  }
  return value as Obj;
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function name(value: unknown, field: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw new ConfigError(field, `must be 1-32 letters, digits, '_', '.' or '-', got ${JSON.stringify(value)}`);
  }
  return value;
}

function parsePort(raw: unknown, field: string, baseDir: string, cpuCount: number, pmdCores: number[]): PortConfig {
  const p = object(raw, field, [
    'name', 'socket', 'bridge', 'mode', 'mac', 'mtu', 'queues', 'rxqAffinity',
    'macLimit', 'portSecurity', 'memoryPolicy', 'socketMode', 'socketGroup', 'peerUid',
    'addresses', 'routerMac',
  ]);
  if (typeof p.socket !== 'string' || p.socket === '') throw new ConfigError(`${field}.socket`, 'must be a path');
  const socket = resolve(baseDir, p.socket);
  if (Buffer.byteLength(socket) > LIMITS.socketPathBytes) {
    throw new ConfigError(`${field}.socket`, `${socket} is longer than the ${LIMITS.socketPathBytes} bytes a UNIX socket path may have`);
  }
  const mode = p.mode ?? 'server';
  if (mode !== 'server' && mode !== 'client') throw new ConfigError(`${field}.mode`, `must be "server" or "client", got ${JSON.stringify(mode)}`);
  const mac = p.mac === undefined ? null : unicastMac(p.mac, `${field}.mac`);
  const queues = p.queues === undefined ? 1 : integer(p.queues, `${field}.queues`, 1, LIMITS.queuesMax);
  const rxqAffinity: Record<number, number> = {};
  if (p.rxqAffinity !== undefined) {
    const a = object(p.rxqAffinity, `${field}.rxqAffinity`, Array.from({ length: queues }, (_, q) => String(q)));
    for (const [q, cpu] of Object.entries(a)) {
      const core = integer(cpu, `${field}.rxqAffinity.${q}`, 0, cpuCount - 1);
      if (!pmdCores.includes(core)) throw new ConfigError(`${field}.rxqAffinity.${q}`, `CPU ${core} runs no PMD (pmd.cores is [${pmdCores.join(', ')}])`);
      rxqAffinity[Number(q)] = core;
    }
  }
  const portSecurity = p.portSecurity === undefined ? false : boolean(p.portSecurity, `${field}.portSecurity`);
  if (portSecurity && mac === null) throw new ConfigError(`${field}.portSecurity`, 'needs the port\'s "mac": the one source address it allows');
  const memoryPolicy = p.memoryPolicy ?? 'warn';
  if (memoryPolicy !== 'strict' && memoryPolicy !== 'warn') {
    throw new ConfigError(`${field}.memoryPolicy`, `must be "strict" or "warn", got ${JSON.stringify(memoryPolicy)}`);
  }
  if (mode === 'client' && (p.socketMode !== undefined || p.socketGroup !== undefined)) {
    throw new ConfigError(`${field}.${p.socketMode !== undefined ? 'socketMode' : 'socketGroup'}`, 'applies to server mode only (in client mode the frontend creates the socket)');
  }
  return {
    name: name(p.name, `${field}.name`),
    socket,
    bridge: p.bridge === undefined ? null : name(p.bridge, `${field}.bridge`),
    mode,
    mac,
    mtu: p.mtu === undefined ? 1500 : integer(p.mtu, `${field}.mtu`, LIMITS.mtuMin, LIMITS.mtuMax),
    queues,
    rxqAffinity,
    macLimit: p.macLimit === undefined ? LIMITS.macLimitDefault : integer(p.macLimit, `${field}.macLimit`, 1, LIMITS.macLimitMax),
    portSecurity,
    memoryPolicy,
    socketMode: p.socketMode === undefined ? 0o600 : fileMode(p.socketMode, `${field}.socketMode`),
    socketGroup: p.socketGroup === undefined ? null : groupId(p.socketGroup, `${field}.socketGroup`),
    peerUid: p.peerUid === undefined ? null : integer(p.peerUid, `${field}.peerUid`, 0, LIMITS.uidMax),
    addresses: interfaceAddresses(p.addresses, `${field}.addresses`),
    routerMac: p.routerMac === undefined ? derivedRouterMac(String(p.name)) : unicastMac(p.routerMac, `${field}.routerMac`),
  };
}

function unicastMac(value: unknown, field: string): string {
  if (typeof value !== 'string' || !MAC.test(value)) throw new ConfigError(field, `must look like 52:54:00:12:34:56, got ${JSON.stringify(value)}`);
  if ((parseInt(value.slice(0, 2), 16) & 1) === 1) throw new ConfigError(field, `${value} is a multicast address`);
  return value.toLowerCase();
}

/** The router's addresses on an interface: "10.0.1.1/24", "2001:db8:1::1/64", normalised. */
function interfaceAddresses(value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new ConfigError(field, 'must be an array of addresses with prefix lengths, such as "10.0.1.1/24"');
  const out = value.map((a, i) => {
    let p;
    try {
      p = parsePrefix(a);
    } catch (err) {
      throw new ConfigError(`${field}[${i}]`, (err as Error).message);
    }
    if (!String(a).includes('/')) throw new ConfigError(`${field}[${i}]`, `${JSON.stringify(a)} needs its prefix length (e.g. ${a}/24): it defines the connected subnet`);
    if (p.length === 0) throw new ConfigError(`${field}[${i}]`, 'a /0 subnet is not an interface address');
    return p.text;
  });
  const dup = out.findIndex((a, i) => out.indexOf(a) !== i);
  if (dup >= 0) throw new ConfigError(`${field}[${dup}]`, `${out[dup]} is listed twice`);
  return out;
}

function parseBridges(raw: unknown, ports: PortConfig[]): Record<string, BridgeConfig> {
  const used = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const given = raw === undefined ? {} : object(raw, 'bridges', Object.keys(raw as object));
  for (const name of Object.keys(given)) if (!used.includes(name)) throw new ConfigError(`bridges.${name}`, `no port is in a bridge of that name (bridges: ${used.join(', ') || 'none'})`);
  return Object.fromEntries(
    used.map((name) => {
      const field = `bridges.${name}`;
      const b = given[name] === undefined ? {} : object(given[name], field, ['addresses', 'routerMac', 'mtu']);
      const members = ports.filter((p) => p.bridge === name);
      return [name, {
        addresses: interfaceAddresses(b.addresses, `${field}.addresses`),
        routerMac: b.routerMac === undefined ? derivedRouterMac(`bridge:${name}`) : unicastMac(b.routerMac, `${field}.routerMac`),
        mtu: b.mtu === undefined ? Math.min(...members.map((p) => p.mtu)) : integer(b.mtu, `${field}.mtu`, LIMITS.mtuMin, LIMITS.mtuMax),
      }];
    }),
  );
}

function boolean(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(field, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** "0660" (a string: JSON has no octal numbers) */
function fileMode(value: unknown, field: string): number {
  if (typeof value !== 'string' || !FILE_MODE.test(value)) throw new ConfigError(field, `must be an octal mode such as "0660", got ${JSON.stringify(value)}`);
  const mode = parseInt(value, 8);
  if ((mode & 0o600) !== 0o600) throw new ConfigError(field, `${value} must let the owner read and write (vrouter itself)`);
  if ((mode & 0o007) !== 0) throw new ConfigError(field, `${value} lets any local user connect: give access through socketGroup instead`);
  return mode;
}

/** A group by number or by name (from /etc/group). */
function groupId(value: unknown, field: string): number {
  if (typeof value === 'number') return integer(value, field, 0, LIMITS.uidMax);
  if (typeof value !== 'string' || value === '') throw new ConfigError(field, `must be a group name or number, got ${JSON.stringify(value)}`);
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

function parsePmd(raw: unknown, cpuCount: number): PmdSettings {
  const defaults: PmdSettings = { cores: [cpuCount - 1], sleepMaxUs: 10_000 };
  if (raw === undefined) return defaults;
  const p = object(raw, 'pmd', ['cores', 'sleepMaxUs']);
  let cores = defaults.cores;
  if (p.cores !== undefined) {
    if (!Array.isArray(p.cores) || p.cores.length === 0) throw new ConfigError('pmd.cores', 'must be a non-empty array of CPU numbers');
    cores = p.cores.map((c, i) => integer(c, `pmd.cores[${i}]`, 0, cpuCount - 1));
    const dup = cores.find((c, i) => cores.indexOf(c) !== i);
    if (dup !== undefined) throw new ConfigError('pmd.cores', `CPU ${dup} is listed twice`);
  }
  return {
    cores,
    sleepMaxUs: p.sleepMaxUs === undefined ? defaults.sleepMaxUs : integer(p.sleepMaxUs, 'pmd.sleepMaxUs', 0, LIMITS.sleepMaxUs),
  };
}

const PLUGIN_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
const ROUTING_STAGE = 'routing';

/**
 * The built-in plugins' config at the top level of the file, by plugin: routing takes
 * "routes" and "neighbours", and so on. A key given without its stage in the pipeline is a
 * mistake (the routes would do nothing), and says so.
 */
const TOP_LEVEL_KEYS: Record<string, readonly string[]> = {
  routing: ['routes', 'neighbours'],
  acl: ['acl', 'aclDefault'],
  ratelimit: ['policers'],
};

/**
 * "plugins": {"NAME": {"path": "./x.ts", ...its config}} and "pipeline": ["routing", "NAME"].
 * A built-in plugin is named in the pipeline without a path; its "plugins" entry, if any,
 * holds only its config. Without "pipeline", frames are bridged; with one, the bridge
 * stage comes right after routing (or first) when ports are in bridges and it is not named.
 */
function parsePipeline(top: Obj, ports: PortConfig[], baseDir: string): { pipeline: string[]; plugins: PluginSpec[] } {
  const rawPipeline = top.pipeline;
  const defined = top.plugins === undefined ? {} : object(top.plugins, 'plugins', Object.keys(top.plugins as object));
  const specs = new Map<string, PluginSpec>();
  for (const [name, entry] of Object.entries(defined)) {
    const field = `plugins.${name}`;
    const e = object(entry, field, Object.keys(entry as object));
    const { path, ...config } = e;
    if (BUILT_IN_PLUGINS.includes(name)) {
      if (path !== undefined) throw new ConfigError(`${field}.path`, `"${name}" is built in: it takes no path`);
      const clash = Object.keys(config).find((k) => TOP_LEVEL_KEYS[name]?.includes(k));
      if (clash !== undefined) throw new ConfigError(`${field}.${clash}`, `"${clash}" is given at the top level of the config`);
      specs.set(name, { name, path: builtInPluginPath(name), config });
      continue;
    }
    if (!PLUGIN_NAME.test(name)) throw new ConfigError(field, "a plugin name is 1-32 of a-z, 0-9, '_' and '-', starting with a letter");
    if (typeof path !== 'string' || path === '') throw new ConfigError(`${field}.path`, 'must be the path of the plugin module');
    specs.set(name, { name, path: resolve(baseDir, path), config });
  }
  for (const name of BUILT_IN_PLUGINS) if (!specs.has(name)) specs.set(name, { name, path: builtInPluginPath(name), config: {} });
  let pipeline = [BRIDGE_STAGE];
  if (rawPipeline !== undefined) {
    if (!Array.isArray(rawPipeline)) throw new ConfigError('pipeline', 'must be an array of stage names');
    pipeline = rawPipeline.map((stage, i) => {
      if (typeof stage !== 'string' || !specs.has(stage)) {
        throw new ConfigError(`pipeline[${i}]`, `${JSON.stringify(stage)} is neither a built-in plugin (${BUILT_IN_PLUGINS.join(', ')}) nor one defined in "plugins"`);
      }
      if (rawPipeline.indexOf(stage) !== i) throw new ConfigError(`pipeline[${i}]`, `"${stage}" is listed twice`);
      return stage;
    });
    const routing = pipeline.indexOf(ROUTING_STAGE);
    const bridged = ports.some((p) => p.bridge !== null);
    if (!pipeline.includes(BRIDGE_STAGE) && (bridged || routing < 0)) pipeline.splice(routing + 1, 0, BRIDGE_STAGE);
    const bridge = pipeline.indexOf(BRIDGE_STAGE);
    if (routing >= 0 && bridge >= 0 && bridge < routing) {
      throw new ConfigError(`pipeline[${rawPipeline.indexOf(ROUTING_STAGE)}]`, '"routing" must come before "bridge": it takes the frames addressed to the router before they are switched');
    }
  }
  const unused = [...specs.keys()].find((name) => !pipeline.includes(name) && !BUILT_IN_PLUGINS.includes(name));
  if (unused !== undefined) throw new ConfigError(`plugins.${unused}`, 'is not in the pipeline');
  // The top-level keys of built-ins go into their config.
  for (const [plugin, keys] of Object.entries(TOP_LEVEL_KEYS)) {
    for (const key of keys) {
      if (top[key] === undefined) continue;
      if (!pipeline.includes(plugin)) throw new ConfigError(key, `needs the "${plugin}" stage in "pipeline"`);
      specs.get(plugin)!.config[key] = top[key];
    }
  }
  // An ACL rule may name a policer: the acl stage marks its packets with the policer's place.
  if (pipeline.includes('acl')) {
    const policers = Array.isArray(top.policers) ? (top.policers as unknown[]) : [];
    specs.get('acl')!.config.policerNames = policers.map((p) => (typeof p === 'object' && p !== null ? String((p as Obj).name) : ''));
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
function parseAdmin(raw: unknown, baseDir: string): AdminConfig {
  const a = raw === undefined ? {} : object(raw, 'admin', ['listen', 'tokenFile']);
  const tokenFile = a.tokenFile === undefined ? null : typeof a.tokenFile === 'string' && a.tokenFile !== '' ? resolve(baseDir, a.tokenFile) : null;
  if (a.tokenFile !== undefined && tokenFile === null) throw new ConfigError('admin.tokenFile', 'must be the path of a file holding the token');
  const listen = a.listen ?? `unix:${resolve(baseDir, 'admin.sock')}`;
  if (typeof listen !== 'string' || listen === '') throw new ConfigError('admin.listen', 'must be "unix:/path/admin.sock" or "127.0.0.1:PORT"');
  if (listen.startsWith('unix:')) {
    const path = resolve(baseDir, listen.slice(5));
    if (Buffer.byteLength(path) > LIMITS.socketPathBytes) throw new ConfigError('admin.listen', `${path} is longer than the ${LIMITS.socketPathBytes} bytes a UNIX socket path may have`);
    return { listen: { kind: 'unix', path }, tokenFile };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$/.exec(listen);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port < 1 || port > 65535) throw new ConfigError('admin.listen', `must be "unix:/path" or "HOST:PORT" ("127.0.0.1:8080", "[::1]:8080"), got ${JSON.stringify(listen)}`);
  const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]);
  let loopback: boolean;
  try {
    const p = parsePrefix(host);
    loopback = p.family === 4 ? p.bytes[0] === 127 : p.bytes.every((b, i) => b === (i === 15 ? 1 : 0));
  } catch (err) {
    throw new ConfigError('admin.listen', (err as Error).message);
  }
  if (!loopback && tokenFile === null) throw new ConfigError('admin.tokenFile', `is required when the admin endpoint listens on ${listen}, which is not loopback: anyone who reaches it could change the router`);
  return { listen: { kind: 'tcp', host, port, loopback }, tokenFile };
}

/** Validates a parsed config document. Relative socket paths are taken from baseDir. */
export function parseConfig(raw: unknown, baseDir: string, cpuCount = cpus().length): VrouterConfig {
  const top = object(raw, '', ['ports', 'pmd', 'pipeline', 'plugins', 'bridges', 'admin', ...Object.values(TOP_LEVEL_KEYS).flat()]);
  if (!Array.isArray(top.ports) || top.ports.length === 0) throw new ConfigError('ports', 'must be a non-empty array');
  if (top.ports.length > LIMITS.ports) throw new ConfigError('ports', `at most ${LIMITS.ports} ports`);
  const pmd = parsePmd(top.pmd, cpuCount);
  const ports = top.ports.map((p, i) => parsePort(p, `ports[${i}]`, baseDir, cpuCount, pmd.cores));
  ports.forEach((p, i) => {
    const j = ports.findIndex((q) => q.name === p.name);
    if (j !== i) throw new ConfigError(`ports[${i}].name`, `"${p.name}" is already the name of ports[${j}]`);
    const k = ports.findIndex((q) => q.socket === p.socket);
    if (k !== i) throw new ConfigError(`ports[${i}].socket`, `${p.socket} is already the socket of ports[${k}]`);
  });
  const bridges = parseBridges(top.bridges, ports);
  const stages = parsePipeline(top, ports, baseDir);
  if (!stages.pipeline.includes(ROUTING_STAGE)) {
    const b = Object.entries(bridges).find(([, c]) => c.addresses.length > 0);
    if (b !== undefined) throw new ConfigError(`bridges.${b[0]}.addresses`, `needs the "${ROUTING_STAGE}" stage in "pipeline"`);
  }
  return { ports, pmd, bridges, ...stages, admin: parseAdmin(top.admin, baseDir) };
}

/** The ports and bridges as plugins see them (Plugin.sharedMemory, PluginContext). */
export function topologyOf(config: VrouterConfig): Topology {
  const bridges = [...new Set(config.ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const ports = config.ports.map((p, index) => ({ index, name: p.name, bridge: p.bridge, settings: { ...p } }));
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
  return { document, config: parseConfig(document, dirname(resolve(path))) };
}
