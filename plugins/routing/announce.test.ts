// The announcements of a PMD started on a new topology (announce.ts): a gratuitous ARP and an
// unsolicited neighbour advertisement for each address of an interface whose router MAC or
// addresses changed, on each of its ports once up; none elsewhere, none from other PMDs,
// none at a start that replaces nothing. Checked by this project's parser and by tshark. And
// an interface's new MTU, in the router advertisement PMD 0 sends as it starts.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import routing, { clock } from './index.ts';
import { PluginHarness, type HarnessPort } from '../../src/pipeline/testing.ts';
import { parseFrame } from '../../test/support/frames.ts';
import { pcap } from '../../test/support/pcap.ts';

clock.now = () => 1_000_000;

const MAC = { a: '02:00:00:00:0a:01', a2: '02:00:00:00:0a:02', b: '02:00:00:00:0b:01', c: '02:00:00:00:0c:01', br: '02:00:00:00:0d:01' };
const now: HarnessPort[] = [
  { name: 'a', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: MAC.a2, mtu: 1500 } },
  { name: 'b', settings: { addresses: ['10.0.2.1/24', '10.0.9.1/24'], routerMac: MAC.b, mtu: 1500 } },
  { name: 'c', settings: { addresses: ['10.0.3.1/24'], routerMac: MAC.c, mtu: 1500 } },
  { name: 'd', settings: { addresses: ['10.0.4.1/24'], routerMac: '02:00:00:00:0e:01', mtu: 1500 } },
  { name: 'm1', bridge: 'br', settings: { mtu: 1500 } },
  { name: 'm2', bridge: 'br', settings: { mtu: 1500 } },
];
const bridgeSettings = { br: { addresses: ['10.0.5.1/24'], routerMac: MAC.br } };
const before: HarnessPort[] = [
  { name: 'c', settings: { addresses: ['10.0.3.1/24'], routerMac: MAC.c, mtu: 1500 } },
  { name: 'a', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: MAC.a, mtu: 1500 } },
  { name: 'b', settings: { addresses: ['10.0.2.1/24'], routerMac: MAC.b, mtu: 1500 } },
  { name: 'm1', bridge: 'br', settings: { mtu: 1500 } },
  { name: 'm2', bridge: 'br', settings: { mtu: 1500 } },
];

/** Whether a frame is an ARP packet or a neighbour advertisement (not a router advertisement, which a start sends too). */
const isAnnouncement = (frame: Uint8Array) => {
  const f = parseFrame(frame);
  return f.arp !== undefined || f.ndp?.type === 136;
};

/** The announcements the PMD sends between bursts, as [port, what] pairs. */
function sent(h: PluginHarness<unknown, unknown>): [string, string][] {
  h.betweenBursts();
  return h.runWanted().filter((o) => isAnnouncement(o.frame)).map((o) => {
    const f = parseFrame(o.frame);
    if (f.arp) return [o.to, `arp ${f.arp.op} ${f.arp.senderMac} ${f.arp.senderIp} -> ${f.arp.targetMac} ${f.arp.targetIp}, to ${f.dstMac}`];
    const tll = f.ndp?.options.find((x) => x.type === 2)?.value;
    const mac = tll === undefined ? '?' : [...tll].map((b) => b.toString(16).padStart(2, '0')).join(':');
    return [o.to, `na ${f.ndp?.target} R${Number(f.ndp?.router)} S${Number(f.ndp?.solicited)} O${Number(f.ndp?.override)} ${mac}, ${f.ip?.src} -> ${f.ip?.dst} via ${f.dstMac}, checksum ${f.l4?.checksumOk}`];
  });
}

t.test('a new router MAC, a new address, a new port: announced once on each of their ports, nothing else', async (t) => {
  const h = await PluginHarness.create(routing, { ports: now, bridgeSettings, previous: { ports: before, bridgeSettings } });
  t.same(sent(h), [
    ['a', `arp 1 ${MAC.a2} 10.0.1.1 -> 00:00:00:00:00:00 10.0.1.1, to ff:ff:ff:ff:ff:ff`],
    ['a', `na 2001:db8:1::1 R1 S0 O1 ${MAC.a2}, 2001:db8:1::1 -> ff02::1 via 33:33:00:00:00:01, checksum true`],
    ['b', `arp 1 ${MAC.b} 10.0.2.1 -> 00:00:00:00:00:00 10.0.2.1, to ff:ff:ff:ff:ff:ff`],
    ['b', `arp 1 ${MAC.b} 10.0.9.1 -> 00:00:00:00:00:00 10.0.9.1, to ff:ff:ff:ff:ff:ff`],
    ['d', `arp 1 02:00:00:00:0e:01 10.0.4.1 -> 00:00:00:00:00:00 10.0.4.1, to ff:ff:ff:ff:ff:ff`],
  ], 'a (new MAC), b (an address added: all of its own), d (new); not c (as it was) nor the bridge (as it was)');
  t.match(h.counts('a'), { arp_requests_sent: 1, neighbour_advertisements_sent: 1 }, 'counted on the port they went out of');
  t.same(sent(h), [], 'once');
});

t.test('on a bridge whose router MAC changed: each member, once it is up', async (t) => {
  const moved = { br: { ...bridgeSettings.br, routerMac: '02:00:00:00:0d:02' } };
  const h = await PluginHarness.create(routing, { ports: before, bridgeSettings: moved, previous: { ports: before, bridgeSettings } });
  h.setPortUp('m2', false);
  const arp = (port: string): [string, string] => [port, 'arp 1 02:00:00:00:0d:02 10.0.5.1 -> 00:00:00:00:00:00 10.0.5.1, to ff:ff:ff:ff:ff:ff'];
  t.same(sent(h), [arp('m1')], 'm1 (up): announced; m2 (down): not');
  t.same(sent(h), [], 'once');
  const down = await PluginHarness.create(routing, { ports: before, bridgeSettings: moved, previous: { ports: before, bridgeSettings } });
  down.setPortUp('m1', false);
  down.setPortUp('m2', false);
  t.same(sent(down), [], 'no member up: nothing yet');
  down.setPortUp('m2', true);
  t.same(sent(down), [arp('m2')], 'the first member up gets it');
});

t.test('no announcements from other PMDs, nor where nothing is replaced', async (t) => {
  const other = await PluginHarness.create(routing, { ports: now, bridgeSettings, previous: { ports: before, bridgeSettings }, pmd: 1, pmdCount: 2 });
  t.same(sent(other), [], 'PMD 1');
  const fresh = await PluginHarness.create(routing, { ports: now, bridgeSettings });
  t.same(sent(fresh), [], "vrouter's start (or a restart): none");
});

t.test('tshark reads the announcement and the advertisement as such', async (t) => {
  const h = await PluginHarness.create(routing, { ports: now, bridgeSettings, previous: { ports: before, bridgeSettings } });
  h.betweenBursts();
  const frames = h.runWanted().filter((o) => o.to === 'a' && isAnnouncement(o.frame)).map((o) => o.frame);
  const dir = mkdtempSync(join(tmpdir(), 'announce-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'a.pcap');
  writeFileSync(file, pcap(frames));
  const fields = ['arp.isannouncement', 'arp.src.proto_ipv4', 'icmpv6.type', 'icmpv6.checksum.status', 'icmpv6.nd.na.flag.r', 'icmpv6.nd.na.flag.s', 'icmpv6.nd.na.flag.o', 'icmpv6.opt.linkaddr', '_ws.expert.severity'];
  // prettier-ignore
  const out = execFileSync('tshark', ['-r', file, '-n', '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  const rows = out.trim().split('\n').map((line) => Object.fromEntries(line.split('|').map((v, i) => [fields[i], v])));
  t.same([rows[0]['arp.isannouncement'], rows[0]['arp.src.proto_ipv4']], ['1', '10.0.1.1'], 'an ARP announcement of 10.0.1.1');
  t.same([rows[1]['icmpv6.type'], rows[1]['icmpv6.checksum.status'], rows[1]['icmpv6.nd.na.flag.r'], rows[1]['icmpv6.nd.na.flag.s'], rows[1]['icmpv6.nd.na.flag.o'], rows[1]['icmpv6.opt.linkaddr']], ['136', '1', '1', '0', '1', MAC.a2], 'a neighbour advertisement, good checksum, R and O, not S, the new MAC');
  t.same(rows.map((r) => r['_ws.expert.severity']), ['', ''], 'tshark finds nothing malformed or odd');
});

t.test("an interface's new MTU: advertised at once by PMD 0 (a router advertisement's MTU option), not at the next period", async (t) => {
  const port = (mtu: number): HarnessPort[] => [{ name: 'a', settings: { addresses: ['2001:db8:1::1/64'], routerMac: MAC.a, mtu } }];
  const h = await PluginHarness.create(routing, { ports: port(9000), previous: { ports: port(1500) } });
  // The periodic check runs every so many rounds between bursts (RA_CHECK_ROUNDS).
  for (let round = 0; round < 64; round++) h.betweenBursts();
  const advertised = h.runWanted().map((o) => parseFrame(o.frame)).filter((f) => f.ndp?.type === 134);
  t.same(advertised.map((f) => f.ndp?.mtu), [9000], 'one advertisement, with the MTU of 9000');
});
