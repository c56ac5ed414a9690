// The acl stage on crafted frames: rule fields (IPv4, IPv6, ports and ranges, ICMP, TCP
// flags, in and out ports, fragments, extension headers), the default action, rejects as
// the sender receives them (addresses, checksums, sequence numbers), the rate limit, hit
// counters, policer marks, malformed headers, and config errors that name the field.
import t from 'tap';
import { EGRESS_FLOOD, EGRESS_UNDECIDED } from '../../src/pipeline/api.ts';
import { arp, icmp4, icmp6, parseFrame, tcp4, tcp6, udp4, udp6 } from '../../test/support/frames.ts';
import { aclHarness, type AclHarnessOptions } from './acl-harness.ts';
import { FRAGMENT_TIMEOUT_MS } from './fragments.ts';
import acl, { readRuleHits } from './index.ts';
import { parseAclConfig, rulesFor } from './rules.ts';
import { regionNames } from './tables.ts';

const PORTS = [
  { name: 'a', settings: { addresses: ['10.0.0.1/24', '2001:db8:a::1/64'], routerMac: '02:00:00:00:00:aa' } },
  { name: 'b', settings: { addresses: ['10.0.1.1/24'], routerMac: '02:00:00:00:00:bb' } },
  { name: 'c', bridge: 'br0' },
];
const BRIDGES = { br0: { addresses: ['192.168.9.1/24'], routerMac: '02:00:00:00:00:cc' } };

/** Routing stand-in: 10.0.1.0/24 leaves by b, 10.0.0.0/24 by a, 192.168.9.255 floods, the rest undecided. */
function route(frame: Uint8Array): number {
  const ip = parseFrame(frame).ip;
  if (ip === undefined) return EGRESS_UNDECIDED;
  if (ip.dst.startsWith('10.0.1.')) return 1;
  if (ip.dst.startsWith('10.0.0.')) return 0;
  if (ip.dst === '192.168.9.255') return EGRESS_FLOOD;
  return EGRESS_UNDECIDED;
}

function harness(config: Record<string, unknown>, more: Partial<AclHarnessOptions> = {}) {
  return aclHarness({ ports: PORTS, bridgeSettings: BRIDGES, config, route, ...more });
}

/** The verdict per frame: 'pass' (not dropped), 'drop:REASON', or 'reject' (sent back). */
function verdicts(out: ReturnType<Awaited<ReturnType<typeof harness>>['run']>, ingress: string): string[] {
  return out.map((o) => (o.to === 'drop' ? `drop:${o.reason}` : o.to === ingress && o.frame.length !== 0 && isAnswer(o.frame) ? 'reject' : 'pass'));
}

function isAnswer(frame: Uint8Array): boolean {
  const f = parseFrame(frame);
  return (f.l4?.tcpFlags?.includes('R') ?? false) || (f.ip?.protocol === 1 && f.l4?.type === 3 && f.l4.code === 13) || (f.ip?.protocol === 58 && f.l4?.type === 1 && f.l4.code === 1);
}

const base4 = { src: '10.0.0.2', dst: '10.0.1.5' };
const base6 = { src: '2001:db8:a::2', dst: '2001:db8:b::5' };

t.test('rule fields: addresses, protocol, ports and ranges, ICMP, TCP flags, in and out ports', async (t) => {
  const h = await harness({
    acl: [
      { action: 'deny', src: '10.0.0.2/32', dst: '10.0.1.0/24', protocol: 'udp', dstPort: '1000-2000' },
      { action: 'deny', protocol: 'udp', srcPort: 7 },
      { action: 'deny', protocol: 'icmp', icmpType: 8, icmpCode: 0 },
      { action: 'deny', protocol: 'icmpv6', icmpType: '128-129' },
      { action: 'deny', protocol: 'tcp', tcpFlags: 'S/SA', dstPort: 80 },
      { action: 'deny', src: '2001:db8:a::/48', protocol: 'tcp', dstPort: 443 },
      { action: 'deny', inPort: 'b', protocol: 'udp' },
      { action: 'deny', outPort: 'b', protocol: 47 },
    ],
  });
  const cases: [Uint8Array, string, string, string][] = [
    [udp4({ ...base4, srcPort: 5, dstPort: 1000 }), 'a', 'drop:acl_deny', 'udp to the low end of the range'],
    [udp4({ ...base4, srcPort: 5, dstPort: 2000 }), 'a', 'drop:acl_deny', 'udp to the high end'],
    [udp4({ ...base4, srcPort: 5, dstPort: 2001 }), 'a', 'pass', 'udp just past the range'],
    [udp4({ ...base4, src: '10.0.0.3', srcPort: 5, dstPort: 1500 }), 'a', 'pass', 'another source'],
    [udp4({ ...base4, srcPort: 7, dstPort: 9 }), 'a', 'drop:acl_deny', 'source port 7'],
    [icmp4({ ...base4, type: 8, id: 1 }), 'a', 'drop:acl_deny', 'echo request'],
    [icmp4({ ...base4, type: 8, code: 1 }), 'a', 'pass', 'type 8 code 1'],
    [icmp4({ ...base4, type: 0 }), 'a', 'pass', 'echo reply'],
    [icmp6({ ...base6, type: 129 }), 'a', 'drop:acl_deny', 'ICMPv6 echo reply'],
    [icmp6({ ...base6, type: 130 }), 'a', 'pass', 'ICMPv6 type 130'],
    [tcp4({ ...base4, srcPort: 5, dstPort: 80, flags: 'S' }), 'a', 'drop:acl_deny', 'SYN to 80'],
    [tcp4({ ...base4, srcPort: 5, dstPort: 80, flags: 'SA' }), 'a', 'pass', 'SYN-ACK from 80 is not S/SA'],
    [tcp4({ ...base4, srcPort: 5, dstPort: 80, flags: 'PA' }), 'a', 'pass', 'data to 80'],
    [tcp6({ ...base6, srcPort: 5, dstPort: 443, flags: 'PA' }), 'a', 'drop:acl_deny', 'IPv6 source in /48'],
    [tcp6({ ...base6, src: '2001:db8:1::2', srcPort: 5, dstPort: 443, flags: 'PA' }), 'a', 'pass', 'IPv6 source outside'],
  ];
  const out = h.run('a', cases.map(([f]) => f));
  t.equal(out.length, cases.length, 'an outcome for every case');
  const got = verdicts(out, 'a');
  cases.forEach(([, , want, what], i) => t.equal(got[i], want, what));
  t.same(verdicts(h.run('b', [udp4({ src: '10.0.1.5', dst: '10.0.0.2', srcPort: 1, dstPort: 2 })]), 'b'), ['drop:acl_deny'], 'udp in by b');
  t.same(verdicts(h.run('a', [udp4({ src: '10.0.0.2', dst: '10.0.0.3', srcPort: 1, dstPort: 2 })]), 'a'), ['pass'], 'udp in by a');
  const gre = (dst: string) => udp4({ ...base4, dst, srcPort: 1, dstPort: 2 }).map((b, i) => (i === 14 + 9 ? 47 : b));
  t.same(verdicts(h.run('a', [gre('10.0.1.9'), gre('10.0.0.9'), gre('192.168.9.255'), gre('8.8.8.8')]), 'a'), ['drop:acl_deny', 'pass', 'pass', 'pass'], 'out port b only when routing chose b (not flood, not undecided)');
});

t.test('first match wins; no match takes aclDefault; ARP is not filtered', async (t) => {
  const frames = [udp4({ ...base4, srcPort: 1, dstPort: 53 }), udp4({ ...base4, srcPort: 1, dstPort: 54 }), arp({ op: 'request', senderMac: '52:54:00:00:00:02', senderIp: '10.0.0.2', targetIp: '10.0.0.1' })];
  const rules = [{ action: 'permit', dstPort: 53, protocol: 'udp' }, { action: 'deny', protocol: 'udp', dstPort: '0-100' }];
  const permit = await harness({ acl: rules });
  t.same(verdicts(permit.run('a', frames), 'a'), ['pass', 'drop:acl_deny', 'pass']);
  const deny = await harness({ acl: rules.slice(0, 1), aclDefault: 'deny' });
  t.same(verdicts(deny.run('a', frames), 'a'), ['pass', 'drop:acl_deny', 'pass'], 'default deny: ARP still passes');
  const empty = await harness({ aclDefault: 'deny' });
  t.same(verdicts(empty.run('a', frames), 'a'), ['drop:acl_deny', 'drop:acl_deny', 'pass'], 'no rules, default deny');
  const out = empty.run('a', frames);
  t.equal(out[2].to, 'undecided', 'ARP left as it was');
  t.same(out[2].frame, frames[2], 'untouched');
});

t.test('packets an earlier stage dropped are left alone', async (t) => {
  const h = await aclHarness({ ports: PORTS, config: { aclDefault: 'reject' }, route: () => -1000 });
  const out = h.run('a', [udp4({ ...base4, srcPort: 1, dstPort: 2 })]);
  t.equal(out[0].to, 'drop');
  t.not(out[0].reason, 'acl_deny', 'the earlier drop reason stays');
  t.same(h.counts('a').acl_rejected, undefined, 'not rejected');
});

t.test('fragments: the first has ports; later ones match only rules without L4 fields', async (t) => {
  const h = await harness({ acl: [{ action: 'permit', protocol: 'udp', dstPort: 53 }, { action: 'permit', protocol: 'udp', src: '10.0.0.0/24' }], aclDefault: 'deny' });
  const first = udp4({ ...base4, srcPort: 1, dstPort: 53, mf: true, payload: 16 });
  const later = (src: string) => udp4({ ...base4, src, srcPort: 1, dstPort: 53, fragOffset: 24 });
  t.same(verdicts(h.run('a', [first, later('10.0.0.2'), later('10.9.0.2')]), 'a'), ['pass', 'pass', 'drop:acl_deny']);
});

t.test('later fragments get what their first fragment got, in its burst or after', async (t) => {
  // Judged alone, a later fragment would match only the portless rule 2 (permit) or the default (deny).
  const h = await harness({ acl: [{ action: 'permit', protocol: 'udp', dstPort: 53 }, { action: 'deny', protocol: 'udp', dstPort: 54 }, { action: 'permit', protocol: 'udp', src: '10.0.0.0/24' }], aclDefault: 'deny' });
  const first = (dstPort: number, id: number) => udp4({ ...base4, id, srcPort: 1, dstPort, mf: true, payload: 16 });
  const later = (id: number, fragOffset: number, last: boolean, o: Partial<typeof base4> = {}) => udp4({ ...base4, ...o, id, srcPort: 1, dstPort: 1, fragOffset, mf: !last, payload: 16 });
  t.same(verdicts(h.run('a', [first(53, 7), later(7, 24, false), later(7, 48, true)]), 'a'), ['pass', 'pass', 'pass'], 'a permitted packet in one burst');
  t.same(verdicts(h.run('a', [first(54, 8), later(8, 24, false)]), 'a'), ['drop:acl_deny', 'drop:acl_deny'], 'a denied one: its rest is denied too, not passed by rule 2');
  t.same(verdicts(h.run('a', [later(8, 48, true)]), 'a'), ['drop:acl_deny'], 'and in a later burst');
  t.same(verdicts(h.run('a', [later(8, 48, true)]), 'a'), ['pass'], 'its last fragment went by: the entry is gone, the rules decide');
  t.same(h.counts('a').acl_fragments_followed, 4, 'four fragments followed their first');
  t.same(readRuleHits(h.shared, h.config).rules, [1, 1, 1], 'rule hits count the packets the rules judged');

  t.same(verdicts(h.run('a', [first(54, 9)]), 'a'), ['drop:acl_deny']);
  t.same(verdicts(h.run('a', [later(10, 24, true), later(9, 24, true, { src: '10.0.0.3' }), later(9, 24, true, { dst: '10.0.1.6' })]), 'a'), ['pass', 'pass', 'pass'], 'another identification, source or destination is another packet: the rules decide');
  t.same(verdicts(h.run('a', [later(9, 24, false)]), 'a'), ['drop:acl_deny'], 'the entry stands for its own key');
  t.same(h.counts('a').acl_fragments_followed, 5);

  let now = 5_000_000;
  h.clock = h.state.now = () => now;
  t.same(verdicts(h.run('a', [first(54, 11)]), 'a'), ['drop:acl_deny']);
  now += FRAGMENT_TIMEOUT_MS - 1;
  t.same(verdicts(h.run('a', [later(11, 24, false)]), 'a'), ['drop:acl_deny'], 'an entry serves for FRAGMENT_TIMEOUT_MS');
  now += 1;
  t.same(verdicts(h.run('a', [later(11, 48, true)]), 'a'), ['pass'], 'and no longer');
  t.same(h.counts('a').acl_fragments_followed, 6);
});

t.test("fragments follow in any order, only their own port's first fragment, whatever another port floods", async (t) => {
  const h = await harness({ acl: [{ action: 'permit', protocol: 'udp', dstPort: 53 }], aclDefault: 'deny' });
  const first = (id: number, dstPort = 53) => udp4({ ...base4, id, srcPort: 1, dstPort, mf: true, payload: 16 });
  const later = (id: number, fragOffset: number, last: boolean) => udp4({ ...base4, id, srcPort: 1, dstPort: 1, fragOffset, mf: !last, payload: 16 });
  t.same(verdicts(h.run('a', [first(1), later(1, 48, true), later(1, 24, false)]), 'a'), ['pass', 'pass', 'pass'], 'the last fragment before the middle one: the entry serves until all the bytes came');
  t.same(verdicts(h.run('a', [later(1, 24, false)]), 'a'), ['drop:acl_deny'], 'then it is gone');
  t.same(h.counts('a').acl_fragments_followed, 2);

  // a's first fragment; the same packet's later fragment from b is b's to judge
  t.same(verdicts(h.run('a', [first(3)]), 'a'), ['pass']);
  t.same(verdicts(h.run('b', [later(3, 24, true)]), 'b'), ['drop:acl_deny'], "b's fragment does not follow a's entry");
  t.same(verdicts(h.run('a', [later(3, 24, false)]), 'a'), ['pass'], "and b's last fragment did not end a's entry");

  // b floods the table with first fragments (denied) of 4,096 packets: a's entry stays
  for (let burst = 0; burst < 128; burst++) h.run('b', Array.from({ length: 32 }, (_, j) => first(10_000 + burst * 32 + j, 54)));
  t.same(verdicts(h.run('a', [later(3, 48, true)]), 'a'), ['pass'], "a's entry outlived b's flood");
  t.equal(h.counts('b').acl_fragments_unfollowed, undefined, 'b gave up its own entries to its new ones');
});

t.test('fragments of a rejected packet are dropped unanswered; TCP at fragment offset 1 is refused', async (t) => {
  const h = await harness({ acl: [{ action: 'reject', protocol: 'udp', dstPort: 53 }, { action: 'permit', protocol: 'udp' }, { action: 'permit', protocol: 'tcp' }] });
  const first = udp4({ ...base4, id: 3, srcPort: 1, dstPort: 53, mf: true, payload: 16 });
  const later = udp4({ ...base4, id: 3, srcPort: 1, dstPort: 1, fragOffset: 24, payload: 16 });
  t.same(verdicts(h.run('a', [first, later]), 'a'), ['reject', 'drop:acl_reject_silent'], 'one answer for the packet (RFC 1122 3.2.2)');
  // RFC 1858 3.2: offset 1 is 8 bytes, inside the TCP header of the first fragment
  const overlap = tcp4({ ...base4, id: 4, srcPort: 1, dstPort: 1, fragOffset: 8 });
  const further = tcp4({ ...base4, id: 4, srcPort: 1, dstPort: 1, fragOffset: 16 });
  t.same(verdicts(h.run('a', [overlap, further]), 'a'), ['drop:acl_bad_header', 'pass']);
});

t.test('IPv6: later fragments follow the first by Identification', async (t) => {
  const h = await harness({ acl: [{ action: 'permit', protocol: 'udp', dstPort: 53 }], aclDefault: 'deny' });
  const out = h.run('a', [
    udp6With([44], 53, 0, { more: true, id: 0x12345678 }),
    udp6With([44], 1, 64, { more: true, id: 0x12345678 }),
    udp6With([44], 1, 128, { id: 0x12345679 }),
    udp6With([0, 44], 1, 128, { id: 0x12345678 }),
  ]);
  t.same(verdicts(out, 'a'), ['pass', 'pass', 'drop:acl_deny', 'pass'], 'another Identification is another packet; extension headers before the fragment header change nothing');
  t.same(h.counts('a').acl_fragments_followed, 2);
  // RFC 8200 4.1: destination options for the final destination follow the Fragment header
  const after = h.run('a', [udp6With([44, 60], 53, 0, { more: true, id: 0x80000001 }), udp6With([44, 60], 1, 64, { id: 0x80000001 })]);
  t.same(verdicts(after, 'a'), ['pass', 'pass'], 'with a header after the Fragment header, and an Identification of 2^31 or more');
});

/**
 * A UDP/IPv6 frame with extension headers (each 8 bytes, types in order) before the UDP
 * header; a fragment header (44) gets `fragmentOffset` (bytes), the M flag and Identification.
 */
function udp6With(extensions: number[], dstPort: number, fragmentOffset = 0, fragment: { more?: boolean; id?: number } = {}): Uint8Array {
  const plain = udp6({ ...base6, srcPort: 1, dstPort });
  const ext = new Uint8Array(extensions.length * 8);
  extensions.forEach((type, j) => {
    ext[j * 8] = j + 1 < extensions.length ? extensions[j + 1] : 17;
    if (type === 44) {
      ext[j * 8 + 2] = (fragmentOffset >> 8) & 0xff;
      ext[j * 8 + 3] = (fragmentOffset & 0xf8) | (fragment.more === true ? 1 : 0);
      new DataView(ext.buffer).setUint32(j * 8 + 4, fragment.id ?? 0);
    }
  });
  const f = new Uint8Array(plain.length + ext.length);
  f.set(plain.subarray(0, 54));
  f.set(ext, 54);
  f.set(plain.subarray(54), 54 + ext.length);
  f[14 + 6] = extensions[0];
  const payload = ((f[18] << 8) | f[19]) + ext.length;
  f[18] = payload >> 8;
  f[19] = payload & 0xff;
  return f;
}

t.test('IPv6 extension headers are walked to the ports, up to a bound', async (t) => {
  const h = await harness({ acl: [{ action: 'deny', protocol: 'udp', dstPort: 53 }, { action: 'deny', protocol: 'udp', src: '2001:db8:a::/64' }] });
  const out = h.run('a', [
    udp6With([0, 60, 43], 53),
    udp6With([0, 44], 53),
    udp6With([44], 53, 64),
    udp6With([60, 60, 60, 60, 60, 60, 60, 60, 60], 9),
    udp6With([60, 60, 60, 60, 60, 60, 60, 60], 53),
  ]);
  t.same(verdicts(out, 'a'), ['drop:acl_deny', 'drop:acl_deny', 'drop:acl_deny', 'drop:acl_bad_header', 'drop:acl_deny']);
  const hits = readRuleHits(h.shared, h.config);
  t.same(hits.rules, [3, 1], 'the later fragment matched the portless rule');
});

t.test('VLAN-tagged frames are read through one tag; two tags are refused', async (t) => {
  const h = await harness({ acl: [{ action: 'deny', protocol: 'udp', dstPort: 53 }] });
  const tagged = udp4({ ...base4, srcPort: 1, dstPort: 53, vlan: 7 });
  const twice = new Uint8Array(tagged.length + 4);
  twice.set(tagged.subarray(0, 12));
  twice.set([0x81, 0x00, 0x00, 0x05], 12);
  twice.set(tagged.subarray(12), 16);
  t.same(verdicts(h.run('a', [tagged, udp4({ ...base4, srcPort: 1, dstPort: 54, vlan: 7 }), twice]), 'a'), ['drop:acl_deny', 'pass', 'drop:acl_bad_header']);
});

t.test('malformed headers are dropped as acl_bad_header, never thrown on', async (t) => {
  const h = await harness({ acl: [{ action: 'permit', protocol: 'udp' }] });
  const good = udp4({ ...base4, srcPort: 1, dstPort: 2, payload: 8 });
  const edit = (f: Uint8Array, at: number, v: number) => f.map((b, i) => (i === at ? v : b));
  const frames = [
    good.subarray(0, 13),
    good.subarray(0, 30),
    edit(good, 14, 0x44),
    edit(good, 14, 0x4f),
    edit(good, 17, good[17] + 40),
    edit(good, 17, 10),
    edit(good, 14, 0x65),
    udp4({ ...base4, srcPort: 1, dstPort: 2, mf: true }).subarray(0, 38).map((b, i) => (i === 17 ? 24 : b)),
    tcp4({ ...base4, srcPort: 1, dstPort: 2 }).map((b, i) => (i === 34 + 12 ? 0x40 : b)),
    tcp4({ ...base4, srcPort: 1, dstPort: 2 }).map((b, i) => (i === 34 + 12 ? 0xf0 : b)),
    udp6({ ...base6, srcPort: 1, dstPort: 2 }).map((b, i) => (i === 19 ? 200 : b)),
    udp6({ ...base6, srcPort: 1, dstPort: 2 }).map((b, i) => (i === 19 ? 0 : i === 18 ? 0 : b)),
    udp6({ ...base6, srcPort: 1, dstPort: 2 }).subarray(0, 50),
  ];
  const out = h.run('a', frames);
  t.same(verdicts(out, 'a'), new Array(frames.length).fill('drop:acl_bad_header'), 'each malformed frame');
  t.same(verdicts(h.run('a', [good]), 'a'), ['pass'], 'the well-formed one passes');
  // random bytes after a valid Ethernet header: never a throw
  let seed = 7;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
  for (let n = 0; n < 300; n++) {
    const f = good.slice(0, 14 + (rnd() % 80));
    for (let i = 14; i < f.length; i++) f[i] = rnd();
    if (n % 2 === 0 && f.length > 14) f[14] = 0x45;
    if (n % 3 === 0) f[13] = 0xdd, f[12] = 0x86;
    h.run('a', [f]);
  }
  t.pass('300 random frames did not throw');
});

t.test('reject: ICMPv4 type 3 code 13 from the router, quoting the packet, back out the ingress port', async (t) => {
  const h = await harness({ acl: [{ action: 'reject', protocol: 'udp' }] });
  const sent = udp4({ ...base4, srcPort: 4000, dstPort: 53, payload: 20, srcMac: '52:54:00:00:00:77' });
  const [o] = h.run('a', [sent]);
  t.equal(o.to, 'a');
  const f = parseFrame(o.frame);
  t.equal(f.dstMac, '52:54:00:00:00:77', 'to the MAC it came from');
  t.equal(f.srcMac, '02:00:00:00:00:aa', "from the router's MAC on a");
  t.match(f.ip, { version: 4, src: '10.0.0.1', dst: '10.0.0.2', protocol: 1, headerChecksumOk: true });
  t.match(f.l4, { type: 3, code: 13, checksumOk: true });
  t.same(o.frame.subarray(42, 42 + sent.length - 14), sent.subarray(14), 'quotes the whole IP packet');
  t.equal(h.counts('a').acl_rejected, 1);

  const [v6] = h.run('a', [udp6({ ...base6, srcPort: 4000, dstPort: 53, payload: 5 })]);
  const g = parseFrame(v6.frame);
  t.match(g.ip, { version: 6, src: '2001:db8:a::1', dst: '2001:db8:a::2', protocol: 58 });
  t.match(g.l4, { type: 1, code: 1, checksumOk: true });

  const [bridged] = h.run('c', [udp4({ src: '192.168.9.7', dst: '10.0.1.5', srcPort: 1, dstPort: 2 })]);
  t.match(parseFrame(bridged.frame), { srcMac: '02:00:00:00:00:cc', ip: { src: '192.168.9.1', dst: '192.168.9.7' } }, "a bridged port answers with its bridge's MAC and address");

  const [noAddress] = h.run('b', [udp6({ src: '2001:db8:b::7', dst: '2001:db8:a::5', srcPort: 1, dstPort: 2 })]);
  t.match(parseFrame(noAddress.frame).ip, { src: '2001:db8:a::5', dst: '2001:db8:b::7' }, 'without an address of the family: from the packet\'s destination');

  const [tagged] = h.run('a', [udp4({ ...base4, srcPort: 1, dstPort: 2, vlan: 42 })]);
  t.match(parseFrame(tagged.frame), { vlan: 42, ip: { src: '10.0.0.1', headerChecksumOk: true }, l4: { type: 3, code: 13, checksumOk: true } }, 'a tagged packet is answered with its tag');
});

t.test('reject: TCP gets a reset the sender accepts (RFC 9293 3.10.7.1)', async (t) => {
  const h = await harness({ acl: [{ action: 'reject', protocol: 'tcp' }] });
  const [syn, data, rst] = h.run('a', [
    tcp4({ ...base4, srcPort: 4000, dstPort: 22, flags: 'S', seq: 0xfffffff0 }),
    tcp6({ ...base6, srcPort: 4000, dstPort: 22, flags: 'PA', seq: 1000, ack: 777, payload: 10 }),
    tcp4({ ...base4, srcPort: 4000, dstPort: 22, flags: 'R', seq: 5 }),
  ]);
  const s = parseFrame(syn.frame);
  t.match(s, { dstMac: '52:54:00:00:00:02', srcMac: '02:00:00:00:00:aa', ip: { src: '10.0.1.5', dst: '10.0.0.2', protocol: 6, headerChecksumOk: true }, l4: { srcPort: 22, dstPort: 4000, tcpFlags: 'RA', checksumOk: true } });
  const tcp = 34;
  const u32 = (f: Uint8Array, at: number) => ((f[at] << 24) | (f[at + 1] << 16) | (f[at + 2] << 8) | f[at + 3]) >>> 0;
  t.equal(u32(syn.frame, tcp + 4), 0, 'SYN without ACK: SEQ=0');
  t.equal(u32(syn.frame, tcp + 8), 0xfffffff1, 'ACK = SEG.SEQ + SEG.LEN, the SYN counting one (mod 2^32)');
  const d = parseFrame(data.frame);
  t.match(d, { ip: { version: 6, src: '2001:db8:b::5', dst: '2001:db8:a::2' }, l4: { srcPort: 22, dstPort: 4000, tcpFlags: 'R', checksumOk: true } });
  t.equal(u32(data.frame, 54 + 4), 777, 'with ACK: SEQ = SEG.ACK');
  t.equal(rst.to, 'drop', 'a reset is not answered');
  t.equal(rst.reason, 'acl_reject_silent');
});

t.test('reject: no answer to ICMP errors or group addresses; answers are rate-limited', async (t) => {
  const h = await harness({ acl: [{ action: 'reject' }], reject: { rate: 10, burst: 3 } });
  let now = 1_000_000;
  h.clock = h.state.now = () => now;
  const silent = h.run('a', [
    icmp4({ ...base4, type: 3, code: 1, payload: 28 }),
    udp4({ ...base4, dst: '224.0.0.9', srcPort: 1, dstPort: 2 }),
    icmp6({ ...base6, type: 1, code: 4, payload: 48 }),
    udp4({ ...base4, srcPort: 1, dstPort: 2, fragOffset: 8 }),
  ]);
  t.same(silent.map((o) => o.reason), ['acl_reject_silent', 'acl_reject_silent', 'acl_reject_silent', 'acl_reject_silent']);
  const burst = () => h.run('a', Array.from({ length: 5 }, (_, i) => udp4({ ...base4, srcPort: 1, dstPort: 100 + i })));
  t.same(burst().map((o) => o.reason ?? o.to), ['a', 'a', 'a', 'acl_reject_limited', 'acl_reject_limited'], 'the burst, then limited');
  now += 200;
  t.same(burst().map((o) => o.reason ?? o.to), ['a', 'a', 'acl_reject_limited', 'acl_reject_limited', 'acl_reject_limited'], '200 ms at 10/s: 2 more');
  t.equal(h.counts('a').acl_reject_limited, 5);
  // Each ingress port has its own bucket: a's flood leaves b's senders their answers.
  const fromB = h.run('b', Array.from({ length: 4 }, (_, i) => udp4({ src: '10.0.1.5', dst: '10.0.0.2', srcPort: 1, dstPort: 100 + i })));
  t.same(fromB.map((o) => o.reason ?? o.to), ['b', 'b', 'b', 'acl_reject_limited'], "port b's burst, whatever a spent");
});

t.test('hit counters per rule, in shared memory, summed over PMDs; policer marks', async (t) => {
  const config = { acl: [{ action: 'permit', protocol: 'udp', dstPort: 53, policer: 'dns' }, { action: 'deny', protocol: 'udp' }], policerNames: ['web', 'dns'] };
  const pmd0 = await harness(config, { pmdCount: 2, pmd: 0 });
  const pmd1 = await harness(config, { pmdCount: 2, pmd: 1, shareWith: pmd0 });
  const dns = udp4({ ...base4, srcPort: 1, dstPort: 53 });
  const other = udp4({ ...base4, srcPort: 1, dstPort: 54 });
  const out = pmd0.run('a', [dns, dns, other]);
  pmd1.run('a', [dns, other, tcp4({ ...base4, srcPort: 1, dstPort: 2 })]);
  t.same(out.map((o) => o.mark), [2, 2, 0], "a rule's policer: its place in policers + 1");
  t.same(readRuleHits(pmd0.shared, pmd0.config), { rules: [3, 2], unmatched: 1 });
  t.same(pmd0.counts('a'), { acl_permitted: 2, acl_deny: 1 });
});

t.test('config errors name the field', async (t) => {
  const field = (raw: Record<string, unknown>) => {
    try {
      acl.parseConfig!(raw);
      return null;
    } catch (err) {
      return (err as { field?: string }).field ?? String(err);
    }
  };
  t.equal(field({ acl: [{ action: 'permit' }, { action: 'allow' }] }), 'acl[1].action');
  t.equal(field({ acl: [{ protocol: 'tcp' }] }), 'acl[0].action');
  t.equal(field({ acl: [{ action: 'deny' }, { action: 'deny' }, { action: 'deny' }, { action: 'deny', dstPort: '80-70' }] }), 'acl[3].dstPort');
  t.equal(field({ acl: [{ action: 'deny', protocol: 'icmp', dstPort: 80 }] }), 'acl[0].protocol');
  t.equal(field({ acl: [{ action: 'deny', src: '10.0.0.0/33' }] }), 'acl[0].src');
  t.equal(field({ acl: [{ action: 'deny', src: '10.0.0.0/8', dst: '::/0' }] }), 'acl[0].dst');
  t.equal(field({ acl: [{ action: 'deny', tcpFlags: 'S/A' }] }), 'acl[0].tcpFlags');
  t.equal(field({ acl: [{ action: 'deny', tcpFlags: 'X' }] }), 'acl[0].tcpFlags');
  t.equal(field({ acl: [{ action: 'deny', colour: 'red' }] }), 'acl[0].colour');
  t.equal(field({ acl: [{ action: 'permit', policer: 'p9' }], policerNames: ['p1'] }), 'acl[0].policer');
  t.equal(field({ acl: [{ action: 'deny', stateful: true }] }), 'acl[0].stateful');
  t.equal(field({ aclDefault: 'drop' }), 'aclDefault');
  t.equal(field({ conntrack: { maxFlows: 10 } }), 'conntrack.maxFlows');
  t.equal(field({ conntrack: { timeouts: { tcpEstablishd: 5 } } }), 'conntrack.timeouts.tcpEstablishd');
  t.equal(field({ stateful: 'yes' }), 'stateful');
  t.equal(field({ acl: [{ action: 'permit', inPort: 'a' }] }), null, 'port names are checked against the topology later');
  await t.rejects(harness({ acl: [{ action: 'permit' }, { action: 'deny', outPort: 'zz' }] }), { field: 'acl[1].outPort', code: 'VR_PLUGIN_CONFIG' }, 'an unknown port name');
});

t.test('prepare() compiles in a worker thread of the job pool, into the shared memory PMDs view', async (t) => {
  const { Piscina } = await import('piscina');
  const pool = new Piscina({ minThreads: 1, maxThreads: 1 });
  t.teardown(() => pool.destroy());
  const config = acl.parseConfig!({ acl: [{ action: 'deny', protocol: 'udp', dstPort: 53 }], aclDefault: 'permit' });
  const ports = PORTS.map((p, index) => ({ index, name: p.name, bridge: p.bridge ?? null, settings: { ...p.settings } }));
  const topology = { ports, bridges: ['br0'], bridgeSettings: BRIDGES, pmdCount: 1 };
  const shared = Object.fromEntries(Object.entries(acl.sharedMemory!(config, topology)).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]));
  const logged: string[] = [];
  await acl.prepare!({
    config,
    topology,
    shared,
    fresh: () => true,
    log: { info: (m) => logged.push(m), warn: (m) => logged.push(m) },
    runJob: <T>(module: string | URL, input: unknown) => pool.run(input, { filename: String(module) }) as Promise<T>,
  });
  t.match(logged, [/^1 rules compiled in/]);
  const h = await aclHarness({ ports: PORTS, bridgeSettings: BRIDGES, config: { acl: [{ action: 'deny', protocol: 'udp', dstPort: 53 }], aclDefault: 'permit' }, shareWith: { shared } as never });
  t.same(verdicts(h.run('a', [udp4({ ...base4, srcPort: 1, dstPort: 53 }), udp4({ ...base4, srcPort: 1, dstPort: 54 })]), 'a'), ['drop:acl_deny', 'pass'], 'the tables the worker wrote');
});

t.test("a rule list's regions are named by 128 bits of its SHA-256, the same for the same rules", async (t) => {
  const ports = [{ name: 'a', index: 0, bridge: null, settings: {} }];
  const names = (port: number) => regionNames(rulesFor(parseAclConfig({ acl: [{ action: 'deny', protocol: 'tcp', dstPort: port }] }), ports));
  t.match(names(80), { tables: /^rules-[0-9a-f]{32}$/, hits: /^hits-[0-9a-f]{32}$/ }, 'not a 32-bit hash: a new list named as the running one would be compiled into the region its PMDs read');
  t.same(names(80), names(80), 'the same rules, the same names');
  t.not(names(80).tables, names(81).tables, 'other rules, other names');
});
