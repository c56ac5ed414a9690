// An AF_XDP port on one end of a veth pair whose other end is in a network namespace of the
// test's, with an address: a test frontend on a port of the same bridge resolves that
// address (ARP) and pings it, through the socket's UMEM and rings; again after a data-plane
// death (the supervisor holds the socket, its UMEM and the XDP program). The interface going
// away costs frames, counted, never vrouter; one of the same name coming back gets new sockets.
import { execFileSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';
import { hostProber, PROBER_MAC } from '../support/host-prober.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const NETNS = `vrxdp${process.pid}`;
const IFACE = `vrx${process.pid % 100000}`;
const PEER = `${IFACE}p`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** A veth pair with `queues` queues each way: `iface` here, `peer` in `netns` with 10.9.<net>.2/24. */
function vethPair(t: Test, netns: string, iface: string, peer: string, net: number, queues: number): string {
  ip('link', 'add', iface, 'numrxqueues', String(queues), 'numtxqueues', String(queues), 'type', 'veth', 'peer', 'name', peer, 'netns', netns, 'numrxqueues', String(queues), 'numtxqueues', String(queues));
  t.teardown(() => {
    try {
      ip('link', 'del', iface);
    } catch {
      // gone with the namespace, or deleted by the test
    }
  });
  ip('-n', netns, 'addr', 'add', `10.9.${net}.2/24`, 'dev', peer);
  ip('-n', netns, 'link', 'set', peer, 'up');
  return /link\/ether ([0-9a-f:]+)/.exec(ip('-n', netns, '-o', 'link', 'show', 'dev', peer))![1];
}

t.test('an AF_XDP port: the host stack behind a veth answers ARP and ping, across a data-plane death', async (t) => {
  ip('netns', 'add', NETNS);
  t.teardown(() => ip('netns', 'del', NETNS));
  const hostMac = vethPair(t, NETNS, IFACE, PEER, 11, 1);
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 'u', type: 'af_xdp', interface: IFACE, bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port u: AF_XDP sockets on ${IFACE} \\(copy mode, XDP program in (native|generic) mode, 6 MiB UMEM\\)`), 'vrouter opened the socket');
  t.match(ip('-o', 'link', 'show', 'dev', IFACE), /[<,]UP[,>].* xdp/, 'brought the interface up, with an XDP program on it');
  // A NIC's receive filter drops frames to MACs not its own before XDP sees them.
  t.match(ip('-d', '-o', 'link', 'show', 'dev', IFACE), / promiscuity 1 /, 'and made it promiscuous');

  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.11.1');
  const reply = await probe.resolve('10.9.11.2');
  t.same([reply.arp!.senderIp, reply.arp!.senderMac, reply.dstMac], ['10.9.11.2', hostMac, PROBER_MAC], "the host's ARP reply, through the bridge to a");

  const ping = (seq: number) => probe.ping('10.9.11.2', hostMac, seq);
  t.equal((await ping(1)).ip!.dst, '10.9.11.1', 'the host answers the ping');
  const stats = await vr.stats();
  t.ok(stats.u.rx_packets >= 2 && stats.u.tx_packets >= 2, `u counts what it took from the interface (${stats.u.rx_packets}) and sent on it (${stats.u.tx_packets})`);
  t.same([stats.u.queues[0].rx_packets, stats.u.queues[0].tx_packets], [stats.u.rx_packets, stats.u.tx_packets], 'on its one queue too');
  // More frames than there are receive chunks: every chunk comes back to the fill ring. They
  // are for the host's own MAC, which the bridge learned on u: dropped there, never filling a's ring.
  for (let seq = 2; seq < 40; seq++) t.equal((await ping(seq)).ip!.dst, '10.9.11.1', `ping ${seq}`, { diagnostic: false });
  const flood = `const d = require('node:dgram').createSocket('udp4');
let left = 3000;
d.bind(0, '10.9.11.2', function send() { if (left-- > 0) d.send(Buffer.alloc(64), 9, '10.9.11.9', left % 200 === 0 ? () => setTimeout(send, 5) : send); else d.close(); });`;
  ip('-n', NETNS, 'neigh', 'replace', '10.9.11.9', 'lladdr', hostMac, 'dev', PEER);
  execFileSync('ip', ['netns', 'exec', NETNS, process.execPath, '-e', flood]);
  const before = stats.u.rx_packets;
  await waitFor('3000 datagrams taken', async () => ((await vr.stats()).u.rx_packets - before >= 3000 ? true : undefined), 5000);
  t.equal((await ping(40)).ip!.dst, '10.9.11.1', 'after 3000 frames (more than the 2048 receive chunks), still answered');

  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare took over', () => /took over/.test(vr.stderr()) || undefined, 10_000);
  t.equal((await ping(41)).ip!.src, '10.9.11.2', 'the new data plane polls the same socket: ping answered');

  // The interface goes away under the port: frames to it are refused, vrouter runs on.
  ip('link', 'del', IFACE);
  probe.echoRequest('10.9.11.2', hostMac, 42);
  await waitFor('the loss noticed', () => new RegExp(`port u: interface ${IFACE} is gone`).test(vr.stderr()) || undefined, 5000);
  t.ok(vr.alive(), 'vrouter runs on after the interface went, and says so');
  // It comes back (a new interface of the same name): the port opens new sockets on it.
  vethPair(t, NETNS, IFACE, PEER, 11, 1);
  await waitFor('the interface back', () => new RegExp(`port u: interface ${IFACE} is back: new rings on it`).test(vr.stderr()) || undefined, 5000);
  const newMac = (await probe.resolve('10.9.11.2')).arp!.senderMac;
  t.equal((await probe.ping('10.9.11.2', newMac, 43)).ip!.dst, '10.9.11.1', 'and forwards again: ping answered');
  t.match(ip('-d', '-o', 'link', 'show', 'dev', IFACE), / promiscuity 1 /, 'the new interface promiscuous too');
  // A new MTU reopens the port: its sockets closed, new ones bound to the same queue.
  const admin = adminClient(vr);
  const doc = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  doc.ports.find((p) => p.name === 'u')!.mtu = 1400;
  const changed = await admin.call('PUT', '/config', doc);
  t.equal(changed.status, 200, `the MTU change applied (${changed.text.slice(0, 200)})`);
  t.notMatch(vr.stderr(), /port u: cannot open/, 'the port reopened');
  t.equal((await probe.ping('10.9.11.2', newMac, 44)).ip!.dst, '10.9.11.1', 'and forwards: ping answered');
  const removed = await admin.call('DELETE', '/ports/u');
  t.equal(removed.status, 200, 'the port can still be removed');
  await waitFor('the XDP program gone with the port', () => (/ xdp/.test(ip('-o', 'link', 'show', 'dev', IFACE)) ? undefined : true), 5000);
  t.match(ip('-d', '-o', 'link', 'show', 'dev', IFACE), / promiscuity 0 /, 'and the interface no longer promiscuous');
});

t.test('an AF_XDP port with two queues: a socket on each of the interface\'s queues, each counted', async (t) => {
  const netns = `${NETNS}q`;
  const iface = `${IFACE}q`;
  const peer = `${iface}p`;
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  vethPair(t, netns, iface, peer, 12, 2);
  ip('-n', netns, 'neigh', 'add', '10.9.12.1', 'lladdr', PROBER_MAC, 'dev', peer);
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 'u', type: 'af_xdp', interface: iface, queues: 2, bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port u: AF_XDP sockets on ${iface} \\(copy mode, XDP program in (native|generic) mode, 6 MiB UMEM per queue, queues 0-1\\)`), 'vrouter opened a socket per queue');
  // 256 flows (one datagram from each of 256 source ports) from the host's side: the veth
  // spreads them over its queues by flow.
  const send = `const dgram = require('node:dgram');
for (let p = 0; p < 256; p++) {
  const s = dgram.createSocket('udp4');
  s.bind(20000 + p, '10.9.12.2', () => s.send(Buffer.alloc(32), 9, '10.9.12.1', () => s.close()));
}`;
  execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', send]);
  let stats = await vr.stats();
  for (let i = 0; i < 50 && stats.u.rx_packets < 256; i++) {
    await new Promise((r) => setTimeout(r, 100));
    stats = await vr.stats();
  }
  const [q0, q1] = stats.u.queues.map((q) => q.rx_packets);
  t.ok(stats.u.rx_packets >= 256, `the port took every datagram (${stats.u.rx_packets})`);
  t.ok(q0 > 0 && q1 > 0, `spread over both queues: ${q0} and ${q1}`);
  t.equal(q0 + q1, stats.u.rx_packets, 'each counted on its queue');

  // Frames the other way leave through the port's first queue and reach the host.
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.12.1');
  const hostMac = (await probe.resolve('10.9.12.2')).arp!.senderMac;
  t.equal((await probe.ping('10.9.12.2', hostMac, 1)).ip!.dst, '10.9.12.1', 'the host answers a ping through the port');
});

t.test('an AF_XDP port asking for more queues than its interface has, or on no interface: refused, naming why', async (t) => {
  const netns = `${NETNS}n`;
  const iface = `${IFACE}n`;
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  vethPair(t, netns, iface, `${iface}p`, 13, 2);
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  const admin = adminClient(vr);
  const none = await admin.call('POST', '/ports', { name: 'u', type: 'af_xdp', interface: 'vr-none0', bridge: 'br0' });
  t.not(none.status, 200, 'no such interface: refused');
  const message = (answer: { text: string }) => (JSON.parse(answer.text) as { error: { message: string } }).error.message;
  t.match(message(none), /port u: cannot open interface vr-none0: no interface of that name \("interface": "vr-none0"\)/, 'the answer names the field and says why');
  const many = await admin.call('POST', '/ports', { name: 'u', type: 'af_xdp', interface: iface, queues: 3, bridge: 'br0' });
  t.not(many.status, 200, 'three queues of an interface with two: refused');
  t.match(message(many), new RegExp(`port u: cannot open interface ${iface}: .*queue 2: the interface has fewer queues than "queues" asks for`), 'the answer names the field and says why');
  t.notMatch(ip('-o', 'link', 'show', 'dev', iface), / xdp/, 'and leaves no XDP program behind');
  // Two queues to receive on, one to send from: the second could send nothing.
  const lopsided = `${iface}l`;
  ip('link', 'add', lopsided, 'numrxqueues', '2', 'numtxqueues', '1', 'type', 'veth', 'peer', 'name', `${lopsided}p`, 'netns', netns, 'numrxqueues', '2', 'numtxqueues', '1');
  t.teardown(() => ip('link', 'del', lopsided));
  const oneWay = await admin.call('POST', '/ports', { name: 'v', type: 'af_xdp', interface: lopsided, queues: 2, bridge: 'br0' });
  t.not(oneWay.status, 200, 'two queues of an interface with two receive queues and one transmit queue: refused');
  t.match(message(oneWay), new RegExp(`port v: cannot open interface ${lopsided}: .*queue 1: the interface has no transmit queue 1`), 'saying why');
  t.notMatch(ip('-o', 'link', 'show', 'dev', lopsided), / xdp/, 'and leaves no XDP program behind');
  const fits = await admin.call('POST', '/ports', { name: 'u', type: 'af_xdp', interface: iface, queues: 2, bridge: 'br0' });
  t.equal(fits.status, 200, `two queues are taken (${fits.text})`);
  t.ok(vr.alive(), 'vrouter runs on');
});
