// Checksum and segmentation offload with real Linux guests: a guest whose virtio-net
// negotiated CSUM, GUEST_CSUM and TSO (QEMU's default) sends TCP as super-frames with
// their checksums left to do; a guest whose device has them off (csum=off,guest_csum=off),
// or whose port has "offloads": false, gets segments with their checksums completed by
// vrouter; a guest with them on gets the super-frames as they are. iperf3 both ways,
// bridged and routed, and the receiving guests count no checksum errors. The guest with
// offloads runs packed rings (packed=on), the others split ones.
import t, { type Test } from 'tap';
import { bootGuest, guestPrerequisites, type GuestResult } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { adminClient } from '../support/admin-client.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

const NO_OFFLOADS = ['csum=off', 'guest_csum=off'];

/** Reports the guest's TCP and UDP checksum errors (/proc/net/snmp InCsumErrors) and eth0's tx-checksumming. */
const CSUM_REPORT = `
snmp() { awk -v s="$1:" -v k="$2" '$1 == s { if (n++) print $c; else for (i = 2; i <= NF; i++) if ($i == k) c = i }' /proc/net/snmp; }
vr_result test=csum tcp_errors=$(snmp Tcp InCsumErrors) udp_errors=$(snmp Udp InCsumErrors) tx_csum=$(ethtool -k eth0 2>/dev/null | sed -n 's/^tx-checksumming: //p')
`;

const result = (r: GuestResult, test: string, extra: Record<string, string> = {}) => r.results.find((x) => x.test === test && Object.entries(extra).every(([k, v]) => x[k] === v));

function checkGuest(t: Test, r: GuestResult, name: string): void {
  t.equal(r.rc, 0, `${name} finished its script`, { console: r.console.slice(-3000) });
  const csum = result(r, 'csum');
  t.equal(csum?.tcp_errors, '0', `${name} received no TCP segment with a bad checksum`);
  t.equal(csum?.udp_errors, '0', `${name} received no UDP datagram with a bad checksum`);
}

t.test('bridged: checksums left to do pass to guests that take them, and are completed for the others', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0' },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0' },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br0', offloads: false },
      { name: 'd', socket: '{dir}/d.sock', bridge: 'br0' },
    ],
  });
  t.teardown(() => vr.stop());
  const serve = (n: number) => `${Array.from({ length: n }, () => 'vr_iperf_server').join(' && ')}\n${CSUM_REPORT}`;
  const b = bootGuest({ name: 'off-b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', props: NO_OFFLOADS }], script: serve(2), timeoutS: 150 });
  t.teardown(() => b.kill());
  const c = bootGuest({ name: 'off-c', nics: [{ socket: vr.sockets.c, ip: '10.0.0.4/24' }], script: serve(1), timeoutS: 150 });
  t.teardown(() => c.kill());
  const d = bootGuest({ name: 'off-d', nics: [{ socket: vr.sockets.d, ip: '10.0.0.5/24' }], script: serve(1), timeoutS: 150 });
  t.teardown(() => d.kill());
  const a = bootGuest({
    name: 'off-a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', props: ['packed=on'] }],
    script: `
vr_wait_peer 10.0.0.3 60 && vr_wait_peer 10.0.0.4 60 && vr_wait_peer 10.0.0.5 60
vr_iperf_client 10.0.0.3 2 && vr_iperf_client 10.0.0.3 2 -R && vr_iperf_client 10.0.0.4 2 && vr_iperf_client 10.0.0.5 2
${CSUM_REPORT}`,
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  // While they run: what each connection negotiated.
  await Promise.all([a.waitForConsole(/VR-READY/, 120_000), b.waitForConsole(/VR-READY/, 120_000)]);
  const api = adminClient(vr);
  const features = async (port: string) => ((await api.call('GET', `/ports/${port}`)).json as { state: { device: { featureNames: string[] } | null } }).state.device?.featureNames ?? [];
  const [fa, fb] = [await features('a'), await features('b')];
  t.ok(['RING_PACKED', 'CSUM', 'GUEST_CSUM', 'HOST_TSO4', 'GUEST_TSO4'].every((f) => fa.includes(f)), `a: packed rings, checksum and segmentation offloads (${fa.join(' ')})`);
  // QEMU 7.2 leaves the TSO bits on with csum=off: without the checksum offload they need
  // (virtio 1.2, 5.1.3.1) vrouter takes them for nothing.
  t.notOk(['RING_PACKED', 'CSUM', 'GUEST_CSUM'].some((f) => fb.includes(f)), `b: split rings, no checksum offload, so no segmentation either (${fb.join(' ')})`);
  const [ra, rb, rc, rd] = await Promise.all([a.done, b.done, c.done, d.done]);
  const rate = (dst: string, args = '') => Number(result(ra, 'iperf3', { dst, args })?.receiver_mbps);
  t.ok(rate('10.0.0.3') > 10, `a (offloads on) -> b (device without them): ${rate('10.0.0.3')} Mbit/s`);
  t.ok(rate('10.0.0.3', '-R') > 10, `b -> a: ${rate('10.0.0.3', '-R')} Mbit/s`);
  t.ok(rate('10.0.0.4') > 10, `a -> c (port with "offloads": false): ${rate('10.0.0.4')} Mbit/s`);
  t.ok(rate('10.0.0.5') > 10, `a -> d (offloads on): ${rate('10.0.0.5')} Mbit/s`);
  checkGuest(t, ra, 'a');
  checkGuest(t, rb, 'b');
  checkGuest(t, rc, 'c');
  checkGuest(t, rd, 'd');
  t.match(result(ra, 'csum')?.tx_csum, /^on/, 'a\'s driver offloads its checksums');
  t.match(result(rb, 'csum')?.tx_csum, /^off/, 'b\'s does not (its device offers no CSUM)');
  t.match(result(rc, 'csum')?.tx_csum, /^off/, 'nor c\'s (vrouter offers none on its port)');

  const s = await vr.stats();
  const o = (p: string) => s[p].offloads;
  t.ok(o('a').rx_partial_checksum > 1000, `a sent ${o('a').rx_partial_checksum} frames with their checksum left to do`);
  t.equal(o('b').rx_partial_checksum + o('c').rx_partial_checksum, 0, 'b and c sent none');
  t.ok(o('b').checksums_completed > 1000, `vrouter completed ${o('b').checksums_completed} checksums for b`);
  t.ok(o('c').checksums_completed > 1000, `and ${o('c').checksums_completed} for c`);
  t.equal(o('b').tx_partial_checksum + o('c').tx_partial_checksum, 0, 'and handed neither a checksum left to do');
  t.ok(o('d').tx_partial_checksum > 1000, `d got ${o('d').tx_partial_checksum} frames with their checksum left to do, as it takes them`);
  t.equal(o('d').checksums_completed, 0, 'none completed for d');
  t.equal(Object.values(s).reduce((n, p) => n + p.drops.offload_header_bad, 0), 0, 'no header refused');
  // Segmentation: a sends super-frames; d takes them as they are, b and c get segments.
  const perFrame = (frames: number, bytes: number) => Math.round(bytes / Math.max(frames, 1));
  t.ok(o('a').rx_gso_frames > 100, `a sent ${o('a').rx_gso_frames} super-frames, ${perFrame(o('a').rx_gso_frames, o('a').rx_gso_bytes)} bytes each on average`);
  t.ok(perFrame(o('a').rx_gso_frames, o('a').rx_gso_bytes) > 3000, 'longer than any frame its 1500-byte MTU allows');
  t.ok(o('d').tx_gso_frames > 100, `d got ${o('d').tx_gso_frames} of them as they are (${perFrame(o('d').tx_gso_frames, o('d').tx_gso_bytes)} bytes each)`);
  t.equal(o('d').gso_segments, 0, 'none cut for d');
  t.ok(o('b').gso_segments > 1000 && o('c').gso_segments > 1000, `vrouter cut ${o('b').gso_segments} segments for b and ${o('c').gso_segments} for c`);
  t.equal(o('b').tx_gso_frames + o('c').tx_gso_frames, 0, 'and handed neither a super-frame');
  t.equal(o('b').rx_gso_frames + o('c').rx_gso_frames, 0, 'b and c sent none');
  t.equal(s.b.drops.frame_too_long + s.c.drops.frame_too_long + s.d.drops.frame_too_long, 0, 'nothing too long for a port');
});

t.test('routed: TTL and header checksum rewritten, the TCP checksum still left to do or completed', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
      { name: 'd', socket: '{dir}/d.sock', addresses: ['10.0.3.1/24'] },
    ],
    pipeline: ['routing'],
  });
  t.teardown(() => vr.stop());
  const server = (n: number) => `ip route add default via ${n === 2 ? '10.0.2.1' : '10.0.3.1'}\nvr_iperf_server && vr_iperf_server\n${CSUM_REPORT}`;
  const b = bootGuest({ name: 'offr-b', nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24', props: NO_OFFLOADS }], script: server(2), timeoutS: 150 });
  t.teardown(() => b.kill());
  const d = bootGuest({ name: 'offr-d', nics: [{ socket: vr.sockets.d, ip: '10.0.3.2/24' }], script: server(3), timeoutS: 150 });
  t.teardown(() => d.kill());
  const a = bootGuest({
    name: 'offr-a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24', props: ['packed=on'] }],
    script: `
ip route add default via 10.0.1.1
vr_wait_peer 10.0.2.2 60 && vr_wait_peer 10.0.3.2 60
vr_iperf_client 10.0.2.2 2 && vr_iperf_client 10.0.2.2 2 -R && vr_iperf_client 10.0.3.2 2 && vr_iperf_client 10.0.3.2 2 -R
${CSUM_REPORT}`,
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  const [ra, rb, rd] = await Promise.all([a.done, b.done, d.done]);
  for (const [dst, args, what] of [['10.0.2.2', '', 'a -> b (no offloads)'], ['10.0.2.2', '-R', 'b -> a'], ['10.0.3.2', '', 'a -> d (offloads on)'], ['10.0.3.2', '-R', 'd -> a']]) {
    const mbps = Number(result(ra, 'iperf3', { dst, args })?.receiver_mbps);
    t.ok(mbps > 10, `routed ${what}: ${mbps} Mbit/s`);
  }
  checkGuest(t, ra, 'a');
  checkGuest(t, rb, 'b');
  checkGuest(t, rd, 'd');
  const s = await vr.stats();
  t.ok(s.b.offloads.checksums_completed > 1000, `routed to b: ${s.b.offloads.checksums_completed} checksums completed`);
  t.ok(s.d.offloads.tx_partial_checksum > 1000, `routed to d: ${s.d.offloads.tx_partial_checksum} left to do, as d takes them`);
  t.ok(s.a.offloads.tx_partial_checksum > 1000, `d's answers reach a with theirs left to do too (${s.a.offloads.tx_partial_checksum})`);
  t.ok(s.a.plugins.routing.counters.routed + s.b.plugins.routing.counters.routed > 2000, 'all of it routed');
  t.ok(s.d.offloads.tx_gso_frames > 100, `routed to d: ${s.d.offloads.tx_gso_frames} super-frames as they are`);
  t.ok(s.b.offloads.gso_segments > 1000, `routed to b: ${s.b.offloads.gso_segments} segments cut`);
  t.equal(s.a.plugins.routing.drops.mtu_exceeded + s.d.plugins.routing.drops.mtu_exceeded, 0, 'no super-frame taken for a packet over the MTU');
});
