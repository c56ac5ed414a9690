// Hostile input on an uplink port: a host on the far side of an AF_PACKET or AF_XDP port
// (a veth pair) or of a TAP port, in a network namespace of the test's, sends through a raw
// AF_PACKET socket what a hostile guest sends through its queues: runts, truncated and
// lying headers, frames over the MTU and GSO super-frames, floods to the router's MAC, ARP
// from thousands of senders; and it outruns a PMD that falls behind. Every frame sent is
// accounted for (by vrouter under its reason, the same as a guest port's, or by the
// kernel's own counters); answers stay within the router's limits; the neighbour table
// keeps the other interfaces' share; two routed vhost-user ports keep routing, during the
// flood and after.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { PortStats } from '../../src/dataplane/counters.ts';
import { adminClient, type AdminClient } from '../support/admin-client.ts';
import { arp, icmp4, tcp4, udp4, udp6 } from '../support/frames.ts';
import { prng } from '../support/prng.ts';
import { testGuest, type TestGuest } from '../support/test-guest.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { framesFile, inject, injectWhileStopped, type Outgoing } from '../support/frame-injector.ts';

const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01', h: '02:00:00:00:0e:01', u: '02:00:00:00:0f:01' };
const GUEST = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b', h: '52:54:00:00:00:0e' };
/** the hostile host behind the uplink, as its frames say (not the interface's own MAC) */
const HOST_MAC = '52:54:00:00:00:0f';
/** the routing stage's limits in this test: ICMP errors per second and burst, per PMD; neighbour table */
const ICMP_RATE = 200;
const ICMP_BURST = 20;
const NEIGHBOUR_LIMIT = 256;
/** 4 ports (a, b, h, u), each its own routed interface: each may hold a quarter of the table */
const SHARE = NEIGHBOUR_LIMIT / 4;
/** how often each malformed frame is sent, and each frame over the MTU */
const REPEAT = 20;
const OVERSIZE_REPEAT = 5;
const FLOOD = 200_000;
const ARP_FLOOD = 20_000;

const run = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
const ip = (...args: string[]) => run('ip', ...args);
const quietly = (f: () => unknown) => {
  try {
    f();
  } catch {
    // already gone
  }
};

/** Fails, saying what is missing, when this machine cannot run the test. */
function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: it creates network namespaces and veth pairs, and sends through raw packet sockets');
  try {
    run('python3', '-c', 'import socket; socket.AF_PACKET');
  } catch (err) {
    throw new Error(`needs python3 with socket.AF_PACKET, to send raw frames from the namespace side: ${(err as Error).message}`);
  }
  run('ip', '-V');
}

// ---- frames ------------------------------------------------------------------------------

/** The malformed frames of the test, to a router at `routerMac` / `routerIp` from a host at `hostIp` (its subnet). */
function malformed(routerMac: string, routerIp: string, hostIp: string, hostMac: string): { what: string; frame: Uint8Array; reason: string }[] {
  const l2 = { srcMac: hostMac, dstMac: routerMac };
  const udp = udp4({ src: hostIp, dst: routerIp, srcPort: 1000, dstPort: 2000, payload: 32, ...l2 });
  const v6 = udp6({ src: '2001:db8:99::2', dst: '2001:db8:99::1', srcPort: 1000, dstPort: 2000, payload: 32, ...l2 });
  const request = arp({ op: 'request', senderMac: hostMac, senderIp: hostIp, targetIp: routerIp, srcMac: hostMac, dstMac: routerMac });
  const cut = (f: Uint8Array, n: number) => f.slice(0, n);
  const edit = (f: Uint8Array, change: (g: Uint8Array, dv: DataView) => void) => {
    const g = f.slice();
    change(g, new DataView(g.buffer));
    return g;
  };
  const cases: { what: string; frame: Uint8Array; reason: string }[] = [];
  for (const n of [1, 6, 13]) cases.push({ what: `a ${n}-byte runt`, frame: cut(udp, n), reason: 'frame_too_short' });
  cases.push({ what: 'an Ethernet header alone, IPv4', frame: cut(udp, 14), reason: 'routing.ip_header_bad' });
  for (const n of [1, 10, 19]) cases.push({ what: `IPv4, ${n} bytes of header`, frame: cut(udp, 14 + n), reason: 'routing.ip_header_bad' });
  cases.push({ what: 'an Ethernet header alone, IPv6', frame: cut(v6, 14), reason: 'routing.ip_header_bad' });
  for (const n of [1, 20, 39]) cases.push({ what: `IPv6, ${n} bytes of header`, frame: cut(v6, 14 + n), reason: 'routing.ip_header_bad' });
  cases.push({ what: 'an Ethernet header alone, ARP', frame: cut(request, 14), reason: 'routing.arp_bad' });
  for (const n of [1, 8, 27]) cases.push({ what: `ARP, ${n} bytes of it`, frame: cut(request, 14 + n), reason: 'routing.arp_bad' });
  cases.push({ what: 'IPv4, IHL 4', frame: edit(udp, (g) => (g[14] = 0x44)), reason: 'routing.ip_header_bad' });
  cases.push({ what: 'IPv4, IHL 15 (60 bytes) in a 28-byte packet', frame: edit(udp4({ src: hostIp, dst: routerIp, srcPort: 1000, dstPort: 2000, ...l2 }), (g) => (g[14] = 0x4f)), reason: 'routing.ip_header_bad' });
  cases.push({ what: 'IPv4 ethertype, version 6', frame: edit(udp, (g) => (g[14] = 0x65)), reason: 'routing.ip_header_bad' });
  cases.push({ what: 'IPv4, total length past the frame', frame: edit(udp, (_, dv) => dv.setUint16(16, 1400)), reason: 'routing.ip_length_bad' });
  cases.push({ what: 'IPv4, total length below the header', frame: edit(udp, (_, dv) => dv.setUint16(16, 12)), reason: 'routing.ip_length_bad' });
  cases.push({ what: 'IPv4, header checksum wrong', frame: edit(udp, (g) => (g[24] ^= 0x5a)), reason: 'routing.ip_checksum_bad' });
  cases.push({ what: 'IPv6, payload length past the frame', frame: edit(v6, (_, dv) => dv.setUint16(18, 1000)), reason: 'routing.ip_length_bad' });
  // 802.1Q-tagged: the router has no VLANs; on a guest port such a frame goes nowhere.
  cases.push({ what: 'an echo request to the router, tagged VLAN 5', frame: icmp4({ src: hostIp, dst: routerIp, type: 8, id: 1, seq: 1, payload: 32, vlan: 5, ...l2 }), reason: 'no_destination' });
  return cases;
}

// ---- counters ----------------------------------------------------------------------------

/** A port's drops by reason (the routing stage's as routing.NAME) and its counters, flat. */
interface Flat {
  drops: Record<string, number>;
  counters: Record<string, number>;
}

function flat(p: PortStats): Flat {
  const drops: Record<string, number> = { ...p.drops };
  const counters: Record<string, number> = { rx_packets: p.rx_packets, tx_packets: p.tx_packets };
  for (const [plugin, s] of Object.entries(p.plugins)) {
    for (const [k, v] of Object.entries(s.drops)) drops[`${plugin}.${k}`] = v;
    for (const [k, v] of Object.entries(s.counters)) counters[`${plugin}.${k}`] = v;
  }
  return { drops, counters };
}

/** What changed between two readings (the drops that did not change left out). */
function delta(after: Flat, before: Flat): Flat {
  const drops: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.drops)) if (v !== before.drops[k]) drops[k] = v - before.drops[k];
  const counters: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.counters)) counters[k] = v - before.counters[k];
  return { drops, counters };
}

const sum = (r: Record<string, number>, ...keys: string[]) => keys.reduce((s, k) => s + (r[k] ?? 0), 0);

/** An interface's counters as the kernel has them (`ip -s`), in namespace `ns` or the test's. */
function linkStats(iface: string, ns?: string): { rxPackets: number; rxDropped: number; txPackets: number; txDropped: number } {
  const [link] = JSON.parse(ip(...(ns === undefined ? [] : ['-n', ns]), '-j', '-s', 'link', 'show', 'dev', iface));
  const s = link.stats64;
  return { rxPackets: s.rx.packets, rxDropped: s.rx.dropped, txPackets: s.tx.packets, txDropped: s.tx.dropped };
}

// ---- the rig -----------------------------------------------------------------------------

interface Rig {
  vr: StartedVrouter;
  admin: AdminClient;
  ns: string;
  /** the host's end of the link, in `ns`: the veth's peer, or the TAP itself */
  hostIface: string;
  /** vrouter's end (af_packet, af_xdp: the veth end in the test's namespace; tap: the same TAP) */
  portIface: string;
  ga: TestGuest;
  gb: TestGuest;
  gh: TestGuest;
  dir: string;
}

/**
 * vrouter with routed ports a, b, h (vhost-user, test frontends) and u (the uplink, 10.9.0.1/16),
 * the link's host end in a namespace with IPv6 off (the kernel there sends nothing of its
 * own: every frame vrouter gets is the test's); a and b route to each other.
 */
async function rig(t: Test, kind: 'af_packet' | 'af_xdp' | 'tap'): Promise<Rig> {
  const id = `${process.pid % 100000}`;
  const letter = { af_packet: 'p', af_xdp: 'x', tap: 't' }[kind];
  const ns = `vrhu${letter}${id}`;
  const portIface = kind === 'tap' ? `vrhq${id}` : `vrh${letter}${id}`;
  const hostIface = kind === 'tap' ? portIface : `${portIface}h`;
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-uplinks-'));
  const devices: VirtioNetDevice[] = [];
  let vr: StartedVrouter | null = null;
  // One teardown, in order: vrouter (which closes the TAP), then the namespace, the veth, the files.
  t.teardown(async () => {
    devices.forEach((d) => d.close());
    if (vr !== null) await vr.stop();
    quietly(() => ip('netns', 'del', ns));
    if (kind !== 'tap') quietly(() => ip('link', 'del', portIface));
    rmSync(dir, { recursive: true, force: true });
  });
  ip('netns', 'add', ns);
  run('ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  if (kind !== 'tap') {
    ip('link', 'add', portIface, 'type', 'veth', 'peer', 'name', hostIface, 'netns', ns);
    run('sysctl', '-q', '-w', `net.ipv6.conf.${portIface}.disable_ipv6=1`);
    // The host's end takes jumbo frames; vrouter's end keeps the MTU of 1500 it was made with.
    ip('-n', ns, 'link', 'set', hostIface, 'mtu', '9000', 'up');
  }
  const uplink = { name: 'u', type: kind, interface: portIface, addresses: ['10.9.0.1/16'], routerMac: ROUTER.u };
  vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
      { name: 'h', socket: '{dir}/h.sock', addresses: ['10.8.0.1/16'], routerMac: ROUTER.h },
      uplink,
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    plugins: { routing: { neighbourLimit: NEIGHBOUR_LIMIT, icmpRate: ICMP_RATE, icmpBurst: ICMP_BURST } },
  }, 60_000);
  if (kind === 'tap') {
    // The host takes the TAP into its namespace and, its side being its own to set, jumbo frames.
    ip('link', 'set', portIface, 'netns', ns);
    ip('-n', ns, 'link', 'set', hostIface, 'mtu', '9000', 'up');
  }
  for (const name of ['a', 'b', 'h']) devices.push(await startDevice(vr.sockets[name]));
  const [ga, gb, gh] = devices.map((d) => testGuest(d));
  // a learns the router, b answers the router's ARP: then a's packets reach b, routed.
  await ga.send([arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  await waitFor('the ARP reply on a', () => ga.poll().find((f) => f.arp?.op === 2));
  await ga.send([toB(0)]);
  await waitFor("the router's ARP request on b", () => gb.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === '10.0.2.2'));
  await gb.send([arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.2', targetMac: ROUTER.b, targetIp: '10.0.2.1', dstMac: ROUTER.b, srcMac: GUEST.b })]);
  await waitFor('the held packet on b', () => gb.poll().some((f) => f.ip?.dst === '10.0.2.2'));
  return { vr, admin: adminClient(vr), ns, hostIface, portIface, ga, gb, gh, dir };
}

/** A frame from a to the guest on b, through the router; `k` tells it apart. */
function toB(k: number, dst = '10.0.2.2'): Uint8Array {
  return udp4({ src: '10.0.1.2', dst, srcPort: 1024 + (k & 0x7fff), dstPort: 7777, payload: 64, srcMac: GUEST.a, dstMac: ROUTER.a });
}

/**
 * What b received so far, read as it comes: the frames a -> b (routed: TTL 63, from the
 * router's MAC) and when each arrived, and when the router first asked for 10.0.2.3.
 */
function watchB(gb: TestGuest): () => { count: number; at: number[]; askedAt: number } {
  let seen = 0;
  let askedAt = -1;
  const at: number[] = [];
  return () => {
    const got = gb.poll();
    for (; seen < got.length; seen++) {
      const f = got[seen];
      if (f.ip?.dst === '10.0.2.2' && f.ip.ttl === 63 && f.srcMac === ROUTER.b && f.l4?.dstPort === 7777) at.push(gb.at[seen]);
      else if (askedAt < 0 && f.arp?.op === 1 && f.arp.targetIp === '10.0.2.3') askedAt = gb.at[seen];
    }
    return { count: at.length, at, askedAt };
  };
}

async function counters(r: Rig): Promise<Record<string, Flat>> {
  const res = await r.admin.call('GET', '/counters');
  if (res.status !== 200) throw new Error(`GET /counters: ${res.status} ${res.text}`);
  return Object.fromEntries(Object.entries(res.json as Record<string, PortStats>).map(([name, p]) => [name, flat(p)]));
}

/**
 * Waits until the uplink's counters stop moving (the PMD has taken what the kernel queued):
 * the same over 300 ms, at most 5 s. With one 100-ms look, the counters of an ARP flood
 * once stopped there with 4,799 of its 22,000 requests neither taken nor dropped: on a
 * busy machine the PMD can be off its CPU for that long.
 */
async function settled(r: Rig): Promise<Record<string, Flat>> {
  let last = await counters(r);
  let still = 0;
  for (let i = 0; i < 50 && still < 3; i++) {
    await new Promise((res) => setTimeout(res, 100));
    const now = await counters(r);
    still = JSON.stringify(now.u) === JSON.stringify(last.u) ? still + 1 : 0;
    last = now;
  }
  return last;
}

/**
 * The uplink's counters (settled, or as they are) and the frames the host has received,
 * read together: again until the host received nothing meanwhile. The router also sends on
 * its own (a neighbour asked for again, a burst for all its held packets at once), and a
 * frame sent between the two reads would count on one side only.
 */
async function withHostRx(r: Rig, hostIface: string, ns: string, settle: boolean): Promise<{ counters: Record<string, Flat>; hostRx: number }> {
  for (let tries = 1; ; tries++) {
    const hostBefore = linkStats(hostIface, ns).rxPackets;
    const now = settle ? await settled(r) : await counters(r);
    const hostRx = linkStats(hostIface, ns).rxPackets;
    if (hostRx === hostBefore || tries === 20) return { counters: now, hostRx };
  }
}

// ---- the test, for each kind of uplink ---------------------------------------------------

for (const kind of ['af_packet', 'af_xdp', 'tap'] as const) {
  t.test(`hostile input on a${kind === 'tap' ? ' TAP' : kind === 'af_xdp' ? 'n AF_XDP' : 'n AF_PACKET'} uplink is counted and contained as on a guest port`, async (t) => {
    checkPrerequisites();
    const started = performance.now();
    const r = await rig(t, kind);
    t.comment(`vrouter ready, a and b routing, in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const { vr, ns, hostIface, portIface, ga, gb, gh } = r;
    const pid = vr.proc.pid!;
    const [dataplanePid] = dataplanePids(pid);
    const send = (name: string, frames: Outgoing[], each = false) => inject(ns, hostIface, framesFile(r.dir, name, frames), each);
    // What the kernel dropped on the way to vrouter, by its own counters: frames a veth
    // could not queue to vrouter's end (rx_dropped there), or a TAP's queue to vrouter
    // could not take (tx_dropped, in the namespace).
    const kernelDrops = () => (kind !== 'tap' ? linkStats(portIface).rxDropped : linkStats(hostIface, ns).txDropped);
    /** Where the frames sent went: taken by vrouter, lost to its full receive ring, dropped by the kernel before it. */
    const fate = (sent: number, u: Flat, kernel: number) => {
      const taken = u.counters.rx_packets;
      const ringFull = u.drops.receive_ring_full ?? 0;
      return { all: taken + ringFull + kernel, text: `${sent} sent: ${taken} taken by vrouter, ${ringFull} lost to its full receive ring (receive_ring_full), ${kernel} dropped by the kernel before it` };
    };
    const random = prng(kind === 'tap' ? 2 : kind === 'af_xdp' ? 3 : 1);
    const mac = () => ['52', '54', ...[0, 0, 0, 0].map(() => (random() & 0xff).toString(16).padStart(2, '0'))].join(':');

    // 1. Runts, truncated headers, lying lengths, a VLAN tag: the same frames from the
    // uplink's host and from the guest on h (vhost-user), counted under the same reasons.
    // The kernel does not send runts from a packet socket (dev_validate_header: shorter
    // than the device's min_header_len, 14 for Ethernet, is EINVAL; CAP_SYS_RAWIO only
    // pads frames between min_header_len and hard_header_len, which Ethernet makes equal).
    const onU = malformed(ROUTER.u, '10.9.0.1', '10.9.0.2', HOST_MAC);
    const onH = malformed(ROUTER.h, '10.8.0.1', '10.8.0.2', GUEST.h);
    let before = await counters(r);
    const injected = await send('malformed', onU.flatMap((c) => Array(REPEAT).fill({ frame: c.frame })), true);
    await gh.send(onH.flatMap((c) => Array(REPEAT).fill(c.frame)));
    let after = await settled(r);
    const results = injected.each!;
    const refused = onU.map((c, k) => ({ what: c.what, result: results[k * REPEAT] })).filter((c) => c.result !== 'ok');
    t.comment(`the kernel refused: ${refused.map((c) => `${c.what}: ${c.result}`).join('; ') || 'nothing'}`);
    const expected: Record<string, number> = {};
    onU.forEach((c, k) => {
      const passed = results.slice(k * REPEAT, (k + 1) * REPEAT).filter((x) => x === 'ok').length;
      if (passed > 0) expected[c.reason] = (expected[c.reason] ?? 0) + passed;
    });
    const onUplink = delta(after.u, before.u);
    const onGuest = delta(after.h, before.h);
    t.same(onUplink.drops, expected, `every malformed frame the kernel let through is counted under its reason on u (${JSON.stringify(onUplink.drops)})`);
    const { frame_too_short: guestRunts, ...guestRest } = onGuest.drops;
    const { frame_too_short: uplinkRunts = 0, ...uplinkRest } = onUplink.drops;
    t.same(uplinkRest, guestRest, 'and under the same reasons as the same frames from a guest on h');
    t.equal(guestRunts, 3 * REPEAT, "a guest's runts are counted as frame_too_short");
    t.equal(uplinkRunts, results.slice(0, 3 * REPEAT).filter((x) => x === 'ok').length, 'so would be any runts the kernel passed on an uplink');
    t.equal(onUplink.counters.tx_packets, 0, 'nothing was answered (the VLAN-tagged echo request included)');

    // 2. Frames over the MTU: plain ones (the host's end takes 9000 bytes) and GSO
    // super-frames (TCP, to the router: local_unhandled when they come whole).
    const big = (payload: number) => tcp4({ src: '10.9.0.2', dst: '10.9.0.1', srcPort: 1000, dstPort: 179, payload, srcMac: HOST_MAC, dstMac: ROUTER.u });
    const atMtu = big(1500 - 40);
    const plainOver = [big(1600 - 54), big(9014 - 54)];
    // The largest is 65,530 bytes: within the veth's gso_max_size (65,536), and more than a
    // 64 KiB receive block holds after its headers (the kernel cuts its tp_snaplen short).
    const gsoPayloads = [4000, 30000, 64000, 65530 - 54];
    const gso = gsoPayloads.map((p) => ({ frame: big(p), gsoSize: 1448 }));
    before = await counters(r);
    const portBefore = linkStats(portIface, kind === 'tap' ? ns : undefined);
    const hostBefore = linkStats(hostIface, ns);
    const over = await send('oversize', Array.from({ length: OVERSIZE_REPEAT }, () => [{ frame: atMtu }, ...plainOver.map((frame) => ({ frame })), ...gso]).flat());
    after = await settled(r);
    const portAfter = linkStats(portIface, kind === 'tap' ? ns : undefined);
    const hostAfter = linkStats(hostIface, ns);
    const oversize = delta(after.u, before.u);
    const segments = gsoPayloads.reduce((s, p) => s + Math.ceil(p / 1448), 0);
    if (kind !== 'tap') {
      t.same(over.failed, { ENOBUFS: plainOver.length * OVERSIZE_REPEAT }, "the veth refuses plain frames over its receiving end's MTU + 18: ENOBUFS to the sender");
      t.equal(portAfter.rxDropped - portBefore.rxDropped, plainOver.length * OVERSIZE_REPEAT, `and counts them as dropped on ${portIface}: vrouter never sees them`);
      // AF_XDP: the socket drops a frame longer than its chunk itself (no descriptor); vrouter
      // finds it in the socket's counts.
      const whole = kind === 'af_xdp' ? 'too long for an AF_XDP chunk, dropped by the socket and counted' : 'frame_too_long';
      t.same(oversize.drops, { frame_too_long: gsoPayloads.length * OVERSIZE_REPEAT, 'routing.local_unhandled': OVERSIZE_REPEAT }, `GSO super-frames cross the veth whole: ${whole} as frame_too_long; the ${atMtu.length}-byte frame at the MTU is the router's (${JSON.stringify(oversize.drops)})`);
    } else {
      t.same(over.failed, {}, 'the host sends every frame into its TAP (MTU 9000)');
      t.same(oversize.drops, { frame_too_long: plainOver.length * OVERSIZE_REPEAT, 'routing.local_unhandled': OVERSIZE_REPEAT * (1 + segments) }, `plain frames over the port's MTU: frame_too_long; GSO super-frames reach vrouter cut into ${segments} segments of 1448 bytes (a TAP without offloads), each the router's (${JSON.stringify(oversize.drops)})`);
    }
    t.equal(hostAfter.txPackets - hostBefore.txPackets, oversize.counters.rx_packets + sum(oversize.drops, 'frame_too_long'), 'vrouter took all the kernel passed on');

    // 3. The PMD falls behind (its process stopped while the host sends 5,000 full-size
    // frames): what its receive ring (about 2,500 such frames; AF_XDP: 2,048 chunks) or the
    // TAP's queue cannot hold is lost, and counted: receive_ring_full, or the TAP's own
    // tx_dropped. The count of an AF_PACKET ring comes with the next block the kernel hands
    // over: one frame more.
    const full = Array.from({ length: 5000 }, (_, k) => ({ frame: tcp4({ src: '10.9.0.2', dst: '10.9.0.1', srcPort: 1000, dstPort: 179, seq: k, payload: 1500 - 40, srcMac: HOST_MAC, dstMac: ROUTER.u }) }));
    before = await counters(r);
    const kernelOverrunBefore = kernelDrops();
    const overrun = await injectWhileStopped(ns, hostIface, framesFile(r.dir, 'overrun', full), dataplanePid);
    await settled(r);
    await send('one-more', [{ frame: atMtu }]);
    after = await settled(r);
    const behind = delta(after.u, before.u);
    const behindFate = fate(overrun.sent + 1, behind, kernelDrops() - kernelOverrunBefore);
    t.equal(overrun.sent, full.length, `the host sent ${overrun.sent} frames in ${(overrun.seconds * 1000).toFixed(0)} ms, vrouter's data plane stopped`);
    t.equal(behindFate.all, overrun.sent + 1, `every one is accounted for: ${behindFate.text}`);
    if (kind !== 'tap') t.ok(sum(behind.drops, 'receive_ring_full') > 0, 'the ring overflowed, and vrouter counted what it lost: receive_ring_full');
    else t.ok(kernelDrops() - kernelOverrunBefore > 0, "the TAP's queue overflowed, and the kernel counted what it lost (tx_dropped)");
    t.same(Object.keys(behind.drops).filter((k) => k !== 'receive_ring_full' && k !== 'routing.local_unhandled'), [], `what vrouter took is the router's (${JSON.stringify(behind.drops)})`);

    // 4. Packets to 100 absent hosts on u's subnet fill u's share of the queue of packets
    // held for resolution (a quarter of 64, one queue per PMD for every interface): a new
    // host on b must still be asked for.
    before = await counters(r);
    await send('absent', Array.from({ length: 100 }, (_, k) => ({ frame: udp4({ src: '10.9.0.2', dst: `10.9.200.${k + 1}`, srcPort: 1, dstPort: 2, srcMac: HOST_MAC, dstMac: ROUTER.u }) })));
    after = await settled(r);
    const absent = delta(after.u, before.u);
    t.equal(absent.counters['routing.held_for_resolution'], 16, `16 held while their next hops are asked for (${JSON.stringify(absent.drops)})`);
    const atB = watchB(gb);
    await ga.send([toB(0, '10.0.2.3')]);
    await waitFor('an ARP request for 10.0.2.3 on b', () => atB().askedAt >= 0 || undefined, 3000).catch(() => undefined);
    t.ok(atB().askedAt >= 0, "with u's share of the queue full, a packet to a new host on b still has the router ask for it on b");

    // 5. UDP flood to the router's MAC, as fast as the host sends: half to the router's
    // address (port unreachable), a quarter to unrouted networks (no route), a quarter to
    // absent hosts on u's own subnet (resolution). Meanwhile a sends to b.
    const flood: Outgoing[] = [];
    const template = udp4({ src: '10.9.0.2', dst: '10.9.0.1', srcPort: 1, dstPort: 1, payload: 18, srcMac: HOST_MAC, dstMac: ROUTER.u });
    for (let k = 0; k < FLOOD; k++) {
      const f = template.slice();
      const dv = new DataView(f.buffer);
      const part = k & 3;
      // sources in 10.9.0.0/17; absent hosts in 10.9.128.0/17 (its broadcast address left out)
      dv.setUint32(26, (0x0a090002 + (random() % 0x7ffd)) >>> 0);
      dv.setUint32(30, part < 2 ? 0x0a090001 : part === 2 ? (0xc6120000 | (random() & 0x1ffff)) >>> 0 : (0x0a098000 + (random() % 0x7fff)) >>> 0);
      dv.setUint16(34, random() & 0xffff);
      dv.setUint16(36, random() & 0xffff);
      dv.setUint16(40, 0); // no UDP checksum (RFC 768: optional over IPv4)
      dv.setUint16(24, 0);
      dv.setUint16(24, ipChecksum(f, 14));
      flood.push({ frame: f });
    }
    const floodFile = framesFile(r.dir, 'flood', flood);
    const toB16 = Array.from({ length: 16 }, (_, k) => toB(k));
    const floodBefore = await withHostRx(r, hostIface, ns, false);
    before = floodBefore.counters;
    const kernelFloodBefore = kernelDrops();
    const neighboursBefore = await neighbours(r);
    const arrivedBefore = atB().count;
    const flooding = inject(ns, hostIface, floodFile);
    let floodDone = false;
    void flooding.then(() => (floodDone = true), () => (floodDone = true));
    const floodStart = performance.now();
    let offered = 0;
    while (!floodDone) {
      // At most 128 frames on their way (a window): more could outrun b's 200 receive
      // buffers between two reads, a loss of the test's own making.
      if (offered - (atB().count - arrivedBefore) < 128) offered += ga.offer(toB16);
      atB();
      await new Promise((res) => setTimeout(res, 1));
    }
    const floodMs = performance.now() - floodStart;
    const sent = await flooding;
    await waitFor(`the ${offered} frames a -> b`, () => atB().count - arrivedBefore >= offered || undefined, 5000).catch(() => undefined);
    const arrived = atB();
    const floodAfter = await withHostRx(r, hostIface, ns, true);
    after = floodAfter.counters;
    const floodDelta = delta(after.u, before.u);
    const { drops: d, counters: c } = floodDelta;
    const taken = c.rx_packets;
    t.equal(sent.sent, FLOOD, `the host sent ${FLOOD} frames in ${sent.seconds.toFixed(2)} s: ${Math.round(FLOOD / sent.seconds)} frames/s`);
    const floodFate = fate(sent.sent, floodDelta, kernelDrops() - kernelFloodBefore);
    t.equal(floodFate.all, sent.sent, `every frame of the flood is accounted for: ${floodFate.text}`);
    // A held packet whose next hop never answered is counted held, then dropped: once here.
    const resolution = sum(d, 'routing.neighbour_queue_full', 'routing.neighbour_table_full', 'routing.neighbour_unreachable') + c['routing.held_for_resolution'] - (c['routing.held_dropped'] ?? 0);
    t.equal(sum(d, 'routing.local_unhandled', 'routing.no_route') + resolution, taken, `each frame vrouter took is counted once: for the router ${d['routing.local_unhandled']}, no route ${d['routing.no_route']}, to absent hosts ${resolution}`);
    const expectedReasons = ['receive_ring_full', 'routing.local_unhandled', 'routing.no_route', 'routing.neighbour_queue_full', 'routing.neighbour_table_full', 'routing.neighbour_unreachable'];
    t.same(Object.keys(d).filter((k) => !expectedReasons.includes(k)), [], `no other reason (${JSON.stringify(d)})`);
    const icmpCandidates = sum(d, 'routing.local_unhandled', 'routing.no_route', 'routing.neighbour_unreachable');
    const icmpAnswered = c['routing.icmp_errors_sent'] + c['routing.icmp_errors_rate_limited'] + (c['routing.icmp_errors_no_room'] ?? 0);
    t.equal(icmpAnswered, icmpCandidates, `every packet that called for an ICMP error got one or was counted as rate-limited or as without room (${c['routing.icmp_errors_no_room'] ?? 0})`);
    // vrouter took the flood while the host sent it, and for a moment after (its backlog).
    const floodS = floodMs / 1000 + 0.5;
    t.ok(c['routing.icmp_errors_sent'] <= ICMP_BURST + ICMP_RATE * floodS, `ICMP errors within icmpRate ${ICMP_RATE}/s, burst ${ICMP_BURST} (${floodS.toFixed(2)} s): ${c['routing.icmp_errors_sent']} sent, ${c['routing.icmp_errors_rate_limited']} held back`);
    t.ok(c['routing.arp_requests_sent'] <= 100 + 1000 * floodS, `ARP requests for absent hosts within the solicitation limit (1000/s, burst 100): ${c['routing.arp_requests_sent']}`);
    t.equal(c.tx_packets, c['routing.icmp_errors_sent'] + c['routing.arp_requests_sent'], 'vrouter sent on u those errors and requests, nothing else');
    t.equal(floodAfter.hostRx - floodBefore.hostRx, c.tx_packets, `and the host received them all (${floodAfter.hostRx - floodBefore.hostRx} of ${c.tx_packets})`);
    const got = arrived.count - arrivedBefore;
    const times = arrived.at.slice(arrivedBefore);
    const duringFlood = times.filter((x) => x < floodStart + floodMs).length;
    const longestGap = times.reduce((m, x, k) => (k === 0 ? m : Math.max(m, x - times[k - 1])), 0);
    t.comment(`a -> b during the flood (${floodMs.toFixed(0)} ms): ${offered} sent, ${got} arrived, ${duringFlood} of them while it lasted (${Math.round(duringFlood / (floodMs / 1000))} frames/s); the longest pause between two at b ${longestGap.toFixed(0)} ms`);
    t.ok(duringFlood > 0, 'a -> b flowed during the flood');
    t.equal(got, offered, 'a -> b lost nothing');

    // The packets held for absent hosts are asked for again every second and then dropped,
    // with their errors: gone before the next flood, whose frames are counted alone.
    await waitFor('the packets held for absent hosts gone', async () => {
      const u = (await counters(r)).u.counters;
      return u['routing.held_for_resolution'] === (u['routing.held_released'] ?? 0) + (u['routing.held_dropped'] ?? 0) || undefined;
    }, 10_000);

    // 6. ARP flood: requests for the router from 20,000 senders in u's subnet, and 2,000
    // from outside it (one in 11). Each request from the subnet is answered, once.
    const arpFlood: Outgoing[] = [];
    let inside = 0;
    for (let k = 0; k < ARP_FLOOD + ARP_FLOOD / 10; k++) {
      const m = mac();
      const outside = k % 11 === 10;
      const n = outside ? k : inside++;
      const senderIp = outside ? `10.7.${(n >> 8) & 0xff}.${n & 0xff}` : `10.9.${1 + (n >> 8)}.${n & 0xff}`;
      arpFlood.push({ frame: arp({ op: 'request', senderMac: m, senderIp, targetIp: '10.9.0.1', srcMac: m }) });
    }
    const arpBefore = await withHostRx(r, hostIface, ns, false);
    before = arpBefore.counters;
    const kernelArpBefore = kernelDrops();
    const arpSent = await send('arp-flood', arpFlood);
    const arpAfter = await withHostRx(r, hostIface, ns, true);
    after = arpAfter.counters;
    const arps = delta(after.u, before.u);
    const answered = arps.counters['routing.arp_replies_sent'];
    const arpBad = sum(arps.drops, 'routing.arp_bad');
    t.equal(arpSent.sent, arpFlood.length, `the host sent ${arpSent.sent} ARP requests in ${arpSent.seconds.toFixed(2)} s`);
    const arpFate = fate(arpSent.sent, arps, kernelDrops() - kernelArpBefore);
    t.equal(arpFate.all, arpSent.sent, `every request is accounted for: ${arpFate.text}`);
    t.same(Object.keys(arps.drops).filter((k) => k !== 'routing.arp_bad' && k !== 'receive_ring_full'), [], `the only drops: arp_bad, and a full ring (${JSON.stringify(arps.drops)})`);
    t.equal(answered + arpBad, arps.counters.rx_packets, `each request vrouter took was answered (${answered}) or counted as arp_bad (${arpBad})`);
    // Exact but for the requests lost before vrouter took them (a full ring, the kernel's drops).
    const lost = arpSent.sent - arps.counters.rx_packets;
    const outside = arpFlood.length - inside;
    t.ok(answered <= inside && answered >= inside - lost && arpBad <= outside && arpBad >= outside - lost, `only those from u's subnet were answered: ${answered} of ${inside}, ${arpBad} of ${outside} refused, ${lost} lost before`);
    t.equal(arps.counters.tx_packets, answered, 'one reply per request, nothing more');
    t.equal(arpAfter.hostRx - arpBefore.hostRx, arps.counters.tx_packets, 'and the host received every reply');

    // The neighbour table after both floods: u within its share, the others' entries kept.
    const table = await neighbours(r);
    const held = table.filter((n) => n.interface === 'u').length;
    t.ok(held <= SHARE, `u holds ${held} neighbour entries, within its share (${SHARE} of ${NEIGHBOUR_LIMIT})`);
    for (const [address, port] of [['10.0.1.2', 'a'], ['10.0.2.2', 'b']]) {
      t.ok(table.some((n) => n.address === address && n.interface === port && n.state === 'reachable'), `${port}'s neighbour ${address} stays, reachable`);
    }
    const evicted = neighboursBefore.filter((n) => n.interface !== 'u' && !table.some((m) => m.address === n.address && m.interface === n.interface));
    t.same(evicted, [], 'no neighbour of another interface was evicted');

    // 7. After it all: still the same vrouter and data plane, still routing.
    const before2 = atB().count;
    await ga.send(Array.from({ length: 64 }, (_, k) => toB(k)));
    await waitFor('64 frames a -> b after the floods', () => atB().count - before2 >= 64 || undefined, 5000);
    t.pass('a -> b still routed after the floods');
    t.ok(vr.alive(), 'vrouter runs');
    t.equal(vr.proc.pid, pid, 'the same process');
    const dp = await r.admin.call('GET', '/dataplane');
    t.equal(dp.json.deaths, 0, 'GET /dataplane: no data-plane death');
    t.equal(dp.json.pid, dataplanePid, 'the same data-plane process');
    t.notMatch(vr.stderr(), /pmd\d+ (crashed|died)|died while serving/, 'no PMD died');
    const total = await counters(r);
    t.equal(Object.values(total).reduce((s, p) => s + (p.drops['routing.plugin_error'] ?? 0), 0), 0, 'the router never threw');
    t.comment(`${kind}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });
}

function ipChecksum(f: Uint8Array, at: number): number {
  let s = 0;
  for (let k = 0; k < 20; k += 2) s += (f[at + k] << 8) | f[at + k + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

async function neighbours(r: Rig): Promise<{ address: string; interface: string; state: string }[]> {
  const res = await r.admin.call('GET', '/neighbours');
  if (res.status !== 200) throw new Error(`GET /neighbours: ${res.status} ${res.text}`);
  return res.json;
}
