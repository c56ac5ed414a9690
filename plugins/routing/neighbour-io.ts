// Next hops on the wire: resolving them (ARP requests, RFC 826; neighbour solicitations,
// RFC 4861 7.2), answering for the router's own addresses (ARP replies, neighbour
// advertisements), router advertisements (RFC 4861 6.2), and handing a routed packet to its
// next hop once the neighbour table knows its MAC.
import {
  EGRESS_CONSUMED, ETHERTYPE_ARP, ETHERTYPE_IPV6, ETH_HLEN, IPPROTO_ICMPV6, finishChecksum, ipv6PseudoSum, macHi, macLo, onesSum,
  read16, read32, readInt32, write16, write32, writeEthernet, writeMac, type PacketBatch,
} from '../../src/pipeline/api.ts';
import type { Interface } from './interfaces.ts';
import { FAILED, INCOMPLETE, MAX_PROBES, REACHABLE, REACHABLE_MS, RETRANS_MS, STALE, STATIC } from './neighbours.ts';
import { cacheHeader, SOLICIT_BURST, SOLICIT_RATE, type Router } from './router.ts';
import { groupLeavesBy } from './next-hops.ts';
import { advertisementFlags, dnsOptions, routerLifetime } from './ra-options.ts';

const ARP_LEN = 28;
/** frames shorter than this are padded (Ethernet minimum without FCS) */
const MIN_FRAME = 60;
export const ND_NS = 135;
export const ND_NA = 136;
export const ND_RS = 133;
export const ND_RA = 134;
const OPT_SOURCE_LL = 1;
const OPT_TARGET_LL = 2;
const OPT_PREFIX = 3;
const OPT_MTU = 5;
/** RFC 4861 6.2.1: AdvDefaultLifetime, AdvValidLifetime, AdvPreferredLifetime */
const VALID_LIFETIME_S = 86400;
const PREFERRED_LIFETIME_S = 14400;
/** RFC 4861 10: MIN_DELAY_BETWEEN_RAS (solicited answers closer than this are not sent) */
const MIN_DELAY_BETWEEN_RAS_MS = 3000;

/** Where the next hop of the packet being forwarded is: set by the caller before deliver(). */
export interface NextHop {
  iface: number;
  family: number;
  a0: number;
  a1: number;
  a2: number;
  a3: number;
}

/** What deliver() did: sent (egress set), held or dropped by it, or unreachable (the caller answers). */
export const SENT = 0;
export const HELD = 1;
export const UNREACHABLE = 2;

/**
 * Sends packet i (its TTL already decremented) to the next hop nh: rewrites the Ethernet
 * header and sets the egress port when the neighbour is known; else holds the packet and
 * solicits the neighbour; or drops it (table full, queue full, neighbour unreachable).
 */
export function deliver(r: Router, batch: PacketBatch, i: number, nh: NextHop): number {
  const iface = r.interfaces[nh.iface];
  const d = batch.data;
  const off = batch.offset(i);
  if (nh.iface === r.cacheIface && nh.family === r.cacheFamily && nh.a0 === r.cacheA0 && nh.a1 === r.cacheA1 && nh.a2 === r.cacheA2 && nh.a3 === r.cacheA3) {
    batch.saveSource(i);
    writeMac(d, off, r.cacheMacHi, r.cacheMacLo);
    writeMac(d, off + 6, iface.macHi, iface.macLo);
    batch.egress[i] = r.cachePort;
    return SENT;
  }
  const nb = r.neighbours;
  const slot = nb.find(nh.iface, nh.family, nh.a0, nh.a1, nh.a2, nh.a3);
  if (slot >= 0) {
    // A resolved state with no port: another PMD claimed the slot for a new address (no
    // port yet, being asked for) between this PMD's find() and its setState(): still being
    // resolved, as INCOMPLETE is (held, asked for when due).
    const state = nb.foundPort < 0 ? INCOMPLETE : nb.foundState;
    if (state === REACHABLE || state === STALE || state === STATIC) {
      // RFC 4861 7.3.3: an entry past its reachable time is still used, and probed.
      if (state !== STATIC && r.now - nb.foundConfirmed > REACHABLE_MS && r.now - nb.foundProbed > RETRANS_MS) {
        if (nb.foundProbes >= MAX_PROBES) nb.setState(slot, INCOMPLETE);
        else {
          nb.probed(slot);
          solicit(r, batch, iface, nh, nb.foundMacHi, nb.foundMacLo, nb.foundPort);
        }
      }
      batch.saveSource(i);
      writeMac(d, off, nb.foundMacHi, nb.foundMacLo);
      writeMac(d, off + 6, iface.macHi, iface.macLo);
      batch.egress[i] = nb.foundPort;
      r.cacheIface = nh.iface;
      r.cacheFamily = nh.family;
      r.cacheA0 = nh.a0;
      r.cacheA1 = nh.a1;
      r.cacheA2 = nh.a2;
      r.cacheA3 = nh.a3;
      r.cacheMacHi = nb.foundMacHi;
      r.cacheMacLo = nb.foundMacLo;
      r.cachePort = nb.foundPort;
      cacheHeader(r, d, off);
      if (nh.family === 4) r.ipv4Hops.note(r);
      return SENT;
    }
    if (state === INCOMPLETE) {
      if (nb.foundProbes >= MAX_PROBES && r.now - nb.foundProbed > RETRANS_MS) {
        nb.setState(slot, FAILED);
        return UNREACHABLE;
      }
      if (r.now - nb.foundProbed > RETRANS_MS) askFor(r, batch, iface, nh, slot, false);
      return holdOrDrop(r, batch, i, iface, nh);
    }
    // FAILED: asked for again by the next packet a second after the last request, as Linux
    // does (neigh_event_send): a host that was down is reachable once it answers, not after
    // a hold. The port's solicitation bucket bounds what a flood to absent hosts costs.
    if (r.now - nb.foundProbed > RETRANS_MS && askFor(r, batch, iface, nh, slot, true)) return holdOrDrop(r, batch, i, iface, nh);
    return UNREACHABLE;
  }
  // Resolved even when the queue of held packets, or the port's quarter of it, is full
  // (this packet is then dropped, as neighbour_queue_full): a flood to absent hosts keeps
  // it full, and a new neighbour must still be asked for. The table (each port's share,
  // charged to the ingress port) and solicitBuckets (each port's) bound what a flood costs.
  const created = nb.startResolving(nh.iface, nh.family, nh.a0, nh.a1, nh.a2, nh.a3, batch.ingress);
  if (created < 0) {
    batch.dropAs(i, r.drop.neighbour_table_full);
    return HELD;
  }
  askFor(r, batch, iface, nh, created, false);
  return holdOrDrop(r, batch, i, iface, nh);
}

/**
 * Asks for the next hop of the entry in `slot` (broadcast on its interface), if the
 * ingress port's solicitation bucket has a token; `restart`: the entry had failed and
 * resolves from the start. Returns whether the request went out.
 */
export function askFor(r: Router, batch: PacketBatch, iface: Interface, nh: NextHop, slot: number, restart: boolean): boolean {
  if (!r.solicitBuckets.takeNow(batch.ingress, SOLICIT_RATE, SOLICIT_BURST)) return false;
  if (restart) r.neighbours.setState(slot, INCOMPLETE);
  r.neighbours.probed(slot);
  solicit(r, batch, iface, nh, -1, 0, -1);
  return true;
}

function holdOrDrop(r: Router, batch: PacketBatch, i: number, iface: Interface, nh: NextHop): number {
  // This PMD is to stop: a packet held now would be lost with it, uncounted.
  if (r.discardingHeld) {
    batch.dropAs(i, r.drop.held_discarded);
    return HELD;
  }
  batch.saveSource(i);
  writeMac(batch.data, batch.offset(i) + 6, iface.macHi, iface.macLo);
  if (!r.hold(batch, i, nh.iface, nh.family, nh.a0, nh.a1, nh.a2, nh.a3)) batch.dropAs(i, r.drop.neighbour_queue_full);
  return HELD;
}

/**
 * Asks for a next hop's MAC: broadcast (multicast for NDP) on every port of the interface,
 * or unicast to the MAC known (macHi >= 0) to confirm it, on its port.
 */
function solicit(r: Router, batch: PacketBatch, iface: Interface, nh: NextHop, macHiKnown: number, macLoKnown: number, port: number): void {
  if (port >= 0) {
    writeSolicitation(r, batch, iface, nh, macHiKnown, macLoKnown, port);
    return;
  }
  for (let p = 0; p < iface.ports.length; p++) writeSolicitation(r, batch, iface, nh, -1, 0, iface.ports[p]);
}

function writeSolicitation(r: Router, batch: PacketBatch, iface: Interface, nh: NextHop, dstHi: number, dstLo: number, port: number): void {
  const j = batch.emit(port);
  if (j < 0) return;
  const d = batch.data;
  const o = batch.offset(j);
  if (nh.family === 4) {
    writeArpRequest(batch, j, iface, dstHi, dstLo, sourceFor4(r, iface, nh.a0), nh.a0);
    r.count(batch.ingress, r.counter.arp_requests_sent, 1);
    return;
  }
  // RFC 4861 7.2.2: to the solicited-node multicast address, or unicast to confirm.
  const ip = o + ETH_HLEN;
  if (dstHi < 0) writeEthernet(d, o, 0x3333, 0xff000000 | (nh.a3 & 0xffffff), iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  else writeEthernet(d, o, dstHi, dstLo, iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  writeIpv6Header(d, ip, 32, 255);
  d.set(iface.linkLocal, ip + 8);
  if (dstHi < 0) {
    write32(d, ip + 24, 0xff020000);
    write32(d, ip + 28, 0);
    write32(d, ip + 32, 1);
    write32(d, ip + 36, (0xff000000 | (nh.a3 & 0xffffff)) >>> 0);
  } else {
    write32(d, ip + 24, nh.a0 >>> 0);
    write32(d, ip + 28, nh.a1 >>> 0);
    write32(d, ip + 32, nh.a2 >>> 0);
    write32(d, ip + 36, nh.a3 >>> 0);
  }
  const icmp = ip + 40;
  d[icmp] = ND_NS;
  d[icmp + 1] = 0;
  write32(d, icmp + 4, 0);
  write32(d, icmp + 8, nh.a0 >>> 0);
  write32(d, icmp + 12, nh.a1 >>> 0);
  write32(d, icmp + 16, nh.a2 >>> 0);
  write32(d, icmp + 20, nh.a3 >>> 0);
  d[icmp + 24] = OPT_SOURCE_LL;
  d[icmp + 25] = 1;
  writeMac(d, icmp + 26, iface.macHi, iface.macLo);
  icmp6Checksum(d, ip, 32);
  batch.setLength(j, ETH_HLEN + 40 + 32);
  r.count(batch.ingress, r.counter.neighbour_solicitations_sent, 1);
}

/** An ARP request out of the interface into frame j of the batch, for `tpa` from `spa`: to dstHi:dstLo, or broadcast (dstHi -1). */
export function writeArpRequest(batch: PacketBatch, j: number, iface: Interface, dstHi: number, dstLo: number, spa: number, tpa: number): void {
  const d = batch.data;
  const o = batch.offset(j);
  writeEthernet(d, o, dstHi < 0 ? 0xffff : dstHi, dstHi < 0 ? -1 : dstLo, iface.macHi, iface.macLo, ETHERTYPE_ARP);
  writeArp(d, o + ETH_HLEN, 1, iface.macHi, iface.macLo, spa, 0, 0, tpa);
  d.fill(0, o + ETH_HLEN + ARP_LEN, o + MIN_FRAME);
  batch.setLength(j, MIN_FRAME);
}

/** The router's IPv4 address on the interface in the subnet of `target`, else its first. */
function sourceFor4(r: Router, iface: Interface, target: number): number {
  const addrs = r.addr4[iface.index];
  const masks = r.mask4[iface.index];
  for (let k = 0; k < addrs.length; k++) if (((addrs[k] ^ target) & masks[k]) === 0) return addrs[k];
  return addrs.length > 0 ? addrs[0] : 0;
}

function writeArp(d: Uint8Array, a: number, op: number, shaHi: number, shaLo: number, spa: number, thaHi: number, thaLo: number, tpa: number): void {
  write16(d, a, 1);
  write16(d, a + 2, 0x0800);
  d[a + 4] = 6;
  d[a + 5] = 4;
  write16(d, a + 6, op);
  writeMac(d, a + 8, shaHi, shaLo);
  write32(d, a + 14, spa);
  writeMac(d, a + 18, thaHi, thaLo);
  write32(d, a + 24, tpa);
}

export function writeIpv6Header(d: Uint8Array, ip: number, payloadLength: number, hopLimit: number): void {
  write32(d, ip, 0x60000000);
  write16(d, ip + 4, payloadLength);
  d[ip + 6] = IPPROTO_ICMPV6;
  d[ip + 7] = hopLimit;
}

/** Fills in the checksum of the ICMPv6 message of `length` bytes after the IPv6 header at ip. */
export function icmp6Checksum(d: Uint8Array, ip: number, length: number): void {
  const icmp = ip + 40;
  write16(d, icmp + 2, 0);
  write16(d, icmp + 2, finishChecksum(onesSum(d, icmp, icmp + length, ipv6PseudoSum(d, ip, length, IPPROTO_ICMPV6))));
}

// ---- ARP in ----------------------------------------------------------------------------------

/**
 * An ARP packet on a routed interface. Requests for the router's addresses become replies
 * in place; replies (and requests) to the router teach the neighbour table, and release the
 * packets held for that neighbour; the rest is left to the bridge on a bridge interface and
 * dropped on an L3 port.
 */
export function arpIn(r: Router, batch: PacketBatch, i: number, iface: Interface): void {
  const d = batch.data;
  const off = batch.offset(i);
  const a = off + ETH_HLEN;
  const bridged = iface.bridge !== null;
  if (batch.length(i) < ETH_HLEN + ARP_LEN || read16(d, a) !== 1 || read16(d, a + 2) !== 0x0800 || d[a + 4] !== 6 || d[a + 5] !== 4) {
    if (!bridged) batch.dropAs(i, r.drop.arp_bad);
    return;
  }
  const op = read16(d, a + 6);
  // Addresses as int32, compared as int32: as u32, 128.0.0.0 and up would be heap numbers
  // wherever passed to a call V8 did not inline.
  const spa = readInt32(d, a + 14);
  const tpa = readInt32(d, a + 24);
  const addrs = r.addr4[iface.index];
  const masks = r.mask4[iface.index];
  let ours = false;
  let inSubnet = false;
  let claimed = false;
  for (let k = 0; k < addrs.length; k++) {
    if (addrs[k] === tpa) ours = true;
    if (((addrs[k] ^ spa) & masks[k]) === 0 && spa !== addrs[k]) inSubnet = true;
    if (addrs[k] === spa) claimed = true;
  }
  const shaHi = macHi(d, a + 8);
  const shaLo = macLo(d, a + 8);
  // Another host sends as one of the router's addresses (a gratuitous ARP, or a request):
  // the link has a duplicate, and its hosts may send the router's traffic there.
  if (claimed && (shaHi !== iface.macHi || shaLo !== iface.macLo)) r.count(batch.ingress, r.counter.address_conflicts, 1);
  // RFC 1812 3.3.2: a router believes no group address as a host's link address.
  const unicast = (shaHi & 0x100) === 0;
  if (!ours) {
    // Another host's conversation: on a bridge it is theirs to flood; a gratuitous ARP from a
    // known neighbour updates it (RFC 826: merge when the sender is already in the table).
    if (spa === tpa && unicast && (inSubnet || onLink4(r, iface, spa))) r.neighbours.confirm(iface.index, 4, spa, 0, 0, 0, shaHi, shaLo, batch.ingress, REACHABLE, false);
    if (!bridged) batch.dropAs(i, r.drop.arp_not_for_router);
    return;
  }
  if (!unicast || (op !== 1 && op !== 2)) {
    batch.dropAs(i, r.drop.arp_bad);
    return;
  }
  // RFC 5227: a probe (sender 0.0.0.0) for the router's address is answered, to 0.0.0.0 as
  // Linux does (the prober learns the address is taken); its sender is no neighbour.
  if (spa === 0 && op === 1) {
    reply(r, batch, i, iface, tpa, shaHi, shaLo, 0);
    return;
  }
  if (!inSubnet && !onLink4(r, iface, spa)) {
    batch.dropAs(i, r.drop.arp_bad);
    return;
  }
  // RFC 826: the target is us, so the sender goes into the table, created if need be.
  r.neighbours.confirm(iface.index, 4, spa, 0, 0, 0, shaHi, shaLo, batch.ingress, REACHABLE, true);
  if (op === 2) {
    // Linux on the port's mirror asked too, perhaps: it needs the answer as much.
    if (!r.punt(batch, i, iface)) batch.egress[i] = EGRESS_CONSUMED;
    if (r.heldCount > 0) r.wantHeldBatches();
    return;
  }
  reply(r, batch, i, iface, tpa, shaHi, shaLo, spa);
}

/** ARP request i answered in place: the router's MAC for `tpa`, to the asker. */
function reply(r: Router, batch: PacketBatch, i: number, iface: Interface, tpa: number, shaHi: number, shaLo: number, spa: number): void {
  const d = batch.data;
  const off = batch.offset(i);
  writeEthernet(d, off, shaHi, shaLo, iface.macHi, iface.macLo, ETHERTYPE_ARP);
  writeArp(d, off + ETH_HLEN, 2, iface.macHi, iface.macLo, tpa, shaHi, shaLo, spa);
  batch.egress[i] = batch.ingress;
  batch.local[i] = 1;
  r.count(batch.ingress, r.counter.arp_replies_sent, 1);
}

/**
 * Whether an ARP sender outside the interface's subnets is on its link all the same: a
 * route sends its address straight out of the interface (a route with a port and no
 * gateway, as `ip route add 192.0.2.0/24 dev eth1`), so its next hop is itself.
 */
function onLink4(r: Router, iface: Interface, spa: number): boolean {
  return groupLeavesBy(r.nextHops, r.lpm4.lookup(spa), iface.index, true);
}

// ---- NDP in ----------------------------------------------------------------------------------

/** The option of `type` in the NDP options d[from..end), as the offset of its value, or -1. */
function ndpOption(d: Uint8Array, from: number, end: number, type: number): number {
  let o = from;
  // RFC 4861 4.6: a length of 0 is invalid (and would loop).
  while (o + 2 <= end) {
    const len = d[o + 1] * 8;
    if (len === 0 || o + len > end) return -2;
    if (d[o] === type) return o + 2;
    o += len;
  }
  return -1;
}

/** Whether the 16 bytes at d[at] are one of the interface's addresses (link-local included). */
export function isOwn6(r: Router, iface: Interface, d: Uint8Array, at: number): boolean {
  const own = r.addr6[iface.index];
  for (let k = 0; k < own.length; k += 16) {
    let same = true;
    for (let b = 0; b < 16; b++) {
      if (own[k + b] !== d[at + b]) {
        same = false;
        break;
      }
    }
    if (same) return true;
  }
  return false;
}

/**
 * An NDP message (ICMPv6 type 133..136) on a routed interface, already checked to be
 * ICMPv6 with a sane length. RFC 4861 validation first (hop limit 255, code 0, checksum).
 * Returns false when the message is not for the router (the caller leaves it to the bridge).
 */
export function ndpIn(r: Router, batch: PacketBatch, i: number, iface: Interface, type: number, payloadLength: number): boolean {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const icmp = ip + 40;
  const end = icmp + payloadLength;
  if (d[ip + 7] !== 255 || d[icmp + 1] !== 0 || finishChecksum(onesSum(d, icmp, end, ipv6PseudoSum(d, ip, payloadLength, IPPROTO_ICMPV6))) !== 0) {
    batch.dropAs(i, r.drop.ndp_bad);
    return true;
  }
  if (type === ND_RS) {
    if (payloadLength < 8) {
      batch.dropAs(i, r.drop.ndp_bad);
      return true;
    }
    routerSolicited(r, batch, i, iface);
    // On a bridge the solicitation is the segment's too (another router there may answer).
    if (iface.bridge !== null) return false;
    batch.egress[i] = EGRESS_CONSUMED;
    return true;
  }
  if (payloadLength < 24) {
    batch.dropAs(i, r.drop.ndp_bad);
    return true;
  }
  const target = icmp + 8;
  // Another host that solicits from one of the router's addresses, or advertises one: a
  // duplicate on the link. Counted; the address stays the router's (RFC 4862 5.4.4 gives
  // one up only while it is tentative).
  if ((type === ND_NS ? isOwn6(r, iface, d, ip + 8) : type === ND_NA && isOwn6(r, iface, d, target)) && (macHi(d, off + 6) !== iface.macHi || macLo(d, off + 6) !== iface.macLo)) {
    r.count(batch.ingress, r.counter.address_conflicts, 1);
  }
  if (type === ND_NS) {
    if (!isOwn6(r, iface, d, target)) return false;
    const unspecified = read32(d, ip + 8) === 0 && read32(d, ip + 12) === 0 && read32(d, ip + 16) === 0 && read32(d, ip + 20) === 0;
    const sll = ndpOption(d, icmp + 24, end, OPT_SOURCE_LL);
    // RFC 4861 7.1.1: from the unspecified address (duplicate address detection), no source
    // link-layer option, and to the target's solicited-node group, ff02::1:ff00:0/104
    const toSolicitedNode = read32(d, ip + 24) === 0xff020000 && read32(d, ip + 28) === 0 && read32(d, ip + 32) === 1 && d[ip + 36] === 0xff;
    if (sll === -2 || (unspecified && (sll >= 0 || !toSolicitedNode))) {
      batch.dropAs(i, r.drop.ndp_bad);
      return true;
    }
    const fromHi = sll >= 0 ? macHi(d, sll) : macHi(d, off + 6);
    const fromLo = sll >= 0 ? macLo(d, sll) : macLo(d, off + 6);
    // As ARP's sender (RFC 1812 3.3.2): no group address is a neighbour's link address, and
    // the answer would go to the group.
    if ((fromHi & 0x100) !== 0) {
      batch.dropAs(i, r.drop.ndp_bad);
      return true;
    }
    if (!unspecified && sll >= 0) {
      r.neighbours.confirm(iface.index, 6, readInt32(d, ip + 8), readInt32(d, ip + 12), readInt32(d, ip + 16), readInt32(d, ip + 20), fromHi, fromLo, batch.ingress, STALE, true);
    }
    advertise(r, batch, i, iface, unspecified, fromHi, fromLo);
    return true;
  }
  if (type === ND_NA) {
    const tll = ndpOption(d, icmp + 24, end, OPT_TARGET_LL);
    if (tll === -2) {
      batch.dropAs(i, r.drop.ndp_bad);
      return true;
    }
    const hi = tll >= 0 ? macHi(d, tll) : macHi(d, off + 6);
    const lo = tll >= 0 ? macLo(d, tll) : macLo(d, off + 6);
    if ((hi & 0x100) !== 0) {
      batch.dropAs(i, r.drop.ndp_bad);
      return true;
    }
    const slot = naReceived(r, iface, d[icmp + 4], readInt32(d, target), readInt32(d, target + 4), readInt32(d, target + 8), readInt32(d, target + 12), hi, lo, batch.ingress, tll >= 0);
    if (slot >= 0 && r.heldCount > 0) r.wantHeldBatches();
    // On a bridge, one the router did not ask for, or one to a group (an unsolicited
    // advertisement to all nodes after a failover: RFC 4861 7.2.6), is the segment's too.
    if (iface.bridge !== null && (slot < 0 || d[ip + 24] === 0xff)) return false;
    if (!r.punt(batch, i, iface)) batch.egress[i] = EGRESS_CONSUMED;
    return true;
  }
  return false; // another router's advertisement: not ours to act on
}

const NA_SOLICITED = 0x40;
const NA_OVERRIDE = 0x20;

/**
 * A neighbour advertisement for an address in the table (RFC 4861 7.2.5; one for an address
 * not in it is not recorded): without Override it does not replace a known link-layer
 * address (a REACHABLE entry goes STALE, others stay as they are); otherwise
 * the address is taken, REACHABLE if the advertisement answers a solicitation, STALE if it
 * came unasked and changed the address. Returns the entry's slot, or -1.
 */
function naReceived(r: Router, iface: Interface, flags: number, a0: number, a1: number, a2: number, a3: number, hi: number, lo: number, port: number, withAddress: boolean): number {
  const table = r.neighbours;
  const slot = table.find(iface.index, 6, a0, a1, a2, a3);
  if (slot < 0 || table.foundState === STATIC) return slot;
  const known = table.foundState !== INCOMPLETE;
  // RFC 4861 7.2.5: one without a target link-layer address cannot complete an entry
  // (the frame's source need not be the target's)
  if (!known && !withAddress) return -1;
  const changed = hi !== table.foundMacHi || lo !== table.foundMacLo;
  if (known && changed && (flags & NA_OVERRIDE) === 0) {
    if (table.foundState === REACHABLE) table.setState(slot, STALE);
    return slot;
  }
  const state = (flags & NA_SOLICITED) !== 0 ? REACHABLE : !known || changed ? STALE : table.foundState;
  return table.confirm(iface.index, 6, a0, a1, a2, a3, hi, lo, port, state, false);
}

/** Turns a neighbour solicitation for our address into the advertisement, in place. */
function advertise(r: Router, batch: PacketBatch, i: number, iface: Interface, toAllNodes: boolean, dstHi: number, dstLo: number): void {
  const d = batch.data;
  const off = batch.offset(i);
  const ip = off + ETH_HLEN;
  const icmp = ip + 40;
  // Destination: the solicitor, or all nodes when it had no address yet (DAD, RFC 4861 7.2.4).
  if (toAllNodes) {
    write32(d, ip + 24, 0xff020000);
    write32(d, ip + 28, 0);
    write32(d, ip + 32, 0);
    write32(d, ip + 36, 1);
    writeEthernet(d, off, 0x3333, 1, iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  } else {
    d.copyWithin(ip + 24, ip + 8, ip + 24);
    writeEthernet(d, off, dstHi, dstLo, iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  }
  // Source: the target itself (RFC 4861 7.2.4), already at icmp + 8.
  d.copyWithin(ip + 8, icmp + 8, icmp + 24);
  // R (we are a router), S (solicited, unless to all nodes), O (override)
  writeAdvertisement(d, ip, toAllNodes ? 0xa0000000 : 0xe0000000, iface);
  batch.setLength(i, ETH_HLEN + 40 + 32);
  batch.egress[i] = batch.ingress;
  batch.local[i] = 1;
  r.count(batch.ingress, r.counter.neighbour_advertisements_sent, 1);
}

/**
 * The rest of a neighbour advertisement whose addresses and target are in place at `ip`: the
 * IPv6 header, the R, S and O `flags` (the word's top bits), the interface's MAC as the
 * target's link-layer address, the checksum.
 */
export function writeAdvertisement(d: Uint8Array, ip: number, flags: number, iface: Interface): void {
  const icmp = ip + 40;
  writeIpv6Header(d, ip, 32, 255);
  d[icmp] = ND_NA;
  d[icmp + 1] = 0;
  write32(d, icmp + 4, flags);
  d[icmp + 24] = OPT_TARGET_LL;
  d[icmp + 25] = 1;
  writeMac(d, icmp + 26, iface.macHi, iface.macLo);
  icmp6Checksum(d, ip, 32);
}

/**
 * A router solicitation: answered with an advertisement to all nodes on that port (a frame
 * of its own); within MIN_DELAY_BETWEEN_RAS_MS of the interface's last one, by one to all
 * its ports once that delay is over (RFC 4861 6.2.6: "scheduled", not skipped: a host whose
 * solicitation went unanswered asks again only after 4 s, then less and less often).
 */
function routerSolicited(r: Router, batch: PacketBatch, i: number, iface: Interface): void {
  // no IPv6 address but the link-local one, or advertisements off: not a router here
  if (r.addr6[iface.index].length <= 16 || !iface.advertises) return;
  const at = r.raSent[iface.index] + MIN_DELAY_BETWEEN_RAS_MS;
  if (r.now < at) {
    if (at < r.raDue[iface.index]) r.raDue[iface.index] = at;
    return;
  }
  sendRouterAdvertisement(r, batch, iface, batch.ingress);
}

/** Sends the interface's router advertisement on `port` (or all its ports that are up: -1). */
export function sendRouterAdvertisement(r: Router, batch: PacketBatch, iface: Interface, port: number): void {
  const first = port >= 0 ? port : iface.ports[0];
  const count = port >= 0 ? 1 : iface.ports.length;
  for (let p = 0; p < count; p++) {
    // A port with no frontend would drop it (port_down): it gets one when it comes up.
    if (port < 0 && !r.portUp(iface.ports[p])) continue;
    const to = port >= 0 ? first : iface.ports[p];
    const j = batch.emit(to);
    if (j < 0) return;
    writeRouterAdvertisement(r, batch.data, batch.offset(j), iface, to);
    batch.setLength(j, ETH_HLEN + 40 + raLength(r, iface));
    r.count(batch.ingress, r.counter.router_advertisements_sent, 1);
  }
  r.raSent[iface.index] = r.now;
}

function raLength(r: Router, iface: Interface): number {
  return 16 + 8 + 8 + dnsOptions(r.config).length + 32 * raPrefixes(r, iface);
}

/**
 * The prefix options an advertisement carries: the interface's first prefixes, as many as
 * fit its MTU beside the other options (RFC 4861 6.2.3 allows a subset). Unbounded, 300
 * addresses wrote past the packet's buffer, and 45 made every advertisement too long for a
 * 1500-byte port. (An IPv6 interface's MTU is 1280 at least: the DNS options, 400 bytes at
 * most, leave room for 25 prefixes.)
 */
function raPrefixes(r: Router, iface: Interface): number {
  const fit = Math.floor((iface.mtu - 40 - 16 - 8 - 8 - dnsOptions(r.config).length) / 32);
  return fit < 0 ? 0 : fit < iface.v6.length ? fit : iface.v6.length;
}

/** An advertisement of `iface` out of `port`: as vrouter stops, or the port's farewell (Router.farewell) has it, the router and prefixes that go with lifetime 0. */
function writeRouterAdvertisement(r: Router, d: Uint8Array, o: number, iface: Interface, port: number): void {
  const farewell = r.farewell[port];
  const routerGoes = r.stopping || (farewell !== null && farewell.routerGoes);
  const ip = o + ETH_HLEN;
  const length = raLength(r, iface);
  writeEthernet(d, o, 0x3333, 1, iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  writeIpv6Header(d, ip, length, 255);
  d.set(iface.linkLocal, ip + 8);
  write32(d, ip + 24, 0xff020000);
  write32(d, ip + 28, 0);
  write32(d, ip + 32, 0);
  write32(d, ip + 36, 1);
  const ra = ip + 40;
  d[ra] = ND_RA;
  d[ra + 1] = 0;
  d[ra + 4] = 64; // Cur Hop Limit
  // A router that stops is no default router: lifetime 0, and then no preference (RFC 4191 2.2).
  d[ra + 5] = routerGoes ? advertisementFlags(r.config) & 0xc0 : advertisementFlags(r.config);
  write16(d, ra + 6, routerGoes ? 0 : routerLifetime(r.config));
  write32(d, ra + 8, 0);
  write32(d, ra + 12, 0);
  let opt = ra + 16;
  d[opt] = OPT_SOURCE_LL;
  d[opt + 1] = 1;
  writeMac(d, opt + 2, iface.macHi, iface.macLo);
  opt += 8;
  d[opt] = OPT_MTU;
  d[opt + 1] = 1;
  write16(d, opt + 2, 0);
  write32(d, opt + 4, iface.mtu);
  opt += 8;
  const dns = dnsOptions(r.config);
  d.set(dns, opt);
  // A router that stops names its DNS servers no more (RFC 8106 5.1: lifetime 0), as radvd does.
  if (routerGoes) for (let o = opt; o < opt + dns.length; o += d[o + 1] * 8) write32(d, o + 4, 0);
  opt += dns.length;
  const prefixes = raPrefixes(r, iface);
  for (let k = 0; k < prefixes; k++) {
    const p = iface.v6[k];
    d[opt] = OPT_PREFIX;
    d[opt + 1] = 4;
    d[opt + 2] = p.length;
    // L (on-link); A (autonomous) where SLAAC can form an address: a /64.
    d[opt + 3] = p.length === 64 && r.config.raAutonomous ? 0xc0 : 0x80;
    const withdrawn = farewell !== null && farewell.withdrawn[k] === 1;
    write32(d, opt + 4, withdrawn ? 0 : VALID_LIFETIME_S);
    write32(d, opt + 8, withdrawn ? 0 : PREFERRED_LIFETIME_S);
    write32(d, opt + 12, 0);
    for (let b = 0; b < 16; b++) {
      const bits = Math.max(0, Math.min(8, p.length - b * 8));
      d[opt + 16 + b] = p.bytes[b] & ((0xff00 >> bits) & 0xff);
    }
    opt += 32;
  }
  icmp6Checksum(d, ip, length);
}
