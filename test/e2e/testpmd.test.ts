// DPDK virtio-user (dpdk-testpmd, no hugepages) sending 64-byte frames through vrouter to a
// second virtio-user port: every frame is accounted for, on both sides, exactly.
import t from 'tap';
import { runTestpmd, testpmdPrerequisite } from './lib/testpmd.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import type { PortStats } from '../../src/dataplane/counters.ts';

const missing = testpmdPrerequisite();
if (missing) t.fail(`cannot run dpdk-testpmd: ${missing}`);

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
/** every drop counted on a port: vrouter's own reasons and each stage's of the pipeline */
const dropsOf = (s: PortStats) => sum(s.drops) + Object.values(s.plugins).reduce((a, p) => a + sum(p.drops), 0);

t.test('flowgen both ways between two virtio-user ports, 64-byte frames', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  const run = await runTestpmd(
    [
      { socket: vr.sockets.a, mac: '02:00:00:00:00:0a' },
      { socket: vr.sockets.b, mac: '02:00:00:00:00:0b' },
    ],
    { mode: 'flowgen', seconds: 4, frameSize: 64 },
  );
  const [p0, p1] = run.ports;
  t.ok(p0 && p1, 'testpmd reported both ports', { log: run.log.slice(-2000) });
  const s = await vr.stats();
  t.ok(p0.txPackets > 100_000, `testpmd sent ${p0.txPackets} frames on port 0`);
  t.ok(p1.rxPackets > 100_000, `and received ${p1.rxPackets} on port 1`);
  t.equal(s.a.rx_packets, p0.txPackets, 'vrouter took every frame port 0 sent');
  t.equal(s.b.rx_packets, p1.txPackets, 'and every frame port 1 sent');
  t.equal(s.b.tx_packets, p1.rxPackets + p1.rxMissed, 'port 1 received every frame vrouter delivered to it');
  t.equal(s.a.tx_packets, p0.rxPackets + p0.rxMissed, 'port 0 likewise');
  t.equal(s.a.rx_packets, s.b.tx_packets + dropsOf(s.b) + dropsOf(s.a) - s.a.drops.guest_ring_full, 'a -> b: delivered + counted drops = received');
  // A 64-byte Ethernet frame is 60 bytes and a 4-byte FCS, which virtio does not carry.
  t.equal(s.a.rx_bytes, 60 * s.a.rx_packets, '64-byte frames: 60 bytes each without the FCS');
  t.same(
    { bad_descriptor: s.a.drops.bad_descriptor + s.b.drops.bad_descriptor, queue_errors: s.a.queue_errors + s.b.queue_errors },
    { bad_descriptor: 0, queue_errors: 0 },
    'a well-behaved frontend: no bad descriptors, no queue errors',
  );
});
