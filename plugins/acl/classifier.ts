// The ACL packet classifier: compile() turns an ordered rule list into lookup tables in one
// shared buffer; a Classifier over that memory answers, for each packet of a burst, the
// index of the first rule that matches it, or -1.
//
// Algorithm: bit-vector intersection (T. V. Lakshman and D. Stiliadis, "High-Speed
// Policy-based Packet Forwarding Using Efficient Multi-dimensional Range Matching", ACM
// SIGCOMM 1998), with aggregated bit vectors after F. Baboescu and G. Varghese, "Scalable
// Packet Classification", ACM SIGCOMM 2001.
// - Each field is looked up on its own and yields a row with one bit per rule, set where the
//   rule accepts that value of the field. The AND of the rows of all fields holds the rules
//   that match; its lowest set bit is the first match. Words of the rows are ANDed lowest
//   first, field by field, stopping at the first zero: a packet that matches early reads a
//   few words.
// - For long lists a row starts with an aggregate, a bit per word of the row, which names
//   the words that can hold a match (see compile() for which rules count in it): the scan
//   reads only those, so the words read per packet do not grow with N/32.
// - A field's lookup: a table indexed by the value for the fields with at most 2^16 values
//   (version and protocol, ports in two levels, ICMP type and code, TCP flags, in and out
//   port). For addresses the rows are per distinct rule prefix: prefixes nest, so the
//   longest rule prefix holding an address decides every rule prefix that holds it. The
//   address finds its interval by a binary search among the interval starts, narrowed first
//   by a table indexed by the top bits.
// Per packet: O(fields × (log N + aggregate words + candidate words)), and no allocation.
// Why this one: per-packet work is a fixed sequence of table reads and ANDs with no depth
// that depends on the rule mix, and build time and memory are bounded in advance (at most
// 2N + 1 distinct rows per field, N/32 words each), so a bad rule list cannot blow up.
// Tuple space search (V. Srinivasan, S. Suri, G. Varghese, "Packet Classification using
// Tuple Space Search", SIGCOMM 1999) pays one hash probe per distinct tuple of prefix
// lengths: prefixes of every length and port ranges (expanded into prefixes) make hundreds
// of tuples at 1000 rules. Decision trees (HiCuts, P. Gupta and N. McKeown, Hot
// Interconnects 1999; HyperCuts, S. Singh et al., SIGCOMM 2003) copy each wildcard or short
// prefix into every cut it spans, so memory and build time depend on the rule mix; EffiCuts
// (B. Vamanan et al., SIGCOMM 2010) bounds that with several trees, all searched per packet.
// A linear scan over flat arrays was measured too, and was not faster even at 10 rules (40
// against 38 ns per packet on the random mix, 46 against 33 on the ACL mix), so there is no
// scan mode for short lists.
import { sharedBuffer } from '../../src/pipeline/api.ts';


const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const PROTO_ICMPV6 = 58;
const PROTO_SCTP = 132;
const PORT_PROTOCOLS = [PROTO_TCP, PROTO_UDP, PROTO_SCTP];

/**
 * Most rules one classifier holds. A field has at most 2N + 1 distinct rows of N bits, so
 * memory grows as N^2 in the worst case (every rule with its own port range: 16 MiB per
 * field at 8192 rules; the benchmark's mixes take 11 MiB in all), and class ids fit a
 * Uint16Array.
 */
export const MAX_RULES = 8192;
/**
 * Rows have no aggregate, and the words are ANDed in order until one is not zero, when there
 * are at most SCAN_WORDS words of rule bits (32 rules each), or when the aggregates would
 * name more than CANDIDATE_SHARE of the words anyway (many broad rules). Measured with the
 * benchmark's rule mixes at 300 and 1000 rules: the aggregates cost 10 to 25 ns per packet
 * more when most packets match in the first words, and save about 30 ns when they match late.
 */
const SCAN_WORDS = 8;
const CANDIDATE_SHARE = 0.5;
/** Packets classified per pass; a longer burst is taken 32 at a time. */
export const BURST = 32;

/**
 * Key of the (IP version, protocol) field: VERSION_BASE[version] + protocol. IPv4 protocol p
 * is p, IPv6 is 256 + p, and 512 to 767 all stand for frames that are not IP, so that the
 * key is one table read and an add (NB: a branch on the version here mispredicts on mixed
 * traffic). Fragments that are not the first of their packet (version | FRAGMENT in the keys)
 * have keys of their own, 768 + p for IPv4 and 1024 + p for IPv6: they carry no ports, ICMP
 * header or flags, so only rules that name none of those accept them.
 */
const PROTO_KEY_IPV6 = 256;
const PROTO_KEY_NOT_IP = 512;
const PROTO_KEY_FRAGMENT4 = 768;
const PROTO_KEY_FRAGMENT6 = 1024;
const PROTO_KEYS = 1280;
/** ipVersion of a fragment that is not its packet's first: 4 | FRAGMENT or 6 | FRAGMENT */
export const FRAGMENT = 0x10;
const VERSION_BASE = Uint16Array.from({ length: 256 }, (_, v) =>
  v === 4 ? 0 : v === 6 ? PROTO_KEY_IPV6 : v === (4 | FRAGMENT) ? PROTO_KEY_FRAGMENT4 : v === (6 | FRAGMENT) ? PROTO_KEY_FRAGMENT6 : PROTO_KEY_NOT_IP,
);

/** An IPv4 prefix: the address as a u32 (10.0.0.0 is 0x0a000000) and its length, 0 to 32. */
export interface Prefix4 {
  readonly addr: number;
  readonly length: number;
}
/** An IPv6 prefix: the address as 16 bytes in network order and its length, 0 to 128. */
export interface Prefix6 {
  readonly addr: Uint8Array | readonly number[];
  readonly length: number;
}
/** An inclusive range [lo, hi]. */
export type ValueRange = readonly [lo: number, hi: number];

/**
 * One ACL rule; every field is optional, and an absent field accepts any value. Host bits
 * of a prefix are ignored.
 * - `ipVersion` is implied by the prefixes; a rule that names no IP field (version,
 *   prefixes, protocol, ports, ICMP, TCP flags) also matches frames that are not IP.
 * - `srcPort`/`dstPort` match TCP, UDP and SCTP packets only; `icmpType`/`icmpCode` match
 *   ICMP (protocol 1 over IPv4) and ICMPv6 (protocol 58 over IPv6) only; `tcpFlags` matches
 *   TCP only, when (flags & mask) === value. A rule whose fields exclude each other (ports
 *   and ICMP, a protocol without ports given ports) is refused: it could never match.
 * - `inPort`/`outPort` are port indices, 0 to 32767.
 */
export interface AclRule {
  readonly ipVersion?: 4 | 6;
  readonly src?: Prefix4 | Prefix6;
  readonly dst?: Prefix4 | Prefix6;
  readonly protocol?: number;
  readonly srcPort?: ValueRange;
  readonly dstPort?: ValueRange;
  readonly icmpType?: number | ValueRange;
  readonly icmpCode?: number | ValueRange;
  readonly tcpFlags?: { readonly mask: number; readonly value: number };
  readonly inPort?: number;
  readonly outPort?: number;
}

const RULE_KEYS = new Set(['ipVersion', 'src', 'dst', 'protocol', 'srcPort', 'dstPort', 'icmpType', 'icmpCode', 'tcpFlags', 'inPort', 'outPort']);

/**
 * Parsed packet fields, struct-of-arrays, one entry per packet of a burst. Only the fields
 * that apply decide the answer: addresses of the packet's version, ports of TCP, UDP and
 * SCTP, ICMP type and code of ICMP and ICMPv6, flags of TCP; the others may hold anything.
 */
export interface FlowKeys {
  /**
   * 4 or 6, or 4 | FRAGMENT or 6 | FRAGMENT for a fragment that is not the first of its
   * packet (its port, ICMP and flag keys are not read); any other value: not IP (only rules
   * naming no IP field match)
   */
  readonly ipVersion: Uint8Array;
  /** IPv4 addresses as u32 (the 4 bytes read big-endian) */
  readonly src4: Uint32Array;
  readonly dst4: Uint32Array;
  /** IPv6 addresses, 4 words per packet at 4 * i: word j holds bytes 4j..4j+3 read big-endian */
  readonly src6: Uint32Array;
  readonly dst6: Uint32Array;
  /** IPv4 protocol or IPv6 next header (of the upper-layer header) */
  readonly protocol: Uint8Array;
  readonly srcPort: Uint16Array;
  readonly dstPort: Uint16Array;
  readonly icmpType: Uint8Array;
  readonly icmpCode: Uint8Array;
  /** the TCP header's flags byte (CWR ECE URG ACK PSH RST SYN FIN) */
  readonly tcpFlags: Uint8Array;
  /** port indices; -1 (or any index no rule names) matches only rules without the field */
  readonly inPort: Int16Array;
  readonly outPort: Int16Array;
}

/** Preallocated keys for `capacity` packets, for a PMD to fill once per burst. */
export function createFlowKeys(capacity = BURST): FlowKeys {
  return {
    ipVersion: new Uint8Array(capacity),
    src4: new Uint32Array(capacity),
    dst4: new Uint32Array(capacity),
    src6: new Uint32Array(4 * capacity),
    dst6: new Uint32Array(4 * capacity),
    protocol: new Uint8Array(capacity),
    srcPort: new Uint16Array(capacity),
    dstPort: new Uint16Array(capacity),
    icmpType: new Uint8Array(capacity),
    icmpCode: new Uint8Array(capacity),
    tcpFlags: new Uint8Array(capacity),
    inPort: new Int16Array(capacity),
    outPort: new Int16Array(capacity),
  };
}

/** A rule refused by compile(): `field` names it, as `rules[3].srcPort`. */
export class ClassifierError extends Error {
  readonly code = 'VR_ACL_RULE';
  readonly field: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'ClassifierError';
    this.field = field;
  }
}

/** Where an array lives in the compiled memory: byte offset and element count. */
export interface Section {
  readonly offset: number;
  readonly length: number;
}
/** A field looked up by value: `table` (Uint16) maps a value to its row, counted from `firstRow`. Empty: no rule names the field. */
export interface TableField {
  readonly firstRow: number;
  readonly table: Section;
}
/**
 * A port field, in two levels so that a few rules do not cost a 128 KiB table: `blockIndex`
 * (Uint16, 256 entries) maps the port's high byte to a block of `table` (Uint16, 256
 * entries per block, equal blocks shared), which the low byte indexes for the row.
 */
export interface PortField {
  readonly firstRow: number;
  readonly blockIndex: Section;
  readonly table: Section;
}
/** The address intervals of one IP version: sorted starts (Uint32, 4 words each for IPv6), the class of each (Uint16), and the top-bits index (Uint32). */
export interface IntervalIndex {
  readonly starts: Section;
  readonly classes: Section;
  readonly index: Section;
  /** the index is read at word0 >>> shift */
  readonly shift: number;
}
/** An address field; empty `v4.classes`: no rule names it. */
export interface AddressField {
  readonly firstRow: number;
  readonly v4: IntervalIndex;
  readonly v6: IntervalIndex;
}

/**
 * A compiled rule list: numbers, plain objects and one shared buffer, so it survives
 * structured cloning (postMessage, piscina) and every thread views the same memory.
 * Nothing in it changes after compile(): a new rule list is a new compile.
 */
export interface CompiledClassifier {
  readonly ruleCount: number;
  /** Uint32 words per row of rule bits: ceil(ruleCount / 32) */
  readonly words: number;
  /** aggregate words that open each row: ceil(words / 32), or 0 when the words are scanned in order (see SCAN_WORDS) */
  readonly aggregateWords: number;
  /** the fields some rule names, in the order their rows are ANDed (sparsest rows first) */
  readonly fieldOrder: readonly FieldName[];
  readonly memory: ArrayBufferLike;
  /** Uint32: every row of every field, each aggregateWords + words long */
  readonly rows: Section;
  /** keyed by version and protocol: IPv4 protocol p at p, IPv6 at 256 + p, not IP at 512 to 767 */
  readonly protocol: TableField;
  readonly src: AddressField;
  readonly dst: AddressField;
  readonly srcPort: PortField;
  readonly dstPort: PortField;
  readonly icmpType: TableField;
  readonly icmpCode: TableField;
  readonly tcpFlags: TableField;
  /** the last entry is for port indices beyond those the rules name */
  readonly inPort: TableField;
  readonly outPort: TableField;
}

// ---- compile: rule validation --------------------------------------------------------------

const V4 = 1;
const V6 = 2;
const NOT_IP = 4;

interface PrefixSpec {
  readonly bits: 32 | 128;
  readonly start: bigint;
  readonly length: number;
}

/** A rule as the builders want it: per field the values it accepts, or null for any. */
interface NormRule {
  readonly versions: number;
  readonly protocol: ValueRange[] | null;
  readonly src: PrefixSpec | null;
  readonly dst: PrefixSpec | null;
  readonly srcPort: ValueRange[] | null;
  readonly dstPort: ValueRange[] | null;
  readonly icmpType: ValueRange[] | null;
  readonly icmpCode: ValueRange[] | null;
  readonly tcpFlags: ValueRange[] | null;
  readonly inPort: ValueRange[] | null;
  readonly outPort: ValueRange[] | null;
}

function isInt(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

function checkInt(v: unknown, lo: number, hi: number, field: string): number {
  if (!isInt(v, lo, hi)) throw new ClassifierError(field, `must be an integer from ${lo} to ${hi}, got ${String(v)}`);
  return v;
}

function checkRange(v: unknown, max: number, field: string, single: boolean): ValueRange[] {
  if (single && typeof v === 'number') return [[checkInt(v, 0, max, field), v]];
  if (!Array.isArray(v) || v.length !== 2) throw new ClassifierError(field, `must be ${single ? 'a number or ' : ''}a range [lo, hi]`);
  const lo = checkInt(v[0], 0, max, `${field}[0]`);
  const hi = checkInt(v[1], 0, max, `${field}[1]`);
  if (lo > hi) throw new ClassifierError(field, `lo ${lo} is above hi ${hi}`);
  return [[lo, hi]];
}

function checkPrefix(p: unknown, field: string): PrefixSpec {
  if (typeof p !== 'object' || p === null) throw new ClassifierError(field, 'must be { addr, length }');
  const { addr, length } = p as { addr: unknown; length: unknown };
  if (typeof addr === 'number') {
    checkInt(addr, 0, 0xffffffff, `${field}.addr`);
    checkInt(length, 0, 32, `${field}.length`);
    return { bits: 32, start: BigInt(addr) & prefixMask(32, length as number), length: length as number };
  }
  if (!(addr instanceof Uint8Array || Array.isArray(addr)) || addr.length !== 16) {
    throw new ClassifierError(`${field}.addr`, 'must be an IPv4 address as a u32 or an IPv6 address as 16 bytes');
  }
  let value = 0n;
  for (let i = 0; i < 16; i++) value = (value << 8n) | BigInt(checkInt(addr[i], 0, 255, `${field}.addr[${i}]`));
  checkInt(length, 0, 128, `${field}.length`);
  return { bits: 128, start: value & prefixMask(128, length as number), length: length as number };
}

function prefixMask(bits: number, length: number): bigint {
  const all = (1n << BigInt(bits)) - 1n;
  return all ^ ((1n << BigInt(bits - length)) - 1n);
}

/** Sorted values as ranges of consecutive values. */
function toRanges(values: readonly number[]): ValueRange[] {
  const ranges: [number, number][] = [];
  for (const v of values) {
    const last = ranges[ranges.length - 1];
    if (last && v === last[1] + 1) last[1] = v;
    else ranges.push([v, v]);
  }
  return ranges;
}

function normalize(rule: AclRule, at: string): NormRule {
  if (typeof rule !== 'object' || rule === null) throw new ClassifierError(at, 'must be an object');
  for (const key of Object.keys(rule)) if (!RULE_KEYS.has(key)) throw new ClassifierError(`${at}.${key}`, 'unknown field');
  const r = rule as Record<string, unknown>;
  const has = (key: string) => r[key] !== undefined;

  let version = 0;
  if (has('ipVersion')) {
    if (r.ipVersion !== 4 && r.ipVersion !== 6) throw new ClassifierError(`${at}.ipVersion`, `must be 4 or 6, got ${String(r.ipVersion)}`);
    version = r.ipVersion;
  }
  const src = has('src') ? checkPrefix(r.src, `${at}.src`) : null;
  const dst = has('dst') ? checkPrefix(r.dst, `${at}.dst`) : null;
  for (const [p, name] of [[src, 'src'], [dst, 'dst']] as const) {
    if (p === null) continue;
    const v = p.bits === 32 ? 4 : 6;
    if (version !== 0 && version !== v) throw new ClassifierError(`${at}.${name}`, `an IPv${v} prefix in a rule for IPv${version}`);
    version = v;
  }
  const protocol = has('protocol') ? checkInt(r.protocol, 0, 255, `${at}.protocol`) : -1;
  const srcPort = has('srcPort') ? checkRange(r.srcPort, 0xffff, `${at}.srcPort`, false) : null;
  const dstPort = has('dstPort') ? checkRange(r.dstPort, 0xffff, `${at}.dstPort`, false) : null;
  const icmpType = has('icmpType') ? checkRange(r.icmpType, 255, `${at}.icmpType`, true) : null;
  const icmpCode = has('icmpCode') ? checkRange(r.icmpCode, 255, `${at}.icmpCode`, true) : null;
  let tcpFlags: ValueRange[] | null = null;
  if (has('tcpFlags')) {
    const f = r.tcpFlags as { mask?: unknown; value?: unknown } | null;
    if (typeof f !== 'object' || f === null) throw new ClassifierError(`${at}.tcpFlags`, 'must be { mask, value }');
    const mask = checkInt(f.mask, 0, 255, `${at}.tcpFlags.mask`);
    const value = checkInt(f.value, 0, 255, `${at}.tcpFlags.value`);
    if ((value & ~mask) !== 0) throw new ClassifierError(`${at}.tcpFlags.value`, `has bits outside the mask 0x${mask.toString(16)}: it could never match`);
    const values: number[] = [];
    for (let flags = 0; flags < 256; flags++) if ((flags & mask) === value) values.push(flags);
    tcpFlags = toRanges(values);
  }
  const inPort = has('inPort') ? checkInt(r.inPort, 0, 0x7fff, `${at}.inPort`) : -1;
  const outPort = has('outPort') ? checkInt(r.outPort, 0, 0x7fff, `${at}.outPort`) : -1;

  const ports = srcPort !== null || dstPort !== null;
  const icmp = icmpType !== null || icmpCode !== null;
  const icmpField = icmpType !== null ? `${at}.icmpType` : `${at}.icmpCode`;
  if (icmp && ports) throw new ClassifierError(icmpField, 'ICMP fields and ports exclude each other: the rule could never match');
  if (icmp && tcpFlags !== null) throw new ClassifierError(icmpField, 'ICMP fields and TCP flags exclude each other: the rule could never match');
  if (ports && protocol >= 0 && !PORT_PROTOCOLS.includes(protocol)) {
    throw new ClassifierError(`${at}.protocol`, `ports apply to TCP, UDP and SCTP only, not protocol ${protocol}: the rule could never match`);
  }
  if (tcpFlags !== null && protocol >= 0 && protocol !== PROTO_TCP) {
    throw new ClassifierError(`${at}.protocol`, `TCP flags apply to TCP only, not protocol ${protocol}: the rule could never match`);
  }

  // The (version, protocol) keys the rule accepts: the L4 fields narrow the protocols, so
  // the other fields can read the packet's values without asking what the protocol is.
  const anyIp = version !== 0 || protocol >= 0 || ports || icmp || tcpFlags !== null;
  const versions = version === 4 ? V4 : version === 6 ? V6 : anyIp ? V4 | V6 : V4 | V6 | NOT_IP;
  const keys: number[] = [];
  for (const v of [4, 6]) {
    if ((versions & (v === 4 ? V4 : V6)) === 0) continue;
    const icmpProtocol = v === 4 ? PROTO_ICMP : PROTO_ICMPV6;
    for (let p = 0; p < 256; p++) {
      if (protocol >= 0 && p !== protocol) continue;
      if (ports && !PORT_PROTOCOLS.includes(p)) continue;
      if (tcpFlags !== null && p !== PROTO_TCP) continue;
      if (icmp && p !== icmpProtocol) continue;
      keys.push((v === 4 ? 0 : PROTO_KEY_IPV6) + p);
    }
    if (ports || icmp || tcpFlags !== null) continue;
    for (let p = 0; p < 256; p++) if (protocol < 0 || p === protocol) keys.push((v === 4 ? PROTO_KEY_FRAGMENT4 : PROTO_KEY_FRAGMENT6) + p);
  }
  if ((versions & NOT_IP) !== 0) for (let p = 0; p < 256; p++) keys.push(PROTO_KEY_NOT_IP + p);
  if (keys.length === 0) {
    throw new ClassifierError(`${at}.protocol`, `ICMP fields need protocol ${PROTO_ICMP} over IPv4 or ${PROTO_ICMPV6} over IPv6: the rule could never match`);
  }
  return {
    versions,
    protocol: keys.length === PROTO_KEYS ? null : toRanges(keys.sort((a, b) => a - b)),
    src,
    dst,
    srcPort,
    dstPort,
    icmpType,
    icmpCode,
    tcpFlags,
    inPort: inPort >= 0 ? [[inPort, inPort]] : null,
    outPort: outPort >= 0 ? [[outPort, outPort]] : null,
  };
}

// ---- compile: rows and lookup structures ---------------------------------------------------

/** The distinct rows of one field: equal rows share an id. */
class RowSet {
  readonly rows: Uint32Array[] = [];
  private readonly byHash = new Map<number, number[]>();

  /** The id of a row equal to `row` (copied when new). */
  add(row: Uint32Array): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < row.length; i++) h = Math.imul(h ^ row[i], 0x01000193);
    let ids = this.byHash.get(h);
    if (ids === undefined) this.byHash.set(h, (ids = []));
    for (const id of ids) if (sameWords(this.rows[id], row)) return id;
    const id = this.rows.length;
    if (id > 0xffff) throw new ClassifierError('rules', 'a field has more than 65536 distinct rows');
    this.rows.push(row.slice());
    ids.push(id);
    return id;
  }
}

function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function setBit(row: Uint32Array, rule: number): void {
  row[rule >>> 5] |= 1 << (rule & 31);
}

/**
 * A field looked up by value over [0, domain): one sweep over the range ends, a row per
 * elementary interval (deduplicated), and the table filled interval by interval.
 */
function buildTable(domain: number, specs: readonly (ValueRange[] | null)[], words: number): { table: Uint16Array; rows: Uint32Array[] } | null {
  if (specs.every((s) => s === null)) return null;
  const current = new Uint32Array(words);
  // An event is position * 2^16 + (add ? 2^15 : 0) + rule: sorted, removals at a position
  // come before additions there.
  const events: number[] = [];
  specs.forEach((spec, rule) => {
    if (spec === null) return setBit(current, rule);
    for (const [lo, hi] of spec) {
      events.push(lo * 0x10000 + 0x8000 + rule);
      if (hi + 1 < domain) events.push((hi + 1) * 0x10000 + rule);
    }
  });
  const sorted = Float64Array.from(events).sort();
  const set = new RowSet();
  const table = new Uint16Array(domain);
  let e = 0;
  for (let pos = 0; pos < domain; ) {
    for (; e < sorted.length && Math.floor(sorted[e] / 0x10000) === pos; e++) {
      const rule = sorted[e] % 0x8000;
      if (sorted[e] % 0x10000 >= 0x8000) setBit(current, rule);
      else current[rule >>> 5] &= ~(1 << (rule & 31));
    }
    const next = e < sorted.length ? Math.floor(sorted[e] / 0x10000) : domain;
    table.fill(set.add(current), pos, next);
    pos = next;
  }
  return { table, rows: set.rows };
}

interface Intervals {
  readonly bits: 32 | 128;
  readonly starts: bigint[];
  readonly classes: number[];
}

/**
 * The address intervals of one IP version. `rules[r]` is the rule's prefix, 'any' when it
 * takes every address of this version, or 'none' when it is for the other version (its bit
 * stays clear, which spares the aggregate scan false candidates).
 */
function buildIntervals(bits: 32 | 128, rules: readonly (PrefixSpec | 'any' | 'none')[], set: RowSet, words: number): Intervals {
  const any = new Uint32Array(words);
  const byPrefix = new Map<string, { start: bigint; end: bigint; length: number; rules: number[]; row: Uint32Array; cls: number }>();
  rules.forEach((spec, rule) => {
    if (spec === 'any') return setBit(any, rule);
    if (spec === 'none') return;
    const key = `${spec.start}/${spec.length}`;
    let p = byPrefix.get(key);
    if (p === undefined) {
      const end = spec.start + (1n << BigInt(bits - spec.length)) - 1n;
      byPrefix.set(key, (p = { start: spec.start, end, length: spec.length, rules: [], row: any, cls: 0 }));
    }
    p.rules.push(rule);
  });
  // In (start, length) order a prefix comes after every prefix that holds it: its row is
  // its parent's row plus its own rules.
  const prefixes = [...byPrefix.values()].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.length - b.length));
  const stack: typeof prefixes = [];
  for (const p of prefixes) {
    while (stack.length > 0 && stack[stack.length - 1].end < p.start) stack.pop();
    p.row = (stack.length > 0 ? stack[stack.length - 1].row : any).slice();
    for (const rule of p.rules) setBit(p.row, rule);
    p.cls = set.add(p.row);
    stack.push(p);
  }
  const outside = set.add(any);
  const points = new Set<bigint>([0n]);
  const top = 1n << BigInt(bits);
  for (const p of prefixes) {
    points.add(p.start);
    if (p.end + 1n < top) points.add(p.end + 1n);
  }
  const sortedPoints = [...points].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  // Sweep: the class of an interval is that of the longest prefix open at its start.
  const starts: bigint[] = [];
  const classes: number[] = [];
  stack.length = 0;
  let next = 0;
  for (const point of sortedPoints) {
    while (stack.length > 0 && stack[stack.length - 1].end < point) stack.pop();
    while (next < prefixes.length && prefixes[next].start === point) stack.push(prefixes[next++]);
    const cls = stack.length > 0 ? stack[stack.length - 1].cls : outside;
    if (classes.length > 0 && classes[classes.length - 1] === cls) continue;
    starts.push(point);
    classes.push(cls);
  }
  return { bits, starts, classes };
}

/** The first 32 bits of an interval start. */
function word0(start: bigint, bits: number): number {
  return Number(start >> BigInt(bits - 32));
}

/**
 * The top-bits index of sorted interval starts: index[t] is the last interval whose start
 * is at most t << shift, so an address whose top bits are t lies in an interval from
 * index[t] to index[t + 1]. About one start per slot when the starts spread evenly.
 */
function topIndex(iv: Intervals): { index: Uint32Array; shift: number } {
  const n = iv.starts.length;
  const topBits = Math.min(16, Math.max(1, Math.ceil(Math.log2(n))));
  const shift = 32 - topBits;
  const slots = 1 << topBits;
  const index = new Uint32Array(slots + 1);
  const below = iv.bits - 32;
  let i = 0;
  for (let t = 0; t < slots; t++) {
    const edge = t * 2 ** shift;
    // a start is at most the edge when its first word is below it, or equal with the rest zero
    for (; i + 1 < n; i++) {
      const s = iv.starts[i + 1];
      const w = word0(s, iv.bits);
      if (w > edge || (w === edge && below > 0 && (s & ((1n << BigInt(below)) - 1n)) !== 0n)) break;
    }
    index[t] = i;
  }
  index[slots] = n - 1;
  return { index, shift };
}

function startWords(iv: Intervals): Uint32Array {
  const per = iv.bits / 32;
  const out = new Uint32Array(iv.starts.length * per);
  iv.starts.forEach((s, i) => {
    for (let j = 0; j < per; j++) out[i * per + j] = Number((s >> BigInt(32 * (per - 1 - j))) & 0xffffffffn);
  });
  return out;
}

/** Where compile() writes: `bytes` bytes of `memory` from `offset` (a multiple of 64). */
export interface CompileTarget {
  readonly memory: ArrayBufferLike;
  readonly offset: number;
  readonly bytes: number;
}

const padded = (bytes: number) => Math.ceil(bytes / 64) * 64;

/** Lays arrays out in one shared buffer, each on a 64-byte boundary, from `start`. */
class Packer {
  private readonly start: number;
  private size: number;
  private readonly parts: { offset: number; data: Uint32Array | Uint16Array }[] = [];

  constructor(start: number) {
    this.start = start;
    this.size = start;
  }

  add(data: Uint32Array | Uint16Array): Section {
    const offset = this.size;
    this.parts.push({ offset, data });
    this.size += padded(data.byteLength);
    return { offset, length: data.length };
  }

  /** Writes the arrays into the target, or into a new buffer of the size they take. */
  finish(target: CompileTarget | undefined): ArrayBufferLike {
    if (target !== undefined && this.size - this.start > target.bytes) {
      throw new Error(`the compiled rules take ${this.size - this.start} bytes, more than the ${target.bytes} set aside (compiledBytesBound is wrong)`);
    }
    const memory = target?.memory ?? sharedBuffer(Math.max(this.size, 64));
    for (const { offset, data } of this.parts) {
      const view = data instanceof Uint32Array ? new Uint32Array(memory, offset, data.length) : new Uint16Array(memory, offset, data.length);
      view.set(data);
    }
    return memory;
  }
}

/** The fields, each a row lookup; `fieldOrder` in the compiled form lists those in use. */
export const FIELDS = ['protocol', 'src', 'dst', 'srcPort', 'dstPort', 'icmpType', 'icmpCode', 'tcpFlags', 'inPort', 'outPort'] as const;
export type FieldName = (typeof FIELDS)[number];

/**
 * About log2 of the share of packets a rule accepts in a field: 0 for any, more negative for
 * narrower. The share of values, except for (version, protocol): traffic is mostly a few
 * protocols, so naming one of them narrows little.
 */
function selectivity(r: NormRule, field: FieldName, domains: Record<FieldName, number>): number {
  if (field === 'src' || field === 'dst') {
    const p = r[field];
    return p === null ? 0 : -p.length;
  }
  if (field === 'protocol') return r.protocol === null ? 0 : -1;
  const ranges = r[field];
  if (ranges === null) return 0;
  let accepted = 0;
  for (const [lo, hi] of ranges) accepted += hi - lo + 1;
  return Math.log2(accepted / domains[field]);
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

function normalizeAll(rules: readonly AclRule[]): NormRule[] {
  if (!Array.isArray(rules)) throw new ClassifierError('rules', 'must be an array');
  if (rules.length > MAX_RULES) throw new ClassifierError('rules', `at most ${MAX_RULES} rules, got ${rules.length}`);
  return rules.map((rule, i) => normalize(rule, `rules[${i}]`));
}

/** Throws ClassifierError (field `rules[at].…`) if compile() would refuse the rule. */
export function checkRule(rule: AclRule, at: number): void {
  normalize(rule, `rules[${at}]`);
}

/**
 * The most bytes compile() can take for `rules` (in a CompileTarget), from the same
 * bounds that make its build bounded: a field has at most 2R + 1 distinct rows for R ranges
 * its rules name (at most one per value of its domain), an address field one per prefix and
 * one per version for addresses outside them all. Costs a validation pass, not a compile,
 * so that memory can be set aside before the rules are compiled elsewhere.
 */
export function compiledBytesBound(rules: readonly AclRule[]): number {
  const norm = normalizeAll(rules);
  const words = Math.ceil(norm.length / 32);
  const rowWords = words + Math.ceil(words / 32);
  let bytes = 0;
  let rows = 0;
  const rangeCount = (f: 'protocol' | 'srcPort' | 'dstPort' | 'icmpType' | 'icmpCode' | 'tcpFlags' | 'inPort' | 'outPort') => {
    let named = false;
    let n = 0;
    for (const r of norm) {
      const ranges = r[f];
      if (ranges === null) continue;
      named = true;
      n += ranges.length;
    }
    return named ? n : -1;
  };
  const tableField = (f: 'protocol' | 'icmpType' | 'icmpCode' | 'tcpFlags' | 'inPort' | 'outPort', domain: number) => {
    const n = rangeCount(f);
    if (n < 0) return;
    rows += Math.min(domain, 2 * n + 1);
    bytes += padded(domain * 2);
  };
  const portField = (f: 'srcPort' | 'dstPort') => {
    const n = rangeCount(f);
    if (n < 0) return;
    rows += Math.min(0x10000, 2 * n + 1);
    // blocks: those a boundary falls in (2 per range at most), and one per row for the rest
    bytes += padded(256 * 2) + padded(Math.min(256, 4 * n + 1) * 256 * 2);
  };
  const intervalBytes = (prefixes: number, wordsPerStart: number) => {
    const n = 2 * prefixes + 1;
    const slots = 2 ** Math.min(16, Math.max(1, Math.ceil(Math.log2(n))));
    return padded(n * wordsPerStart * 4) + padded(n * 2) + padded((slots + 1) * 4);
  };
  const addressField = (f: 'src' | 'dst') => {
    if (norm.every((r) => r[f] === null)) return;
    const p4 = norm.filter((r) => r[f]?.bits === 32).length;
    const p6 = norm.filter((r) => r[f]?.bits === 128).length;
    rows += p4 + p6 + 2;
    bytes += intervalBytes(p4, 1) + intervalBytes(p6, 4);
  };
  const portDomain = (f: 'inPort' | 'outPort') => norm.reduce((max, r) => Math.max(max, r[f]?.[0][0] ?? -1), -1) + 2;
  tableField('protocol', PROTO_KEYS);
  addressField('src');
  addressField('dst');
  portField('srcPort');
  portField('dstPort');
  tableField('icmpType', 256);
  tableField('icmpCode', 256);
  tableField('tcpFlags', 256);
  tableField('inPort', portDomain('inPort'));
  tableField('outPort', portDomain('outPort'));
  return bytes + padded(rows * rowWords * 4);
}

/**
 * Compiles an ordered rule list (first match wins). Pure: the result depends on `rules`
 * only. Throws ClassifierError naming the field of the first rule it refuses. With a
 * target, the tables are written there (at most compiledBytesBound(rules) bytes) and the
 * result's memory is the target's.
 */
export function compile(rules: readonly AclRule[], target?: CompileTarget): CompiledClassifier {
  const norm = normalizeAll(rules);
  const ruleCount = norm.length;
  const words = Math.ceil(ruleCount / 32);

  const packer = new Packer(target?.offset ?? 0);
  const fieldRows = new Map<FieldName, Uint32Array[]>();
  const tableField = (field: FieldName, domain: number, specs: (ValueRange[] | null)[]): TableField => {
    const built = buildTable(domain, specs, words);
    if (built === null) return { firstRow: 0, table: { offset: 0, length: 0 } };
    fieldRows.set(field, built.rows);
    return { firstRow: 0, table: packer.add(built.table) };
  };
  const portField = (field: 'srcPort' | 'dstPort'): PortField => {
    const built = buildTable(0x10000, norm.map((r) => r[field]), words);
    if (built === null) return { firstRow: 0, blockIndex: { offset: 0, length: 0 }, table: { offset: 0, length: 0 } };
    fieldRows.set(field, built.rows);
    const blockIndex = new Uint16Array(256);
    const blocks: Uint16Array[] = [];
    const byContent = new Map<string, number>();
    for (let high = 0; high < 256; high++) {
      const block = built.table.subarray(high << 8, (high + 1) << 8);
      const uniform = block.every((cls) => cls === block[0]);
      const key = uniform ? `all ${block[0]}` : block.join(',');
      let id = byContent.get(key);
      if (id === undefined) byContent.set(key, (id = blocks.push(block) - 1));
      blockIndex[high] = id;
    }
    const table = new Uint16Array(blocks.length << 8);
    blocks.forEach((block, id) => table.set(block, id << 8));
    return { firstRow: 0, blockIndex: packer.add(blockIndex), table: packer.add(table) };
  };
  const emptyIndex: IntervalIndex = { starts: { offset: 0, length: 0 }, classes: { offset: 0, length: 0 }, index: { offset: 0, length: 0 }, shift: 0 };
  const intervalIndex = (iv: Intervals): IntervalIndex => {
    const { index, shift } = topIndex(iv);
    return { starts: packer.add(startWords(iv)), classes: packer.add(Uint16Array.from(iv.classes)), index: packer.add(index), shift };
  };
  const addressField = (field: 'src' | 'dst'): AddressField => {
    if (norm.every((r) => r[field] === null)) return { firstRow: 0, v4: emptyIndex, v6: emptyIndex };
    const set = new RowSet();
    const side = (version: number) => norm.map((r) => ((r.versions & version) === 0 ? 'none' : (r[field] ?? 'any')));
    const v4 = buildIntervals(32, side(V4), set, words);
    const v6 = buildIntervals(128, side(V6), set, words);
    fieldRows.set(field, set.rows);
    return { firstRow: 0, v4: intervalIndex(v4), v6: intervalIndex(v6) };
  };
  // In port-index tables, the last entry stands for every index no rule names.
  const portDomain = (field: 'inPort' | 'outPort') => norm.reduce((max, r) => Math.max(max, r[field]?.[0][0] ?? -1), -1) + 2;
  const domains: Record<FieldName, number> = {
    protocol: PROTO_KEYS, src: 0, dst: 0, srcPort: 0x10000, dstPort: 0x10000, icmpType: 256, icmpCode: 256, tcpFlags: 256,
    inPort: portDomain('inPort'), outPort: portDomain('outPort'),
  };
  const built = {
    protocol: tableField('protocol', domains.protocol, norm.map((r) => r.protocol)),
    src: addressField('src'),
    dst: addressField('dst'),
    srcPort: portField('srcPort'),
    dstPort: portField('dstPort'),
    icmpType: tableField('icmpType', domains.icmpType, norm.map((r) => r.icmpType)),
    icmpCode: tableField('icmpCode', domains.icmpCode, norm.map((r) => r.icmpCode)),
    tcpFlags: tableField('tcpFlags', domains.tcpFlags, norm.map((r) => r.tcpFlags)),
    inPort: tableField('inPort', domains.inPort, norm.map((r) => r.inPort)),
    outPort: tableField('outPort', domains.outPort, norm.map((r) => r.outPort)),
  };
  const active = FIELDS.filter((f) => fieldRows.has(f));

  // The aggregates, after Baboescu and Varghese but sparser: each rule counts in the
  // aggregate of one field only, the one where it accepts the smallest share of values.
  // A rule that matches a packet has its bit in that field's row for the packet, so the
  // OR of the fields' aggregates names every word that can hold the first match, and the
  // many rules that accept any value of a field leave that field's aggregate alone. A rule
  // that names no field counts in the first field in use, where every row holds it.
  const primary = new Map<FieldName, Uint32Array>(active.map((f) => [f, new Uint32Array(words)]));
  norm.forEach((r, rule) => {
    let best: FieldName | undefined;
    let bestScore = 0;
    for (const f of active) {
      const score = selectivity(r, f, domains);
      if (score < bestScore) [best, bestScore] = [f, score];
    }
    const field = best ?? active[0];
    if (field !== undefined) setBit(primary.get(field)!, rule);
  });
  // Candidate words are checked field by field, stopping at the first zero: the fields
  // with the sparsest rows go first.
  const density = (f: FieldName) => {
    let ones = 0;
    for (const row of fieldRows.get(f)!) for (let w = 0; w < words; w++) ones += popcount(row[w]);
    return ones / fieldRows.get(f)!.length;
  };
  const densities = new Map(active.map((f) => [f, density(f)]));
  const fieldOrder = [...active].sort((a, b) => densities.get(a)! - densities.get(b)!);

  // The share of words the aggregates would name, from each field's average row.
  let missed = 1;
  for (const f of active) {
    const mask = primary.get(f)!;
    let named = 0;
    for (const row of fieldRows.get(f)!) for (let w = 0; w < words; w++) named += +((row[w] & mask[w]) !== 0);
    missed *= 1 - named / (words * fieldRows.get(f)!.length);
  }
  const aggregateWords = words > SCAN_WORDS && 1 - missed < CANDIDATE_SHARE ? Math.ceil(words / 32) : 0;
  const rowWords = aggregateWords + words;

  let rowCount = 0;
  for (const f of active) rowCount += fieldRows.get(f)!.length;
  const rowData = new Uint32Array(rowCount * rowWords);
  const firstRow = new Map<FieldName, number>();
  let at = 0;
  for (const f of active) {
    firstRow.set(f, at / rowWords);
    const mask = primary.get(f)!;
    for (const row of fieldRows.get(f)!) {
      if (aggregateWords > 0) for (let w = 0; w < words; w++) if ((row[w] & mask[w]) !== 0) rowData[at + (w >>> 5)] |= 1 << (w & 31);
      rowData.set(row, at + aggregateWords);
      at += rowWords;
    }
  }
  const withRow = <T extends { firstRow: number }>(f: FieldName, field: T): T => ({ ...field, firstRow: firstRow.get(f) ?? 0 });
  return {
    ruleCount,
    words,
    aggregateWords,
    fieldOrder,
    rows: packer.add(rowData),
    memory: packer.finish(target),
    protocol: withRow('protocol', built.protocol),
    src: withRow('src', built.src),
    dst: withRow('dst', built.dst),
    srcPort: withRow('srcPort', built.srcPort),
    dstPort: withRow('dstPort', built.dstPort),
    icmpType: withRow('icmpType', built.icmpType),
    icmpCode: withRow('icmpCode', built.icmpCode),
    tcpFlags: withRow('tcpFlags', built.tcpFlags),
    inPort: withRow('inPort', built.inPort),
    outPort: withRow('outPort', built.outPort),
  };
}

// ---- classification -------------------------------------------------------------------------

function u32(memory: ArrayBufferLike, s: Section): Uint32Array {
  return new Uint32Array(memory, s.offset, s.length);
}
function u16(memory: ArrayBufferLike, s: Section): Uint16Array {
  return new Uint16Array(memory, s.offset, s.length);
}

// The searches branch on each comparison: measured faster here than branch-free steps
// (`lo += half & -(starts[mid] <= x)`), whose chain of dependent loads costs more than the
// mispredictions it saves.

/**
 * The interval holding the IPv4 address addrs[at]: the last start at most it. Takes the
 * array, not the address: NB an address above 2^30 passed as an argument is boxed into a
 * heap number (an allocation per packet) unless V8 inlines the call.
 */
function interval4(starts: Uint32Array, index: Uint32Array, shift: number, addrs: Uint32Array, at: number): number {
  const x = addrs[at];
  const t = x >>> shift;
  // starts[lo] <= x, and the answer is at most hi
  let lo = index[t];
  let hi = index[t + 1];
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The interval holding the IPv6 address at addrs[at..at+3]: starts compare word by word. */
function interval6(starts: Uint32Array, index: Uint32Array, shift: number, addrs: Uint32Array, at: number): number {
  const x0 = addrs[at];
  const x1 = addrs[at + 1];
  const x2 = addrs[at + 2];
  const x3 = addrs[at + 3];
  const t = x0 >>> shift;
  let lo = index[t];
  let hi = index[t + 1];
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    const m = mid << 2;
    const s0 = starts[m];
    let atMost: boolean;
    if (s0 !== x0) atMost = s0 < x0;
    else if (starts[m + 1] !== x1) atMost = starts[m + 1] < x1;
    else if (starts[m + 2] !== x2) atMost = starts[m + 2] < x2;
    else atMost = starts[m + 3] <= x3;
    if (atMost) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The views of one address field. */
class AddressLookup {
  private readonly first: number;
  private readonly starts4: Uint32Array;
  private readonly classes4: Uint16Array;
  private readonly index4: Uint32Array;
  private readonly shift4: number;
  private readonly starts6: Uint32Array;
  private readonly classes6: Uint16Array;
  private readonly index6: Uint32Array;
  private readonly shift6: number;

  constructor(m: ArrayBufferLike, field: AddressField) {
    this.first = field.firstRow;
    this.starts4 = u32(m, field.v4.starts);
    this.classes4 = u16(m, field.v4.classes);
    this.index4 = u32(m, field.v4.index);
    this.shift4 = field.v4.shift;
    this.starts6 = u32(m, field.v6.starts);
    this.classes6 = u16(m, field.v6.classes);
    this.index6 = u32(m, field.v6.index);
    this.shift6 = field.v6.shift;
  }

  /** Row offsets of a burst of IPv4 packets only, into rowAt at slot. */
  lookUp4(a4: Uint32Array, base: number, n: number, R: number, rowAt: Int32Array, slot: number): void {
    const first = this.first;
    const at = slot * BURST;
    const starts4 = this.starts4;
    const classes4 = this.classes4;
    const index4 = this.index4;
    const shift4 = this.shift4;
    for (let i = 0; i < n; i++) rowAt[at + i] = (first + classes4[interval4(starts4, index4, shift4, a4, base + i)]) * R;
  }

  /** Row offsets of the burst's packets, listed by IP version, into rowAt at slot. */
  lookUp(
    a4: Uint32Array, a6: Uint32Array, base: number,
    v4: Uint8Array, n4: number, v6: Uint8Array, n6: number, other: Uint8Array, nOther: number,
    R: number, rowAt: Int32Array, slot: number,
  ): void {
    const first = this.first;
    const at = slot * BURST;
    const starts4 = this.starts4;
    const classes4 = this.classes4;
    const index4 = this.index4;
    const shift4 = this.shift4;
    for (let j = 0; j < n4; j++) {
      const i = v4[j];
      rowAt[at + i] = (first + classes4[interval4(starts4, index4, shift4, a4, base + i)]) * R;
    }
    const starts6 = this.starts6;
    const classes6 = this.classes6;
    const index6 = this.index6;
    const shift6 = this.shift6;
    for (let j = 0; j < n6; j++) {
      const i = v6[j];
      rowAt[at + i] = (first + classes6[interval6(starts6, index6, shift6, a6, (base + i) << 2)]) * R;
    }
    // Not IP: any row will do, as every rule that names an address refuses such frames in
    // the protocol field; interval 0's row holds every rule without a prefix.
    for (let j = 0; j < nOther; j++) rowAt[at + other[j]] = (first + classes4[0]) * R;
  }
}

/** Classifies bursts over compiled memory; each thread makes its own (it holds scratch space). */
export class Classifier {
  readonly ruleCount: number;
  /** whether some rule names inPort or outPort: else those keys are never read */
  readonly readsPorts: boolean;
  private readonly words: number;
  private readonly aggregateWords: number;
  private readonly rowWords: number;
  private readonly fields: number;
  private readonly rows: Uint32Array;
  // Per field: its slot in rowAt (the order in which rows are ANDed), or -1 when no rule names it.
  private readonly protocolSlot: number;
  private readonly srcSlot: number;
  private readonly dstSlot: number;
  private readonly srcPortSlot: number;
  private readonly dstPortSlot: number;
  private readonly icmpTypeSlot: number;
  private readonly icmpCodeSlot: number;
  private readonly tcpFlagsSlot: number;
  private readonly inPortSlot: number;
  private readonly outPortSlot: number;
  private readonly protocolTable: Uint16Array;
  private readonly protocolFirst: number;
  private readonly src: AddressLookup;
  private readonly dst: AddressLookup;
  private readonly srcPortIndex: Uint16Array;
  private readonly srcPortTable: Uint16Array;
  private readonly srcPortFirst: number;
  private readonly dstPortIndex: Uint16Array;
  private readonly dstPortTable: Uint16Array;
  private readonly dstPortFirst: number;
  private readonly icmpTypeTable: Uint16Array;
  private readonly icmpTypeFirst: number;
  private readonly icmpCodeTable: Uint16Array;
  private readonly icmpCodeFirst: number;
  private readonly tcpFlagsTable: Uint16Array;
  private readonly tcpFlagsFirst: number;
  private readonly inPortTable: Uint16Array;
  private readonly inPortFirst: number;
  private readonly outPortTable: Uint16Array;
  private readonly outPortFirst: number;
  /** Per slot and packet: the offset of the packet's row, at slot * BURST + packet. */
  private readonly rowAt = new Int32Array(FIELDS.length * BURST);
  private readonly byVersion4 = new Uint8Array(BURST);
  private readonly byVersion6 = new Uint8Array(BURST);
  private readonly byVersionOther = new Uint8Array(BURST);

  constructor(compiled: CompiledClassifier) {
    const m = compiled.memory;
    const slot = (f: FieldName) => compiled.fieldOrder.indexOf(f);
    this.ruleCount = compiled.ruleCount;
    this.words = compiled.words;
    this.aggregateWords = compiled.aggregateWords;
    this.rowWords = compiled.aggregateWords + compiled.words;
    this.fields = compiled.fieldOrder.length;
    this.rows = u32(m, compiled.rows);
    this.protocolSlot = slot('protocol');
    this.srcSlot = slot('src');
    this.dstSlot = slot('dst');
    this.srcPortSlot = slot('srcPort');
    this.dstPortSlot = slot('dstPort');
    this.icmpTypeSlot = slot('icmpType');
    this.icmpCodeSlot = slot('icmpCode');
    this.tcpFlagsSlot = slot('tcpFlags');
    this.inPortSlot = slot('inPort');
    this.outPortSlot = slot('outPort');
    this.readsPorts = this.inPortSlot >= 0 || this.outPortSlot >= 0;
    this.protocolTable = u16(m, compiled.protocol.table);
    this.protocolFirst = compiled.protocol.firstRow;
    this.src = new AddressLookup(m, compiled.src);
    this.dst = new AddressLookup(m, compiled.dst);
    this.srcPortIndex = u16(m, compiled.srcPort.blockIndex);
    this.srcPortTable = u16(m, compiled.srcPort.table);
    this.srcPortFirst = compiled.srcPort.firstRow;
    this.dstPortIndex = u16(m, compiled.dstPort.blockIndex);
    this.dstPortTable = u16(m, compiled.dstPort.table);
    this.dstPortFirst = compiled.dstPort.firstRow;
    this.icmpTypeTable = u16(m, compiled.icmpType.table);
    this.icmpTypeFirst = compiled.icmpType.firstRow;
    this.icmpCodeTable = u16(m, compiled.icmpCode.table);
    this.icmpCodeFirst = compiled.icmpCode.firstRow;
    this.tcpFlagsTable = u16(m, compiled.tcpFlags.table);
    this.tcpFlagsFirst = compiled.tcpFlags.firstRow;
    this.inPortTable = u16(m, compiled.inPort.table);
    this.inPortFirst = compiled.inPort.firstRow;
    this.outPortTable = u16(m, compiled.outPort.table);
    this.outPortFirst = compiled.outPort.firstRow;
  }

  /** out[i] = index of the first rule matching packet i, or -1, for i < count. */
  classifyBurst(keys: FlowKeys, count: number, out: Int32Array): void {
    if (this.words === 0) {
      for (let i = 0; i < count; i++) out[i] = -1;
      return;
    }
    for (let base = 0; base < count; base += BURST) {
      const n = Math.min(BURST, count - base);
      this.lookUpRows(keys, base, n);
      if (this.words === 1) this.firstMatchOneWord(base, n, out);
      else if (this.aggregateWords === 0) this.firstMatchInOrder(base, n, out);
      else this.firstMatchAggregated(base, n, out);
    }
  }

  /** Fills rowAt field by field: each field's way of looking up is chosen once per burst. */
  private lookUpRows(keys: FlowKeys, base: number, n: number): void {
    const rowAt = this.rowAt;
    const R = this.rowWords;
    const version = keys.ipVersion;
    if (this.protocolSlot >= 0) {
      const table = this.protocolTable;
      const first = this.protocolFirst;
      const at = this.protocolSlot * BURST;
      const protocol = keys.protocol;
      const versionBase = VERSION_BASE;
      for (let i = 0; i < n; i++) rowAt[at + i] = (first + table[versionBase[version[base + i]] + protocol[base + i]]) * R;
    }
    if (this.srcSlot >= 0 || this.dstSlot >= 0) {
      // A burst of IPv4 packets only (no fragments), the common case, needs no lists.
      // NB: the lists took 2 of the 8.5 ns per packet an IPv4 address field cost.
      let notIpv4 = 0;
      for (let i = 0; i < n; i++) notIpv4 |= version[base + i] ^ 4;
      if (notIpv4 === 0) {
        if (this.srcSlot >= 0) this.src.lookUp4(keys.src4, base, n, R, rowAt, this.srcSlot);
        if (this.dstSlot >= 0) this.dst.lookUp4(keys.dst4, base, n, R, rowAt, this.dstSlot);
      } else {
        this.lookUpAddresses(keys, base, n);
      }
    }
    this.lookUpOthers(keys, base, n);
  }

  /** The address fields of a burst of mixed IP versions (and frames that are not IP). */
  private lookUpAddresses(keys: FlowKeys, base: number, n: number): void {
    const rowAt = this.rowAt;
    const R = this.rowWords;
    const version = keys.ipVersion;
    // Packets listed by IP version, once for both address fields.
    const v4 = this.byVersion4;
    const v6 = this.byVersion6;
    const other = this.byVersionOther;
    let n4 = 0;
    let n6 = 0;
    let nOther = 0;
    for (let i = 0; i < n; i++) {
      // a fragment's addresses are looked up as those of its version
      const v = version[base + i] & ~FRAGMENT;
      if (v === 4) v4[n4++] = i;
      else if (v === 6) v6[n6++] = i;
      else other[nOther++] = i;
    }
    if (this.srcSlot >= 0) this.src.lookUp(keys.src4, keys.src6, base, v4, n4, v6, n6, other, nOther, R, rowAt, this.srcSlot);
    if (this.dstSlot >= 0) this.dst.lookUp(keys.dst4, keys.dst6, base, v4, n4, v6, n6, other, nOther, R, rowAt, this.dstSlot);
  }

  /** Ports, ICMP, flags, in and out port. */
  private lookUpOthers(keys: FlowKeys, base: number, n: number): void {
    const rowAt = this.rowAt;
    const R = this.rowWords;
    // Ports, ICMP and flags are read whatever the protocol: a rule that names them accepts
    // only the matching protocols in the protocol field, so a stray value cannot match.
    if (this.srcPortSlot >= 0) byPort(this.srcPortIndex, this.srcPortTable, this.srcPortFirst, keys.srcPort, base, n, R, rowAt, this.srcPortSlot);
    if (this.dstPortSlot >= 0) byPort(this.dstPortIndex, this.dstPortTable, this.dstPortFirst, keys.dstPort, base, n, R, rowAt, this.dstPortSlot);
    if (this.icmpTypeSlot >= 0) byU8(this.icmpTypeTable, this.icmpTypeFirst, keys.icmpType, base, n, R, rowAt, this.icmpTypeSlot);
    if (this.icmpCodeSlot >= 0) byU8(this.icmpCodeTable, this.icmpCodeFirst, keys.icmpCode, base, n, R, rowAt, this.icmpCodeSlot);
    if (this.tcpFlagsSlot >= 0) byU8(this.tcpFlagsTable, this.tcpFlagsFirst, keys.tcpFlags, base, n, R, rowAt, this.tcpFlagsSlot);
    if (this.inPortSlot >= 0) byPortIndex(this.inPortTable, this.inPortFirst, keys.inPort, base, n, R, rowAt, this.inPortSlot);
    if (this.outPortSlot >= 0) byPortIndex(this.outPortTable, this.outPortFirst, keys.outPort, base, n, R, rowAt, this.outPortSlot);
  }

  /** Up to 32 rules: a row is one word, the AND of the fields' words is the answer. */
  private firstMatchOneWord(base: number, n: number, out: Int32Array): void {
    const rows = this.rows;
    const rowAt = this.rowAt;
    const fields = this.fields;
    for (let i = 0; i < n; i++) {
      let match = -1;
      for (let f = 0; f < fields; f++) match &= rows[rowAt[f * BURST + i]];
      // no match: clz32(0) is 32, and the answer -1
      out[base + i] = 31 - Math.clz32(match & -match);
    }
  }

  /**
   * A few words: AND them in order until one is not zero. The row offsets of up to four
   * fields are read once per packet into locals (a field not in use repeats the first:
   * ANDing a row twice changes nothing), and the first field's word, from the sparsest
   * rows, is tested alone before the others are read. NB: reading each offset again per
   * word, as the general loop does, cost 15 ns per packet at 100 rules where this takes 7.
   */
  private firstMatchInOrder(base: number, n: number, out: Int32Array): void {
    const rows = this.rows;
    const rowAt = this.rowAt;
    const fields = this.fields;
    const W = this.words;
    if (fields > 4 || fields === 0) {
      this.firstMatchInOrderAny(base, n, out);
      return;
    }
    for (let i = 0; i < n; i++) {
      const r0 = rowAt[i];
      const r1 = fields > 1 ? rowAt[BURST + i] : r0;
      const r2 = fields > 2 ? rowAt[2 * BURST + i] : r0;
      const r3 = fields > 3 ? rowAt[3 * BURST + i] : r0;
      let result = -1;
      for (let w = 0; w < W; w++) {
        let match = rows[r0 + w];
        if (match === 0) continue;
        match &= rows[r1 + w] & rows[r2 + w] & rows[r3 + w];
        if (match !== 0) {
          result = (w << 5) + 31 - Math.clz32(match & -match);
          break;
        }
      }
      out[base + i] = result;
    }
  }

  /** firstMatchInOrder() for any number of fields. */
  private firstMatchInOrderAny(base: number, n: number, out: Int32Array): void {
    const rows = this.rows;
    const rowAt = this.rowAt;
    const fields = this.fields;
    const W = this.words;
    for (let i = 0; i < n; i++) {
      let result = -1;
      for (let w = 0; w < W; w++) {
        let match = -1;
        for (let f = 0; f < fields && match !== 0; f++) match &= rows[rowAt[f * BURST + i] + w];
        if (match !== 0) {
          result = (w << 5) + 31 - Math.clz32(match & -match);
          break;
        }
      }
      out[base + i] = result;
    }
  }

  /** More rules: OR the aggregates, then AND the words they name, lowest first. */
  private firstMatchAggregated(base: number, n: number, out: Int32Array): void {
    const rows = this.rows;
    const rowAt = this.rowAt;
    const fields = this.fields;
    const A = this.aggregateWords;
    // With no field in use every rule takes every packet: word 0 is the only candidate.
    const none = fields === 0 ? 1 : 0;
    for (let i = 0; i < n; i++) {
      let result = -1;
      scan: for (let a = 0; a < A; a++) {
        let candidates = none;
        for (let f = 0; f < fields; f++) candidates |= rows[rowAt[f * BURST + i] + a];
        while (candidates !== 0) {
          const lowest = candidates & -candidates;
          const w = (a << 5) + 31 - Math.clz32(lowest);
          let match = -1;
          for (let f = 0; f < fields && match !== 0; f++) match &= rows[rowAt[f * BURST + i] + A + w];
          if (match !== 0) {
            result = (w << 5) + 31 - Math.clz32(match & -match);
            break scan;
          }
          candidates ^= lowest;
        }
      }
      out[base + i] = result;
    }
  }
}

// A function per element type of the keys: NB a load site that sees both Uint8Array and
// Uint16Array goes polymorphic, and every field pays for it.
function byU8(table: Uint16Array, first: number, values: Uint8Array, base: number, n: number, R: number, rowAt: Int32Array, slot: number): void {
  const at = slot * BURST;
  for (let i = 0; i < n; i++) rowAt[at + i] = (first + table[values[base + i]]) * R;
}

function byPort(
  blockIndex: Uint16Array, table: Uint16Array, first: number, ports: Uint16Array,
  base: number, n: number, R: number, rowAt: Int32Array, slot: number,
): void {
  const at = slot * BURST;
  for (let i = 0; i < n; i++) {
    const p = ports[base + i];
    rowAt[at + i] = (first + table[(blockIndex[p >>> 8] << 8) | (p & 0xff)]) * R;
  }
}

function byPortIndex(table: Uint16Array, first: number, ports: Int16Array, base: number, n: number, R: number, rowAt: Int32Array, slot: number): void {
  const at = slot * BURST;
  const other = table.length - 1;
  for (let i = 0; i < n; i++) {
    const p = ports[base + i];
    rowAt[at + i] = (first + table[p >= 0 && p < other ? p : other]) * R;
  }
}
