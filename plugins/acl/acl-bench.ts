// Benchmark of the acl stage (`node plugins/acl/acl-bench.ts [--quick]`): ns per packet of
// the whole stage (parse, classify, act) in bursts of 32, for 10, 100 and 1000 rules of the
// classifier benchmark's ACL mix, and with connection tracking: established packets of
// 1,000,000 tracked flows. The stage is set up by the test harness, then its process() runs
// on bursts laid out once (a PacketBatch of the bench's own), so that the time is the stage's.
import { EGRESS_UNDECIDED, type PacketBatch } from '../../src/pipeline/api.ts';

/** batch.egress of a drop: EGRESS_DROP - code (src/dataplane/egress-codes.ts, not in the plugin API) */
const EGRESS_DROP = -2;
import { icmp4, icmp6, tcp4, tcp6, udp4, udp6 } from '../../test/support/frames.ts';
import { aclHarness, type AclHarness } from './acl-harness.ts';
import { aclRules, randomPackets } from './classifier-bench.ts';
import { createFlowKeys, type AclRule, type Prefix4, type Prefix6 } from './classifier.ts';
import acl, { readConntrack } from './index.ts';

const quick = globalThis.process.argv.includes('--quick');
const PORT_NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
const FLAG_LETTERS = 'FSRPAUEC';
const BURST = 32;

function text4(a: number): string {
  return [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
}

function text6(bytes: ArrayLike<number>): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':');
}

function prefixText(p: Prefix4 | Prefix6): string {
  return `${typeof p.addr === 'number' ? text4(p.addr) : text6(p.addr)}/${p.length}`;
}

function flagText(bits: number): string {
  let s = '';
  for (let i = 0; i < 8; i++) if (bits & (1 << i)) s += FLAG_LETTERS[i];
  return s;
}

/** A classifier-bench rule as a user would write it in "acl". */
function userRule(r: AclRule, i: number): Record<string, unknown> {
  const u: Record<string, unknown> = { action: i % 3 === 2 ? 'deny' : 'permit' };
  if (r.src) u.src = prefixText(r.src);
  if (r.dst) u.dst = prefixText(r.dst);
  if (r.protocol !== undefined) u.protocol = r.protocol;
  const range = (v: number | readonly [number, number]) => (typeof v === 'number' ? v : `${v[0]}-${v[1]}`);
  if (r.srcPort) u.srcPort = range(r.srcPort);
  if (r.dstPort) u.dstPort = range(r.dstPort);
  if (r.icmpType !== undefined) u.icmpType = range(r.icmpType);
  if (r.icmpCode !== undefined) u.icmpCode = range(r.icmpCode);
  if (r.tcpFlags) u.tcpFlags = `${flagText(r.tcpFlags.value)}/${flagText(r.tcpFlags.mask)}`;
  if (r.inPort !== undefined) u.inPort = PORT_NAMES[r.inPort];
  return u;
}

/** Frames for the packets randomPackets aims at the rules. */
function frames(rules: readonly AclRule[], count: number, seed: number): Uint8Array[] {
  const k = createFlowKeys(count);
  randomPackets(rules, k, count, seed);
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const v6 = (k.ipVersion[i] & 0x0f) === 6;
    const words = (a: Uint32Array) => Array.from({ length: 16 }, (_, j) => (a[4 * i + (j >> 2)] >>> (24 - 8 * (j & 3))) & 255);
    const ip = v6 ? { src: text6(words(k.src6)), dst: text6(words(k.dst6)) } : { src: text4(k.src4[i]), dst: text4(k.dst4[i]) };
    const ports = { srcPort: k.srcPort[i], dstPort: k.dstPort[i] };
    const p = k.protocol[i];
    if (p === 6) out.push(v6 ? tcp6({ ...ip, ...ports, flags: flagText(k.tcpFlags[i]) }) : tcp4({ ...ip, ...ports, flags: flagText(k.tcpFlags[i]) }));
    else if (p === 1 && !v6) out.push(icmp4({ ...ip, type: k.icmpType[i], code: k.icmpCode[i], payload: 32 }));
    else if (p === 58 && v6) out.push(icmp6({ ...ip, type: k.icmpType[i], code: k.icmpCode[i], payload: 32 }));
    else out.push(v6 ? udp6({ ...ip, ...ports, payload: 32 }) : udp4({ ...ip, ...ports, payload: 32 }));
  }
  return out;
}

/** One burst's frames, laid out once; each run only resets the decisions. */
class BenchBatch implements PacketBatch {
  static readonly STRIDE = 256;
  readonly count: number;
  readonly ingress: number;
  readonly egress = new Int32Array(64);
  readonly mark = new Uint32Array(64);
  readonly local = new Uint8Array(64);
  /** the PMD reads the clock once per poll round; here once per batch */
  get now(): number {
    return performance.timeOrigin + performance.now();
  }
  readonly data: Uint8Array;
  readonly words16: Uint16Array;
  readonly words32: Uint32Array;
  readonly frameRoom = BenchBatch.STRIDE - 64;
  private readonly lengths = new Uint32Array(64);

  constructor(frames: readonly Uint8Array[], ingress: number) {
    this.count = frames.length;
    this.ingress = ingress;
    this.data = new Uint8Array(frames.length * BenchBatch.STRIDE);
    this.words16 = new Uint16Array(this.data.buffer);
    this.words32 = new Uint32Array(this.data.buffer);
    frames.forEach((f, i) => {
      this.data.set(f, this.offset(i));
      this.lengths[i] = f.length;
    });
  }
  offset(i: number): number {
    return i * BenchBatch.STRIDE + 64;
  }
  length(i: number): number {
    return this.lengths[i];
  }
  setLength(i: number, length: number): void {
    this.lengths[i] = length;
  }
  dropAs(i: number, code: number): void {
    this.egress[i] = EGRESS_DROP - code;
  }
  dropped(i: number): boolean {
    const e = this.egress[i];
    return e <= EGRESS_DROP && e !== EGRESS_UNDECIDED;
  }
  emit(): number {
    return -1;
  }
  completeChecksum(): void {}
  rewritten(): void {}
  segmentLength(): number {
    return 0;
  }
  wireLength(i: number): number {
    return this.length(i);
  }
  saveSource(): void {}
  receivedSource(i: number): number {
    return this.offset(i) + 6;
  }
}

/** ns per packet of process() over the bursts (median of 7 rounds). */
function timeStage(h: AclHarness, bursts: readonly BenchBatch[], ms: number): number {
  const rounds: number[] = [];
  const state = h.state;
  for (let r = 0; r < 7; r++) {
    let packets = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < ms / 7) {
      for (const b of bursts) {
        b.egress.fill(EGRESS_UNDECIDED, 0, b.count);
        acl.process(b, state);
        packets += b.count;
      }
    }
    rounds.push(((performance.now() - t0) * 1e6) / packets);
  }
  rounds.sort((a, b) => a - b);
  return rounds[3];
}

const ms = quick ? 300 : 2000;
const ports = PORT_NAMES.map((name) => ({ name }));

console.log('acl stage, ns per packet in bursts of 32');
for (const n of [10, 100, 1000]) {
  const rules = aclRules(n, n);
  const config = { acl: rules.map(userRule), aclDefault: 'deny' };
  const t0 = performance.now();
  const h = await aclHarness({ ports, config });
  const prepareMs = performance.now() - t0;
  const all = frames(rules, 64 * BURST, n + 1);
  const bursts = Array.from({ length: 64 }, (_, b) => new BenchBatch(all.slice(b * BURST, (b + 1) * BURST), 0));
  timeStage(h, bursts, ms / 4);
  const stage = timeStage(h, bursts, ms);
  const denied = bursts.reduce((sum, b) => sum + b.egress.subarray(0, b.count).filter((e) => e !== EGRESS_UNDECIDED).length, 0);
  console.log(`  ${String(n).padStart(4)} rules: ${stage.toFixed(0).padStart(4)} ns; compiled in ${prepareMs.toFixed(0)} ms; ${denied} of ${64 * BURST} packets denied`);
}

// ---- connection tracking --------------------------------------------------------------------

const FLOWS = quick ? 100_000 : 1_000_000;
const template = udp4({ src: '10.0.0.0', dst: '198.51.100.7', srcPort: 0, dstPort: 53, payload: 32 });
/** Flow f: 10.(f >> 16).(f >> 8).f:(f & 0xffff) + 1024 to 198.51.100.7:53 (checksums stale: the ACL does not read them). */
function flowFrame(f: number, reply: boolean): Uint8Array {
  const frame = template.slice();
  const host = [10, (f >>> 16) & 255, (f >>> 8) & 255, f & 255];
  const port = 1024 + (f % 60000);
  if (reply) {
    frame.set([198, 51, 100, 7], 26);
    frame.set(host, 30);
    frame.set([0, 53, port >> 8, port & 255], 34);
  } else {
    frame.set(host, 26);
    frame.set([port >> 8, port & 255], 34);
  }
  return frame;
}

const ctConfig = { acl: [{ action: 'permit', inPort: 'a', stateful: true }], aclDefault: 'deny', conntrack: { maxFlows: 1 << Math.ceil(Math.log2(FLOWS)) } };
const ct: AclHarness = await aclHarness({ ports, config: ctConfig });
const tFill = performance.now();
for (let f = 0; f < FLOWS; f += BURST) {
  ct.run('a', Array.from({ length: Math.min(BURST, FLOWS - f) }, (_, j) => flowFrame(f + j, false)));
}
const fillMs = performance.now() - tFill;
const table = readConntrack(ct.shared)!;
const refused = ct.counts('a').conntrack_full ?? 0;
console.log(`conntrack: ${FLOWS} new flows in a table of ${table.capacity} slots in ${(fillMs / 1000).toFixed(1)} s; ${table.flows} live, ${refused} refused as full`);
let seed = 12345;
const randomFlow = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % FLOWS;
const replyBursts = Array.from({ length: 1024 }, () => new BenchBatch(Array.from({ length: BURST }, () => flowFrame(randomFlow(), true)), 1));
timeStage(ct, replyBursts, ms / 4);
const established = timeStage(ct, replyBursts, ms);
const passed = replyBursts.reduce((sum, b) => sum + b.egress.subarray(0, b.count).filter((e) => e === EGRESS_UNDECIDED).length, 0);
const misses = Array.from({ length: 64 }, () => new BenchBatch(Array.from({ length: BURST }, () => flowFrame(FLOWS + randomFlow(), true)), 1));
const missed = timeStage(ct, misses, ms);
console.log(`  established replies, random among ${FLOWS} flows: ${established.toFixed(0)} ns per packet (${passed} of ${1024 * BURST} passed)`);
console.log(`  replies of unknown flows (looked up, then denied by the rules): ${missed.toFixed(0)} ns per packet`);
