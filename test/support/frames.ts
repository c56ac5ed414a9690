// Ethernet frames for tests: builders that return complete frames (lengths and checksums
// right, as a Linux guest would send them) and one parser that reads back whatever a test
// receives, including what the router writes (ARP, NDP, ICMP errors, fragments).
// Kept apart from src/pipeline/net.ts on purpose: a test that checks the router's header
// code with that same code would prove nothing.
import { Address4, Address6 } from 'ip-address';

const DEFAULT_DST_MAC = '02:00:00:00:00:01';
const DEFAULT_SRC_MAC = '52:54:00:00:00:02';
const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const PROTO_ICMPV6 = 58;
// RFC 8200 4: the extension headers parseFrame walks past to find the upper layer.
const V6_HOP_BY_HOP = 0;
const V6_ROUTING = 43;
const V6_FRAGMENT = 44;
const V6_DEST_OPTS = 60;
// RFC 4861 4.6: NDP option types
const NDP_OPT_SOURCE_LINK_ADDR = 1;
const NDP_OPT_TARGET_LINK_ADDR = 2;
const NDP_OPT_PREFIX_INFO = 3;
const NDP_OPT_MTU = 5;
const NDP_OPT_RDNSS = 25;
const NDP_OPT_DNSSL = 31;

export interface L2 {
  /** default 02:00:00:00:00:01 (for a multicast or broadcast IP destination: the MAC it maps to) */
  dstMac?: string;
  /** default 52:54:00:00:00:02 */
  srcMac?: string;
  /** adds an 802.1Q tag with this VLAN id */
  vlan?: number;
}

export interface Ip4Opts extends L2 {
  src: string;
  dst: string;
  /** default 64 */
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** in bytes, a multiple of 8 */
  fragOffset?: number;
  /** header length in 32-bit words, default 5; more pads the options with NOPs */
  ihl?: number;
}

export interface Ip6Opts extends L2 {
  src: string;
  dst: string;
  /** default 64 */
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

/** Bytes, or a count of zero bytes. */
export type Payload = Uint8Array | number;

export interface PortOpts {
  srcPort: number;
  dstPort: number;
  payload?: Payload;
}

export interface TcpOpts extends PortOpts {
  /** letters of F S R P A U E C, any order: 'S', 'SA', 'PA' …; default 'A' */
  flags?: string;
  seq?: number;
  ack?: number;
  /** default 64240 */
  window?: number;
}

export interface IcmpOpts {
  type: number;
  code?: number;
  /** echo identifier and sequence number, the 4 bytes after the checksum */
  id?: number;
  seq?: number;
  payload?: Payload;
  /** the 4 bytes after the checksum as one number, instead of id/seq (e.g. an MTU) */
  rest?: number;
}

export interface Icmp6Opts extends IcmpOpts {
  /** the raw body after the 4-byte type/code/checksum header, instead of id/seq/payload */
  body?: Uint8Array;
}

export interface ArpOpts extends L2 {
  op: 'request' | 'reply';
  senderMac: string;
  senderIp: string;
  /** default 00:00:00:00:00:00 for a request, the Ethernet destination for a reply */
  targetMac?: string;
  targetIp: string;
}

export interface ParsedArp {
  op: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

export interface ParsedIp {
  version: 4 | 6;
  src: string;
  dst: string;
  /** the hop limit for IPv6 */
  ttl: number;
  /** IPv4 protocol; for IPv6 the upper-layer protocol after any extension headers */
  protocol: number;
  /** always true for IPv6, which has no header checksum */
  headerChecksumOk: boolean;
  /** IPv4: the total length field; IPv6: the payload length + 40 */
  totalLength: number;
  /** IPv4, or IPv6 with a fragment header */
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** in bytes */
  fragOffset?: number;
  /** IPv4 TOS, IPv6 traffic class */
  tos: number;
}

export interface ParsedL4 {
  srcPort?: number;
  dstPort?: number;
  /** ICMP / ICMPv6 */
  type?: number;
  code?: number;
  /** false when the packet is cut short or is a fragment (the checksum covers the whole datagram) */
  checksumOk: boolean;
  /** in the order F S R P A U E C, e.g. 'SA' */
  tcpFlags?: string;
  /** ICMP bytes 4..8 as one number (echo id << 16 | seq, the MTU of "fragmentation needed" …) */
  rest?: number;
  /** offset in the frame of the L4 payload; for ICMP, of what follows the 8-byte header */
  payloadOffset: number;
}

export interface ParsedPrefix {
  prefix: string;
  length: number;
  onLink: boolean;
  autonomous: boolean;
  validLifetime: number;
  preferredLifetime: number;
}

export interface ParsedNdp {
  type: number;
  /** NS, NA and Redirect */
  target?: string;
  /** every option in order; value is what follows the 2-byte type/length */
  options: { type: number; value: Uint8Array }[];
  /** RA: the prefix information options */
  prefixes?: ParsedPrefix[];
  /** RA, seconds */
  routerLifetime?: number;
  curHopLimit?: number;
  /** RA: the MTU option */
  mtu?: number;
  /** RA: the M and O flags, and the default router preference (RFC 4191: the 2-bit field) */
  managed?: boolean;
  otherConfig?: boolean;
  preference?: number;
  /** RA: the RDNSS option (RFC 8106 5.1) */
  rdnss?: { lifetime: number; servers: string[] };
  /** RA: the DNSSL option (RFC 8106 5.2), its names with no final dot */
  dnssl?: { lifetime: number; domains: string[] };
  /** NA: the R, S, O flags */
  router?: boolean;
  solicited?: boolean;
  override?: boolean;
}

export interface ParsedFrame {
  dstMac: string;
  srcMac: string;
  vlan?: number;
  /** after a VLAN tag, the inner one */
  etherType: number;
  /** the frame's length in bytes */
  length: number;
  arp?: ParsedArp;
  ip?: ParsedIp;
  l4?: ParsedL4;
  ndp?: ParsedNdp;
}

// ---- addresses -------------------------------------------------------------------------------

export function macBytes(mac: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new TypeError(`not a MAC address: ${JSON.stringify(mac)}`);
  return Uint8Array.from(mac.split(':'), (h) => parseInt(h, 16));
}

export function formatMacBytes(b: Uint8Array, off = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push((b[off + i] ?? 0).toString(16).padStart(2, '0'));
  return parts.join(':');
}

function ip4Bytes(ip: string): Uint8Array {
  if (typeof ip !== 'string' || ip.includes('/') || !Address4.isValid(ip)) throw new TypeError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  return Uint8Array.from(new Address4(ip).toArray());
}

function ip6Bytes(ip: string): Uint8Array {
  if (typeof ip !== 'string' || ip.includes('/') || !Address6.isValid(ip)) throw new TypeError(`not an IPv6 address: ${JSON.stringify(ip)}`);
  const out = new Uint8Array(16);
  let n = new Address6(ip).bigInt();
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

function formatIp4(d: Uint8Array, o: number): string {
  return Address4.fromByteArray([d[o], d[o + 1], d[o + 2], d[o + 3]]).correctForm();
}

function formatIp6(d: Uint8Array, o: number): string {
  return Address6.fromUnsignedByteArray([...d.subarray(o, o + 16)]).correctForm();
}

/** RFC 4291 2.7.1: ff02::1:ffXX:XXXX, from the low 24 bits of the address. */
function solicitedNode(target: Uint8Array): Uint8Array {
  const a = new Uint8Array(16);
  a.set([0xff, 0x02], 0);
  a.set([0x01, 0xff], 11);
  a.set(target.subarray(13), 13);
  return a;
}

/** RFC 2464 7: an IPv6 multicast address goes to 33:33 + its low 32 bits. */
function multicastMac6(dst: Uint8Array): string {
  return formatMacBytes(Uint8Array.of(0x33, 0x33, dst[12], dst[13], dst[14], dst[15]));
}

/** RFC 1112 6.4: 01:00:5e + the low 23 bits; 255.255.255.255 is the broadcast MAC. */
function defaultMac4(dst: Uint8Array): string | undefined {
  if (dst.every((b) => b === 255)) return BROADCAST_MAC;
  if ((dst[0] & 0xf0) === 0xe0) return formatMacBytes(Uint8Array.of(0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]));
  return undefined;
}

// ---- checksums (RFC 1071) --------------------------------------------------------------------

function onesSum(d: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (d[i] << 8) | d[i + 1];
  if (i < end) sum += d[i] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** RFC 768 / RFC 793 pseudo-header: source, destination, zero, protocol, L4 length. */
function pseudoSum4(src: Uint8Array, dst: Uint8Array, protocol: number, length: number): number {
  return onesSum(dst, 0, 4, onesSum(src, 0, 4, protocol + length));
}

/** RFC 8200 8.1 pseudo-header: source, destination, 32-bit upper-layer length, next header. */
function pseudoSum6(src: Uint8Array, dst: Uint8Array, protocol: number, length: number): number {
  return onesSum(dst, 0, 16, onesSum(src, 0, 16, (length >>> 16) + (length & 0xffff) + protocol));
}

function put16(d: Uint8Array, o: number, v: number): void {
  d[o] = (v >>> 8) & 0xff;
  d[o + 1] = v & 0xff;
}

function put32(d: Uint8Array, o: number, v: number): void {
  put16(d, o, v >>> 16);
  put16(d, o + 2, v & 0xffff);
}

function get16(d: Uint8Array, o: number): number {
  return (d[o] << 8) | d[o + 1];
}

function get32(d: Uint8Array, o: number): number {
  return ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
}

function payloadBytes(p: Payload | undefined): Uint8Array {
  if (p === undefined) return new Uint8Array(0);
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0) throw new RangeError(`payload length must be a non-negative integer, got ${p}`);
    return new Uint8Array(p);
  }
  return p;
}

function checkRange(what: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} must be an integer in 0..${max}, got ${v}`);
  return v;
}

// ---- layer 2 ---------------------------------------------------------------------------------

function ethernet(l2: L2, defaultDst: string, etherType: number, body: Uint8Array): Uint8Array {
  const tag = l2.vlan === undefined ? 0 : 4;
  const f = new Uint8Array(14 + tag + body.length);
  f.set(macBytes(l2.dstMac ?? defaultDst), 0);
  f.set(macBytes(l2.srcMac ?? DEFAULT_SRC_MAC), 6);
  if (l2.vlan !== undefined) {
    put16(f, 12, ETHERTYPE_VLAN);
    put16(f, 14, checkRange('vlan', l2.vlan, 4095));
  }
  put16(f, 12 + tag, etherType);
  f.set(body, 14 + tag);
  return f;
}

// ---- IPv4 ------------------------------------------------------------------------------------

/** An IPv4 packet (header with checksum + the given L4 bytes, which are not touched). */
function ipv4Packet(o: Ip4Opts, protocol: number, l4: Uint8Array): Uint8Array {
  const ihl = checkRange('ihl', o.ihl ?? 5, 15);
  if (ihl < 5) throw new RangeError(`ihl must be at least 5, got ${ihl}`);
  const hlen = ihl * 4;
  const total = hlen + l4.length;
  if (total > 0xffff) throw new RangeError(`IPv4 packet of ${total} bytes is over 65535`);
  const frag = o.fragOffset ?? 0;
  if (frag % 8 !== 0) throw new RangeError(`fragOffset is in bytes and must be a multiple of 8, got ${frag}`);
  checkRange('fragOffset / 8', frag / 8, 0x1fff);
  const p = new Uint8Array(total);
  p[0] = 0x40 | ihl;
  p[1] = checkRange('tos', o.tos ?? 0, 255);
  put16(p, 2, total);
  put16(p, 4, checkRange('id', o.id ?? 0, 0xffff));
  put16(p, 6, (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | (frag / 8));
  p[8] = checkRange('ttl', o.ttl ?? 64, 255);
  p[9] = checkRange('protocol', protocol, 255);
  p.set(ip4Bytes(o.src), 12);
  p.set(ip4Bytes(o.dst), 16);
  p.fill(1, 20, hlen); // RFC 791: option type 1 is No Operation
  put16(p, 10, fold(onesSum(p, 0, hlen)));
  p.set(l4, hlen);
  return p;
}

function frame4(o: Ip4Opts, protocol: number, l4: Uint8Array): Uint8Array {
  const dst = ip4Bytes(o.dst);
  return ethernet(o, defaultMac4(dst) ?? DEFAULT_DST_MAC, ETHERTYPE_IPV4, ipv4Packet(o, protocol, l4));
}

export function ipv4Raw(o: Ip4Opts & { protocol: number; payload: Uint8Array }): Uint8Array {
  return frame4(o, o.protocol, o.payload);
}

function udpSegment(o: PortOpts): Uint8Array {
  const payload = payloadBytes(o.payload);
  const s = new Uint8Array(8 + payload.length);
  put16(s, 0, checkRange('srcPort', o.srcPort, 0xffff));
  put16(s, 2, checkRange('dstPort', o.dstPort, 0xffff));
  put16(s, 4, s.length > 0xffff ? 0 : s.length);
  s.set(payload, 8);
  return s;
}

const TCP_FLAG_LETTERS = 'FSRPAUEC';

function tcpFlagBits(flags: string): number {
  let bits = 0;
  for (const c of flags.toUpperCase()) {
    const i = TCP_FLAG_LETTERS.indexOf(c);
    if (i < 0) throw new TypeError(`unknown TCP flag ${JSON.stringify(c)} in ${JSON.stringify(flags)} (use F S R P A U E C)`);
    bits |= 1 << i;
  }
  return bits;
}

function tcpFlagLetters(bits: number): string {
  let s = '';
  for (let i = 0; i < 8; i++) if (bits & (1 << i)) s += TCP_FLAG_LETTERS[i];
  return s;
}

function tcpSegment(o: TcpOpts): Uint8Array {
  const payload = payloadBytes(o.payload);
  const s = new Uint8Array(20 + payload.length);
  put16(s, 0, checkRange('srcPort', o.srcPort, 0xffff));
  put16(s, 2, checkRange('dstPort', o.dstPort, 0xffff));
  put32(s, 4, checkRange('seq', o.seq ?? 0, 0xffffffff));
  put32(s, 8, checkRange('ack', o.ack ?? 0, 0xffffffff));
  s[12] = 5 << 4;
  s[13] = tcpFlagBits(o.flags ?? 'A');
  put16(s, 14, checkRange('window', o.window ?? 64240, 0xffff));
  s.set(payload, 20);
  return s;
}

function icmpMessage(o: IcmpOpts): Uint8Array {
  const payload = payloadBytes(o.payload);
  const m = new Uint8Array(8 + payload.length);
  m[0] = checkRange('type', o.type, 255);
  m[1] = checkRange('code', o.code ?? 0, 255);
  if (o.rest !== undefined) put32(m, 4, checkRange('rest', o.rest, 0xffffffff));
  else {
    put16(m, 4, checkRange('id', o.id ?? 0, 0xffff));
    put16(m, 6, checkRange('seq', o.seq ?? 0, 0xffff));
  }
  m.set(payload, 8);
  return m;
}

/** Writes the checksum of an L4 segment at `at`; UDP's 0 goes on the wire as 0xffff (RFC 768). */
function seal(seg: Uint8Array, at: number, pseudo: number, udp: boolean): Uint8Array {
  put16(seg, at, 0);
  const c = fold(onesSum(seg, 0, seg.length, pseudo));
  put16(seg, at, udp && c === 0 ? 0xffff : c);
  return seg;
}

export function udp4(o: Ip4Opts & PortOpts): Uint8Array {
  const s = udpSegment(o);
  return frame4(o, PROTO_UDP, seal(s, 6, pseudoSum4(ip4Bytes(o.src), ip4Bytes(o.dst), PROTO_UDP, s.length), true));
}

export function tcp4(o: Ip4Opts & TcpOpts): Uint8Array {
  const s = tcpSegment(o);
  return frame4(o, PROTO_TCP, seal(s, 16, pseudoSum4(ip4Bytes(o.src), ip4Bytes(o.dst), PROTO_TCP, s.length), false));
}

export function icmp4(o: Ip4Opts & IcmpOpts): Uint8Array {
  return frame4(o, PROTO_ICMP, seal(icmpMessage(o), 2, 0, false));
}

export function arp(o: ArpOpts): Uint8Array {
  const request = o.op === 'request';
  if (!request && o.op !== 'reply') throw new TypeError(`arp op must be 'request' or 'reply', got ${JSON.stringify(o.op)}`);
  const dstMac = o.dstMac ?? (request ? BROADCAST_MAC : DEFAULT_DST_MAC);
  // RFC 826: hardware type 1 (Ethernet), protocol 0x0800, lengths 6 and 4.
  const a = new Uint8Array(28);
  put16(a, 0, 1);
  put16(a, 2, ETHERTYPE_IPV4);
  a[4] = 6;
  a[5] = 4;
  put16(a, 6, request ? 1 : 2);
  a.set(macBytes(o.senderMac), 8);
  a.set(ip4Bytes(o.senderIp), 14);
  a.set(o.targetMac !== undefined ? macBytes(o.targetMac) : request ? new Uint8Array(6) : macBytes(dstMac), 18);
  a.set(ip4Bytes(o.targetIp), 24);
  return ethernet({ ...o, dstMac, srcMac: o.srcMac ?? o.senderMac }, dstMac, ETHERTYPE_ARP, a);
}

// ---- IPv6 ------------------------------------------------------------------------------------

function frame6(o: Ip6Opts, nextHeader: number, l4: Uint8Array, defaultDstMac?: string): Uint8Array {
  if (l4.length > 0xffff) throw new RangeError(`IPv6 payload of ${l4.length} bytes is over 65535 (no jumbograms)`);
  const src = ip6Bytes(o.src);
  const dst = ip6Bytes(o.dst);
  const p = new Uint8Array(40 + l4.length);
  const tc = checkRange('trafficClass', o.trafficClass ?? 0, 255);
  const fl = checkRange('flowLabel', o.flowLabel ?? 0, 0xfffff);
  put32(p, 0, ((6 << 28) | (tc << 20) | fl) >>> 0);
  put16(p, 4, l4.length);
  p[6] = nextHeader;
  p[7] = checkRange('hopLimit', o.hopLimit ?? 64, 255);
  p.set(src, 8);
  p.set(dst, 24);
  p.set(l4, 40);
  return ethernet(o, defaultDstMac ?? (dst[0] === 0xff ? multicastMac6(dst) : DEFAULT_DST_MAC), ETHERTYPE_IPV6, p);
}

function sealed6(o: Ip6Opts, protocol: number, seg: Uint8Array, at: number, udp: boolean): Uint8Array {
  return seal(seg, at, pseudoSum6(ip6Bytes(o.src), ip6Bytes(o.dst), protocol, seg.length), udp);
}

export function udp6(o: Ip6Opts & PortOpts): Uint8Array {
  return frame6(o, PROTO_UDP, sealed6(o, PROTO_UDP, udpSegment(o), 6, true));
}

export function tcp6(o: Ip6Opts & TcpOpts): Uint8Array {
  return frame6(o, PROTO_TCP, sealed6(o, PROTO_TCP, tcpSegment(o), 16, false));
}

function icmp6Message(o: Icmp6Opts): Uint8Array {
  if (o.body === undefined) return icmpMessage(o);
  const m = new Uint8Array(4 + o.body.length);
  m[0] = checkRange('type', o.type, 255);
  m[1] = checkRange('code', o.code ?? 0, 255);
  m.set(o.body, 4);
  return m;
}

export function icmp6(o: Ip6Opts & Icmp6Opts): Uint8Array {
  return frame6(o, PROTO_ICMPV6, sealed6(o, PROTO_ICMPV6, icmp6Message(o), 2, false));
}

/** RFC 4861 4.6.1: a link-layer address option (8 bytes for Ethernet). */
function linkAddrOption(type: number, mac: string): Uint8Array {
  const opt = new Uint8Array(8);
  opt[0] = type;
  opt[1] = 1;
  opt.set(macBytes(mac), 2);
  return opt;
}

/** The parts, one after another, in one array. */
export function joinBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** RFC 4861 7.2.2: to the target's solicited-node group, hop limit 255, unless `dst` says otherwise (then give `dstMac` too). */
export function neighbourSolicitation(o: L2 & { src: string; target: string; sourceLinkAddr?: string; dst?: string }): Uint8Array {
  const target = ip6Bytes(o.target);
  const group = solicitedNode(target);
  // RFC 4861 4.3: 4 reserved bytes, the target address, options.
  const body = joinBytes([new Uint8Array(4), target, o.sourceLinkAddr ? linkAddrOption(NDP_OPT_SOURCE_LINK_ADDR, o.sourceLinkAddr) : new Uint8Array(0)]);
  const ip: Ip6Opts = { ...o, dst: o.dst ?? formatIp6(group, 0), hopLimit: 255 };
  return frame6(ip, PROTO_ICMPV6, sealed6(ip, PROTO_ICMPV6, icmp6Message({ type: 135, body }), 2, false), o.dstMac ?? multicastMac6(group));
}

/** RFC 4861 4.4; hop limit 255. */
export function neighbourAdvertisement(o: L2 & { src: string; dst: string; target: string; targetLinkAddr?: string; solicited?: boolean; override?: boolean; router?: boolean }): Uint8Array {
  const flags = Uint8Array.of((o.router ? 0x80 : 0) | (o.solicited ? 0x40 : 0) | (o.override ? 0x20 : 0), 0, 0, 0);
  const body = joinBytes([flags, ip6Bytes(o.target), o.targetLinkAddr ? linkAddrOption(NDP_OPT_TARGET_LINK_ADDR, o.targetLinkAddr) : new Uint8Array(0)]);
  const ip: Ip6Opts = { ...o, hopLimit: 255 };
  return frame6(ip, PROTO_ICMPV6, sealed6(ip, PROTO_ICMPV6, icmp6Message({ type: 136, body }), 2, false));
}

/** RFC 4861 4.1: to all-routers (ff02::2), hop limit 255. */
export function routerSolicitation(o: L2 & { src: string; sourceLinkAddr?: string }): Uint8Array {
  const body = joinBytes([new Uint8Array(4), o.sourceLinkAddr ? linkAddrOption(NDP_OPT_SOURCE_LINK_ADDR, o.sourceLinkAddr) : new Uint8Array(0)]);
  const ip: Ip6Opts = { ...o, dst: 'ff02::2', hopLimit: 255 };
  return frame6(ip, PROTO_ICMPV6, sealed6(ip, PROTO_ICMPV6, icmp6Message({ type: 133, body }), 2, false), o.dstMac ?? '33:33:00:00:00:02');
}

// ---- parsing ---------------------------------------------------------------------------------

/**
 * Reads a frame back. Never throws: on a short or garbled frame the parts it cannot read are
 * absent, and a checksum over bytes that are not all there is reported as not ok.
 */
export function parseFrame(frame: Uint8Array): ParsedFrame {
  const out: ParsedFrame = { dstMac: formatMacBytes(frame, 0), srcMac: formatMacBytes(frame, 6), etherType: -1, length: frame.length };
  if (frame.length < 14) return out;
  let o = 12;
  let etherType = get16(frame, o);
  if (etherType === ETHERTYPE_VLAN || etherType === ETHERTYPE_QINQ) {
    if (frame.length < 18) return out;
    out.vlan = get16(frame, 14) & 0x0fff;
    o += 4;
    etherType = get16(frame, o);
  }
  out.etherType = etherType;
  o += 2;
  if (etherType === ETHERTYPE_ARP) parseArp(frame, o, out);
  else if (etherType === ETHERTYPE_IPV4) parseIpv4(frame, o, out);
  else if (etherType === ETHERTYPE_IPV6) parseIpv6(frame, o, out);
  return out;
}

function parseArp(d: Uint8Array, o: number, out: ParsedFrame): void {
  if (d.length < o + 28 || get16(d, o) !== 1 || get16(d, o + 2) !== ETHERTYPE_IPV4 || d[o + 4] !== 6 || d[o + 5] !== 4) return;
  out.arp = { op: get16(d, o + 6), senderMac: formatMacBytes(d, o + 8), senderIp: formatIp4(d, o + 14), targetMac: formatMacBytes(d, o + 18), targetIp: formatIp4(d, o + 24) };
}

function parseIpv4(d: Uint8Array, ip: number, out: ParsedFrame): void {
  if (d.length < ip + 20 || d[ip] >> 4 !== 4) return;
  const hlen = (d[ip] & 0x0f) * 4;
  const totalLength = get16(d, ip + 2);
  const flags = get16(d, ip + 6);
  const protocol = d[ip + 9];
  const headerOk = hlen >= 20 && d.length >= ip + hlen && fold(onesSum(d, ip, ip + hlen)) === 0;
  const fragOffset = (flags & 0x1fff) * 8;
  const mf = (flags & 0x2000) !== 0;
  out.ip = {
    version: 4,
    src: formatIp4(d, ip + 12),
    dst: formatIp4(d, ip + 16),
    ttl: d[ip + 8],
    protocol,
    headerChecksumOk: headerOk,
    totalLength,
    id: get16(d, ip + 4),
    df: (flags & 0x4000) !== 0,
    mf,
    fragOffset,
    tos: d[ip + 1],
  };
  if (hlen < 20 || fragOffset !== 0 || totalLength < hlen) return;
  const l4 = ip + hlen;
  const end = ip + totalLength;
  const pseudo = (len: number) => pseudoSum4(d.subarray(ip + 12, ip + 16), d.subarray(ip + 16, ip + 20), protocol, len);
  parseL4(d, l4, end, protocol, pseudo, mf, out);
}

function parseIpv6(d: Uint8Array, ip: number, out: ParsedFrame): void {
  if (d.length < ip + 40 || d[ip] >> 4 !== 6) return;
  const payloadLength = get16(d, ip + 4);
  const parsed: ParsedIp = {
    version: 6,
    src: formatIp6(d, ip + 8),
    dst: formatIp6(d, ip + 24),
    ttl: d[ip + 7],
    protocol: d[ip + 6],
    headerChecksumOk: true,
    totalLength: payloadLength + 40,
    tos: (get16(d, ip) >> 4) & 0xff,
  };
  out.ip = parsed;
  const end = ip + 40 + payloadLength;
  let next = d[ip + 6];
  let o = ip + 40;
  let fragment = false;
  // RFC 8200 4.1: walk the extension headers; a fragment that is not the first has no L4 header.
  for (let steps = 0; steps < 16; steps++) {
    if (next === V6_FRAGMENT) {
      if (d.length < o + 8) return;
      const offFlags = get16(d, o + 2);
      parsed.fragOffset = offFlags & 0xfff8;
      parsed.mf = (offFlags & 1) !== 0;
      parsed.id = get32(d, o + 4);
      fragment = parsed.fragOffset !== 0 || parsed.mf;
      next = d[o];
      o += 8;
      parsed.protocol = next;
      if (parsed.fragOffset !== 0) return;
    } else if (next === V6_HOP_BY_HOP || next === V6_ROUTING || next === V6_DEST_OPTS) {
      if (d.length < o + 2) return;
      const len = (d[o + 1] + 1) * 8;
      next = d[o];
      o += len;
      parsed.protocol = next;
    } else break;
  }
  if (end < o) return;
  const src = d.subarray(ip + 8, ip + 24);
  const dst = d.subarray(ip + 24, ip + 40);
  const protocol = next;
  parseL4(d, o, end, protocol, (len) => pseudoSum6(src, dst, protocol, len), fragment, out);
  if (protocol === PROTO_ICMPV6 && out.l4 && d.length >= o + 4) parseNdp(d, o, Math.min(end, d.length), out);
}

/** UDP, TCP, ICMP and ICMPv6 headers in d[l4..end), end being where the IP header says the packet ends. */
function parseL4(d: Uint8Array, l4: number, end: number, protocol: number, pseudo: (len: number) => number, fragment: boolean, out: ParsedFrame): void {
  const len = end - l4;
  const whole = end <= d.length && !fragment;
  const sumOk = (withPseudo: boolean) => whole && fold(onesSum(d, l4, end, withPseudo ? pseudo(len) : 0)) === 0;
  if (protocol === PROTO_UDP) {
    if (d.length < l4 + 8) return;
    // RFC 768: a zero checksum means none was computed (IPv4 only; RFC 8200 8.1 forbids it for IPv6).
    const none = get16(d, l4 + 6) === 0 && out.ip?.version === 4;
    out.l4 = { srcPort: get16(d, l4), dstPort: get16(d, l4 + 2), checksumOk: none ? whole : sumOk(true), payloadOffset: l4 + 8 };
  } else if (protocol === PROTO_TCP) {
    if (d.length < l4 + 20) return;
    out.l4 = { srcPort: get16(d, l4), dstPort: get16(d, l4 + 2), checksumOk: sumOk(true), tcpFlags: tcpFlagLetters(d[l4 + 13]), payloadOffset: l4 + (d[l4 + 12] >> 4) * 4 };
  } else if (protocol === PROTO_ICMP || protocol === PROTO_ICMPV6) {
    if (d.length < l4 + 4) return;
    out.l4 = { type: d[l4], code: d[l4 + 1], checksumOk: sumOk(protocol === PROTO_ICMPV6), payloadOffset: l4 + 8 };
    if (d.length >= l4 + 8) out.l4.rest = get32(d, l4 + 4);
  }
}

/** RFC 4861 4.1-4.5: RS, RA, NS, NA and Redirect, with their options. */
function parseNdp(d: Uint8Array, icmp: number, end: number, out: ParsedFrame): void {
  const type = d[icmp];
  const fixed: Record<number, number> = { 133: 8, 134: 16, 135: 24, 136: 24, 137: 40 };
  const optStart = fixed[type];
  if (optStart === undefined || end < icmp + optStart) return;
  const ndp: ParsedNdp = { type, options: [] };
  if (type === 134) {
    ndp.curHopLimit = d[icmp + 4];
    ndp.routerLifetime = get16(d, icmp + 6);
    ndp.managed = (d[icmp + 5] & 0x80) !== 0;
    ndp.otherConfig = (d[icmp + 5] & 0x40) !== 0;
    ndp.preference = (d[icmp + 5] >> 3) & 3;
    ndp.prefixes = [];
  }
  if (type >= 135) ndp.target = formatIp6(d, icmp + 8);
  if (type === 136) {
    ndp.router = (d[icmp + 4] & 0x80) !== 0;
    ndp.solicited = (d[icmp + 4] & 0x40) !== 0;
    ndp.override = (d[icmp + 4] & 0x20) !== 0;
  }
  // RFC 4861 4.6: the length is in units of 8 bytes; a zero length ends the walk (it is invalid).
  for (let o = icmp + optStart; o + 2 <= end; ) {
    const optLen = d[o + 1] * 8;
    if (optLen === 0 || o + optLen > end) break;
    const value = d.slice(o + 2, o + optLen);
    ndp.options.push({ type: d[o], value });
    if (d[o] === NDP_OPT_PREFIX_INFO && type === 134 && optLen >= 32) {
      // RFC 4861 4.6.2: prefix length, L|A flags, valid, preferred, reserved, prefix.
      ndp.prefixes!.push({
        prefix: formatIp6(d, o + 16),
        length: d[o + 2],
        onLink: (d[o + 3] & 0x80) !== 0,
        autonomous: (d[o + 3] & 0x40) !== 0,
        validLifetime: get32(d, o + 4),
        preferredLifetime: get32(d, o + 8),
      });
    } else if (d[o] === NDP_OPT_MTU && optLen >= 8) ndp.mtu = get32(d, o + 4);
    else if (d[o] === NDP_OPT_RDNSS && type === 134 && optLen >= 24) {
      const servers: string[] = [];
      for (let a = o + 8; a + 16 <= o + optLen; a += 16) servers.push(formatIp6(d, a));
      ndp.rdnss = { lifetime: get32(d, o + 4), servers };
    } else if (d[o] === NDP_OPT_DNSSL && type === 134 && optLen >= 16) {
      // Names as DNS labels, each ended by the root's empty label; zeros pad the option.
      const domains: string[] = [];
      let labels: string[] = [];
      for (let a = o + 8; a < o + optLen && a + d[a] < o + optLen; a += d[a] + 1) {
        if (d[a] === 0) {
          if (labels.length > 0) domains.push(labels.join('.'));
          labels = [];
        } else labels.push(String.fromCharCode(...d.subarray(a + 1, a + 1 + d[a])));
      }
      ndp.dnssl = { lifetime: get32(d, o + 4), domains };
    }
    o += optLen;
  }
  out.ndp = ndp;
}
