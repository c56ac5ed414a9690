// A guest's packets that the routing stage sends on later or cuts up are judged by the ACL
// after it as the rest of its traffic is: a packet held while its next hop is resolved is
// denied once the next hop answers, every fragment of a denied packet is denied, and a
// permitted held packet still goes on, through connection tracking (its answer passes).
import t from 'tap';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { arp, udp4 } from '../support/frames.ts';
import { GUEST, ROUTER } from './lib.ts';

t.test('held packets and fragments meet the ACL', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a, mtu: 9000 },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b, mtu: 1500 },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing', 'acl'],
    neighbours: [
      { address: '10.0.1.2', mac: GUEST.a, port: 'a' },
      { address: '10.0.2.6', mac: GUEST.b, port: 'b' },
    ],
    acl: [
      { action: 'deny', dst: '10.0.2.5/32' },
      { action: 'deny', dst: '10.0.2.6/32' },
      { action: 'permit', inPort: 'a' },
      { action: 'deny' },
    ],
    plugins: { acl: { stateful: true } },
  });
  t.teardown(() => vr.stop());
  const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB)];
  const fromA = (dst: string, payload = 20, dstPort = 7) => udp4({ src: '10.0.1.2', dst, srcPort: 4000, dstPort, payload, df: false, srcMac: GUEST.a, dstMac: ROUTER.a });
  const answerArp = async (ip: string) => {
    await waitFor(`the router asks for ${ip} on b`, () => b.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === ip), 5000);
    await b.send([arp({ op: 'reply', senderMac: GUEST.b, senderIp: ip, targetMac: ROUTER.b, targetIp: '10.0.2.1', dstMac: ROUTER.b, srcMac: GUEST.b })]);
  };

  // Denied, held until its next hop answers: the answer must not carry it past the ACL.
  await a.send([fromA('10.0.2.5')]);
  await answerArp('10.0.2.5');
  // Permitted, held: it goes on once .7 answers, and opens a connection for the answer.
  await a.send([fromA('10.0.2.7')]);
  await answerArp('10.0.2.7');
  const permitted = await waitFor('the permitted held packet on b', () => b.poll().find((f) => f.ip?.dst === '10.0.2.7'), 5000);
  t.equal(permitted.ip?.ttl, 63, 'routed');
  await b.send([udp4({ src: '10.0.2.7', dst: '10.0.1.2', srcPort: 7, dstPort: 4000, payload: 20, srcMac: GUEST.b, dstMac: ROUTER.b })]);
  await waitFor("the answer on a: the held packet opened the connection (b's own packets are denied)", () => a.poll().find((f) => f.ip?.src === '10.0.2.7'), 5000);

  // Denied and cut into two fragments for b's MTU.
  await a.send([fromA('10.0.2.6', 1900)]);
  // And a packet after them, to know they are through.
  await a.send([fromA('10.0.2.7', 20, 9)]);
  await waitFor('the packet sent after them on b', () => b.poll().find((f) => f.ip?.dst === '10.0.2.7' && f.l4?.dstPort === 9), 5000);
  const seen = b.poll();
  t.same(seen.filter((f) => f.ip?.dst === '10.0.2.5' || f.ip?.dst === '10.0.2.6'), [], 'nothing to .5 or .6 reached b');

  const stats = await vr.stats();
  const drops = stats.a.plugins.acl.drops;
  t.equal(drops.acl_deny, 3, `the held packet and the two fragments denied on a (${JSON.stringify(drops)})`);
  t.equal(stats.a.plugins.routing.counters.fragments_created, 2, 'the packet to .6 was cut in two');
  t.equal(stats.a.plugins.routing.counters.held_released, 2, 'both held packets went on from routing');
});
