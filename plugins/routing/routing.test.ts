// The routing stage on crafted frames: ARP and NDP for the router, forwarding with TTL and
// checksums, next-hop resolution with held packets, ICMP errors, path MTU, fragmentation,
// ECMP, bridges with router addresses, and malformed headers.
import t from 'tap';
import routing, { clock } from './index.ts';
import type { RoutingConfig } from './config.ts';
import { STALE } from './neighbours.ts';
import { Batch } from '../../src/dataplane/batch.ts';
import { OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, PacketPool } from '../../src/dataplane/packet-pool.ts';
import { PluginHarness, type HarnessPort, type Outcome } from '../../src/pipeline/testing.ts';
import { arp, icmp4, icmp6, neighbourAdvertisement, neighbourSolicitation, parseFrame, routerSolicitation, tcp4, tcp6, udp4, udp6 } from '../../test/support/frames.ts';

// Some MACs' third bytes are 0x80 or more: their low 32 bits are no small integer as a u32.
const MAC = { a: '02:00:00:00:0a:01', b: '02:00:c0:00:0b:01', br: '02:00:00:00:0c:01' };
const GUEST = { a: '52:54:a0:00:00:0a', b: '52:54:b0:00:00:0b', c: '52:54:00:00:00:0c', d: '52:54:00:00:00:0d' };

const ports: HarnessPort[] = [
  { name: 'a', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: MAC.a, mtu: 1500 } },
  { name: 'b', settings: { addresses: ['10.0.2.1/24', '2001:db8:2::1/64'], routerMac: MAC.b, mtu: 9000 } },
  { name: 'c', bridge: 'br0', settings: { mtu: 1500 } },
  { name: 'd', bridge: 'br0', settings: { mtu: 1500 } },
  { name: 'l2', settings: { mtu: 1500 } },
];
const bridgeSettings = { br0: { addresses: ['10.0.3.1/24'], routerMac: MAC.br, mtu: 1500 } };

let now = 1_000_000;
clock.now = () => now;

async function router(config: Record<string, unknown> = {}) {
  return PluginHarness.create(routing, { ports, bridgeSettings, config });
}
/** One burst through the router; its periodic router advertisements left out. */
const run = (h: PluginHarness, port: string, frames: Uint8Array[]) => withoutAdvertisements(h.run(port, frames));
/** What happened to each packet; router advertisements (periodic, emitted by PMD 0) left out. */
const summary = (out: Outcome[]) => withoutAdvertisements(out).map((o) => (o.to === 'drop' ? `drop:${o.reason}` : o.to));
function withoutAdvertisements(out: Outcome[]): Outcome[] {
  return out.filter((o) => o.received || parseFrame(o.frame).ndp?.type !== 134);
}

/** Teaches the router b's guest (10.0.2.2) with an ARP reply. */
function learnB(h: PluginHarness) {
  return run(h, 'b', [arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.2', targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: GUEST.b })]);
}

t.test('ARP for the router is answered, others are not', async (t) => {
  const h = await router();
  const out = run(h, 'a', [
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a }),
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.99', srcMac: GUEST.a }),
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '192.0.2.1', targetIp: '10.0.1.1', srcMac: GUEST.a }),
  ]);
  t.same(summary(out), ['a', 'drop:arp_not_for_router', 'drop:arp_bad']);
  const reply = parseFrame(out[0].frame);
  t.same([reply.dstMac, reply.srcMac, reply.arp?.op, reply.arp?.senderMac, reply.arp?.senderIp, reply.arp?.targetMac, reply.arp?.targetIp], [GUEST.a, MAC.a, 2, MAC.a, '10.0.1.1', GUEST.a, '10.0.1.2']);
  const onBridge = run(h, 'c', [arp({ op: 'request', senderMac: GUEST.c, senderIp: '10.0.3.2', targetIp: '10.0.3.3', srcMac: GUEST.c })]);
  t.same(summary(onBridge), ['undecided'], 'on a bridge, ARP between guests is left to the bridge');
  const l2 = run(h, 'l2', [arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.9.2', targetIp: '10.0.9.1', srcMac: GUEST.a })]);
  t.same(summary(l2), ['undecided'], 'a port without addresses is not routed');
  t.equal(h.counts('a').arp_replies_sent, 1);
});

t.test('ARP: a sender routed straight out of the port (a route with a port, no gateway) is a neighbour; a probe from 0.0.0.0 is answered; a group sender MAC is believed nowhere', async (t) => {
  const h = await router({ routes: [{ prefix: '192.0.2.0/24', port: 'b' }] });
  const asked = run(h, 'b', [arp({ op: 'request', senderMac: GUEST.c, senderIp: '192.0.2.5', targetIp: '10.0.2.1', srcMac: GUEST.c })]);
  t.same(summary(asked), ['b'], 'a request from 192.0.2.5, on the link by the route: answered');
  const toIt = run(h, 'a', [udp4({ src: '10.0.1.2', dst: '192.0.2.5', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(summary(toIt), ['b'], 'and its sender known: a packet to it goes straight out');
  t.equal(parseFrame(toIt[0].frame).dstMac, GUEST.c, 'to its MAC');
  const outside = run(h, 'b', [arp({ op: 'request', senderMac: GUEST.c, senderIp: '198.51.100.5', targetIp: '10.0.2.1', srcMac: GUEST.c })]);
  t.same(summary(outside), ['drop:arp_bad'], 'a sender neither in a subnet of the port nor routed straight out of it: arp_bad');

  const probe = run(h, 'a', [arp({ op: 'request', senderMac: GUEST.a, senderIp: '0.0.0.0', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  t.same(summary(probe), ['a'], 'an RFC 5227 probe for the router\'s address: answered');
  const answer = parseFrame(probe[0].frame);
  t.same([answer.dstMac, answer.arp?.op, answer.arp?.senderIp, answer.arp?.senderMac, answer.arp?.targetIp, answer.arp?.targetMac], [GUEST.a, 2, '10.0.1.1', MAC.a, '0.0.0.0', GUEST.a], 'the address is taken, told to the prober');

  learnB(h);
  const group = '01:00:5e:00:00:01';
  run(h, 'b', [arp({ op: 'request', senderMac: group, senderIp: '10.0.2.2', targetIp: '10.0.2.2', srcMac: GUEST.b })]);
  run(h, 'b', [arp({ op: 'request', senderMac: group, senderIp: '10.0.2.2', targetIp: '10.0.2.1', srcMac: GUEST.b })]);
  const after = run(h, 'a', [udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.equal(parseFrame(after[0].frame).dstMac, GUEST.b, 'a gratuitous ARP or a request naming a group MAC as its sender changes no neighbour');
});

t.test('forwarding: resolution, held packets, TTL and checksum', async (t) => {
  const h = await router();
  const ping = icmp4({ src: '10.0.1.2', dst: '10.0.2.2', type: 8, id: 7, seq: 1, payload: 56, srcMac: GUEST.a, dstMac: MAC.a, ttl: 64 });
  const first = run(h, 'a', [ping]);
  t.same(summary(first), ['consumed', 'b'], 'the packet is held, and an ARP request goes out of b');
  const request = parseFrame(first[1].frame);
  t.same([request.dstMac, request.srcMac, request.arp?.op, request.arp?.senderIp, request.arp?.targetIp], ['ff:ff:ff:ff:ff:ff', MAC.b, 1, '10.0.2.1', '10.0.2.2']);
  const answer = learnB(h);
  t.same(summary(answer), ['consumed', 'b'], 'the ARP reply releases the held packet');
  t.same([answer[1].from, answer[1].local], ['a', false], "in a batch of a, the port it came from, as a's traffic: the stages after routing judge it");
  const released = parseFrame(answer[1].frame);
  t.same([released.dstMac, released.srcMac, released.ip?.ttl, released.ip?.headerChecksumOk, released.l4?.checksumOk], [GUEST.b, MAC.b, 63, true, true]);
  const next = run(h, 'a', [ping]);
  t.same(summary(next), ['b'], 'then forwarded at once');
  const f = parseFrame(next[0].frame);
  t.same([f.dstMac, f.srcMac, f.ip?.ttl, f.ip?.headerChecksumOk, f.ip?.src, f.ip?.dst], [GUEST.b, MAC.b, 63, true, '10.0.1.2', '10.0.2.2']);
  t.match(h.counts('a'), { routed: 2, held_for_resolution: 1 });
  t.equal(h.counts('a').held_released, 1, 'counted on the port the packet came from');
});

t.test('ICMP: echo to the router, time exceeded, no route, port unreachable', async (t) => {
  const h = await router({ routes: [{ prefix: '198.51.100.0/24', blackhole: true }] });
  const out = run(h, 'a', [
    icmp4({ src: '10.0.1.2', dst: '10.0.2.1', type: 8, id: 1, seq: 2, payload: 32, srcMac: GUEST.a, dstMac: MAC.a }),
    udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 33434, dstPort: 33434, ttl: 1, srcMac: GUEST.a, dstMac: MAC.a }),
    udp4({ src: '10.0.1.2', dst: '192.0.2.9', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }),
    udp4({ src: '10.0.1.2', dst: '10.0.1.1', srcPort: 1, dstPort: 53, srcMac: GUEST.a, dstMac: MAC.a }),
    udp4({ src: '10.0.1.2', dst: '198.51.100.1', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }),
  ]);
  t.same(summary(out), ['a', 'drop:ttl_exceeded', 'drop:no_route', 'drop:local_unhandled', 'drop:blackhole', 'a', 'a', 'a']);
  const echo = parseFrame(out[0].frame);
  t.same([echo.ip?.src, echo.ip?.dst, echo.l4?.type, echo.l4?.checksumOk, echo.ip?.headerChecksumOk, echo.dstMac], ['10.0.2.1', '10.0.1.2', 0, true, true, GUEST.a]);
  const errors = out.slice(5).map((o) => parseFrame(o.frame));
  t.same(errors.map((e) => [e.l4?.type, e.l4?.code, e.ip?.src, e.ip?.dst, e.l4?.checksumOk, e.dstMac]), [
    [11, 0, '10.0.1.1', '10.0.1.2', true, GUEST.a],
    [3, 0, '10.0.1.1', '10.0.1.2', true, GUEST.a],
    [3, 3, '10.0.1.1', '10.0.1.2', true, GUEST.a],
  ]);
  t.equal(h.counts('a').icmp_errors_sent, 3);
  const other = run(h, 'a', [
    udp4({ src: '10.0.1.2', dst: '10.0.2.1', srcPort: 1, dstPort: 53, srcMac: GUEST.a, dstMac: MAC.a }),
    udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::1', srcPort: 1, dstPort: 53, srcMac: GUEST.a, dstMac: MAC.a }),
  ]);
  t.same(other.filter((o) => o.to === 'a').map((o) => [parseFrame(o.frame).l4?.type, parseFrame(o.frame).ip?.src, parseFrame(o.frame).l4?.checksumOk]), [[3, '10.0.2.1', true], [1, '2001:db8:2::1', true]],
    "port unreachable for the router's address on another port comes from that address (RFC 4443 2.2 (a); Linux for IPv4 too)");
  const broadcast = run(h, 'a', [udp4({ src: '10.0.1.2', dst: '10.0.2.255', srcPort: 1, dstPort: 2, ttl: 1, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(summary(broadcast), ['drop:not_routable'], "to b's broadcast address with TTL 1: not forwarded, and no time exceeded about it (RFC 1812 4.3.2.7)");
});

t.test('ICMP errors, next-hop requests and held packets are limited per ingress port: a flood from one port leaves the others theirs', async (t) => {
  const h = await router({ icmpRate: 1, icmpBurst: 5 });
  const expiring = (port: 'a' | 'b', k: number) =>
    udp4({ src: port === 'a' ? '10.0.1.2' : '10.0.2.2', dst: port === 'a' ? '10.0.2.2' : '10.0.1.2', srcPort: 1000 + k, dstPort: 33434, ttl: 1, srcMac: GUEST[port], dstMac: MAC[port] });
  const errorsOut = (out: Outcome[], port: string) => out.filter((o) => !o.received && o.to === port && parseFrame(o.frame).l4?.type === 11).length;
  const flood = run(h, 'a', Array.from({ length: 20 }, (_, k) => expiring('a', k)));
  t.equal(errorsOut(flood, 'a'), 5, 'port a gets its burst of errors');
  t.equal(h.counts('a').icmp_errors_rate_limited, 15, 'the rest of its errors are limited');
  t.equal(errorsOut(run(h, 'b', [expiring('b', 0)]), 'b'), 1, 'port b still gets its error');
  t.notOk(h.counts('b').icmp_errors_rate_limited, 'none of it limited');

  // Next hops on b asked for by a's guest, by the hundred (absent hosts), then one by the bridge's.
  const absent = (k: number) => udp4({ src: '10.0.1.2', dst: `10.0.2.${100 + k}`, srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  const requests = (out: Outcome[]) => out.filter((o) => !o.received && o.to === 'b' && parseFrame(o.frame).arp?.op === 1).map((o) => parseFrame(o.frame).arp?.targetIp);
  let asked = 0;
  for (let from = 0; from < 150; from += 30) asked += requests(run(h, 'a', Array.from({ length: 30 }, (_, k) => absent(from + k)))).length;
  t.equal(asked, 100, "a's requests stop at their burst");
  t.match(h.counts('a'), { held_for_resolution: 16, neighbour_queue_full: 134 }, "a's packets hold a quarter of the queue (64)");
  const fromBridge = udp4({ src: '10.0.3.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, srcMac: GUEST.c, dstMac: MAC.br });
  const bridged = run(h, 'c', [fromBridge]);
  t.same(requests(bridged), ['10.0.2.2'], "the bridge's guest's next hop is still asked for");
  t.equal(bridged[0].to, 'consumed', 'and its packet held until it answers');
  const released = learnB(h);
  t.ok(released.some((o) => !o.received && o.to === 'b' && parseFrame(o.frame).ip?.src === '10.0.3.2'), 'then sent');
});

t.test('"fragmentation needed" and "packet too big" have buckets of their own: traceroutes through a port do not starve them', async (t) => {
  const h = await router({ icmpRate: 1, icmpBurst: 5 });
  const expiring = (k: number) => udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 1000 + k, dstPort: 33434, ttl: 1, srcMac: GUEST.b, dstMac: MAC.b });
  run(h, 'b', Array.from({ length: 20 }, (_, k) => expiring(k)));
  t.equal(h.counts('b').icmp_errors_rate_limited, 15, "b's errors spent");
  const big4 = udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 1, dstPort: 2, payload: 3000, df: true, srcMac: GUEST.b, dstMac: MAC.b });
  const big6 = udp6({ src: '2001:db8:2::2', dst: '2001:db8:1::2', srcPort: 1, dstPort: 2, payload: 3000, srcMac: GUEST.b, dstMac: MAC.b });
  const errors = run(h, 'b', [big4, big6]).filter((o) => !o.received && o.to === 'b').map((o) => parseFrame(o.frame).l4).map((l4) => [l4?.type, l4?.code]);
  t.same(errors, [[3, 4], [2, 0]], 'fragmentation needed and packet too big still go back to b');
  t.equal(h.counts('b').icmp_errors_rate_limited, 15, 'none of them limited');
});

t.test('path MTU: fragmentation needed with DF, fragments without', async (t) => {
  const h = await router();
  run(h, 'a', [arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  const big = (df: boolean) => udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 5, dstPort: 6, payload: 3972, df, srcMac: GUEST.b, dstMac: MAC.b, id: 0x1234 });
  const out = run(h, 'b', [big(true), big(false)]);
  t.same(summary(out), ['drop:mtu_exceeded', 'a', 'b', 'a', 'a']);
  const needed = parseFrame(out[2].frame);
  t.same([needed.l4?.type, needed.l4?.code, needed.l4?.rest, needed.ip?.dst], [3, 4, 1500, '10.0.2.2'], 'frag needed carries the next-hop MTU');
  const frags = [out[1], out[3], out[4]].map((o) => parseFrame(o.frame));
  t.same(frags.map((f) => [f.ip?.totalLength, f.ip?.fragOffset, f.ip?.mf, f.ip?.id, f.ip?.headerChecksumOk, f.ip?.ttl]), [
    [1500, 0, true, 0x1234, true, 63],
    [1500, 1480, true, 0x1234, true, 63],
    [1040, 2960, false, 0x1234, true, 63],
  ]);
  t.equal(h.counts('b').fragments_created, 3);
  t.same([out[1], out[3], out[4]].map((o) => o.local), [false, false, false], "the fragments are b's traffic, not the router's: the stages after routing judge them");
  t.same([out[2].local], [true], 'the ICMP error is the router\'s own');
});

t.test('an ICMP error with no room left in its burst is counted as such', async (t) => {
  const h = await router({ icmpRate: 1000, icmpBurst: 100 });
  run(h, 'a', [arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  // Sixteen packets cut in three fragments each (two added to the burst for each) fill it;
  // the sixteen after them call for a time exceeded each, which finds no room.
  const big = (k: number) => udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 5, dstPort: 6, payload: 3972, df: false, srcMac: GUEST.b, dstMac: MAC.b, id: k });
  const expiring = (k: number) => udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 1000 + k, dstPort: 33434, ttl: 1, srcMac: GUEST.b, dstMac: MAC.b });
  const out = run(h, 'b', [...Array.from({ length: 16 }, (_, k) => big(k)), ...Array.from({ length: 16 }, (_, k) => expiring(k))]);
  t.equal(out.filter((o) => o.to === 'a').length, 48, 'every fragment goes out');
  t.equal(out.filter((o) => o.to === 'drop' && o.reason === 'ttl_exceeded').length, 16, 'the expired ones are dropped');
  const counts = h.counts('b');
  t.same([counts.icmp_errors_sent ?? 0, counts.icmp_errors_rate_limited ?? 0, counts.icmp_errors_no_room], [0, 0, 16], 'their errors: none sent, none rate-limited, 16 without room');
});

t.test('a router advertisement carries the prefixes that fit the port\'s MTU, however many addresses it has', async (t) => {
  const many = Array.from({ length: 300 }, (_, k) => `2001:db8:${(k + 16).toString(16)}::1/64`);
  const h = await PluginHarness.create(routing, { ports: [{ name: 'a', settings: { addresses: ['10.0.1.1/24', ...many], routerMac: MAC.a, mtu: 1500 } }], bridgeSettings: {}, config: {} });
  const ras = h.run('a', []).map((o) => parseFrame(o.frame)).filter((f) => f.ndp?.type === 134);
  t.equal(ras.length, 1, 'the periodic advertisement');
  const [ra] = ras;
  t.ok(ra.length <= 14 + 1500, `within the port's MTU (${ra.length} bytes)`);
  t.equal(ra.ndp?.prefixes?.length, 44, 'as many prefixes as fit 1500 bytes');
  t.same(ra.ndp?.prefixes?.slice(0, 2).map((p) => p.prefix), ['2001:db8:10::', '2001:db8:11::'], 'the first ones');
  t.equal(ra.l4?.checksumOk, true);
});

t.test('an entry resolved with no port (another PMD reused its slot meanwhile) is still being resolved, not flooded', async (t) => {
  const h = await router();
  const toB5 = udp4({ src: '10.0.1.2', dst: '10.0.2.5', srcPort: 1, dstPort: 2, payload: 20, srcMac: GUEST.a, dstMac: MAC.a });
  t.same(summary(run(h, 'a', [toB5])), ['consumed', 'b'], 'held; asked for on b');
  const r = h.state as unknown as { byPort: Int32Array; neighbours: { find(...a: number[]): number; setState(slot: number, state: number): void; clock: Float64Array; foundPort: number } };
  const slot = r.neighbours.find(r.byPort[1], 4, (10 << 24) | (2 << 8) | 5, 0, 0, 0);
  t.ok(slot >= 0 && r.neighbours.foundPort < 0, 'an incomplete entry, no port yet');
  // What a PMD's setState() on a slot another PMD has just claimed for 10.0.2.5 leaves.
  r.neighbours.clock[0] = now;
  r.neighbours.setState(slot, STALE);
  const atOnce = run(h, 'a', [toB5]);
  t.same(summary(atOnce), ['consumed'], 'held as while it is being resolved: no flood, no host unreachable');
  now += 2000;
  const out = run(h, 'a', [toB5]);
  t.notOk(out.some((o) => o.to === 'flood' || parseFrame(o.frame).dstMac === '00:00:00:00:00:00'), `not flooded with no MAC: ${JSON.stringify(summary(out))}`);
  t.ok(out.some((o) => !o.received && o.to === 'b' && parseFrame(o.frame).arp?.op === 1 && parseFrame(o.frame).arp?.targetIp === '10.0.2.5'), 'asked for again on b');
});

t.test('periodic router advertisements go out when no routed port sends anything', async (t) => {
  const h = await router();
  const rounds = () => {
    for (let k = 0; k < 100; k++) h.betweenBursts();
    return h.runWanted().map((o) => parseFrame(o.frame)).filter((f) => f.ndp?.type === 134).map((f) => f.srcMac).sort();
  };
  t.same(rounds(), [MAC.a, MAC.b], 'the first, on both ports with IPv6 addresses');
  t.same(rounds(), [], 'none before the interval');
  now += 30_000 + 1;
  t.same(rounds(), [MAC.a, MAC.b], 'and again after it, with no burst in between');
  // A port with no frontend gets none (it would be dropped as port_down), then one as it comes up.
  h.setPortUp('a', false);
  now += 30_000 + 1;
  t.same(rounds(), [MAC.b], 'none to a port that is down');
  h.setPortUp('a', true);
  t.same(rounds(), [MAC.a], 'one as soon as it is up');
});

t.test("port security: a frame to the router from another source MAC than the port's is dropped, not routed or answered", async (t) => {
  const secured = ports.map((p) => (p.name === 'a' ? { ...p, settings: { ...p.settings, mac: GUEST.a, portSecurity: true } } : p));
  const h = await PluginHarness.create(routing, { ports: secured, bridgeSettings, config: {} });
  learnB(h);
  const ping = (srcMac: string) => icmp4({ src: '10.0.1.2', dst: '10.0.2.2', type: 8, id: 7, seq: 1, payload: 8, srcMac, dstMac: MAC.a });
  const forged = '52:54:f0:00:00:99';
  t.same(summary(run(h, 'a', [ping(GUEST.a)])), ['b'], 'from its own MAC: routed');
  t.same(summary(run(h, 'a', [ping(forged)])), ['drop:source_mac_denied'], 'from another: dropped');
  t.same(summary(run(h, 'a', [arp({ op: 'request', senderMac: forged, senderIp: '10.0.1.9', targetIp: '10.0.1.1', srcMac: forged })])), ['drop:source_mac_denied'], 'an ARP request from another: not answered');
  t.same(summary(run(h, 'b', [udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 1, dstPort: 2, payload: 8, srcMac: forged, dstMac: MAC.b })])).filter((o) => o === 'drop:source_mac_denied'), [], 'a port without it: no check');
});

t.test('a super-frame (TSO) to a next hop being resolved is not held: its copy would go out whole, its checksum not done', async (t) => {
  const h = await router();
  const pool = PacketPool.standalone(8, 2);
  const frame = tcp4({ src: '10.0.1.2', dst: '10.0.2.7', srcPort: 1, dstPort: 2, payload: 4000, srcMac: GUEST.a, dstMac: MAC.a });
  const batch = new Batch(pool);
  const handle = pool.allocSuper();
  pool.data.set(frame, pool.frameOffset(handle));
  pool.length[handle] = frame.length;
  const fields = handle * OFFLOAD_FIELDS;
  [pool.offload[fields + OFFLOAD_CSUM_START], pool.offload[fields + OFFLOAD_CSUM_OFFSET], pool.offload[fields + OFFLOAD_GSO_TYPE], pool.offload[fields + OFFLOAD_GSO_SIZE], pool.offload[fields + OFFLOAD_HDR_LEN]] = [35, 16, 1, 1460, 54];
  batch.handles[0] = handle;
  batch.begin(0, 1);
  t.equal(batch.segmentLength(0), 1500, 'a super-frame: segments of 1460 bytes of payload, IP packets of 1500');
  const r = h.state as unknown as { hold(b: unknown, i: number, iface: number, family: number, a0: number, a1: number, a2: number, a3: number): boolean; heldCount: number };
  t.equal(r.hold(batch, 0, 1, 4, (10 << 24) | (2 << 8) | 7, 0, 0, 0), false, 'not held');
  t.equal(r.heldCount, 0);
});

t.test('reverse-path filter: strict and loose, IPv4 and IPv6, on ports and on a bridge', async (t) => {
  const filtered: HarnessPort[] = [
    { name: 'a', settings: { ...ports[0].settings, rpf: 'strict' } },
    { name: 'b', settings: { ...ports[1].settings, rpf: 'loose' } },
    ports[2],
    ports[3],
  ];
  const routes = [
    { prefix: '10.9.0.0/16', via: '10.0.2.2' },
    { prefix: '10.8.0.0/16', blackhole: true },
    { prefix: '10.7.0.0/16', via: ['10.0.1.2', '10.0.2.2'] },
    { prefix: '2001:db8:9::/48', via: '2001:db8:2::2' },
  ];
  const h = await PluginHarness.create(routing, { ports: filtered, bridgeSettings: { br0: { ...bridgeSettings.br0, rpf: 'strict' } }, config: { routes } });
  const ping = (port: 'a' | 'b', src: string, dst: string) => icmp4({ src, dst, type: 8, id: 1, seq: 1, payload: 8, srcMac: GUEST[port], dstMac: MAC[port] });
  /** Pings from each source (to the address beside it, the router's) on port `port`. */
  const pings = (port: 'a' | 'b', pairs: string[][]) => run(h, port, pairs.map(([src, dst]) => ping(port, src, dst)));
  const strict = pings('a', [['10.0.1.2', '10.0.1.1'], ['10.7.3.4', '10.0.1.1'], ['10.0.2.5', '10.0.1.1'], ['10.9.1.1', '10.0.1.1'], ['192.0.2.1', '10.0.1.1'], ['10.0.1.1', '10.0.2.1'], ['10.0.2.1', '10.0.1.1']]);
  t.same(summary(strict), ['a', 'a', 'drop:reverse_path', 'drop:reverse_path', 'drop:reverse_path', 'drop:reverse_path', 'drop:reverse_path'],
    "strict: a's subnet and an ECMP route with a member out of a pass; b's subnet, a route out of b, no route, the router's own addresses do not");
  const loose = pings('b', [['10.0.1.7', '10.0.2.1'], ['10.9.1.1', '10.0.2.1'], ['192.0.2.1', '10.0.2.1'], ['10.8.1.1', '10.0.2.1'], ['10.0.2.1', '10.0.2.1']]);
  t.same(summary(loose), ['b', 'b', 'drop:reverse_path', 'drop:reverse_path', 'drop:reverse_path'], 'loose: any route but a blackhole');
  learnB(h);
  const udp = (src: string) => udp4({ src, dst: '10.0.2.2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  t.same(summary(run(h, 'a', [udp('10.0.1.2'), udp('10.9.0.1')])), ['b', 'drop:reverse_path'], 'forwarded packets are filtered alike');
  t.equal(h.counts('a').reverse_path, 6, 'counted on the ingress port');
  const echo6 = (port: 'a' | 'b', src: string, dst: string) => icmp6({ src, dst, type: 128, id: 1, seq: 1, payload: 8, srcMac: GUEST[port], dstMac: MAC[port] });
  const v6 = run(h, 'a', ['2001:db8:1::2', 'fe80::5054:ff:fe00:a', '2001:db8:2::9', '2001:db8:9::1'].map((src) => echo6('a', src, '2001:db8:1::1')));
  t.same(summary(v6), ['a', 'a', 'drop:reverse_path', 'drop:reverse_path'], 'IPv6 strict; a link-local source is not checked');
  const v6Loose = run(h, 'b', [echo6('b', '2001:db8:1::5', '2001:db8:2::1'), echo6('b', '2001:db8:77::1', '2001:db8:2::1')]);
  t.same(summary(v6Loose), ['b', 'drop:reverse_path'], 'IPv6 loose');
  const bridge = run(h, 'c', [
    icmp4({ src: '10.0.3.2', dst: '10.0.3.1', type: 8, id: 1, seq: 1, payload: 8, srcMac: GUEST.c, dstMac: MAC.br }),
    icmp4({ src: '10.0.1.9', dst: '10.0.3.1', type: 8, id: 1, seq: 1, payload: 8, srcMac: GUEST.c, dstMac: MAC.br }),
    udp4({ src: '10.0.1.9', dst: '10.0.3.3', srcPort: 1, dstPort: 2, srcMac: GUEST.c, dstMac: GUEST.d }),
  ]);
  t.same(summary(bridge), ['c', 'drop:reverse_path', 'undecided'], "on a bridge: what the router takes is filtered, frames between guests are the bridge's");
  const unfiltered = await router({ routes });
  t.same(summary(run(unfiltered, 'a', [ping('a', '10.9.1.1', '10.0.1.1'), ping('a', '192.0.2.1', '10.0.1.1')])), ['a', 'a'], 'off by default');
});

t.test('IPv6: NDP, router advertisements, forwarding and packet too big', async (t) => {
  const h = await router();
  const periodic = h.run('a', []).map((o) => parseFrame(o.frame));
  t.same(periodic.map((f) => [f.ndp?.type, f.srcMac]), [[134, MAC.a], [134, MAC.b]], 'the first burst sends the periodic advertisements');
  now += 4000;
  const rs = h.run('a', [routerSolicitation({ src: 'fe80::5054:ff:fe00:a', sourceLinkAddr: GUEST.a, srcMac: GUEST.a })]);
  const ras = rs.filter((o) => o.to === 'a').map((o) => parseFrame(o.frame));
  t.equal(ras.length, 1, 'a router solicitation is answered');
  const ra = ras[0];
  t.same([ra.ip?.dst, ra.ip?.ttl, ra.l4?.checksumOk, ra.ndp?.routerLifetime, ra.ndp?.mtu], ['ff02::1', 255, true, 1800, 1500]);
  t.same(ra.ndp?.prefixes?.map((p) => [p.prefix, p.length, p.onLink, p.autonomous]), [['2001:db8:1::', 64, true, true]]);
  const ns = run(h, 'a', [neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1', sourceLinkAddr: GUEST.a, srcMac: GUEST.a })]);
  const na = parseFrame(ns[0].frame);
  t.same([ns[0].to, na.ndp?.type, na.ndp?.target, na.ip?.src, na.ip?.dst, na.dstMac, na.l4?.checksumOk], ['a', 136, '2001:db8:1::1', '2001:db8:1::1', '2001:db8:1::2', GUEST.a, true]);
  const toB = udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, payload: 100, srcMac: GUEST.a, dstMac: MAC.a });
  const first = run(h, 'a', [toB]);
  t.same(summary(first), ['consumed', 'b'], 'held; a neighbour solicitation goes out of b');
  const sol = parseFrame(first[1].frame);
  t.same([sol.dstMac, sol.ip?.dst, sol.ndp?.target, sol.l4?.checksumOk], ['33:33:ff:00:00:02', 'ff02::1:ff00:2', '2001:db8:2::2', true]);
  const adv = run(h, 'b', [neighbourAdvertisement({ src: '2001:db8:2::2', dst: 'fe80::c0ff:fe00:b01', target: '2001:db8:2::2', targetLinkAddr: GUEST.b, solicited: true, srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(adv), ['consumed', 'b']);
  const sent = parseFrame(adv[1].frame);
  t.same([sent.dstMac, sent.ip?.ttl, sent.l4?.checksumOk], [GUEST.b, 63, true]);
  const echo = run(h, 'a', [icmp6({ src: '2001:db8:1::2', dst: '2001:db8:1::1', type: 128, id: 3, seq: 4, payload: 40, srcMac: GUEST.a, dstMac: MAC.a })]);
  const reply = parseFrame(echo[0].frame);
  t.same([echo[0].to, reply.l4?.type, reply.ip?.src, reply.l4?.checksumOk], ['a', 129, '2001:db8:1::1', true]);
  run(h, 'a', [neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1', sourceLinkAddr: GUEST.a, srcMac: GUEST.a })]);
  const tooBig = run(h, 'b', [udp6({ src: '2001:db8:2::2', dst: '2001:db8:1::2', srcPort: 1, dstPort: 2, payload: 3000, srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(tooBig), ['drop:mtu_exceeded', 'b']);
  const ptb = parseFrame(tooBig[1].frame);
  t.same([ptb.l4?.type, ptb.l4?.rest, ptb.l4?.checksumOk, ptb.ip?.dst], [2, 1500, true, '2001:db8:2::2']);
  const hop = run(h, 'a', [udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, hopLimit: 1, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(summary(hop), ['drop:ttl_exceeded', 'a']);
  t.same(parseFrame(hop[1].frame).l4?.type, 3);
  const martians = run(h, 'a', [
    udp6({ src: '::', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }),
    udp6({ src: '::1', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }),
    udp6({ src: '2001:db8:1::2', dst: '::1', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }),
  ]);
  t.same(summary(martians), ['drop:not_routable', 'drop:not_routable', 'drop:not_routable'], 'from :: or ::1, or to ::1: not routable, and no error sent');
  // RFC 4443 2.4 (e.1): no error about an ICMPv6 error, behind extension headers too.
  const error = icmp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', type: 1, code: 4, payload: 40, hopLimit: 1, srcMac: GUEST.a, dstMac: MAC.a });
  const behind = new Uint8Array(error.length + 8);
  behind.set(error.subarray(0, 54));
  behind.set([58, 0, 1, 4, 0, 0, 0, 0], 54); // destination options: next ICMPv6, PadN
  behind.set(error.subarray(54), 62);
  behind[14 + 6] = 60;
  new DataView(behind.buffer).setUint16(14 + 4, error.length - 54 + 8);
  t.same(summary(run(h, 'a', [behind])), ['drop:ttl_exceeded'], 'an ICMPv6 error behind a destination options header gets no error back');
  t.same(summary(run(h, 'a', [error])), ['drop:ttl_exceeded'], 'nor one without');
  // RFC 4861 7.2.5: without Override an advertisement does not replace a known address (a
  // guest claiming another's); with it, it does (an address moved to a new interface).
  const OTHER = '52:54:e0:00:0e:0e';
  const unasked = (override: boolean) => neighbourAdvertisement({ src: '2001:db8:2::2', dst: 'fe80::c0ff:fe00:b01', target: '2001:db8:2::2', targetLinkAddr: OTHER, override, srcMac: OTHER, dstMac: MAC.b });
  run(h, 'b', [unasked(false)]);
  t.same(parseFrame(run(h, 'a', [toB])[0].frame).dstMac, GUEST.b, 'an advertisement without Override leaves the address known');
  run(h, 'b', [unasked(true)]);
  t.same(parseFrame(run(h, 'a', [toB])[0].frame).dstMac, OTHER, 'one with Override replaces it');
  const scoped = run(h, 'a', [udp6({ src: 'fe80::5054:ff:fe00:a', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(summary(scoped), ['drop:not_routable', 'a'], 'from a link-local address to a global one: not forwarded');
  const beyond = parseFrame(scoped[1].frame);
  t.same([beyond.l4?.type, beyond.l4?.code, beyond.ip?.src, beyond.ip?.dst, beyond.l4?.checksumOk], [1, 2, 'fe80::ff:fe00:a01', 'fe80::5054:ff:fe00:a', true], 'destination unreachable, beyond the scope of the source (RFC 4443 3.1), from the router\'s link-local address');
});

t.test("IPv6: a group link-layer address in NDP, an IPv4-mapped source, another interface's link-local address: refused", async (t) => {
  const h = await router();
  h.run('a', []);
  const ns = run(h, 'a', [neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1', sourceLinkAddr: '33:33:00:00:00:01', srcMac: GUEST.a })]);
  t.same(summary(ns), ['drop:ndp_bad'], "a solicitation naming a group address as its sender's: no answer to the group");
  const na = run(h, 'b', [neighbourAdvertisement({ src: '2001:db8:2::2', dst: 'fe80::c0ff:fe00:b01', target: '2001:db8:2::2', targetLinkAddr: 'ff:ff:ff:ff:ff:ff', solicited: true, srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(na), ['drop:ndp_bad'], "an advertisement naming a group address as the target's");
  const mapped = run(h, 'a', [udp6({ src: '::ffff:127.0.0.1', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(summary(mapped), ['drop:not_routable'], 'an IPv4-mapped source (RFC 4291 2.5.5.2)');
  const echo = (dst: string) => icmp6({ src: 'fe80::5054:ff:fe00:a', dst, type: 128, id: 1, seq: 1, payload: 8, srcMac: GUEST.a, dstMac: MAC.a });
  t.same(summary(run(h, 'a', [echo('fe80::ff:fe00:a01')])), ['a'], "a's own link-local address answers on a's link");
  t.same(summary(run(h, 'a', [echo('fe80::c0ff:fe00:b01')])), ['drop:not_routable'], "b's is no address on a's link (RFC 4007)");
});

t.test('a bridge with router addresses: guests on it reach other subnets', async (t) => {
  const h = await router();
  learnB(h);
  run(h, 'c', [arp({ op: 'request', senderMac: GUEST.c, senderIp: '10.0.3.2', targetIp: '10.0.3.1', srcMac: GUEST.c })]);
  const out = run(h, 'd', [
    udp4({ src: '10.0.3.3', dst: '10.0.2.2', srcPort: 1, dstPort: 2, srcMac: GUEST.d, dstMac: MAC.br }),
    udp4({ src: '10.0.3.3', dst: '10.0.3.2', srcPort: 1, dstPort: 2, srcMac: GUEST.d, dstMac: GUEST.c }),
  ]);
  t.same(summary(out), ['b', 'undecided'], 'to the router MAC: routed; between guests: left to the bridge');
  const back = run(h, 'b', [udp4({ src: '10.0.2.2', dst: '10.0.3.2', srcPort: 2, dstPort: 1, srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(back), ['c'], 'to a guest on the bridge: out of the member port its MAC was learned on');
  t.equal(parseFrame(back[0].frame).dstMac, GUEST.c);
  const unknown = run(h, 'b', [udp4({ src: '10.0.2.2', dst: '10.0.3.7', srcPort: 2, dstPort: 1, srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(unknown), ['consumed', 'c', 'd'], 'an unresolved guest on the bridge: ARP on every member');
});

t.test('routerAdvertisements false: no advertisement on the port, periodic or solicited', async (t) => {
  const quiet = ports.map((p) => (p.name === 'b' ? { ...p, settings: { ...p.settings, routerAdvertisements: false } } : p));
  const h = await PluginHarness.create(routing, { ports: quiet, bridgeSettings, config: {} });
  const isRa = (o: { frame: Uint8Array }) => parseFrame(o.frame).ndp?.type === 134;
  t.same(h.run('a', []).filter(isRa).map((o) => o.to), ['a'], 'the periodic ones: on a alone');
  now += 4000;
  const asked = h.run('b', [routerSolicitation({ src: 'fe80::5054:ff:fe00:b', sourceLinkAddr: GUEST.b, srcMac: GUEST.b })]);
  t.same(asked.filter(isRa), [], 'a solicitation on b: no answer');
  now += 60_000;
  t.same([...h.run('b', []), ...h.run('a', [])].filter(isRa).map((o) => o.to), ['a'], 'a minute later, the periodic one on a again, none on b');
});

t.test('IPv6: router lifetime, NDP from the unspecified address, an advertisement with no link-layer address, and the source of ICMPv6 errors', async (t) => {
  const isRa = (o: { frame: Uint8Array }) => parseFrame(o.frame).ndp?.type === 134;
  const slow = await router({ raInterval: 1800 });
  t.same(slow.run('a', []).filter(isRa).map((o) => parseFrame(o.frame).ndp?.routerLifetime), [5400, 5400], 'advertised every 1800 s: a router lifetime of three intervals (RFC 4861 6.2.1)');
  const h = await router();
  h.run('a', []);
  const probe = (dst: string, dstMac: string) => run(h, 'a', [neighbourSolicitation({ src: '::', target: '2001:db8:1::1', dst, dstMac, srcMac: GUEST.a })]);
  t.same(summary(probe('ff02::1:ff00:1', '33:33:ff:00:00:01')), ['a'], "a duplicate address probe to the target's solicited-node group: answered");
  t.same(summary(probe('2001:db8:1::1', MAC.a)), ['drop:ndp_bad'], 'one from the unspecified address to a unicast address: dropped (RFC 4861 7.1.1)');
  // 2001:db8:2::2 asked for: an advertisement without its link-layer address does not complete it
  const toB = udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  t.same(summary(run(h, 'a', [toB])), ['consumed', 'b'], 'held; a solicitation out of b');
  const bare = neighbourAdvertisement({ src: '2001:db8:2::2', dst: 'fe80::c0ff:fe00:b01', target: '2001:db8:2::2', solicited: true, override: true, srcMac: '52:54:00:00:00:99', dstMac: MAC.b });
  t.same(summary(run(h, 'b', [bare])).filter((to) => to === 'b'), [], 'an advertisement with no target link-layer address releases nothing (RFC 4861 7.2.5)');
  const full = neighbourAdvertisement({ src: '2001:db8:2::2', dst: 'fe80::c0ff:fe00:b01', target: '2001:db8:2::2', targetLinkAddr: GUEST.b, solicited: true, srcMac: GUEST.b, dstMac: MAC.b });
  const released = run(h, 'b', [full]).filter((o) => !o.received);
  t.same(released.map((o) => [o.to, parseFrame(o.frame).dstMac]), [['b', GUEST.b]], 'one with it does');
  // An interface with no global IPv6 address of its own: errors from another's, not link-local
  const v4only = ports.map((p) => (p.name === 'b' ? { ...p, settings: { ...p.settings, addresses: ['10.0.2.1/24'] } } : p));
  const g = await PluginHarness.create(routing, { ports: v4only, bridgeSettings, config: {} });
  g.run('a', []);
  const lost = run(g, 'b', [udp6({ src: '2001:db8:9::5', dst: '2001:db8:77::1', srcPort: 1, dstPort: 2, srcMac: GUEST.b, dstMac: MAC.b })]);
  const error = lost.map((o) => parseFrame(o.frame)).find((f) => f.ip?.protocol === 58);
  t.same([error?.l4?.type, error?.ip?.src], [1, '2001:db8:1::1'], "no route: answered from a's global address, which routes back, not from b's link-local one");
});

t.test('a router solicitation too soon after an advertisement is answered once the 3 s are over, not dropped', async (t) => {
  const h = await router();
  const isRa = (o: { frame: Uint8Array }) => parseFrame(o.frame).ndp?.type === 134;
  const solicit = () => h.run('a', [routerSolicitation({ src: 'fe80::5054:ff:fe00:a', sourceLinkAddr: GUEST.a, srcMac: GUEST.a })]).filter(isRa);
  h.run('a', []);
  now += 4000;
  t.same(solicit().map((o) => o.to), ['a'], 'answered at once');
  now += 1000;
  t.same(solicit(), [], 'one a second later: not at once (RFC 4861 6.2.6)');
  now += 1999;
  t.same(h.run('a', []).filter(isRa), [], 'nor before 3 s have passed since the last');
  now += 1;
  t.same(h.run('a', []).filter(isRa).map((o) => o.to), ['a'], 'then it gets the advertisement it was owed');
  now += 5000;
  t.same(h.run('a', []).filter(isRa), [], 'once');
});

t.test("on a bridge: a router solicitation is answered and flooded; an unsolicited advertisement to all nodes updates the neighbour and is flooded; one to the router is the router's", async (t) => {
  const h = await PluginHarness.create(routing, { ports, bridgeSettings: { br0: { addresses: ['10.0.3.1/24', '2001:db8:3::1/64'], routerMac: MAC.br, mtu: 1500 } }, config: {} });
  h.run('a', []);
  now += 4000;
  const rs = h.run('c', [routerSolicitation({ src: 'fe80::5054:ff:fe00:c', sourceLinkAddr: GUEST.c, srcMac: GUEST.c })]);
  t.equal(rs.filter((o) => o.to === 'c' && parseFrame(o.frame).ndp?.type === 134).length, 1, 'an advertisement back to c');
  t.same(rs.filter((o) => o.received).map((o) => o.to), ['undecided'], 'and the solicitation left to the bridge: another router in the segment hears it');
  run(h, 'd', [neighbourSolicitation({ src: '2001:db8:3::5', target: '2001:db8:3::1', sourceLinkAddr: GUEST.d, srcMac: GUEST.d })]);
  const toFive = () => run(h, 'a', [udp6({ src: '2001:db8:1::2', dst: '2001:db8:3::5', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]);
  t.same(toFive().map((o) => [o.to, parseFrame(o.frame).dstMac]), [['d', GUEST.d]], '2001:db8:3::5 known on d');
  // Its address moves to c (a failover): c tells all nodes.
  const moved = run(h, 'c', [neighbourAdvertisement({ src: '2001:db8:3::5', dst: 'ff02::1', dstMac: '33:33:00:00:00:01', target: '2001:db8:3::5', targetLinkAddr: GUEST.c, override: true, srcMac: GUEST.c })]);
  t.same(summary(moved), ['undecided'], 'the advertisement to all nodes is flooded to the other members');
  t.same(toFive().map((o) => [o.to, parseFrame(o.frame).dstMac]), [['c', GUEST.c]], 'and the router follows it to c');
  const answer = run(h, 'c', [neighbourAdvertisement({ src: '2001:db8:3::5', dst: '2001:db8:3::1', dstMac: MAC.br, target: '2001:db8:3::5', targetLinkAddr: GUEST.c, solicited: true, override: true, srcMac: GUEST.c })]);
  t.same(summary(answer), ['consumed'], 'one sent to the router is taken by it');
});

t.test('ECMP: one next hop per flow, flows spread', async (t) => {
  const h = await router({ routes: [{ prefix: '0.0.0.0/0', via: ['10.0.2.2', '10.0.2.3'] }] });
  learnB(h);
  run(h, 'b', [arp({ op: 'reply', senderMac: GUEST.c, senderIp: '10.0.2.3', targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: GUEST.c })]);
  const seen = new Map<number, string>();
  for (let port = 1000; port < 1064; port++) {
    const f = udp4({ src: '10.0.1.2', dst: '203.0.113.5', srcPort: port, dstPort: 80, srcMac: GUEST.a, dstMac: MAC.a });
    const [a] = run(h, 'a', [f]);
    const [b] = run(h, 'a', [f]);
    t.equal(parseFrame(a.frame).dstMac, parseFrame(b.frame).dstMac);
    seen.set(port, parseFrame(a.frame).dstMac);
  }
  const counts = [...seen.values()].reduce((m, v) => m.set(v, (m.get(v) ?? 0) + 1), new Map<string, number>());
  t.same([...counts.keys()].sort(), [GUEST.b, GUEST.c].sort(), 'both gateways used');
  t.ok(Math.min(...counts.values()) > 10, `spread: ${JSON.stringify([...counts])}`);
});

t.test('next hops in turn within a burst: each frame gets its own; a new MAC from the next burst on', async (t) => {
  const h = await router();
  // 100 hosts behind b, more than the burst's next-hop cache has entries: some share one.
  const hosts = Array.from({ length: 100 }, (_, k) => ({ ip: `10.0.2.${k + 2}`, mac: `52:54:00:00:02:${(k + 2).toString(16).padStart(2, '0')}` }));
  for (const host of hosts) {
    run(h, 'b', [arp({ op: 'reply', senderMac: host.mac, senderIp: host.ip, targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: host.mac })]);
  }
  const to = (ip: string) => udp4({ src: '10.0.1.2', dst: ip, srcPort: 1000, dstPort: 80, srcMac: GUEST.a, dstMac: MAC.a });
  // Bursts of hosts k and k + 64 in turn (addresses 64 apart share entries), twice each.
  for (let k = 0; k < 36; k += 8) {
    const pairs = hosts.slice(k, k + 8).flatMap((host, j) => [host, hosts[k + j + 64]]).filter((host) => host !== undefined);
    const order = [...pairs, ...pairs];
    const out = run(h, 'a', order.map((host) => to(host.ip)));
    t.same(out.map((o) => [o.to, parseFrame(o.frame).dstMac, parseFrame(o.frame).srcMac]), order.map((host) => ['b', host.mac, MAC.b]), `hosts from 10.0.2.${k + 2}`);
  }
  run(h, 'a', [to('10.0.2.2'), to('10.0.2.3')]);
  const moved = '52:54:f0:00:0f:0f';
  run(h, 'b', [arp({ op: 'reply', senderMac: moved, senderIp: '10.0.2.3', targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: moved })]);
  const next = run(h, 'a', [to('10.0.2.2'), to('10.0.2.3'), to('10.0.2.2'), to('10.0.2.3')]);
  t.same(next.map((o) => parseFrame(o.frame).dstMac), [hosts[0].mac, moved, hosts[0].mac, moved], 'a host that answered with another MAC gets it in the next burst');
});

t.test('an IPv4 next hop and an IPv6 one with the same first 32 bits are told apart', async (t) => {
  // 2001:db8:: and 32.1.13.184 are the same 32 bits, then zeros.
  const h = await PluginHarness.create(routing, {
    ports: [
      { name: 'a', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: MAC.a, mtu: 1500 } },
      { name: 'b', settings: { addresses: ['32.1.13.1/24', '2001::1/16'], routerMac: MAC.b, mtu: 1500 } },
    ],
    config: { neighbours: [{ address: '32.1.13.184', mac: GUEST.b, port: 'b' }, { address: '2001:db8::', mac: GUEST.c, port: 'b' }] },
  });
  const v4 = udp4({ src: '10.0.1.2', dst: '32.1.13.184', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  const v6 = udp6({ src: '2001:db8:1::2', dst: '2001:db8::', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  const out = run(h, 'a', [v4, v6, v4, v6, v6, v4]);
  t.same(out.map((o) => [o.to, parseFrame(o.frame).dstMac]), [GUEST.b, GUEST.c, GUEST.b, GUEST.c, GUEST.c, GUEST.b].map((mac) => ['b', mac]));
});

t.test('malformed headers are counted drops, never a throw', async (t) => {
  const h = await router();
  const good = tcp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, flags: 'S', srcMac: GUEST.a, dstMac: MAC.a });
  const badVersion = good.slice();
  badVersion[14] = 0x55;
  const badIhl = good.slice();
  badIhl[14] = 0x44;
  const longLength = good.slice();
  longLength[16] = 0xff;
  const badChecksum = good.slice();
  badChecksum[24] ^= 0xff;
  const truncated = good.slice(0, 20);
  const out = run(h, 'a', [badVersion, badIhl, longLength, badChecksum, truncated]);
  t.same(summary(out), ['drop:ip_header_bad', 'drop:ip_header_bad', 'drop:ip_length_bad', 'drop:ip_checksum_bad', 'drop:ip_header_bad']);
  // Mangled IPv4, IPv6, NDP and ARP frames: bytes after the Ethernet header changed at
  // random, lengths cut at random. The stage must not throw (run() would), and every frame
  // must end dropped, left to others, held, or answered on the port it came from.
  const bases = [
    good,
    udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 1, dstPort: 2, payload: 40, srcMac: GUEST.a, dstMac: MAC.a }),
    neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1', sourceLinkAddr: GUEST.a, srcMac: GUEST.a }),
    routerSolicitation({ src: 'fe80::5054:ff:fe00:a', sourceLinkAddr: GUEST.a, srcMac: GUEST.a }),
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a }),
  ];
  const random: Uint8Array[] = [];
  const seen = new Set<string>();
  let seed = 7;
  for (let n = 0; n < 4000; n++) {
    const base = bases[n % bases.length];
    const f = base.slice(0, 14 + ((seed = (seed * 1103515245 + 12345) >>> 0) % (base.length - 13)));
    for (let k = 14; k < f.length; k++) if (((seed = (seed * 1103515245 + 12345) >>> 0) & 3) === 0) f[k] = seed >>> 24;
    random.push(f);
    if (random.length === 32) {
      for (const o of h.run('a', random)) seen.add(o.to);
      random.length = 0;
    }
  }
  t.same([...seen].filter((to) => !['drop', 'undecided', 'consumed', 'a', 'b'].includes(to)), [], `4000 mangled frames: each dropped, left, held or answered (${[...seen].sort().join(', ')})`);
});

t.test('next hops that never answer: bounded queue, then unreachable', async (t) => {
  const h = await router({ heldPackets: 8 });
  const frames = Array.from({ length: 20 }, (_, k) => udp4({ src: '10.0.1.2', dst: `10.0.2.${100 + k}`, srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a }));
  const out = run(h, 'a', frames);
  t.equal(out.filter((o) => o.to === 'consumed').length, 2, 'a port holds a quarter of the queue: 2 held');
  t.equal(out.filter((o) => o.reason === 'neighbour_queue_full').length, 18, 'the rest dropped as neighbour_queue_full');
  const arpsFor = (o: Outcome[]) => o.filter((x) => x.to === 'b' && parseFrame(x.frame).arp?.op === 1).map((x) => parseFrame(x.frame).arp?.targetIp).sort();
  t.same(arpsFor(out).slice(0, 2), ['10.0.2.100', '10.0.2.101'], 'the held packets\' next hops asked for');
  // Requests at 0, 1.1 and 2.2 s, with no packet to those hosts after the first (RFC 4861
  // 7.2.2: retransmitted all the same); at 3.3 s the third is found unanswered.
  for (let k = 1; k <= 2; k++) {
    now += 1100;
    t.same(arpsFor(run(h, 'a', [])), ['10.0.2.100', '10.0.2.101'], `after ${k}.${k} s: both asked for again, though no packet came for them`);
  }
  now += 1100;
  const late = run(h, 'a', []);
  t.equal(late.filter((o) => o.reason === 'neighbour_unreachable').length, 2, 'after 3 requests unanswered: each held packet dropped as neighbour_unreachable');
  const errors = late.filter((o) => o.to === 'a').map((o) => parseFrame(o.frame));
  t.same(errors.map((e) => [e.l4?.type, e.l4?.code, e.ip?.src, e.ip?.dst, e.dstMac, e.l4?.checksumOk]), [[3, 1, '10.0.1.1', '10.0.1.2', GUEST.a, true], [3, 1, '10.0.1.1', '10.0.1.2', GUEST.a, true]], 'and host unreachable back to its sender, for each');
  t.equal(h.counts('a').held_dropped, 2, 'counted as held packets dropped');

  // The host comes up: the next packet asks for it again (the last request is over a second
  // old), as Linux's neigh_event_send does, and the answer delivers it: no hold while failed.
  now += 200;
  const again = run(h, 'a', [frames[0]]);
  const asked = again.filter((o) => o.to === 'b' && parseFrame(o.frame).arp?.op === 1);
  t.same(asked.map((o) => parseFrame(o.frame).arp?.targetIp), ['10.0.2.100'], 'the next packet has the router ask for it again on b', { again });
  t.ok(again.some((o) => o.to === 'consumed'), 'and is held meanwhile');
  now += 100;
  t.notOk(run(h, 'a', [frames[0]]).some((o) => o.to === 'b' && parseFrame(o.frame).arp?.targetIp === '10.0.2.100'), 'no second request within a second');
  const answered = run(h, 'b', [arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.100', targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: GUEST.b })]);
  t.ok(answered.some((o) => o.to === 'b' && parseFrame(o.frame).ip?.dst === '10.0.2.100'), 'the answer sends the held packet on', { answered });
  t.ok(run(h, 'a', [frames[0]]).some((o) => o.to === 'b'), 'and the next packet goes straight through');
});

t.test('an IPv6 next hop that never answers: solicited again every second, then address unreachable for the held packet (RFC 4861 7.2.2)', async (t) => {
  const h = await router();
  const sent = run(h, 'a', [udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::100', srcPort: 1, dstPort: 2, payload: 20, srcMac: GUEST.a, dstMac: MAC.a })]);
  const solicited = (o: Outcome[]) => o.filter((x) => x.to === 'b' && parseFrame(x.frame).ndp?.type === 135).length;
  t.same([summary(sent)[0], solicited(sent)], ['consumed', 1], 'held; a solicitation out of b');
  now += 1100;
  t.equal(solicited(run(h, 'a', [])), 1, 'solicited again a second later, with no packet to it');
  now += 1100;
  t.equal(solicited(run(h, 'a', [])), 1, 'and again');
  now += 1100;
  const late = run(h, 'a', []);
  t.equal(late.filter((o) => o.reason === 'neighbour_unreachable').length, 1, 'then dropped as neighbour_unreachable');
  const error = late.filter((o) => o.to === 'a').map((o) => parseFrame(o.frame));
  t.same(error.map((e) => [e.l4?.type, e.l4?.code, e.ip?.dst, e.l4?.checksumOk]), [[1, 3, '2001:db8:1::2', true]], 'with ICMPv6 address unreachable back to its sender');
});

t.test('held packets go on in a batch of their own port, asked for when another PMD saw the answer or when they are due to go', async (t) => {
  const pmd0 = await PluginHarness.create(routing, { ports, bridgeSettings, pmdCount: 2 });
  const pmd1 = await PluginHarness.create(routing, { ports, bridgeSettings, pmd: 1, pmdCount: 2, shareWith: pmd0 as PluginHarness<unknown, unknown> });
  const to = (host: number) => udp4({ src: '10.0.1.2', dst: `10.0.2.${host}`, srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  t.same(summary(run(pmd0, 'a', [to(50), to(51)])), ['consumed', 'consumed', 'b', 'b'], 'two held on PMD 0, each next hop asked for');
  // The answer for .50 reaches PMD 1 (the neighbour table is shared): PMD 0 learns of it at
  // its next round's check, a should send nothing meanwhile.
  const answered = run(pmd1, 'b', [arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.50', targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: GUEST.b })]);
  t.same(summary(answered), ['consumed'], 'PMD 1 holds nothing to send');
  t.same(pmd0.runWanted(), [], 'no batch asked for before the round');
  now += 2;
  pmd0.betweenBursts();
  const released = withoutAdvertisements(pmd0.runWanted());
  t.same(released.map((o) => [o.from, o.to, o.local, parseFrame(o.frame).ip?.dst, parseFrame(o.frame).dstMac]), [['a', 'b', false, '10.0.2.50', GUEST.b]], "the round's check asked for a's batch: .50's packet goes on in it, as a's traffic");
  t.equal(pmd0.counts('a').held_released, 1);
  // .51 never answers: dropped once HOLD_MS is past, a silent all the while.
  now += 3100;
  pmd0.betweenBursts();
  const dropped = withoutAdvertisements(pmd0.runWanted()).map((o) => (o.to === 'drop' ? `drop:${o.reason}` : `${o.to}:${parseFrame(o.frame).l4?.type}/${parseFrame(o.frame).l4?.code}`));
  t.same(dropped.sort(), ['a:3/1', 'drop:neighbour_unreachable'], "in a's batch the round asked for: the packet to .51 dropped, host unreachable back to a");
  t.equal(pmd0.counts('a').held_dropped, 1, 'the packet to .51 dropped after 3 s, a having sent nothing since');
  now += 2;
  pmd0.betweenBursts();
  t.same(pmd0.runWanted(), [], 'nothing held: no batch asked for');
});

t.test('held packets when the PMD is replaced (ports changed at run time) or vrouter stops: sent if answered, else dropped and counted, none held after', async (t) => {
  const to = (host: number) => udp4({ src: '10.0.1.2', dst: `10.0.2.${host}`, srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a });
  const answer = (host: number) => arp({ op: 'reply', senderMac: GUEST.b, senderIp: `10.0.2.${host}`, targetMac: MAC.b, targetIp: '10.0.2.1', dstMac: MAC.b, srcMac: GUEST.b });
  const outcomes = (out: Outcome[]) => withoutAdvertisements(out).map((o) => (o.to === 'drop' ? `${o.from} drop:${o.reason}` : `${o.from} to ${o.to} ${parseFrame(o.frame).ip?.dst ?? 'arp'}`));

  const h = await PluginHarness.create(routing, { ports, bridgeSettings, pmdCount: 2 });
  const pmd1 = await PluginHarness.create(routing, { ports, bridgeSettings, pmd: 1, pmdCount: 2, shareWith: h as PluginHarness<unknown, unknown> });
  t.same(summary(run(h, 'a', [to(50), to(51)])), ['consumed', 'consumed', 'b', 'b'], 'two held on PMD 0, each next hop asked for');
  t.same(summary(run(pmd1, 'b', [answer(50)])), ['consumed'], 'the answer for .50 reaches PMD 1 (the table is shared): PMD 0 has not sent it on yet');
  h.leaving(ports, bridgeSettings);
  t.same(outcomes(h.runWanted()).sort(), ['a drop:held_discarded', 'a to b 10.0.2.50'], "in the batch of a asked for: .50's packet goes on, .51's is dropped as held_discarded, without an ICMP error");
  t.match(h.counts('a'), { held_for_resolution: 2, held_released: 1, held_dropped: 1 }, 'each counted once');
  const later = run(h, 'a', [to(52)]);
  t.same(summary(later).filter((o) => o.startsWith('drop')), ['drop:held_discarded'], 'a packet that would be held now is dropped at once', { later });
  t.equal(h.counts('a').held_for_resolution, 2, 'and not held');
  t.same(summary(run(h, 'b', [answer(51)])), ['consumed'], '.51 answers after all: nothing held to send on');
  t.same(outcomes(run(h, 'a', [to(51)])), ['a to b 10.0.2.51'], 'a packet to a known next hop goes on as before');
  h.leaving(ports, bridgeSettings);
  t.same(withoutAdvertisements(h.runWanted()), [], 'told again: nothing held, no batch');

  const stops = await router();
  t.same(summary(run(stops, 'a', [to(60)])), ['consumed', 'b'], 'held on a vrouter that then stops');
  const other = await PluginHarness.create(routing, { ports, bridgeSettings, pmd: 1, pmdCount: 2, shareWith: stops as PluginHarness<unknown, unknown> });
  t.same(summary(run(other, 'a', [to(61)])), ['consumed', 'b'], 'and on its PMD 1');
  stops.stopping();
  other.stopping();
  t.same(outcomes(stops.runWanted()), ['a drop:held_discarded'], 'PMD 0 drops its held packet as it stops');
  t.same(outcomes(other.runWanted()), ['a drop:held_discarded'], 'so does PMD 1 (it sends no advertisement)');
  t.equal(stops.counts('a').held_dropped + other.counts('a').held_dropped, 2, 'both counted');
});

t.test("a new version of the plugin's module (its files reloaded) takes out the static neighbours the old one wrote", async (t) => {
  // The supervisor imports a changed plugin file anew, as another module version.
  const version = async (v: string) => ((await import(new URL(`./index.ts?v=${v}`, import.meta.url).href)) as { default: typeof routing }).default;
  const [before, after] = [await version('before'), await version('after')];
  const old = await PluginHarness.create(before, { ports, bridgeSettings, config: { neighbours: [{ address: '10.0.2.9', mac: GUEST.c, port: 'b' }] } });
  const toNine = (h: PluginHarness) => summary(run(h, 'a', [udp4({ src: '10.0.1.2', dst: '10.0.2.9', srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]));
  t.same(toNine(old), ['b'], 'the static neighbour: straight out of b');
  const h = new PluginHarness(after, { ports, bridgeSettings, shareWith: old as PluginHarness<unknown, unknown> });
  await h.reconfigure({ neighbours: [] });
  t.same(toNine(h), ['consumed', 'b'], 'the new version, without it in the config: taken out, asked for again');
});

t.test('tables: routes and neighbours as the admin endpoint lists them', async (t) => {
  const h = await router({ routes: [{ prefix: '0.0.0.0/0', via: '10.0.2.2', metric: 5 }], neighbours: [{ address: '10.0.1.9', mac: '52:54:00:00:00:99', port: 'a' }] });
  learnB(h);
  const view = { config: h.config, topology: h.topology, shared: h.shared };
  const routes = [...routing.tables!.routes.list(view, {})];
  t.match(routes, [
    { prefix: '10.0.1.0/24', port: 'a', type: 'connected', address: '10.0.1.1/24' },
    { prefix: '2001:db8:1::/64', port: 'a', type: 'connected' },
    { prefix: '10.0.2.0/24', port: 'b', type: 'connected' },
    { prefix: '2001:db8:2::/64', port: 'b', type: 'connected' },
    { prefix: '10.0.3.0/24', port: 'br0', type: 'connected' },
    { prefix: '0.0.0.0/0', type: 'static', via: ['10.0.2.2'], metric: 5 },
  ]);
  const neighbours = [...routing.tables!.neighbours.list(view, {})].filter((r) => r !== null);
  t.match(neighbours.sort((x, y) => String(x.address).localeCompare(String(y.address))), [
    { address: '10.0.1.9', interface: 'a', port: 'a', mac: '52:54:00:00:00:99', state: 'static' },
    { address: '10.0.2.2', interface: 'b', port: 'b', mac: GUEST.b, state: 'reachable' },
  ]);
});

t.test('a learned neighbour the config\'s checks refuse is left out, not the reason a config is refused', async (t) => {
  const config = routing.parseConfig!({ learnedNeighbours: [{ address: '10.0.1.9', mac: '01:00:5e:00:00:05', port: 'a' }, { address: '10.0.1.8', mac: '52:54:00:00:00:08', port: 'a' }] }) as RoutingConfig;
  t.same(config.learnedNeighbours.map((n) => n.address.text), ['10.0.1.8'], 'the multicast MAC left out, the other kept');
});

t.test('a route to a network no packet to is ever routed is refused; one that only overlaps such a range is not', async (t) => {
  const refused: [string, RegExp][] = [
    ['127.0.0.0/8', /127\.0\.0\.0\/8 is in 127\/8 \(loopback\): packets to it are dropped as not routable/],
    ['127.5.0.0/16', /in 127\/8/],
    ['0.0.0.0/8', /in 0\/8/],
    ['224.0.0.0/4', /in 224\/4 \(multicast\)/],
    ['232.1.2.3/32', /in 224\/4/],
    ['240.0.0.0/4', /in 240\/4 \(reserved\)/],
    ['224.0.0.0/3', /is 224\/3/],
    ['255.255.255.255/32', /in 240\/4/],
    ['ff02::/16', /in ff00::\/8 \(multicast\)/],
    ['fe80::/64', /in fe80::\/10 \(link-local\)/],
  ];
  for (const [prefix, message] of refused) {
    const via = prefix.includes(':') ? '2001:db8:1::9' : '10.0.1.9';
    t.throws(() => routing.parseConfig!({ routes: [{ prefix: '10.9.0.0/16', via: '10.0.1.9' }, { prefix, via }] }), { field: 'routes[1].prefix', message }, prefix);
  }
  // The data path drops by destination address; a network with some routable addresses is a route.
  for (const prefix of ['0.0.0.0/0', '0.0.0.0/7', '192.0.0.0/2', '126.0.0.0/7', '::/0', 'fe00::/9', 'fe00::/7', '8000::/1'])
    t.doesNotThrow(() => routing.parseConfig!({ routes: [{ prefix, blackhole: true }] }), prefix);
});

t.test('config errors name the field', async (t) => {
  await t.rejects(router({ routes: [{ prefix: '10.9.0.0/16', via: '172.16.0.1' }] }), { field: 'routes[0].via', message: /no connected subnet/ });
  await t.rejects(router({ routes: [{ prefix: '10.9.0.0/16', via: '10.0.1.9', port: 'nope' }] }), { field: 'routes[0].port', message: /not a port or bridge/ });
  // What Linux refuses too: its own address as a gateway or a neighbour, a route or a neighbour given twice.
  await t.rejects(router({ routes: [{ prefix: '10.9.0.0/16', via: '10.0.2.1' }] }), { field: 'routes[0].via', message: /10\.0\.2\.1 is this router's own address \(on b\), not a gateway/ });
  await t.rejects(router({ routes: [{ prefix: '2001:db8:9::/48', via: ['2001:db8:1::2', '2001:db8:1::1'] }] }), { field: 'routes[0].via[1]', message: /own address \(on a\)/ });
  await t.rejects(router({ neighbours: [{ address: '10.0.3.1', mac: '52:54:00:00:00:05', port: 'c' }] }), { field: 'neighbours[0].address', message: /10\.0\.3\.1 is this router's own address \(on br0\)/ });
  // A subnet's network and broadcast addresses are no host's (Linux types them broadcast).
  await t.rejects(router({ routes: [{ prefix: '10.9.0.0/16', via: '10.0.1.255' }] }), { field: 'routes[0].via', message: /10\.0\.1\.255 is the broadcast address of 10\.0\.1\.0\/24 \(on a\), not a gateway/ });
  await t.rejects(router({ routes: [{ prefix: '10.9.0.0/16', via: ['10.0.3.9', '10.0.3.0'] }] }), { field: 'routes[0].via[1]', message: /10\.0\.3\.0 is the network address of 10\.0\.3\.0\/24 \(on br0\)/ });
  await t.rejects(router({ neighbours: [{ address: '10.0.2.255', mac: '52:54:00:00:00:05', port: 'b' }] }), { field: 'neighbours[0].address', message: /10\.0\.2\.255 is the broadcast address of 10\.0\.2\.0\/24 \(on b\), not a host/ });
  await t.rejects(router({ neighbours: [{ address: '10.0.3.5', mac: '52:54:00:00:00:05', port: 'br0' }] }), { field: 'neighbours[0].port', message: /"br0" is a bridge: name the member port the neighbour is on/ });
  await t.rejects(
    router({ routes: [{ prefix: '10.9.0.0/16', via: '10.0.1.9' }, { prefix: '10.8.0.0/16', blackhole: true }, { prefix: '10.9.0.0/16', via: '10.0.1.9' }] }),
    { field: 'routes[2]', message: /the same route as routes\[0\] \(10\.9\.0\.0\/16 via 10\.0\.1\.9 metric 0\)/ },
  );
  await t.rejects(
    router({ neighbours: [{ address: '10.0.1.5', mac: '52:54:00:00:00:05', port: 'a' }, { address: '10.0.1.5', mac: '52:54:00:00:00:06', port: 'a' }] }),
    { field: 'neighbours[1].address', message: /10\.0\.1\.5 on a is already neighbours\[0\]/ },
  );
  // Not the same: another metric, another gateway (ECMP), the same address behind another interface.
  const h = await router({
    routes: [{ prefix: '10.9.0.0/16', via: '10.0.1.9' }, { prefix: '10.9.0.0/16', via: '10.0.1.9', metric: 5 }, { prefix: '10.9.0.0/16', via: '10.0.1.8' }],
    neighbours: [{ address: '10.0.1.5', mac: '52:54:00:00:00:05', port: 'a' }, { address: '10.0.1.5', mac: '52:54:00:00:00:06', port: 'b' }],
  });
  const view = { config: h.config, topology: h.topology, shared: h.shared };
  const statics = [...routing.tables!.neighbours.list(view, {})].filter((r) => r !== null && r.address === '10.0.1.5');
  t.same(statics.map((r) => r!.port).sort(), ['a', 'b'], 'both neighbours written');
  t.equal([...routing.tables!.routes.list(view, {})].filter((r) => r !== null && r.prefix === '10.9.0.0/16').length, 3, 'all three routes kept');
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ routes: [{ prefix: '10.9.0.1/16', via: '10.0.1.9' }] }, 'routes[0].prefix', /host bits/],
    [{ routes: [{ prefix: '10.9.0.0/16', via: '2001:db8::1' }] }, 'routes[0].via', /IPv6/],
    [{ routes: [{ prefix: '10.9.0.0/16' }] }, 'routes[0]', /needs "via"/],
    [{ neighbours: [{ address: '10.0.1.5', mac: 'zz', port: 'a' }] }, 'neighbours[0].mac', /52:54/],
    [{ neighbours: [{ address: '10.0.1.5', mac: '00:00:00:00:00:00', port: 'a' }] }, 'neighbours[0].mac', /is all zero: no station has it/],
    [{ neighbours: [{ address: 'ff02::1', mac: '52:54:00:00:00:05', port: 'a' }] }, 'neighbours[0].address', /ff02::1 is a multicast address: a neighbour is one host/],
    [{ neighbours: [{ address: '255.255.255.255', mac: '52:54:00:00:00:05', port: 'a' }] }, 'neighbours[0].address', /is the broadcast address/],
    [{ neighbours: [{ address: '127.0.0.1', mac: '52:54:00:00:00:05', port: 'a' }] }, 'neighbours[0].address', /127\.0\.0\.1 is a loopback address \(127\/8\): a neighbour is one host/],
    [{ neighbours: [{ address: '::', mac: '52:54:00:00:00:05', port: 'a' }] }, 'neighbours[0].address', /is the unspecified address/],
    [{ neighbourLimit: 1000 }, 'neighbourLimit', /power of 2/],
  ];
  for (const [config, field, message] of cases) {
    const err = t.throws(() => routing.parseConfig!(config)) as { field?: string; message?: string };
    t.equal(err.field, field);
    t.match(err.message, message);
  }
});

t.test('a Linux mirror: what the router does not answer goes to it, what it sends leaves through its port', async (t) => {
  const mirrored: HarnessPort[] = [
    { name: 'up', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: MAC.a, mtu: 1500 } },
    { name: 'up.linux', settings: { type: 'tap', mtu: 1500, mirror: { of: 'up', netns: 'lcp', mac: MAC.a, addresses: ['10.0.1.1/24'] } } },
    { name: 'b', settings: { addresses: ['10.0.2.1/24'], routerMac: MAC.b, mtu: 1500 } },
  ];
  const h = await PluginHarness.create(routing, { ports: mirrored, config: {} });
  const out = run(h, 'up', [
    tcp4({ src: '10.0.1.2', dst: '10.0.1.1', srcPort: 40000, dstPort: 179, flags: 'S', srcMac: GUEST.a, dstMac: MAC.a }),
    udp4({ src: '10.0.1.2', dst: '10.0.1.1', srcPort: 3784, dstPort: 3784, srcMac: GUEST.a, dstMac: MAC.a }),
    icmp4({ src: '10.0.1.2', dst: '10.0.1.1', type: 8, id: 1, seq: 1, payload: 8, srcMac: GUEST.a, dstMac: MAC.a }),
    arp({ op: 'reply', senderMac: GUEST.a, senderIp: '10.0.1.2', targetMac: MAC.a, targetIp: '10.0.1.1', dstMac: MAC.a, srcMac: GUEST.a }),
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a }),
    udp4({ src: '10.0.1.2', dst: '224.0.0.5', srcPort: 1, dstPort: 1, srcMac: GUEST.a, dstMac: '01:00:5e:00:00:05' }),
    tcp6({ src: '2001:db8:1::2', dst: '2001:db8:1::1', srcPort: 40000, dstPort: 22, flags: 'S', srcMac: GUEST.a, dstMac: MAC.a }),
  ]);
  t.same(summary(out), ['up.linux', 'up.linux', 'up', 'up.linux', 'up', 'up.linux', 'up.linux'],
    'TCP and UDP to the router, ARP replies to it and link-local multicast to Linux; echo and ARP requests answered by the router');
  t.same(parseFrame(out[0].frame).l4?.dstPort, 179, 'as it came');
  t.equal(h.counts('up').punted_to_linux, 5);
  t.equal(h.counts('up').echo_replies_sent, 1);
  const fromLinux = run(h, 'up.linux', [
    arp({ op: 'request', senderMac: MAC.a, senderIp: '10.0.1.1', targetIp: '10.0.1.2', srcMac: MAC.a }),
    tcp4({ src: '10.0.1.1', dst: '10.0.1.2', srcPort: 179, dstPort: 40000, flags: 'SA', srcMac: MAC.a, dstMac: GUEST.a }),
  ]);
  t.same(summary(fromLinux), ['up', 'up'], 'what Linux sends leaves through the port as it is');
  t.equal(h.counts('up').sent_by_linux, 2, 'counted on the port');
  const noMirror = run(h, 'b', [tcp4({ src: '10.0.2.2', dst: '10.0.2.1', srcPort: 40000, dstPort: 179, flags: 'S', srcMac: GUEST.b, dstMac: MAC.b })]);
  t.same(summary(noMirror), ['drop:local_unhandled'], 'a port without a mirror still drops it');
});

t.test('learned routes: the config wins for the same prefix; one that does not resolve is left out', async (t) => {
  const h = await PluginHarness.create(routing, {
    ports,
    bridgeSettings,
    config: { routes: [{ prefix: '198.51.100.0/24', via: '10.0.2.2' }] },
    learnedRoutes: [
      { prefix: '198.51.100.0/24', via: ['10.0.1.2'], metric: 0, source: 'netlink lcp' },
      { prefix: '203.0.113.0/24', via: ['10.0.1.2'], metric: 20, source: 'netlink lcp' },
      { prefix: '203.0.113.0/24', via: ['10.0.2.2'], metric: 10, source: 'fpm 127.0.0.1:2620' },
      { prefix: '192.0.2.0/24', via: ['10.9.9.9'], metric: 0, source: 'netlink lcp' },
    ],
  });
  learnB(h);
  run(h, 'a', [arp({ op: 'reply', senderMac: GUEST.a, senderIp: '10.0.1.2', targetMac: MAC.a, targetIp: '10.0.1.1', dstMac: MAC.a, srcMac: GUEST.a })]);
  const to = (dst: string) => summary(run(h, 'a', [udp4({ src: '10.0.1.2', dst, srcPort: 1, dstPort: 2, srcMac: GUEST.a, dstMac: MAC.a })]))[0];
  t.equal(to('198.51.100.7'), 'b', 'the configured route, not the learned one');
  t.equal(to('203.0.113.7'), 'b', 'of two sources, the lower metric');
  t.equal(to('192.0.2.7'), 'drop:no_route', 'a gateway in no connected subnet: no route, and no refusal');
  const rows = [...routing.tables!.routes.list({ config: h.config, topology: h.topology, shared: h.shared, learnedRoutes: h.learned }, {})].filter((r) => r !== null);
  t.match(rows.find((r) => r.prefix === '203.0.113.0/24' && r.metric === 10), { type: 'fpm', source: 'fpm 127.0.0.1:2620', via: ['10.0.2.2'] }, 'listed with their source');
});

t.test("another host that claims one of the router's addresses is counted as an address conflict; the router's own traffic and the others' are not", async (t) => {
  const h = await router();
  const OTHER = '52:54:00:00:00:99';
  // The ordinary: a guest's ARP and NDP, which name the router's addresses as targets only.
  run(h, 'a', [
    arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a }),
    neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1', sourceLinkAddr: GUEST.a, srcMac: GUEST.a }),
    neighbourSolicitation({ src: '::', target: '2001:db8:1::1', srcMac: GUEST.a }),
  ]);
  t.equal(h.counts('a').address_conflicts ?? 0, 0, 'none for what names the router only as the target (duplicate address detection included)');
  const claims = [
    arp({ op: 'request', senderMac: OTHER, senderIp: '10.0.1.1', targetIp: '10.0.1.1', srcMac: OTHER }),
    arp({ op: 'request', senderMac: OTHER, senderIp: '10.0.1.1', targetIp: '10.0.1.9', srcMac: OTHER }),
    neighbourAdvertisement({ src: '2001:db8:1::1', dst: 'ff02::1', target: '2001:db8:1::1', targetLinkAddr: OTHER, override: true, srcMac: OTHER, dstMac: '33:33:00:00:00:01' }),
    neighbourSolicitation({ src: 'fe80::ff:fe00:a01', target: '2001:db8:1::9', sourceLinkAddr: OTHER, srcMac: OTHER }),
  ];
  for (const [k, frame] of claims.entries()) {
    run(h, 'a', [frame]);
    t.equal(h.counts('a').address_conflicts, k + 1, ['a gratuitous ARP for 10.0.1.1', 'an ARP request from 10.0.1.1 for another host', 'an advertisement of 2001:db8:1::1', "a solicitation from the router's link-local address"][k]);
  }
  // From the router's own MAC (a frame of its own come back, as a bridge floods): no conflict.
  run(h, 'a', [arp({ op: 'request', senderMac: MAC.a, senderIp: '10.0.1.1', targetIp: '10.0.1.9', srcMac: MAC.a })]);
  t.equal(h.counts('a').address_conflicts, claims.length, 'none for a frame from the router\'s own MAC');
  t.equal(h.counts('b').address_conflicts ?? 0, 0, 'counted on the port it came from');
});
