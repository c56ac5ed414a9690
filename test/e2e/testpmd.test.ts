// DPDK virtio-user (dpdk-testpmd, no hugepages) sending 64-byte frames through vrouter to a
// second virtio-user port, on split and on packed rings: every frame is accounted for, on
// both sides, exactly. And with checksum offload: frames sent with their checksums left to
// do leave vrouter completed.
import t, { type Test } from 'tap';
import { runTestpmd, testpmdPrerequisite } from './lib/testpmd.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import type { PortStats } from '../../src/dataplane/counters.ts';
import { bit, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED } from '../../src/virtio/constants.ts';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminClient } from '../support/admin-client.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { tcp4, udp4 } from '../support/frames.ts';

const missing = testpmdPrerequisite();
if (missing) t.fail(`cannot run dpdk-testpmd: ${missing}`);

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
/** every drop counted on a port: vrouter's own reasons and each stage's of the pipeline */
const dropsOf = (s: PortStats) => sum(s.drops) + Object.values(s.plugins).reduce((a, p) => a + sum(p.drops), 0);

/** The features vrouter logged as negotiated on a port. */
function negotiated(log: string, port: string): bigint {
  const m = new RegExp(`port ${port}: features (0x[0-9a-f]+) negotiated`).exec(log);
  return m ? BigInt(m[1]) : 0n;
}

/**
 * flowgen both ways for 4 s, then every frame accounted for on both sides; `devargs` picks
 * the rings (virtio-user negotiates IN_ORDER by default, split rings unless packed_vq=1).
 */
async function flowgenBothWays(t: Test, devargs: string, expected: bigint, unexpected: bigint) {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  const run = await runTestpmd(
    [
      { socket: vr.sockets.a, mac: '02:00:00:00:00:0a', devargs },
      { socket: vr.sockets.b, mac: '02:00:00:00:00:0b', devargs },
    ],
    { mode: 'flowgen', seconds: 4, frameSize: 64 },
  );
  const [p0, p1] = run.ports;
  t.ok(p0 && p1, 'testpmd reported both ports', { log: run.log.slice(-2000) });
  for (const port of ['a', 'b']) {
    const features = negotiated(vr.stderr(), port);
    t.equal(features & (expected | unexpected), expected, `${port}: features 0x${features.toString(16)}`);
  }
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
}

const PACKED = bit(VIRTIO_F_RING_PACKED);
const IN_ORDER = bit(VIRTIO_F_IN_ORDER);

t.test('flowgen both ways between two virtio-user ports, 64-byte frames', (t) => flowgenBothWays(t, '', IN_ORDER, PACKED));

t.test('the same on packed rings (packed_vq=1)', (t) => flowgenBothWays(t, 'packed_vq=1', PACKED | IN_ORDER, 0n));

t.test('the same on packed rings without IN_ORDER (packed_vq=1,in_order=0)', (t) => flowgenBothWays(t, 'packed_vq=1,in_order=0', PACKED, IN_ORDER));

t.test('virtio-user with checksum and segmentation offload (the csum engine, TSO): completed and cut as they leave', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'c'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  // Port c injects TCP and UDP frames for the testpmd ports, which forward each one they
  // receive out of the other (csum engine), each time sent with its checksum left to the
  // backend (--tx-offloads: TCP and UDP checksums, TSO), and TCP with more than 500 bytes as
  // a super-frame to be cut at 500. testpmd addresses what port 0 sends to b's MAC and what
  // port 1 sends to a's, so a frame keeps to one loop (b -> port 1 -> port 0 -> b, or a ->
  // port 0 -> port 1 -> a) and comes as a super-frame only on its first way round. Each
  // frame is injected once to each MAC: were it sent to b's alone, whether the first of them
  // were flooded to a too would depend on how soon vrouter learned b's MAC.
  const c = await startDevice(vr.sockets.c);
  t.teardown(() => c.close());
  const injector = testGuest(c);
  const frames = ['02:00:00:00:00:0a', '02:00:00:00:00:0b'].flatMap((dstMac) => {
    const l2 = { srcMac: '02:00:00:00:00:0c', dstMac };
    return Array.from({ length: 32 }, (_, k) => [
      tcp4({ ...l2, src: '10.0.0.12', dst: '10.0.0.11', srcPort: 40000 + k, dstPort: 80, flags: 'PA', payload: 100 + 37 * k }),
      udp4({ ...l2, src: '10.0.0.12', dst: '10.0.0.11', srcPort: 5000 + k, dstPort: 53, payload: 99 + 41 * k }),
    ]).flat();
  });
  let pcap: Uint8Array = new Uint8Array(0);
  const run = await runTestpmd(
    [
      { socket: vr.sockets.a, mac: '02:00:00:00:00:0a' },
      { socket: vr.sockets.b, mac: '02:00:00:00:00:0b' },
    ],
    {
      mode: 'csum',
      seconds: 4,
      args: ['--tx-offloads=0x2c'],
      commands: ['port stop all', 'tso set 500 0', 'tso set 500 1', 'port start all'],
      during: async () => {
        // Once testpmd's ports run again after their restart (their second start, as vrouter
        // logs it: frames sent to a port still restarting are dropped) and the forwarding
        // lcore polls (frames sent before 'start' has taken effect may be lost).
        const starts = (port: string) => (vr.stderr().match(new RegExp(`port ${port}: vring 0 \\(guest rx\\) running`, 'g')) ?? []).length;
        await waitFor("testpmd's ports started again", () => starts('a') >= 2 && starts('b') >= 2, 20000);
        await new Promise((r) => setTimeout(r, 300));
        const leftBefore = (await vr.stats()).b.tx_packets;
        await injector.send(frames);
        // Circulating: testpmd forwards them back and forth between its ports, through vrouter.
        await waitFor('the injected frames circulating', async () => (await vr.stats()).b.tx_packets - leftBefore >= 2 * frames.length || undefined, 5000);
        const capture = await api.bytes('/ports/b/capture?count=400&seconds=3');
        t.equal(capture.status, 200, 'a capture of what leaves for b');
        pcap = capture.bytes;
      },
    },
  );
  t.ok(run.ports.length === 2, 'testpmd reported both ports', { log: run.log.slice(-2000) });
  t.match(run.log, /Tx offloads=0x2c/, 'testpmd\'s ports offload TCP and UDP checksums and TSO to the backend');
  t.match(run.log, /TSO segment size for non-tunneled packets is 500/, 'TSO at 500 bytes');
  const s = await vr.stats();
  for (const port of ['a', 'b'] as const) {
    const o = s[port].offloads;
    t.ok(o.rx_partial_checksum > 10_000, `${port}: ${o.rx_partial_checksum} frames came with their checksum left to do`);
    t.ok(o.checksums_completed > 10_000, `${port}: ${o.checksums_completed} completed for testpmd, which takes none left to do`);
    t.equal(o.tx_partial_checksum, 0, `${port}: none handed on left to do`);
    t.equal(s[port].drops.offload_header_bad, 0, `${port}: no header refused`);
    t.ok(o.rx_gso_frames > 0, `${port}: ${o.rx_gso_frames} super-frames came, ${Math.round(o.rx_gso_bytes / Math.max(1, o.rx_gso_frames))} bytes each`);
    t.ok(o.gso_segments > 0, `${port}: ${o.gso_segments} segments cut for testpmd, which takes no super-frames`);
  }
  const superFrames = s.a.offloads.rx_gso_frames + s.b.offloads.rx_gso_frames;
  const cut = s.a.offloads.gso_segments + s.b.offloads.gso_segments + s.c.offloads.gso_segments;
  t.ok(cut >= 2 * superFrames, `every super-frame cut into 2 segments or more: ${cut} from ${superFrames}`);
  const file = join(vr.dir, 'b.pcapng');
  writeFileSync(file, pcap);
  const out = spawnSync('tshark', ['-r', file, '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-T', 'fields', '-e', 'frame.packet_flags_direction', '-e', 'tcp.checksum.status', '-e', 'udp.checksum.status'], { encoding: 'utf8' });
  t.equal(out.status, 0, 'tshark reads the capture', { stderr: out.stderr });
  // Per frame: its direction (1 inbound: from testpmd, 2 outbound: to it) and its TCP or UDP checksum's status (1 good, 0 bad).
  const captured = out.stdout.trim().split('\n').map((line) => line.split('\t')).map(([direction, ...status]) => ({ direction, status: status.join('') }));
  const leaving = captured.filter((f) => Number(f.direction) === 2);
  const arriving = captured.filter((f) => Number(f.direction) === 1);
  t.ok(leaving.length >= 100, `${leaving.length} frames captured on their way to b`);
  t.same([...new Set(leaving.map((f) => f.status))], ['1'], 'tshark finds every TCP and UDP checksum of them good');
  t.ok(arriving.length >= 100 && arriving.every((f) => f.status === '0'), `the ${arriving.length} frames captured as b sent them carry their checksums left to do (tshark: bad)`);
});
