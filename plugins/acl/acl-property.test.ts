// Property: on random rule lists (as a user writes them) and random frames, the stage's
// verdict for each frame is that of the first rule matching it in a plain reading of the
// rules, or the default: parsing, compiling, classifying and acting agree with the spec.
import t from 'tap';
import { Address4, Address6 } from 'ip-address';
import { EGRESS_FLOOD, EGRESS_UNDECIDED } from '../../src/pipeline/api.ts';
import { icmp4, icmp6, parseFrame, tcp4, tcp6, udp4, udp6 } from '../../test/support/frames.ts';
import { aclHarness } from './acl-harness.ts';
import acl from './index.ts';

type Rule = Record<string, unknown>;

function prng(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const V4 = ['10.0.0.1', '10.0.0.2', '10.0.1.1', '10.1.0.1', '192.168.1.1', '192.168.1.200', '0.0.0.1'];
const V6 = ['2001:db8::1', '2001:db8::2', '2001:db8:0:1::1', '2001:db8:1::1', 'fd00::1', '::2'];
const PORTS = [0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65535];
const PORT_NAMES = ['a', 'b', 'c'];
const FLAGS = 'FSRPAUEC';

function generator(seed: number) {
  const rng = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rng() * items.length)];
  const chance = (p: number) => rng() < p;
  const port = (): number | string => {
    if (chance(0.5)) return pick(PORTS);
    const a = pick(PORTS);
    const b = pick(PORTS);
    return `${Math.min(a, b)}-${Math.max(a, b)}`;
  };
  const flags = (): string => {
    let s = '';
    for (const c of FLAGS.slice(0, 5)) if (chance(0.3)) s += c;
    return s;
  };
  const rule = (): Rule => {
    const r: Rule = { action: pick(['permit', 'deny', 'deny', 'reject']) };
    const version = pick([0, 4, 6]);
    if (version === 4 && chance(0.7)) r.src = `${pick(V4)}/${pick([8, 16, 24, 31, 32])}`;
    if (version === 4 && chance(0.7)) r.dst = `${pick(V4)}/${pick([0, 8, 24, 32])}`;
    if (version === 6 && chance(0.7)) r.src = `${pick(V6)}/${pick([16, 32, 48, 64, 127, 128])}`;
    if (version === 6 && chance(0.7)) r.dst = `${pick(V6)}/${pick([0, 32, 64, 128])}`;
    if (chance(0.6)) r.protocol = pick(['tcp', 'udp', 'icmp', 'icmpv6', 6, 17, 47]);
    const kind = rng();
    if (kind < 0.4) {
      if (chance(0.5)) r.srcPort = port();
      if (chance(0.7)) r.dstPort = port();
    } else if (kind < 0.6) {
      r.icmpType = pick([0, 3, 8, 11, 128, 129, '0-8', '128-255']);
      if (chance(0.3)) r.icmpCode = pick([0, 1, 13, '0-3']);
    } else if (kind < 0.7) {
      const mask = flags() || 'S';
      r.tcpFlags = `${[...mask].filter(() => chance(0.5)).join('')}/${mask}`;
    }
    if (chance(0.15)) r.inPort = pick(PORT_NAMES);
    if (chance(0.15)) r.outPort = pick(PORT_NAMES);
    return r;
  };
  /** Rules the config accepts (a random rule may be one that could never match: refused). */
  const rules = (n: number): Rule[] => {
    const out: Rule[] = [];
    while (out.length < n) {
      const r = rule();
      try {
        acl.parseConfig!({ acl: [r] });
        out.push(r);
      } catch {
        // could never match: refused with its field, as the config tests check
      }
    }
    return out;
  };
  const frame = (): Uint8Array => {
    const v6 = chance(0.45);
    const ip = v6 ? { src: pick(V6), dst: pick(V6) } : { src: pick(V4), dst: pick(V4) };
    const fragment = !v6 && chance(0.08) ? { fragOffset: 64 } : {};
    const l4 = pick(['tcp', 'udp', 'icmp', 'other']);
    const ports = { srcPort: pick(PORTS), dstPort: pick(PORTS) };
    if (l4 === 'tcp') return v6 ? tcp6({ ...ip, ...ports, flags: flags() }) : tcp4({ ...ip, ...fragment, ...ports, flags: flags() });
    if (l4 === 'udp') return v6 ? udp6({ ...ip, ...ports }) : udp4({ ...ip, ...fragment, ...ports });
    const icmp = { type: pick([0, 3, 8, 11, 128, 129, 200]), code: pick([0, 1, 13]), payload: 28 };
    if (l4 === 'icmp') return v6 ? icmp6({ ...ip, ...icmp }) : icmp4({ ...ip, ...fragment, ...icmp });
    // protocol 47 (GRE): no header the ACL reads
    const f = v6 ? udp6({ ...ip, ...ports }) : udp4({ ...ip, ...fragment, ...ports });
    f[v6 ? 14 + 6 : 14 + 9] = 47;
    return f;
  };
  return { rules, frame, pick };
}

/** Routing stand-in: the egress follows from the destination's last byte. */
const EGRESS = [0, 1, 2, EGRESS_FLOOD, EGRESS_UNDECIDED];
function egressOf(dst: string): number {
  const bytes = dst.includes(':') ? new Address6(dst).toUnsignedByteArray() : new Address4(dst).toArray();
  return EGRESS[bytes[bytes.length - 1] % EGRESS.length];
}

// ---- the plain reading of a rule --------------------------------------------------------------

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58 };

function inRange(spec: unknown, v: number): boolean {
  if (typeof spec === 'number') return v === spec;
  const [lo, hi] = String(spec).split('-').map(Number);
  return v >= lo && v <= (hi ?? lo);
}

function inPrefix(cidr: string, addr: string): boolean {
  if (cidr.includes(':') !== addr.includes(':')) return false;
  return cidr.includes(':') ? new Address6(addr).isInSubnet(new Address6(cidr)) : new Address4(addr).isInSubnet(new Address4(cidr));
}

function flagsMatch(spec: string, letters: string): boolean {
  const [set, mask] = spec.split('/');
  return [...mask].every((c) => letters.includes(c) === set.includes(c));
}

function ruleMatches(r: Rule, frame: Uint8Array, inPort: string, outPort: string | null): boolean {
  const f = parseFrame(frame);
  const ip = f.ip!;
  const fragment = (ip.fragOffset ?? 0) > 0;
  if (r.src !== undefined && !inPrefix(r.src as string, ip.src)) return false;
  if (r.dst !== undefined && !inPrefix(r.dst as string, ip.dst)) return false;
  if (r.protocol !== undefined && ip.protocol !== (PROTOCOLS[r.protocol as string] ?? r.protocol)) return false;
  const hasPorts = ip.protocol === 6 || ip.protocol === 17;
  if ((r.srcPort !== undefined || r.dstPort !== undefined) && (!hasPorts || fragment)) return false;
  if (r.srcPort !== undefined && !inRange(r.srcPort, f.l4!.srcPort!)) return false;
  if (r.dstPort !== undefined && !inRange(r.dstPort, f.l4!.dstPort!)) return false;
  const isIcmp = (ip.version === 4 && ip.protocol === 1) || (ip.version === 6 && ip.protocol === 58);
  if ((r.icmpType !== undefined || r.icmpCode !== undefined) && (!isIcmp || fragment)) return false;
  if (r.icmpType !== undefined && !inRange(r.icmpType, f.l4!.type!)) return false;
  if (r.icmpCode !== undefined && !inRange(r.icmpCode, f.l4!.code!)) return false;
  if (r.tcpFlags !== undefined && (ip.protocol !== 6 || fragment || !flagsMatch(r.tcpFlags as string, f.l4!.tcpFlags ?? ''))) return false;
  if (r.inPort !== undefined && r.inPort !== inPort) return false;
  if (r.outPort !== undefined && r.outPort !== outPort) return false;
  return true;
}

function expected(rules: readonly Rule[], defaultAction: string, frame: Uint8Array, inPort: string): string {
  const e = egressOf(parseFrame(frame).ip!.dst);
  const outPort = e >= 0 ? PORT_NAMES[e] : null;
  const rule = rules.find((r) => ruleMatches(r, frame, inPort, outPort));
  return (rule?.action as string | undefined) ?? defaultAction;
}

t.test('property: the stage acts as the first matching rule says, on random rules and frames', async (t) => {
  for (const [n, seed] of [[0, 1], [1, 2], [10, 3], [31, 4], [100, 5], [300, 6], [1000, 7]] as const) {
    const g = generator(seed);
    const rules = g.rules(n);
    const defaultAction = g.pick(['permit', 'deny', 'reject']);
    const h = await aclHarness({
      ports: PORT_NAMES.map((name) => ({ name })),
      config: { acl: rules, aclDefault: defaultAction, reject: { rate: 0, burst: 1_000_000 } },
      route: (f) => egressOf(parseFrame(f).ip!.dst),
    });
    let checked = 0;
    let wrong = 0;
    const seen = new Set<string>();
    for (let b = 0; b < 40; b++) {
      const inPort = g.pick(PORT_NAMES);
      const frames = Array.from({ length: 32 }, () => g.frame());
      const out = h.run(inPort, frames);
      frames.forEach((f, i) => {
        const want = expected(rules, defaultAction, f, inPort);
        const o = out[i];
        // a reject is dropped unanswered (acl_reject_*) or answered: rewritten, back to the ingress port
        const rewritten = o.frame.length !== f.length || o.frame.some((byte, j) => byte !== f[j]);
        const got = o.to === 'drop' ? (o.reason === 'acl_deny' ? 'deny' : o.reason!.startsWith('acl_reject') ? 'reject' : o.reason!) : o.to === inPort && rewritten ? 'reject' : rewritten ? 'rewritten' : 'permit';
        checked++;
        seen.add(want);
        if (got !== want) {
          wrong++;
          if (wrong <= 5) t.fail(`${n} rules: frame ${JSON.stringify(parseFrame(f).ip)} ${JSON.stringify(parseFrame(f).l4)} in ${inPort}: ${got}, the rules say ${want}`);
        }
      });
    }
    t.equal(wrong, 0, `${n} rules (default ${defaultAction}): ${checked} frames as the rules say (${[...seen].sort().join(', ')} seen)`);
  }
});
