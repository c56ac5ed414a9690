// rtnetlink messages (linux/netlink.h, linux/rtnetlink.h) as plain data: the requests
// vrouter sends, and the kernel's answers and notifications as typed events. No I/O: the
// same decoder reads a NETLINK_ROUTE socket and the netlink inside FRR's FPM stream, which
// comes from another process. So every length is checked before it is used, and a message
// that does not add up becomes a 'malformed' event, never an exception.
import { Address4, Address6 } from 'ip-address';
import { AF_INET, AF_INET6, AF_UNSPEC, IFF_UP } from './linux-constants.ts';

// ---- events ----------------------------------------------------------------------------------

export type IpFamily = 4 | 6;
/** 'add' is a new object or a new state of one (RTM_NEW*, replace semantics); 'remove' is RTM_DEL*. */
export type Op = 'add' | 'remove';
export type RouteType = 'unicast' | 'blackhole' | 'unreachable' | 'prohibit' | 'local' | 'broadcast' | 'multicast' | 'other';

export interface Nexthop {
  /** the gateway; an IPv6 one on an IPv4 route is RFC 5549 (RTA_VIA); null for a directly connected route */
  via: string | null;
  /** 0 when the route names no interface */
  ifindex: number;
  /** ECMP weight, 1..256 (rtnh_hops + 1) */
  weight: number;
}

/**
 * A route (RTM_NEWROUTE, RTM_DELROUTE). An 'add' replaces what was known of the route
 * (table, prefix, metric). A 'remove' takes away the nexthops it lists, and the route when
 * none are left or it lists none: the kernel removes one gateway of an IPv6 multipath route
 * (`ip -6 route del P via G`) with a 'remove' that lists that gateway alone.
 */
export interface RouteEvent {
  kind: 'route';
  op: Op;
  family: IpFamily;
  /** canonical, host bits cleared: "10.1.0.0/16", "2001:db8::/32" */
  prefix: string;
  /** empty for blackhole-like routes, and for routes that use a nexthop object (nhid) */
  nexthops: Nexthop[];
  /** the nexthop object the route uses (RTA_NH_ID): see NexthopEvent; null if none */
  nhid: number | null;
  /** RTA_PRIORITY */
  metric: number;
  /** RTA_TABLE, or rtm_table when absent (254 main, 255 local) */
  table: number;
  /** rtm_protocol: who installed it (2 kernel, 3 boot, 4 static, 186 bgp, 188 ospf ...) */
  protocol: number;
  type: RouteType;
}

/** A nexthop object (RTM_NEWNEXTHOP, Linux 5.3+): one gateway, a blackhole, or a group of others. */
export interface NexthopEvent {
  kind: 'nexthop';
  op: Op;
  id: number;
  via: string | null;
  ifindex: number;
  blackhole: boolean;
  /** members of a group (NHA_GROUP), each another nexthop object; empty for a single nexthop */
  group: { id: number; weight: number }[];
}

export interface NeighbourEvent {
  kind: 'neighbour';
  op: Op;
  family: IpFamily;
  address: string;
  /** null when the kernel gives none (an incomplete or failed entry, most removals) or it is not Ethernet */
  mac: string | null;
  ifindex: number;
  /** NUD_* bits: 0x02 REACHABLE, 0x04 STALE, 0x20 FAILED, 0x40 NOARP, 0x80 PERMANENT ... */
  state: number;
  /** NTF_* bits (0x80 NTF_ROUTER) */
  flags: number;
}

export interface AddressEvent {
  kind: 'address';
  op: Op;
  family: IpFamily;
  /** the interface's own address (IFA_LOCAL, else IFA_ADDRESS: a point-to-point peer is not reported) */
  address: string;
  prefixLength: number;
  ifindex: number;
  /** true: it has a lifetime (IFA_CACHEINFO's ifa_valid is not for good): SLAAC, DHCP */
  expires?: boolean;
}

export interface LinkEvent {
  kind: 'link';
  op: Op;
  ifindex: number;
  name: string;
  /** administratively up (IFF_UP) */
  up: boolean;
  /** carrier present (IFF_LOWER_UP) */
  carrier: boolean;
  /** a 6-byte link-layer address, else null */
  mac: string | null;
  mtu: number;
}

/** NLMSG_DONE: the dump with this seq is complete; errno non-zero if it failed, interrupted if it may be inconsistent. */
export interface DoneEvent {
  kind: 'done';
  seq: number;
  errno: number;
  /** NLM_F_DUMP_INTR: the tables changed during the dump; dump again */
  interrupted: boolean;
}

/** NLMSG_ERROR: the answer to the request with this seq; errno 0 is a plain ACK. */
export interface AckEvent {
  kind: 'ack';
  seq: number;
  errno: number;
  /** the kernel's extended ACK text (NLMSGERR_ATTR_MSG), when it gave one */
  message: string | null;
}

export interface OverrunEvent {
  kind: 'overrun';
  seq: number;
}

/** A message, or the rest of a buffer, that could not be decoded; what followed it may still be. */
export interface MalformedEvent {
  kind: 'malformed';
  reason: string;
}

/** What describes the state of the tables: a consumer keeps these. */
export type TableEvent = RouteEvent | NexthopEvent | NeighbourEvent | AddressEvent | LinkEvent;
export type NetlinkEvent = TableEvent | DoneEvent | AckEvent | OverrunEvent | MalformedEvent;

export function isTableEvent(ev: NetlinkEvent): ev is TableEvent {
  return ev.kind === 'route' || ev.kind === 'nexthop' || ev.kind === 'neighbour' || ev.kind === 'address' || ev.kind === 'link';
}

// ---- wire constants --------------------------------------------------------------------------

const NLMSG_HDRLEN = 16;
const NLMSG_NOOP = 1;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLMSG_OVERRUN = 4;

const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP_INTR = 0x10;
const NLM_F_DUMP = 0x300;
const NLM_F_EXCL = 0x200;
const NLM_F_REPLACE = 0x100;
const NLM_F_CREATE = 0x400;
/** on NLMSG_ERROR: only the request's header is quoted, not all of it */
const NLM_F_CAPPED = 0x100;
/** on NLMSG_ERROR: extended ACK attributes follow the quoted request */
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_DELADDR = 21;
const RTM_GETADDR = 22;
const RTM_NEWROUTE = 24;
const RTM_DELROUTE = 25;
const RTM_GETROUTE = 26;
const RTM_NEWNEIGH = 28;
const RTM_DELNEIGH = 29;
const RTM_GETNEIGH = 30;
const RTM_NEWNEXTHOP = 104;
const RTM_DELNEXTHOP = 105;
const RTM_GETNEXTHOP = 106;


const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFF_LOWER_UP = 0x10000;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
/** struct ifa_cacheinfo: ifa_prefered, ifa_valid (u32 s, INFINITY_LIFE_TIME: for good), cstamp, tstamp */
const IFA_CACHEINFO = 6;
const INFINITY_LIFE_TIME = 0xffffffff;
/** ifa_flags: no duplicate address detection (an IPv6 address already in use) */
const IFA_F_NODAD = 0x02;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;
const RTA_VIA = 18;
const RTA_NH_ID = 30;
/** a copy the kernel made for one destination (PMTU, redirect), not a route anyone installed */
const RTM_F_CLONED = 0x200;
const ROUTE_TYPES: readonly RouteType[] = ['other', 'unicast', 'local', 'broadcast', 'other', 'multicast', 'blackhole', 'unreachable', 'prohibit'];

const NDA_DST = 1;
const NDA_LLADDR = 2;

const NHA_ID = 1;
const NHA_GROUP = 2;
const NHA_BLACKHOLE = 4;
const NHA_OIF = 5;
const NHA_GATEWAY = 6;

/** fixed headers after nlmsghdr: ifinfomsg, ifaddrmsg, rtmsg, ndmsg, nhmsg */
const IFINFOMSG = 16;
const IFADDRMSG = 8;
const RTMSG = 12;
const NDMSG = 12;
const NHMSG = 8;
/** struct rtnexthop: length, flags, hops, ifindex */
const RTNEXTHOP = 8;
/** struct nexthop_grp: id, weight, weight_high (Linux 6.12; reserved and 0 before), reserved */
const NEXTHOP_GRP = 8;

/** Netlink is in host byte order; every machine vrouter runs on is little-endian. */
const LE = true;

const align4 = (n: number) => (n + 3) & ~3;

// ---- requests --------------------------------------------------------------------------------

export type DumpKind = 'link' | 'address' | 'route' | 'neighbour' | 'nexthop';
const DUMPS: Record<DumpKind, { type: number; header: number }> = {
  link: { type: RTM_GETLINK, header: IFINFOMSG },
  address: { type: RTM_GETADDR, header: IFADDRMSG },
  route: { type: RTM_GETROUTE, header: RTMSG },
  neighbour: { type: RTM_GETNEIGH, header: NDMSG },
  nexthop: { type: RTM_GETNEXTHOP, header: NHMSG },
};

function header(bytes: Uint8Array, type: number, flags: number, seq: number): DataView {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  dv.setUint32(0, bytes.length, LE);
  dv.setUint16(4, type, LE);
  dv.setUint16(6, flags, LE);
  dv.setUint32(8, seq, LE);
  return dv; // nlmsg_pid 0: the kernel fills in the sender
}

const familyCode = (family: IpFamily | null) => (family === 4 ? AF_INET : family === 6 ? AF_INET6 : AF_UNSPEC);

/** A request for every object of a kind, of one family or (null) all; the answer ends with a 'done' of that seq. */
export function dumpRequest(what: DumpKind, family: IpFamily | null, seq: number): Uint8Array {
  const { type, header: size } = DUMPS[what];
  const bytes = new Uint8Array(NLMSG_HDRLEN + size);
  header(bytes, type, NLM_F_REQUEST | NLM_F_DUMP, seq);
  bytes[NLMSG_HDRLEN] = familyCode(family); // the family is the first byte of each of these headers
  return bytes;
}

export interface InterfaceAddress {
  ifindex: number;
  address: string;
  prefixLength: number;
  /** IPv6: without duplicate address detection (IFA_F_NODAD), usable at once */
  noDad?: boolean;
}

/**
 * RTM_NEWADDR (op 'add': fails with EEXIST if the address is there, as `ip addr add`;
 * 'replace': made or updated, as `ip addr replace`) or RTM_DELADDR, with an ACK asked for.
 * Throws RangeError for an address that is not one.
 */
export function addressRequest(op: Op | 'replace', a: InterfaceAddress, seq: number): Uint8Array {
  if (!Number.isInteger(a.ifindex) || a.ifindex <= 0 || a.ifindex > 0x7fffffff) throw new RangeError(`interface index ${a.ifindex}`);
  const bytes = parseIp(a.address);
  const bits = bytes.length * 8;
  if (!Number.isInteger(a.prefixLength) || a.prefixLength < 0 || a.prefixLength > bits) throw new RangeError(`prefix length ${a.prefixLength}: must be 0..${bits}`);
  const attr = 4 + bytes.length;
  const msg = new Uint8Array(NLMSG_HDRLEN + IFADDRMSG + 2 * align4(attr));
  const flags = NLM_F_REQUEST | NLM_F_ACK | (op === 'add' ? NLM_F_CREATE | NLM_F_EXCL : op === 'replace' ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  const dv = header(msg, op === 'remove' ? RTM_DELADDR : RTM_NEWADDR, flags, seq);
  let o = NLMSG_HDRLEN;
  msg[o] = bytes.length === 4 ? AF_INET : AF_INET6;
  msg[o + 1] = a.prefixLength;
  msg[o + 2] = a.noDad === true ? IFA_F_NODAD : 0;
  dv.setUint32(o + 4, a.ifindex, LE);
  o += IFADDRMSG;
  // IFA_LOCAL is the interface's address; IFA_ADDRESS, the same, says there is no peer.
  for (const type of [IFA_LOCAL, IFA_ADDRESS]) {
    dv.setUint16(o, attr, LE);
    dv.setUint16(o + 2, type, LE);
    msg.set(bytes, o + 4);
    o += align4(attr);
  }
  return msg;
}

function parseIp(text: string): Uint8Array {
  try {
    if (text.includes('/')) throw new Error('a prefix');
    return Uint8Array.from(text.includes(':') ? new Address6(text).toUnsignedByteArray() : new Address4(text).toArray());
  } catch {
    throw new RangeError(`${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  }
}

// ---- decoding --------------------------------------------------------------------------------

/** Thrown inside the decoder only, caught per message: the reason becomes a 'malformed' event. */
class Malformed extends Error {}
function bad(reason: string): never {
  throw new Malformed(reason);
}

/**
 * The attributes of one level of a message, by type: where each one's payload starts and
 * how long it is (-1: absent). Types past the table are skipped; the last of a repeated
 * type wins. Typed arrays reused for every message: decoding is synchronous.
 */
class Attributes {
  readonly at: Int32Array;
  readonly len: Int32Array;
  constructor(types: number) {
    this.at = new Int32Array(types);
    this.len = new Int32Array(types);
  }

  /** Walks the attributes in [start, end) of dv; throws Malformed for one whose length does not fit. */
  read(dv: DataView, start: number, end: number, what: string): this {
    this.at.fill(-1);
    let o = start;
    // Fewer than 4 bytes left is padding, which the kernel also tolerates (nla_parse).
    while (end - o >= 4) {
      const len = dv.getUint16(o, LE);
      const type = dv.getUint16(o + 2, LE) & 0x3fff; // NLA_TYPE_MASK: without the nested and byte-order bits
      if (len < 4) bad(`${what} attribute ${type} has length ${len} (at least 4)`);
      if (len > end - o) bad(`${what} attribute ${type} of ${len} bytes runs ${len - (end - o)} bytes past the end`);
      if (type < this.at.length) {
        this.at[type] = o + 4;
        this.len[type] = len - 4;
      }
      o += align4(len);
    }
    return this;
  }

  has(type: number): boolean {
    return this.at[type] >= 0;
  }

  u32(dv: DataView, type: number, absent: number): number {
    if (this.at[type] < 0) return absent;
    if (this.len[type] < 4) bad(`attribute ${type} has ${this.len[type]} bytes, 4 needed`);
    return dv.getUint32(this.at[type], LE);
  }
}

const top = new Attributes(64);
const nested = new Attributes(32);

/** One IPv4 or IPv6 address, 4 or 16 bytes, as text (RFC 5952 for IPv6, as ip-address's correctForm writes it). */
export function formatIp(bytes: Uint8Array, at = 0, length = bytes.length - at): string {
  if (length === 4) return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
  if (length !== 16) throw new RangeError(`an address of ${length} bytes`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[at + i] << 8) | bytes[at + i + 1]);
  // RFC 5952 4.2: "::" stands for the longest run of two or more zero groups, the first
  // of equally long ones.
  let runStart = -1;
  let runLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > runLength) [runStart, runLength] = [i, j - i];
    i = j;
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  return runStart < 0 ? hex(0, 8) : `${hex(0, runStart)}::${hex(runStart + runLength, 8)}`;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
function formatMac(bytes: Uint8Array, at: number): string {
  return `${HEX[bytes[at]]}:${HEX[bytes[at + 1]]}:${HEX[bytes[at + 2]]}:${HEX[bytes[at + 3]]}:${HEX[bytes[at + 4]]}:${HEX[bytes[at + 5]]}`;
}

const ipFamilyOf = (code: number): IpFamily | 0 => (code === AF_INET ? 4 : code === AF_INET6 ? 6 : 0);
const addressBytes = (family: IpFamily) => (family === 4 ? 4 : 16);

/** The address attribute `type` of `attrs`, which must be one of `family`, as text. */
function addressAttribute(bytes: Uint8Array, attrs: Attributes, type: number, family: IpFamily, what: string): string {
  const len = attrs.len[type];
  if (len !== addressBytes(family)) bad(`${what} of ${len} bytes in an IPv${family} message`);
  return formatIp(bytes, attrs.at[type], len);
}

const prefixScratch = new Uint8Array(16);
/** dst (or all zeros when the route has no RTA_DST: a default route) with the bits past dstLen cleared. */
function formatPrefix(bytes: Uint8Array, at: number, family: IpFamily, dstLen: number): string {
  const n = addressBytes(family);
  for (let i = 0; i < n; i++) {
    const keep = Math.max(0, Math.min(8, dstLen - 8 * i));
    prefixScratch[i] = at < 0 ? 0 : bytes[at + i] & (0xff00 >> keep);
  }
  return `${formatIp(prefixScratch, 0, n)}/${dstLen}`;
}

const MESSAGE_NAMES: Record<number, string> = {
  [NLMSG_ERROR]: 'NLMSG_ERROR',
  [NLMSG_DONE]: 'NLMSG_DONE',
  [RTM_NEWLINK]: 'RTM_NEWLINK',
  [RTM_DELLINK]: 'RTM_DELLINK',
  [RTM_NEWADDR]: 'RTM_NEWADDR',
  [RTM_DELADDR]: 'RTM_DELADDR',
  [RTM_NEWROUTE]: 'RTM_NEWROUTE',
  [RTM_DELROUTE]: 'RTM_DELROUTE',
  [RTM_NEWNEIGH]: 'RTM_NEWNEIGH',
  [RTM_DELNEIGH]: 'RTM_DELNEIGH',
  [RTM_NEWNEXTHOP]: 'RTM_NEWNEXTHOP',
  [RTM_DELNEXTHOP]: 'RTM_DELNEXTHOP',
};

/**
 * Decodes the netlink messages in `bytes` (a datagram from the socket, or an FPM frame's
 * payload) and appends their events to `into`. Messages of kinds not listed in
 * NetlinkEvent (rules, netconf, MPLS or multicast routes, bridge FDB entries) are skipped.
 * Never throws: a message whose body does not add up gives a 'malformed' event and the
 * next one is read; a header that does not (nlmsg_len under 16 or past the end) ends the
 * buffer with one, since nothing after it can be found.
 */
export function decodeMessages(bytes: Uint8Array, into: NetlinkEvent[] = []): NetlinkEvent[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = 0;
  while (o < bytes.length) {
    const left = bytes.length - o;
    if (left < NLMSG_HDRLEN) {
      into.push({ kind: 'malformed', reason: `${left} bytes at offset ${o}: too short for a netlink header (16)` });
      break;
    }
    const len = dv.getUint32(o, LE);
    const type = dv.getUint16(o + 4, LE);
    if (len < NLMSG_HDRLEN || len > left) {
      const problem = len < NLMSG_HDRLEN ? 'under the 16 of its header' : `past the end of the ${left} bytes left`;
      into.push({ kind: 'malformed', reason: `message of type ${type} at offset ${o}: nlmsg_len ${len} is ${problem}` });
      break;
    }
    try {
      decodeMessage(bytes, dv, o, len, type, into);
    } catch (err) {
      // A Malformed is expected; anything else is a check missing here, and still must not escape.
      const reason = err instanceof Malformed ? err.message : `decoder error: ${(err as Error).message}`;
      into.push({ kind: 'malformed', reason: `${MESSAGE_NAMES[type] ?? `message type ${type}`} at offset ${o}: ${reason}` });
    }
    o += align4(len);
  }
  return into;
}

function decodeMessage(bytes: Uint8Array, dv: DataView, o: number, len: number, type: number, into: NetlinkEvent[]): void {
  const flags = dv.getUint16(o + 6, LE);
  const seq = dv.getUint32(o + 8, LE);
  const body = o + NLMSG_HDRLEN;
  const end = o + len;
  switch (type) {
    case NLMSG_NOOP:
      return;
    case NLMSG_DONE: {
      // The payload is the dump's error code (int); very old kernels sent none.
      const error = end - body >= 4 ? dv.getInt32(body, LE) : 0;
      into.push({ kind: 'done', seq, errno: Math.abs(error), interrupted: (flags & NLM_F_DUMP_INTR) !== 0 });
      return;
    }
    case NLMSG_ERROR:
      into.push(decodeError(bytes, dv, body, end, flags, seq));
      return;
    case NLMSG_OVERRUN:
      into.push({ kind: 'overrun', seq });
      return;
    case RTM_NEWROUTE:
    case RTM_DELROUTE:
      return decodeRoute(bytes, dv, body, end, type === RTM_NEWROUTE ? 'add' : 'remove', into);
    case RTM_NEWNEXTHOP:
    case RTM_DELNEXTHOP:
      return decodeNexthop(bytes, dv, body, end, type === RTM_NEWNEXTHOP ? 'add' : 'remove', into);
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH:
      return decodeNeighbour(bytes, dv, body, end, type === RTM_NEWNEIGH ? 'add' : 'remove', into);
    case RTM_NEWADDR:
    case RTM_DELADDR:
      return decodeAddress(bytes, dv, body, end, type === RTM_NEWADDR ? 'add' : 'remove', into);
    case RTM_NEWLINK:
    case RTM_DELLINK:
      return decodeLink(bytes, dv, body, end, type === RTM_NEWLINK ? 'add' : 'remove', into);
    default:
      return;
  }
}

function need(dv: DataView, body: number, end: number, bytes: number, what: string): void {
  if (end - body < bytes) bad(`${end - body} bytes where ${what} needs ${bytes}`);
}

/** struct nlmsgerr: the (negative) errno, the request's header (or all of it), then extended ACK attributes. */
function decodeError(bytes: Uint8Array, dv: DataView, body: number, end: number, flags: number, seq: number): AckEvent {
  need(dv, body, end, 4 + NLMSG_HDRLEN, 'struct nlmsgerr');
  const errno = Math.abs(dv.getInt32(body, LE));
  let message: string | null = null;
  if (flags & NLM_F_ACK_TLVS) {
    const quoted = flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(dv.getUint32(body + 4, LE));
    const tlvs = body + 4 + quoted;
    // The text is a courtesy: attributes that do not add up cost it, not the errno.
    if (quoted >= NLMSG_HDRLEN && tlvs <= end) {
      try {
        const a = nested.read(dv, tlvs, end, 'extended ACK');
        if (a.has(NLMSGERR_ATTR_MSG)) message = cString(bytes, a.at[NLMSGERR_ATTR_MSG], a.len[NLMSGERR_ATTR_MSG]);
      } catch {
        message = null;
      }
    }
  }
  return { kind: 'ack', seq, errno, message };
}

const utf8 = new TextDecoder();
function cString(bytes: Uint8Array, at: number, len: number): string {
  let n = 0;
  while (n < len && bytes[at + n] !== 0) n++;
  return utf8.decode(bytes.subarray(at, at + n));
}

function decodeRoute(bytes: Uint8Array, dv: DataView, body: number, end: number, op: Op, into: NetlinkEvent[]): void {
  need(dv, body, end, RTMSG, 'struct rtmsg');
  const family = ipFamilyOf(bytes[body]);
  if (family === 0) return; // MPLS, IP multicast routing (RTNL_FAMILY_IPMR) ...
  const dstLen = bytes[body + 1];
  const srcLen = bytes[body + 2];
  const rtmTable = bytes[body + 4];
  const protocol = bytes[body + 5];
  const rtmType = bytes[body + 7];
  const rtmFlags = dv.getUint32(body + 8, LE);
  if (rtmFlags & RTM_F_CLONED) return;
  // A source-specific route (IPv6 "from", src_len > 0) is not a destination route: taken
  // as one it would catch every packet to its prefix.
  if (srcLen !== 0) return;
  const bits = family === 4 ? 32 : 128;
  if (dstLen > bits) bad(`rtm_dst_len ${dstLen} in an IPv${family} route`);
  const a = top.read(dv, body + RTMSG, end, 'route');
  if (a.has(RTA_DST) && a.len[RTA_DST] !== addressBytes(family)) bad(`RTA_DST of ${a.len[RTA_DST]} bytes in an IPv${family} route`);
  const prefix = formatPrefix(bytes, a.at[RTA_DST], family, dstLen);
  const metric = a.u32(dv, RTA_PRIORITY, 0);
  const table = a.u32(dv, RTA_TABLE, rtmTable);
  const nhid = a.has(RTA_NH_ID) ? a.u32(dv, RTA_NH_ID, 0) : null;
  let nexthops: Nexthop[];
  if (a.has(RTA_MULTIPATH)) {
    nexthops = multipath(bytes, dv, a.at[RTA_MULTIPATH], a.at[RTA_MULTIPATH] + a.len[RTA_MULTIPATH], family);
  } else if (a.has(RTA_GATEWAY) || a.has(RTA_VIA) || a.has(RTA_OIF)) {
    nexthops = [{ via: gateway(bytes, dv, a, family), ifindex: a.u32(dv, RTA_OIF, 0), weight: 1 }];
  } else {
    nexthops = [];
  }
  into.push({ kind: 'route', op, family, prefix, nexthops, nhid, metric, table, protocol, type: ROUTE_TYPES[rtmType] ?? 'other' });
}

/** RTA_GATEWAY (of the route's family) or RTA_VIA (struct rtvia: a family, then its address), or null. */
function gateway(bytes: Uint8Array, dv: DataView, a: Attributes, family: IpFamily): string | null {
  if (a.has(RTA_GATEWAY)) return addressAttribute(bytes, a, RTA_GATEWAY, family, 'RTA_GATEWAY');
  if (!a.has(RTA_VIA)) return null;
  const at = a.at[RTA_VIA];
  const len = a.len[RTA_VIA];
  if (len < 2) bad(`RTA_VIA of ${len} bytes`);
  const viaFamily = ipFamilyOf(dv.getUint16(at, LE));
  if (viaFamily === 0) bad(`RTA_VIA of address family ${dv.getUint16(at, LE)}`);
  if (len - 2 !== addressBytes(viaFamily)) bad(`RTA_VIA with an IPv${viaFamily} address of ${len - 2} bytes`);
  return formatIp(bytes, at + 2, len - 2);
}

/** RTA_MULTIPATH: struct rtnexthop entries, each followed by its own attributes. */
function multipath(bytes: Uint8Array, dv: DataView, start: number, end: number, family: IpFamily): Nexthop[] {
  const hops: Nexthop[] = [];
  let o = start;
  while (o < end) {
    if (end - o < RTNEXTHOP) bad(`${end - o} bytes left in RTA_MULTIPATH, too few for a struct rtnexthop (8)`);
    const len = dv.getUint16(o, LE);
    if (len < RTNEXTHOP || len > end - o) bad(`rtnh_len ${len} in RTA_MULTIPATH: must be 8..${end - o}`);
    const a = nested.read(dv, o + RTNEXTHOP, o + len, 'nexthop');
    hops.push({ via: gateway(bytes, dv, a, family), ifindex: dv.getInt32(o + 4, LE), weight: bytes[o + 3] + 1 });
    o += align4(len);
  }
  return hops;
}

function decodeNexthop(bytes: Uint8Array, dv: DataView, body: number, end: number, op: Op, into: NetlinkEvent[]): void {
  need(dv, body, end, NHMSG, 'struct nhmsg');
  const a = top.read(dv, body + NHMSG, end, 'nexthop');
  if (!a.has(NHA_ID)) bad('no NHA_ID');
  const id = a.u32(dv, NHA_ID, 0);
  let via: string | null = null;
  if (a.has(NHA_GATEWAY)) {
    const len = a.len[NHA_GATEWAY];
    if (len !== 4 && len !== 16) bad(`NHA_GATEWAY of ${len} bytes`);
    via = formatIp(bytes, a.at[NHA_GATEWAY], len);
  }
  const group: { id: number; weight: number }[] = [];
  if (a.has(NHA_GROUP)) {
    const at = a.at[NHA_GROUP];
    const len = a.len[NHA_GROUP];
    if (len % NEXTHOP_GRP !== 0) bad(`NHA_GROUP of ${len} bytes, not a whole number of struct nexthop_grp (8)`);
    for (let g = at; g < at + len; g += NEXTHOP_GRP) group.push({ id: dv.getUint32(g, LE), weight: ((bytes[g + 5] << 8) | bytes[g + 4]) + 1 });
  }
  into.push({ kind: 'nexthop', op, id, via, ifindex: a.u32(dv, NHA_OIF, 0), blackhole: a.has(NHA_BLACKHOLE), group });
}

function decodeNeighbour(bytes: Uint8Array, dv: DataView, body: number, end: number, op: Op, into: NetlinkEvent[]): void {
  need(dv, body, end, NDMSG, 'struct ndmsg');
  const family = ipFamilyOf(bytes[body]);
  if (family === 0) return; // bridge FDB entries (AF_BRIDGE) and the like
  const a = top.read(dv, body + NDMSG, end, 'neighbour');
  if (!a.has(NDA_DST)) bad('no NDA_DST');
  const address = addressAttribute(bytes, a, NDA_DST, family, 'NDA_DST');
  const mac = a.has(NDA_LLADDR) && a.len[NDA_LLADDR] === 6 ? formatMac(bytes, a.at[NDA_LLADDR]) : null;
  into.push({ kind: 'neighbour', op, family, address, mac, ifindex: dv.getInt32(body + 4, LE), state: dv.getUint16(body + 8, LE), flags: bytes[body + 10] });
}

function decodeAddress(bytes: Uint8Array, dv: DataView, body: number, end: number, op: Op, into: NetlinkEvent[]): void {
  need(dv, body, end, IFADDRMSG, 'struct ifaddrmsg');
  const family = ipFamilyOf(bytes[body]);
  if (family === 0) return;
  const prefixLength = bytes[body + 1];
  if (prefixLength > (family === 4 ? 32 : 128)) bad(`ifa_prefixlen ${prefixLength} on an IPv${family} address`);
  const a = top.read(dv, body + IFADDRMSG, end, 'address');
  const type = a.has(IFA_LOCAL) ? IFA_LOCAL : IFA_ADDRESS;
  if (!a.has(type)) bad('neither IFA_LOCAL nor IFA_ADDRESS');
  const address = addressAttribute(bytes, a, type, family, type === IFA_LOCAL ? 'IFA_LOCAL' : 'IFA_ADDRESS');
  // An address with a lifetime was given for a while (SLAAC from a router advertisement,
  // DHCP), not by whoever runs the namespace's routing.
  const expires = a.has(IFA_CACHEINFO) && a.len[IFA_CACHEINFO] >= 8 && dv.getUint32(a.at[IFA_CACHEINFO] + 4, LE) !== INFINITY_LIFE_TIME;
  into.push({ kind: 'address', op, family, address, prefixLength, ifindex: dv.getUint32(body + 4, LE), ...(expires ? { expires: true } : {}) });
}

function decodeLink(bytes: Uint8Array, dv: DataView, body: number, end: number, op: Op, into: NetlinkEvent[]): void {
  need(dv, body, end, IFINFOMSG, 'struct ifinfomsg');
  // Only the interface itself: AF_BRIDGE messages are about its bridge port, and an
  // RTM_DELLINK of one means it left the bridge, not that it is gone.
  if (bytes[body] !== AF_UNSPEC) return;
  const flags = dv.getUint32(body + 8, LE);
  const a = top.read(dv, body + IFINFOMSG, end, 'link');
  const name = a.has(IFLA_IFNAME) ? cString(bytes, a.at[IFLA_IFNAME], a.len[IFLA_IFNAME]) : '';
  const mac = a.has(IFLA_ADDRESS) && a.len[IFLA_ADDRESS] === 6 ? formatMac(bytes, a.at[IFLA_ADDRESS]) : null;
  into.push({ kind: 'link', op, ifindex: dv.getInt32(body + 4, LE), name, up: (flags & IFF_UP) !== 0, carrier: (flags & IFF_LOWER_UP) !== 0, mac, mtu: a.u32(dv, IFLA_MTU, 0) });
}
