// Announcements of the router's addresses where a change at run time gave an interface a
// new router MAC or new addresses: a gratuitous ARP for each IPv4 address (as Linux's
// arp_notify and VRRP send them), an unsolicited neighbour advertisement with the override
// flag for each IPv6 one (RFC 4861 7.2.6). A host that had the router's address at the old
// MAC takes the new one at once, rather than send to a MAC the router no longer takes until
// its cache entry is probed again (about half a minute on Linux). Sent once, by the new PMD 0,
// as the ports are back.
import { ETHERTYPE_IPV6, ETH_HLEN, writeEthernet, type PacketBatch, type Topology } from '../../src/pipeline/api.ts';
import { interfaceByPortName, samePrefix, type Interface } from './interfaces.ts';
import type { Router } from './router.ts';
import { writeAdvertisement, writeArpRequest } from './neighbour-io.ts';

/** Per interface of `now`: 1 where its router MAC or an address is not what `previous` had on its first port. */
export function interfacesToAnnounce(now: readonly Interface[], ports: readonly string[], previous: Topology): Uint8Array {
  const before = interfaceByPortName(previous);
  return Uint8Array.from(now, (iface) => {
    const was = before(ports[iface.ports[0]]);
    if (was === null) return 1;
    if (was.macHi !== iface.macHi || was.macLo !== iface.macLo) return 1;
    const had = (p: Interface['v4'][number]) => [...was.v4, ...was.v6].some((q) => q.family === p.family && samePrefix(q.bytes, 0, p.bytes, 0, p.family === 4 ? 32 : 128));
    return [...iface.v4, ...iface.v6].every(had) ? 0 : 1;
  });
}

/**
 * The interface's announcements, on each of its ports that is up, into the batch: as many as
 * it holds (a few addresses each).
 */
export function announce(r: Router, batch: PacketBatch, iface: Interface): void {
  for (let p = 0; p < iface.ports.length; p++) {
    const port = iface.ports[p];
    if (!r.portUp(port)) continue;
    const v4 = r.addr4[iface.index];
    for (let k = 0; k < v4.length; k++) {
      const j = batch.emit(port);
      if (j < 0) return;
      // A request for its own address, broadcast (RFC 5227 3: an ARP announcement), as Linux sends.
      writeArpRequest(batch, j, iface, -1, 0, v4[k], v4[k]);
      r.count(port, r.counter.arp_requests_sent, 1);
    }
    for (let k = 0; k < iface.v6.length; k++) {
      const j = batch.emit(port);
      if (j < 0) return;
      writeUnsolicitedAdvertisement(batch.data, batch.offset(j), iface, iface.v6[k].bytes);
      batch.setLength(j, ETH_HLEN + 40 + 32);
      r.count(port, r.counter.neighbour_advertisements_sent, 1);
    }
  }
}

/** To all nodes, from and for `address`: R (a router) and O (override), not S (unsolicited). */
function writeUnsolicitedAdvertisement(d: Uint8Array, o: number, iface: Interface, address: Uint8Array): void {
  const ip = o + ETH_HLEN;
  writeEthernet(d, o, 0x3333, 1, iface.macHi, iface.macLo, ETHERTYPE_IPV6);
  d.set(address, ip + 8);
  d.fill(0, ip + 24, ip + 40);
  d[ip + 24] = 0xff;
  d[ip + 25] = 0x02;
  d[ip + 39] = 1;
  d.set(address, ip + 40 + 8);
  writeAdvertisement(d, ip, 0xa0000000, iface);
}
