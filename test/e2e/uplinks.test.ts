// A Linux guest under QEMU reaches the host's own network stack through each kind of uplink
// port: the interface (a TAP vrouter creates, or one end of a veth pair for AF_PACKET and
// AF_XDP) sits
// in, or leads into, a network namespace of the test's with an address and an iperf3
// server; the guest, bridged with the port, pings that address and runs iperf3 against it,
// both directions.
import { execFileSync, spawn } from 'node:child_process';
import t from 'tap';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

for (const type of ['tap', 'af_packet', 'af_xdp'] as const) {
  t.test(`a guest pings and runs iperf3 to the host stack behind an uplink port of type ${type}`, async (t) => {
    const letter = { tap: 't', af_packet: 'p', af_xdp: 'x' }[type];
    const netns = `vrup${letter}${process.pid}`;
    const iface = `vru${letter}${process.pid % 100000}`;
    const peer = type === 'tap' ? iface : `${iface}p`;
    ip('netns', 'add', netns);
    t.teardown(() => ip('netns', 'del', netns));
    // AF_PACKET, AF_XDP: a veth pair, one end for vrouter, the other in the namespace.
    if (type !== 'tap') {
      ip('link', 'add', iface, 'type', 'veth', 'peer', 'name', peer, 'netns', netns);
      t.teardown(() => {
        try {
          ip('link', 'del', iface);
        } catch {
          // gone with the namespace
        }
      });
    }
    const vr = await startVrouter({ ports: [{ name: 'g', socket: '{dir}/g.sock', bridge: 'br0' }, { name: 'host', type, interface: iface, bridge: 'br0' }] });
    t.teardown(() => vr.stop());
    // TAP: the interface vrouter made moves into the namespace.
    if (type === 'tap') ip('link', 'set', iface, 'netns', netns);
    // An AF_PACKET or AF_XDP socket takes frames as the kernel has them: the veth's other end
    // must not hand over TCP super-frames (TSO, GSO) or frames whose checksum it left to an offload.
    if (type !== 'tap') execFileSync('ip', ['netns', 'exec', netns, 'ethtool', '-K', peer, 'tso', 'off', 'gso', 'off', 'tx', 'off'], { stdio: 'ignore' });
    ip('-n', netns, 'addr', 'add', '10.9.0.2/24', 'dev', peer);
    ip('-n', netns, 'link', 'set', peer, 'up');
    // One iperf3 server in the namespace for the guest's two tests (-R: the host sends).
    const server = spawn('ip', ['netns', 'exec', netns, 'iperf3', '-s'], { stdio: 'ignore' });
    t.teardown(() => server.kill());

    const guest = bootGuest({
      name: `g-${type}`,
      nics: [{ socket: vr.sockets.g, ip: '10.9.0.1/24' }],
      script: 'vr_wait_peer 10.9.0.2 60; vr_ping 10.9.0.2 20 56 0.1; vr_iperf_client 10.9.0.2 2; vr_iperf_client 10.9.0.2 2 -R',
      timeoutS: 150,
    });
    const result = await guest.done;
    const find = (test: string) => result.results.filter((r) => r.test === test);
    const reached = find('wait_peer')[0]?.ok === '1';
    t.ok(reached, reached ? 'the guest reached the host behind the port' : `the guest never reached the host behind the port:\n${result.console.slice(-2000)}`);
    const ping = find('ping')[0];
    t.equal(ping?.recv, '20', `20 of 20 pings answered (${JSON.stringify(ping)})`);
    const iperf = find('iperf3');
    t.equal(iperf.length, 2, 'iperf3 ran both ways');
    for (const [i, run] of iperf.entries()) {
      t.ok(Number(run.receiver_mbps) > 1, `iperf3 ${i === 0 ? 'guest to host' : 'host to guest'}: ${run.receiver_mbps} Mbit/s`);
    }
    const stats = await vr.stats();
    t.ok(stats.host.rx_packets > 1000 && stats.host.tx_packets > 1000, `the port counted both ways (rx ${stats.host.rx_packets}, tx ${stats.host.tx_packets})`);
  });
}
