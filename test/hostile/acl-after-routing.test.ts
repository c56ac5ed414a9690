// A guest's packets that the routing stage sends on later or cuts up are judged by the ACL
// after it as the rest of its traffic is: a packet held while its next hop is resolved is
// denied once the next hop answers, every fragment of a denied packet is denied, and a
// permitted held packet still goes on, through connection tracking (its answer passes).
// The answer the ACL writes in a rejected frame's place leaves that frame's offloads
// behind (a checksum left to do, a super-frame's segments).
import t from 'tap';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { arp, parseFrame, tcp4, udp4 } from '../support/frames.ts';
import { postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { bit, NET_HDR_LEN, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_RING_F_EVENT_IDX } from '../../src/virtio/constants.ts';
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

t.test("a rejected frame's answer leaves the frame's offloads behind: a reset to a checksum-offloaded SYN, and to a super-frame, arrives right", async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing', 'acl'],
    neighbours: [{ address: '10.0.2.9', mac: GUEST.b, port: 'b' }],
    acl: [{ action: 'reject', protocol: 'tcp', dst: '10.0.2.9/32' }],
  });
  t.teardown(() => vr.stop());
  // a negotiates checksum and segmentation offloads from the guest, none towards it: the
  // router completes what a frame to it leaves to do.
  const features = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4);
  const devA = await startDevice(vr.sockets.a, { features });
  const devB = await startDevice(vr.sockets.b);
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const rx = Array.from({ length: 16 }, () => postRxBuffer(devA.rx, 2048));
  devA.kick();
  /** virtio-net header: NEEDS_CSUM at the TCP checksum; a segmentation type and size when given */
  const header = (gsoType = 0, gsoSize = 0, hdrLen = 0) => {
    const h = new Uint8Array(NET_HDR_LEN);
    const v = new DataView(h.buffer);
    h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h[1] = gsoType;
    v.setUint16(2, hdrLen, true);
    v.setUint16(4, gsoSize, true);
    v.setUint16(6, 34, true);
    v.setUint16(8, 16, true);
    return h;
  };
  const syn = tcp4({ src: '10.0.1.2', dst: '10.0.2.9', srcPort: 4001, dstPort: 80, flags: 'S', seq: 1000, srcMac: GUEST.a, dstMac: ROUTER.a });
  const bulk = tcp4({ src: '10.0.1.2', dst: '10.0.2.9', srcPort: 4002, dstPort: 80, flags: 'A', seq: 5000, ack: 1, payload: 4000, srcMac: GUEST.a, dstMac: ROUTER.a });
  sendFrame(devA.tx, syn, { header: header() });
  sendFrame(devA.tx, bulk, { header: header(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54) });
  devA.kick();
  const received: ReturnType<typeof parseFrame>[] = [];
  const resets = await waitFor('two resets back on a', () => {
    const got = devA.rx.takeUsed();
    const byHead = new Map(rx.map((b) => [b.head, b.off]));
    for (const u of got) received.push(parseFrame(devA.ram.bytes.slice(byHead.get(u.id)! + NET_HDR_LEN, byHead.get(u.id)! + u.len)));
    return received.length >= 2 ? received : undefined;
  }, 5000);
  t.same(resets.map((f) => [f.l4?.srcPort, f.l4?.dstPort, f.l4?.tcpFlags, f.l4?.checksumOk, f.ip?.headerChecksumOk]), [
    [80, 4001, 'RA', true, true],
    [80, 4002, 'R', true, true],
  ], 'a reset for each, its checksum right: not "completed" again as the SYN left it, nor cut as the super-frame would have been');
});
