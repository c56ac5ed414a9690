// A Linux guest under QEMU reaches the host's own network stack through a TAP port: the
// TAP interface vrouter creates sits in a network namespace of the test's, with an address
// and an iperf3 server; the guest, bridged with it, pings that address and runs iperf3
// against it, both directions.
import { execFileSync, spawn } from 'node:child_process';
import t from 'tap';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

const NETNS = `vrup${process.pid}`;
const IFACE = `vru${process.pid % 100000}`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

t.test('a guest pings and runs iperf3 to the host stack behind a TAP port', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'g', socket: '{dir}/g.sock', bridge: 'br0' }, { name: 'host', type: 'tap', interface: IFACE, bridge: 'br0' }] });
  t.teardown(() => vr.stop());
  ip('netns', 'add', NETNS);
  t.teardown(() => ip('netns', 'del', NETNS));
  ip('link', 'set', IFACE, 'netns', NETNS);
  ip('-n', NETNS, 'addr', 'add', '10.9.0.2/24', 'dev', IFACE);
  ip('-n', NETNS, 'link', 'set', IFACE, 'up');
  // One iperf3 server in the namespace for the guest's two tests (-R: the host sends).
  const server = spawn('ip', ['netns', 'exec', NETNS, 'iperf3', '-s'], { stdio: 'ignore' });
  t.teardown(() => server.kill());

  const guest = bootGuest({
    name: 'g',
    nics: [{ socket: vr.sockets.g, ip: '10.9.0.1/24' }],
    script: 'vr_wait_peer 10.9.0.2 60; vr_ping 10.9.0.2 20 56 0.1; vr_iperf_client 10.9.0.2 3; vr_iperf_client 10.9.0.2 3 -R',
    timeoutS: 150,
  });
  const result = await guest.done;
  const find = (test: string) => result.results.filter((r) => r.test === test);
  const reached = find('wait_peer')[0]?.ok === '1';
  t.ok(reached, reached ? 'the guest reached the host behind the TAP port' : `the guest never reached the host behind the TAP port:\n${result.console.slice(-2000)}`);
  const ping = find('ping')[0];
  t.equal(ping?.recv, '20', `20 of 20 pings answered (${JSON.stringify(ping)})`);
  const iperf = find('iperf3');
  t.equal(iperf.length, 2, 'iperf3 ran both ways');
  for (const [i, run] of iperf.entries()) {
    t.ok(Number(run.receiver_mbps) > 1, `iperf3 ${i === 0 ? 'guest to host' : 'host to guest'}: ${run.receiver_mbps} Mbit/s`);
  }
  const stats = await vr.stats();
  t.ok(stats.host.rx_packets > 1000 && stats.host.tx_packets > 1000, `the TAP port counted both ways (rx ${stats.host.rx_packets}, tx ${stats.host.tx_packets})`);
});
