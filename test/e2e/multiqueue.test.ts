// Multiqueue guests on two PMDs: each guest has two queue pairs, one on each PMD, and sends
// from both of its vCPUs at once; the flows spread over the PMDs by the guest's own choice
// of queue, and frames between queues of different PMDs cross the rings between them;
// each queue pair counts its own frames.
import t from 'tap';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('2 queue pairs per guest, 2 PMDs, parallel iperf3 streams', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0', queues: 2 },
      // b's queue pairs the other way round, so that a's frames cross between PMDs
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0', queues: 2, rxqAffinity: { 0: 1, 1: 0 } },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  const b = bootGuest({
    name: 'b',
    smp: 2,
    nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', queues: 2 }],
    script: 'vr_iperf_server -p 5201 & vr_iperf_server -p 5202 & wait; sleep 10',
    timeoutS: 120,
  });
  t.teardown(() => b.kill());
  // One iperf3 per vCPU: virtio-net maps vCPU n to TX queue n (XPS). How much of vCPU 1's
  // stream stays on queue 1 is the guest's choice (TCP sends from the softirq of whichever
  // vCPU took the ACKs, and XPS may move an idle flow): in 8 s, 489 to 1,741 frames over
  // fifteen runs of the suite (against 11,000 to 19,000 on queue 0), so at least 200.
  const a = bootGuest({
    name: 'a',
    smp: 2,
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', queues: 2 }],
    script: 'vr_wait_peer 10.0.0.3 60 && (taskset 1 sh -c ". /vr/lib.sh; vr_iperf_client 10.0.0.3 8 -p 5201 -P 2" & taskset 2 sh -c ". /vr/lib.sh; vr_iperf_client 10.0.0.3 8 -p 5202 -P 2" & wait) && vr_ping 10.0.0.3 5',
    timeoutS: 120,
  });
  t.teardown(() => a.kill());
  const [ra, rb] = await Promise.all([a.done, b.done]);
  t.match(ra.console, /VR-NIC vm=a if=eth0 .* rxq=2/, 'guest a runs 2 queue pairs', { console: ra.console });
  const streams = ra.results.filter((r) => r.test === 'iperf3');
  t.equal(streams.length, 2, 'both iperf3 clients reported', { console: ra.console });
  for (const s of streams) t.ok(Number(s.receiver_mbps) > 5, `iperf3 ${s.args}: ${s.receiver_mbps} Mbit/s`);
  t.equal(ra.results.find((r) => r.test === 'ping')?.loss_pct, '0', 'ping after the streams: 0 % loss');
  t.equal(rb.results.filter((r) => r.test === 'iperf3_server' && r.rc === '0').length, 2, 'both servers served');
  const pmds = await vr.pmdStats();
  t.ok(pmds.every((p) => p.rx_packets > 500), `both PMDs took frames from guests (${pmds.map((p) => `CPU ${p.cpu}: ${p.rx_packets}`).join(', ')})`);
  const stats = await vr.stats();
  t.equal(stats.a.queue_errors + stats.b.queue_errors, 0, 'no queue errors');
  t.equal(stats.a.drops.ring_full + stats.b.drops.ring_full, 0, 'the rings between PMDs never overflowed');
  const [a0, a1] = stats.a.queues;
  t.ok(a0.rx_packets > 500 && a1.rx_packets > 200, `a's two TX queues each counted what a sent on them (${a0.rx_packets}, ${a1.rx_packets} frames)`);
  for (const name of ['a', 'b'] as const) {
    const total = (field: 'rx_packets' | 'rx_bytes' | 'tx_packets' | 'tx_bytes') => stats[name].queues.reduce((n, q) => n + q[field], 0);
    t.same([total('rx_packets'), total('rx_bytes'), total('tx_packets'), total('tx_bytes')], [stats[name].rx_packets, stats[name].rx_bytes, stats[name].tx_packets, stats[name].tx_bytes], `${name}: its queue pairs' counters add up to the port's`);
  }
  // QEMU sets up one vhost device per queue pair: a memory table and vring starts each.
  t.notMatch(vr.stderr(), /faster than the port's share of the control thread/, "each guest's set-up fit in its port's share of the control thread");
});

t.test('a guest that changes its queue pairs while it pings (ethtool -L): its traffic moves to the queues it keeps', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0', queues: 2 },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0', queues: 2 },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  // One vCPU: the driver enables as many queue pairs as the guest has CPUs, so b runs one
  // of the two it was offered, and vrouter delivers to it only there.
  const b = bootGuest({ name: 'b', smp: 1, nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', queues: 2, driverPicksPairs: true }], script: 'sleep 60', timeoutS: 90 });
  t.teardown(() => b.kill());
  // Each phase pings from vCPU 1, which sends on TX queue 1 while it has one (XPS).
  const phase = (name: string) => `vr_result test=pairs phase=${name} rxq=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l); taskset 2 sh -c ". /vr/lib.sh; vr_ping 10.0.0.3 20 56 0.1"`;
  const a = bootGuest({
    name: 'a',
    smp: 2,
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', queues: 2 }],
    script: `vr_wait_peer 10.0.0.3 60 && ${phase('two')} && ethtool -L eth0 combined 1 && ${phase('one')} && ethtool -L eth0 combined 2 && ${phase('two-again')}; sleep 2`,
    timeoutS: 90,
  });
  t.teardown(() => a.kill());
  // Before the guests end (their QEMU then closes the connections): a stays 2 s after.
  await a.waitForConsole(/phase=two-again[^]*test=ping/, 90000);
  const during = vr.stderr();
  const ra = await a.done;
  b.kill();
  const rb = await b.done;
  t.match(rb.console, /VR-NIC vm=b if=eth0 .* rxq=1/, 'b (one vCPU) runs one of its two queue pairs', { console: rb.console });
  const phases = ra.results.filter((r) => r.test === 'pairs');
  t.same(phases.map((r) => `${r.phase}:${r.rxq}`), ['two:2', 'one:1', 'two-again:2'], 'a ran two queue pairs, then one, then two again', { console: ra.console });
  const pings = ra.results.filter((r) => r.test === 'ping');
  t.equal(pings.length, 3, 'a pinged in each phase', { console: ra.console });
  for (const [k, p] of pings.entries()) t.ok(p.loss_pct === '0' && Number(p.sent) === 20, `${phases[k]?.phase}: ${p.recv} of ${p.sent} answered`, { console: ra.console });
  const stats = await vr.stats();
  t.ok(stats.a.queues[1].rx_packets >= 20, `a's TX queue 1 carried its vCPU 1's pings while it ran (${stats.a.queues[1].rx_packets} frames)`);
  t.equal(stats.b.queues[1].tx_packets, 0, 'nothing was delivered to b\'s queue pair it never enabled');
  t.equal(stats.a.queue_errors + stats.b.queue_errors, 0, 'no queue errors');
  t.notMatch(during, /connection closed/, 'no frontend disconnected');
  // QEMU passes the driver's change on as SET_VRING_ENABLE: pair 1's vrings stop, then run again.
  for (const vring of [2, 3]) {
    const log = during.slice(during.indexOf(`port a: vring ${vring} stopped`));
    t.ok(log.length < during.length && new RegExp(`port a: vring ${vring} \\(guest [rt]x\\) running`).test(log), `a's vring ${vring} stopped and ran again`);
  }
});
