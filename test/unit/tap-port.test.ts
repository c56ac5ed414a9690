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

t.test('a TAP port: the host stack behind it answers ARP and ping, across a data-plane death', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', bridge: 'br0' }, { name: 't', type: 'tap', interface: IFACE, bridge: 'br0', mtu: 1400 }] });
  t.teardown(() => vr.stop());
  t.match(vr.stderr(), new RegExp(`port t: TAP interface ${IFACE} up, MTU 1400`), 'vrouter made the interface, up, with the port\'s MTU');
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
