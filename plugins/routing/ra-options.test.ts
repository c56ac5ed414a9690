// What router advertisements say beyond prefixes and MTU: the M and O flags, the default
// router preference and lifetime, the A flag, and the DNS options of RFC 8106; checked by
// this project's parser and by Wireshark's (tshark), and the config's refusals.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import routing, { clock } from './index.ts';
import { PluginHarness, type HarnessPort } from '../../src/pipeline/testing.ts';
import { parseFrame, type ParsedFrame } from '../../test/support/frames.ts';
import { pcap } from '../../test/support/pcap.ts';

const ROUTER_MAC = '02:00:00:00:0a:01';
const ports: HarnessPort[] = [{ name: 'a', settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64', '2001:db8:9::1/80'], routerMac: ROUTER_MAC, mtu: 1500 } }];
let now = 1_000_000;
clock.now = () => now;

/** The periodic advertisement on port a under `config`: its bytes. */
async function advertisement(config: Record<string, unknown>): Promise<Uint8Array> {
  const h = await PluginHarness.create(routing, { ports, config });
  const ras = h.run('a', []).filter((o) => parseFrame(o.frame).ndp?.type === 134);
  if (ras.length !== 1) throw new Error(`${ras.length} advertisements, not 1`);
  return ras[0].frame;
}

const OPTIONS = {
  raInterval: 60,
  raDns: ['2001:db8::53', 'fe80::53'],
  raSearchDomains: ['example.com', 'Lab.Example.NET.'],
  raManaged: true,
  raOtherConfig: true,
  raAutonomous: false,
  raRouterLifetime: 600,
  raPreference: 'high',
};

t.test('by default: no flags, medium preference, autonomous /64s, no DNS options', async (t) => {
  const ra = parseFrame(await advertisement({})).ndp!;
  t.same([ra.managed, ra.otherConfig, ra.preference, ra.routerLifetime], [false, false, 0, 1800], 'M and O clear, medium, 1800 s');
  t.same(ra.prefixes!.map((p) => [p.prefix, p.autonomous]), [['2001:db8:1::', true], ['2001:db8:9::', false]], 'SLAAC on the /64 alone');
  t.same([ra.rdnss, ra.dnssl], [undefined, undefined], 'no RDNSS, no DNSSL');
});

t.test('every option set: flags, preference, lifetimes, DNS servers and search list', async (t) => {
  const frame = await advertisement(OPTIONS);
  const p: ParsedFrame = parseFrame(frame);
  const ra = p.ndp!;
  t.same([ra.managed, ra.otherConfig, ra.preference, ra.routerLifetime], [true, true, 1, 600], 'M, O, high (01), 600 s');
  t.same(ra.prefixes!.map((x) => [x.prefix, x.onLink, x.autonomous]), [['2001:db8:1::', true, false], ['2001:db8:9::', true, false]], 'on-link, no SLAAC: the A flag cleared');
  t.same(ra.rdnss, { lifetime: 180, servers: ['2001:db8::53', 'fe80::53'] }, 'RDNSS: both servers, three intervals');
  t.same(ra.dnssl, { lifetime: 180, domains: ['example.com', 'lab.example.net'] }, 'DNSSL: both names, in lower case, no final dot');
  t.equal(ra.mtu, 1500, 'the MTU option still');
  t.equal(p.l4?.checksumOk, true, 'a good ICMPv6 checksum');
  t.equal(p.ip?.totalLength, p.length - 14, 'the IPv6 length covers every option');

  const haveTshark = spawnSync('tshark', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!haveTshark) {
    t.fail('tshark is not installed (scripts/setup-peers.sh installs it: Debian package tshark)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ra-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'ra.pcap');
  writeFileSync(file, pcap([frame]));
  const fields = ['icmpv6.checksum.status', 'icmpv6.nd.ra.flag.m', 'icmpv6.nd.ra.flag.o', 'icmpv6.nd.ra.flag.prf', 'icmpv6.nd.ra.router_lifetime', 'icmpv6.opt.rdnss', 'icmpv6.opt.rdnss.lifetime', 'icmpv6.opt.dnssl', 'icmpv6.opt.dnssl.lifetime', 'icmpv6.opt.prefix.flag.a', '_ws.expert.severity'];
  // prettier-ignore
  const out = execFileSync('tshark', ['-r', file, '-n', '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=a', '-E', 'aggregator=,',
    ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
  const row = Object.fromEntries(out.trim().split('|').map((v, i) => [fields[i], v]));
  t.equal(row['icmpv6.checksum.status'], '1', 'tshark: a good checksum');
  t.same([row['icmpv6.nd.ra.flag.m'], row['icmpv6.nd.ra.flag.o'], row['icmpv6.nd.ra.flag.prf'], row['icmpv6.nd.ra.router_lifetime']].map(Number), [1, 1, 1, 600], 'tshark: M, O, high, 600 s');
  t.equal(row['icmpv6.opt.rdnss'], '2001:db8::53,fe80::53', 'tshark: the DNS servers');
  t.equal(row['icmpv6.opt.dnssl'], 'example.com,lab.example.net', 'tshark: the search list');
  t.same([row['icmpv6.opt.rdnss.lifetime'], row['icmpv6.opt.dnssl.lifetime']].map(Number), [180, 180], 'tshark: their lifetimes');
  t.same(row['icmpv6.opt.prefix.flag.a'].split(',').map(Number), [0, 0], 'tshark: no A flag');
  t.equal(row['_ws.expert.severity'], '', 'tshark finds nothing malformed or odd');
});

t.test('with DNS options, fewer prefixes fit the MTU, and the advertisement stays within it', async (t) => {
  const many = Array.from({ length: 60 }, (_, k) => `2001:db8:${(k + 16).toString(16)}::1/64`);
  const long = Array.from({ length: 8 }, (_, k) => `2001:db8::${k + 1}`);
  const domains = Array.from({ length: 9 }, (_, k) => `d${k}.abcdefghijklmno.example`); // 28 bytes each as labels
  const h = await PluginHarness.create(routing, { ports: [{ name: 'a', settings: { addresses: ['10.0.1.1/24', ...many], routerMac: ROUTER_MAC, mtu: 1280 } }], config: { raDns: long, raSearchDomains: domains } });
  const [ra] = h.run('a', []).map((o) => parseFrame(o.frame)).filter((f) => f.ndp?.type === 134);
  t.ok(ra.length <= 14 + 1280, `within the port's MTU of 1280 (${ra.length} bytes)`);
  // 1280 - 40 (IPv6) - 32 (RA, source link-layer, MTU) - 136 (RDNSS) - 264 (DNSSL) = 808: 25 prefixes of 32
  t.equal(ra.ndp!.prefixes!.length, 25, 'as many prefixes as fit beside the DNS options');
  t.same([ra.ndp!.rdnss!.servers.length, ra.ndp!.dnssl!.domains.length], [8, 9], 'every server and name');
  t.equal(ra.l4?.checksumOk, true);
});

t.test('refused, naming the field and why', async (t) => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ raDns: ['192.0.2.53'] }, 'raDns[0]', /192\.0\.2\.53 is IPv4/],
    [{ raDns: ['ff02::fb'] }, 'raDns[0]', /multicast address: a DNS server is one host/],
    [{ raDns: 'fe80::1' }, 'raDns', /must be an array/],
    [{ raDns: Array.from({ length: 9 }, (_, k) => `2001:db8::${k + 1}`) }, 'raDns', /9 servers, at most 8/],
    [{ raSearchDomains: ['ok.example', 'bad_name.example'] }, 'raSearchDomains[1]', /label "bad_name"/],
    [{ raSearchDomains: ['-x.example'] }, 'raSearchDomains[0]', /inner hyphens/],
    [{ raSearchDomains: [''] }, 'raSearchDomains[0]', /1 to 253 characters/],
    [{ raSearchDomains: Array.from({ length: 10 }, (_, k) => `d${k}.abcdefghijklmno.example`) }, 'raSearchDomains', /take 280 bytes in the option, at most 256/],
    [{ raManaged: 'yes' }, 'raManaged', /must be true or false/],
    [{ raInterval: 600, raRouterLifetime: 300 }, 'raRouterLifetime', /shorter than raInterval \(600 s\)/],
    [{ raRouterLifetime: 9001 }, 'raRouterLifetime', /from 0 to 9000/],
    [{ raPreference: 'highest' }, 'raPreference', /"high", "medium" or "low"/],
    [{ raRouterLifetime: 0, raPreference: 'low' }, 'raPreference', /no default router: its preference must be "medium"/],
    [{ raDnsServers: [] }, 'raDnsServers', /unknown key/],
  ];
  for (const [config, field, message] of cases) {
    const err = t.throws(() => routing.parseConfig!(config), `${JSON.stringify(config).slice(0, 60)} refused`) as { field?: string; message?: string };
    t.equal(err.field, field, `naming ${field}`);
    t.match(err.message, message);
  }
  t.doesNotThrow(() => routing.parseConfig!({ raRouterLifetime: 0, raPreference: 'medium' }), 'a router that is no default router, medium');
});

t.test('a router lifetime of 0: the prefixes are advertised, the router is no default router', async (t) => {
  const ra = parseFrame(await advertisement({ raRouterLifetime: 0 })).ndp!;
  t.equal(ra.routerLifetime, 0);
  t.equal(ra.prefixes!.length, 2, 'the prefixes still');
});

t.test('as vrouter stops: a last advertisement of router lifetime 0 on each interface that advertises, then none', async (t) => {
  const h = await PluginHarness.create(routing, {
    ports: [
      ...ports,
      { name: 'b', settings: { addresses: ['2001:db8:2::1/64'], routerMac: '02:00:00:00:0b:01', mtu: 1500 } },
      { name: 'up', settings: { addresses: ['2001:db8:3::1/64'], routerMac: '02:00:00:00:0c:01', mtu: 1500, routerAdvertisements: false } },
    ],
    config: { raPreference: 'high', raManaged: true, raDns: ['2001:db8::53'], raSearchDomains: ['example.com'] },
  });
  const first = h.run('a', []).map((o) => ({ to: o.to, ra: parseFrame(o.frame).ndp })).filter((o) => o.ra?.type === 134);
  t.same(first.map((o) => [o.to, o.ra!.routerLifetime]), [['a', 1800], ['b', 1800]], 'the first advertisements, a default router for 1800 s');
  h.stopping();
  const last = h.runWanted().map((o) => ({ to: o.to, ra: parseFrame(o.frame).ndp })).filter((o) => o.ra?.type === 134);
  t.same(last.map((o) => [o.to, o.ra!.routerLifetime, o.ra!.preference, o.ra!.managed]), [['a', 0, 0, true], ['b', 0, 0, true]], 'as it stops: lifetime 0 (medium preference, as RFC 4191 has it then) on a and b, none on the port that sends none');
  t.same(last.find((o) => o.to === 'a')!.ra!.prefixes!.map((p) => p.prefix), ['2001:db8:1::', '2001:db8:9::'], 'its prefixes still (on-link, the hosts keep their addresses)');
  const onA = last.find((o) => o.to === 'a')!.ra!;
  t.same([onA.rdnss, onA.dnssl], [{ lifetime: 0, servers: ['2001:db8::53'] }, { lifetime: 0, domains: ['example.com'] }], 'its DNS server and search list, of lifetime 0 (RFC 8106 5.1)');
  t.same([first[0].ra!.rdnss!.lifetime, first[0].ra!.dnssl!.lifetime], [90, 90], 'where they had three intervals before');
  now += 3_600_000;
  for (let k = 0; k < 100; k++) h.betweenBursts();
  t.same(h.runWanted().filter((o) => parseFrame(o.frame).ndp?.type === 134), [], 'no periodic one after it');
});

t.test('ports changed at run time: a last advertisement where the router or a prefix goes, none elsewhere', async (t) => {
  const v6 = (n: number, extra: Record<string, unknown> = {}) => ({ addresses: [`2001:db8:${n}::1/64`], routerMac: `02:00:00:00:0${n}:01`, mtu: 1500, ...extra });
  const before: HarnessPort[] = [
    { name: 'a', settings: { addresses: ['2001:db8:1::1/64', '2001:db8:9::1/80'], routerMac: '02:00:00:00:01:01', mtu: 1500 } },
    { name: 'b', settings: v6(2) },
    { name: 'c', settings: v6(3) },
    { name: 'd', settings: v6(4) },
    { name: 'e', settings: v6(5) },
    { name: 'f', settings: v6(6) },
    { name: 'up', settings: v6(8, { routerAdvertisements: false }) },
    { name: 'm1', bridge: 'br', settings: { mtu: 1500 } },
    { name: 'm2', bridge: 'br', settings: { mtu: 1500 } },
  ];
  const bridgeSettings = { br: { addresses: ['2001:db8:7::1/64'], routerMac: '02:00:00:00:07:01' } };
  const after: HarnessPort[] = [
    { name: 'f', settings: v6(6) },
    { name: 'a', settings: { addresses: ['2001:db8:1::1/64'], routerMac: '02:00:00:00:01:01', mtu: 1500 } },
    { name: 'c', settings: { addresses: ['10.0.3.1/24'], routerMac: '02:00:00:00:03:01', mtu: 1500 } },
    { name: 'd', settings: v6(4, { routerMac: '02:00:00:00:0d:01' }) },
    { name: 'e', settings: v6(5, { routerAdvertisements: false }) },
    { name: 'up', settings: v6(8, { routerAdvertisements: false }) },
    { name: 'm1', bridge: 'br', settings: { mtu: 1500 } },
    { name: 'm2', settings: { mtu: 1500 } },
  ];
  const config = { raDns: ['2001:db8::53'] };
  const h = await PluginHarness.create(routing, { ports: before, config, bridgeSettings });
  const ras = (outcomes: ReturnType<typeof h.runWanted>) => outcomes.map((o) => ({ to: o.to, ra: parseFrame(o.frame).ndp })).filter((o) => o.ra?.type === 134);
  const lifetimes = (ra: ParsedFrame['ndp']) => ra!.prefixes!.map((p) => `${p.prefix}/${p.length} ${p.validLifetime} ${p.preferredLifetime}`);
  t.same(ras(h.run('a', [])).map((o) => [o.to, o.ra!.routerLifetime]), [['a', 1800], ['b', 1800], ['c', 1800], ['d', 1800], ['e', 1800], ['f', 1800], ['m1', 1800], ['m2', 1800]], 'the first advertisements');

  h.leaving(after, bridgeSettings);
  const last = ras(h.runWanted());
  const on = (port: string) => last.filter((o) => o.to === port).map((o) => o.ra!);
  t.same(on('a').map((ra) => ra.routerLifetime), [1800], 'a stays the router on a');
  t.same(lifetimes(on('a')[0]), ['2001:db8:1::/64 86400 14400', '2001:db8:9::/80 0 0'], "the prefix a loses, with lifetimes 0; the one it keeps as before");
  t.same(on('a')[0].rdnss, { lifetime: 90, servers: ['2001:db8::53'] }, 'its DNS server as before');
  t.same(on('b').map((ra) => [ra.routerLifetime, ra.rdnss!.lifetime, ...lifetimes(ra)]), [[0, 0, '2001:db8:2::/64 0 0']], 'b removed: router lifetime 0, its DNS server and its prefix withdrawn');
  t.same(on('c').map((ra) => [ra.routerLifetime, ...lifetimes(ra)]), [[0, '2001:db8:3::/64 0 0']], 'c without IPv6 addresses: the router and the prefix go');
  t.same(on('d').map((ra) => [ra.routerLifetime, ...lifetimes(ra)]), [[0, '2001:db8:4::/64 86400 14400']], 'd with another router MAC: the router of the old link-local address goes, the prefix stays');
  t.same(on('e').map((ra) => [ra.routerLifetime, ...lifetimes(ra)]), [[0, '2001:db8:5::/64 86400 14400']], 'e advertising no more: the router goes, the prefix is still on-link');
  t.same([on('f'), on('up')], [[], []], 'none on f, which changes nothing, nor on the port that sends none');
  t.same([on('m1').map((ra) => ra.routerLifetime), on('m2').map((ra) => [ra.routerLifetime, ...lifetimes(ra)])], [[1800], [[0, '2001:db8:7::/64 0 0']]], 'the member that leaves the routed bridge gets the farewell, the one that stays does not');

  h.leaving(after, bridgeSettings);
  t.same(ras(h.runWanted()), [], 'told again of the same change: nothing more');

  now += 3_600_000;
  const periodic = ras(h.run('a', []));
  t.same(periodic.map((o) => [o.to, o.ra!.routerLifetime]), [['a', 1800], ['b', 0], ['c', 0], ['d', 0], ['e', 0], ['f', 1800], ['m1', 1800], ['m2', 0]], 'until the PMD is replaced, its advertisements say the same');

  const other = await PluginHarness.create(routing, { ports: before, config, bridgeSettings, pmd: 1, pmdCount: 2 });
  other.leaving(after, bridgeSettings);
  t.same(ras(other.runWanted()), [], 'PMD 1 sends none: PMD 0 advertises');
});
