// Hostile traffic against the router, from a guest on a routed port: truncated and
// inconsistent headers, ARP and NDP floods against the neighbour table, packets to next
// hops that never answer, on its own subnet and on another port's. Each is a counted drop;
// the neighbour table keeps room for the other ports' next hops; memory stays bounded; and
// two well-behaved routed ports keep routing.
import t from 'tap';
import { startDevice } from '../support/vhost-frontend.ts';
import { readFileSync } from 'node:fs';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { arp, neighbourSolicitation, tcp4, udp4 } from '../support/frames.ts';
import { GUEST, ROUTER, routedAtoB } from './lib.ts';


function residentKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

t.test('a hostile guest on a routed port', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
      // A /16: room for more absent hosts than a port's share of the neighbour table.
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/16'], routerMac: ROUTER.b },
      { name: 'h', socket: '{dir}/h.sock', addresses: ['10.9.0.1/16', '2001:db8:9::1/64'], routerMac: ROUTER.h },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    plugins: { routing: { neighbourLimit: 1024 } },
  });
  t.teardown(() => vr.stop());
  const [a, b, h] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b), await startDevice(vr.sockets.h)];
  t.teardown(() => [a, b, h].forEach((d) => d.close()));
  const [ga, gb, gh] = [testGuest(a), testGuest(b), testGuest(h)];

  const stillRouting = await routedAtoB(ga, gb);
  t.ok(await stillRouting(64), 'a -> b routed: TTL 63, checksum right, from the router MAC');
  const baseline = residentKb(vr.proc.pid!);

  // 1. Malformed headers.
  const good = tcp4({ src: '10.9.0.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, flags: 'S', srcMac: GUEST.h, dstMac: ROUTER.h });
  const mangled: Uint8Array[] = [];
  for (let k = 0; k < 2000; k++) {
    const f = good.slice(0, 14 + (k % 50));
    f[14] = [0x45, 0x44, 0x4f, 0x65, 0x41][k % 5];
    if (k % 3 === 0) f[16] = 0xff;
    if (k % 7 === 0 && f.length > 25) f[24] ^= 0x5a;
    mangled.push(f);
  }
  await gh.send(mangled);
  // 2. ARP flood: requests for the router from 20,000 forged senders in h's /16.
  const flood = Array.from({ length: 20000 }, (_, k) => arp({ op: 'request', senderMac: GUEST.h, senderIp: `10.9.${1 + (k >> 8)}.${k & 0xff}`, targetIp: '10.9.0.1', srcMac: GUEST.h }));
  await gh.send(flood);
  // 3. NDP flood: solicitations for the router from forged sources.
  const ndp = Array.from({ length: 5000 }, (_, k) => neighbourSolicitation({ src: `2001:db8:9::${(k + 2).toString(16)}`, target: '2001:db8:9::1', sourceLinkAddr: GUEST.h, srcMac: GUEST.h }));
  await gh.send(ndp);
  // 4. Packets to 5,000 next hops that never answer.
  const unresolvable = Array.from({ length: 5000 }, (_, k) => udp4({ src: '10.9.0.2', dst: `10.9.${100 + (k >> 8)}.${k & 0xff}`, srcPort: 1, dstPort: 2, srcMac: GUEST.h, dstMac: ROUTER.h }));
  await gh.send(unresolvable);

  t.ok(await stillRouting(64), 'a -> b still routed after the attacks');
  // 5. Packets to 5,000 absent hosts on b's subnet, then at once (while those would still be
  // being resolved) a packet from a to a new neighbour on b: it is asked for, as h's floods
  // hold only h's share of the table, whichever interface their addresses are on.
  const onB = Array.from({ length: 5000 }, (_, k) => udp4({ src: '10.9.0.2', dst: `10.0.${100 + (k >> 8)}.${k & 0xff}`, srcPort: 1, dstPort: 2, srcMac: GUEST.h, dstMac: ROUTER.h }));
  await gh.send(onB);
  await ga.send([udp4({ src: '10.0.1.2', dst: '10.0.2.3', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: ROUTER.a })]);
  await waitFor('an ARP request for a new neighbour on b', () => gb.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === '10.0.2.3'));
  t.pass("a new neighbour on b is resolved despite h's floods, one of them to b's subnet");
  const stats = await vr.stats();
  const drops = stats.h.plugins.routing.drops;
  t.ok(drops.ip_header_bad + drops.ip_length_bad + drops.ip_checksum_bad >= 1500, `malformed headers counted (${JSON.stringify(drops)})`);
  t.ok(drops.neighbour_queue_full + drops.neighbour_table_full > 1000, 'unresolvable next hops: counted drops, the queue bounded');
  t.ok(stats.h.plugins.routing.counters.arp_replies_sent > 1000, 'the ARP requests were answered');
  t.equal(stats.a.plugins.routing.drops.plugin_error + stats.h.plugins.routing.drops.plugin_error, 0, 'the router never threw');
  const grown = residentKb(vr.proc.pid!) - baseline;
  t.ok(grown < 64 * 1024, `resident memory grew ${grown} KiB (bounded tables)`);
  t.equal(gh.poll().filter((f) => f.srcMac !== ROUTER.h).length, 0, 'h got nothing but the router\'s own answers');
});
