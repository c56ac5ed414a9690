// The acl stage with connection tracking: replies of a connection a stateful rule let in
// pass, new connections from outside do not; the two directions on two PMDs; TCP closes
// and resets, a SYN on a closed connection; expiry and aging; related ICMP errors; a full
// table; and the table kept across a PMD restart.
import t from 'tap';
import { EGRESS_UNDECIDED } from '../../src/pipeline/api.ts';
import { icmp4, icmp6, parseFrame, tcp4, udp4, udp6 } from '../../test/support/frames.ts';
import { aclHarness, type AclHarness } from './acl-harness.ts';
import { FlowCache } from './flow-cache.ts';
import { HEADERS_ESTABLISHED } from './headers.ts';
import { FlowCounts, portEntries } from './conntrack.ts';
import { readConntrack } from './index.ts';
import { CONNTRACK_REGION } from './tables.ts';

const PORTS = [{ name: 'in' }, { name: 'out' }];
const T0 = 1_700_000_000_000;

/** Inside (port "in", 10.0.0.0/24) may open connections out; nothing comes in unasked. */
const CONFIG = {
  acl: [
    { action: 'permit', inPort: 'in', stateful: true, policer: 'p' },
    { action: 'permit', protocol: 'icmpv6', icmpType: '133-136' },
  ],
  aclDefault: 'deny',
  policerNames: ['p'],
};

function route(frame: Uint8Array): number {
  const ip = parseFrame(frame).ip;
  if (ip === undefined) return EGRESS_UNDECIDED;
  return ip.dst.startsWith('10.0.0.') || ip.dst.startsWith('2001:db8:0:') ? 0 : 1;
}

interface Pair {
  pmd0: AclHarness;
  pmd1: AclHarness;
  /** sets both PMDs' clocks, seconds after T0 */
  at(seconds: number): void;
}

async function pair(config: Record<string, unknown> = CONFIG): Promise<Pair> {
  const pmd0 = await aclHarness({ ports: PORTS, config, route, pmd: 0, pmdCount: 2 });
  const pmd1 = await aclHarness({ ports: PORTS, config, route, pmd: 1, pmdCount: 2, shareWith: pmd0 });
  const p: Pair = {
    pmd0,
    pmd1,
    at(seconds) {
      pmd0.clock = pmd0.state.now = () => T0 + seconds * 1000;
      pmd1.clock = pmd1.state.now = () => T0 + seconds * 1000;
    },
  };
  p.at(0);
  return p;
}

function fate(h: AclHarness, port: string, frames: Uint8Array[]): string[] {
  return h.run(port, frames).map((o) => (o.to === 'drop' ? o.reason! : 'pass'));
}

const inside = '10.0.0.2';
const outside = '192.0.2.9';
const out = <T extends object>(o: T) => ({ src: inside, dst: outside, ...o });
const back = <T extends object>(o: T) => ({ src: outside, dst: inside, ...o });

t.test('TCP: the handshake and the replies pass; a connection from outside does not', async (t) => {
  const { pmd0 } = await pair();
  t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 40000, dstPort: 80, flags: 'S' }))]), ['pass'], 'SYN out');
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 40000, flags: 'SA' }))]), ['pass'], 'SYN-ACK back');
  t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 40000, dstPort: 80, flags: 'A' }))]), ['pass'], 'ACK out');
  const replies = pmd0.run('out', [tcp4(back({ srcPort: 80, dstPort: 40000, flags: 'PA', payload: 100 }))]);
  t.equal(replies[0].to, 'in', 'data back');
  t.equal(replies[0].mark, 1, "the replies carry the opening rule's policer mark");
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 40001, flags: 'PA' })), tcp4(back({ srcPort: 5555, dstPort: 22, flags: 'S' }))]), ['acl_deny', 'acl_deny'], 'other ports, and a SYN from outside, are denied');
  t.same(pmd0.counts('in'), { acl_permitted: 1, conntrack_new: 1, conntrack_established: 1 });
  t.same(pmd0.counts('out'), { conntrack_established: 2, acl_deny: 2 });
});

t.test('the two directions of a flow on two PMDs are one entry', async (t) => {
  const { pmd0, pmd1 } = await pair();
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 5000, dstPort: 53 }))]), ['pass']);
  t.same(fate(pmd1, 'out', [udp4(back({ srcPort: 53, dstPort: 5000 }))]), ['pass'], 'the reply on the other PMD');
  t.same(fate(pmd1, 'out', [udp6({ src: '2001:db8:1::9', dst: '2001:db8:0::2', srcPort: 53, dstPort: 5000 })]), ['acl_deny'], 'a reply to a flow never opened');
  t.same(fate(pmd1, 'in', [udp6({ src: '2001:db8:0::2', dst: '2001:db8:1::9', srcPort: 5000, dstPort: 53 })]), ['pass']);
  t.same(fate(pmd0, 'out', [udp6({ src: '2001:db8:1::9', dst: '2001:db8:0::2', srcPort: 53, dstPort: 5000 })]), ['pass'], 'IPv6 too');
  t.same(readConntrack(pmd0.shared, T0 / 1000)?.flows, 2);
});

t.test('the conntrack gauges scan the table at most once a second, however often they are read', async (t) => {
  const { pmd0 } = await pair();
  let ms = 0;
  const counts = new FlowCounts(1000, () => ms);
  const memory = pmd0.shared[CONNTRACK_REGION];
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 5000, dstPort: 53 }))]), ['pass']);
  t.equal(counts.read(memory, T0 / 1000).flows, 1, 'the first read scans');
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 5001, dstPort: 53 }))]), ['pass']);
  ms = 999;
  t.equal(counts.read(memory, T0 / 1000).flows, 1, 'a read within the second: the last scan');
  ms = 1000;
  t.equal(counts.read(memory, T0 / 1000).flows, 2, 'a second on: scanned again');
  t.equal(new FlowCounts(1000, () => ms).read(memory, T0 / 1000 + 3600).flows, 0, 'what has expired by the time given is no live flow');
});

t.test("fragments of a tracked flow's replies pass as their first fragment does; a new flow's from outside do not", async (t) => {
  const { pmd0 } = await pair();
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 5000, dstPort: 53 }))]), ['pass'], 'the query');
  const answer = [udp4(back({ id: 77, srcPort: 53, dstPort: 5000, mf: true, payload: 1472 })), udp4(back({ id: 77, srcPort: 53, dstPort: 5000, fragOffset: 1480, payload: 600 }))];
  t.same(fate(pmd0, 'out', answer), ['pass', 'pass'], 'a large answer, fragmented');
  const unasked = [udp4(back({ id: 78, srcPort: 53, dstPort: 5001, mf: true, payload: 1472 })), udp4(back({ id: 78, srcPort: 53, dstPort: 5001, fragOffset: 1480, payload: 600 }))];
  t.same(fate(pmd0, 'out', unasked), ['acl_deny', 'acl_deny'], 'to a port that asked nothing');
  t.same(pmd0.counts('out'), { conntrack_established: 1, acl_fragments_followed: 2, acl_deny: 2 });
});

t.test('an idle PMD ages its share by the clock, not by the time of its last burst', async (t) => {
  // Its flows were opened 10 minutes ago (the batches' time); since, no burst. Between
  // bursts the PMD reads the clock (state.now, the wall clock unless a test sets it): the
  // entries expired long since, and its sweeps empty them.
  const pmd0 = await aclHarness({ ports: PORTS, config: CONFIG, route, pmd: 0, pmdCount: 1 });
  const opened = Date.now() - 600_000;
  pmd0.clock = () => opened;
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 1, dstPort: 2 })), udp4(out({ srcPort: 3, dstPort: 4 }))]), ['pass', 'pass']);
  t.equal(readConntrack(pmd0.shared, Math.floor(opened / 1000))?.entries, 2, 'two entries');
  // A slice of its share a round: the whole table (one PMD) in 1,024 rounds.
  for (let i = 0; i < 1100; i++) pmd0.betweenBursts();
  t.equal(readConntrack(pmd0.shared)?.entries, 0, 'swept by the idle PMD');
});

t.test('expiry: UDP after 30 s unanswered, 120 s once answered; aging empties the slots', async (t) => {
  const p = await pair();
  const { pmd0, pmd1 } = p;
  fate(pmd0, 'in', [udp4(out({ srcPort: 1, dstPort: 2 })), udp4(out({ srcPort: 3, dstPort: 4 }))]);
  fate(pmd1, 'out', [udp4(back({ srcPort: 4, dstPort: 3 }))]);
  p.at(29);
  t.same(fate(pmd0, 'out', [udp4(back({ srcPort: 2, dstPort: 1 }))]), ['pass'], 'at 29 s');
  p.at(60);
  t.same(fate(pmd0, 'out', [udp4(back({ srcPort: 2, dstPort: 1 })), udp4(back({ srcPort: 4, dstPort: 3 }))]), ['pass', 'pass'], 'each reply pushed the expiry on');
  p.at(60 + 121);
  t.same(fate(pmd0, 'out', [udp4(back({ srcPort: 2, dstPort: 1 })), udp4(back({ srcPort: 4, dstPort: 3 }))]), ['acl_deny', 'acl_deny'], '121 s idle');
  t.same(readConntrack(pmd0.shared, T0 / 1000 + 181), { flows: 0, entries: 2, capacity: 262144 }, 'expired, not swept yet');
  for (let i = 0; i < 600; i++) {
    pmd0.betweenBursts();
    pmd1.betweenBursts();
  }
  t.same(readConntrack(pmd0.shared, T0 / 1000 + 181)?.entries, 0, 'the sweeps emptied them');
});

t.test('TCP closes: FINs both ways, then 10 s; a reset at once; a new SYN asks the rules again', async (t) => {
  const p = await pair();
  const { pmd0 } = p;
  const open = (port: number) => {
    fate(pmd0, 'in', [tcp4(out({ srcPort: port, dstPort: 80, flags: 'S' }))]);
    fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: port, flags: 'SA' }))]);
    fate(pmd0, 'in', [tcp4(out({ srcPort: port, dstPort: 80, flags: 'A' }))]);
  };
  open(1000);
  open(1001);
  open(1002);
  fate(pmd0, 'in', [tcp4(out({ srcPort: 1000, dstPort: 80, flags: 'FA' }))]);
  fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1000, flags: 'FA' }))]);
  t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 1000, dstPort: 80, flags: 'A' }))]), ['pass'], 'the last ACK');
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1001, flags: 'R' }))]), ['pass'], 'a reset from outside passes');
  p.at(11);
  t.same(
    fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1000, flags: 'A' })), tcp4(back({ srcPort: 80, dstPort: 1001, flags: 'A' })), tcp4(back({ srcPort: 80, dstPort: 1002, flags: 'A' }))]),
    ['acl_deny', 'acl_deny', 'pass'],
    'closed and reset connections are gone after 10 s; the open one stays',
  );
  open(1003);
  fate(pmd0, 'in', [tcp4(out({ srcPort: 1003, dstPort: 80, flags: 'R' }))]);
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1003, flags: 'S' }))]), ['acl_deny'], 'a SYN from outside on a reset connection is denied');
  t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 1003, dstPort: 80, flags: 'S' }))]), ['pass'], 'a SYN from inside opens it again');
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1003, flags: 'SA' }))]), ['pass'], 'and its reply passes');
  p.at(11 + 7000);
  t.same(fate(pmd0, 'out', [tcp4(back({ srcPort: 80, dstPort: 1002, flags: 'A' }))]), ['pass'], 'established: kept 2 h 4 min idle');
});

t.test('ICMP: echo replies pass; errors about a tracked flow pass as related, others do not', async (t) => {
  const { pmd0, pmd1 } = await pair();
  t.same(fate(pmd0, 'in', [icmp4(out({ type: 8, id: 77, seq: 1 }))]), ['pass']);
  t.same(fate(pmd1, 'out', [icmp4(back({ type: 0, id: 77, seq: 1 })), icmp4(back({ type: 0, id: 78, seq: 1 })), icmp4(back({ type: 8, id: 5 }))]), ['pass', 'acl_deny', 'acl_deny'], 'the reply; not another id, nor a ping from outside');
  const sent = udp4(out({ srcPort: 4444, dstPort: 53, payload: 12 }));
  fate(pmd0, 'in', [sent]);
  const quote = (f: Uint8Array) => f.subarray(14, 14 + 28);
  const unreachable = icmp4({ src: '198.51.100.1', dst: inside, type: 3, code: 3, payload: quote(sent) });
  const stranger = icmp4({ src: '198.51.100.1', dst: inside, type: 11, code: 0, payload: quote(udp4(out({ srcPort: 4445, dstPort: 53 }))) });
  const truncated = icmp4({ src: '198.51.100.1', dst: inside, type: 3, code: 3, payload: quote(sent).subarray(0, 22) });
  t.same(fate(pmd1, 'out', [unreachable, stranger, truncated]), ['pass', 'acl_deny', 'acl_deny'], 'related: the quoted flow is tracked; a quote too short is not');
  const elsewhere = icmp4({ src: '198.51.100.1', dst: '10.0.0.99', type: 3, code: 3, payload: quote(sent) });
  t.same(fate(pmd1, 'out', [elsewhere]), ['acl_deny'], "an error quoting a tracked flow, to a host other than the quoted packet's sender, is not related");
  const sent6 = udp6({ src: '2001:db8:0::2', dst: '2001:db8:1::9', srcPort: 4444, dstPort: 53 });
  fate(pmd0, 'in', [sent6]);
  const tooBig = icmp6({ src: '2001:db8:1::1', dst: '2001:db8:0::2', type: 2, rest: 1280, payload: sent6.subarray(14) });
  t.same(fate(pmd1, 'out', [tooBig]), ['pass'], 'ICMPv6 packet too big, related');
  t.same(pmd1.counts('out').conntrack_related, 2);
});

t.test("an echo entry passes requests one way and replies the other: the peer cannot ping back with the same identifier", async (t) => {
  const { pmd0, pmd1 } = await pair();
  t.same(fate(pmd0, 'in', [icmp4(out({ type: 8, id: 77, seq: 1 }))]), ['pass'], 'inside pings out: the entry opens');
  t.same(fate(pmd1, 'out', [icmp4(back({ type: 8, id: 77, seq: 1 })), icmp4(back({ type: 0, id: 77, seq: 1 }))]), ['acl_deny', 'pass'], "a request from outside with the entry's identifier is the rules' (denied); the reply passes");
  t.same(fate(pmd0, 'in', [icmp4(out({ type: 0, id: 77, seq: 1 })), icmp4(out({ type: 8, id: 77, seq: 2 }))]), ['pass', 'pass'], "from inside the rules permit: a reply the wrong way passes by them, the next request as established");
  t.equal(pmd0.counts('in').conntrack_established, 1, 'only the request counted as established');
  const six = { src: '2001:db8:0::2', dst: '2001:db8:1::9' };
  t.same(fate(pmd0, 'in', [icmp6({ ...six, type: 128, id: 9, seq: 1 })]), ['pass']);
  t.same(fate(pmd1, 'out', [icmp6({ src: six.dst, dst: six.src, type: 128, id: 9, seq: 1 }), icmp6({ src: six.dst, dst: six.src, type: 129, id: 9, seq: 1 })]), ['acl_deny', 'pass'], 'ICMPv6 alike');
});

t.test('a full table drops new flows as conntrack_full; expired entries make room', async (t) => {
  const p = await pair({ ...CONFIG, conntrack: { maxFlows: 64, maxFlowsPerPort: 1024 } });
  const { pmd0 } = p;
  const flows = (from: number) => Array.from({ length: 32 }, (_, i) => udp4(out({ srcPort: from + i, dstPort: 9 })));
  const results: string[] = [];
  for (let b = 0; b < 8; b++) results.push(...fate(pmd0, 'in', flows(10000 + b * 32)));
  const opened = results.filter((r) => r === 'pass').length;
  const full = results.filter((r) => r === 'conntrack_full').length;
  t.equal(opened + full, 256, 'every new flow either opened or was refused');
  t.ok(opened <= 64 && opened >= 56, `${opened} of 64 slots filled before the first refusal (two-choice buckets)`);
  t.equal(pmd0.counts('in').conntrack_full, full);
  t.equal(readConntrack(pmd0.shared, T0 / 1000)?.flows, opened);
  t.same(fate(pmd0, 'in', [udp4(out({ srcPort: 10000, dstPort: 9 }))]), ['pass'], 'a flow already in passes');
  p.at(31);
  t.same(fate(pmd0, 'in', flows(20000)), new Array(32).fill('pass'), 'after expiry, new flows take the expired slots');
});

t.test('the flows opened from one port hold at most maxFlowsPerPort entries: a flood from one port leaves the others room', async (t) => {
  const p = await pair({ acl: [{ action: 'permit', stateful: true }], aclDefault: 'deny', conntrack: { maxFlows: 1024, maxFlowsPerPort: 100 } });
  const { pmd0, pmd1 } = p;
  const region = pmd0.shared[CONNTRACK_REGION];
  const flood = (h: AclHarness, from: number) => fate(h, 'in', Array.from({ length: 32 }, (_, i) => udp4(out({ srcPort: from + i, dstPort: 9 }))));
  const results: string[] = [];
  // From both PMDs: the limit is the port's, whichever PMD polls it.
  for (let b = 0; b < 4; b++) results.push(...flood(b % 2 === 0 ? pmd0 : pmd1, 10000 + b * 32));
  t.equal(results.filter((r) => r === 'pass').length, 100, '100 of 128 new flows from port in opened');
  t.equal(results.filter((r) => r === 'conntrack_port_full').length, 28, 'the rest dropped as conntrack_port_full');
  t.equal((pmd0.counts('in').conntrack_port_full ?? 0) + (pmd1.counts('in').conntrack_port_full ?? 0), 28, 'and counted on port in');
  t.equal(portEntries(region, 0), 100, 'port in holds 100 entries');
  t.same(fate(pmd1, 'out', Array.from({ length: 20 }, (_, i) => udp4(back({ srcPort: 30000 + i, dstPort: 22 })))), new Array(20).fill('pass'), 'port out still opens flows');
  t.equal(portEntries(region, 1), 20, 'which count as its own');
  t.same(fate(pmd0, 'out', [udp4(back({ srcPort: 9, dstPort: 10000 }))]), ['pass'], 'the replies of the flows in holds pass');
  t.same(fate(pmd1, 'in', [udp4(out({ srcPort: 10001, dstPort: 9 }))]), ['pass'], 'and a flow it holds goes on');
  // Its entries count until they are swept (within two seconds of expiring, as the PMDs poll).
  p.at(31);
  t.same(flood(pmd0, 20000).filter((r) => r === 'pass').length, 0, 'expired, not swept yet: still counted');
  // A sweep passes over the table once a second (a slice a poll round): two seconds on, every expired entry is gone.
  for (const second of [32, 33]) {
    p.at(second);
    for (let i = 0; i < 4; i++) {
      pmd0.betweenBursts();
      pmd1.betweenBursts();
    }
  }
  t.equal(portEntries(region, 1), 0, 'swept: port out holds none');
  t.equal(portEntries(region, 0), 1, 'port in the one answered flow (udpStream: 120 s)');
  t.same(flood(pmd1, 20000), new Array(32).fill('pass'), 'then port in opens flows again');
  t.equal(portEntries(region, 0), 33);
  t.equal(readConntrack(pmd0.shared, T0 / 1000 + 33)?.entries, 33, 'the counts agree with the table');
});

t.test('the table outlives a PMD: a restarted PMD finds the flows', async (t) => {
  const { pmd0 } = await pair();
  fate(pmd0, 'in', [udp4(out({ srcPort: 7, dstPort: 8 }))]);
  const restarted = await aclHarness({ ports: PORTS, config: CONFIG, route, pmd: 0, pmdCount: 2, shareWith: pmd0 });
  restarted.clock = restarted.state.now = () => T0;
  t.same(fate(restarted, 'out', [udp4(back({ srcPort: 8, dstPort: 7 }))]), ['pass']);
});

t.test('"stateful" for the whole ACL; stateless permits open nothing', async (t) => {
  const stateless = await pair({ acl: [{ action: 'permit', inPort: 'in' }], aclDefault: 'deny' });
  fate(stateless.pmd0, 'in', [udp4(out({ srcPort: 7, dstPort: 8 }))]);
  t.same(fate(stateless.pmd0, 'out', [udp4(back({ srcPort: 8, dstPort: 7 }))]), ['acl_deny'], 'no conntrack: the reply is denied');
  t.equal(readConntrack(stateless.pmd0.shared), null, 'and there is no table');
  const all = await pair({ acl: [{ action: 'permit', inPort: 'in' }], aclDefault: 'deny', stateful: true });
  fate(all.pmd0, 'in', [udp4(out({ srcPort: 7, dstPort: 8 }))]);
  t.same(fate(all.pmd1, 'out', [udp4(back({ srcPort: 8, dstPort: 7 }))]), ['pass']);
});

// The flow cache: each PMD passes packets of established flows as it parses them, while
// the flow's slot has not been written since it noted it (headers.ts, flow-cache.ts).
const viaCache = (h: AclHarness, n: number) => Array.from(h.state.headers.status.subarray(0, n), (s) => s === HEADERS_ESTABLISHED);

t.test('flow cache: established packets pass from it, with their mark, counted as established', async (t) => {
  const { pmd0 } = await pair();
  const reply = udp4(back({ srcPort: 53, dstPort: 5000 }));
  fate(pmd0, 'in', [udp4(out({ srcPort: 5000, dstPort: 53 }))]);
  t.same(fate(pmd0, 'out', [reply]), ['pass'], 'the first reply notes that the flow was answered (a write)');
  const first = pmd0.run('out', [reply, reply]);
  t.same(viaCache(pmd0, 2), [false, false], 'both read the table: the cache is filled after the burst is parsed');
  const again = pmd0.run('out', [reply, reply, reply]);
  t.same(viaCache(pmd0, 3), [true, true, true], 'then from the cache');
  t.same([...first, ...again].map((o) => [o.to, o.mark]), new Array(5).fill(['in', 1]), "all pass, with the opening rule's mark");
  t.same(pmd0.counts('out'), { conntrack_established: 6 });
  const tcp = (flags: string) => tcp4(back({ srcPort: 80, dstPort: 40000, flags }));
  fate(pmd0, 'in', [tcp4(out({ srcPort: 40000, dstPort: 80, flags: 'S' }))]);
  fate(pmd0, 'out', [tcp('SA')]);
  fate(pmd0, 'in', [tcp4(out({ srcPort: 40000, dstPort: 80, flags: 'A' }))]);
  fate(pmd0, 'out', [tcp('A')]);
  t.same(fate(pmd0, 'out', [tcp('PA'), tcp('A'), tcp('FA')]), ['pass', 'pass', 'pass']);
  t.same(viaCache(pmd0, 3), [true, true, false], 'a FIN is not taken from the cache: it moves the state');
  t.same(fate(pmd0, 'out', [tcp('A')]), ['pass']);
  t.same(viaCache(pmd0, 1), [false], 'nor the packets after it: the slot was written');
});

t.test('flow cache: a flow cached on one PMD and reset on the other is read again; expiry ends it', async (t) => {
  const p = await pair();
  const { pmd0, pmd1 } = p;
  const data = tcp4(back({ srcPort: 80, dstPort: 41000, flags: 'PA', payload: 10 }));
  fate(pmd0, 'in', [tcp4(out({ srcPort: 41000, dstPort: 80, flags: 'S' }))]);
  fate(pmd1, 'out', [tcp4(back({ srcPort: 80, dstPort: 41000, flags: 'SA' }))]);
  fate(pmd0, 'in', [tcp4(out({ srcPort: 41000, dstPort: 80, flags: 'A' }))]);
  fate(pmd1, 'out', [data]);
  t.same(fate(pmd1, 'out', [data, data]), ['pass', 'pass']);
  t.same(viaCache(pmd1, 2), [true, true], 'the replies pass from the cache of the PMD that polls them');
  t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 41000, dstPort: 80, flags: 'R' }))]), ['pass'], 'the other PMD resets the connection');
  t.same(fate(pmd1, 'out', [data]), ['pass'], 'a closed entry lets packets through until it expires, as before');
  t.same(viaCache(pmd1, 1), [false], 'but not from the cache: the slot was written since it was noted');
  p.at(11);
  t.same(fate(pmd1, 'out', [data, data]), ['acl_deny', 'acl_deny'], '10 s after the reset the flow is gone');

  const reply = udp4(back({ srcPort: 53, dstPort: 6000 }));
  fate(pmd0, 'in', [udp4(out({ srcPort: 6000, dstPort: 53 }))]);
  fate(pmd1, 'out', [reply]);
  fate(pmd1, 'out', [reply]);
  fate(pmd1, 'out', [reply]);
  t.same(viaCache(pmd1, 1), [true], 'an answered UDP flow in the cache');
  p.at(11 + 121);
  t.same(fate(pmd1, 'out', [reply]), ['acl_deny'], 'idle past udpStream: denied, not passed from the cache');
});

t.test('flow cache: two flows of one set both pass from it; a third waits for a set with room', async (t) => {
  const { pmd0 } = await pair();
  const cache = pmd0.state.conntrack!.cache;
  // Replies from outside:53 to three inside ports whose keys pick the same set.
  const u32 = (a: string) => a.split('.').reduce((v, b) => v * 256 + Number(b), 0) | 0;
  const setOf = (port: number) => FlowCache.at(cache.seed, u32(outside), u32(inside), (53 << 16) | port);
  // Three of one set: the cache's seed is random, and the ports after a first one may hold
  // fewer than two more of its set (about 1 in 100 seeds from port 10,000 on); 64,512
  // ports over its 8,192 sets hold some set's three, whatever the seed.
  const bySet = new Map<number, number[]>();
  for (let port = 1024; port < 65536; port++) {
    const same = bySet.get(setOf(port)) ?? [];
    same.push(port);
    bySet.set(setOf(port), same);
  }
  const ports = [...bySet.values()].find((same) => same.length >= 3)?.slice(0, 3);
  if (ports === undefined) throw new Error('no three ports pick one set of the flow cache');
  const replies = ports.map((port) => udp4(back({ srcPort: 53, dstPort: port })));
  for (const port of ports) fate(pmd0, 'in', [udp4(out({ srcPort: port, dstPort: 53 }))]);
  t.same(fate(pmd0, 'out', replies), ['pass', 'pass', 'pass'], 'the replies answer their flows (a write each)');
  fate(pmd0, 'out', replies);
  t.same(fate(pmd0, 'out', replies), ['pass', 'pass', 'pass']);
  t.same(viaCache(pmd0, 3), [true, true, false], 'the first two pass from the set; the third finds it full of flows noted this second');
  pmd0.clock = pmd0.state.now = () => T0 + 1000;
  fate(pmd0, 'out', [replies[2]]); // pushes the flow's expiry on (a write)
  fate(pmd0, 'out', [replies[2]]); // reads the slot as it now stays, notes it
  t.same(fate(pmd0, 'out', [replies[2]]), ['pass']);
  t.same(viaCache(pmd0, 1), [true], 'a second later the first flow to come takes a way whose flow was not seen yet');
});

t.test("flow cache: a flow's slot is read again only after the table changed", async (t) => {
  const { pmd0, pmd1 } = await pair();
  const cache = pmd1.state.conntrack!.cache;
  const reply = udp4(back({ srcPort: 53, dstPort: 5100 }));
  fate(pmd0, 'in', [udp4(out({ srcPort: 5100, dstPort: 53 }))]);
  fate(pmd1, 'out', [reply]);
  fate(pmd1, 'out', [reply]);
  t.same(fate(pmd1, 'out', [reply]), ['pass']);
  t.same(viaCache(pmd1, 1), [true], 'cached');
  // The slot's sequence as the entry noted it, moved on behind the table's back: a write
  // that a change would have come with. The entry does not look while nothing changed.
  const entries = cache.entries;
  const table = cache.table;
  const way = [...Array(entries.length / 8).keys()].map((k) => k * 8).find((c) => (entries[c + 3] & 0xff) === 17 && entries[c + 2] === ((53 << 16) | 5100));
  if (way === undefined) throw new Error("the flow's entry is not in the cache");
  const slotWord = entries[way + 4];
  table[slotWord] += 2;
  t.same(fate(pmd1, 'out', [reply, reply]), ['pass', 'pass']);
  t.same(viaCache(pmd1, 2), [true, true], 'no change since: from the cache, the slot not read');
  const epoch = cache.epoch;
  // Another connection opened on the other PMD: a state change (its first reply) is a change.
  fate(pmd0, 'in', [udp4(out({ srcPort: 5101, dstPort: 53 }))]);
  fate(pmd0, 'out', [udp4(back({ srcPort: 53, dstPort: 5101 }))]);
  t.same(fate(pmd1, 'out', [reply]), ['pass'], 'the table decides');
  t.equal(cache.epoch, epoch + 1, 'a new epoch');
  t.same(viaCache(pmd1, 1), [false], 'after a change the slot is read: its sequence moved, so not from the cache');
  fate(pmd1, 'out', [reply]);
  t.same(fate(pmd1, 'out', [reply, reply]), ['pass', 'pass']);
  t.same(viaCache(pmd1, 2), [true, true], 'noted again, in the new epoch');
  table[slotWord] += 2;
  fate(pmd0, 'in', [udp4(out({ srcPort: 5102, dstPort: 53 }))]);
  fate(pmd0, 'out', [udp4(back({ srcPort: 53, dstPort: 5102 }))]);
  t.same(fate(pmd1, 'out', [reply]), ['pass']);
  t.same(viaCache(pmd1, 1), [false], 'and read again after the next change');
});

t.test('flow cache: the change count moves only while the write holds its slot', async (t) => {
  // Moved before the slot's sequence, a cache could read the new count, then the slot as it
  // was before the write, and serve the old entry in the new epoch.
  const { pmd0, pmd1 } = await pair();
  const table = pmd1.state.conntrack!.cache.table;
  const slots = table[2]; // the header's slot count; the tags, then the slots of 16 words, sequence first
  const slotsHeld = () => {
    let held = 0;
    for (let s = 0; s < slots; s++) if ((table[16 + slots + s * 16] & 1) !== 0) held++;
    return held;
  };
  const heldAtChange: number[] = [];
  const add = Atomics.add;
  Atomics.add = ((array: Int32Array, index: number, value: number) => {
    if (array === table && index === 3) heldAtChange.push(slotsHeld());
    return add(array, index, value);
  }) as typeof Atomics.add;
  try {
    fate(pmd0, 'in', [udp4(out({ srcPort: 5300, dstPort: 53 }))]);
    fate(pmd1, 'out', [udp4(back({ srcPort: 53, dstPort: 5300 }))]); // replied: a new state
    fate(pmd0, 'in', [tcp4(out({ srcPort: 40300, dstPort: 80, flags: 'S' }))]);
    fate(pmd1, 'out', [tcp4(back({ srcPort: 80, dstPort: 40300, flags: 'SA' }))]);
    fate(pmd0, 'in', [tcp4(out({ srcPort: 40300, dstPort: 80, flags: 'A' }))]);
    fate(pmd1, 'out', [tcp4(back({ srcPort: 80, dstPort: 40300, flags: 'R' }))]); // closed
    t.same(fate(pmd0, 'in', [tcp4(out({ srcPort: 40300, dstPort: 80, flags: 'S' }))]), ['pass'], 'opened again');
  } finally {
    Atomics.add = add;
  }
  t.ok(heldAtChange.length >= 3, `the changes counted (${heldAtChange.length})`);
  t.same(heldAtChange, heldAtChange.map(() => 1), "each while one slot's sequence was odd: the write's");
});

t.test('flow cache: at the wrap of its 24-bit epochs it starts empty', async (t) => {
  const { pmd0 } = await pair();
  const cache = pmd0.state.conntrack!.cache;
  const reply = udp4(back({ srcPort: 53, dstPort: 5200 }));
  fate(pmd0, 'in', [udp4(out({ srcPort: 5200, dstPort: 53 }))]);
  fate(pmd0, 'out', [reply]);
  fate(pmd0, 'out', [reply]);
  t.same(fate(pmd0, 'out', [reply]), ['pass']);
  t.same(viaCache(pmd0, 1), [true], 'cached');
  cache.epoch = 0xffffff;
  fate(pmd0, 'in', [udp4(out({ srcPort: 5201, dstPort: 53 }))]);
  fate(pmd0, 'out', [udp4(back({ srcPort: 53, dstPort: 5201 }))]);
  t.equal(cache.sync(), 1, 'the epoch after 2^24 - 1 is 1');
  t.equal(cache.entries.reduce((n, w) => n + (w !== 0 ? 1 : 0), 0), 0, 'every entry emptied');
  t.same(fate(pmd0, 'out', [reply]), ['pass'], 'the table decides');
  t.same(viaCache(pmd0, 1), [false]);
});

t.test('a new flow and its next packets in one burst: the first opens it, the others pass as established', async (t) => {
  const { pmd0 } = await pair();
  const sent = udp4(out({ srcPort: 7000, dstPort: 53 }));
  t.same(fate(pmd0, 'in', [sent, sent, udp4(back({ srcPort: 53, dstPort: 7000 })), sent]), ['pass', 'pass', 'pass', 'pass']);
  t.same(pmd0.counts('in'), { acl_permitted: 1, conntrack_new: 1, conntrack_established: 3 });
  t.same(readConntrack(pmd0.shared, T0 / 1000)?.flows, 1, 'one entry');
});
