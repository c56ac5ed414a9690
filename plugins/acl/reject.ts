// "reject": the packet becomes, in place, the answer its sender gets back through the
// ingress port: a TCP reset for TCP, else an ICMP "administratively prohibited" error
// (ICMPv4 type 3 code 13, RFC 1812 5.2.7.1; ICMPv6 type 1 code 1, RFC 4443 3.1). Answers
// are rate-limited by a token bucket per ingress port and PMD, as Linux's icmp_ratelimit, so
// that a flood of rejected packets is not reflected at the same rate, and one port's flood
// does not silence the answers the others' senders get.
import {
  derivedRouterMac, ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, finishChecksum, icmp4Error, icmp6Error, ICMP4_ERROR_MAX, ICMP6_ERROR_MAX,
  IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, ipv4Number, isUnspecifiedOrLoopback6, ipv4PseudoSum, ipv6PseudoSum, IPV6_HLEN, macHi, macLo, onesSum, parseMac, parsePrefix,
  PORT_SLOTS, read16, read32, TokenBuckets, write16, write32, writeEthernet, writeIpv4Header,
  type PacketBatch, type PortInfo, type Topology,
} from '../../src/pipeline/api.ts';
import { HEADERS_L4, HEADERS_LATER_FRAGMENT, type Headers } from './headers.ts';
import type { RejectLimit } from './rules.ts';

export const REJECT_SENT = 0;
export const REJECT_LIMITED = 1;
/** a packet that must not be answered (RFC 1122 3.2.2, RFC 4443 2.4 e), or no room */
export const REJECT_SILENT = 2;

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;
const TCP_HLEN = 20;
const VLAN_HLEN = 4;

/** The router's side of a port: what its answers come from. */
interface RouterSide {
  macHi: number;
  macLo: number;
  /** its first IPv4 address, or -1 (then the rejected packet's destination) */
  v4: number;
  /** its first IPv6 address, or null */
  v6: Uint8Array | null;
}

/** The router's MAC and addresses on each port: its bridge's when it is in one that has them. */
function routerSides(ports: readonly PortInfo[], bridgeSettings: Topology['bridgeSettings']): RouterSide[] {
  return ports.map((port) => {
    const bridge = port.bridge === null ? undefined : bridgeSettings[port.bridge];
    const bridgeAddresses = Array.isArray(bridge?.addresses) ? (bridge.addresses as unknown[]) : [];
    const addresses = bridgeAddresses.length > 0 ? bridgeAddresses : Array.isArray(port.settings.addresses) ? (port.settings.addresses as unknown[]) : [];
    const macText = typeof bridge?.routerMac === 'string' ? bridge.routerMac : typeof port.settings.routerMac === 'string' ? port.settings.routerMac : derivedRouterMac(port.name);
    const [macHigh, macLow] = parseMac(macText);
    let v4 = -1;
    let v6: Uint8Array | null = null;
    for (const a of addresses) {
      const p = parsePrefix(a);
      if (p.family === 4 && v4 < 0) v4 = ipv4Number(p.bytes);
      if (p.family === 6 && v6 === null) v6 = p.bytes;
    }
    return { macHi: macHigh, macLo: macLow, v4, v6 };
  });
}

/** IPv4 addresses that name no single host (RFC 1122 3.2.2: no ICMP error to or about them). */
function notAHost4(a: number): boolean {
  const top = a >>> 24;
  return a === 0 || a === 0xffffffff || top === 127 || (top >= 224 && top < 240);
}

export class Rejecter {
  private readonly sides: RouterSide[];
  private readonly rate: number;
  private readonly burst: number;
  /** per ingress port slot */
  private readonly buckets: TokenBuckets;
  /** clock[0]: the time (ms) answers are rate-limited at, set by the stage once a burst */
  readonly clock: Float64Array;
  /** an IPv6 address kept aside while the frame is rewritten */
  private readonly scratch = new Uint8Array(16);
  private readonly scratch2 = new Uint8Array(16);
  // the reset being built (resetFields), in fields for no allocation
  private srcPort = 0;
  private dstPort = 0;
  private seq = 0;
  private ack = 0;
  private flags = 0;

  constructor(ports: readonly PortInfo[], bridgeSettings: Topology['bridgeSettings'], limit: RejectLimit) {
    this.sides = routerSides(ports, bridgeSettings);
    this.rate = limit.rate;
    this.burst = limit.burst;
    this.buckets = new TokenBuckets(PORT_SLOTS, limit.burst);
    this.clock = this.buckets.clock;
  }

  /**
   * Turns packet i into its answer, bound for the ingress port; returns REJECT_*. The
   * headers are those parse() found: the IP header at l3, the upper-layer one at l4.
   */
  reject(batch: PacketBatch, i: number, h: Headers): number {
    const d = batch.data;
    const off = batch.offset(i);
    let l3 = off + h.l3[i];
    const version = h.keys.ipVersion[i] & 0x0f;
    const tcp = h.status[i] === HEADERS_L4 && h.keys.protocol[i] === IPPROTO_TCP;
    // RFC 1122 3.2.2, RFC 4443 2.4 (e): no error about an error, a later fragment, a frame
    // sent to a group; RFC 9293 3.10.7.1: a reset is never answered.
    if (h.status[i] === HEADERS_LATER_FRAGMENT || (d[off] & 1) !== 0) return REJECT_SILENT;
    if (tcp && (h.keys.tcpFlags[i] & TCP_RST) !== 0) return REJECT_SILENT;
    if (!tcp && isIcmpError(h, i)) return REJECT_SILENT;
    if (version === 4 ? notAHost4(read32(d, l3 + 12)) || notAHost4(read32(d, l3 + 16)) : d[l3 + 8] === 0xff || d[l3 + 24] === 0xff || (isUnspecifiedOrLoopback6(d, l3 + 8) && d[l3 + 23] === 0)) return REJECT_SILENT;
    const ipLength = h.end[i] - h.l3[i];
    const tagged = l3 - off === ETH_HLEN + VLAN_HLEN;
    const longest = (tagged ? VLAN_HLEN : 0) + ETH_HLEN + (tcp ? IPV6_HLEN + TCP_HLEN : version === 4 ? ICMP4_ERROR_MAX : ICMP6_ERROR_MAX);
    if (longest > batch.frameRoom) return REJECT_SILENT;
    if (!this.buckets.takeNow(batch.ingress, this.rate, this.burst)) return REJECT_LIMITED;

    // An answer in the packet's place: its checksum or segments, left to do, are not the answer's.
    batch.rewritten(i);
    const side = this.sides[batch.ingress];
    const sender = batch.receivedSource(i);
    let tci = 0;
    let l4 = off + h.l4[i];
    if (tagged) {
      // The answer is built untagged (the helpers put IP at ETH_HLEN), then tagged again.
      tci = read16(d, off + ETH_HLEN);
      d.copyWithin(off + ETH_HLEN, l3, off + h.end[i]);
      l3 -= VLAN_HLEN;
      l4 -= VLAN_HLEN;
    }
    let length: number;
    if (tcp) length = version === 4 ? this.reset4(d, off, l3, l4, sender, side) : this.reset6(d, off, l3, l4, sender, side);
    else if (version === 4) {
      const src = side.v4 >= 0 ? side.v4 : read32(d, l3 + 16);
      length = icmp4Error(d, off, ETH_HLEN + ipLength, 3, 13, 0, src, sender, side.macHi, side.macLo);
    } else {
      let src = side.v6;
      if (src === null) {
        // copied out first: icmp6Error overwrites the header it lies in
        copy16(d, l3 + 24, this.scratch);
        src = this.scratch;
      }
      length = icmp6Error(d, off, ETH_HLEN + ipLength, 1, 1, 0, src, sender, side.macHi, side.macLo);
    }
    if (tagged) {
      const type = read16(d, off + 12);
      d.copyWithin(off + ETH_HLEN + VLAN_HLEN, off + ETH_HLEN, off + length);
      write16(d, off + 12, ETHERTYPE_VLAN);
      write16(d, off + 14, tci);
      write16(d, off + 16, type);
      length += VLAN_HLEN;
    }
    batch.setLength(i, length);
    batch.egress[i] = batch.ingress;
    batch.mark[i] = 0;
    return REJECT_SENT;
  }

  /**
   * RFC 9293 3.10.7.1 (a segment to a closed port, as the destination would answer): "If
   * the ACK bit is off, sequence number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
   * If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>". SEG.LEN counts SYN and FIN (3.4).
   * From the destination's address and port, so that the sender's TCP takes it.
   */
  private resetFields(d: Uint8Array, l4: number, ipEnd: number): void {
    const flags = d[l4 + 13];
    const dataOffset = (d[l4 + 12] >>> 4) * 4;
    const segLength = ipEnd - l4 - dataOffset + ((flags & TCP_SYN) !== 0 ? 1 : 0) + ((flags & TCP_FIN) !== 0 ? 1 : 0);
    this.srcPort = read16(d, l4);
    this.dstPort = read16(d, l4 + 2);
    if ((flags & TCP_ACK) !== 0) {
      this.seq = read32(d, l4 + 8);
      this.ack = 0;
      this.flags = TCP_RST;
    } else {
      this.seq = 0;
      this.ack = (read32(d, l4 + 4) + segLength) >>> 0;
      this.flags = TCP_RST | TCP_ACK;
    }
  }

  private writeReset(d: Uint8Array, tcp: number, pseudo: number): void {
    write16(d, tcp, this.dstPort);
    write16(d, tcp + 2, this.srcPort);
    write32(d, tcp + 4, this.seq);
    write32(d, tcp + 8, this.ack);
    d[tcp + 12] = (TCP_HLEN / 4) << 4;
    d[tcp + 13] = this.flags;
    write32(d, tcp + 14, 0); // window 0, checksum 0 until computed
    write16(d, tcp + 18, 0);
    write16(d, tcp + 16, finishChecksum(onesSum(d, tcp, tcp + TCP_HLEN, pseudo)));
  }

  private reset4(d: Uint8Array, off: number, l3: number, l4: number, sender: number, side: RouterSide): number {
    this.resetFields(d, l4, l3 + read16(d, l3 + 2));
    const dstHi = macHi(d, sender);
    const dstLo = macLo(d, sender);
    const src = read32(d, l3 + 16);
    const dst = read32(d, l3 + 12);
    writeEthernet(d, off, dstHi, dstLo, side.macHi, side.macLo, ETHERTYPE_IPV4);
    const ip = off + ETH_HLEN;
    writeIpv4Header(d, ip, 20 + TCP_HLEN, IPPROTO_TCP, src, dst);
    this.writeReset(d, ip + 20, ipv4PseudoSum(d, ip, TCP_HLEN, IPPROTO_TCP));
    return ETH_HLEN + 20 + TCP_HLEN;
  }

  private reset6(d: Uint8Array, off: number, l3: number, l4: number, sender: number, side: RouterSide): number {
    this.resetFields(d, l4, l3 + IPV6_HLEN + read16(d, l3 + 4));
    const dstHi = macHi(d, sender);
    const dstLo = macLo(d, sender);
    copy16(d, l3 + 24, this.scratch);
    copy16(d, l3 + 8, this.scratch2);
    writeEthernet(d, off, dstHi, dstLo, side.macHi, side.macLo, ETHERTYPE_IPV6);
    const ip = off + ETH_HLEN;
    // RFC 8200 3: version 6, traffic class and flow label 0
    write32(d, ip, 0x60000000);
    write16(d, ip + 4, TCP_HLEN);
    d[ip + 6] = IPPROTO_TCP;
    d[ip + 7] = 64;
    d.set(this.scratch, ip + 8);
    d.set(this.scratch2, ip + 24);
    this.writeReset(d, ip + IPV6_HLEN, ipv6PseudoSum(d, ip, TCP_HLEN, IPPROTO_TCP));
    return ETH_HLEN + IPV6_HLEN + TCP_HLEN;
  }
}

/** 16 bytes from d[at] (a loop, not subarray(): no view object per answer) */
function copy16(d: Uint8Array, at: number, into: Uint8Array): void {
  for (let j = 0; j < 16; j++) into[j] = d[at + j];
}

/** ICMP errors: IPv4 types 3, 4, 5, 11, 12 (RFC 792); ICMPv6 types below 128 (RFC 4443 2.1). */
export function isIcmpError(h: Headers, i: number): boolean {
  if (h.status[i] !== HEADERS_L4) return false;
  const type = h.keys.icmpType[i];
  const protocol = h.keys.protocol[i];
  const version = h.keys.ipVersion[i];
  if (version === 4 && protocol === IPPROTO_ICMP) return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
  return version === 6 && protocol === IPPROTO_ICMPV6 && type < 128;
}
