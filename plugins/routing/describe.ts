// What the routing stage did to a packet, in words, for packet capture (Plugin.describe):
// the next hop and the port, found again the way ipv4.ts and ipv6.ts found them. Runs only
// for captured packets, after process(); drops are left to the generic text (their reason).
import { EGRESS_CONSUMED, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, formatAddress, read16, read32, type PacketBatch } from '../../src/pipeline/api.ts';
import { KIND_GATEWAY, LOCAL_GROUP, MEMBER_WORDS, NO_ROUTE } from './fib.ts';
import { flowMember as flowMember4 } from './ipv4.ts';
import { flowMember as flowMember6 } from './ipv6.ts';
import type { Router } from './router.ts';

export function describe(r: Router, batch: PacketBatch, i: number): string | null {
  const egress = batch.egress[i];
  if (r.mirrored[batch.ingress] >= 0) return `sent by Linux on the mirror of port ${r.portNames[r.mirrored[batch.ingress]]}`;
  if ((egress < 0 && egress !== EGRESS_CONSUMED) || r.byPort[batch.ingress] < 0) return null;
  if (egress >= 0 && egress === r.mirrorPort[r.byPort[batch.ingress]]) return 'for Linux: to the port\'s mirror';
  const d = batch.data;
  const off = batch.offset(i);
  const len = batch.length(i);
  if (len < ETH_HLEN) return null;
  const type = read16(d, off + 12);
  if (batch.local[i] === 1) return type === ETHERTYPE_ARP ? 'ARP reply from the router' : 'answered by the router';
  const ip = off + ETH_HLEN;
  let group: number;
  if (type === ETHERTYPE_IPV4 && len >= ETH_HLEN + 20) group = r.lpm4.lookup(read32(d, ip + 16));
  else if (type === ETHERTYPE_IPV6 && len >= ETH_HLEN + 40) group = r.lpm6.lookup(d, ip + 24);
  else return null;
  if (group === NO_ROUTE || group === LOCAL_GROUP) return null;
  const hops = r.nextHops;
  const w = hops.words;
  const start = w[hops.groupBase + group * 2];
  const members = w[hops.groupBase + group * 2 + 1];
  const member = members <= 1 ? 0 : type === ETHERTYPE_IPV4 ? flowMember4(d, ip, (d[ip] & 15) * 4, members) : flowMember6(d, ip, members);
  const m = hops.memberBase + (start + member) * MEMBER_WORDS;
  const gateway = w[m] === KIND_GATEWAY;
  const iface = r.interfaces[w[m + 1]];
  let hop: string;
  if (type === ETHERTYPE_IPV4) {
    const a = gateway ? w[m + 2] : read32(d, ip + 16);
    hop = `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
  } else if (gateway) {
    const bytes = new Uint8Array(16);
    for (let q = 0; q < 4; q++) for (let b = 0; b < 4; b++) bytes[q * 4 + b] = (w[m + 2 + q] >>> (24 - 8 * b)) & 0xff;
    hop = formatAddress(bytes);
  } else {
    hop = formatAddress(d.slice(ip + 24, ip + 40));
  }
  const kind = gateway ? (members > 1 ? ` (ECMP, ${members} paths)` : '') : ' (connected)';
  if (egress === EGRESS_CONSUMED) return `via ${hop} on ${iface?.name ?? '?'}${kind}: held while its MAC is resolved`;
  return `via ${hop} port ${r.portNames[egress] ?? egress}${kind}`;
}
