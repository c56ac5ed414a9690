// The test frame builders and parser: every builder read back through parseFrame, checksums
// checked against known answers and against Wireshark's dissectors (tshark), and the parser
// fed truncated and random bytes.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prng } from '../support/prng.ts';
import { pcap } from '../support/pcap.ts';
import {
  arp,
  formatMacBytes,
  icmp4,
  icmp6,
  ipv4Raw,
  macBytes,
  neighbourAdvertisement,
  neighbourSolicitation,
  parseFrame,
  routerSolicitation,
  tcp4,
  tcp6,
  udp4,
  udp6,
} from '../support/frames.ts';

const bytes = (...b: number[]) => Uint8Array.from(b);
const seq = (n: number, start = 0) => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

t.test('MAC text and bytes', async (t) => {
  t.same([...macBytes('52:54:00:aB:cd:EF')], [0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
  t.equal(formatMacBytes(bytes(9, 9, 0x52, 0x54, 0, 0xab, 0xcd, 0xef), 2), '52:54:00:ab:cd:ef');
  t.throws(() => macBytes('52:54:00:ab:cd'), /not a MAC/);
  t.throws(() => macBytes('52-54-00-ab-cd-ef'), /not a MAC/);
});

t.test('udp4 round trip', async (t) => {
  const payload = seq(100, 7);
  const f = udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 5201, payload, ttl: 17, tos: 0xb8, id: 0x1234, df: true });
  t.equal(f.length, 14 + 20 + 8 + 100);
  const p = parseFrame(f);
  t.equal(p.dstMac, '02:00:00:00:00:01', 'default destination MAC');
  t.equal(p.srcMac, '52:54:00:00:00:02', 'default source MAC');
  t.equal(p.etherType, 0x0800);
  t.equal(p.length, f.length);
  t.equal(p.vlan, undefined);
  t.match(p.ip, { version: 4, src: '10.0.1.2', dst: '10.0.2.2', ttl: 17, protocol: 17, headerChecksumOk: true, totalLength: 128, id: 0x1234, df: true, mf: false, fragOffset: 0, tos: 0xb8 });
  t.match(p.l4, { srcPort: 40000, dstPort: 5201, checksumOk: true, payloadOffset: 42 });
  t.same([...f.subarray(p.l4!.payloadOffset)], [...payload]);
  t.equal((f[38] << 8) | f[39], 108, 'UDP length');
  t.ok(udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2 }).length === 42, 'no payload: 42 bytes');
  t.equal(udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, payload: 1472 }).length, 1514, 'a payload given as a length');
});

t.test('IPv4 header checksum: the known answer', async (t) => {
  // The usual worked example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
  const f = udp4({ src: '192.168.0.1', dst: '192.168.0.199', srcPort: 1, dstPort: 2, payload: 0x73 - 28, df: true });
  t.same([...f.subarray(14, 34)].map((b) => b.toString(16).padStart(2, '0')).join(''), '45000073000040004011b861c0a80001c0a800c7');
});

t.test('UDP: a checksum that comes out as 0 is sent as 0xffff', async (t) => {
  const base = { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1000, dstPort: 2000 };
  const probe = udp4({ ...base, payload: 2 });
  const c = (probe[40] << 8) | probe[41];
  // Adding the checksum itself as a payload word makes the sum 0xffff, whose complement is 0.
  const f = udp4({ ...base, payload: bytes(c >> 8, c & 0xff) });
  t.equal((f[40] << 8) | f[41], 0xffff);
  t.equal(parseFrame(f).l4!.checksumOk, true);
  const z = Uint8Array.from(f);
  z[40] = z[41] = 0;
  t.equal(parseFrame(z).l4!.checksumOk, true, 'IPv4 UDP with no checksum (0) is valid');
  const six = udp6({ src: '2001:db8::1', dst: '2001:db8::2', srcPort: 1, dstPort: 2, payload: 4 });
  six[14 + 40 + 6] = six[14 + 40 + 7] = 0;
  t.equal(parseFrame(six).l4!.checksumOk, false, 'IPv6 UDP must have one');
});

t.test('VLAN tag, options, fragments', async (t) => {
  const f = udp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 8, vlan: 100, dstMac: 'aa:bb:cc:dd:ee:ff', srcMac: '02:11:22:33:44:55', ihl: 7 });
  t.equal(f.length, 18 + 28 + 16);
  t.same([...f.subarray(12, 16)], [0x81, 0x00, 0x00, 100]);
  const p = parseFrame(f);
  t.equal(p.vlan, 100);
  t.equal(p.etherType, 0x0800);
  t.equal(p.dstMac, 'aa:bb:cc:dd:ee:ff');
  t.equal(p.srcMac, '02:11:22:33:44:55');
  t.equal(f[18], 0x47, 'ihl 7');
  t.same([...f.subarray(38, 46)], [1, 1, 1, 1, 1, 1, 1, 1], 'options are NOPs');
  t.match(p.ip, { headerChecksumOk: true, totalLength: 44 });
  t.match(p.l4, { srcPort: 1, dstPort: 2, checksumOk: true, payloadOffset: 18 + 28 + 8 });

  const first = udp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 100, id: 7, mf: true });
  t.match(parseFrame(first).ip, { mf: true, fragOffset: 0, id: 7, headerChecksumOk: true });
  t.equal(parseFrame(first).l4!.checksumOk, false, 'a first fragment cannot be checked alone');
  const later = ipv4Raw({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 17, payload: seq(64), id: 7, fragOffset: 1480 });
  const q = parseFrame(later);
  t.match(q.ip, { mf: false, fragOffset: 1480, protocol: 17, headerChecksumOk: true });
  t.equal(q.l4, undefined, 'no L4 header in a later fragment');
  t.equal((later[20] << 8) | later[21], 1480 / 8, 'the offset field counts 8-byte units');
});

t.test('tcp4 flags, sequence numbers, checksum', async (t) => {
  for (const flags of ['S', 'SA', 'A', 'FA', 'R', 'PA', 'RA', 'FPA', 'SEC', 'U']) {
    const f = tcp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 33000, dstPort: 5201, flags, seq: 0xfffffff0, ack: 12345, payload: flags.length * 3 });
    const p = parseFrame(f);
    t.match(p.l4, { srcPort: 33000, dstPort: 5201, checksumOk: true, tcpFlags: flags === 'SEC' ? 'SEC' : flags, payloadOffset: 54 }, flags);
    t.equal(p.ip!.totalLength, 40 + flags.length * 3);
  }
  t.equal(parseFrame(tcp4({ src: '1.1.1.1', dst: '2.2.2.2', srcPort: 1, dstPort: 2, flags: 'as' })).l4!.tcpFlags, 'SA', 'any order, any case in; one order out');
  const f = tcp4({ src: '1.1.1.1', dst: '2.2.2.2', srcPort: 1, dstPort: 2, seq: 0xdeadbeef, ack: 0x01020304 });
  t.same([...f.subarray(38, 46)], [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
  t.equal(parseFrame(f).l4!.tcpFlags, 'A', 'default flags: ACK');
  t.throws(() => tcp4({ src: '1.1.1.1', dst: '2.2.2.2', srcPort: 1, dstPort: 2, flags: 'SX' }), /unknown TCP flag/);
});

t.test('icmp4 echo and errors', async (t) => {
  const echo = icmp4({ src: '10.0.1.2', dst: '10.0.1.1', type: 8, id: 0x4242, seq: 3, payload: 56 });
  t.equal(echo.length, 14 + 20 + 8 + 56);
  const p = parseFrame(echo);
  t.match(p.ip, { protocol: 1, headerChecksumOk: true, totalLength: 84 });
  t.match(p.l4, { type: 8, code: 0, checksumOk: true, rest: 0x42420003, payloadOffset: 42 });
  t.equal(p.l4!.srcPort, undefined);

  // A "fragmentation needed" quoting a packet, as a router sends it.
  const quoted = udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 9, dstPort: 9, payload: 20, df: true }).subarray(14);
  const err = icmp4({ src: '10.0.2.1', dst: '10.0.2.2', type: 3, code: 4, rest: 1500, payload: quoted, ttl: 255 });
  const e = parseFrame(err);
  t.match(e.l4, { type: 3, code: 4, rest: 1500, checksumOk: true });
  const inner = e.l4!.payloadOffset;
  t.equal(err[inner] >> 4, 4, 'the quoted packet starts at payloadOffset');
  t.same([...err.subarray(inner + 12, inner + 20)], [10, 0, 2, 2, 10, 0, 1, 2]);
});

t.test('ipv4Raw carries any protocol untouched', async (t) => {
  const gre = seq(24, 100);
  const f = ipv4Raw({ src: '10.9.8.7', dst: '10.1.2.3', protocol: 47, payload: gre, ttl: 1 });
  const p = parseFrame(f);
  t.match(p.ip, { protocol: 47, ttl: 1, totalLength: 44, headerChecksumOk: true });
  t.equal(p.l4, undefined);
  t.same([...f.subarray(34)], [...gre]);
});

t.test('multicast and broadcast destinations get their MAC', async (t) => {
  t.equal(parseFrame(udp4({ src: '10.0.0.1', dst: '255.255.255.255', srcPort: 68, dstPort: 67 })).dstMac, 'ff:ff:ff:ff:ff:ff');
  t.equal(parseFrame(udp4({ src: '10.0.0.1', dst: '239.129.2.3', srcPort: 1, dstPort: 2 })).dstMac, '01:00:5e:01:02:03');
  t.equal(parseFrame(icmp6({ src: 'fe80::1', dst: 'ff02::1', type: 128 })).dstMac, '33:33:00:00:00:01');
  t.equal(parseFrame(icmp6({ src: 'fe80::1', dst: 'ff02::1', type: 128, dstMac: '02:00:00:00:00:09' })).dstMac, '02:00:00:00:00:09', 'unless one is given');
});

t.test('arp request and reply', async (t) => {
  const req = arp({ op: 'request', senderMac: '52:54:0a:00:01:02', senderIp: '10.0.1.2', targetIp: '10.0.1.1' });
  t.equal(req.length, 42);
  const p = parseFrame(req);
  t.equal(p.dstMac, 'ff:ff:ff:ff:ff:ff', 'a request is broadcast');
  t.equal(p.srcMac, '52:54:0a:00:01:02', 'from the sender');
  t.equal(p.etherType, 0x0806);
  t.same(p.arp, { op: 1, senderMac: '52:54:0a:00:01:02', senderIp: '10.0.1.2', targetMac: '00:00:00:00:00:00', targetIp: '10.0.1.1' });
  t.equal(p.ip, undefined);

  const rep = arp({ op: 'reply', senderMac: '02:00:00:00:00:01', senderIp: '10.0.1.1', targetIp: '10.0.1.2', dstMac: '52:54:0a:00:01:02', vlan: 5 });
  const r = parseFrame(rep);
  t.equal(r.vlan, 5);
  t.equal(r.dstMac, '52:54:0a:00:01:02');
  t.same(r.arp, { op: 2, senderMac: '02:00:00:00:00:01', senderIp: '10.0.1.1', targetMac: '52:54:0a:00:01:02', targetIp: '10.0.1.2' });
  t.throws(() => arp({ op: 'bogus' as 'reply', senderMac: '02:00:00:00:00:01', senderIp: '10.0.1.1', targetIp: '10.0.1.2' }));
});

t.test('udp6, tcp6, icmp6 round trip', async (t) => {
  const u = udp6({ src: '2001:db8:1::2', dst: '2001:db8:2:0:0:0:0:2', srcPort: 5353, dstPort: 53, payload: seq(33), hopLimit: 9, trafficClass: 0x2e, flowLabel: 0xabcde });
  t.equal(u.length, 14 + 40 + 8 + 33);
  const p = parseFrame(u);
  t.equal(p.etherType, 0x86dd);
  t.match(p.ip, { version: 6, src: '2001:db8:1::2', dst: '2001:db8:2::2', ttl: 9, protocol: 17, headerChecksumOk: true, totalLength: 81, tos: 0x2e });
  t.equal(p.ip!.id, undefined);
  t.match(p.l4, { srcPort: 5353, dstPort: 53, checksumOk: true, payloadOffset: 62 });
  t.same([...u.subarray(14, 18)], [0x62, 0xea, 0xbc, 0xde], 'version, traffic class, flow label');

  const tc = tcp6({ src: '2001:db8:2::2', dst: '2001:db8:1::2', srcPort: 5201, dstPort: 40000, flags: 'SA', seq: 1, ack: 2 });
  t.match(parseFrame(tc).l4, { tcpFlags: 'SA', checksumOk: true, payloadOffset: 74 });
  t.match(parseFrame(tc).ip, { protocol: 6, totalLength: 60 });

  const ping = icmp6({ src: '2001:db8:1::2', dst: '2001:db8:1::1', type: 128, id: 7, seq: 9, payload: 56 });
  t.match(parseFrame(ping).l4, { type: 128, code: 0, rest: 0x00070009, checksumOk: true, payloadOffset: 62 });
  t.equal(parseFrame(ping).ndp, undefined, 'an echo is not NDP');

  const ptb = icmp6({ src: '2001:db8:1::1', dst: '2001:db8:2::2', type: 2, rest: 1500, payload: u.subarray(14) });
  t.match(parseFrame(ptb).l4, { type: 2, rest: 1500, checksumOk: true });
  const body = icmp6({ src: 'fe80::1', dst: 'fe80::2', type: 200, code: 3, body: bytes(1, 2, 3) });
  t.equal(body.length, 14 + 40 + 7);
  t.match(parseFrame(body).l4, { type: 200, code: 3, checksumOk: true });
});

t.test('neighbour solicitation and advertisement, router solicitation', async (t) => {
  const ns = neighbourSolicitation({ src: '2001:db8:1::2', target: '2001:db8:1::1:2345:6789', sourceLinkAddr: '52:54:0a:00:01:02' });
  const p = parseFrame(ns);
  t.equal(p.dstMac, '33:33:ff:45:67:89');
  t.match(p.ip, { src: '2001:db8:1::2', dst: 'ff02::1:ff45:6789', ttl: 255, protocol: 58 });
  t.match(p.l4, { type: 135, code: 0, checksumOk: true });
  t.equal(p.ndp!.type, 135);
  t.equal(p.ndp!.target, '2001:db8:1::1:2345:6789');
  t.equal(p.ndp!.options.length, 1);
  t.equal(p.ndp!.options[0].type, 1);
  t.equal(formatMacBytes(p.ndp!.options[0].value), '52:54:0a:00:01:02');
  t.equal(ns.length, 14 + 40 + 24 + 8);
  const dad = parseFrame(neighbourSolicitation({ src: '::', target: 'fe80::5054:aff:fe00:102' }));
  t.equal(dad.ip!.src, '::');
  t.same(dad.ndp!.options, [], 'no option unless asked');
  t.equal(dad.l4!.checksumOk, true);

  const na = neighbourAdvertisement({ src: '2001:db8:1::1', dst: '2001:db8:1::2', target: '2001:db8:1::1', targetLinkAddr: '02:00:00:00:00:01', solicited: true, override: true, dstMac: '52:54:0a:00:01:02' });
  const a = parseFrame(na);
  t.match(a.ip, { ttl: 255, dst: '2001:db8:1::2' });
  t.match(a.ndp, { type: 136, target: '2001:db8:1::1', solicited: true, override: true, router: false });
  t.equal(a.ndp!.options[0].type, 2);
  t.equal(formatMacBytes(a.ndp!.options[0].value), '02:00:00:00:00:01');
  t.equal(a.l4!.checksumOk, true);
  t.equal(na[14 + 40 + 4], 0x60, 'S and O flags');

  const rs = parseFrame(routerSolicitation({ src: 'fe80::5054:aff:fe00:102', sourceLinkAddr: '52:54:0a:00:01:02' }));
  t.equal(rs.dstMac, '33:33:00:00:00:02');
  t.match(rs.ip, { dst: 'ff02::2', ttl: 255 });
  t.match(rs.ndp, { type: 133 });
  t.equal(rs.ndp!.options.length, 1);
  t.equal(rs.l4!.checksumOk, true);
});

t.test('a router advertisement is read with its prefixes and MTU', async (t) => {
  // RFC 4861 4.2: cur hop limit 64, flags 0, lifetime 1800, reachable 0, retrans 0; then
  // source link-layer address, MTU 1500 and one prefix 2001:db8:1::/64 (L, A).
  const pio = new Uint8Array(32);
  pio.set([3, 4, 64, 0xc0]);
  pio.set([0, 0x27, 0x8d, 0x00], 4); // valid 2592000
  pio.set([0, 0x09, 0x3a, 0x80], 8); // preferred 604800
  pio.set([0x20, 0x01, 0x0d, 0xb8, 0, 1], 16);
  const body = Uint8Array.from([64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 5, 1, 0, 0, 0, 0, 0x05, 0xdc, ...pio]);
  const ra = parseFrame(icmp6({ src: 'fe80::1', dst: 'ff02::1', type: 134, body, hopLimit: 255 }));
  t.equal(ra.l4!.checksumOk, true);
  t.equal(ra.ndp!.type, 134);
  t.equal(ra.ndp!.curHopLimit, 64);
  t.equal(ra.ndp!.routerLifetime, 1800);
  t.equal(ra.ndp!.mtu, 1500);
  t.same(ra.ndp!.options.map((o) => o.type), [1, 5, 3]);
  t.same(ra.ndp!.prefixes, [{ prefix: '2001:db8:1::', length: 64, onLink: true, autonomous: true, validLifetime: 2592000, preferredLifetime: 604800 }]);
  // An option with length 0 stops the walk instead of looping.
  const bad = Uint8Array.from(body);
  bad[13] = 0;
  t.same(parseFrame(icmp6({ src: 'fe80::1', dst: 'ff02::1', type: 134, body: bad })).ndp!.options, []);
});

t.test('a flipped bit shows up as a bad checksum', async (t) => {
  const frames = [
    udp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 10 }),
    tcp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 10 }),
    icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 8, payload: 10 }),
    udp6({ src: '2001:db8::1', dst: '2001:db8::2', srcPort: 1, dstPort: 2, payload: 10 }),
    tcp6({ src: '2001:db8::1', dst: '2001:db8::2', srcPort: 1, dstPort: 2, payload: 10 }),
    icmp6({ src: '2001:db8::1', dst: '2001:db8::2', type: 128, payload: 10 }),
  ];
  for (const f of frames) {
    const p = parseFrame(f);
    const name = `${p.ip!.version}/${p.ip!.protocol}`;
    t.equal(p.l4!.checksumOk, true, `${name} as built`);
    const g = Uint8Array.from(f);
    g[g.length - 1] ^= 0x10;
    t.equal(parseFrame(g).l4!.checksumOk, false, `${name}: a payload bit`);
    if (p.ip!.version === 4) {
      const s = Uint8Array.from(f);
      s[14 + 15] ^= 1; // the source address: in the pseudo-header (UDP/TCP), not in ICMP's sum
      t.equal(parseFrame(s).ip!.headerChecksumOk, false, `${name}: header checksum`);
      t.equal(parseFrame(s).l4!.checksumOk, p.ip!.protocol === 1, `${name}: pseudo-header`);
    } else {
      const s = Uint8Array.from(f);
      s[14 + 23] ^= 1;
      t.equal(parseFrame(s).l4!.checksumOk, false, `${name}: pseudo-header`);
    }
  }
  const padded = new Uint8Array(60);
  const arpFrame = arp({ op: 'request', senderMac: '52:54:00:00:00:02', senderIp: '10.0.0.2', targetIp: '10.0.0.1' });
  padded.set(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 8 }));
  t.equal(parseFrame(padded).l4!.checksumOk, true, 'Ethernet padding after the IP packet is not summed');
  t.equal(arpFrame.length, 42);
});

t.test('short and garbage input never throws', async (t) => {
  const samples = [
    udp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 10, vlan: 3, ihl: 6 }),
    tcp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 10 }),
    icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 8, payload: 10 }),
    arp({ op: 'request', senderMac: '52:54:00:00:00:02', senderIp: '10.0.0.2', targetIp: '10.0.0.1' }),
    udp6({ src: '2001:db8::1', dst: '2001:db8::2', srcPort: 1, dstPort: 2, payload: 10 }),
    neighbourSolicitation({ src: 'fe80::1', target: 'fe80::2', sourceLinkAddr: '52:54:00:00:00:02' }),
    neighbourAdvertisement({ src: 'fe80::1', dst: 'fe80::2', target: 'fe80::1', targetLinkAddr: '52:54:00:00:00:02' }),
    routerSolicitation({ src: 'fe80::1', sourceLinkAddr: '52:54:00:00:00:02' }),
  ];
  let parsed = 0;
  for (const f of samples) {
    for (let n = 0; n <= f.length; n++) {
      const p = parseFrame(f.subarray(0, n));
      parsed++;
      if (n < f.length && p.l4) t.equal(p.l4.checksumOk && p.ip!.totalLength + 14 > n, false, `cut at ${n}: not reported ok`);
    }
  }
  const rnd = prng(0xf4a3e5);
  for (let i = 0; i < 3000; i++) {
    const f = new Uint8Array(rnd() % 200);
    for (let j = 0; j < f.length; j++) f[j] = rnd() & 0xff;
    // Steer a share of them into each parser.
    if (f.length >= 14 && i % 4 !== 0) {
      const types = [0x0800, 0x86dd, 0x0806, 0x8100];
      f[12] = types[i % 4] >> 8;
      f[13] = types[i % 4] & 0xff;
      if (f.length > 14) f[14] = i % 4 === 1 ? 0x60 | (f[14] & 0xf) : i % 4 === 2 ? f[14] : 0x40 | (f[14] & 0xf);
      if (f.length > 20 && i % 4 === 1) f[20] = [58, 17, 6, 44, 0, 60][i % 6];
    }
    parseFrame(f);
    parsed++;
  }
  t.ok(parsed > 3000, `${parsed} parsed, none threw`);
});

t.test('builders reject what they cannot build', async (t) => {
  const ok = { src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2 };
  t.throws(() => udp4({ ...ok, src: '10.0.0.256' }), /not an IPv4 address/);
  t.throws(() => udp4({ ...ok, dst: '2001:db8::1' }), /not an IPv4 address/);
  t.throws(() => udp4({ ...ok, dst: '10.0.0.2/24' }), /not an IPv4 address/);
  t.throws(() => udp6({ ...ok, src: '2001:db8::1' }), /not an IPv6 address/);
  t.throws(() => udp4({ ...ok, fragOffset: 12 }), /multiple of 8/);
  t.throws(() => udp4({ ...ok, ihl: 16 }), /ihl/);
  t.throws(() => udp4({ ...ok, ihl: 4 }), /ihl/);
  t.throws(() => udp4({ ...ok, srcPort: 70000 }), /srcPort/);
  t.throws(() => udp4({ ...ok, payload: 65536 }), /over 65535/);
  t.throws(() => udp4({ ...ok, vlan: 4096 }), /vlan/);
  t.throws(() => udp4({ ...ok, payload: -1 }), /non-negative/);
});

// ---- cross-check with Wireshark's dissectors ----------------------------------------------------

const haveTshark = spawnSync('tshark', ['--version'], { stdio: 'ignore' }).status === 0;

t.test('tshark reads the same frames, with good checksums', async (t) => {
  if (!haveTshark) {
    t.fail('tshark is not installed (scripts/setup-peers.sh installs it: Debian package tshark)');
    return;
  }
  const frames = [
    udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 5201, payload: seq(99), vlan: 42, ihl: 6, df: true, id: 77 }),
    tcp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40001, dstPort: 5202, flags: 'PA', seq: 1000, ack: 2000, payload: seq(31) }),
    icmp4({ src: '10.0.1.2', dst: '10.0.1.1', type: 8, id: 1, seq: 2, payload: seq(56) }),
    arp({ op: 'request', senderMac: '52:54:0a:00:01:02', senderIp: '10.0.1.2', targetIp: '10.0.1.1' }),
    udp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 1234, dstPort: 4321, payload: seq(17), trafficClass: 0x20, flowLabel: 0x12345 }),
    tcp6({ src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 40002, dstPort: 80, flags: 'S', seq: 7 }),
    icmp6({ src: '2001:db8:1::2', dst: '2001:db8:1::1', type: 128, id: 3, seq: 4, payload: seq(56) }),
    neighbourSolicitation({ src: 'fe80::5054:aff:fe00:102', target: '2001:db8:1::1', sourceLinkAddr: '52:54:0a:00:01:02' }),
    neighbourAdvertisement({ src: '2001:db8:1::1', dst: 'fe80::5054:aff:fe00:102', target: '2001:db8:1::1', targetLinkAddr: '02:00:00:00:00:01', solicited: true, override: true }),
    routerSolicitation({ src: 'fe80::5054:aff:fe00:102', sourceLinkAddr: '52:54:0a:00:01:02' }),
    icmp4({ src: '10.0.2.1', dst: '10.0.2.2', type: 3, code: 4, rest: 1500, payload: udp4({ src: '10.0.2.2', dst: '10.0.1.2', srcPort: 9, dstPort: 9, payload: 20, df: true }).subarray(14) }),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'frames-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'frames.pcap');
  writeFileSync(file, pcap(frames));
  const fields = ['eth.dst', 'eth.src', 'vlan.id', 'ip.src', 'ip.dst', 'ip.len', 'ip.checksum.status', 'ipv6.src', 'ipv6.dst', 'ipv6.plen', 'udp.srcport', 'udp.dstport', 'udp.checksum.status', 'tcp.srcport', 'tcp.dstport', 'tcp.checksum.status', 'tcp.flags', 'icmp.type', 'icmp.checksum.status', 'icmpv6.type', 'icmpv6.checksum.status', 'icmpv6.nd.ns.target_address', 'icmpv6.nd.na.target_address', 'arp.opcode', 'arp.dst.proto_ipv4', 'icmp.mtu', 'ipv6.tclass', 'ipv6.flow'];
  // prettier-ignore
  const args = ['-r', file, '-n', '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f',
    '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'tcp.analyze_sequence_numbers:FALSE',
    ...fields.flatMap((f) => ['-e', f])];
  const out = execFileSync('tshark', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
  const rows = out.trim().split('\n').map((line) => Object.fromEntries(line.split('|').map((v, i) => [fields[i], v])));
  t.equal(rows.length, frames.length, 'one row per frame');
  const GOOD = '1'; // Wireshark's PROTO_CHECKSUM_E_GOOD
  rows.forEach((r, i) => {
    const p = parseFrame(frames[i]);
    const name = `frame ${i + 1}`;
    t.equal(r['eth.dst'], p.dstMac, `${name} eth.dst`);
    t.equal(r['eth.src'], p.srcMac, `${name} eth.src`);
    if (p.vlan !== undefined) t.equal(Number(r['vlan.id']), p.vlan, `${name} vlan`);
    if (p.ip?.version === 4) {
      t.same([r['ip.src'], r['ip.dst'], Number(r['ip.len']), r['ip.checksum.status']], [p.ip.src, p.ip.dst, p.ip.totalLength, GOOD], `${name} IPv4`);
    }
    if (p.ip?.version === 6) {
      t.same([r['ipv6.src'], r['ipv6.dst'], Number(r['ipv6.plen']) + 40], [p.ip.src, p.ip.dst, p.ip.totalLength], `${name} IPv6`);
      t.equal(Number(r['ipv6.tclass']), p.ip.tos, `${name} traffic class`);
    }
    if (p.ip?.protocol === 17) t.same([Number(r['udp.srcport']), Number(r['udp.dstport']), r['udp.checksum.status']], [p.l4!.srcPort, p.l4!.dstPort, GOOD], `${name} UDP`);
    if (p.ip?.protocol === 6) {
      t.same([Number(r['tcp.srcport']), Number(r['tcp.dstport']), r['tcp.checksum.status']], [p.l4!.srcPort, p.l4!.dstPort, GOOD], `${name} TCP`);
      const bits = Number(r['tcp.flags']);
      t.equal('FSRPAUEC'.split('').filter((_, b) => bits & (1 << b)).join(''), p.l4!.tcpFlags, `${name} TCP flags`);
    }
    if (p.ip?.protocol === 1) t.same([Number(r['icmp.type']), r['icmp.checksum.status']], [p.l4!.type, GOOD], `${name} ICMP`);
    if (p.ip?.protocol === 58) t.same([Number(r['icmpv6.type']), r['icmpv6.checksum.status']], [p.l4!.type, GOOD], `${name} ICMPv6`);
    if (p.ndp?.type === 135) t.equal(r['icmpv6.nd.ns.target_address'], p.ndp.target, `${name} NS target`);
    if (p.ndp?.type === 136) t.equal(r['icmpv6.nd.na.target_address'], p.ndp.target, `${name} NA target`);
    if (p.arp) t.same([Number(r['arp.opcode']), r['arp.dst.proto_ipv4']], [p.arp.op, p.arp.targetIp], `${name} ARP`);
    if (p.l4?.type === 3 && p.ip?.version === 4) t.equal(Number(r['icmp.mtu']), p.l4.rest, `${name} next-hop MTU`);
  });
  t.equal(Number(rows[4]['ipv6.flow']), 0x12345, 'flow label');
  // Anything Wireshark finds odd (bad checksum, malformed) raises an expert item of severity
  // Warning (0x00600000) or Error; Chat and Note (e.g. "Echo (ping) request") are informational.
  // The one expected warning is "4 NOP in a row", for the NOP padding that ihl > 5 asks for.
  const expert = execFileSync('tshark', ['-r', file, '-n', '-T', 'fields', '-E', 'occurrence=a', '-E', 'aggregator=;;', '-e', '_ws.expert.severity', '-e', '_ws.expert.message'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
  const complaints = expert.trim().split('\n').flatMap((line, i) => {
    const [severities, messages] = line.split('\t');
    const texts = (messages ?? '').split(';;');
    return severities
      .split(';;')
      .map((sev, k) => ({ frame: i + 1, severity: Number(sev), message: texts[k] }))
      .filter((e) => e.severity >= 0x00600000 && !/^4 NOP in a row/.test(e.message));
  });
  t.same(complaints, [], 'no warnings or errors from the dissectors');
});
