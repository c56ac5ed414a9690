// acl: the access control list as a stage of the pipeline, after routing (which has chosen
// each packet's egress port). Each burst is parsed once, classified as a whole by the
// compiled rule tables (classifier.ts), and each packet gets the action of the first rule
// it matches, or the default: permit, deny (dropped), or reject (answered with a TCP reset
// or an ICMP error through the ingress port, see reject.ts). With connection tracking,
// packets of a connection a stateful rule let in pass before the rules are consulted, in
// both directions, whichever PMD polls them (conntrack.ts).
//
// The rules are compiled in prepare(), in the control plane's job pool, into shared memory
// set aside by sharedMemory() from a bound computed without compiling; PMDs only view the
// tables. Frames that are not IP (ARP...) pass untouched; frames whose headers cannot be
// read are dropped (a filter fails closed).
import { PLUGIN_API_VERSION, type PacketBatch, type Plugin, type PluginContext, type PluginSetup, type Topology } from '../../src/pipeline/api.ts';
import { Classifier, createFlowKeys, type AclRule } from './classifier.ts';
import type { CompileInput, CompileSummary } from './compile-job.ts';
import { Conntrack, conntrackBytes, initConntrack, liveFlows } from './conntrack.ts';
import { createHeaders, HEADERS_BAD, HEADERS_IP, HEADERS_L4, HEADERS_NOT_IP, HEADERS_SKIP, Ipv6Walk, parseFrame, type Headers } from './headers.ts';
import { isIcmpError, REJECT_LIMITED, REJECT_SENT, Rejecter } from './reject.ts';
import { DENY, parseAclConfig, PERMIT, rulesFor, type AclConfig } from './rules.ts';
import { CONNTRACK_REGION, hitsBlockBytes, readTables, regionNames, tablesBytes } from './tables.ts';

export type { AclConfig } from './rules.ts';

/** Built from sources (.ts) or from dist/ (.js): the job module is beside this one, either way. */
const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const COMPILE_JOB = new URL(`./compile-job${MODULE_EXT}`, import.meta.url);

/** The most packets one batch holds (32 received, 32 emitted by earlier stages). */
const BATCH_CAPACITY = 64;

const DROP_REASONS = [
  ['acl_deny', 'denied by an ACL rule or by aclDefault'],
  ['acl_reject_limited', 'rejected, and not answered: more rejects than reject.rate/burst allow (per PMD)'],
  ['acl_reject_silent', 'rejected, and not answered: an ICMP error, a TCP reset, a later fragment or a packet to or from a group or unspecified address gets no answer (RFC 1122 3.2.2, RFC 4443 2.4)'],
  ['acl_bad_header', 'IP headers the ACL cannot read: truncated, IHL or lengths past the frame, a tiny first fragment, too many IPv6 extension headers, stacked VLAN tags'],
  ['conntrack_full', 'a stateful rule let a new flow in, but both conntrack buckets of the flow are full of live flows'],
] as const;

const COUNTERS = [
  ['acl_permitted', 'packets let through by a rule or by aclDefault (not counting those of tracked connections)'],
  ['acl_rejected', 'packets rejected and answered with a TCP reset or an ICMP error'],
  ['conntrack_new', 'connections a stateful rule let in (conntrack entries created)'],
  ['conntrack_established', 'packets passed as part of a tracked connection, either way'],
  ['conntrack_related', 'ICMP errors passed because the packet they quote belongs to a tracked connection'],
] as const;

// Per packet, how connection tracking sees it (trackKey)
const UNTRACKED = 0;
/** may open an entry: TCP but a reset, UDP, SCTP, other protocols, an echo request */
const OPENS = 1;
/** belongs to an entry, never opens one: a TCP reset, an echo reply */
const FOLLOWS = 2;
const ICMP_ERROR = 3;

const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;

export interface AclState {
  readonly ruleCount: number;
  readonly classifier: Classifier;
  /** per rule: PERMIT, DENY or REJECT; its batch.mark; whether it opens conntrack entries */
  readonly actions: Uint8Array;
  readonly marks: Uint32Array;
  readonly tracked: Uint8Array;
  readonly defaultAction: number;
  /** this PMD's hit counters: one per rule, then the packets no rule matched */
  readonly hits: Float64Array;
  readonly conntrack: Conntrack | null;
  readonly rejecter: Rejecter;
  readonly headers: Headers;
  readonly walk: Ipv6Walk;
  readonly matches: Int32Array;
  readonly drop: { deny: number; limited: number; silent: number; bad: number; full: number };
  readonly counter: { permitted: number; rejected: number; opened: number; established: number; related: number };
  readonly count: PluginContext<AclConfig>['count'];
  /**
   * The clock, in ms: read once per batch. A field (not a module function) so that tests
   * can set the time; every PMD's clock has the same origin (the wall clock), as the
   * conntrack entries they share hold times.
   */
  now: () => number;
  /** the second the last sweep of this PMD's share of conntrack ended */
  sweptAt: number;
  /** a closed TCP entry that the packet at hand, a SYN, would open again if the rules let it */
  reopen: number;
}

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

function createState(ctx: PluginContext<AclConfig>): AclState {
  const config = ctx.config;
  const rules = rulesFor(config, ctx.ports);
  const names = regionNames(rules);
  const compiled = readTables(ctx.shared[names.tables]);
  if (compiled === null) throw new Error('acl: the rule tables were not compiled (prepare() has not run on this memory)');
  const ruleCount = rules.length;
  const keys = createFlowKeys(BATCH_CAPACITY);
  return {
    ruleCount,
    classifier: new Classifier(compiled),
    actions: Uint8Array.from(config.rules, (r) => r.action),
    marks: Uint32Array.from(config.rules, (r) => r.mark),
    tracked: Uint8Array.from(config.rules, (r) => (r.tracked ? 1 : 0)),
    defaultAction: config.defaultAction,
    hits: new Float64Array(ctx.shared[names.hits], ctx.pmd * hitsBlockBytes(ruleCount), ruleCount + 1),
    conntrack: config.tracking ? new Conntrack(ctx.shared[CONNTRACK_REGION], config.conntrack.timeouts, ctx.pmd, ctx.pmdCount) : null,
    rejecter: new Rejecter(ctx.ports, ctx.bridgeSettings, config.reject),
    headers: createHeaders(keys, BATCH_CAPACITY),
    walk: new Ipv6Walk(),
    matches: new Int32Array(BATCH_CAPACITY),
    drop: {
      deny: ctx.dropCode('acl_deny'),
      limited: ctx.dropCode('acl_reject_limited'),
      silent: ctx.dropCode('acl_reject_silent'),
      bad: ctx.dropCode('acl_bad_header'),
      full: ctx.dropCode('conntrack_full'),
    },
    counter: {
      permitted: ctx.counterId('acl_permitted'),
      rejected: ctx.counterId('acl_rejected'),
      opened: ctx.counterId('conntrack_new'),
      established: ctx.counterId('conntrack_established'),
      related: ctx.counterId('conntrack_related'),
    },
    count: ctx.count,
    now: wallClockMs,
    sweptAt: -1,
    reopen: -1,
  };
}

/**
 * Sets the conntrack key of packet i (the packet's own flow, or for an ICMP error the flow
 * of the packet it quotes) and says how the packet relates to entries; UNTRACKED when it
 * has no key (a later fragment, ICMP that is neither echo nor error, a quote too short).
 */
function trackKey(s: AclState, ct: Conntrack, d: Uint8Array, off: number, i: number): number {
  const h = s.headers;
  const k = h.keys;
  const status = h.status[i];
  if (status !== HEADERS_L4 && status !== HEADERS_IP) return UNTRACKED;
  const v6 = k.ipVersion[i] === 6;
  const l3 = off + h.l3[i];
  const src = v6 ? l3 + 8 : l3 + 12;
  const dst = v6 ? l3 + 24 : l3 + 16;
  const protocol = k.protocol[i];
  if (status === HEADERS_IP) {
    ct.setKey(d, src, dst, v6, 0, 0, protocol);
    return OPENS;
  }
  if (protocol === 1 || protocol === 58) {
    const type = k.icmpType[i];
    const l4 = off + h.l4[i];
    // echo request and reply (RFC 792; RFC 4443 4.1, 4.2): the identifier stands for ports
    if (type === (v6 ? 128 : 8) || type === (v6 ? 129 : 0)) {
      const id = (d[l4 + 4] << 8) | d[l4 + 5];
      ct.setKey(d, src, dst, v6, id, id, protocol);
      return type === (v6 ? 128 : 8) ? OPENS : FOLLOWS;
    }
    if (isIcmpError(h, i) && quotedKey(s, ct, d, l4 + 8, off + h.end[i], v6)) return ICMP_ERROR;
    return UNTRACKED;
  }
  ct.setKey(d, src, dst, v6, k.srcPort[i], k.dstPort[i], protocol);
  return protocol === 6 && (k.tcpFlags[i] & TCP_RST) !== 0 ? FOLLOWS : OPENS;
}

/**
 * The key of the packet an ICMP error quotes (its IP header at `ip`, up to `end`): RFC 792
 * and RFC 4443 2.4 (c) have the error carry the header and at least the first 8 bytes of
 * data, which hold the ports. False when the quote is too short or malformed.
 */
function quotedKey(s: AclState, ct: Conntrack, d: Uint8Array, ip: number, end: number, v6: boolean): boolean {
  let protocol: number;
  let l4: number;
  if (!v6) {
    if (ip + 20 > end || d[ip] >>> 4 !== 4) return false;
    const ihl = (d[ip] & 0x0f) * 4;
    if (ihl < 20 || (((d[ip + 6] << 8) | d[ip + 7]) & 0x1fff) !== 0) return false;
    protocol = d[ip + 9];
    l4 = ip + ihl;
  } else {
    if (ip + 40 > end || d[ip] >>> 4 !== 6) return false;
    s.walk.walk(d, ip + 40, end, d[ip + 6]);
    if (s.walk.protocol < 0 || s.walk.laterFragment) return false;
    protocol = s.walk.protocol;
    l4 = s.walk.offset;
  }
  const src = v6 ? ip + 8 : ip + 12;
  const dst = v6 ? ip + 24 : ip + 16;
  if (protocol === 6 || protocol === 17 || protocol === 132) {
    if (l4 + 4 > end) return false;
    ct.setKey(d, src, dst, v6, (d[l4] << 8) | d[l4 + 1], (d[l4 + 2] << 8) | d[l4 + 3], protocol);
    return true;
  }
  if (protocol === (v6 ? 58 : 1)) {
    if (l4 + 8 > end) return false;
    const type = d[l4];
    if (type !== (v6 ? 128 : 8) && type !== (v6 ? 129 : 0)) return false;
    const id = (d[l4 + 4] << 8) | d[l4 + 5];
    ct.setKey(d, src, dst, v6, id, id, protocol);
    return true;
  }
  ct.setKey(d, src, dst, v6, 0, 0, protocol);
  return true;
}

function process(batch: PacketBatch, s: AclState): void {
  const count = batch.count;
  if (count === 0) return;
  const d = batch.data;
  const h = s.headers;
  const k = h.keys;
  const status = h.status;
  const egress = batch.egress;
  const ingress = batch.ingress;
  const walk = s.walk;
  const local = batch.local;
  for (let i = 0; i < count; i++) {
    // The router's own packets are not filtered (Linux's FORWARD chain never sees them).
    if (batch.dropped(i) || local[i] === 1) {
      status[i] = HEADERS_SKIP;
      continue;
    }
    parseFrame(h, walk, i, d, batch.offset(i), batch.length(i));
    k.inPort[i] = ingress;
    // flood or undecided: no out port, and rules that name one do not match
    const e = egress[i];
    k.outPort[i] = e >= 0 ? e : -1;
  }
  s.classifier.classifyBurst(k, count, s.matches);

  const nowMs = s.now();
  const now = Math.floor(nowMs / 1000);
  s.rejecter.refill(nowMs);
  const ct = s.conntrack;
  const matches = s.matches;
  let permitted = 0;
  let rejected = 0;
  let opened = 0;
  let established = 0;
  let related = 0;
  for (let i = 0; i < count; i++) {
    const st = status[i];
    if (st === HEADERS_SKIP || st === HEADERS_NOT_IP) continue;
    if (st === HEADERS_BAD) {
      batch.dropAs(i, s.drop.bad);
      continue;
    }
    let track = UNTRACKED;
    s.reopen = -1;
    if (ct !== null) {
      const off = batch.offset(i);
      track = trackKey(s, ct, d, off, i);
      if (track !== UNTRACKED) {
        const entry = ct.lookup(now);
        if (entry >= 0) {
          if (track === ICMP_ERROR) {
            related++;
            continue;
          }
          const flags = k.protocol[i] === 6 ? k.tcpFlags[i] : 0;
          // A SYN on a closed connection opens a new one: the rules decide it afresh.
          if (flags !== 0 && (flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && Conntrack.closed(ct.status(entry))) {
            s.reopen = entry;
          } else {
            ct.update(entry, flags, now);
            const mark = ct.mark(entry);
            if (mark !== 0) batch.mark[i] = mark;
            established++;
            continue;
          }
        }
      }
    }
    const rule = matches[i];
    s.hits[rule >= 0 ? rule : s.ruleCount] += 1;
    const action = rule >= 0 ? s.actions[rule] : s.defaultAction;
    if (action === PERMIT) {
      if (track === OPENS && rule >= 0 && s.tracked[rule] === 1) {
        const flags = k.protocol[i] === 6 ? k.tcpFlags[i] : 0;
        const mark = s.marks[rule];
        // ct is not null: track is UNTRACKED without it
        const ok = s.reopen >= 0 ? ct!.reopen(s.reopen, flags, mark, now) || ct!.insert(flags, mark, now) : ct!.insert(flags, mark, now);
        if (!ok) {
          batch.dropAs(i, s.drop.full);
          continue;
        }
        opened++;
      }
      if (rule >= 0 && s.marks[rule] !== 0) batch.mark[i] = s.marks[rule];
      permitted++;
    } else if (action === DENY) {
      batch.dropAs(i, s.drop.deny);
    } else {
      const r = s.rejecter.reject(batch, i, h);
      if (r === REJECT_SENT) rejected++;
      else batch.dropAs(i, r === REJECT_LIMITED ? s.drop.limited : s.drop.silent);
    }
  }
  const c = s.counter;
  if (permitted > 0) s.count(ingress, c.permitted, permitted);
  if (rejected > 0) s.count(ingress, c.rejected, rejected);
  if (opened > 0) s.count(ingress, c.opened, opened);
  if (established > 0) s.count(ingress, c.established, established);
  if (related > 0) s.count(ingress, c.related, related);
}

/**
 * Conntrack aging, a slice of this PMD's share of the table per poll round, each share
 * swept at most once a second. Reads the clock (not the last batch's second): a PMD whose
 * ports are idle still ages its share of a table the others fill.
 */
function betweenBursts(s: AclState): void {
  const ct = s.conntrack;
  if (ct === null) return;
  const now = Math.floor(s.now() / 1000);
  if (now === s.sweptAt) return;
  if (ct.age(now)) s.sweptAt = now;
}

/** The per-rule hit counts, summed over the PMDs: `rules[i]` for acl[i], and the packets no rule matched. */
export function readRuleHits(shared: Readonly<Record<string, SharedArrayBuffer>>, config: AclConfig): { rules: number[]; unmatched: number } {
  const region = Object.keys(shared).find((name) => name.startsWith('hits-'));
  const ruleCount = config.rules.length;
  const rules = new Array<number>(ruleCount).fill(0);
  let unmatched = 0;
  if (region === undefined) return { rules, unmatched };
  const memory = shared[region];
  const block = hitsBlockBytes(ruleCount);
  for (let at = 0; at + block <= memory.byteLength; at += block) {
    const hits = new Float64Array(memory, at, ruleCount + 1);
    for (let r = 0; r < ruleCount; r++) rules[r] += hits[r];
    unmatched += hits[ruleCount];
  }
  return { rules, unmatched };
}

/** Live conntrack flows, occupied slots and the table's capacity, or null without connection tracking. */
export function readConntrack(shared: Readonly<Record<string, SharedArrayBuffer>>, nowSeconds = Math.floor(wallClockMs() / 1000)): { flows: number; entries: number; capacity: number } | null {
  const memory = shared[CONNTRACK_REGION];
  return memory === undefined ? null : liveFlows(memory, nowSeconds);
}

function sharedMemory(config: AclConfig, topology: Topology): Record<string, number> {
  const rules = rulesFor(config, topology.ports);
  const names = regionNames(rules);
  const regions: Record<string, number> = {
    [names.tables]: tablesBytes(rules),
    [names.hits]: topology.pmdCount * hitsBlockBytes(rules.length),
  };
  if (config.tracking) regions[CONNTRACK_REGION] = conntrackBytes(config.conntrack.maxFlows);
  return regions;
}

async function prepare(setup: PluginSetup<AclConfig>): Promise<void> {
  const rules: AclRule[] = rulesFor(setup.config, setup.topology.ports);
  const names = regionNames(rules);
  const input: CompileInput = { rules, memory: setup.shared[names.tables] };
  const summary = await setup.runJob<CompileSummary>(COMPILE_JOB, input);
  setup.log.info(`${summary.rules} rules compiled in ${summary.ms.toFixed(1)} ms into ${(summary.bytes / 1024).toFixed(0)} KiB`);
  if (setup.config.tracking) initConntrack(setup.shared[CONNTRACK_REGION], crypto.getRandomValues(new Uint32Array(1))[0]);
}

const plugin: Plugin<AclConfig, AclState> = {
  name: 'acl',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  parseConfig: parseAclConfig,
  dropReasons: DROP_REASONS,
  counters: COUNTERS,
  sharedMemory,
  prepare,
  createState,
  process,
  betweenBursts,
};

export default plugin;
