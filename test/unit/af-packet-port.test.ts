// An AF_PACKET port on one end of a veth pair whose other end is in a network namespace of
// the test's, with an address: a test frontend on a port of the same bridge resolves that
// address (ARP) and pings it, through the socket's rings; again after a data-plane death
// (the supervisor holds the socket and its rings). The interface going away costs frames,
// counted, never vrouter.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';
import { hostProber, PROBER_MAC } from '../support/host-prober.ts';
import { ip, vethIntoNamespace } from '../support/netns.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const NETNS = `vrpkt${process.pid}`;
const IFACE = `vrp${process.pid % 100000}`;
const PEER = `${IFACE}p`;

t.test('an AF_PACKET port: the host stack behind a veth answers ARP and ping, across a data-plane death', async (t) => {
  vethIntoNamespace(t, NETNS, IFACE, PEER);
  ip('-n', NETNS, 'addr', 'add', '10.9.1.2/24', 'dev', PEER);
  ip('-n', NETNS, 'link', 'set', PEER, 'up');
  const hostMac = /link\/ether ([0-9a-f:]+)/.exec(ip('-n', NETNS, '-o', 'link', 'show', 'dev', PEER))![1];
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 'u', type: 'af_packet', interface: IFACE, bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port u: AF_PACKET rings on ${IFACE} \\(5 MiB\\)`), 'vrouter opened the rings');
  t.match(ip('-o', 'link', 'show', 'dev', IFACE), /[<,]UP[,>]/, 'and brought the interface up');

  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.1.1');
  const reply = await probe.resolve('10.9.1.2');
  t.same([reply.arp!.senderIp, reply.arp!.senderMac, reply.dstMac], ['10.9.1.2', hostMac, PROBER_MAC], "the host's ARP reply, through the bridge to a");

  const ping = (seq: number) => probe.ping('10.9.1.2', hostMac, seq);
  t.equal((await ping(1)).ip!.dst, '10.9.1.1', 'the host answers the ping');
  // An untagged frame of MTU + 18 bytes: a's limit lets it in (room for a tag), the
  // interface's does not let it out. The kernel would refuse it and stop sending there.
  probe.echoRequest('10.9.1.2', hostMac, 90, 1476);
  t.equal((await ping(91)).ip!.dst, '10.9.1.1', 'a frame too long for the interface, sent just before, holds up nothing');
  t.equal((await vr.stats()).u.drops.frame_too_long, 1, 'it was dropped as frame_too_long');
  const stats = await vr.stats();
  t.ok(stats.u.rx_packets >= 2 && stats.u.tx_packets >= 2, `u counts what it took from the interface (${stats.u.rx_packets}) and sent on it (${stats.u.tx_packets})`);
  t.same([stats.u.queues[0].rx_packets, stats.u.queues[0].tx_packets], [stats.u.rx_packets, stats.u.tx_packets], 'on its one queue too');

  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare took over', () => /took over/.test(vr.stderr()) || undefined, 10_000);
  t.equal((await ping(2)).ip!.src, '10.9.1.2', 'the new data plane polls the rings: ping answered');

  // The interface goes away under the port: frames to it are refused, vrouter runs on.
  ip('link', 'del', IFACE);
  probe.echoRequest('10.9.1.2', hostMac, 3);
  await waitFor('the loss noticed', () => new RegExp(`port u: interface ${IFACE} is gone`).test(vr.stderr()) || undefined, 5000);
  t.ok(vr.alive(), 'vrouter runs on after the interface went, and says so');
  // It comes back (a new interface of the same name): the port opens new rings on it.
  ip('link', 'add', IFACE, 'type', 'veth', 'peer', 'name', PEER, 'netns', NETNS);
  ip('-n', NETNS, 'addr', 'add', '10.9.1.2/24', 'dev', PEER);
  ip('-n', NETNS, 'link', 'set', PEER, 'up');
  await waitFor('the interface back', () => new RegExp(`port u: interface ${IFACE} is back: new rings on it`).test(vr.stderr()) || undefined, 5000);
  // The new interface knows nothing of a: an ARP request tells it (as the first one did).
  const newMac = (await probe.resolve('10.9.1.2')).arp!.senderMac;
  t.equal((await probe.ping('10.9.1.2', newMac, 4)).ip!.dst, '10.9.1.1', 'and forwards again: ping answered');
  const removed = await adminClient(vr).call('DELETE', '/ports/u');
  t.equal(removed.status, 200, 'the port can still be removed');
});

t.test('an AF_PACKET port with two queues: the interface\'s flows spread over both (PACKET_FANOUT), each counted', async (t) => {
  const netns = `${NETNS}q`;
  const iface = `${IFACE}q`;
  const peer = `${iface}p`;
  vethIntoNamespace(t, netns, iface, peer);
  // The host's side sends only what the test has it send: IPv4 to a neighbour it knows.
  execFileSync('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`]);
  ip('-n', netns, 'addr', 'add', '10.9.2.2/24', 'dev', peer);
  ip('-n', netns, 'link', 'set', peer, 'up');
  ip('-n', netns, 'neigh', 'add', '10.9.2.1', 'lladdr', PROBER_MAC, 'dev', peer);
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 'u', type: 'af_packet', interface: iface, queues: 2, bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port u: AF_PACKET rings on ${iface} \\(5 MiB per queue, 2 queues, PACKET_FANOUT by flow\\)`), 'vrouter opened a socket with rings per queue');
  // 256 flows (one datagram from each of 256 source ports) from the host's side.
  const send = `const dgram = require('node:dgram');
let left = 256;
for (let p = 0; p < 256; p++) {
  const s = dgram.createSocket('udp4');
  s.bind(20000 + p, '10.9.2.2', () => s.send(Buffer.alloc(32), 9, '10.9.2.1', () => { s.close(); left--; }));
}`;
  /** The 256 flows sent; what the port's queues counted once it took them all (or 5 s). */
  const flows = async (before: number) => {
    execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', send]);
    let stats = await vr.stats();
    for (let i = 0; i < 50 && stats.u.rx_packets < before + 256; i++) {
      await new Promise((r) => setTimeout(r, 100));
      stats = await vr.stats();
    }
    return stats;
  };
  const stats = await flows(0);
  const [q0, q1] = stats.u.queues.map((q) => q.rx_packets);
  // Exactly: what the host sends out of the interface itself (its IPv6 at link up) is
  // outgoing there, and not taken, as one socket's PACKET_IGNORE_OUTGOING has it
  t.equal(stats.u.rx_packets, 256, 'the port took every datagram, and nothing the host sent out of the interface');
  t.ok(q0 > 0 && q1 > 0, `spread over both queues: ${q0} and ${q1}`);
  t.equal(q0 + q1, stats.u.rx_packets, 'each counted on its queue');

  // Datagrams of 3,000 bytes, which the host sends as three fragments each: they come as
  // fragments (a router forwards them as they are), all three on one queue (the fanout
  // hashes fragments by addresses), not reassembled into one frame longer than the MTU.
  let before = stats;
  for (let p = 0; p < 3; p++) {
    const large = `const s = require('node:dgram').createSocket('udp4');
s.bind(${30000 + p}, '10.9.2.2', () => s.send(Buffer.alloc(3000), 9, '10.9.2.1', () => s.close()));`;
    execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', large]);
    let after = await vr.stats();
    for (let i = 0; i < 50 && after.u.rx_packets < before.u.rx_packets + 3 && after.u.drops.frame_too_long === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await vr.stats();
    }
    t.equal(after.u.drops.frame_too_long, 0, `datagram ${p}: not taken as one frame too long`);
    const grew = after.u.queues.map((q, i) => q.rx_packets - before.u.queues[i].rx_packets);
    t.same(grew.slice().sort(), [0, 3], `datagram ${p}: its three fragments, all on one queue (${grew.join(' and ')})`);
    before = after;
  }

  // The host's own frames out of the interface are outgoing there: not taken (each socket's
  // PACKET_IGNORE_OUTGOING does not hold in a fanout group: the group's flag does, and the
  // sockets' filter where the kernel lacks that flag; packet-outgoing-filter.test.ts)
  ip('addr', 'add', '10.9.2.9/24', 'dev', iface);
  ip('neigh', 'add', '10.9.2.77', 'lladdr', '02:00:00:00:00:77', 'dev', iface);
  const out = `const s = require('node:dgram').createSocket('udp4');
let left = 20;
s.bind(0, '10.9.2.9', function send() { if (left-- > 0) s.send(Buffer.alloc(32), 9, '10.9.2.77', send); else s.close(); });`;
  execFileSync(process.execPath, ['-e', out]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await vr.stats()).u.rx_packets, before.u.rx_packets, '20 datagrams the host sent out of the interface: none taken');

  // The interface made again: both queues get rings on the new one (a fanout group of its
  // own: the old sockets are in the old one until the PMDs let go of them).
  ip('link', 'del', iface);
  await waitFor('the loss noticed', () => new RegExp(`port u: interface ${iface} is gone`).test(vr.stderr()) || undefined, 5000);
  ip('link', 'add', iface, 'type', 'veth', 'peer', 'name', peer, 'netns', netns);
  ip('-n', netns, 'addr', 'add', '10.9.2.2/24', 'dev', peer);
  ip('-n', netns, 'link', 'set', peer, 'up');
  ip('-n', netns, 'neigh', 'add', '10.9.2.1', 'lladdr', PROBER_MAC, 'dev', peer);
  await waitFor('the interface back', () => new RegExp(`port u: interface ${iface} is back: new rings on it`).test(vr.stderr()) || undefined, 5000)
    .catch((err: Error) => { throw new Error(`${err.message}; vrouter's log:\n${vr.stderr().slice(-2000)}`); });
  const again = await flows(stats.u.rx_packets);
  const [r0, r1] = again.u.queues.map((q) => q.rx_packets);
  t.ok(again.u.rx_packets >= stats.u.rx_packets + 256, `the port took every datagram on the new interface (${again.u.rx_packets - stats.u.rx_packets})`);
  t.ok(r0 > q0 && r1 > q1, `on both queues: ${r0 - q0} and ${r1 - q1}`);
});

t.test('an interface that does not exist: an AF_PACKET port added at run time is refused, naming why', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  const answer = await adminClient(vr).call('POST', '/ports', { name: 'u', type: 'af_packet', interface: 'vr-none0', bridge: 'br0' });
  t.not(answer.status, 200, 'refused');
  t.match(answer.text, /port u: cannot open interface vr-none0: no interface of that name/, 'the answer names the interface and says why');
  t.ok(vr.alive(), 'vrouter runs on');

  // An interface whose MTU is below the port's: the kernel would refuse the port's longest frames.
  const small = `${IFACE}m`;
  ip('link', 'add', small, 'mtu', '1400', 'type', 'veth', 'peer', 'name', `${small}p`);
  t.teardown(() => ip('link', 'del', small));
  const refused = await adminClient(vr).call('POST', '/ports', { name: 'u', type: 'af_packet', interface: small, bridge: 'br0' });
  t.equal(refused.status, 400, 'refused');
  t.match(refused.text, new RegExp(`interface ${small} has MTU 1400, below the port's 1500`), 'naming both MTUs');
  const taken = await adminClient(vr).call('POST', '/ports', { name: 'u', type: 'af_packet', interface: small, bridge: 'br0', mtu: 1400 });
  t.equal(taken.status, 200, 'a port of MTU 1400 takes it');
  // The port's MTU raised past the interface's: refused before the port is closed, which runs on
  const admin = adminClient(vr);
  const opened = () => vr.stderr().split(`port u: AF_PACKET rings on ${small}`).length - 1;
  const openedBefore = opened();
  const doc = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  doc.ports.find((p) => p.name === 'u')!.mtu = 1500;
  const raised = await admin.call('PUT', '/config', doc);
  t.not(raised.status, 200, 'a change of its MTU to 1500 is refused');
  t.match(raised.text, new RegExp(`interface ${small} has MTU 1400, below the port's 1500`), 'naming why');
  const now = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  t.equal(now.ports.find((p) => p.name === 'u')!.mtu, 1400, 'the config is as it was');
  t.equal(opened(), openedBefore, 'and the port was neither closed nor opened again');
  t.ok(vr.alive(), 'vrouter runs on');
});
