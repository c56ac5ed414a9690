// IPv6 through the router (RFC 8200, RFC 4443): NDP and router advertisements, the router's
// own addresses (echo, port unreachable), hop limit, longest-prefix match with ECMP, packet
// too big (routers never fragment IPv6) and ICMPv6 errors under a rate limit.
import {
  ETH_HLEN, ETHERTYPE_IPV6, ICMP6_ERROR_MAX, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_HLEN, Ipv6Walk, adjustChecksum, finishChecksum, icmp6Error,
  ipv6PseudoSum, isUnspecifiedOrLoopback6, macHi, macLo, onesSum, read16, read32, readInt32, writeEthernet, type PacketBatch,
} from '../../src/pipeline/api.ts';
import { KIND_BLACKHOLE, KIND_GATEWAY, LOCAL_GROUP, MEMBER_WORDS, NO_ROUTE } from './fib.ts';
import { RPF_OFF, type Interface } from './interfaces.ts';
import { deliver, isOwn6, ndpIn, ND_NA, ND_NS, ND_RA, ND_RS, SENT, UNREACHABLE, type NextHop } from './neighbour-io.ts';
import { sourcePasses } from './reverse-path.ts';
import type { Router } from './router.ts';

const DEST_UNREACHABLE = 1;
const PACKET_TOO_BIG = 2;
const TIME_EXCEEDED = 3;
const ECHO_REQUEST = 128;
const ECHO_REPLY = 129;
const UNREACH_NO_ROUTE = 0;
const UNREACH_BEYOND_SCOPE = 2;
const UNREACH_ADDRESS = 3;
const UNREACH_PORT = 4;

const nh: NextHop = { iface: 0, family: 6, a0: 0, a1: 0, a2: 0, a3: 0 };

/**
 * Packet i, an IPv6 frame on interface `iface`, to the router's MAC (`toRouter`) or to a
 * multicast MAC. Returns having decided, or left the frame undecided for the bridge.
 */
export function ipv6In(r: Router, batch: PacketBatch, i: number, iface: Interface, toRouter: boolean): void {
  const d = batch.data;
  const off = batch.offset(i);
  const len = batch.length(i);
  const ip = off + ETH_HLEN;
  const bridged = iface.bridge !== null;
  if (len < ETH_HLEN + IPV6_HLEN || d[ip] >> 4 !== 6) {
    if (toRouter || !bridged) batch.dropAs(i, r.drop.ip_header_bad);
    return;
  }
  const payloadLength = read16(d, ip + 4);
  if (ETH_HLEN + IPV6_HLEN + payloadLength > len) {
    if (toRouter || !bridged) batch.dropAs(i, r.drop.ip_length_bad);
    return;
  }
  const next = d[ip + 6];
  const icmpType = next === IPPROTO_ICMPV6 && payloadLength >= 8 ? d[ip + IPV6_HLEN] : -1;
  if (d[ip + 24] === 0xff) {
    // Multicast: NDP for the router is answered; the rest is the segment's (the bridge's).
    const ndp = icmpType >= ND_RS && icmpType <= ND_NA;
    if (ndp && icmpType !== ND_RA && ndpIn(r, batch, i, iface, icmpType, payloadLength)) return;
    // Link-scope groups (ff02::/16: OSPFv3, MLD) are the Linux mirror's, where there is one.
    if (!ndp && d[ip + 25] === 0x02 && r.punt(batch, i, iface)) return;
    if (!bridged) batch.dropAs(i, r.drop.not_routable);
    return;
  }
  if (!toRouter) return;
  if (len > ETH_HLEN + IPV6_HLEN + payloadLength) batch.setLength(i, ETH_HLEN + IPV6_HLEN + payloadLength);
  if (d[ip + 8] === 0xff) {
    batch.dropAs(i, r.drop.not_routable);
    return;
  }
  if ((icmpType === ND_NS || icmpType === ND_NA) && isOwn6(r, iface, d, ip + 24)) {
    if (!ndpIn(r, batch, i, iface, icmpType, payloadLength)) batch.dropAs(i, r.drop.ndp_bad);
    return;
  }
  // RFC 4291 2.5.2 and 2.5.3: the unspecified address is no one's, the loopback address
  // never leaves its node; as IPv4's 0/8 and 127/8 above (RFC 1812 5.3.7). An IPv4-mapped
  // source (RFC 4291 2.5.5.2) is a host's own IPv4 as a dual-stack socket shows it, never on
  // the wire: from a guest, it would reach another's dual-stack sockets as ::ffff:127.0.0.1
  // or any IPv4 address it likes (Linux drops it as it comes in).
  if (isUnspecifiedOrLoopback6(d, ip + 8) || isUnspecifiedOrLoopback6(d, ip + 24) || isV4Mapped(d, ip + 8)) {
    batch.dropAs(i, r.drop.not_routable);
    return;
  }
  const fromLinkLocal = d[ip + 8] === 0xfe && (d[ip + 9] & 0xc0) === 0x80;
  // Link-local sources are the link's own (never routed; the link-local address is on every interface).
  if (iface.rpf !== RPF_OFF && !fromLinkLocal && !sourcePasses(r, r.lpm6.lookup(d, ip + 8), iface)) {
    batch.dropAs(i, r.drop.reverse_path);
    return;
  }
  const group = r.lpm6.lookup(d, ip + 24);
  const toLinkLocal = d[ip + 24] === 0xfe && (d[ip + 25] & 0xc0) === 0x80;
  // A link-local address is its interface's alone (RFC 4007 6: a zone of its own): another
  // interface's, asked for on this link, is no address here.
  if (group === LOCAL_GROUP && !(toLinkLocal && !isOwn6(r, iface, d, ip + 24))) {
    local(r, batch, i, iface, payloadLength, icmpType);
    return;
  }
  // Link-local addresses never leave their link (RFC 4291 2.5.6). From one to a global
  // address: destination unreachable, beyond the scope of the source (RFC 4443 3.1, code 2),
  // from the router's own link-local address.
  if (fromLinkLocal || toLinkLocal) {
    if (!toLinkLocal) icmpError(r, batch, i, iface, DEST_UNREACHABLE, UNREACH_BEYOND_SCOPE, 0, iface.linkLocal);
    batch.dropAs(i, r.drop.not_routable);
    return;
  }
  const hopLimit = d[ip + 7];
  if (hopLimit <= 1) {
    icmpError(r, batch, i, iface, TIME_EXCEEDED, 0, 0);
    batch.dropAs(i, r.drop.ttl_exceeded);
    return;
  }
  if (group === NO_ROUTE) {
    icmpError(r, batch, i, iface, DEST_UNREACHABLE, UNREACH_NO_ROUTE, 0);
    batch.dropAs(i, r.drop.no_route);
    return;
  }
  const hops = r.nextHops;
  const w = hops.words;
  const start = w[hops.groupBase + group * 2];
  const members = w[hops.groupBase + group * 2 + 1];
  const m = hops.memberBase + (start + (members > 1 ? flowMember(d, ip, members) : 0)) * MEMBER_WORDS;
  const kind = w[m];
  if (kind === KIND_BLACKHOLE) {
    batch.dropAs(i, r.drop.blackhole);
    return;
  }
  nh.iface = w[m + 1];
  nh.family = 6;
  if (kind === KIND_GATEWAY) {
    nh.a0 = w[m + 2];
    nh.a1 = w[m + 3];
    nh.a2 = w[m + 4];
    nh.a3 = w[m + 5];
  } else {
    nh.a0 = readInt32(d, ip + 24);
    nh.a1 = readInt32(d, ip + 28);
    nh.a2 = readInt32(d, ip + 32);
    nh.a3 = readInt32(d, ip + 36);
  }
  const out = r.interfaces[nh.iface];
  // A super-frame (TSO) leaves as segments: theirs is the length the MTU must allow.
  const segment = batch.segmentLength(i);
  if ((segment === 0 ? IPV6_HLEN + payloadLength : segment) > out.mtu) {
    icmpError(r, batch, i, iface, PACKET_TOO_BIG, 0, out.mtu);
    batch.dropAs(i, r.drop.mtu_exceeded);
    return;
  }
  d[ip + 7] = hopLimit - 1;
  const result = deliver(r, batch, i, nh);
  if (result === SENT) r.routedInBatch++;
  else if (result === UNREACHABLE) {
    icmpError(r, batch, i, iface, DEST_UNREACHABLE, UNREACH_ADDRESS, 0);
    batch.dropAs(i, r.drop.neighbour_unreachable);
  }
}

/** Whether the 16 bytes at `at` are an IPv4-mapped IPv6 address, ::ffff:0:0/96. */
function isV4Mapped(d: Uint8Array, at: number): boolean {
  return read32(d, at) === 0 && read32(d, at + 4) === 0 && read32(d, at + 8) === 0xffff;
}

/** Which of a group's `members` ECMP picks, by the flow's hash (addresses, flow label, ports): as IPv4's flowMember. */
export function flowMember(d: Uint8Array, ip: number, members: number): number {
  let h = Math.imul(readInt32(d, ip + 20) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(readInt32(d, ip + 36), 0xc2b2ae35);
  h ^= Math.imul(readInt32(d, ip + 16) ^ readInt32(d, ip + 32), 0x165667b1) ^ (readInt32(d, ip) & 0xfffff);
  const next = d[ip + 6];
  if (next === IPPROTO_TCP || next === IPPROTO_UDP) h ^= Math.imul(readInt32(d, ip + IPV6_HLEN), 0x27d4eb2f);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return ((h ^ (h >>> 12)) >>> 0) % members;
}

/** For one of the router's addresses: echo answered; the rest to the Linux mirror, or UDP port unreachable and dropped. */
function local(r: Router, batch: PacketBatch, i: number, iface: Interface, payloadLength: number, icmpType: number): void {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const icmp = ip + IPV6_HLEN;
  if (icmpType === ECHO_REQUEST) {
    if (finishChecksum(onesSum(d, icmp, icmp + payloadLength, ipv6PseudoSum(d, ip, payloadLength, IPPROTO_ICMPV6))) !== 0) {
      batch.dropAs(i, r.drop.ip_checksum_bad);
      return;
    }
    // Addresses swapped: the pseudo-header sum stays; only the type word changes.
    for (let b = 0; b < 16; b++) {
      const t = d[ip + 8 + b];
      d[ip + 8 + b] = d[ip + 24 + b];
      d[ip + 24 + b] = t;
    }
    d[ip + 7] = 64;
    d[icmp] = ECHO_REPLY;
    write16Checksum(d, icmp, (ECHO_REQUEST << 8) | d[icmp + 1], (ECHO_REPLY << 8) | d[icmp + 1]);
    writeEthernet(d, off, macHi(d, off + 6), macLo(d, off + 6), iface.macHi, iface.macLo, ETHERTYPE_IPV6);
    batch.egress[i] = batch.ingress;
    batch.local[i] = 1;
    r.count(batch.ingress, r.counter.echo_replies_sent, 1);
    return;
  }
  if (r.punt(batch, i, iface)) return;
  // RFC 4443 2.2 (a): from the address the packet was sent to.
  if (d[ip + 6] === IPPROTO_UDP) icmpError(r, batch, i, iface, DEST_UNREACHABLE, UNREACH_PORT, 0, d.subarray(ip + 24, ip + 40));
  batch.dropAs(i, r.drop.local_unhandled);
}

function write16Checksum(d: Uint8Array, icmp: number, from: number, to: number): void {
  const c = adjustChecksum(read16(d, icmp + 2), from, to);
  d[icmp + 2] = c >>> 8;
  d[icmp + 3] = c & 0xff;
}

/** scratch for the upper-layer header of the packet at hand (no allocation per packet) */
const walk = new Ipv6Walk();

/** ICMPv6 address unreachable about packet i (its next hop did not answer), back out of `iface`. */
export function addressUnreachable(r: Router, batch: PacketBatch, i: number, iface: Interface): void {
  icmpError(r, batch, i, iface, DEST_UNREACHABLE, UNREACH_ADDRESS, 0);
}

/**
 * An ICMPv6 error about packet i, sent back out of its ingress port (RFC 4443 2.4): never
 * about an ICMPv6 error (behind extension headers too), nor about a packet whose
 * extension headers cannot be read to tell, nor to a multicast or unspecified source;
 * within the rate limit.
 */
function icmpError(r: Router, batch: PacketBatch, i: number, iface: Interface, type: number, code: number, rest: number, source = r.src6[iface.index]): void {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const end = off + batch.length(i);
  walk.walk(d, ip + IPV6_HLEN, end, d[ip + 6]);
  if (walk.protocol < 0) return;
  if (walk.protocol === IPPROTO_ICMPV6 && !walk.laterFragment && (walk.offset >= end || d[walk.offset] < 128)) return;
  if (d[ip + 8] === 0xff || (read32(d, ip + 8) === 0 && read32(d, ip + 12) === 0 && read32(d, ip + 16) === 0 && read32(d, ip + 20) === 0)) return;
  if ((d[off] & 1) !== 0 && type !== PACKET_TOO_BIG) return;
  const buckets = type === PACKET_TOO_BIG ? r.pathMtuBuckets : r.icmpBuckets;
  if (!buckets.takeNow(batch.ingress, r.config.icmpRate, r.config.icmpBurst)) {
    r.count(batch.ingress, r.counter.icmp_errors_rate_limited, 1);
    return;
  }
  const j = batch.emit(batch.ingress);
  if (j < 0) {
    r.count(batch.ingress, r.counter.icmp_errors_no_room, 1);
    return;
  }
  const o = batch.offset(j);
  const length = Math.min(batch.length(i), ETH_HLEN + ICMP6_ERROR_MAX - IPV6_HLEN - 8);
  d.copyWithin(o, off, off + length);
  batch.setLength(j, icmp6Error(d, o, length, type, code, rest, source, batch.receivedSource(i), iface.macHi, iface.macLo));
  r.count(batch.ingress, r.counter.icmp_errors_sent, 1);
}
