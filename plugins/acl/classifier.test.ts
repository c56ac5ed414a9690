// The ACL classifier: each rule field at its edges (prefixes of every length, port ranges
// at 0 and 65535, ICMP and ICMPv6, TCP flags, IPv4 and IPv6 in one list, frames that are
// not IP), refused rules, capacity, the compiled form shared between threads, and property
// tests against the naive reference over random rule lists and packets.
import t, { type Test } from 'tap';
import { Worker } from 'node:worker_threads';
import { BURST, Classifier, ClassifierError, compile, compiledBytesBound, createFlowKeys, FRAGMENT, MAX_RULES, type AclRule, type CompiledClassifier, type FlowKeys } from './classifier.ts';
import { aclRules, firstMatchNaive, NARROW_MIX, randomPackets, randomRules, type RuleMix } from './classifier-bench.ts';

const TCP = 6;
const UDP = 17;
const SCTP = 132;
const ICMP = 1;
const ICMPV6 = 58;

function ip4(text: string): number {
  return text.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}

function ip6(text: string): Uint8Array {
  const [head, tail] = text.split('::');
  const groups = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = groups(head);
  const tl = tail === undefined ? [] : groups(tail);
  const all = [...h, ...new Array(8 - h.length - tl.length).fill(0), ...tl];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

interface Pkt {
  v?: number;
  src?: string;
  dst?: string;
  proto?: number;
  sport?: number;
  dport?: number;
  type?: number;
  code?: number;
  flags?: number;
  inPort?: number;
  outPort?: number;
}

function setAddress(text: string | undefined, a4: Uint32Array, a6: Uint32Array, i: number): void {
  if (text === undefined) return;
  if (text.includes(':')) {
    const b = ip6(text);
    for (let j = 0; j < 4; j++) a6[4 * i + j] = ((b[4 * j] << 24) | (b[4 * j + 1] << 16) | (b[4 * j + 2] << 8) | b[4 * j + 3]) >>> 0;
  } else {
    a4[i] = ip4(text);
  }
}

/** Keys for the packets; fields left out stay 0 (port indices -1). */
function keysOf(packets: readonly Pkt[]): FlowKeys {
  const k = createFlowKeys(packets.length);
  packets.forEach((p, i) => {
    k.ipVersion[i] = p.v ?? ((p.src ?? p.dst ?? '').includes(':') ? 6 : 4);
    setAddress(p.src, k.src4, k.src6, i);
    setAddress(p.dst, k.dst4, k.dst6, i);
    k.protocol[i] = p.proto ?? 0;
    k.srcPort[i] = p.sport ?? 0;
    k.dstPort[i] = p.dport ?? 0;
    k.icmpType[i] = p.type ?? 0;
    k.icmpCode[i] = p.code ?? 0;
    k.tcpFlags[i] = p.flags ?? 0;
    k.inPort[i] = p.inPort ?? -1;
    k.outPort[i] = p.outPort ?? -1;
  });
  return k;
}

function classify(compiled: CompiledClassifier, keys: FlowKeys, count: number): number[] {
  const out = new Int32Array(count).fill(-2);
  new Classifier(compiled).classifyBurst(keys, count, out);
  return [...out];
}

/** Classifies the packets with the rules and checks the answers, and that the naive reference agrees. */
function expectClasses(t: Test, rules: readonly AclRule[], cases: readonly [Pkt, number, string][]): void {
  const keys = keysOf(cases.map(([p]) => p));
  const got = classify(compile(rules), keys, cases.length);
  cases.forEach(([, want, what], i) => t.equal(got[i], want, `${what}: rule ${want}`));
  t.same(
    cases.map((_, i) => firstMatchNaive(rules, keys, i)),
    cases.map(([, want]) => want),
    'the naive reference agrees',
  );
}

/** The first rule that throws, as { code, field }, or null. */
function refusal(rules: readonly unknown[]): { code: string; field: string } | null {
  try {
    compile(rules as AclRule[]);
    return null;
  } catch (err) {
    if (!(err instanceof ClassifierError)) throw err;
    return { code: err.code, field: err.field };
  }
}

t.test('an empty rule list matches nothing', async (t) => {
  const compiled = compile([]);
  const keys = keysOf([{ src: '10.0.0.1', proto: TCP }, { v: 6, src: '::1' }, { v: 0 }]);
  t.same(classify(compiled, keys, 3), [-1, -1, -1]);
  const out = Int32Array.of(7, 7);
  new Classifier(compiled).classifyBurst(keys, 0, out);
  t.same([...out], [7, 7], 'a burst of 0 packets writes nothing');
});

t.test('a rule naming nothing matches every frame, IP or not, and shadows the rules after it', async (t) => {
  expectClasses(t, [{}, { protocol: TCP }], [
    [{ src: '10.0.0.1', dst: '10.0.0.2', proto: TCP, dport: 80 }, 0, 'IPv4 TCP'],
    [{ src: '2001:db8::1', proto: ICMPV6, type: 128 }, 0, 'IPv6 ICMPv6'],
    [{ v: 0, proto: 200, inPort: 3 }, 0, 'not IP'],
    [{ v: 5 }, 0, 'version 5'],
  ]);
  // Many such rules: no field in use, even when the list is long enough for aggregates.
  const many = compile(Array.from({ length: 300 }, () => ({})));
  t.same(classify(many, keysOf([{ src: '1.2.3.4' }, { v: 0 }]), 2), [0, 0], '300 rules that name nothing: rule 0');
});

t.test('IPv4 prefixes: nested, host bits ignored, /0 takes IPv4 only', async (t) => {
  const rules: AclRule[] = [
    { dst: { addr: ip4('10.1.2.3'), length: 32 } },
    { dst: { addr: ip4('10.1.9.9'), length: 16 } },
    { dst: { addr: ip4('10.0.0.0'), length: 8 } },
    { dst: { addr: 0, length: 0 } },
    {},
  ];
  expectClasses(t, rules, [
    [{ dst: '10.1.2.3' }, 0, 'the /32'],
    [{ dst: '10.1.2.2' }, 1, 'next to the /32'],
    [{ dst: '10.1.0.0' }, 1, 'first of the /16 written with host bits'],
    [{ dst: '10.1.255.255' }, 1, 'last of the /16'],
    [{ dst: '10.0.255.255' }, 2, 'just below the /16'],
    [{ dst: '10.2.0.0' }, 2, 'just above the /16'],
    [{ dst: '11.0.0.0' }, 3, 'outside the /8'],
    [{ dst: '255.255.255.255' }, 3, 'the top address'],
    [{ dst: '0.0.0.0' }, 3, 'the bottom address'],
    [{ dst: '::' }, 4, 'IPv6 is not in 0.0.0.0/0'],
    [{ v: 0 }, 4, 'nor is a frame that is not IP'],
  ]);
});

t.test('prefixes of every length, at the bit that decides', async (t) => {
  // For each length L, a prefix rule then a catch-all; the address with bit b flipped
  // (0 = most significant) is in the prefix when b >= L.
  const a4 = ip4('172.31.200.77');
  const a6 = ip6('2001:db8:85a3:1234:5678:8a2e:370:7334');
  for (const [bits, base] of [[32, a4], [128, a6]] as const) {
    const wrong: string[] = [];
    for (let length = 0; length <= bits; length++) {
      const rules: AclRule[] = [{ src: typeof base === 'number' ? { addr: base, length } : { addr: base, length } }, {}];
      const flips = [length - 2, length - 1, length, length + 1, bits - 1].filter((b) => b >= 0 && b < bits);
      const keys = keysOf(flips.map((b) => ({ v: bits === 32 ? 4 : 6, src: flip(base, b) })));
      const got = classify(compile(rules), keys, flips.length);
      flips.forEach((b, i) => {
        const want = b >= length ? 0 : 1;
        if (got[i] !== want || firstMatchNaive(rules, keys, i) !== want) wrong.push(`/${length}, bit ${b} flipped: rule ${got[i]}, want ${want}`);
      });
    }
    t.same(wrong, [], `IPv${bits === 32 ? 4 : 6}: lengths 0 to ${bits}, bits flipped on either side of the length`);
  }
});

/** The address with bit b (0 = most significant) flipped, as text. */
function flip(base: number | Uint8Array, b: number): string {
  if (typeof base === 'number') {
    const x = (base ^ (1 << (31 - b))) >>> 0;
    return [24, 16, 8, 0].map((s) => (x >>> s) & 255).join('.');
  }
  const bytes = base.slice();
  bytes[b >> 3] ^= 0x80 >> (b & 7);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':');
}

t.test('IPv4 and IPv6 rules in one list; frames that are not IP', async (t) => {
  const rules: AclRule[] = [
    { src: { addr: ip6('2001:db8::'), length: 32 }, protocol: TCP },
    { src: { addr: ip4('192.168.0.0'), length: 16 }, protocol: TCP },
    { ipVersion: 6, protocol: UDP },
    { protocol: UDP },
    { ipVersion: 4 },
    { inPort: 2 },
    {},
  ];
  expectClasses(t, rules, [
    [{ src: '2001:db8:1::5', proto: TCP }, 0, 'IPv6 TCP in the IPv6 prefix'],
    [{ src: '2001:db9::5', proto: TCP }, 6, 'IPv6 TCP outside it'],
    [{ src: '192.168.3.4', proto: TCP }, 1, 'IPv4 TCP in the IPv4 prefix'],
    [{ src: '::c0a8:304', proto: TCP }, 6, 'the same 32 bits as the low word of an IPv6 address'],
    [{ src: '2001:db8::1', proto: UDP }, 2, 'IPv6 UDP'],
    [{ src: '10.0.0.1', proto: UDP }, 3, 'IPv4 UDP: a protocol rule takes both versions'],
    [{ src: '10.0.0.1', proto: 47 }, 4, 'IPv4 GRE'],
    [{ src: '::1', proto: 47, inPort: 2 }, 5, 'IPv6 GRE on port 2'],
    [{ v: 0, proto: UDP, inPort: 2 }, 5, 'not IP, on port 2: a protocol or version rule does not take it'],
    [{ v: 0, inPort: 1 }, 6, 'not IP, port 1'],
    [{ v: 0, proto: UDP, inPort: -1 }, 6, 'not IP, no port'],
  ]);
});

t.test('port ranges at 0 and 65535, for TCP, UDP and SCTP only', async (t) => {
  const rules: AclRule[] = [
    { protocol: TCP, dstPort: [0, 0] },
    { dstPort: [65535, 65535] },
    { srcPort: [1, 65534] },
    { srcPort: [0, 65535] },
    {},
  ];
  expectClasses(t, rules, [
    [{ src: '1.1.1.1', proto: TCP, dport: 0 }, 0, 'TCP port 0'],
    [{ src: '1.1.1.1', proto: UDP, dport: 0, sport: 0 }, 3, 'UDP port 0 is not the TCP rule'],
    [{ src: '1.1.1.1', proto: UDP, dport: 65535 }, 1, 'UDP to 65535'],
    [{ src: '::2', proto: SCTP, dport: 65535 }, 1, 'IPv6 SCTP to 65535'],
    [{ src: '1.1.1.1', proto: TCP, sport: 1, dport: 9 }, 2, 'source 1, the bottom of [1, 65534]'],
    [{ src: '1.1.1.1', proto: TCP, sport: 65534, dport: 9 }, 2, 'source 65534, its top'],
    [{ src: '1.1.1.1', proto: TCP, sport: 65535, dport: 9 }, 3, 'source 65535, just above: the full range'],
    [{ src: '1.1.1.1', proto: UDP, sport: 0, dport: 9 }, 3, 'source 0, just below'],
    [{ src: '1.1.1.1', proto: ICMP, sport: 5, dport: 65535 }, 4, 'ICMP with stray port values: no port rule applies'],
    [{ src: '1.1.1.1', proto: 47, sport: 5, dport: 0 }, 4, 'GRE: not even the full range'],
    [{ v: 0, sport: 5, dport: 65535 }, 4, 'not IP'],
  ]);
});

t.test('ICMP and ICMPv6 type and code', async (t) => {
  const rules: AclRule[] = [
    { icmpType: 8, icmpCode: 0 },
    { ipVersion: 6, icmpType: [128, 129] },
    { protocol: ICMP, icmpCode: [1, 3] },
    { icmpType: 255 },
    { icmpCode: [0, 0] },
    {},
  ];
  expectClasses(t, rules, [
    [{ src: '1.1.1.1', proto: ICMP, type: 8, code: 0 }, 0, 'ICMP echo request'],
    [{ src: '::1', proto: ICMPV6, type: 8, code: 0 }, 0, 'ICMPv6 type 8: a rule without a version takes both'],
    [{ src: '1.1.1.1', proto: ICMPV6, type: 8, code: 0 }, 5, 'protocol 58 over IPv4 is not ICMP'],
    [{ src: '::1', proto: ICMP, type: 8, code: 0 }, 5, 'protocol 1 over IPv6 is not ICMPv6'],
    [{ src: '::1', proto: ICMPV6, type: 129, code: 9 }, 1, 'ICMPv6 echo reply'],
    [{ src: '1.1.1.1', proto: ICMP, type: 129, code: 9 }, 5, 'the IPv6 rule does not take IPv4'],
    [{ src: '1.1.1.1', proto: ICMP, type: 3, code: 3 }, 2, 'code 3, the top of [1, 3]'],
    [{ src: '1.1.1.1', proto: ICMP, type: 3, code: 4 }, 5, 'code 4, above it'],
    [{ src: '::1', proto: ICMPV6, type: 3, code: 1 }, 5, 'the protocol 1 rule does not take ICMPv6'],
    [{ src: '::1', proto: ICMPV6, type: 255, code: 255 }, 3, 'type 255'],
    [{ src: '1.1.1.1', proto: ICMP, type: 0, code: 0 }, 4, 'type 0 code 0'],
    [{ src: '1.1.1.1', proto: TCP, type: 8, code: 0 }, 5, 'TCP with stray ICMP values'],
  ]);
});

t.test('TCP flags: (flags & mask) === value, TCP only', async (t) => {
  const SYN = 0x02;
  const RST = 0x04;
  const ACK = 0x10;
  const rules: AclRule[] = [
    { tcpFlags: { mask: SYN | ACK, value: SYN } },
    { protocol: TCP, tcpFlags: { mask: RST, value: RST } },
    { tcpFlags: { mask: 0, value: 0 } },
    {},
  ];
  expectClasses(t, rules, [
    [{ src: '1.1.1.1', proto: TCP, flags: SYN }, 0, 'SYN'],
    [{ src: '::1', proto: TCP, flags: SYN | 0x80 }, 0, 'IPv6 SYN with CWR: bits outside the mask do not count'],
    [{ src: '1.1.1.1', proto: TCP, flags: SYN | ACK }, 2, 'SYN ACK'],
    [{ src: '1.1.1.1', proto: TCP, flags: RST | ACK }, 1, 'RST ACK'],
    [{ src: '1.1.1.1', proto: TCP, flags: 0 }, 2, 'no flags: mask 0 takes any TCP'],
    [{ src: '1.1.1.1', proto: UDP, flags: SYN }, 3, 'UDP with a stray SYN bit'],
  ]);
});

t.test('in and out port indices; indices no rule names', async (t) => {
  const rules: AclRule[] = [{ inPort: 0, outPort: 3 }, { outPort: 7 }, { inPort: 300 }, {}];
  expectClasses(t, rules, [
    [{ inPort: 0, outPort: 3 }, 0, 'in 0, out 3'],
    [{ inPort: 0, outPort: -1 }, 3, 'in 0, out not known yet'],
    [{ inPort: 5, outPort: 7 }, 1, 'out 7'],
    [{ inPort: 300 }, 2, 'in 300'],
    [{ inPort: 301 }, 3, 'in 301, beyond every index named'],
    [{ inPort: 32767, outPort: 32767 }, 3, 'the highest index'],
    [{ inPort: -5, outPort: -32768 }, 3, 'negative indices'],
  ]);
});

t.test('rules 31 and 32: either side of the first word boundary', async (t) => {
  for (const at of [0, 31, 32, 63, 64]) {
    const rules: AclRule[] = Array.from({ length: 70 }, (_, i) => (i === at ? { dstPort: [443, 443] } : { dstPort: [1000 + i, 1000 + i] }));
    const keys = keysOf([{ src: '1.1.1.1', proto: TCP, dport: 443 }, { src: '1.1.1.1', proto: TCP, dport: 1069 }, { src: '1.1.1.1', proto: TCP, dport: 444 }]);
    t.same(classify(compile(rules), keys, 3), [at, at === 69 ? -1 : 69, -1], `only rule ${at} takes port 443`);
  }
});

t.test('refused rules name the field', async (t) => {
  const p4 = { addr: ip4('10.0.0.0'), length: 8 };
  const p6 = { addr: ip6('2001:db8::'), length: 32 };
  const cases: [unknown, string][] = [
    [{ ipVersion: 5 }, 'rules[0].ipVersion'],
    [{ src: { addr: 1, length: 33 } }, 'rules[0].src.length'],
    [{ src: { addr: -1, length: 8 } }, 'rules[0].src.addr'],
    [{ src: { addr: 2 ** 32, length: 8 } }, 'rules[0].src.addr'],
    [{ dst: { addr: [1, 2, 3], length: 8 } }, 'rules[0].dst.addr'],
    [{ dst: { addr: new Uint8Array(16).fill(1), length: 129 } }, 'rules[0].dst.length'],
    [{ ipVersion: 6, src: p4 }, 'rules[0].src'],
    [{ src: p4, dst: p6 }, 'rules[0].dst'],
    [{ protocol: 256 }, 'rules[0].protocol'],
    [{ protocol: 1.5 }, 'rules[0].protocol'],
    [{ srcPort: [10, 5] }, 'rules[0].srcPort'],
    [{ srcPort: 80 }, 'rules[0].srcPort'],
    [{ dstPort: [0, 65536] }, 'rules[0].dstPort[1]'],
    [{ protocol: ICMP, dstPort: [80, 80] }, 'rules[0].protocol'],
    [{ icmpType: 8, dstPort: [1, 1] }, 'rules[0].icmpType'],
    [{ icmpCode: 0, tcpFlags: { mask: 2, value: 2 } }, 'rules[0].icmpCode'],
    [{ icmpType: [5, 4] }, 'rules[0].icmpType'],
    [{ protocol: UDP, tcpFlags: { mask: 2, value: 2 } }, 'rules[0].protocol'],
    [{ tcpFlags: { mask: 0x02, value: 0x12 } }, 'rules[0].tcpFlags.value'],
    [{ tcpFlags: 2 }, 'rules[0].tcpFlags'],
    [{ ipVersion: 4, protocol: ICMPV6, icmpType: 128 }, 'rules[0].protocol'],
    [{ protocol: TCP, icmpType: 8 }, 'rules[0].protocol'],
    [{ inPort: -1 }, 'rules[0].inPort'],
    [{ outPort: 40000 }, 'rules[0].outPort'],
    [{ dport: [80, 80] }, 'rules[0].dport'],
    [null, 'rules[0]'],
  ];
  for (const [rule, field] of cases) {
    t.same(refusal([rule]), { code: 'VR_ACL_RULE', field }, `${JSON.stringify(rule)} is refused at ${field}`);
  }
  t.same(refusal([{}, { protocol: -1 }]), { code: 'VR_ACL_RULE', field: 'rules[1].protocol' }, 'the index of the rule at fault');
  t.same(refusal('not a list' as never), { code: 'VR_ACL_RULE', field: 'rules' }, 'not an array');
});

t.test(`capacity: ${MAX_RULES} rules, then one more`, async (t) => {
  const rules: AclRule[] = Array.from({ length: MAX_RULES }, (_, i) => ({ protocol: UDP, dstPort: [i, i] }));
  const compiled = compile(rules);
  const keys = keysOf([{ src: '1.1.1.1', proto: UDP, dport: MAX_RULES - 1 }, { src: '1.1.1.1', proto: UDP, dport: MAX_RULES }]);
  t.same(classify(compiled, keys, 2), [MAX_RULES - 1, -1], 'the last rule is reachable');
  t.same(refusal([...rules, {}]), { code: 'VR_ACL_RULE', field: 'rules' }, `rule ${MAX_RULES + 1} is refused`);
});

t.test('compile is pure, deterministic and fast', async (t) => {
  const rules = randomRules(1000, 42);
  const frozen = structuredClone(rules);
  const deepFreeze = (o: object) => {
    for (const v of Object.values(o)) if (typeof v === 'object' && v !== null && !ArrayBuffer.isView(v)) deepFreeze(v);
    Object.freeze(o);
  };
  frozen.forEach(deepFreeze);
  const t0 = performance.now();
  const a = compile(frozen);
  const ms = performance.now() - t0;
  t.ok(ms < 1000, `1000 rules compile in ${ms.toFixed(0)} ms`);
  const b = compile(rules);
  t.same({ ...a, memory: null }, { ...b, memory: null }, 'the same layout twice');
  t.ok(Buffer.from(a.memory).equals(Buffer.from(b.memory)), 'the same bytes twice');
  t.same(rules, frozen, 'the rules are left as they were');
});

t.test('fragments after the first: rules naming ports, ICMP fields or flags refuse them', async (t) => {
  const rules: AclRule[] = [
    { protocol: UDP, dstPort: [53, 53] },
    { protocol: ICMP, icmpType: 8 },
    { tcpFlags: { mask: 0x02, value: 0x02 } },
    { src: { addr: ip4('10.0.0.0'), length: 8 }, protocol: UDP },
    { dst: { addr: ip6('2001:db8::'), length: 32 } },
    { protocol: TCP },
  ];
  expectClasses(t, rules, [
    [{ src: '10.1.1.1', proto: UDP, dport: 53 }, 0, 'a first fragment or whole packet reads ports'],
    [{ v: 4 | FRAGMENT, src: '10.1.1.1', proto: UDP, dport: 53 }, 3, 'a later fragment skips the port rule'],
    [{ v: 4 | FRAGMENT, src: '11.1.1.1', proto: ICMP, type: 8 }, -1, 'and the ICMP rule'],
    [{ v: 6 | FRAGMENT, dst: '2001:db8::1', proto: TCP, flags: 2 }, 4, 'and the flags rule; its addresses still count'],
    [{ v: 4 | FRAGMENT, src: '11.1.1.1', proto: TCP, flags: 2 }, 5, 'a protocol-only rule takes it'],
  ]);
});

t.test('compiled into memory set aside by compiledBytesBound, at an offset, the answers are the same', async (t) => {
  const cases: [string, AclRule[]][] = [
    ['no rules', []],
    ['one wildcard', [{}]],
    ['8192 port rules', Array.from({ length: MAX_RULES }, (_, i) => ({ protocol: UDP, dstPort: [i, i] }))],
    ['1000 narrow', randomRules(1000, 9, NARROW_MIX)],
    ['1000 acl', aclRules(1000, 10)],
    ...Array.from({ length: 12 }, (_, i): [string, AclRule[]] => [`random ${i * 90}`, randomRules(i * 90, 100 + i)]),
  ];
  for (const [what, rules] of cases) {
    const bound = compiledBytesBound(rules);
    const alone = compile(rules);
    const used = alone.memory.byteLength;
    if (!t.ok(bound >= used || used === 64, `${what}: the bound ${bound} holds the ${used} bytes taken`)) continue;
    const memory = new SharedArrayBuffer(4096 + bound);
    const placed = compile(rules, { memory, offset: 4096, bytes: bound });
    t.equal(placed.memory, memory, `${what}: written in place`);
    const keys = createFlowKeys(64);
    randomPackets(rules, keys, 64, rules.length + 1);
    t.same(classify(placed, keys, 64), classify(alone, keys, 64), `${what}: the same answers`);
  }
  t.throws(() => compile([{ protocol: UDP, dstPort: [1, 2] }], { memory: new SharedArrayBuffer(128), offset: 64, bytes: 64 }), /set aside/, 'a target too small is refused');
});

t.test('bursts longer than 32 are taken 32 at a time', async (t) => {
  const rules = randomRules(100, 5);
  const keys = createFlowKeys(100);
  randomPackets(rules, keys, 100, 6);
  const compiled = compile(rules);
  const got = classify(compiled, keys, 70);
  t.same(got, Array.from({ length: 70 }, (_, i) => firstMatchNaive(rules, keys, i)), 'all 70 answers');
  const out = new Int32Array(100).fill(-2);
  new Classifier(compiled).classifyBurst(keys, 70, out);
  t.same([...out.subarray(70)], new Array(30).fill(-2), 'nothing written past count');
});

t.test('a worker compiles; the main thread and another worker classify over the same shared memory', async (t) => {
  const url = new URL('./classifier.ts', import.meta.url).href;
  const rules = aclRules(300, 77);
  const keys = createFlowKeys(BURST);
  randomPackets(rules, keys, BURST, 78);
  const run = (job: 'compile' | 'classify', data: object): Promise<unknown> => {
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       import(workerData.url).then(({ compile, Classifier }) => {
         if (workerData.job === 'compile') return parentPort.postMessage(compile(workerData.rules));
         const out = new Int32Array(workerData.count);
         new Classifier(workerData.compiled).classifyBurst(workerData.keys, workerData.count, out);
         parentPort.postMessage({ out: [...out], shared: workerData.compiled.memory instanceof SharedArrayBuffer });
       });`,
      { eval: true, workerData: { url, job, ...data } },
    );
    return new Promise((resolve, reject) => {
      worker.once('message', (m) => void worker.terminate().then(() => resolve(m)));
      worker.once('error', reject);
    });
  };
  const compiled = (await run('compile', { rules })) as CompiledClassifier;
  t.ok(compiled.memory instanceof SharedArrayBuffer, 'the compiled form crossed postMessage with its SharedArrayBuffer');
  const want = Array.from({ length: BURST }, (_, i) => firstMatchNaive(rules, keys, i));
  t.same(classify(compiled, keys, BURST), want, 'the main thread classifies with what the worker compiled');
  const other = (await run('classify', { compiled, keys, count: BURST })) as { out: number[]; shared: boolean };
  t.ok(other.shared, 'the second worker views shared memory');
  t.same(other.out, want, 'and gets the same answers');
});

// ---- property tests: the compiled classifier against the naive reference ------------------

interface Case {
  name: string;
  rules: AclRule[];
}

const V4_ONLY: RuleMix = { allWildcard: 0.002, ipv4: 1, ipv6: 0 };
const V6_ONLY: RuleMix = { allWildcard: 0.002, ipv4: 0, ipv6: 1 };
const NO_ADDRESSES: RuleMix = { allWildcard: 0.01, ipv4: 0, ipv6: 0 };
const WILDCARDS: RuleMix = { allWildcard: 0.03, ipv4: 0.3, ipv6: 0.3 };

const cases: Case[] = [];
for (const count of [10, 100, 1000]) {
  for (let seed = 1; seed <= 4; seed++) cases.push({ name: `random mix, ${count} rules, seed ${seed}`, rules: randomRules(count, seed * 7919 + count) });
  for (let seed = 1; seed <= 2; seed++) cases.push({ name: `ACL mix, ${count} rules, seed ${seed}`, rules: aclRules(count, seed * 104729 + count) });
}
for (const count of [1, 31, 32, 33, 255, 256, 257, 300, 2000]) cases.push({ name: `random mix, ${count} rules`, rules: randomRules(count, count) });
for (const count of [257, 1500]) cases.push({ name: `ACL mix, ${count} rules`, rules: aclRules(count, count) });
for (const count of [10, 100, 1000, 3000]) cases.push({ name: `narrow rules, ${count}`, rules: randomRules(count, count + 1, NARROW_MIX) });
cases.push({ name: 'IPv4 rules only, 500', rules: randomRules(500, 11, V4_ONLY) });
cases.push({ name: 'IPv6 rules only, 500', rules: randomRules(500, 12, V6_ONLY) });
cases.push({ name: 'no addresses, 500', rules: randomRules(500, 13, NO_ADDRESSES) });
cases.push({ name: 'many catch-all rules, 300', rules: randomRules(300, 14, WILDCARDS) });

const BURSTS = 48;

t.test('property: the compiled classifier answers as the naive scan, on random rules and packets', async (t) => {
  const scans = new Set<string>();
  for (const { name, rules } of cases) {
    const compiled = compile(rules);
    scans.add(compiled.words <= 1 ? 'one word' : compiled.aggregateWords === 0 ? 'in order' : 'aggregated');
    // Each burst with its own thread's view, as PMDs would have.
    const classifier = new Classifier(structuredClone(compiled));
    const keys = createFlowKeys(BURST);
    const out = new Int32Array(BURST);
    const wrong: string[] = [];
    let matched = 0;
    const firsts = new Set<number>();
    for (let b = 0; b < BURSTS; b++) {
      randomPackets(rules, keys, BURST, rules.length * 1000 + b, b % 4 === 3 ? 0 : 0.75);
      classifier.classifyBurst(keys, BURST, out);
      for (let i = 0; i < BURST; i++) {
        const want = firstMatchNaive(rules, keys, i);
        if (want >= 0) matched++;
        firsts.add(want);
        if (out[i] !== want && wrong.length < 3) {
          wrong.push(`burst ${b} packet ${i} ${describe(keys, i)}: rule ${out[i]}, reference rule ${want} ${JSON.stringify(rules[want] ?? null)}`);
        }
      }
    }
    const deepest = Math.max(...firsts);
    t.same(wrong, [], `${name}: ${BURSTS * BURST} packets, ${matched} matched, first matches at ${firsts.size} rules, the deepest ${deepest}`);
  }
  t.same([...scans].sort(), ['aggregated', 'in order', 'one word'], 'each way of scanning the words was exercised');
});

function describe(k: FlowKeys, i: number): string {
  const a6 = (a: Uint32Array) => [...a.subarray(4 * i, 4 * i + 4)].map((w) => w.toString(16).padStart(8, '0')).join(':');
  const src = k.ipVersion[i] === 6 ? a6(k.src6) : k.src4[i].toString(16);
  const dst = k.ipVersion[i] === 6 ? a6(k.dst6) : k.dst4[i].toString(16);
  return (
    `{v${k.ipVersion[i]} ${src} > ${dst} proto ${k.protocol[i]} ports ${k.srcPort[i]} > ${k.dstPort[i]} ` +
    `icmp ${k.icmpType[i]}/${k.icmpCode[i]} flags ${k.tcpFlags[i]} in ${k.inPort[i]} out ${k.outPort[i]}}`
  );
}
