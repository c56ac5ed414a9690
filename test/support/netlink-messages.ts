// Netlink messages built byte by byte, as the kernel or zebra would send them (and as
// neither should), for the codec and FPM server tests. Host byte order: little-endian.
import { parseAddress, parsePrefix } from '../../src/pipeline/net.ts';
import { joinBytes } from './frames.ts';

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_NEWRULE = 32;
export const RTM_NEWNEXTHOP = 104;
export const RTM_DELNEXTHOP = 105;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_CREATE = 0x400;
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;
export const AF_MPLS = 28;
export const RTA = { DST: 1, SRC: 2, OIF: 4, GATEWAY: 5, PRIORITY: 6, PREFSRC: 7, MULTIPATH: 9, TABLE: 15, VIA: 18, NH_ID: 30 } as const;
export const RTN = { UNICAST: 1, LOCAL: 2, BROADCAST: 3, ANYCAST: 4, MULTICAST: 5, BLACKHOLE: 6, UNREACHABLE: 7, PROHIBIT: 8, THROW: 9 } as const;
export const NHA = { ID: 1, GROUP: 2, GROUP_TYPE: 3, BLACKHOLE: 4, OIF: 5, GATEWAY: 6 } as const;
export const RTPROT_STATIC = 4;
export const RTPROT_BGP = 186;
export const RTM_F_CLONED = 0x200;

export const concat = (...parts: Uint8Array[]): Uint8Array => joinBytes(parts);

const pad4 = (b: Uint8Array) => concat(b, new Uint8Array((4 - (b.length % 4)) % 4));

export function u8s(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

export function u16(v: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, true);
  return b;
}

export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

export function i32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, v, true);
  return b;
}

/** An address's 4 or 16 bytes. */
export function ip(text: string): Uint8Array {
  return parseAddress(text).bytes;
}

export function mac(text: string): Uint8Array {
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}

/** struct rtattr with its payload, padded to 4 bytes; `length` overrides rta_len (to make bad ones). */
export function attr(type: number, payload: Uint8Array = new Uint8Array(0), length = 4 + payload.length): Uint8Array {
  return pad4(concat(u16(length), u16(type), payload));
}

export function cstring(text: string): Uint8Array {
  return concat(new TextEncoder().encode(text), u8s(0));
}

/** struct nlmsghdr and the body; `length` overrides nlmsg_len. */
export function message(type: number, body: Uint8Array, opts: { flags?: number; seq?: number; pid?: number; length?: number } = {}): Uint8Array {
  const len = opts.length ?? 16 + body.length;
  return concat(u32(len), u16(type), u16(opts.flags ?? 0), u32(opts.seq ?? 0), u32(opts.pid ?? 0), pad4(body));
}

export interface RtmsgFields {
  family?: number;
  dstLen?: number;
  srcLen?: number;
  table?: number;
  protocol?: number;
  scope?: number;
  type?: number;
  flags?: number;
}

export function rtmsg(f: RtmsgFields): Uint8Array {
  return concat(u8s(f.family ?? AF_INET, f.dstLen ?? 0, f.srcLen ?? 0, 0, f.table ?? 254, f.protocol ?? RTPROT_STATIC, f.scope ?? 0, f.type ?? RTN.UNICAST), u32(f.flags ?? 0));
}

export interface HopFields {
  gateway?: string;
  /** RTA_VIA, for an IPv4 route through an IPv6 gateway */
  via?: string;
  ifindex?: number;
  weight?: number;
  flags?: number;
  /** overrides rtnh_len */
  length?: number;
}

/** RTA_VIA's payload: struct rtvia, a family then the address. */
export function rtvia(address: string): Uint8Array {
  const b = ip(address);
  return concat(u16(b.length === 4 ? AF_INET : AF_INET6), b);
}

export function rtnexthop(h: HopFields): Uint8Array {
  const attrs = concat(h.gateway !== undefined ? attr(RTA.GATEWAY, ip(h.gateway)) : new Uint8Array(0), h.via !== undefined ? attr(RTA.VIA, rtvia(h.via)) : new Uint8Array(0));
  return concat(u16(h.length ?? 8 + attrs.length), u8s(h.flags ?? 0, (h.weight ?? 1) - 1), i32(h.ifindex ?? 0), attrs);
}

export interface RouteFields extends RtmsgFields {
  prefix: string;
  gateway?: string;
  via?: string;
  oif?: number;
  metric?: number;
  /** RTA_TABLE, beside rtm_table */
  tableAttr?: number;
  multipath?: HopFields[];
  nhid?: number;
  extra?: Uint8Array;
}

/** RTM_NEWROUTE (or RTM_DELROUTE) as the kernel sends it. */
export function routeMessage(op: 'add' | 'remove', r: RouteFields, opts: { flags?: number; seq?: number } = {}): Uint8Array {
  const p = parsePrefix(r.prefix);
  const parts = [rtmsg({ family: p.family === 4 ? AF_INET : AF_INET6, dstLen: p.length, ...r })];
  if (p.length > 0 || r.prefix.includes('/') === false) parts.push(attr(RTA.DST, p.bytes));
  if (r.tableAttr !== undefined) parts.push(attr(RTA.TABLE, u32(r.tableAttr)));
  if (r.metric !== undefined) parts.push(attr(RTA.PRIORITY, u32(r.metric)));
  if (r.gateway !== undefined) parts.push(attr(RTA.GATEWAY, ip(r.gateway)));
  if (r.via !== undefined) parts.push(attr(RTA.VIA, rtvia(r.via)));
  if (r.oif !== undefined) parts.push(attr(RTA.OIF, u32(r.oif)));
  if (r.nhid !== undefined) parts.push(attr(RTA.NH_ID, u32(r.nhid)));
  if (r.multipath !== undefined) parts.push(attr(RTA.MULTIPATH, concat(...r.multipath.map(rtnexthop))));
  if (r.extra !== undefined) parts.push(r.extra);
  return message(op === 'add' ? RTM_NEWROUTE : RTM_DELROUTE, concat(...parts), opts);
}

/** An FPM frame: header {version, type, length (big-endian, with the header)} and the payload. */
export function fpmFrame(payload: Uint8Array, opts: { version?: number; type?: number; length?: number } = {}): Uint8Array {
  const h = new Uint8Array(4);
  h[0] = opts.version ?? 1;
  h[1] = opts.type ?? 1;
  new DataView(h.buffer).setUint16(2, opts.length ?? 4 + payload.length, false);
  return concat(h, payload);
}
