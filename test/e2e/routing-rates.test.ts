// Linux guests under QEMU routed by vrouter, where what is checked is TCP's rate through the
// router: a guest's VLAN trunk, one VLAN bridged to a guest and another routed to a third
// guest; and a policer holding TCP to its rate. Run alone (scripts/e2e-tests.sh): another
// file's guests would take the CPUs the rates are measured on.
import t from 'tap';
import { guestPrerequisites } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { script, runGuests, runTwoSubnetGuests, find, excerpt, pluginTotals, vrouterLog, pingOk, twoSubnets } from './lib/routed.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('VLANs: a guest\'s trunk, one VLAN bridged to a guest, another routed to a third guest', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock' },
      { name: 'trunk.10', type: 'vlan', parent: 'trunk', vlan: 10, bridge: 'br10' },
      { name: 'trunk.20', type: 'vlan', parent: 'trunk', vlan: 20, addresses: ['10.20.0.1/24'] },
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br10' },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.30.0.1/24'] },
    ],
    pipeline: ['routing', 'bridge'],
  });
  t.teardown(() => vr.stop());
  const timeoutS = 120;
  const { results, stats, unfinished } = await runGuests(t, vr, [
    {
      name: 't',
      nics: [{ socket: vr.sockets.trunk }],
      timeoutS,
      // Linux's own VLAN interfaces on the virtio-net NIC: the tags are in the frames.
      script: script(`
ip link add link eth0 name eth0.10 type vlan id 10 && ip addr add 10.10.0.2/24 dev eth0.10 && ip link set eth0.10 up
ip link add link eth0 name eth0.20 type vlan id 20 && ip addr add 10.20.0.2/24 dev eth0.20 && ip link set eth0.20 up
vr_result test=vlans ok=$(ls /proc/net/vlan 2> /dev/null | grep -c 'eth0\\.')
ip route add 10.30.0.0/24 via 10.20.0.1
vr_wait_peer 10.10.0.3 60
vr_ping 10.10.0.3 5
vr_ping 10.20.0.1 3
vr_wait_peer 10.30.0.2 60
vr_ping 10.30.0.2 5
vr_iperf_client 10.30.0.2 2
vr_iperf_client 10.30.0.2 2 -R
`),
    },
    {
      name: 'a',
      nics: [{ socket: vr.sockets.a, ip: '10.10.0.3/24' }],
      timeoutS,
      script: script('vr_wait_peer 10.10.0.2 60'),
    },
    {
      name: 'b',
      nics: [{ socket: vr.sockets.b, ip: '10.30.0.2/24' }],
      timeoutS,
      script: script(`
ip route add default via 10.30.0.1
vr_iperf_server; vr_iperf_server
`),
    },
  ]);
  const guest = results.t;
  t.same(unfinished, [], 'the three guests ran their scripts to the end', { vrouter: vrouterLog(vr) });
  t.equal(find(guest, 'vlans')?.ok, '2', 'the trunk guest made its two VLAN interfaces', { console: excerpt(guest) });
  pingOk(t, guest, 't', '10.10.0.3');
  pingOk(t, guest, 't', '10.20.0.1');
  pingOk(t, guest, 't', '10.30.0.2');
  // TCP super-frames (TSO) both ways: their tags taken off and put on, their offsets moved.
  const tcp = find(guest, 'iperf3', { args: '' });
  // Hundreds of Mbit/s here; a few with super-frames lost on the way (retransmitted as segments).
  t.ok(Number(tcp?.receiver_mbps) > 50, `TCP from VLAN 20 through the router to b: ${tcp?.receiver_mbps} Mbit/s`, { console: excerpt(guest) });
  const back = find(guest, 'iperf3', { args: '-R' });
  t.ok(Number(back?.receiver_mbps) > 50, `TCP from b through the router to VLAN 20: ${back?.receiver_mbps} Mbit/s`, { console: excerpt(guest) });
  const dropped = (port: string, but: string[] = []) => Object.entries(stats[port].drops).filter(([reason, n]) => n > 0 && !but.includes(reason));
  // A guest under TCG falls behind a TCP stream at times (guest_ring_full): flow control, not the VLAN.
  // The three guests boot side by side: what a floods into br10 (IPv6 duplicate address detection)
  // before t's driver is up, or after t powered off, meets a parent that is down (port_down).
  t.same(
    [dropped('trunk.20'), dropped('trunk', ['no_destination', 'guest_ring_full', 'port_down'])],
    [[], []],
    'no frame of VLAN 20 or the trunk dropped but for a full ring or a trunk not up yet',
  );
  for (const port of ['trunk.10', 'trunk.20']) t.ok(stats[port].rx_packets > 0 && stats[port].tx_packets > 0, `${port} counts its frames: ${stats[port].rx_packets} in, ${stats[port].tx_packets} out`);
  t.equal(stats.trunk.rx_packets, stats['trunk.10'].rx_packets + stats['trunk.20'].rx_packets + stats.trunk.drops.no_destination, 'every frame of the trunk was a VLAN\'s, or its own with nowhere to go (IPv6 on the untagged NIC)');
});

t.test('policer: 50 Mbit/s on port a\'s ingress holds iperf3 TCP to within 10 %', async (t) => {
  const vr = await startVrouter(
    twoSubnets({
      pipeline: ['routing', 'ratelimit'],
      // The default burst: 250 ms of the rate.
      policers: [{ name: 'a-in', cir: '50mbit', apply: [{ inPort: 'a' }] }],
    }),
  );
  t.teardown(() => vr.stop());
  const { results, stats, unfinished } = await runTwoSubnetGuests(
    t,
    vr,
    `
vr_wait_peer 10.0.2.2 60
# -O 2: the first two seconds, where TCP spends the full bucket, are left out of the rate.
vr_iperf_client 10.0.2.2 6 -O 2
vr_iperf_client 10.0.2.2 3 -R
`,
    `
vr_iperf_server
vr_iperf_server
`,
  );
  const { a } = results;
  t.same(unfinished, [], 'both guests ran their scripts to the end', { vrouter: vrouterLog(vr) });
  const policed = Number(find(a, 'iperf3', { args: '-O_2' })?.receiver_mbps);
  const free = Number(find(a, 'iperf3', { args: '-R' })?.receiver_mbps);
  t.ok(free > 55, `b -> a, not policed, runs faster than the policer's rate: ${free} Mbit/s (else this test shows nothing)`, { console: excerpt(a) });
  // The policer meters whole frames; iperf3 counts TCP payload: 1448 bytes (MSS 1460 less
  // the timestamp option) in each 1514-byte frame, so 50 Mbit/s of frames is 47.8 of payload.
  const goodput = (50 * 1448) / 1514;
  t.ok(Math.abs(policed - goodput) <= goodput * 0.1, `a -> b, policed at 50 Mbit/s of frames: ${policed} Mbit/s of TCP payload (${goodput.toFixed(1)} ± 10 % expected)`, { console: excerpt(a) });
  const rl = pluginTotals(stats, 'ratelimit');
  t.ok(rl.counters.red > 0, `the policer marked packets red: ${JSON.stringify(rl.counters)}`, { drops: rl.drops });
  t.ok(rl.drops.policer_red > 0, `and dropped them: ${rl.drops.policer_red}`);
});
