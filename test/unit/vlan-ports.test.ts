// VLAN ports ("type": "vlan"): the config's checks, and a trunk's frames taken apart and
// put together by the data plane, between test devices and from a host behind an AF_PACKET
// uplink: each VLAN to its own bridge or router interface, untagged there; what leaves
// through a VLAN port tagged on its parent; added and removed at run time; captured.
import t from 'tap';
import { ConfigError, parseConfig } from '../../src/control/config.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { testGuest, type TestGuest } from '../support/test-guest.ts';
import { arp, icmp4, tcp4, type ParsedFrame } from '../support/frames.ts';
import { waitFor } from '../support/traffic.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { adminClient, startStream } from '../support/admin-client.ts';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { framesFile, inject } from '../support/frame-injector.ts';
import { deleteNamespace, ip, vethIntoNamespace } from '../support/netns.ts';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const guestPort = (name: string, extra: object = {}) => ({ name, socket: `/tmp/${name}.sock`, ...extra });
const vlanPort = (name: string, parent: string, vlan: number, extra: object = {}) => ({ name, type: 'vlan', parent, vlan, ...extra });

function refusal(doc: object): { field: string; message: string } | null {
  try {
    parseConfig(doc, '/', 2);
    return null;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { field: err.field, message: err.message };
  }
}

t.test('a vlan port in the config', async (t) => {
  const c = parseConfig({ ports: [guestPort('trunk', { mtu: 9000 }), vlanPort('trunk.10', 'trunk', 10, { bridge: 'br10' }), guestPort('a', { bridge: 'br10' }), { name: 'up', type: 'tap', interface: 'vr-up' }, vlanPort('up.7', 'up', 7, { addresses: ['10.7.0.1/24'], mtu: 1400 })], pipeline: ['routing', 'bridge'] }, '/', 2);
  const v = c.ports.find((p) => p.name === 'trunk.10')!;
  t.same([v.type, v.parent, v.vlan, v.queues, v.mtu], ['vlan', 'trunk', 10, 0, 9000], 'a VLAN of a port: no queues of its own, its parent\'s MTU by default');
  const up7 = c.ports.find((p) => p.name === 'up.7')!;
  t.same([up7.mtu, up7.routerAdvertisements], [1400, false], 'an MTU of its own; no router advertisements on an uplink\'s VLAN by default');
  t.equal(c.bridges.br10.routerAdvertisements, true, 'a bridge of guests and a guest\'s VLAN advertises by default');
  const ports = [guestPort('trunk', { mtu: 1500 })];
  const cases: [string, object[], string, RegExp][] = [
    ['no parent', [...ports, { name: 'v', type: 'vlan', vlan: 10 }], 'ports[1].parent', /needs "parent"/],
    ['no VLAN ID', [...ports, { name: 'v', type: 'vlan', parent: 'trunk' }], 'ports[1].vlan', /needs "vlan"/],
    ['VLAN 0', [...ports, vlanPort('v', 'trunk', 0)], 'ports[1].vlan', /./],
    ['VLAN 4095', [...ports, vlanPort('v', 'trunk', 4095)], 'ports[1].vlan', /./],
    ['an unknown parent', [...ports, vlanPort('v', 'nope', 10)], 'ports[1].parent', /no port is called "nope"/],
    ['a VLAN of a VLAN', [...ports, vlanPort('v', 'trunk', 10), vlanPort('w', 'v', 20)], 'ports[2].parent', /is a vlan port itself/],
    ['one VLAN twice', [...ports, vlanPort('v', 'trunk', 10), vlanPort('w', 'trunk', 10)], 'ports[2].vlan', /VLAN 10 of trunk is already ports\[1\]/],
    ['a socket', [...ports, vlanPort('v', 'trunk', 10, { socket: '/tmp/v.sock' })], 'ports[1].socket', /does not apply to a vlan port/],
    ['queues', [...ports, vlanPort('v', 'trunk', 10, { queues: 2 })], 'ports[1].queues', /does not apply to a vlan port/],
    ['an interface', [...ports, vlanPort('v', 'trunk', 10, { interface: 'eth0' })], 'ports[1].interface', /does not apply to a vlan port/],
    ['a larger MTU than its parent', [...ports, vlanPort('v', 'trunk', 10, { mtu: 1501 })], 'ports[1].mtu', /more than its parent trunk's MTU \(1500\)/],
    ['the parent\'s bridge', [guestPort('trunk', { bridge: 'br0' }), vlanPort('v', 'trunk', 10, { bridge: 'br0' })], 'ports[1].bridge', /its parent trunk is in bridge br0 too/],
    ['two VLANs of a parent in one bridge', [...ports, vlanPort('v', 'trunk', 10, { bridge: 'br0' }), vlanPort('w', 'trunk', 20, { bridge: 'br0' })], 'ports[2].bridge', /ports\[1\], another VLAN of trunk, is in bridge br0 too/],
    ['parent on another type', [guestPort('trunk', { parent: 'x' })], 'ports[0].parent', /applies to vlan ports only/],
    ['vlan on another type', [guestPort('trunk', { vlan: 3 })], 'ports[0].vlan', /applies to vlan ports only/],
    ['an IPv6 address on a parent\'s small MTU', [guestPort('trunk', { mtu: 1000 }), vlanPort('v', 'trunk', 10, { addresses: ['2001:db8::1/64'] })], 'ports[1].mtu', /1000 \(its parent's MTU\)/],
  ];
  for (const [what, ports, field, message] of cases) {
    const r = refusal({ ports });
    t.equal(r?.field, field, `${what}: refused, naming ${field}`);
    t.match(r?.message ?? '', message, `${what}: says why`);
  }
  t.equal(refusal({ ports: [...ports, vlanPort('v', 'trunk', 10), vlanPort('w', 'trunk', 20), guestPort('other'), vlanPort('x', 'other', 10)] }), null, 'VLANs 10 and 20 of one port, and 10 of another');
});

const TRUNK_MAC = '52:54:00:00:01:01';
const A_MAC = '52:54:00:00:02:02';
const B_MAC = '52:54:00:00:03:03';
const C_MAC = '52:54:00:00:04:04';
const BROADCAST = 'ff:ff:ff:ff:ff:ff';

interface Trunked {
  vr: StartedVrouter;
  trunk: TestGuest;
  a: TestGuest;
  b: TestGuest;
  c: TestGuest;
}

/** trunk (a guest's trunk) with VLAN 10 in br10 (with a and c) and VLAN 20 in br20 (with b); each device connected. */
async function trunked(t: { teardown(fn: () => unknown): void }): Promise<Trunked> {
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock' },
      { name: 'trunk.10', type: 'vlan', parent: 'trunk', vlan: 10, bridge: 'br10' },
      { name: 'trunk.20', type: 'vlan', parent: 'trunk', vlan: 20, bridge: 'br20' },
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br10' },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br20' },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br10' },
    ],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const devices = await Promise.all(['trunk', 'a', 'b', 'c'].map((p) => startDevice(vr.sockets[p])));
  t.teardown(() => devices.forEach((d) => d.close()));
  const [trunk, a, b, c] = devices.map((d) => testGuest(d));
  return { vr, trunk, a, b, c };
}

const arpFrom = (src: string, ip: string, vlan?: number) => arp({ dstMac: BROADCAST, srcMac: src, vlan, op: 'request', senderMac: src, senderIp: ip, targetIp: '10.0.0.99' });
const last = (g: TestGuest): ParsedFrame | undefined => g.poll().at(-1);
/** `frame` with a tag of `tpid` and VLAN `vid` put before its first (outermost) ethertype. */
function stacked(frame: Uint8Array, tpid: number, vid: number): Uint8Array {
  const out = new Uint8Array(frame.length + 4);
  out.set(frame.subarray(0, 12));
  out.set([tpid >> 8, tpid & 0xff, vid >> 8, vid & 0xff], 12);
  out.set(frame.subarray(12), 16);
  return out;
}

t.test('a trunk\'s VLANs: each its own bridge, untagged there; tagged again on the way back', async (t) => {
  const { vr, trunk, a, b, c } = await trunked(t);
  // A broadcast tagged 10 reaches br10's guests untagged, and no one in br20.
  await trunk.send([arpFrom(TRUNK_MAC, '10.0.0.1', 10)]);
  const atA = await waitFor('the broadcast at a', () => last(a), 5000);
  t.same([atA.vlan, atA.etherType, atA.srcMac, atA.length], [undefined, 0x0806, TRUNK_MAC, 42], 'a got it untagged, 4 bytes shorter');
  await waitFor('the broadcast at c', () => last(c), 5000);
  // b's VLAN: the tag says where.
  await trunk.send([arpFrom('52:54:00:00:01:02', '10.0.0.2', 20)]);
  const atB = await waitFor('the broadcast at b', () => last(b), 5000);
  t.equal(atB.srcMac, '52:54:00:00:01:02', 'b got VLAN 20\'s broadcast');
  t.equal(a.got.length, 1, 'and a nothing more: VLANs are apart');
  // Untagged: the trunk's own, in no bridge: nowhere. Of a VLAN no port has: refused.
  await trunk.send([arpFrom(TRUNK_MAC, '10.0.0.1'), arpFrom(TRUNK_MAC, '10.0.0.1', 30)]);
  // a floods a broadcast: c gets it as it is, the trunk tagged 10 (a copy of its own).
  await a.send([arpFrom(A_MAC, '10.0.0.3')]);
  const back = await waitFor('a\'s broadcast on the trunk', () => last(trunk), 5000);
  t.same([back.vlan, back.srcMac, back.etherType, back.length], [10, A_MAC, 0x0806, 46], 'on the trunk tagged 10, 4 bytes longer');
  const atC = await waitFor('a\'s broadcast at c', () => c.poll().find((f) => f.srcMac === A_MAC), 5000);
  t.equal(atC.vlan, undefined, 'at c untagged');
  // Unicast to the trunk's MAC, learned on VLAN 10: tagged in place.
  await c.send([icmp4({ dstMac: TRUNK_MAC, srcMac: C_MAC, src: '10.0.0.4', dst: '10.0.0.1', type: 8, code: 0 })]);
  const uni = await waitFor('c\'s unicast on the trunk', () => trunk.poll().find((f) => f.srcMac === C_MAC), 5000);
  t.same([uni.vlan, uni.ip?.src, uni.ip?.dst], [10, '10.0.0.4', '10.0.0.1'], 'tagged 10, the packet as sent');
  // And b's to the MAC learned on VLAN 20.
  await b.send([icmp4({ dstMac: '52:54:00:00:01:02', srcMac: B_MAC, src: '10.0.0.5', dst: '10.0.0.2', type: 8, code: 0 })]);
  const uni20 = await waitFor('b\'s unicast on the trunk', () => trunk.poll().find((f) => f.srcMac === B_MAC), 5000);
  t.equal(uni20.vlan, 20, 'tagged 20');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(b.poll().length, 1, 'b got nothing of VLAN 10');
  const stats = await vr.stats();
  t.same([stats['trunk.10'].rx_packets, stats['trunk.10'].tx_packets, stats['trunk.20'].rx_packets, stats['trunk.20'].tx_packets], [1, 2, 1, 1], 'each VLAN port counts its frames');
  t.equal(stats.trunk.rx_packets, 4, 'the trunk counts every frame it sent');
  t.equal(stats.trunk.tx_packets, 3, 'and every frame it got, tagged');
  t.same([stats.trunk.drops.no_destination, stats.trunk.drops.vlan_refused], [1, 1], 'its own frame, in no bridge, and VLAN 30\'s: dropped, counted');
  const pmd = ((await adminClient(vr).call('GET', '/pmds')).json as { rx_packets: number; tx_packets: number }[])[0];
  const sum = (field: 'rx_packets' | 'tx_packets') => ['trunk', 'a', 'b', 'c'].reduce((n, p) => n + stats[p][field], 0);
  t.same([pmd.rx_packets, pmd.tx_packets], [sum('rx_packets'), sum('tx_packets')], 'the PMD\'s totals count each frame once, on the queues it came and went by');
  const metrics = (await adminClient(vr).call('GET', '/metrics')).text;
  t.match(metrics, /^vrouter_port_rx_packets_total\{port="trunk\.10"\} 1$/m, 'a VLAN port in /metrics');
  t.notMatch(metrics, /^vrouter_queue_\w+\{port="trunk\.10"/m, 'with no queues of its own');
});

t.test('the trunk\'s own segment: tagged frames neither enter its VLANs from it nor leave them into it; a VLAN\'s MTU', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock', bridge: 'native', mtu: 9000 },
      { name: 'trunk.10', type: 'vlan', parent: 'trunk', vlan: 10, bridge: 'br10', mtu: 1500 },
      { name: 'n', socket: '{dir}/n.sock', bridge: 'native' },
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br10' },
    ],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const devices = await Promise.all(['trunk', 'n', 'a'].map((p) => startDevice(vr.sockets[p])));
  t.teardown(() => devices.forEach((d) => d.close()));
  const [trunk, n, a] = devices.map((d) => testGuest(d));
  const N_MAC = '52:54:00:00:06:06';
  // From the native segment: untagged and priority-tagged frames reach the trunk; one tagged
  // 10 would be VLAN 10's there, past trunk.10 and its bridge: refused.
  // Nor one tagged 10 under a priority tag (Linux takes it for VLAN 10's), nor an 802.1ad one.
  await n.send([arpFrom(N_MAC, '10.0.0.20'), arpFrom(N_MAC, '10.0.0.21', 0), arpFrom(N_MAC, '10.0.0.22', 10), stacked(arpFrom(N_MAC, '10.0.0.23', 10), 0x8100, 0), stacked(arpFrom(N_MAC, '10.0.0.24'), 0x88a8, 10)]);
  await waitFor('two frames on the trunk', () => trunk.poll().length >= 2 || undefined, 5000);
  await new Promise((r) => setTimeout(r, 300));
  t.same(trunk.poll().map((f) => [f.vlan, f.arp?.senderIp]), [[undefined, '10.0.0.20'], [0, '10.0.0.21']], 'the untagged and the priority-tagged one, as sent; none of the three tagged ones');
  t.equal(a.poll().length, 0, 'nothing reached VLAN 10');
  // From the trunk: a priority-tagged frame is the native segment's, untagged. Double tags
  // (VLAN 10 under a priority tag, VLAN 20 inside VLAN 10) and 802.1ad ones go nowhere.
  await trunk.send([stacked(arpFrom(TRUNK_MAC, '10.0.0.32', 10), 0x8100, 0), stacked(arpFrom(TRUNK_MAC, '10.0.0.33', 20), 0x8100, 10), stacked(arpFrom(TRUNK_MAC, '10.0.0.34'), 0x88a8, 10)]);
  await trunk.send([arpFrom(TRUNK_MAC, '10.0.0.30', 0)]);
  const atN = await waitFor('the trunk\'s priority-tagged frame at n', () => n.poll().find((f) => f.srcMac === TRUNK_MAC), 5000);
  t.same([atN.vlan, atN.arp?.senderIp], [undefined, '10.0.0.30'], 'at n untagged');
  t.same([n.got.filter((f) => f.srcMac === TRUNK_MAC).length, a.poll().length], [1, 0], 'the double-tagged and 802.1ad frames reached neither segment');
  // From VLAN 10's segment: a frame with a tag of its own would leave the trunk double-tagged.
  await a.send([arpFrom(A_MAC, '10.0.0.40', 20), arpFrom(A_MAC, '10.0.0.41')]);
  await waitFor('a\'s untagged broadcast on the trunk', () => trunk.poll().some((f) => f.srcMac === A_MAC) || undefined, 5000);
  await new Promise((r) => setTimeout(r, 300));
  t.same(trunk.poll().filter((f) => f.srcMac === A_MAC).map((f) => [f.vlan, f.arp?.senderIp]), [[10, '10.0.0.41']], 'a\'s untagged frame tagged 10; the tagged one refused');
  // VLAN 10's MTU is 1500 on a 9000 trunk: a longer frame of VLAN 10 goes no further.
  const long = icmp4({ dstMac: BROADCAST, srcMac: TRUNK_MAC, vlan: 10, src: '10.0.0.1', dst: '10.0.0.3', type: 8, code: 0, payload: 1600 });
  await trunk.send([long, arpFrom(TRUNK_MAC, '10.0.0.31', 10)]);
  const atA = await waitFor('VLAN 10\'s ARP at a', () => a.poll().find((f) => f.srcMac === TRUNK_MAC), 5000);
  t.equal(atA.arp?.senderIp, '10.0.0.31', 'the ARP passed');
  t.equal(a.got.length, 1, 'the frame past VLAN 10\'s MTU did not');
  const stats = await vr.stats();
  t.same([stats.n.drops.vlan_refused, stats.trunk.drops.vlan_refused, stats['trunk.10'].drops.vlan_refused, stats['trunk.10'].drops.frame_too_long], [0, 5, 2, 1], 'counted where they would have crossed: 3 from n and 2 from the trunk on the trunk, VLAN 20 inside VLAN 10 and a\'s tagged one on trunk.10, the long one on trunk.10');
});

t.test('a routed VLAN: the router answers ARP and ping on the VLAN, tagged', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock' },
      { name: 'trunk.30', type: 'vlan', parent: 'trunk', vlan: 30, addresses: ['10.30.0.1/24'] },
      { name: 'd', socket: '{dir}/d.sock', addresses: ['10.40.0.1/24'] },
    ],
    pipeline: ['routing'],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const devices = await Promise.all(['trunk', 'd'].map((p) => startDevice(vr.sockets[p])));
  t.teardown(() => devices.forEach((d) => d.close()));
  const [trunk] = devices.map((d) => testGuest(d));
  await trunk.send([arp({ dstMac: BROADCAST, srcMac: TRUNK_MAC, vlan: 30, op: 'request', senderMac: TRUNK_MAC, senderIp: '10.30.0.2', targetIp: '10.30.0.1' })]);
  const reply = await waitFor('the ARP reply', () => trunk.poll().find((f) => f.arp?.op === 2), 5000);
  t.same([reply.vlan, reply.arp?.senderIp, reply.dstMac], [30, '10.30.0.1', TRUNK_MAC], 'the router answers on VLAN 30, tagged');
  const routerMac = reply.srcMac;
  await trunk.send([icmp4({ dstMac: routerMac, srcMac: TRUNK_MAC, vlan: 30, src: '10.30.0.2', dst: '10.30.0.1', type: 8, code: 0 })]);
  const echo = await waitFor('the echo reply', () => trunk.poll().find((f) => f.ip?.src === '10.30.0.1'), 5000);
  t.same([echo.vlan, echo.ip?.dst, echo.l4?.type], [30, '10.30.0.2', 0], 'an echo reply, tagged 30');
  const stats = await vr.stats();
  t.same([stats['trunk.30'].rx_packets, stats['trunk.30'].tx_packets], [2, 2], 'the VLAN port counts the two frames each way');
  t.equal(stats.trunk.rx_packets, 2, 'its parent too');
});

t.test('a VLAN port added and removed at run time, on two PMDs: the trunk stays connected', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock' },
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br10' },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br10' },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const devices = await Promise.all(['trunk', 'a', 'c'].map((p) => startDevice(vr.sockets[p])));
  t.teardown(() => devices.forEach((d) => d.close()));
  const [trunk, a] = devices.map((d) => testGuest(d));
  const pmdOf = async (port: string) => ((await api.call('GET', '/pmds')).json as { cpu: number; queues: { port: string }[] }[]).findIndex((p) => p.queues.some((q) => q.port === port));
  t.not(await pmdOf('trunk'), await pmdOf('a'), 'the trunk and a on different PMDs');
  const added = await api.call('POST', '/ports', { name: 'trunk.10', type: 'vlan', parent: 'trunk', vlan: 10, bridge: 'br10' });
  t.match(added, { status: 200, json: { mode: 'restart' } }, 'added');
  t.match(await api.call('PUT', '/ports/trunk.10/queues/0', { cpu: 0 }), { status: 404, json: { error: { field: 'queue', message: /a VLAN of trunk: it has no queues of its own/ } } }, 'a VLAN port has no queue to move');
  const ports = (await api.call('GET', '/ports')).json as { name: string; state: { connected: boolean } | null }[];
  t.same(ports.map((p) => [p.name, p.state?.connected]), [['trunk', true], ['a', true], ['c', true], ['trunk.10', true]], 'the VLAN port up as its parent is; no frontend disconnected');
  t.notOk(await devices[0].frontend.closedByPeer(50), 'the trunk\'s connection kept');
  // After the PMDs' restart: frames one way and the other, across the two PMDs.
  const frames = Array.from({ length: 20 }, (_, i) => icmp4({ dstMac: A_MAC, srcMac: TRUNK_MAC, vlan: 10, src: '10.0.0.1', dst: '10.0.0.3', type: 8, code: 0, seq: i }));
  // The PMDs take frames once every queue is back: until then the trunk's first may be lost.
  await waitFor('the trunk\'s frames at a', async () => (await trunk.send(frames.slice(0, 1)), a.poll().length > 0) || undefined, 10000);
  const before = a.poll().length;
  await trunk.send(frames);
  const fromTrunk = await waitFor('20 frames at a', () => (a.poll().length - before >= 20 ? a.got.slice(before) : undefined), 5000);
  t.ok(fromTrunk.every((f) => f.srcMac === TRUNK_MAC && f.vlan === undefined && f.ip?.dst === '10.0.0.3'), 'the trunk\'s VLAN 10 reaches a untagged, all 20');
  await a.send(Array.from({ length: 20 }, (_, i) => icmp4({ dstMac: TRUNK_MAC, srcMac: A_MAC, src: '10.0.0.3', dst: '10.0.0.1', type: 0, code: 0, seq: i })));
  const back = await waitFor('20 frames on the trunk', () => (trunk.poll().filter((f) => f.srcMac === A_MAC).length >= 20 ? trunk.got.filter((f) => f.srcMac === A_MAC) : undefined), 5000);
  t.ok(back.every((f) => f.vlan === 10 && f.ip?.src === '10.0.0.3'), 'a\'s frames leave the trunk tagged 10');
  const removed = await api.call('DELETE', '/ports/trunk.10');
  t.match(removed, { status: 200 }, 'removed');
  const stats = await vr.stats();
  t.equal(stats['trunk.10'], undefined, 'and gone from the counters');
  t.notOk(await devices[0].frontend.closedByPeer(50), 'the trunk still connected');
});

t.test('a capture of a VLAN port: its frames both ways, untagged, as the VLAN sees them; the parent\'s, tagged', async (t) => {
  const { vr, trunk, a } = await trunked(t);
  const onVlan = await startStream(vr, '/ports/trunk.10/capture?count=2&seconds=20');
  const onTrunk = await startStream(vr, '/ports/trunk/capture?count=2&seconds=20');
  t.same([onVlan.status, onTrunk.status], [200, 200], 'both captures run');
  await trunk.send([icmp4({ dstMac: A_MAC, srcMac: TRUNK_MAC, vlan: 10, src: '10.0.0.1', dst: '10.0.0.3', type: 8, code: 0 })]);
  await waitFor('the echo at a', () => a.poll().find((f) => f.ip?.dst === '10.0.0.3'), 5000);
  await a.send([icmp4({ dstMac: TRUNK_MAC, srcMac: A_MAC, src: '10.0.0.3', dst: '10.0.0.1', type: 0, code: 0 })]);
  await waitFor('the reply on the trunk', () => trunk.poll().find((f) => f.ip?.dst === '10.0.0.1'), 5000);
  const read = (name: string, bytes: Buffer) => {
    const file = join(vr.dir, `${name}.pcapng`);
    writeFileSync(file, bytes);
    const out = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.packet_flags_direction', '-e', 'vlan.id', '-e', 'icmp.type', '-e', 'frame.comment', '-E', 'separator=,'], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`tshark failed: ${out.stderr}`);
    return out.stdout.trim().split('\n').map((line) => line.replace(/0x0000000/g, ''));
  };
  t.same(read('vlan', await onVlan.bytes()), ['1,,8,bridge: flood,verdict: flood', '2,,0,written to port trunk.10 (pmd0)'], 'on trunk.10: the echo in, through the stages (a not learned yet: flooded), and the reply out, no tag');
  t.same(read('trunk', await onTrunk.bytes()), ['1,10,8,verdict: to port trunk.10', '2,10,0,written to port trunk (pmd0)'], 'on the trunk: both tagged 10, the echo handed on to trunk.10');
});

t.test('a VLAN of an AF_PACKET uplink: a LAN\'s tagged frames to a bridge, and back out tagged', async (t) => {
  const netns = `vrvlan${process.pid}`;
  const iface = `vrv${process.pid % 100000}`;
  const peer = `${iface}p`;
  vethIntoNamespace(t, netns, iface, peer);
  // Neither end sends anything of its own: the link carries the test's frames alone.
  execFileSync('sysctl', ['-qw', `net.ipv6.conf.${iface}.disable_ipv6=1`]);
  execFileSync('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`]);
  ip('-n', netns, 'link', 'set', peer, 'up');
  const vr = await startVrouter({
    ports: [
      { name: 'u', type: 'af_packet', interface: iface },
      { name: 'u.10', type: 'vlan', parent: 'u', vlan: 10, bridge: 'br10' },
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br10' },
    ],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const device = await startDevice(vr.sockets.a);
  t.teardown(() => device.close());
  const a = testGuest(device);
  // The LAN's host sends from a raw socket; the kernel passes the tag to vrouter's rings
  // out of band (the veth took it off), and vrouter puts it back before the split.
  const LAN_MAC = '52:54:00:00:05:05';
  const sent = await inject(netns, peer, framesFile(vr.dir, 'lan', [
    { frame: arpFrom(LAN_MAC, '10.0.0.7', 10) },
    { frame: arpFrom(LAN_MAC, '10.0.0.8', 20) },
    { frame: arpFrom(LAN_MAC, '10.0.0.9') },
  ]));
  t.equal(sent.sent, 3, 'the LAN host sent its three frames');
  const atA = await waitFor('VLAN 10\'s broadcast at a', () => a.poll().find((f) => f.srcMac === LAN_MAC), 5000);
  t.same([atA.vlan, atA.arp?.senderIp], [undefined, '10.0.0.7'], 'a got VLAN 10\'s, untagged');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(a.poll().length, 1, 'and neither VLAN 20\'s nor the untagged one');
  // a answers the host, learned on u.10: the frame leaves the interface tagged 10. tshark
  // says it captures before it does: a's reply is sent again until tshark has one.
  const tshark = spawn('ip', ['netns', 'exec', netns, 'tshark', '-i', peer, '-c', '1', '-a', 'duration:20', '-f', `ether src ${A_MAC}`, '-T', 'fields', '-e', 'vlan.id', '-e', 'arp.src.proto_ipv4'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => tshark.kill());
  let out = '';
  let err = '';
  tshark.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  tshark.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  let ended = false;
  tshark.on('exit', () => (ended = true));
  const reply = arp({ dstMac: LAN_MAC, srcMac: A_MAC, op: 'reply', senderMac: A_MAC, senderIp: '10.0.0.3', targetMac: LAN_MAC, targetIp: '10.0.0.7' });
  let replies = 0;
  await waitFor('tshark to capture a\'s reply', async () => ended || (await a.send([reply]), replies++, await new Promise((r) => setTimeout(r, 300)), ended) || undefined, 25000);
  t.equal(out.trim(), '10\t10.0.0.3', 'the LAN host got a\'s reply, tagged 10', { tshark: err });
  const stats = await vr.stats();
  t.same([stats['u.10'].rx_packets, stats['u.10'].tx_packets, stats.u.rx_packets, stats.u.tx_packets], [1, replies, 3, replies], `counted on the VLAN port and on the uplink (${replies} replies sent)`);
});

t.test('a routed VLAN port\'s Linux mirror: what vrouter leaves to Linux on the VLAN, and Linux\'s answer, tagged', async (t) => {
  const netns = `vrvmir${process.pid}`;
  t.teardown(() => deleteNamespace(netns));
  const vr = await startVrouter({
    ports: [
      { name: 'trunk', socket: '{dir}/trunk.sock' },
      { name: 'trunk.30', type: 'vlan', parent: 'trunk', vlan: 30, addresses: ['10.30.0.1/24'], linuxMirror: { netns } },
    ],
    pipeline: ['routing'],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const device = await startDevice(vr.sockets.trunk);
  t.teardown(() => device.close());
  const trunk = testGuest(device);
  t.match(ip('-n', netns, '-o', 'address', 'show', 'dev', 'trunk.30'), /inet 10\.30\.0\.1\/24/, 'the mirror in Linux, with the VLAN port\'s address');
  // TCP to the router's address is Linux's (sshd, BGP): its answer, a reset here, leaves
  // through the VLAN port tagged. Linux knows the guest's MAC (it would ask otherwise).
  ip('-n', netns, 'neigh', 'replace', '10.30.0.2', 'lladdr', TRUNK_MAC, 'dev', 'trunk.30');
  const routerMac = (await adminClient(vr).call('GET', '/ports/trunk.30')).json.routerMac as string;
  const syn = tcp4({ dstMac: routerMac, srcMac: TRUNK_MAC, vlan: 30, src: '10.30.0.2', dst: '10.30.0.1', srcPort: 40000, dstPort: 179, flags: 'S', seq: 1000 });
  const reset = await waitFor('Linux\'s answer on the trunk', async () => (await trunk.send([syn]), trunk.poll().find((f) => f.ip?.src === '10.30.0.1' && f.ip.protocol === 6)), 10000);
  t.same([reset.vlan, reset.srcMac, reset.l4?.srcPort, reset.l4?.dstPort, reset.l4?.tcpFlags?.includes('R')], [30, routerMac, 179, 40000, true], 'Linux\'s reset, from the router\'s MAC, tagged 30');
});
