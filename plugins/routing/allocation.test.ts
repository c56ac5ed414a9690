// The routing stage allocates nothing in steady state: forwarding IPv4 and IPv6 through a
// gateway and to a neighbour on a connected subnet, and over two equal-cost next hops; and
// what a flood makes it do for every packet: time exceeded (the ICMP rate limit asked each
// time), ARP replies and neighbour advertisements to learn from, packets to a neighbour that
// never answers. Thousands of bursts after a warm-up leave the heap as it was and start no
// garbage collection. The addresses are past 128.0.0.0 (172.16/12, 192.168/16), and the MACs'
// third bytes 0x80 or more (the router's, the guests', the neighbours'; port a lets only its
// guest's in): as u32 such addresses and MACs' low words are no small integers, and such a
// number, or a time in ms, passed to a function V8 did not inline is a heap number at every
// call. Measured with V8 inlining nothing (test/support/steady-allocation.ts says why).
import t from 'tap';
import { checkSteady, stageBursts, steadyAllocation } from '../../test/support/steady-allocation.ts';
import type { Plugin } from '../../src/pipeline/api.ts';
import { arp, neighbourAdvertisement, udp4, udp6 } from '../../test/support/frames.ts';
import routing from './index.ts';

const BURST = 32;
/** bursts a call of the driver runs: V8 optimises a function called again and again whole */
const CHUNK = 100;
const WARM_UP = 30_000;
const MEASURED = 20_000;

const ROUTER_A = '02:00:c0:00:0a:01';
const ROUTER_B = '02:00:c0:00:0b:01';
const GUEST = '52:54:a0:00:00:0a';
const ports = [
  { name: 'a', settings: { addresses: ['192.168.1.1/24', '2001:db8:1::1/64'], routerMac: ROUTER_A, mtu: 1500, mac: GUEST, portSecurity: true } },
  { name: 'b', settings: { addresses: ['192.168.2.1/24', '2001:db8:2::1/64'], routerMac: ROUTER_B, mtu: 1500 } },
];
const config = {
  routes: [
    { prefix: '172.16.0.0/12', via: '192.168.2.2' },
    { prefix: '198.51.100.0/24', via: ['192.168.2.2', '192.168.2.3'] },
    { prefix: '2001:db8:99::/48', via: '2001:db8:2::2' },
  ],
  neighbours: [
    { address: '192.168.2.2', mac: '52:54:b0:00:00:b2', port: 'b' },
    { address: '192.168.2.3', mac: '52:54:b0:00:00:b3', port: 'b' },
    { address: '192.168.2.200', mac: '52:54:b0:00:00:c8', port: 'b' },
    { address: '2001:db8:2::2', mac: '52:54:b0:00:00:b2', port: 'b' },
    { address: '2001:db8:2::c8', mac: '52:54:b0:00:00:c8', port: 'b' },
  ],
};

const v4 = (dst: string, i: number, ttl = 64) => udp4({ srcMac: GUEST, dstMac: ROUTER_A, src: '192.168.1.2', dst, ttl, srcPort: 1000 + i, dstPort: 2000, payload: 18 });
const v6 = (dst: string, i: number, hopLimit = 64) => udp6({ srcMac: GUEST, dstMac: ROUTER_A, src: '2001:db8:1::2', dst, hopLimit, srcPort: 1000 + i, dstPort: 2000, payload: 18 });
/** port b's neighbour i, as it sends on b */
const neighbourMac = (i: number) => `52:54:f0:00:01:${(0x10 + i).toString(16)}`;
interface Mode {
  name: string;
  /** the port the burst comes in by (0: a, 1: b) */
  port?: number;
  frame: (i: number) => Uint8Array;
  /** every packet of the burst out of b, or none forwarded (dropped, or taken by the router) */
  forwarded: boolean;
}
const MODES: Mode[] = [
  { name: 'IPv4 through a gateway, to 172.16/12', frame: (i) => v4(`172.${16 + (i % 4)}.${i}.9`, i), forwarded: true },
  { name: 'IPv4 to a neighbour on a connected subnet', frame: (i) => v4('192.168.2.200', i), forwarded: true },
  { name: 'IPv4 over two equal-cost next hops, flows mixed', frame: (i) => v4(`198.51.100.${i}`, i), forwarded: true },
  { name: 'IPv6 through a gateway', frame: (i) => v6(`2001:db8:99::${i + 1}`, i), forwarded: true },
  { name: 'IPv6 to a neighbour on a connected subnet', frame: (i) => v6('2001:db8:2::c8', i), forwarded: true },
  { name: 'IPv4 with TTL 1: time exceeded, within the ICMP rate limit', frame: (i) => v4(`172.16.${i}.9`, i, 1), forwarded: false },
  { name: 'IPv6 with hop limit 1: time exceeded, within the ICMP rate limit', frame: (i) => v6(`2001:db8:99::${i + 1}`, i, 1), forwarded: false },
  {
    name: 'ARP replies to the router from neighbours on b',
    port: 1,
    frame: (i) => arp({ op: 'reply', srcMac: neighbourMac(i), dstMac: ROUTER_B, senderMac: neighbourMac(i), senderIp: `192.168.2.${10 + i}`, targetMac: ROUTER_B, targetIp: '192.168.2.1' }),
    forwarded: false,
  },
  {
    name: 'neighbour advertisements to the router from neighbours on b',
    port: 1,
    frame: (i) => neighbourAdvertisement({ srcMac: neighbourMac(i), dstMac: ROUTER_B, src: `2001:db8:2::${(0x10 + i).toString(16)}`, dst: '2001:db8:2::1', target: `2001:db8:2::${(0x10 + i).toString(16)}`, targetLinkAddr: neighbourMac(i), solicited: true }),
    forwarded: false,
  },
  { name: 'IPv4 to addresses on b that no neighbour answers: held, then dropped', frame: (i) => v4(`192.168.2.${100 + i}`, i), forwarded: false },
];

for (const mode of MODES) {
  t.test(mode.name, async (t) => {
    const frames = Array.from({ length: BURST }, (_, i) => mode.frame(i));
    const { run, egress } = await stageBursts(routing as Plugin<unknown, unknown>, { ports, config }, frames, mode.port ?? 0, CHUNK);
    for (let c = 0; c < WARM_UP / CHUNK; c++) run();
    if (mode.forwarded) t.same(egress(), Array(BURST).fill(1), 'every packet of the burst routed out of b: the forwarding path is the one measured');
    else t.same(egress().filter((e) => e >= 0), [], 'none of the burst forwarded');
    checkSteady(t, await steadyAllocation(run, MEASURED / CHUNK), MEASURED);
  });
}
