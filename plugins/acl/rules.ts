// The acl plugin's config: the top-level "acl" rule list and "aclDefault", and the options
// of its "plugins" entry (stateful, conntrack, reject), validated into plain data that
// survives postMessage. Port names are resolved against the topology later (rulesFor),
// since a plugin's config is parsed before it sees the ports.
import { parsePrefix, PluginConfigError, type PortInfo } from '../../src/pipeline/api.ts';
import { checkRule, ClassifierError, type AclRule, type Prefix4, type Prefix6, type ValueRange } from './classifier.ts';

export const PERMIT = 0;
export const DENY = 1;
export const REJECT = 2;
const ACTIONS: Record<string, number> = { permit: PERMIT, deny: DENY, reject: REJECT };

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };

/** TCP flag letters in the order of the flags byte's bits, lowest first (RFC 9293 3.1, RFC 3168 6.1). */
const TCP_FLAG_LETTERS = 'FSRPAUEC';

const RULE_KEYS = ['action', 'protocol', 'src', 'dst', 'srcPort', 'dstPort', 'icmpType', 'icmpCode', 'tcpFlags', 'inPort', 'outPort', 'stateful', 'policer'];
const PLUGIN_KEYS = ['acl', 'aclDefault', 'policerNames', 'stateful', 'conntrack', 'reject'];
const TIMEOUT_KEYS = ['tcpEstablished', 'tcpTransitory', 'tcpClosed', 'udp', 'udpStream', 'icmp', 'other'] as const;

/** Connection tracking limits; the timeouts are idle times in seconds. */
export interface ConntrackConfig {
  maxFlows: number;
  /** entries the flows opened from one port may hold: a port (a hostile guest) cannot take the table from the others */
  maxFlowsPerPort: number;
  timeouts: Record<(typeof TIMEOUT_KEYS)[number], number>;
}

/**
 * Defaults, after Linux's nf_conntrack where a bounded table allows: an established TCP
 * connection is kept 2 h 4 min idle (RFC 5382 REQ-5, for NATs: "MUST NOT be less than 2
 * hours 4 minutes", so that a connection kept alive by TCP keepalives every 2 hours never
 * expires), not Linux's 5 days, which would let the dead connections of vanished peers fill
 * the table; handshakes and closes 120 s, closed or reset 10 s, UDP 30 s (120 s once
 * both ways have been seen), ICMP 30 s, other protocols 600 s, as Linux. 262144 flows take
 * 17 MiB of shared memory. The flows opened from one port may hold half of the entries (Linux
 * and OVS have such limits per zone): one port, a hostile guest's, cannot take them all.
 */
export const CONNTRACK_DEFAULTS: ConntrackConfig = {
  maxFlows: 262144,
  maxFlowsPerPort: 131072,
  timeouts: { tcpEstablished: 7440, tcpTransitory: 120, tcpClosed: 10, udp: 30, udpStream: 120, icmp: 30, other: 600 },
};
export const MAX_FLOWS_LIMIT = 1 << 23;
const MIN_FLOWS = 64;
const MAX_TIMEOUT = 864000;

/** ICMP errors and TCP resets sent for "reject", per PMD: a token bucket, as Linux's icmp_ratelimit. */
export interface RejectLimit {
  /** tokens per second */
  rate: number;
  burst: number;
}
export const REJECT_DEFAULTS: RejectLimit = { rate: 1000, burst: 50 };

export interface AclEntry {
  action: number;
  /** the match, without port indices (inPort/outPort are names until rulesFor) */
  match: AclRule;
  inPort: string | null;
  outPort: string | null;
  /** a permit that creates a connection-tracking entry */
  tracked: boolean;
  /** batch.mark for the ratelimit stage: the policer's place in "policers" + 1, or 0 */
  mark: number;
  /** the rule as the config wrote it (for listings) */
  source: Record<string, unknown>;
}

export interface AclConfig {
  rules: AclEntry[];
  defaultAction: number;
  /** some rule is tracked: the conntrack table exists */
  tracking: boolean;
  conntrack: ConntrackConfig;
  reject: RejectLimit;
  policerNames: string[];
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function integer(v: unknown, field: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new PluginConfigError(field, `must be an integer from ${lo} to ${hi}, got ${JSON.stringify(v)}`);
  return v;
}

function boolean(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new PluginConfigError(field, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** 80, "80" or "1000-2000". */
function valueRange(v: unknown, field: string, max: number): ValueRange {
  if (typeof v === 'number') {
    const n = integer(v, field, 0, max);
    return [n, n];
  }
  const m = typeof v === 'string' ? /^(\d+)(?:-(\d+))?$/.exec(v) : null;
  if (m === null) throw new PluginConfigError(field, `must be a number from 0 to ${max} or a range "lo-hi", got ${JSON.stringify(v)}`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (hi > max) throw new PluginConfigError(field, `${hi} is above ${max}`);
  if (lo > hi) throw new PluginConfigError(field, `the range starts at ${lo}, above its end ${hi}`);
  return [lo, hi];
}

function prefix(v: unknown, field: string): Prefix4 | Prefix6 {
  let p;
  try {
    p = parsePrefix(v);
  } catch (err) {
    throw new PluginConfigError(field, (err as Error).message);
  }
  if (p.family === 4) return { addr: ((p.bytes[0] << 24) | (p.bytes[1] << 16) | (p.bytes[2] << 8) | p.bytes[3]) >>> 0, length: p.length };
  return { addr: p.bytes, length: p.length };
}

function flagBits(letters: string, field: string): number {
  let bits = 0;
  for (const c of letters) {
    const bit = TCP_FLAG_LETTERS.indexOf(c);
    if (bit < 0) throw new PluginConfigError(field, `"${c}" is not a TCP flag: use F S R P A U E C (FIN SYN RST PSH ACK URG ECE CWR)`);
    bits |= 1 << bit;
  }
  return bits;
}

/**
 * "S/SA": the flags before the slash must be set, those after it are looked at (the rest
 * may be anything), as in nftables' `tcp flags & (syn|ack) == syn`. "S" alone is "S/S".
 */
function tcpFlags(v: unknown, field: string): { mask: number; value: number } {
  const m = typeof v === 'string' ? /^([A-Z]*)(?:\/([A-Z]+))?$/.exec(v) : null;
  if (m === null) throw new PluginConfigError(field, `must be "SET/MASK" in letters F S R P A U E C, like "S/SA" (SYN set, ACK clear), got ${JSON.stringify(v)}`);
  const value = flagBits(m[1], field);
  const mask = m[2] === undefined ? value : flagBits(m[2], field);
  if ((value & ~mask) !== 0) throw new PluginConfigError(field, `a flag that must be set is missing after the slash: it could never match`);
  if (mask === 0) throw new PluginConfigError(field, 'names no flag');
  return { mask, value };
}

function portName(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new PluginConfigError(field, `must be a port name, got ${JSON.stringify(v)}`);
  return v;
}

function parseRule(raw: unknown, at: string, index: number, policerNames: readonly string[], allTracked: boolean): AclEntry {
  if (!isObject(raw)) throw new PluginConfigError(at, 'must be an object with an "action"');
  const unknown = Object.keys(raw).find((k) => !RULE_KEYS.includes(k));
  if (unknown !== undefined) throw new PluginConfigError(`${at}.${unknown}`, `unknown key (a rule has ${RULE_KEYS.join(', ')})`);
  if (raw.action === undefined) throw new PluginConfigError(`${at}.action`, 'is required: "permit", "deny" or "reject"');
  const action = typeof raw.action === 'string' ? ACTIONS[raw.action] : undefined;
  if (action === undefined) throw new PluginConfigError(`${at}.action`, `must be "permit", "deny" or "reject", got ${JSON.stringify(raw.action)}`);
  const match: { -readonly [K in keyof AclRule]: AclRule[K] } = {};
  if (raw.protocol !== undefined) {
    const p = typeof raw.protocol === 'string' ? PROTOCOLS[raw.protocol] : raw.protocol;
    if (p === undefined) throw new PluginConfigError(`${at}.protocol`, `must be ${Object.keys(PROTOCOLS).map((k) => `"${k}"`).join(', ')} or a number from 0 to 255, got ${JSON.stringify(raw.protocol)}`);
    match.protocol = integer(p, `${at}.protocol`, 0, 255);
  }
  if (raw.src !== undefined) match.src = prefix(raw.src, `${at}.src`);
  if (raw.dst !== undefined) match.dst = prefix(raw.dst, `${at}.dst`);
  if (raw.srcPort !== undefined) match.srcPort = valueRange(raw.srcPort, `${at}.srcPort`, 0xffff);
  if (raw.dstPort !== undefined) match.dstPort = valueRange(raw.dstPort, `${at}.dstPort`, 0xffff);
  if (raw.icmpType !== undefined) match.icmpType = valueRange(raw.icmpType, `${at}.icmpType`, 255);
  if (raw.icmpCode !== undefined) match.icmpCode = valueRange(raw.icmpCode, `${at}.icmpCode`, 255);
  if (raw.tcpFlags !== undefined) match.tcpFlags = tcpFlags(raw.tcpFlags, `${at}.tcpFlags`);
  const inPort = raw.inPort === undefined ? null : portName(raw.inPort, `${at}.inPort`);
  const outPort = raw.outPort === undefined ? null : portName(raw.outPort, `${at}.outPort`);
  try {
    // The classifier refuses what could never match (ports with ICMP, a v4 source with a
    // v6 destination); port indices stand in for the names, resolved later.
    checkRule({ ...match, ...(inPort === null ? {} : { inPort: 0 }), ...(outPort === null ? {} : { outPort: 0 }) }, index);
  } catch (err) {
    if (!(err instanceof ClassifierError)) throw err;
    const key = /^rules\[\d+\]\.(\w+)/.exec(err.field)?.[1];
    throw new PluginConfigError(key === undefined ? at : `${at}.${key}`, err.message.slice(err.field.length + 2));
  }
  let tracked = false;
  if (raw.stateful !== undefined) {
    tracked = boolean(raw.stateful, `${at}.stateful`);
    if (tracked && action !== PERMIT) throw new PluginConfigError(`${at}.stateful`, 'only a "permit" rule lets a connection in: a stateful deny or reject means nothing');
  }
  let mark = 0;
  if (raw.policer !== undefined) {
    const place = typeof raw.policer === 'string' ? policerNames.indexOf(raw.policer) : -1;
    if (place < 0) {
      const known = policerNames.length === 0 ? 'there are no "policers"' : `the "policers" are ${policerNames.map((n) => JSON.stringify(n)).join(', ')}`;
      throw new PluginConfigError(`${at}.policer`, `${JSON.stringify(raw.policer)} is not a policer: ${known}`);
    }
    if (action !== PERMIT) throw new PluginConfigError(`${at}.policer`, 'only packets a "permit" rule lets through are policed');
    mark = place + 1;
  }
  return { action, match, inPort, outPort, tracked: action === PERMIT && (tracked || allTracked), mark, source: { ...raw } };
}

function parseConntrack(raw: unknown): ConntrackConfig {
  if (raw === undefined) return structuredClone(CONNTRACK_DEFAULTS);
  if (!isObject(raw)) throw new PluginConfigError('conntrack', 'must be an object: { maxFlows, maxFlowsPerPort, timeouts }');
  const unknown = Object.keys(raw).find((k) => k !== 'maxFlows' && k !== 'maxFlowsPerPort' && k !== 'timeouts');
  if (unknown !== undefined) throw new PluginConfigError(`conntrack.${unknown}`, 'unknown key (conntrack has maxFlows, maxFlowsPerPort and timeouts)');
  const maxFlows = raw.maxFlows === undefined ? CONNTRACK_DEFAULTS.maxFlows : integer(raw.maxFlows, 'conntrack.maxFlows', MIN_FLOWS, MAX_FLOWS_LIMIT);
  const maxFlowsPerPort = raw.maxFlowsPerPort === undefined ? Math.ceil(maxFlows / 2) : integer(raw.maxFlowsPerPort, 'conntrack.maxFlowsPerPort', 1, MAX_FLOWS_LIMIT);
  const timeouts = { ...CONNTRACK_DEFAULTS.timeouts };
  if (raw.timeouts !== undefined) {
    if (!isObject(raw.timeouts)) throw new PluginConfigError('conntrack.timeouts', `must be an object of seconds by kind: ${TIMEOUT_KEYS.join(', ')}`);
    for (const [k, v] of Object.entries(raw.timeouts)) {
      if (!(TIMEOUT_KEYS as readonly string[]).includes(k)) throw new PluginConfigError(`conntrack.timeouts.${k}`, `unknown key (the timeouts are ${TIMEOUT_KEYS.join(', ')})`);
      timeouts[k as (typeof TIMEOUT_KEYS)[number]] = integer(v, `conntrack.timeouts.${k}`, 1, MAX_TIMEOUT);
    }
  }
  return { maxFlows, maxFlowsPerPort, timeouts };
}

function parseReject(raw: unknown): RejectLimit {
  if (raw === undefined) return { ...REJECT_DEFAULTS };
  if (!isObject(raw)) throw new PluginConfigError('reject', 'must be an object: { rate, burst }');
  const unknown = Object.keys(raw).find((k) => k !== 'rate' && k !== 'burst');
  if (unknown !== undefined) throw new PluginConfigError(`reject.${unknown}`, 'unknown key (reject has rate and burst)');
  return {
    rate: raw.rate === undefined ? REJECT_DEFAULTS.rate : integer(raw.rate, 'reject.rate', 0, 1_000_000),
    burst: raw.burst === undefined ? REJECT_DEFAULTS.burst : integer(raw.burst, 'reject.burst', 1, 1_000_000),
  };
}

/** The plugin's parseConfig: the whole config, validated, defaults filled. */
export function parseAclConfig(raw: Record<string, unknown>): AclConfig {
  const unknown = Object.keys(raw).find((k) => !PLUGIN_KEYS.includes(k));
  if (unknown !== undefined) throw new PluginConfigError(unknown, `unknown key (the acl plugin takes ${PLUGIN_KEYS.filter((k) => k !== 'policerNames').join(', ')})`);
  const policerNames = raw.policerNames === undefined ? [] : raw.policerNames;
  if (!Array.isArray(policerNames) || !policerNames.every((n) => typeof n === 'string')) throw new PluginConfigError('policerNames', 'must be the names of the "policers"');
  const allTracked = raw.stateful === undefined ? false : boolean(raw.stateful, 'stateful');
  const list = raw.acl ?? [];
  if (!Array.isArray(list)) throw new PluginConfigError('acl', 'must be an array of rules, the first match deciding');
  const rules = list.map((r, i) => parseRule(r, `acl[${i}]`, i, policerNames, allTracked));
  let defaultAction = PERMIT;
  if (raw.aclDefault !== undefined) {
    const a = typeof raw.aclDefault === 'string' ? ACTIONS[raw.aclDefault] : undefined;
    if (a === undefined) throw new PluginConfigError('aclDefault', `must be "permit", "deny" or "reject", got ${JSON.stringify(raw.aclDefault)}`);
    defaultAction = a;
  }
  return {
    rules,
    defaultAction,
    tracking: rules.some((r) => r.tracked),
    conntrack: parseConntrack(raw.conntrack),
    reject: parseReject(raw.reject),
    policerNames: [...policerNames],
  };
}

/** The classifier's rules with port names resolved to indices; throws PluginConfigError for a name that is no port. */
export function rulesFor(config: AclConfig, ports: readonly PortInfo[]): AclRule[] {
  const index = (name: string | null, field: string): number | undefined => {
    if (name === null) return undefined;
    const port = ports.find((p) => p.name === name);
    if (port === undefined) throw new PluginConfigError(field, `no port is named ${JSON.stringify(name)} (the ports are ${ports.filter((p) => p.name !== '').map((p) => JSON.stringify(p.name)).join(', ')})`);
    return port.index;
  };
  return config.rules.map((r, i) => {
    const inPort = index(r.inPort, `acl[${i}].inPort`);
    const outPort = index(r.outPort, `acl[${i}].outPort`);
    return { ...r.match, ...(inPort === undefined ? {} : { inPort }), ...(outPort === undefined ? {} : { outPort }) };
  });
}
