// Hostile traffic against the router, from a guest on a routed port: truncated and
// inconsistent headers, ARP and NDP floods against the neighbour table, packets to next
// hops that never answer. Each is a counted drop; the neighbour table keeps room for the
// other interfaces; memory stays bounded; and two well-behaved routed ports keep routing.
import t from 'tap';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { readFileSync } from 'node:fs';
import { waitFor } from '../support/traffic.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { arp, neighbourSolicitation, parseFrame, tcp4, udp4, type ParsedFrame } from '../support/frames.ts';

const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01', h: '02:00:00:00:0e:01' };
const GUEST = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b', h: '52:54:00:00:00:0e' };

function residentKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

/** Sends frames in chunks the TX ring holds, waiting for the backend to take each chunk. */
async function send(dev: VirtioNetDevice, frames: Uint8Array[]): Promise<void> {
  for (let at = 0; at < frames.length; at += 128) {
    const chunk = frames.slice(at, at + 128);
    for (const f of chunk) sendFrame(dev.tx, f);
    dev.kick();
    let used = 0;
    await waitFor(`the backend to take ${chunk.length} frames`, () => (used += dev.tx.takeUsed().length) >= chunk.length || undefined, 5000);
  }
}

/** Keeps RX buffers posted on a device and parses what arrives. */
function receiver(dev: VirtioNetDevice) {
  const buffers = new Map<number, number>();
  const post = () => {
    while (buffers.size < 200) {
      const { head, off } = postRxBuffer(dev.rx, 2048);
      buffers.set(head, off);
    }
    dev.kick();
  };
  post();
  const got: ParsedFrame[] = [];
  return {
    got,
    poll(): ParsedFrame[] {
      for (const used of dev.rx.takeUsed()) {
        const off = buffers.get(used.id)! + NET_HDR_LEN;
        buffers.delete(used.id);
        got.push(parseFrame(dev.ram.bytes.slice(off, off + used.len - NET_HDR_LEN)));
      }
      post();
      return got;
    },
  };
}

t.test('a hostile guest on a routed port', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
      { name: 'h', socket: '{dir}/h.sock', addresses: ['10.9.0.1/16', '2001:db8:9::1/64'], routerMac: ROUTER.h },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    plugins: { routing: { neighbourLimit: 1024 } },
  });
  t.teardown(() => vr.stop());
  const [a, b, h] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b), await startDevice(vr.sockets.h)];
  t.teardown(() => [a, b, h].forEach((d) => d.close()));
  const [ra, rb, rh] = [receiver(a), receiver(b), receiver(h)];

  // a learns the router, b answers the router's ARP: then a's packets reach b, routed.
  await send(a, [arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  await waitFor('the ARP reply on a', () => ra.poll().find((f) => f.arp?.op === 2));
  const toB = (n: number) => Array.from({ length: n }, (_, k) => udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1000 + k, dstPort: 9, payload: 64, srcMac: GUEST.a, dstMac: ROUTER.a }));
  await send(a, toB(1));
  const request = await waitFor('the router\'s ARP request on b', () => rb.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === '10.0.2.2'));
  t.equal(request.arp?.senderIp, '10.0.2.1');
  await send(b, [arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.2', targetMac: ROUTER.b, targetIp: '10.0.2.1', dstMac: ROUTER.b, srcMac: GUEST.b })]);
  await waitFor('the held packet on b', () => rb.poll().some((f) => f.ip?.dst === '10.0.2.2'));
  const routedToB = () => rb.poll().filter((f) => f.ip?.dst === '10.0.2.2' && f.ip.ttl === 63 && f.ip.headerChecksumOk && f.srcMac === ROUTER.b).length;
  const stillRouting = async (n: number) => {
    const before = routedToB();
    await send(a, toB(n));
    await waitFor(`${n} routed packets on b`, () => routedToB() - before >= n || undefined, 5000);
    return true;
  };
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
  await send(h, mangled);
  // 2. ARP flood: requests for the router from 20,000 forged senders in h's /16.
  const flood = Array.from({ length: 20000 }, (_, k) => arp({ op: 'request', senderMac: GUEST.h, senderIp: `10.9.${1 + (k >> 8)}.${k & 0xff}`, targetIp: '10.9.0.1', srcMac: GUEST.h }));
  await send(h, flood);
  // 3. NDP flood: solicitations for the router from forged sources.
  const ndp = Array.from({ length: 5000 }, (_, k) => neighbourSolicitation({ src: `2001:db8:9::${(k + 2).toString(16)}`, target: '2001:db8:9::1', sourceLinkAddr: GUEST.h, srcMac: GUEST.h }));
  await send(h, ndp);
  // 4. Packets to 5,000 next hops that never answer.
  const unresolvable = Array.from({ length: 5000 }, (_, k) => udp4({ src: '10.9.0.2', dst: `10.9.${100 + (k >> 8)}.${k & 0xff}`, srcPort: 1, dstPort: 2, srcMac: GUEST.h, dstMac: ROUTER.h }));
  await send(h, unresolvable);

  t.ok(await stillRouting(64), 'a -> b still routed after the attacks');
  // A new neighbour on b can still be resolved: h's flood holds only its share of the table.
  await send(a, [udp4({ src: '10.0.1.2', dst: '10.0.2.3', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: ROUTER.a })]);
  await waitFor('an ARP request for a new neighbour on b', () => rb.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === '10.0.2.3'));
  t.pass('a new neighbour on b is resolved despite the flood on h');
  const stats = await vr.stats();
  const drops = stats.h.plugins.routing.drops;
  t.ok(drops.ip_header_bad + drops.ip_length_bad + drops.ip_checksum_bad >= 1500, `malformed headers counted (${JSON.stringify(drops)})`);
  t.ok(drops.neighbour_queue_full + drops.neighbour_table_full > 1000, 'unresolvable next hops: counted drops, the queue bounded');
  t.ok(stats.h.plugins.routing.counters.arp_replies_sent > 1000, 'the ARP requests were answered');
  t.equal(stats.a.plugins.routing.drops.plugin_error + stats.h.plugins.routing.drops.plugin_error, 0, 'the router never threw');
  const grown = residentKb(vr.proc.pid!) - baseline;
  t.ok(grown < 64 * 1024, `resident memory grew ${grown} KiB (bounded tables)`);
  t.equal(rh.poll().filter((f) => f.srcMac !== ROUTER.h).length, 0, 'h got nothing but the router\'s own answers');
});
