// A TAP port against the Linux network stack on its other side: vrouter creates the
// interface, the test moves it into a network namespace of its own and gives it an
// address; a test frontend on a port of the same bridge resolves that address (ARP) and
// pings it. The interface outlives a data-plane death (the supervisor holds it), and goes
// when the port is removed.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';
import { hostProber, PROBER_MAC } from '../support/host-prober.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const NETNS = `vrtap${process.pid}`;
const IFACE = `vrt${process.pid % 100000}`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

/** An interface named `name` that is not a TAP: a dummy where the kernel has them, else one end of a veth pair. */
function addNonTapInterface(name: string): void {
  try {
    ip('link', 'add', name, 'type', 'dummy');
  } catch {
    ip('link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`);
  }
}

t.test('a TAP port: the host stack behind it answers ARP and ping, across a data-plane death', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 't', type: 'tap', interface: IFACE, bridge: 'br0', mtu: 1400 }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port t: TAP interface ${IFACE} up, MTU 1400[^]*supervisor: ready`), 'vrouter made the interface, up, with the port\'s MTU, before it said it was ready');
  t.match(ip('-o', 'link', 'show', 'dev', IFACE), /mtu 1400 .*state (UNKNOWN|UP)/, 'the host sees it up with MTU 1400');
  ip('netns', 'add', NETNS);
  t.teardown(() => ip('netns', 'del', NETNS));
  ip('link', 'set', IFACE, 'netns', NETNS);
  ip('-n', NETNS, 'addr', 'add', '10.9.0.2/24', 'dev', IFACE);
  ip('-n', NETNS, 'link', 'set', IFACE, 'up');
  const hostMac = /link\/ether ([0-9a-f:]+)/.exec(ip('-n', NETNS, '-o', 'link', 'show', 'dev', IFACE))![1];

  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.0.1');
  const reply = await probe.resolve('10.9.0.2');
  t.same([reply.arp!.senderIp, reply.arp!.senderMac, reply.dstMac], ['10.9.0.2', hostMac, PROBER_MAC], "the host's ARP reply, through the bridge to a");

  const ping = (seq: number) => probe.ping('10.9.0.2', hostMac, seq);
  const echo = await ping(1);
  t.equal(echo.ip!.dst, '10.9.0.1', 'the host answers the ping');
  const stats = await vr.stats();
  t.ok(stats.t.rx_packets >= 2 && stats.t.tx_packets >= 2, `t counts what it took from the host (${stats.t.rx_packets}) and gave it (${stats.t.tx_packets})`);
  t.same([stats.t.queues[0].rx_packets, stats.t.queues[0].tx_packets], [stats.t.rx_packets, stats.t.tx_packets], 'on its one queue too');

  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare took over', () => /took over/.test(vr.stderr()) || undefined, 10_000);
  t.match(ip('-n', NETNS, '-o', 'addr', 'show', 'dev', IFACE), /10\.9\.0\.2\/24/, 'the interface and its address outlived the data plane');
  t.equal((await ping(2)).ip!.src, '10.9.0.2', 'the new data plane polls the interface: ping answered');

  const removed = await adminClient(vr).call('DELETE', '/ports/t');
  t.equal(removed.status, 200, 'port t removed');
  await waitFor('the interface gone', () => !ip('-n', NETNS, '-o', 'link').includes(IFACE) || undefined, 5000);
  t.pass('the interface went with the port');
});

t.test('a TAP port\'s MTU changed through the admin endpoint: the interface kept, with the host\'s address; frames of the new size pass', async (t) => {
  const netns = `${NETNS}m`;
  const iface = `${IFACE}m`;
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0', mtu: 9000 }, { name: 't', type: 'tap', interface: iface, bridge: 'br0', mtu: 1400 }] });
  t.teardown(() => vr.stop());
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  ip('link', 'set', iface, 'netns', netns);
  ip('-n', netns, 'addr', 'add', '10.9.4.2/24', 'dev', iface);
  ip('-n', netns, 'link', 'set', iface, 'up');
  const link = () => ip('-n', netns, '-o', 'link', 'show', 'dev', iface);
  const [, index, hostMac] = /^(\d+):.*link\/ether ([0-9a-f:]+)/.exec(link())!;
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.4.1');
  await probe.resolve('10.9.4.2');
  // An echo request of 1,900 bytes of data (a frame of 1,942) is longer than the port's
  // frames at MTU 1400: dropped as it leaves for the interface, and counted; one of 1,300 passes.
  probe.echoRequest('10.9.4.2', hostMac, 1, 1900);
  const tooLong = await waitFor('the long frame counted', async () => (await vr.stats()).t.drops.frame_too_long || undefined);
  t.equal(tooLong, 1, 'at MTU 1400 the 1,942-byte frame is dropped as frame_too_long');
  const fits = await probe.ping('10.9.4.2', hostMac, 2, 1300);
  t.equal(fits.length, 1342, 'a frame of 1,342 bytes passes both ways');

  const admin = adminClient(vr);
  const doc = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  doc.ports.find((p) => p.name === 't')!.mtu = 2000;
  const changed = await admin.call('PUT', '/config', doc);
  t.equal(changed.status, 200, `the MTU change applied (${changed.text.slice(0, 200)})`);
  t.match(vr.stderr(), new RegExp(`port t: TAP interface ${iface}: MTU 1400 -> 2000, the interface and what the host configured on it kept`), 'set in place, and said so');
  t.notMatch(vr.stderr(), /port t: closed/, 'the port was not closed');
  t.match(link(), new RegExp(`^${index}: ${iface}.* mtu 2000 `), 'the same interface (same index), in the host\'s namespace, with MTU 2000');
  t.match(ip('-n', netns, '-o', 'addr', 'show', 'dev', iface), /10\.9\.4\.2\/24/, 'and the address the host gave it');
  const reply = await probe.ping('10.9.4.2', hostMac, 3, 1900);
  t.equal(reply.length, 1942, 'a frame of 1,942 bytes passes both ways: the host answers the large ping in one frame');
  t.equal((await vr.stats()).t.drops.frame_too_long, 1, 'none more too long for the port');

  doc.ports.find((p) => p.name === 't')!.mtu = 9001;
  const refused = await admin.call('PUT', '/config', doc);
  t.equal(refused.status, 400, 'an MTU past 9000 is refused');
  t.match(refused.text, /ports\[1\]\.mtu/, 'naming the field');
  t.match(link(), / mtu 2000 /, 'and changes nothing');

  // The host deletes the interface under the port, and an interface of another kind has its name,
  // so that it cannot be made again: a new MTU cannot be set, and the change is refused whole.
  // (Renamed first, it stays the port's while the name is taken: vrouter, checking every second,
  // never sees the name free.)
  ip('-n', netns, 'link', 'set', iface, 'name', `${iface}x`);
  addNonTapInterface(iface);
  t.teardown(() => { try { ip('link', 'del', iface); } catch { /* already deleted by the test */ } });
  ip('-n', netns, 'link', 'del', `${iface}x`);
  await waitFor('vrouter tried to make it again', () => new RegExp(`port t: TAP interface ${iface} was deleted and cannot be made again`).test(vr.stderr()) || undefined, 5000);
  doc.ports.find((p) => p.name === 't')!.mtu = 3000;
  const gone = await admin.call('PUT', '/config', doc);
  t.not(gone.status, 200, 'a new MTU for an interface the host deleted is refused');
  t.match(gone.text, new RegExp(`port t: cannot set MTU 3000 on TAP interface ${iface}: ioctl \\(TUNGETIFF`), 'naming the port, the interface and the failing call');
  const inForce = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  t.equal(inForce.ports.find((p) => p.name === 't')!.mtu, 2000, 'the config in force keeps MTU 2000');
  t.ok(vr.alive(), 'vrouter runs on');

  // The name free again, the interface is made again with the MTU in force.
  ip('link', 'del', iface);
  await waitFor('the interface made again', () => new RegExp(`port t: TAP interface ${iface} was deleted: made again`).test(vr.stderr()) || undefined, 5000);
  t.match(ip('-d', '-o', 'link', 'show', 'dev', iface), /mtu 2000 .*tun type tap/, 'a TAP interface again, with MTU 2000');
});

t.test('a TAP port with two queues: the host\'s flows spread over both, each polled by its PMD and counted, across a data-plane death', async (t) => {
  const netns = `${NETNS}q`;
  const iface = `${IFACE}q`;
  const vr = await startVrouter({ ports: [{ name: 't', type: 'tap', interface: iface, queues: 2, bridge: 'br0' }], pmd: { cores: [0, 1] } });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port t: TAP interface ${iface} up, MTU 1500, 2 queues \\(IFF_MULTI_QUEUE\\)`), 'vrouter made a multiqueue interface');
  t.match(ip('-d', '-o', 'link', 'show', 'dev', iface), /tun type tap .*multi_queue/, 'the host sees a multiqueue TAP');
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  ip('link', 'set', iface, 'netns', netns);
  ip('-n', netns, 'addr', 'add', '10.9.3.2/24', 'dev', iface);
  ip('-n', netns, 'link', 'set', iface, 'up');
  ip('-n', netns, 'neigh', 'add', '10.9.3.1', 'lladdr', PROBER_MAC, 'dev', iface);

  // 256 flows (one datagram from each of 256 source ports) from the host's side; resolves
  // with what each queue took once the port has counted them all.
  const flows = async (before: number[]) => {
    const send = `const dgram = require('node:dgram');
for (let p = 0; p < 256; p++) {
  const s = dgram.createSocket('udp4');
  s.bind(20000 + p, '10.9.3.2', () => s.send(Buffer.alloc(32), 9, '10.9.3.1', () => s.close()));
}`;
    execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', send]);
    const total = before[0] + before[1] + 256;
    const stats = await waitFor('256 datagrams counted', async () => {
      const s = await vr.stats();
      return s.t.rx_packets >= total ? s : undefined;
    }, 5000);
    return { total: stats.t.rx_packets, queues: stats.t.queues.slice(0, 2).map((q, i) => q.rx_packets - before[i]) };
  };
  const first = await flows([0, 0]);
  t.ok(first.queues[0] > 0 && first.queues[1] > 0, `spread over both queues: ${first.queues.join(' and ')}`);
  t.equal(first.queues[0] + first.queues[1], first.total, 'each counted on its queue');
  const pmds = (await adminClient(vr).call('GET', '/pmds')).json as { cpu: number; ns_per_packet: number | null; queues: { port: string; queue: number }[] }[];
  t.same(pmds.map((p) => p.queues), [[{ port: 't', queue: 0 }], [{ port: 't', queue: 1 }]], 'queue 0 on the first PMD, queue 1 on the second');
  t.ok(pmds.every((p) => p.ns_per_packet !== null), 'and each PMD polled frames: its queue\'s');

  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare took over', () => /took over/.test(vr.stderr()) || undefined, 10_000);
  const counted = (await vr.stats()).t.queues.slice(0, 2).map((q) => q.rx_packets);
  const again = await flows(counted);
  t.ok(again.queues[0] > 0 && again.queues[1] > 0, `the new data plane polls both queues: ${again.queues.join(' and ')}`);
});

t.test('a TAP interface deleted under its port is made again, and forwards', async (t) => {
  const netns = `${NETNS}d`;
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 't', type: 'tap', interface: IFACE, bridge: 'br0', mtu: 1400 }] });
  t.teardown(() => vr.stop());
  const before = Number(/^(\d+):/.exec(ip('-o', 'link', 'show', 'dev', IFACE))![1]);
  ip('link', 'del', IFACE);
  await waitFor('the interface made again', () => new RegExp(`port t: TAP interface ${IFACE} was deleted: made again`).test(vr.stderr()) || undefined, 5000);
  const link = ip('-o', 'link', 'show', 'dev', IFACE);
  const after = Number(/^(\d+):/.exec(link)![1]);
  t.not(after, before, `a new interface of that name (index ${before}, now ${after})`);
  t.match(link, /mtu 1400 /, 'with the port\'s MTU');
  // And it is the port's: the host stack behind it answers through the bridge.
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  ip('link', 'set', IFACE, 'netns', netns);
  ip('-n', netns, 'addr', 'add', '10.9.0.2/24', 'dev', IFACE);
  ip('-n', netns, 'link', 'set', IFACE, 'up');
  const hostMac = /link\/ether ([0-9a-f:]+)/.exec(ip('-n', netns, '-o', 'link', 'show', 'dev', IFACE))![1];
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const probe = hostProber(a, '10.9.0.1');
  t.equal((await probe.resolve('10.9.0.2')).arp!.senderMac, hostMac, 'the host behind the new interface answers ARP');
  t.equal((await probe.ping('10.9.0.2', hostMac, 1)).ip!.src, '10.9.0.2', 'and ping');
  // Moved into a namespace, it is still attached: nothing is made again.
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(vr.stderr().match(/was deleted: made again/g)?.length, 1, 'moving it to another namespace is not deleting it');
});

t.test('a TAP interface that cannot be made: a port added at run time is refused, naming why', async (t) => {
  // An interface of that name that is not a TAP (one end of a veth pair) cannot be attached to.
  const name = `vrd${process.pid % 100000}`;
  ip('link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`);
  t.teardown(() => ip('link', 'del', name));
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  const answer = await adminClient(vr).call('POST', '/ports', { name: 't', type: 'tap', interface: name, bridge: 'br0' });
  t.not(answer.status, 200, 'refused');
  t.match(answer.text, new RegExp(`port t: cannot open TAP interface ${name}: ioctl \\(TUNSETIFF ${name}\\) failed`), 'the answer names the interface and the failing call');
  t.ok(vr.alive(), 'vrouter runs on');
});
