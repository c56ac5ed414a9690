// The ratelimit stage on crafted batches, with time driven by the test: colours and actions of
// a port's policer, DSCP remarks (checksum, ECN, IPv4 and IPv6), policers named by ACL rules,
// out-port policers, per-address buckets and their bound, colour-aware metering, two PMDs
// sharing one policer, a restarted PMD, and config errors that name their field.
import t from 'tap';
import ratelimit, { policerCounters, type RateLimitState } from './index.ts';
import type { RateLimitConfig } from './config.ts';
import { nowMicroseconds } from './policer.ts';
import { PluginHarness, type HarnessPort } from '../../src/pipeline/testing.ts';
import type { PacketBatch, Plugin } from '../../src/pipeline/api.ts';
import { parseFrame, udp4, udp6 } from '../../test/support/frames.ts';

/** Frames of exactly `length` bytes (Ethernet + IPv4 + UDP + payload). */
const v4 = (length: number, o: { src?: string; dst?: string; tos?: number } = {}) =>
  udp4({ src: o.src ?? '10.0.0.1', dst: o.dst ?? '10.9.0.1', tos: o.tos, srcPort: 1000, dstPort: 2000, payload: length - 42 });
const v6 = (length: number, o: { src?: string; trafficClass?: number; flowLabel?: number } = {}) =>
  udp6({ src: o.src ?? '2001:db8::1', dst: '2001:db8:9::1', trafficClass: o.trafficClass, flowLabel: o.flowLabel, srcPort: 1000, dstPort: 2000, payload: length - 62 });
const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

/**
 * Test time 0, in µs of the clock every PMD reads: ahead of the real clock when prepare()
 * configured the buckets (they are full from then on), so that test time only moves forward.
 */
const EPOCH_US = nowMicroseconds() + 60e6;

/**
 * The stage behind a stand-in for the stages before it: for each run, the egress and mark
 * the routing and acl stages would have written, and the clock.
 */
interface Front {
  inner: RateLimitState;
  egress: number[];
  mark: number[];
  nowUs: number;
}
const front: Plugin<RateLimitConfig, Front> = {
  ...(ratelimit as unknown as Plugin<RateLimitConfig, Front>),
  createState(ctx) {
    const s: Front = { inner: ratelimit.createState(ctx), egress: [], mark: [], nowUs: 0 };
    s.inner.clock = () => EPOCH_US + s.nowUs;
    return s;
  },
  tablesChanged(s, update) {
    ratelimit.tablesChanged!(s.inner, update);
  },
  process(batch: PacketBatch, s) {
    s.egress.forEach((e, i) => (batch.egress[i] = e));
    s.mark.forEach((m, i) => (batch.mark[i] = m));
    ratelimit.process(batch, s.inner);
  },
};

const PORTS: HarnessPort[] = [{ name: 'a' }, { name: 'b' }, { name: 'c' }];

async function stage(policers: unknown[], more: { pmd?: number; pmdCount?: number; shareWith?: PluginHarness<RateLimitConfig, Front> } = {}) {
  const h = await PluginHarness.create(front, { ports: PORTS, config: { policers }, pmd: more.pmd, pmdCount: more.pmdCount, shareWith: more.shareWith as PluginHarness<unknown, unknown> | undefined });
  return h;
}

/** What became of each frame: 'pass' (left undecided), a port, or the drop reason. */
function run(h: PluginHarness<RateLimitConfig, Front>, port: string, frames: Uint8Array[], at: { us: number; egress?: number[]; mark?: number[] }) {
  h.state.nowUs = at.us;
  h.state.egress = at.egress ?? [];
  h.state.mark = at.mark ?? [];
  return h.run(port, frames).map((o) => ({ to: o.to === 'drop' ? o.reason! : o.to === 'undecided' ? 'pass' : o.to, frame: o.frame }));
}
const where = (outcomes: { to: string }[]) => outcomes.map((o) => o.to);

t.test('a port policer colours by its buckets and does each colour its action', async (t) => {
  // 80 kbit/s = 10 000 bytes/s; CBS 3000 and EBS 2000 bytes; 1000-byte frames.
  const h = await stage([{ name: 'web', type: 'srTCM', cir: '80kbit', cbs: 3000, ebs: '2000b', actions: { yellow: { remark: 'af12' }, red: 'drop' }, apply: [{ inPort: 'a' }] }]);
  const out = run(h, 'a', times(8, () => v4(1000)), { us: 1_000_000 });
  t.same(where(out), ['pass', 'pass', 'pass', 'pass', 'pass', 'policer_red', 'policer_red', 'policer_red'], '3 green (CBS), 2 yellow (EBS), then red, dropped');
  t.same(out.map((o) => parseFrame(o.frame).ip!.tos >> 2), [0, 0, 0, 12, 12, 0, 0, 0], 'the yellow ones remarked AF12');
  t.same(h.counts('a'), { green: 3, yellow: 2, red: 3, remarked: 2, policer_red: 3 });
  t.same(where(run(h, 'a', times(3, () => v4(1000)), { us: 1_100_000 })), ['pass', 'policer_red', 'policer_red'], '100 ms at 10 000 bytes/s refills 1000 bytes: one more green');
  t.same(where(run(h, 'b', times(3, () => v4(1000)), { us: 1_100_000 })), ['pass', 'pass', 'pass'], 'port b has no policer');
  const c = policerCounters(h.shared, h.config, 'web');
  t.same([c.green.packets, c.yellow.packets, c.red.packets, c.green.bytes], [4, 2, 5, 4000], 'the per-policer counters in shared memory');
});

t.test('a packet-rate policer counts packets, not bytes', async (t) => {
  const h = await stage([{ name: 'p', cir: '1kpps', cbs: 4, apply: [{ inPort: 'a' }] }]);
  t.same(where(run(h, 'a', [v4(1500), v4(64), v4(1500), v4(64), v4(64)], { us: 0 })), ['pass', 'pass', 'pass', 'pass', 'policer_red']);
  t.same(where(run(h, 'a', [v4(64), v4(64), v4(64)], { us: 2000 })), ['pass', 'pass', 'policer_red'], '2 ms at 1000 packet/s: 2 packets');
});

t.test('remarking keeps ECN and the IPv4 checksum right, for IPv4 and IPv6', async (t) => {
  const h = await stage([{ name: 'mark', cir: '1gbit', actions: { green: { remark: 46 } }, apply: [{ inPort: 'a' }] }]);
  const tosIn = times(32, (i) => ((i * 7) % 64 << 2) | (i & 3));
  const out = run(h, 'a', tosIn.map((tos, i) => v4(100 + i, { tos, src: `10.0.${i}.${i * 3}` })), { us: 0 });
  for (const [i, o] of out.entries()) {
    const ip = parseFrame(o.frame).ip!;
    t.equal(ip.tos, (46 << 2) | (tosIn[i] & 3), `frame ${i}: DSCP EF, ECN ${tosIn[i] & 3} kept`);
    t.ok(ip.headerChecksumOk, `frame ${i}: IPv4 header checksum right after the remark (TOS ${tosIn[i]})`);
    t.ok(parseFrame(o.frame).l4!.checksumOk, `frame ${i}: UDP checksum untouched and right`);
  }
  const out6 = run(h, 'a', [v6(200, { trafficClass: (10 << 2) | 1, flowLabel: 0xabcde }), v6(200, { trafficClass: 3, flowLabel: 0x12345 })], { us: 10 });
  t.same(out6.map((o) => parseFrame(o.frame).ip!.tos), [(46 << 2) | 1, (46 << 2) | 3], 'IPv6 traffic class: DSCP EF, ECN kept');
  const word0 = out6.map((o) => ((o.frame[14] << 24) | (o.frame[15] << 16) | (o.frame[16] << 8) | o.frame[17]) >>> 0);
  t.same(word0.map((w) => [w >>> 28, w & 0xfffff]), [[6, 0xabcde], [6, 0x12345]], 'version and flow label unchanged');
  t.ok(out6.every((o) => parseFrame(o.frame).l4!.checksumOk), 'UDP over IPv6: checksum still right (the traffic class is not in the pseudo-header)');
  t.equal(h.counts('a').remarked, 34);
});

t.test('a policer an ACL rule names, through the mark', async (t) => {
  // No "apply": only packets the acl stage marked with policer index + 1 meet it.
  const h = await stage([
    { name: 'other', cir: '1gbit' },
    { name: 'acl-named', cir: '10pps', cbs: 2 },
  ]);
  const out = run(h, 'a', times(6, () => v4(100)), { us: 0, mark: [2, 0, 2, 2, 0, 2] });
  t.same(where(out), ['pass', 'pass', 'pass', 'policer_red', 'pass', 'policer_red'], 'marked packets: 2 green then red; unmarked ones untouched');
  t.equal(policerCounters(h.shared, h.config, 'acl-named').red.packets, 2);
  t.equal(policerCounters(h.shared, h.config, 'other').green.packets, 0, 'mark 2 is the second policer, not the first');
  t.same(where(run(h, 'a', [v4(100)], { us: 0, mark: [7] })), ['pass'], 'a mark past the policers polices nothing');
});

t.test('an out-port policer meets packets routed or switched to its port, after the in-port ones', async (t) => {
  const h = await stage([
    { name: 'in', cir: '10pps', cbs: 3, apply: [{ inPort: 'a' }] },
    { name: 'out', cir: '10pps', cbs: 1, actions: { red: { remark: 'cs1' } }, apply: [{ outPort: 'c' }] },
  ]);
  const out = run(h, 'a', times(5, () => v4(100)), { us: 0, egress: [2, 1, 2, 2, 2] });
  t.same(where(out), ['c', 'b', 'c', 'policer_red', 'policer_red'], 'in-port: 3 green, 2 red dropped; out-port c: 2 packets reach it');
  t.same(out.map((o) => parseFrame(o.frame).ip!.tos >> 2), [0, 0, 8, 0, 0], 'the second packet to c is red at the out-port policer: remarked CS1');
  const outCounters = policerCounters(h.shared, h.config, 'out');
  t.same([outCounters.green.packets, outCounters.red.packets], [1, 1], 'packets the in-port policer dropped never reached the out-port policer');
  t.same(h.counts('c'), { green: 1, red: 1, remarked: 1 }, 'out-port colours count on the out-port');
});

t.test('per-source buckets: one per address, bounded, idle ones handed over', async (t) => {
  const h = await stage([{ name: 'per-host', cir: '10pps', cbs: 2, apply: [{ perSource: '10.0.0.0/16', maxAddresses: 16, idleTimeout: 5 }] }]);
  const from = (host: string, n: number) => times(n, () => v4(100, { src: host }));
  t.same(where(run(h, 'a', [...from('10.0.0.1', 3), ...from('10.0.0.2', 3)], { us: 0 })), ['pass', 'pass', 'policer_red', 'pass', 'pass', 'policer_red'], 'each source has a bucket of its own');
  t.same(where(run(h, 'a', from('10.1.0.1', 5), { us: 0 })), ['pass', 'pass', 'pass', 'pass', 'pass'], 'a source outside the prefix is not policed');
  t.same(where(run(h, 'a', [...from('10.0.0.1', 1), v6(100)], { us: 0 })), ['policer_red', 'pass'], 'the same source keeps its bucket; IPv6 is not in an IPv4 prefix');
  // Fill the table: 16 sources hold every slot (the probe window is the whole table).
  for (let n = 3; n <= 16; n++) run(h, 'a', from(`10.0.1.${n}`, 1), { us: 100_000 });
  const table = h.state.inner.addresses[0].table;
  t.equal(table.liveCount(), 16, '16 addresses, the table is full');
  t.same(where(run(h, 'a', [...from('10.0.2.1', 2), ...from('10.0.2.2', 2)], { us: 100_000 })), ['pass', 'pass', 'policer_red', 'policer_red'], 'new sources with no room share the overflow bucket (2 packets between them)');
  t.equal(h.counts('a').address_table_full, 4);
  // 10.0.0.1 and 10.0.0.2 were last seen at 0 s: idle 5 s later, their slots go to new sources.
  t.same(where(run(h, 'a', from('10.0.3.1', 3), { us: 5_000_000 })), ['pass', 'pass', 'policer_red'], 'an idle slot is handed over, its bucket full again');
  t.equal(table.liveCount(), 16);
  t.equal(h.counts('a').address_table_full, 4, 'no overflow once an idle slot was taken');
  const c = policerCounters(h.shared, h.config, 'per-host');
  t.equal(c.green.packets + c.yellow.packets + c.red.packets, 3 + 3 + 1 + 14 + 4 + 3, 'the per-policer counters sum every address bucket');
});

t.test('per-destination buckets on IPv6, only for packets leaving by one port', async (t) => {
  const h = await stage([{ name: 'to-host', cir: '10pps', cbs: 1, apply: [{ perDestination: '2001:db8:9::/48', outPort: 'b' }] }]);
  const out = run(h, 'a', [v6(100), v6(100), v6(100)], { us: 0, egress: [1, 1, 2] });
  t.same(where(out), ['b', 'policer_red', 'c'], 'to b: one green, then red; to c: not policed');
});

t.test('colour-aware: the colour a packet arrives with, from its AF drop precedence', async (t) => {
  const h = await stage([{ name: 'aware', type: 'trTCM', cir: '10pps', cbs: 10, pir: '20pps', pbs: 10, colorAware: true, actions: { yellow: { remark: 'af12' }, red: 'drop' }, apply: [{ inPort: 'a' }] }]);
  const af = (dscp: number) => v4(100, { tos: dscp << 2 });
  const out = run(h, 'a', [af(10), af(12), af(14), af(0), af(46)], { us: 0 });
  t.same(where(out), ['pass', 'pass', 'policer_red', 'pass', 'pass'], 'AF13 (red drop precedence) stays red with tokens to spare');
  t.same(out.map((o) => parseFrame(o.frame).ip!.tos >> 2), [10, 12, 14, 0, 46], 'AF11 green, AF12 yellow (remarked AF12: unchanged), non-AF green');
  t.same(h.counts('a'), { green: 3, yellow: 1, red: 1, remarked: 1, policer_red: 1 });
  const custom = await stage([{ name: 'map', cir: '10pps', cbs: 10, ebs: 10, colorAware: true, colorMap: { yellow: ['cs1'], red: [] }, actions: { yellow: 'drop' }, apply: [{ inPort: 'a' }] }]);
  t.same(where(run(custom, 'a', [af(8), af(12), af(14)], { us: 0 })), ['policer_yellow', 'pass', 'pass'], 'a colorMap replaces the AF table');
});

t.test('two PMDs metering into one policer hold its rate', async (t) => {
  // 1 Mbit/s = 125 000 bytes/s, offered at 4x by two PMDs taking turns, for 5 simulated seconds.
  const policers = [{ name: 'shared', cir: '1mbit', cbs: 10_000, apply: [{ inPort: 'a' }] }];
  const pmd0 = await stage(policers, { pmd: 0, pmdCount: 2 });
  const pmd1 = await stage(policers, { pmd: 1, pmdCount: 2, shareWith: pmd0 });
  const burst = times(32, () => v4(1000));
  const rounds = Math.round((5 * 500_000) / 32_000); // 32 000 bytes per burst, 500 000 bytes/s offered
  let passed = 0;
  let us = 0;
  for (let r = 0; r < rounds; r++) {
    us = Math.round((r * 5_000_000) / rounds);
    for (const h of r % 3 === 0 ? [pmd1, pmd0] : [pmd0, pmd1]) passed += where(run(h, 'a', burst, { us })).filter((w) => w === 'pass').length;
  }
  const elapsed = ((rounds - 1) * 5) / rounds;
  const expected = (125_000 * elapsed + 10_000) / 1000;
  t.ok(Math.abs(passed - expected) / expected < 0.05, `${passed} frames passed of ${expected.toFixed(0)} the rate allows (within 5 %)`);
  const c = policerCounters(pmd0.shared, pmd0.config, 'shared');
  t.equal(c.green.packets, passed, 'the shared counters hold both PMDs');
  t.equal(pmd0.counts('a').green + pmd1.counts('a').green, passed, 'each PMD counts its own');

  // A restarted PMD 0 finds the buckets as they are (empty now), not full again.
  const restarted = await stage(policers, { pmd: 0, pmdCount: 2, shareWith: pmd0 });
  t.same(where(run(restarted, 'a', [v4(1000)], { us })), ['policer_red'], 'a restarted PMD does not reset the buckets');
});

t.test('a reload with new policers is taken live, the kept buckets with it', async (t) => {
  const h = await stage([{ name: 'p', cir: '1kpps', cbs: 4, apply: [{ inPort: 'a' }] }]);
  t.same(where(run(h, 'a', times(6, () => v4(100)), { us: 1_000_000 })), ['pass', 'pass', 'pass', 'pass', 'policer_red', 'policer_red'], 'before: 4 packets of burst');
  // The new config: the same policer, now on port b too, with a larger burst.
  const config = ratelimit.parseConfig!({ policers: [{ name: 'p', cir: '1kpps', cbs: 8, apply: [{ inPort: 'a' }, { inPort: 'b' }] }] });
  const shared = { ...h.shared };
  ratelimit.prepare!({ config, topology: h.topology, shared, fresh: () => false, log: { info() {}, warn() {} }, runJob: () => Promise.reject(new Error('no jobs')) });
  front.tablesChanged!(h.state, { config, shared });
  t.same(where(run(h, 'b', times(2, () => v4(100)), { us: 1_000_000 })), ['policer_red', 'policer_red'], 'after: port b meters into the same bucket, still empty');
  t.same(where(run(h, 'a', times(10, () => v4(100)), { us: 1_010_000 })), ['pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'policer_red', 'policer_red'], '10 ms refill up to the new burst of 8');
});

t.test("policers reordered or renamed start afresh: no policer's counts show under another's name", async (t) => {
  const first = { name: 'first', cir: '1kpps', cbs: 4, apply: [{ inPort: 'a' }] };
  const second = { name: 'second', cir: '1kpps', cbs: 4, apply: [{ inPort: 'b' }] };
  const h = await stage([first, second]);
  run(h, 'a', times(6, () => v4(100)), { us: 1_000_000 });
  const counts = (name: string) => {
    const c = policerCounters(h.shared, h.config, name);
    return [c.green.packets, c.red.packets];
  };
  t.same([counts('first'), counts('second')], [[4, 2], [0, 0]], '4 green and 2 red on the first');
  await h.reconfigure({ policers: [{ ...first, cbs: 8 }, second] });
  t.same([counts('first'), counts('second')], [[4, 2], [0, 0]], 'a burst changed, the same policers in the same order: the counts kept');
  await h.reconfigure({ policers: [second, { ...first, cbs: 8 }] });
  t.same([counts('first'), counts('second')], [[0, 0], [0, 0]], "reordered: both start afresh, and the second shows none of the first's counts");
  await h.reconfigure({ policers: [second, { ...first, name: 'renamed' }] });
  t.same(counts('renamed'), [0, 0], 'renamed: afresh too');
});

t.test('config errors name the field', async (t) => {
  const fails = (policers: unknown, field: string, pattern: RegExp, what: string) =>
    t.throws(() => ratelimit.parseConfig!({ policers }), { field, message: pattern, code: 'VR_PLUGIN_CONFIG' }, what);
  const ok = { name: 'ok', cir: '1mbit' };
  fails([ok, ok], 'policers[1].name', /already the name of policers\[0\]/, 'names are unique');
  fails([ok, { name: 'x', cir: '50mbps' }], 'policers[1].cir', /ambiguous.*50mbit/, 'mbps is refused, with the fix');
  fails([ok, ok, { name: 'x', cir: 'fast' }], 'policers[2].cir', /must be a rate/, 'a rate that is no rate');
  fails([{ name: 'x', cir: '5furlong' }], 'policers[0].cir', /unknown unit "furlong"/, 'an unknown unit');
  fails([{ name: 'x' }], 'policers[0].cir', /is required/, 'cir is required');
  fails([{ name: 'x', cir: '10kpps', cbs: '64kb' }], 'policers[0].cbs', /in packets/, 'a packet policer takes bursts in packets');
  fails([{ name: 'x', cir: '10kpps', unit: 'bps' }], 'policers[0].cir', /packets per second/, 'the rate and the unit disagree');
  fails([{ name: 'x', cir: '1mbit', cbs: '1kb' }], 'policers[0].cbs', /at least the largest packet/, 'CBS below a full-size frame');
  fails([{ name: 'x', cir: '1mbit', cbs: '1.3kb' }], 'policers[0].cbs', /whole number of bytes/, 'sizes are whole bytes');
  fails([{ name: 'x', type: 'trTCM', cir: '2mbit', pir: '1mbit' }], 'policers[0].pir', /at least cir/, 'RFC 2698: PIR >= CIR');
  fails([{ name: 'x', type: 'trTCM', cir: '2mbit' }], 'policers[0].pir', /is required/, 'trTCM needs a pir');
  fails([{ name: 'x', type: 'srTCM', cir: '2mbit', pbs: 3000 }], 'policers[0].pbs', /trTCM/, 'pbs on an srTCM');
  fails([{ name: 'x', type: 'tbf', cir: '2mbit' }], 'policers[0].type', /srTCM/, 'an unknown meter');
  fails([{ name: 'x', cir: '1mbit', burst: 3000 }], 'policers[0].burst', /unknown key/, 'an unknown key');
  fails([{ name: 'x', cir: '1mbit', actions: { red: 'reject' } }], 'policers[0].actions.red', /"pass", "drop" or \{"remark"/, 'an unknown action');
  fails([{ name: 'x', cir: '1mbit', actions: { yellow: { remark: 64 } } }], 'policers[0].actions.yellow.remark', /DSCP/, 'a DSCP out of range');
  fails([{ name: 'x', cir: '1mbit', colorMap: { red: [14] } }], 'policers[0].colorMap', /colour-aware/, 'a colour map on a colour-blind policer');
  fails([{ name: 'x', cir: '1mbit', apply: [{}] }], 'policers[0].apply[0]', /must name where/, 'an empty attachment');
  fails([{ name: 'x', cir: '1mbit', apply: [{ perSource: '10.0.0.0/33' }] }], 'policers[0].apply[0].perSource', /not an IPv4 address or prefix/, 'a bad prefix');
  fails([{ name: 'x', cir: '1mbit', apply: [{ perSource: '10.0.0.0/8', maxAddresses: 1000 }] }], 'policers[0].apply[0].maxAddresses', /power of 2/, 'a table size not a power of 2');
  t.throws(() => ratelimit.parseConfig!({ policers: [], rate: 1 }), { field: 'rate', message: /unknown key/ }, 'the plugin entry takes no other key');
  await t.rejects(stage([ok, { name: 'y', cir: '1mbit', apply: [{ inPort: 'a' }, { perSource: '10.0.0.0/8', inPort: 'nope' }] }]), { field: 'policers[1].apply[1].inPort', message: /no port named "nope"/ }, 'an unknown port, found as the config is planned (sharedMemory), before any plugin prepares');
  const parsed = ratelimit.parseConfig!({ policers: [{ name: 'd', cir: '64kbit' }, { name: 'e', cir: '10gbit', type: 'trTCM', pir: '20gbit' }] });
  t.same(parsed.policers.map((p) => p.meter), [
    { meter: 'srtcm', unit: 'bytes', cir: 64_000, cbs: 2000, ebs: 0 },
    { meter: 'trtcm', unit: 'bytes', cir: 1e10, cbs: 312_500_000 > 2 ** 28 ? 2 ** 28 : 312_500_000, pir: 2e10, pbs: 2 ** 28 },
  ], 'defaults: srTCM, bit/s, CBS = 250 ms of CIR (at least a full frame), no EBS');
});
