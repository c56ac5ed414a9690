// IPv4 through the router (RFC 1812): header checks, the router's own addresses (echo,
// port unreachable), TTL with the incremental checksum of RFC 1624, longest-prefix match
// with ECMP, the egress MTU (fragmentation, or fragmentation needed with DF: path MTU
// discovery, RFC 1191), and ICMP errors under a rate limit.
import {
  EGRESS_CONSUMED, ETH_HLEN, ICMP4_ERROR_MAX, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, adjustChecksum, finishChecksum, icmp4Error,
  ipv4HeaderChecksum, onesSum, read16, read32, readInt32, write16, write32, writeEthernet, macHi, macLo, ETHERTYPE_IPV4, type PacketBatch,
} from '../../src/pipeline/api.ts';
import { KIND_BLACKHOLE, KIND_GATEWAY, LOCAL_GROUP, MEMBER_WORDS, NO_ROUTE } from './fib.ts';
import { RPF_OFF, type Interface } from './interfaces.ts';
import { deliver, SENT, UNREACHABLE, type NextHop } from './neighbour-io.ts';
import { sourcePasses } from './reverse-path.ts';
import type { Router } from './router.ts';

const ICMP_ECHO_REPLY = 0;
const ICMP_UNREACHABLE = 3;
const ICMP_ECHO = 8;
const ICMP_TIME_EXCEEDED = 11;
const UNREACH_NET = 0;
const UNREACH_HOST = 1;
const UNREACH_PORT = 3;
const UNREACH_FRAG_NEEDED = 4;
const DF = 0x4000;
const MF = 0x2000;

/** Whether the host stores the low byte of a word first, as x86-64 and arm64 do. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** scratch for the next hop of the packet at hand (no allocation per packet) */
const nh: NextHop = { iface: 0, family: 4, a0: 0, a1: 0, a2: 0, a3: 0 };

/** Packet i (at `off` in batch.data, `len` bytes), an IPv4 frame to the router's MAC on interface `iface`. */
export function ipv4In(r: Router, batch: PacketBatch, i: number, iface: Interface, off: number, len: number): void {
  const d = batch.data;
  const ip = off + ETH_HLEN;
  if (len < ETH_HLEN + 20 || d[ip] >> 4 !== 4) {
    batch.dropAs(i, r.drop.ip_header_bad);
    return;
  }
  const ihl = (d[ip] & 15) * 4;
  if (ihl < 20 || ETH_HLEN + ihl > len) {
    batch.dropAs(i, r.drop.ip_header_bad);
    return;
  }
  const total = read16(d, ip + 2);
  if (total < ihl || ETH_HLEN + total > len) {
    batch.dropAs(i, r.drop.ip_length_bad);
    return;
  }
  if (!headerSumValid(r, d, ip, ihl)) {
    batch.dropAs(i, r.drop.ip_checksum_bad);
    return;
  }
  // Ethernet padding after the IP packet goes no further.
  if (len > ETH_HLEN + total) batch.setLength(i, ETH_HLEN + total);
  // The addresses as int32 (their bits; lpm4.lookup takes either): on a little-endian host
  // from two 16-bit loads each, byte swapped (ip is even: frames start 64-byte aligned),
  // rather than four byte loads. Not u32: past 2^31 (128.0.0.0 and up) a u32 is no small
  // integer, and a heap number at every call V8 does not inline (lookup, isBroadcast).
  const w16 = r.words16;
  let src: number;
  let dst: number;
  if (LITTLE_ENDIAN) {
    const at = ip >>> 1;
    const s0 = w16[at + 6];
    const s1 = w16[at + 7];
    const d0 = w16[at + 8];
    const d1 = w16[at + 9];
    src = ((s0 & 0xff) << 24) | ((s0 & 0xff00) << 8) | ((s1 & 0xff) << 8) | (s1 >>> 8);
    dst = ((d0 & 0xff) << 24) | ((d0 & 0xff00) << 8) | ((d1 & 0xff) << 8) | (d1 >>> 8);
  } else {
    src = readInt32(d, ip + 12);
    dst = readInt32(d, ip + 16);
  }
  // RFC 1812 5.3.7: martian sources, and destinations a router does not forward.
  const srcTop = src >>> 24;
  const dstTop = dst >>> 24;
  if (srcTop === 0 || srcTop === 127 || srcTop >= 224 || dstTop === 0 || dstTop === 127 || dstTop >= 224) {
    batch.dropAs(i, r.drop.not_routable);
    return;
  }
  if (iface.rpf !== RPF_OFF && !sourcePasses(r, r.lpm4.lookup(src), iface)) {
    batch.dropAs(i, r.drop.reverse_path);
    return;
  }
  const group = r.lpm4.lookup(dst);
  if (group === LOCAL_GROUP) {
    local(r, batch, i, iface, ihl, total);
    return;
  }
  if (group === NO_ROUTE) {
    icmpError(r, batch, i, iface, ICMP_UNREACHABLE, UNREACH_NET, 0);
    batch.dropAs(i, r.drop.no_route);
    return;
  }
  const hops = r.nextHops;
  const w = hops.words;
  const start = w[hops.groupBase + group * 2];
  const members = w[hops.groupBase + group * 2 + 1];
  const m = hops.memberBase + (start + (members > 1 ? flowMember(d, ip, ihl, members) : 0)) * MEMBER_WORDS;
  const kind = w[m];
  if (kind === KIND_BLACKHOLE) {
    batch.dropAs(i, r.drop.blackhole);
    return;
  }
  const outIndex = w[m + 1];
  const hop = kind === KIND_GATEWAY ? w[m + 2] : dst;
  // A subnet's broadcast address is not forwarded into it (RFC 2644).
  if (kind !== KIND_GATEWAY && isBroadcast(r, outIndex, dst)) {
    batch.dropAs(i, r.drop.not_routable);
    return;
  }
  // After the route, as Linux's ip_forward: no error about a broadcast (RFC 1812 4.3.2.7),
  // and a packet with no route is told so whatever its TTL.
  const ttl = d[ip + 8];
  if (ttl <= 1) {
    icmpError(r, batch, i, iface, ICMP_TIME_EXCEEDED, 0, 0);
    batch.dropAs(i, r.drop.ttl_exceeded);
    return;
  }
  const out = r.interfaces[outIndex];
  // A super-frame (TSO) leaves as segments: theirs is the length the MTU must allow, and
  // it is never fragmented (Linux sends TCP with DF; without, "fragmentation needed" too).
  const segment = batch.segmentLength(i);
  const oversize = (segment === 0 ? total : segment) > out.mtu;
  if (oversize && ((read16(d, ip + 6) & DF) !== 0 || segment !== 0)) {
    icmpError(r, batch, i, iface, ICMP_UNREACHABLE, UNREACH_FRAG_NEEDED, out.mtu & 0xffff);
    batch.dropAs(i, r.drop.mtu_exceeded);
    return;
  }
  // TTL - 1 and its checksum (decrementTtlBytes), here in machine-order words: written out,
  // not called, as a call would take V8's inlining budget from headerSumValid.
  if (LITTLE_ENDIAN) {
    const at = ip >>> 1;
    w16[at + 4] = w16[at + 4] - 1; // TTL > 1 here: no borrow into the protocol byte
    const check = (~w16[at + 5] & 0xffff) + 0xfffe;
    w16[at + 5] = ~((check & 0xffff) + (check >>> 16));
  } else decrementTtlBytes(d, ip);
  // The next hop of the packet before, in this burst: its MAC is known (a burst is mostly a
  // few flows), as it is for one resolved earlier in it (r.ipv4Hops); otherwise the
  // neighbour table decides (deliver).
  const w32 = r.words32;
  if (!oversize && ((outIndex === r.cacheIface && hop === r.cacheA0 && r.cacheFamily === 4) || r.ipv4Hops.recall(r, outIndex, hop))) {
    batch.saveSource(i);
    w32[off >>> 2] = r.cacheWord0;
    w16[(off >>> 1) + 2] = r.cacheHalf2;
    w16[(off >>> 1) + 3] = r.cacheHalf3;
    w32[(off >>> 2) + 2] = r.cacheWord2;
    batch.egress[i] = r.cachePort;
    r.routedInBatch++;
    return;
  }
  nh.iface = outIndex;
  nh.family = 4;
  nh.a0 = hop;
  nh.a1 = 0;
  nh.a2 = 0;
  nh.a3 = 0;
  let fragments = 0;
  let first = 0;
  if (oversize) {
    first = batch.count;
    fragments = fragment(batch, i, ihl, total, out.mtu);
    if (fragments < 0) {
      batch.dropAs(i, r.drop.fragmentation_failed);
      return;
    }
    r.count(batch.ingress, r.counter.fragments_created, fragments + 1);
  }
  sendOn(r, batch, i, iface);
  for (let f = 0; f < fragments; f++) sendOn(r, batch, first + f, iface);
}

/** ICMP host unreachable about packet i (its next hop did not answer), back out of `iface`. */
export function hostUnreachable(r: Router, batch: PacketBatch, i: number, iface: Interface): void {
  icmpError(r, batch, i, iface, ICMP_UNREACHABLE, UNREACH_HOST, 0);
}

function sendOn(r: Router, batch: PacketBatch, i: number, iface: Interface): void {
  const result = deliver(r, batch, i, nh);
  if (result === SENT) r.routedInBatch++;
  else if (result === UNREACHABLE) {
    icmpError(r, batch, i, iface, ICMP_UNREACHABLE, UNREACH_HOST, 0);
    batch.dropAs(i, r.drop.neighbour_unreachable);
  }
}

/**
 * Whether the header's ones' complement sum is 0xffff, as it is when its checksum is right
 * (RFC 1071). Summed in 16-bit loads of the machine's order: the ones' complement sum does
 * not depend on byte order (RFC 1071 2(B)), and 0xffff reads the same both ways. Ten loads
 * for the common 20-byte header, rather than twenty byte loads in a loop: this is per packet.
 */
function headerSumValid(r: Router, d: Uint8Array, ip: number, ihl: number): boolean {
  const w = r.words16;
  // NB: the byte loads apart, so that this stays small enough for V8 to inline.
  if ((ip & 1) !== 0) return headerSumValidBytes(d, ip, ihl);
  const at = ip >>> 1;
  let sum = w[at] + w[at + 1] + w[at + 2] + w[at + 3] + w[at + 4] + w[at + 5] + w[at + 6] + w[at + 7] + w[at + 8] + w[at + 9];
  for (let k = 10; k < ihl >>> 1; k++) sum += w[at + k];
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16) === 0xffff;
}

/** headerSumValid() on the header's bytes, at any offset. */
function headerSumValidBytes(d: Uint8Array, ip: number, ihl: number): boolean {
  let sum = 0;
  for (let k = 0; k < ihl; k += 2) sum += (d[ip + k] << 8) | d[ip + k + 1];
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16) === 0xffff;
}

/**
 * TTL - 1, and the checksum adjusted for that one word (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')),
 * in network byte order: m' = m - 0x100 (TTL is the high byte of word 4), so ~m + m' = 0xfeff
 * in ones' complement arithmetic. ipv4In does the same on machine-order words where the
 * host is little-endian: TTL is then the low byte, ~m + m' = 0xfffe, and as the ones'
 * complement sum does not depend on byte order (RFC 1071 2(B)) the result is the same
 * checksum, swapped. Two 16-bit loads and stores instead of four byte loads and three stores.
 */
export function decrementTtlBytes(d: Uint8Array, ip: number): void {
  d[ip + 8] = d[ip + 8] - 1;
  let check = (~((d[ip + 10] << 8) | d[ip + 11]) & 0xffff) + 0xfeff;
  check = (check & 0xffff) + (check >>> 16);
  check = ~check & 0xffff;
  d[ip + 10] = check >>> 8;
  d[ip + 11] = check & 0xff;
}

/** Whether dst (int32 or u32) is the broadcast address of one of the interface's subnets. */
function isBroadcast(r: Router, iface: number, dst: number): boolean {
  const addrs = r.addr4[iface];
  const masks = r.mask4[iface];
  for (let k = 0; k < addrs.length; k++) {
    const mask = masks[k];
    if (mask !== 0xffffffff && mask !== 0xfffffffe && ((dst ^ addrs[k]) & mask) === 0 && ((dst | mask) >>> 0) === 0xffffffff) return true;
  }
  return false;
}

/**
 * Which of a group's `members` ECMP picks, by the 5-tuple's hash: the same for every packet
 * of a flow. The member, not the hash, is returned: a u32 past 2^31 is a heap number where
 * V8 leaves this call out of line.
 */
export function flowMember(d: Uint8Array, ip: number, ihl: number, members: number): number {
  const protocol = d[ip + 9];
  let h = Math.imul(readInt32(d, ip + 12) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(readInt32(d, ip + 16), 0xc2b2ae35) ^ protocol;
  // Ports only in first fragments: the others of the flow would hash elsewhere otherwise;
  // no fragment carries them but the first, so fragments of a flow all go without them.
  if ((protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) && (read16(d, ip + 6) & 0x3fff) === 0) h ^= Math.imul(readInt32(d, ip + ihl), 0x27d4eb2f);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return ((h ^ (h >>> 12)) >>> 0) % members;
}

/**
 * Cuts packet i into fragments of at most `mtu` bytes (RFC 791): packet i becomes the
 * first, the others are emitted right after the batch's current end. Returns how many were
 * emitted, or -1 when the burst has no room for them (nothing is left half done).
 */
function fragment(batch: PacketBatch, i: number, ihl: number, total: number, mtu: number): number {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const per = ((mtu - ihl) >> 3) << 3;
  if (per < 8) return -1;
  // The checksum covers every fragment's bytes: no fragment can leave it to do.
  batch.completeChecksum(i);
  const payload = total - ihl;
  const pieces = Math.ceil(payload / per);
  const field = read16(d, ip + 6);
  const base = (field & 0x1fff) * 8;
  const lastMf = field & MF;
  const first = batch.count;
  for (let k = 1; k < pieces; k++) {
    const j = batch.emit(EGRESS_CONSUMED);
    if (j < 0) {
      for (let u = first; u < batch.count; u++) batch.egress[u] = EGRESS_CONSUMED;
      return -1;
    }
    // The guest's packet, not the router's: the stages after this one judge each fragment.
    batch.local[j] = 0;
    const o = batch.offset(j);
    const from = ihl + k * per;
    const size = Math.min(per, payload - k * per);
    d.copyWithin(o, off, ip + ihl);
    d.copyWithin(o + ETH_HLEN + ihl, ip + from, ip + from + size);
    const fip = o + ETH_HLEN;
    write16(d, fip + 2, ihl + size);
    write16(d, fip + 6, (field & DF) | (k < pieces - 1 || lastMf !== 0 ? MF : 0) | ((base + k * per) >> 3));
    write16(d, fip + 10, ipv4HeaderChecksum(d, fip, ihl));
    batch.setLength(j, ETH_HLEN + ihl + size);
  }
  write16(d, ip + 2, ihl + per);
  write16(d, ip + 6, field | MF);
  write16(d, ip + 10, ipv4HeaderChecksum(d, ip, ihl));
  batch.setLength(i, ETH_HLEN + ihl + per);
  return pieces - 1;
}

/** A packet for one of the router's addresses: echo answered; the rest to the Linux mirror, or UDP port unreachable and dropped. */
function local(r: Router, batch: PacketBatch, i: number, iface: Interface, ihl: number, total: number): void {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const protocol = d[ip + 9];
  const fragmented = (read16(d, ip + 6) & 0x3fff) !== 0;
  const icmp = ip + ihl;
  if (protocol === IPPROTO_ICMP && !fragmented && total - ihl >= 8 && d[icmp] === ICMP_ECHO) {
    if (finishChecksum(onesSum(d, icmp, ip + total)) !== 0) {
      batch.dropAs(i, r.drop.ip_checksum_bad);
      return;
    }
    const src = read32(d, ip + 12);
    write32(d, ip + 12, read32(d, ip + 16));
    write32(d, ip + 16, src);
    d[ip + 8] = 64;
    write16(d, ip + 10, ipv4HeaderChecksum(d, ip, ihl));
    d[icmp] = ICMP_ECHO_REPLY;
    write16(d, icmp + 2, adjustChecksum(read16(d, icmp + 2), (ICMP_ECHO << 8) | d[icmp + 1], (ICMP_ECHO_REPLY << 8) | d[icmp + 1]));
    writeEthernet(d, off, macHi(d, off + 6), macLo(d, off + 6), iface.macHi, iface.macLo, ETHERTYPE_IPV4);
    batch.egress[i] = batch.ingress;
    batch.local[i] = 1;
    r.count(batch.ingress, r.counter.echo_replies_sent, 1);
    return;
  }
  // The rest is Linux's, where the port has a mirror: it answers, or refuses, as a host does.
  if (r.punt(batch, i, iface)) return;
  // From the address the packet was sent to, as Linux answers (RFC 1812 4.3.2.4 leaves it open).
  if (protocol === IPPROTO_UDP && !fragmented) icmpError(r, batch, i, iface, ICMP_UNREACHABLE, UNREACH_PORT, 0, read32(d, ip + 16));
  batch.dropAs(i, r.drop.local_unhandled);
}

/**
 * Sends an ICMP error about packet i back out of its ingress port (a copy: the packet
 * itself is then dropped by the caller, under its reason). RFC 1812 4.3.2.7: never about
 * an ICMP error, a non-first fragment, or a packet to or from a broadcast or multicast
 * address; within the rate limit (RFC 1812 4.3.2.8).
 * `from`: the source address (a u32; 0: the interface's first address).
 */
function icmpError(r: Router, batch: PacketBatch, i: number, iface: Interface, type: number, code: number, rest: number, from = 0): void {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const ihl = (d[ip] & 15) * 4;
  if ((read16(d, ip + 6) & 0x1fff) !== 0) return;
  if (d[ip + 9] === IPPROTO_ICMP) {
    // An ICMP packet without its type byte may be an error: none about it.
    if (read16(d, ip + 2) <= ihl) return;
    const t = d[ip + ihl];
    if (t !== ICMP_ECHO && t !== ICMP_ECHO_REPLY && t !== 13 && t !== 14) return;
  }
  if ((d[off] & 1) !== 0) return;
  const source = r.addr4[iface.index];
  if (source.length === 0) return;
  const buckets = type === ICMP_UNREACHABLE && code === UNREACH_FRAG_NEEDED ? r.pathMtuBuckets : r.icmpBuckets;
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
  const length = Math.min(ETH_HLEN + read16(d, ip + 2), batch.length(i), ETH_HLEN + ICMP4_ERROR_MAX - 28);
  d.copyWithin(o, off, off + length);
  // To the sender's MAC as it arrived (read from packet i: a rewrite saved it first).
  batch.setLength(j, icmp4Error(d, o, length, type, code, rest, from !== 0 ? from : source[0], batch.receivedSource(i), iface.macHi, iface.macLo));
  r.count(batch.ingress, r.counter.icmp_errors_sent, 1);
}
