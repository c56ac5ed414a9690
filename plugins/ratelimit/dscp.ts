// The DSCP of a frame, read and rewritten in place: where the IP header starts (after at
// most one VLAN tag), the DSCP in it, and a remark that keeps the ECN bits and, for IPv4,
// updates the header checksum incrementally.
import { adjustChecksum, ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPV6_HLEN, read16, write16 } from '../../src/pipeline/api.ts';

/** 802.1ad service tag: an outer tag, as 802.1Q's, before the next EtherType */
const ETHERTYPE_QINQ = 0x88a8;
const VLAN_HLEN = 4;

/**
 * Offset of the IP header of the frame at `off` (`length` bytes), or -1 when it has none a
 * policer can read (not IPv4/IPv6, or too short). `family` gets 4 or 6 at index i.
 */
export function ipHeaderAt(d: Uint8Array, off: number, length: number, family: Uint8Array, i: number): number {
  if (length < ETH_HLEN + 20) return -1;
  let type = read16(d, off + 12);
  let ip = off + ETH_HLEN;
  if (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) {
    type = read16(d, ip + 2);
    ip += VLAN_HLEN;
  }
  const end = off + length;
  if (type === ETHERTYPE_IPV4 && ip + 20 <= end && d[ip] >> 4 === 4) {
    family[i] = 4;
    return ip;
  }
  if (type === ETHERTYPE_IPV6 && ip + IPV6_HLEN <= end && d[ip] >> 4 === 6) {
    family[i] = 6;
    return ip;
  }
  return -1;
}

/**
 * RFC 2474, 3: the DS field is the IPv4 TOS octet and the IPv6 Traffic Class octet, its six
 * high bits the DSCP; RFC 3168, 5: the two low bits are ECN.
 */
export function dscpOf(d: Uint8Array, ip: number, family: number): number {
  return family === 4 ? d[ip + 1] >> 2 : ((d[ip] & 0x0f) << 2) | (d[ip + 1] >> 6);
}

/** Writes `dscp` into the IPv4 header at ip, keeping ECN; RFC 1624 eqn. 3 for the checksum. */
export function remarkIpv4(d: Uint8Array, ip: number, dscp: number): void {
  const tos = d[ip + 1];
  const next = (dscp << 2) | (tos & 3);
  if (next === tos) return;
  const version = d[ip] << 8;
  d[ip + 1] = next;
  write16(d, ip + 10, adjustChecksum(read16(d, ip + 10), version | tos, version | next));
}

/**
 * Writes `dscp` into the IPv6 header at ip, keeping ECN and the flow label. No checksum covers
 * the Traffic Class (RFC 8200, 8.1: the upper-layer pseudo-header has no Traffic Class).
 */
export function remarkIpv6(d: Uint8Array, ip: number, dscp: number): void {
  const tc = ((d[ip] & 0x0f) << 4) | (d[ip + 1] >> 4);
  const next = (dscp << 2) | (tc & 3);
  d[ip] = (d[ip] & 0xf0) | (next >> 4);
  d[ip + 1] = ((next & 0x0f) << 4) | (d[ip + 1] & 0x0f);
}
