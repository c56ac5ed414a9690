// The ratelimit stage's config: the file's top-level "policers", checked field by field and
// turned into numbers the data path uses as they are (rates in bit/s or packet/s, bursts in
// bytes or packets, an action code per colour, a colour per DSCP). Runs in the control plane.
import { parsePrefix, PluginConfigError, read32 } from '../../src/pipeline/api.ts';
import { POLICER_LIMITS, PolicerConfigError, validatePolicer, type PolicerConfig } from './policer.ts';

export const ACTION_PASS = 0;
export const ACTION_DROP = 1;
export const ACTION_REMARK = 2;

/** The most policers a config may define (ACL rules name them; each is one shared record). */
export const MAX_POLICERS = 4096;
/** The most per-address attachments in all: each is a table of buckets of its own. */
export const MAX_ADDRESS_TABLES = 64;
export const ADDRESS_TABLE_DEFAULT = 1024;
/** A power of 2 of at least one probe window (address-table.ts WINDOW) */
export const ADDRESS_TABLE_MIN = 16;
export const ADDRESS_TABLE_MAX = 65536;
/** The largest frame a burst size must hold (Ethernet 1500 + header + one VLAN tag, no FCS). */
export const LARGEST_FRAME = 1518;
/** Default bursts: what the rate earns in 250 ms (Cisco IOS police: Bc = CIR/32 bytes). */
const DEFAULT_BURST_SECONDS = 0.25;

export interface PortAttachment {
  kind: 'inPort' | 'outPort';
  port: string;
  /** where it is in the file, for errors found later (an unknown port name) */
  field: string;
}

export interface AddressAttachment {
  kind: 'perSource' | 'perDestination';
  family: 4 | 6;
  /** the prefix as 4 big-endian words (IPv4: one word, in [3]; the others 0) and its mask */
  network: number[];
  mask: number[];
  prefix: string;
  /** only packets that came in (inPort) or go out (outPort) of this port, or null */
  inPort: string | null;
  outPort: string | null;
  maxAddresses: number;
  /** seconds without traffic after which an address's bucket may go to another address */
  idleTimeout: number;
  field: string;
}

export type Attachment = PortAttachment | AddressAttachment;

export function isPerAddress(a: Attachment): a is AddressAttachment {
  return a.kind === 'perSource' || a.kind === 'perDestination';
}

export interface PolicerSpec {
  name: string;
  meter: PolicerConfig;
  colorAware: boolean;
  /** by DSCP (64 entries): the colour a packet arrives with, when colorAware */
  colorOf: number[];
  /** by colour (green, yellow, red): ACTION_* */
  actions: number[];
  /** by colour: the DSCP to write when the action is ACTION_REMARK, else 0 */
  remark: number[];
  apply: Attachment[];
  /** the policer as the config wrote it (for listings) */
  source: Record<string, unknown>;
}

export interface RateLimitConfig {
  policers: PolicerSpec[];
}

type Obj = Record<string, unknown>;

// ---- DSCP ----------------------------------------------------------------------------------

/**
 * DSCP names as routers print them: class selectors (RFC 2474, 4.2.2), AF (RFC 2597, 6), EF
 * (RFC 3246), VOICE-ADMIT (RFC 5865), LE (RFC 8622).
 */
export const DSCP_NAMES: Readonly<Record<string, number>> = (() => {
  const names: Record<string, number> = { default: 0, be: 0, ef: 46, va: 44, le: 1 };
  for (let c = 0; c < 8; c++) names[`cs${c}`] = c << 3;
  for (let c = 1; c <= 4; c++) for (let d = 1; d <= 3; d++) names[`af${c}${d}`] = (c << 3) | (d << 1);
  return names;
})();

/**
 * RFC 2597, 2: "Within an AF class IP packets are marked ... with one of three possible drop
 * precedence values": AFx1 green, AFx2 yellow, AFx3 red; every other DSCP green.
 */
export const AF_COLOURS = { yellow: [12, 20, 28, 36], red: [14, 22, 30, 38] } as const;

function dscp(value: unknown, field: string): number {
  if (typeof value === 'string' && Object.hasOwn(DSCP_NAMES, value.toLowerCase())) return DSCP_NAMES[value.toLowerCase()];
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 63) return value;
  throw new PluginConfigError(field, `must be a DSCP: 0 to 63, or a name such as "af12", "cs1", "ef"; got ${JSON.stringify(value)}`);
}

// ---- rates and sizes -------------------------------------------------------------------------

const NUMBER_WITH_UNIT = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/;

/** Rates as tc writes them (tc-police(8), "RATES"): decimal prefixes, binary with "i". */
const BIT_RATES: Readonly<Record<string, number>> = {
  bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12,
  kibit: 2 ** 10, mibit: 2 ** 20, gibit: 2 ** 30, tibit: 2 ** 40,
};
const PACKET_RATES: Readonly<Record<string, number>> = { pps: 1, kpps: 1e3, mpps: 1e6 };
/** Sizes as tc writes them (tc(8), "SIZES"): k, m and g are 1024-based there too. */
const SIZES: Readonly<Record<string, number>> = {
  '': 1, b: 1, k: 2 ** 10, kb: 2 ** 10, m: 2 ** 20, mb: 2 ** 20, g: 2 ** 30, gb: 2 ** 30,
  kbit: 2 ** 10 / 8, mbit: 2 ** 20 / 8, gbit: 2 ** 30 / 8,
};

export type RateUnit = 'bps' | 'pps';

/** A rate: a number in `unit`, or "50mbit" (bit/s) / "10kpps" (packet/s). Returns [value, unit]. */
export function parseRate(value: unknown, field: string): [number, RateUnit | null] {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 1) throw new PluginConfigError(field, `must be a rate of at least 1, got ${value}`);
    return [Math.round(value), null];
  }
  const m = typeof value === 'string' ? NUMBER_WITH_UNIT.exec(value) : null;
  if (m === null) throw new PluginConfigError(field, `must be a rate such as "50mbit", "1gbit", "10kpps", or a number (see "unit"); got ${JSON.stringify(value)}`);
  const unit = m[2].toLowerCase();
  let scale = BIT_RATES[unit];
  let kind: RateUnit = 'bps';
  if (scale === undefined && unit in PACKET_RATES) {
    scale = PACKET_RATES[unit];
    kind = 'pps';
  }
  if (unit === '') return [Math.max(1, Math.round(Number(m[1]))), null];
  if (/^[kmgt]?i?bps$/.test(unit)) {
    // tc reads "mbps" as megabytes per second; most people mean megabits: neither is guessed.
    throw new PluginConfigError(field, `"${value}" is ambiguous (tc reads "${unit}" as bytes per second): write "${m[1]}${unit.replace('bps', 'bit')}" for bits per second`);
  }
  if (scale === undefined) throw new PluginConfigError(field, `unknown unit "${m[2]}" in ${JSON.stringify(value)}: bit, kbit, mbit, gbit, tbit (or kibit ...), or pps, kpps, mpps`);
  const rate = Math.round(Number(m[1]) * scale);
  if (rate < 1) throw new PluginConfigError(field, `must be at least 1 bit/s or 1 packet/s, got ${JSON.stringify(value)}`);
  return [rate, kind];
}

/** A burst size: bytes ("64kb", "1500b", "1m", a number) for a bit-rate policer, packets (a number) for a packet-rate one. */
export function parseSize(value: unknown, unit: RateUnit, field: string): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new PluginConfigError(field, `must be a whole number of ${unit === 'bps' ? 'bytes' : 'packets'}, got ${value}`);
    return value;
  }
  if (unit === 'pps') throw new PluginConfigError(field, `a policer in packets per second takes its bursts in packets: give a number, got ${JSON.stringify(value)}`);
  const m = typeof value === 'string' ? NUMBER_WITH_UNIT.exec(value) : null;
  const scale = m === null ? undefined : SIZES[m[2].toLowerCase()];
  if (m === null || scale === undefined) throw new PluginConfigError(field, `must be a size such as "64kb", "1500b", "1m" (k, m, g are 1024-based, as in tc), or a number of bytes; got ${JSON.stringify(value)}`);
  const bytes = Number(m[1]) * scale;
  if (!Number.isInteger(bytes)) throw new PluginConfigError(field, `${JSON.stringify(value)} is not a whole number of bytes (${bytes})`);
  return bytes;
}

// ---- the policers ------------------------------------------------------------------------------

const POLICER_KEYS = ['name', 'type', 'unit', 'cir', 'cbs', 'ebs', 'pir', 'pbs', 'colorAware', 'colorMap', 'actions', 'apply'];
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

function object(value: unknown, field: string, keys: readonly string[]): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PluginConfigError(field, `must be an object, got ${JSON.stringify(value)}`);
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) throw new PluginConfigError(`${field}.${key}`, `unknown key (${field.replace(/\[\d+\]/g, '[]')} takes ${keys.join(', ')})`);
  }
  return value as Obj;
}

/** The plugin's config: {policers} from the top level of the file, and nothing else. */
export function parseRateLimitConfig(raw: Obj): RateLimitConfig {
  for (const key of Object.keys(raw)) {
    if (key !== 'policers') throw new PluginConfigError(key, 'unknown key (ratelimit takes only the top-level "policers")');
  }
  const list = raw.policers ?? [];
  if (!Array.isArray(list)) throw new PluginConfigError('policers', 'must be an array of policers');
  if (list.length > MAX_POLICERS) throw new PluginConfigError('policers', `at most ${MAX_POLICERS} policers`);
  const policers = list.map((p, i) => parsePolicer(p, `policers[${i}]`));
  policers.forEach((p, i) => {
    const j = policers.findIndex((q) => q.name === p.name);
    if (j !== i) throw new PluginConfigError(`policers[${i}].name`, `"${p.name}" is already the name of policers[${j}]`);
  });
  const tables = policers.flatMap((p) => p.apply.filter(isPerAddress));
  if (tables.length > MAX_ADDRESS_TABLES) throw new PluginConfigError(tables[MAX_ADDRESS_TABLES].field, `at most ${MAX_ADDRESS_TABLES} perSource/perDestination attachments in all`);
  return { policers };
}

function parsePolicer(raw: unknown, field: string): PolicerSpec {
  const p = object(raw, field, POLICER_KEYS);
  if (typeof p.name !== 'string' || !NAME.test(p.name)) throw new PluginConfigError(`${field}.name`, 'is required: 1 to 64 of A-Z, a-z, 0-9, "_", ".", ":", "-", starting with a letter or digit');
  const type = p.type === undefined ? 'srtcm' : typeof p.type === 'string' ? p.type.toLowerCase() : '';
  if (type !== 'srtcm' && type !== 'trtcm') throw new PluginConfigError(`${field}.type`, `must be "srTCM" (RFC 2697) or "trTCM" (RFC 2698), got ${JSON.stringify(p.type)}`);
  if (type === 'srtcm' && (p.pir !== undefined || p.pbs !== undefined)) throw new PluginConfigError(`${field}.${p.pir !== undefined ? 'pir' : 'pbs'}`, 'belongs to a trTCM policer ("type": "trTCM"); srTCM has cir, cbs, ebs');
  if (type === 'trtcm' && p.ebs !== undefined) throw new PluginConfigError(`${field}.ebs`, 'belongs to an srTCM policer; trTCM has cir, cbs, pir, pbs');

  if (p.unit !== undefined && p.unit !== 'bps' && p.unit !== 'pps') throw new PluginConfigError(`${field}.unit`, `must be "bps" (bits per second, bursts in bytes) or "pps" (packets per second, bursts in packets), got ${JSON.stringify(p.unit)}`);
  if (p.cir === undefined) throw new PluginConfigError(`${field}.cir`, 'is required: the committed rate, e.g. "50mbit" or "10kpps"');
  const [cir, cirUnit] = parseRate(p.cir, `${field}.cir`);
  const unit: RateUnit = (p.unit as RateUnit | undefined) ?? cirUnit ?? 'bps';
  const agree = (u: RateUnit | null, at: string) => {
    if (u !== null && u !== unit) throw new PluginConfigError(at, `is in ${u === 'pps' ? 'packets' : 'bits'} per second, but the policer's unit is "${unit}"`);
  };
  agree(cirUnit, `${field}.cir`);
  let pir = 0;
  if (type === 'trtcm') {
    if (p.pir === undefined) throw new PluginConfigError(`${field}.pir`, 'is required for trTCM: the peak rate, at least cir');
    const [rate, pirUnit] = parseRate(p.pir, `${field}.pir`);
    agree(pirUnit, `${field}.pir`);
    pir = rate;
  }
  const defaultBurst = (rate: number) =>
    unit === 'bps' ? Math.min(POLICER_LIMITS.maxBurstBytes, Math.max(LARGEST_FRAME, Math.ceil((rate / 8) * DEFAULT_BURST_SECONDS))) : Math.min(POLICER_LIMITS.maxBurstPackets, Math.max(1, Math.ceil(rate * DEFAULT_BURST_SECONDS)));
  const cbs = p.cbs === undefined ? defaultBurst(cir) : parseSize(p.cbs, unit, `${field}.cbs`);
  const meterRaw =
    type === 'srtcm'
      ? { meter: type, unit: unit === 'bps' ? 'bytes' : 'packets', cir, cbs, ebs: p.ebs === undefined ? 0 : parseSize(p.ebs, unit, `${field}.ebs`) }
      : { meter: type, unit: unit === 'bps' ? 'bytes' : 'packets', cir, cbs, pir, pbs: p.pbs === undefined ? defaultBurst(pir) : parseSize(p.pbs, unit, `${field}.pbs`) };
  let meter: PolicerConfig;
  try {
    meter = validatePolicer(meterRaw, LARGEST_FRAME);
  } catch (err) {
    if (!(err instanceof PolicerConfigError)) throw err;
    const key = err.field === 'meter' ? 'type' : err.field === 'policer' ? '' : err.field;
    throw new PluginConfigError(key === '' ? field : `${field}.${key}`, err.message.slice(err.field.length + 2));
  }

  if (p.colorAware !== undefined && typeof p.colorAware !== 'boolean') throw new PluginConfigError(`${field}.colorAware`, 'must be true or false');
  const colorAware = p.colorAware === true;
  if (p.colorMap !== undefined && !colorAware) throw new PluginConfigError(`${field}.colorMap`, 'only a colour-aware policer ("colorAware": true) reads colours from the DSCP');
  const colorOf = parseColorMap(p.colorMap, `${field}.colorMap`);

  const a = p.actions === undefined ? {} : object(p.actions, `${field}.actions`, ['green', 'yellow', 'red']);
  const actions: number[] = [];
  const remark: number[] = [];
  (['green', 'yellow', 'red'] as const).forEach((colour, c) => {
    const [action, value] = parseAction(a[colour] ?? (colour === 'red' ? 'drop' : 'pass'), `${field}.actions.${colour}`);
    actions[c] = action;
    remark[c] = value;
  });

  if (p.apply !== undefined && !Array.isArray(p.apply)) throw new PluginConfigError(`${field}.apply`, 'must be an array of attachments such as {"inPort": "a"}');
  const apply = ((p.apply as unknown[] | undefined) ?? []).map((entry, j) => parseAttachment(entry, `${field}.apply[${j}]`, meter));
  apply.forEach((x, j) => {
    const k = apply.findIndex((y) => y.kind === x.kind && attachmentKey(y) === attachmentKey(x));
    if (k !== j) throw new PluginConfigError(x.field, `the same as ${field}.apply[${k}]`);
  });
  return { name: p.name, meter, colorAware, colorOf, actions, remark, apply, source: { ...p } };
}

function attachmentKey(a: Attachment): string {
  return isPerAddress(a) ? `${a.prefix} ${a.inPort} ${a.outPort}` : a.port;
}

function parseColorMap(raw: unknown, field: string): number[] {
  const m = raw === undefined ? AF_COLOURS : object(raw, field, ['yellow', 'red']);
  const colorOf = new Array<number>(64).fill(0);
  (['yellow', 'red'] as const).forEach((colour, k) => {
    const list = (m as Record<string, unknown>)[colour] ?? [];
    if (!Array.isArray(list)) throw new PluginConfigError(`${field}.${colour}`, 'must be an array of DSCPs (numbers or names such as "af12")');
    list.forEach((v, i) => {
      const d = dscp(v, `${field}.${colour}[${i}]`);
      if (colorOf[d] !== 0) throw new PluginConfigError(`${field}.${colour}[${i}]`, `DSCP ${d} is already listed`);
      colorOf[d] = k + 1;
    });
  });
  return colorOf;
}

function parseAction(raw: unknown, field: string): [number, number] {
  if (raw === 'pass') return [ACTION_PASS, 0];
  if (raw === 'drop') return [ACTION_DROP, 0];
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
    const r = object(raw, field, ['remark']);
    if (r.remark === undefined) throw new PluginConfigError(`${field}.remark`, 'is required: the DSCP to write');
    return [ACTION_REMARK, dscp(r.remark, `${field}.remark`)];
  }
  throw new PluginConfigError(field, `must be "pass", "drop" or {"remark": DSCP}, got ${JSON.stringify(raw)}`);
}

function portName(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new PluginConfigError(field, `must be the name of a port, got ${JSON.stringify(value)}`);
  return value;
}

function parseAttachment(raw: unknown, field: string, meter: PolicerConfig): Attachment {
  const e = object(raw, field, ['inPort', 'outPort', 'perSource', 'perDestination', 'maxAddresses', 'idleTimeout']);
  const perAddress = e.perSource !== undefined || e.perDestination !== undefined;
  if (e.perSource !== undefined && e.perDestination !== undefined) throw new PluginConfigError(`${field}.perDestination`, 'one attachment is perSource or perDestination, not both');
  if (e.inPort !== undefined && e.outPort !== undefined) throw new PluginConfigError(`${field}.outPort`, 'one attachment is on an inPort or an outPort, not both (give two attachments)');
  if (!perAddress) {
    if (e.maxAddresses !== undefined || e.idleTimeout !== undefined) throw new PluginConfigError(`${field}.${e.maxAddresses !== undefined ? 'maxAddresses' : 'idleTimeout'}`, 'belongs to a perSource or perDestination attachment');
    if (e.inPort !== undefined) return { kind: 'inPort', port: portName(e.inPort, `${field}.inPort`), field: `${field}.inPort` };
    if (e.outPort !== undefined) return { kind: 'outPort', port: portName(e.outPort, `${field}.outPort`), field: `${field}.outPort` };
    throw new PluginConfigError(field, 'must name where the policer applies: {"inPort": NAME}, {"outPort": NAME}, {"perSource": PREFIX} or {"perDestination": PREFIX}');
  }
  const kind = e.perSource !== undefined ? 'perSource' : 'perDestination';
  let prefix;
  try {
    prefix = parsePrefix(e[kind]);
  } catch (err) {
    throw new PluginConfigError(`${field}.${kind}`, (err as Error).message);
  }
  const network = [0, 0, 0, 0];
  const mask = [0, 0, 0, 0];
  const words = prefix.family === 4 ? 1 : 4;
  for (let w = 0; w < words; w++) {
    const bits = Math.max(0, Math.min(32, prefix.length - w * 32));
    const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    const b = prefix.bytes;
    const word = read32(b, w * 4);
    network[4 - words + w] = (word & m) >>> 0;
    mask[4 - words + w] = m;
  }
  const maxAddresses = e.maxAddresses ?? ADDRESS_TABLE_DEFAULT;
  if (typeof maxAddresses !== 'number' || !Number.isInteger(maxAddresses) || maxAddresses < ADDRESS_TABLE_MIN || maxAddresses > ADDRESS_TABLE_MAX || (maxAddresses & (maxAddresses - 1)) !== 0) {
    throw new PluginConfigError(`${field}.maxAddresses`, `must be a power of 2 from ${ADDRESS_TABLE_MIN} to ${ADDRESS_TABLE_MAX}, got ${JSON.stringify(maxAddresses)}`);
  }
  const idleTimeout = e.idleTimeout ?? refillSeconds(meter);
  if (typeof idleTimeout !== 'number' || !Number.isInteger(idleTimeout) || idleTimeout < 1 || idleTimeout > 86400) {
    throw new PluginConfigError(`${field}.idleTimeout`, `must be whole seconds from 1 to 86400, got ${JSON.stringify(idleTimeout)}`);
  }
  return {
    kind,
    family: prefix.family,
    network,
    mask,
    prefix: prefix.text,
    inPort: e.inPort === undefined ? null : portName(e.inPort, `${field}.inPort`),
    outPort: e.outPort === undefined ? null : portName(e.outPort, `${field}.outPort`),
    maxAddresses,
    idleTimeout,
    field: `${field}.${kind}`,
  };
}

/**
 * More bytes than any packet metered: a super-frame's wire length, 64 KiB and the headers of
 * its at most 64 segments.
 */
const LONGEST_PACKET_BYTES = 128 * 1024;

/**
 * Seconds an idle bucket takes to fill from the lowest it goes (empty, or owing what a packet
 * longer than the bucket took past it: policer.ts): after that long without traffic an
 * address's buckets are full, the same as a new address's, so handing them over changes no
 * verdict.
 */
export function refillSeconds(meter: PolicerConfig): number {
  const perSecond = meter.unit === 'bytes' ? 8 : 1;
  // Tokens a bucket of `size` may need to be full again.
  const deepest = (size: number) => (meter.unit === 'bytes' && size > 0 ? Math.max(size, LONGEST_PACKET_BYTES) : size);
  const seconds =
    meter.meter === 'srtcm'
      ? ((deepest(meter.cbs) + deepest(meter.ebs)) * perSecond) / meter.cir
      : Math.max((deepest(meter.cbs) * perSecond) / meter.cir, (deepest(meter.pbs) * perSecond) / meter.pir);
  return Math.min(86400, Math.max(1, Math.ceil(seconds)));
}
