// Two Linux guests under QEMU (virtio-net driver) on 10.0.0.0/24, switched by vrouter:
// ping without loss, iperf3 TCP both ways, a 9000-byte MTU ping, guests on packed rings
// (with one on a split ring, and with one on plain packed rings), and counters that agree.
import t, { type Test as Tap } from 'tap';
import { bootGuest, guestPrerequisites, type GuestResult, type GuestSpec } from './lib/guest.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import type { PortStats } from '../../src/dataplane/counters.ts';
import { VIRTIO_F_RING_PACKED, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

/**
 * With two ports in a bridge every frame vrouter takes from one guest is either delivered
 * once to the other or dropped once with a reason: the totals must balance exactly.
 */
function unaccounted(stats: Record<string, PortStats>): number {
  const ports = Object.values(stats);
  const sum = (f: (s: PortStats) => number) => ports.reduce((n, s) => n + f(s), 0);
  return sum((s) => s.rx_packets) - sum((s) => s.tx_packets) - sum((s) => Object.values(s.drops).reduce((a, b) => a + b, 0));
}

/** Guest b (the one a talks to), then guest a; both killed at the test's end. Resolves with both results once both stopped. */
async function bootPair(t: Tap, b: GuestSpec, a: GuestSpec): Promise<[GuestResult, GuestResult]> {
  const guestB = bootGuest(b);
  t.teardown(() => guestB.kill());
  const guestA = bootGuest(a);
  t.teardown(() => guestA.kill());
  return Promise.all([guestA.done, guestB.done]);
}

/** Neither port had a queue error or dropped a frame for a reason a clean run never has. */
function noUnexpectedDrops(t: Tap, stats: Record<string, PortStats>): void {
  for (const port of ['a', 'b']) {
    const s = stats[port];
    t.equal(s.queue_errors, 0, `${port}: no queue errors`);
    t.equal(s.drops.bad_descriptor + s.drops.frame_too_long + s.plugins.bridge.drops.same_port + s.drops.no_buffer, 0, `${port}: no unexpected drops`, { drops: s.drops });
  }
}

function result(r: GuestResult, test: string, extra: Record<string, string> = {}) {
  return r.results.find((x) => x.test === test && Object.entries(extra).every(([k, v]) => x[k] === v));
}

t.test('two guests through one bridge', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const [ra, rb] = await bootPair(t, { name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_iperf_server && vr_iperf_server', timeoutS: 90 }, {
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 20 && vr_iperf_client 10.0.0.3 2 && vr_iperf_client 10.0.0.3 2 -R',
    timeoutS: 90,
  });
  t.equal(ra.rc, 0, 'guest a finished its script', { console: ra.console });
  t.equal(rb.rc, 0, 'guest b served both iperf3 runs', { console: rb.console });
  const ping = result(ra, 'ping');
  t.equal(ping?.loss_pct, '0', `ping 10.0.0.3: 0 % loss (${ping?.recv}/${ping?.sent}, rtt ${ping?.rtt_ms} ms)`);
  const upload = result(ra, 'iperf3', { args: '' });
  const download = result(ra, 'iperf3', { args: '-R' });
  t.ok(Number(upload?.receiver_mbps) > 10, `iperf3 a -> b: ${upload?.receiver_mbps} Mbit/s`);
  t.ok(Number(download?.receiver_mbps) > 10, `iperf3 b -> a: ${download?.receiver_mbps} Mbit/s`);
  const stats = await vr.stats();
  t.ok(stats.a.rx_packets > 1000 && stats.b.rx_packets > 1000, `frames both ways (a rx ${stats.a.rx_packets}, b rx ${stats.b.rx_packets})`);
  noUnexpectedDrops(t, stats);
  t.equal(unaccounted(stats), 0, 'every frame received was delivered or counted as a drop', { stats });
});

/** The features vrouter logged as negotiated on a port (its first connection). */
function negotiated(log: string, port: string): bigint {
  const m = new RegExp(`port ${port}: features (0x[0-9a-f]+) negotiated`).exec(log);
  return m ? BigInt(m[1]) : 0n;
}

t.test('a guest on a packed ring (packed=on) and a guest on a split ring', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const [ra, rb] = await bootPair(t, { name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_iperf_server && vr_iperf_server', timeoutS: 90 }, {
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', props: ['packed=on'] }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 20 && vr_iperf_client 10.0.0.3 2 && vr_iperf_client 10.0.0.3 2 -R',
    timeoutS: 90,
  });
  t.equal(ra.rc, 0, 'guest a finished its script', { console: ra.console });
  t.equal(rb.rc, 0, 'guest b served both iperf3 runs', { console: rb.console });
  const packed = 1n << BigInt(VIRTIO_F_RING_PACKED);
  t.equal(negotiated(vr.stderr(), 'a') & packed, packed, 'a negotiated VIRTIO_F_RING_PACKED', { log: vr.stderr() });
  t.equal(negotiated(vr.stderr(), 'b') & packed, 0n, 'b kept a split ring');
  const ping = result(ra, 'ping');
  t.equal(ping?.loss_pct, '0', `ping 10.0.0.3: 0 % loss (${ping?.recv}/${ping?.sent}, rtt ${ping?.rtt_ms} ms)`);
  const upload = result(ra, 'iperf3', { args: '' });
  const download = result(ra, 'iperf3', { args: '-R' });
  t.ok(Number(upload?.receiver_mbps) > 10, `iperf3 a (packed) -> b (split): ${upload?.receiver_mbps} Mbit/s`);
  t.ok(Number(download?.receiver_mbps) > 10, `iperf3 b (split) -> a (packed): ${download?.receiver_mbps} Mbit/s`);
  const stats = await vr.stats();
  t.ok(stats.a.rx_packets > 1000 && stats.a.tx_packets > 1000, `frames both ways on the packed ring (rx ${stats.a.rx_packets}, tx ${stats.a.tx_packets})`);
  noUnexpectedDrops(t, stats);
  t.equal(unaccounted(stats), 0, 'every frame received was delivered or counted as a drop', { stats });
});

t.test('two guests on packed rings, one without mergeable buffers, EVENT_IDX or indirect descriptors', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const [ra, rb] = await bootPair(t, { name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', props: ['packed=on', 'mrg_rxbuf=off', 'event_idx=off', 'indirect_desc=off'] }], script: 'vr_iperf_server', timeoutS: 90 }, {
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', props: ['packed=on'] }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 20 && vr_iperf_client 10.0.0.3 2 -R',
    timeoutS: 90,
  });
  t.equal(ra.rc, 0, 'guest a finished its script', { console: ra.console });
  t.equal(rb.rc, 0, 'guest b served iperf3', { console: rb.console });
  const packed = 1n << BigInt(VIRTIO_F_RING_PACKED);
  const plain = (1n << BigInt(VIRTIO_NET_F_MRG_RXBUF)) | (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) | (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC));
  t.equal(negotiated(vr.stderr(), 'b') & (packed | plain), packed, 'b: packed, and none of the three');
  const ping = result(ra, 'ping');
  t.equal(ping?.loss_pct, '0', `ping 10.0.0.3: 0 % loss (${ping?.recv}/${ping?.sent})`);
  const download = result(ra, 'iperf3', { args: '-R' });
  t.ok(Number(download?.receiver_mbps) > 10, `iperf3 b -> a: ${download?.receiver_mbps} Mbit/s`);
  const stats = await vr.stats();
  t.equal(stats.a.queue_errors + stats.b.queue_errors, 0, 'no queue errors');
  t.equal(stats.a.drops.bad_descriptor + stats.b.drops.bad_descriptor, 0, 'no bad descriptors');
  t.equal(unaccounted(stats), 0, 'every frame received was delivered or counted as a drop', { stats });
});

t.test('jumbo frames: MTU 9000 end to end', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0', mtu: 9000 },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0', mtu: 9000 },
    ],
  });
  t.teardown(() => vr.stop());
  // b only answers: it is stopped once a is done, rather than left to end its sleep.
  const guestB = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', mtu: 9000 }], script: 'vr_wait_peer 10.0.0.2 60 && sleep 45', timeoutS: 60 });
  t.teardown(() => guestB.kill());
  const guestA = bootGuest({ name: 'a', nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', mtu: 9000 }], script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 10 8972', timeoutS: 60 });
  t.teardown(() => guestA.kill());
  const ra = await guestA.done;
  guestB.kill();
  const ping = result(ra, 'ping', { size: '8972' });
  t.equal(ping?.loss_pct, '0', `8972-byte pings (9000-byte packets): ${ping?.recv}/${ping?.sent}`, { console: ra.console });
  t.equal(ping?.frags, '0', 'each 9000-byte packet left guest a whole, not as IP fragments');
  const stats = await vr.stats();
  t.ok(stats.b.tx_bytes > 10 * 9000, `jumbo frames delivered (${stats.b.tx_bytes} bytes to b)`);
  t.equal(stats.a.drops.frame_too_long + stats.b.drops.frame_too_long, 0, 'none too long for a 9000 MTU port');
  t.equal(unaccounted(stats), 0, 'every frame received was delivered or counted as a drop', { stats });
});
