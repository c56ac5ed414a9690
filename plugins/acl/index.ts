// acl: the access control list as a stage of the pipeline, after routing (which has chosen
// each packet's egress port). Each burst is parsed once, classified as a whole by the
// compiled rule tables (classifier.ts), and each packet gets the action of the first rule
// it matches, or the default: permit, deny (dropped), or reject (answered with a TCP reset
// or an ICMP error through the ingress port, see reject.ts). With connection tracking,
// packets of a connection a stateful rule let in pass before the rules are consulted, in
// both directions, whichever PMD polls them (conntrack.ts): most of them straight from
// the PMD's flow cache as they are parsed (flow-cache.ts), and only the packets of flows
// without an entry are classified.
//
// The rules are compiled in prepare(), in the control plane's job pool, into shared memory
// set aside by sharedMemory() from a bound computed without compiling; PMDs only view the
// tables. Frames that are not IP (ARP...) pass untouched; frames whose headers cannot be
// read are dropped (a filter fails closed).
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { Ipv6Walk, PLUGIN_API_VERSION, type PacketBatch, type Plugin, type PluginContext, type PluginSetup, type TableView, type Topology } from '../../src/pipeline/api.ts';
import { Classifier, createFlowKeys, type AclRule } from './classifier.ts';
import type { CompileInput, CompileSummary } from './compile-job.ts';
import { Conntrack, conntrackBytes, FlowCounts, initConntrack, INSERTED, liveFlows, MISS, NOT_PEEKED, PORT_FULL } from './conntrack.ts';
import { FragmentTable } from './fragments.ts';
import { createHeaders, HEADERS_BAD, HEADERS_IP, HEADERS_L4, HEADERS_LATER_FRAGMENT, HEADERS_NOT_IP, HEADERS_SKIP, parseBurst, type Headers } from './headers.ts';
import { isIcmpError, REJECT_LIMITED, REJECT_SENT, Rejecter } from './reject.ts';
import { DENY, parseAclConfig, PERMIT, rulesFor, type AclConfig } from './rules.ts';
import type { FlowKeys } from './classifier.ts';
import { CONNTRACK_REGION, hitsBlockBytes, holdsRules, readTables, regionNames, tablesBytes } from './tables.ts';

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
  ['acl_bad_header', 'IP headers the ACL cannot read: truncated, IHL or lengths past the frame, a tiny first fragment, a TCP fragment at offset 1 (RFC 1858), too many IPv6 extension headers, stacked VLAN tags'],
  ['conntrack_full', 'a stateful rule let a new flow in, but both conntrack buckets of the flow are full of live flows'],
  ['conntrack_port_full', 'a stateful rule let a new flow in, but the flows opened from its port hold conntrack.maxFlowsPerPort entries'],
] as const;

const COUNTERS = [
  ['acl_permitted', 'packets let through by a rule or by aclDefault (not counting those of tracked connections)'],
  ['acl_rejected', 'packets rejected and answered with a TCP reset or an ICMP error'],
  ['conntrack_new', 'connections a stateful rule let in (conntrack entries created)'],
  ['conntrack_established', 'packets passed as part of a tracked connection, either way'],
  ['conntrack_related', 'ICMP errors passed because the packet they quote belongs to a tracked connection'],
  ['acl_fragments_followed', 'later fragments of a packet given what its first fragment got (passed, dropped or, for a rejected one, dropped unanswered), not judged alone by the rules'],
  ['acl_fragments_unfollowed', 'first fragments whose verdict the fragment table had no room for (their later fragments are judged alone by the rules)'],
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

// What act() did with a packet
const ACTED_PERMIT = 0;
const ACTED_REJECT = 1;
const ACTED_DROP = 2;

// A first fragment's verdict in the fragment table (fragments.ts): passed, rejected (and
// answered), or else the egress code it was dropped with
const FRAGMENT_PASSED = 0;
const FRAGMENT_REJECTED = 1;

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
  /**
   * Per packet of a burst, with connection tracking: how it relates to entries (trackKey),
   * what peek() found (a slot, MISS or UNSURE) and, for a slot, its sequence, status and
   * mark then, and whether the packet comes from the entry's endpoint A.
   */
  readonly track: Uint8Array;
  readonly found: Int32Array;
  readonly foundSeq: Int32Array;
  readonly foundStatus: Uint32Array;
  readonly foundMark: Uint32Array;
  readonly foundExpires: Uint32Array;
  readonly fromA: Uint8Array;
  /** an IPv4 TCP or UDP packet, one the flow cache can hold (parseBurst() probes it for those) */
  readonly cacheable: Uint8Array;
  /** the packets the rules decide (no entry), by index, and their keys side by side for the classifier */
  readonly pending: Uint8Array;
  readonly pendingKeys: FlowKeys;
  readonly drop: { deny: number; limited: number; silent: number; bad: number; full: number; portFull: number };
  readonly counter: { permitted: number; rejected: number; opened: number; established: number; related: number; followed: number; unfollowed: number };
  /** what first fragments got, for their packets' later fragments */
  readonly fragments: FragmentTable;
  /** per packet of a burst: 1 once rejectPacket() answered it (read for first fragments only) */
  readonly answered: Uint8Array;
  readonly count: PluginContext<AclConfig>['count'];
  /** what the state was built from, to build it again over a reload's rules (tablesChanged) */
  readonly ctx: PluginContext<AclConfig>;
  /**
   * The clock, in ms, read between bursts when none gave the time (an idle PMD still ages
   * its share of the tables). A field (not a module function) so that tests can set the
   * time; every PMD's clock has the same origin (the wall clock), as the conntrack entries
   * they share hold times.
   */
  now: () => number;
  /**
   * the time of the batch at hand (PacketBatch.now, the PMD's clock read once a poll round):
   * a burst's time, read from here, not through a call, whose double would be a heap number
   * wherever V8 did not inline it
   */
  batchMs: number;
  /** the second the last sweep of this PMD's share of conntrack ended */
  sweptAt: number;
  /** a closed TCP entry that the packet at hand, a SYN, would open again if the rules let it */
  reopen: number;
  /** the time of this poll round's burst, if the stage had one since betweenBursts() last ran, else -1 */
  burstMs: number;
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
  const state: AclState = {
    ruleCount,
    classifier: new Classifier(compiled),
    actions: Uint8Array.from(config.rules, (r) => r.action),
    marks: Uint32Array.from(config.rules, (r) => r.mark),
    tracked: Uint8Array.from(config.rules, (r) => (r.tracked ? 1 : 0)),
    defaultAction: config.defaultAction,
    hits: new Float64Array(ctx.shared[names.hits], ctx.pmd * hitsBlockBytes(ruleCount), ruleCount + 1),
    conntrack: config.tracking ? new Conntrack(ctx.shared[CONNTRACK_REGION], config.conntrack, ctx.pmd, ctx.pmdCount) : null,
    rejecter: new Rejecter(ctx.ports, ctx.bridgeSettings, config.reject),
    headers: createHeaders(keys, BATCH_CAPACITY),
    walk: new Ipv6Walk(),
    matches: new Int32Array(BATCH_CAPACITY),
    track: new Uint8Array(BATCH_CAPACITY),
    found: new Int32Array(BATCH_CAPACITY),
    foundSeq: new Int32Array(BATCH_CAPACITY),
    foundStatus: new Uint32Array(BATCH_CAPACITY),
    foundMark: new Uint32Array(BATCH_CAPACITY),
    foundExpires: new Uint32Array(BATCH_CAPACITY),
    fromA: new Uint8Array(BATCH_CAPACITY),
    cacheable: new Uint8Array(BATCH_CAPACITY),
    pending: new Uint8Array(BATCH_CAPACITY),
    pendingKeys: createFlowKeys(BATCH_CAPACITY),
    drop: {
      deny: ctx.dropCode('acl_deny'),
      limited: ctx.dropCode('acl_reject_limited'),
      silent: ctx.dropCode('acl_reject_silent'),
      bad: ctx.dropCode('acl_bad_header'),
      full: ctx.dropCode('conntrack_full'),
      portFull: ctx.dropCode('conntrack_port_full'),
    },
    counter: {
      permitted: ctx.counterId('acl_permitted'),
      rejected: ctx.counterId('acl_rejected'),
      opened: ctx.counterId('conntrack_new'),
      established: ctx.counterId('conntrack_established'),
      related: ctx.counterId('conntrack_related'),
      followed: ctx.counterId('acl_fragments_followed'),
      unfollowed: ctx.counterId('acl_fragments_unfollowed'),
    },
    fragments: new FragmentTable(crypto.getRandomValues(new Uint32Array(1))[0]),
    answered: new Uint8Array(BATCH_CAPACITY),
    count: ctx.count,
    ctx,
    now: wallClockMs,
    batchMs: -1,
    sweptAt: -1,
    reopen: -1,
    burstMs: -1,
  };
  return state;
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
  const protocol = k.protocol[i];
  if (status === HEADERS_IP) {
    ct.setKeyOf(k, i, v6, 0, 0, protocol);
    return OPENS;
  }
  if (protocol === 1 || protocol === 58) {
    const type = k.icmpType[i];
    const l4 = off + h.l4[i];
    // echo request and reply (RFC 792; RFC 4443 4.1, 4.2): the identifier stands for ports
    if (type === (v6 ? 128 : 8) || type === (v6 ? 129 : 0)) {
      const id = (d[l4 + 4] << 8) | d[l4 + 5];
      ct.setKeyOf(k, i, v6, id, id, protocol);
      return type === (v6 ? 128 : 8) ? OPENS : FOLLOWS;
    }
    if (isIcmpError(h, i) && quotedKey(s, ct, d, off + h.l3[i], l4 + 8, off + h.end[i], v6)) return ICMP_ERROR;
    return UNTRACKED;
  }
  ct.setKeyOf(k, i, v6, k.srcPort[i], k.dstPort[i], protocol);
  return protocol === 6 && (k.tcpFlags[i] & TCP_RST) !== 0 ? FOLLOWS : OPENS;
}

/**
 * An echo request from the side that did not open its entry, or a reply from the side
 * that did: the identifier keys both ways, but Linux's tuple holds the type too, so neither
 * belongs to the entry (else a peer that answered pings could ping back through a deny for
 * as long as the entry lives).
 */
function echoAgainst(k: FlowKeys, i: number, status: number, srcIsA: boolean): boolean {
  const protocol = k.protocol[i];
  if (protocol !== 1 && protocol !== 58) return false;
  const type = k.icmpType[i];
  const request = type === (protocol === 58 ? 128 : 8);
  const reply = type === (protocol === 58 ? 129 : 0);
  if (!request && !reply) return false;
  return request !== Conntrack.fromOriginator(status, srcIsA);
}

/**
 * The key of the packet an ICMP error quotes (its IP header at `ip`, up to `end`): RFC 792
 * and RFC 4443 2.4 (c) have the error carry the header and at least the first 8 bytes of
 * data, which hold the ports. False when the quote is too short or malformed, or when the
 * error (its IP header at `outer`) does not go back to the quoted packet's sender, as
 * Linux's conntrack requires too: else any flow's quote would carry a guest's packets to
 * any host, as "related".
 */
function quotedKey(s: AclState, ct: Conntrack, d: Uint8Array, outer: number, ip: number, end: number, v6: boolean): boolean {
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
  const outerDst = v6 ? outer + 24 : outer + 16;
  for (let b = 0; b < (v6 ? 16 : 4); b++) if (d[outerDst + b] !== d[src + b]) return false;
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
  s.batchMs = batch.now;
  s.burstMs = batch.now;
  s.rejecter.clock[0] = batch.now;
  const ct = s.conntrack;
  const h = s.headers;
  if (ct === null) {
    parseBurst(h, s.walk, batch, s.classifier.readsPorts, null, 0);
    if (h.firstCount + h.laterCount > 0) holdFragments(s);
    filter(batch, s, count);
  } else {
    const now = Math.floor(s.batchMs / 1000);
    const established = parseBurst(h, s.walk, batch, s.classifier.readsPorts, ct.cache, now);
    if (established > 0) s.count(batch.ingress, s.counter.established, established);
    if (h.firstCount + h.laterCount > 0) holdFragments(s);
    if (established < count) filterTracked(batch, s, ct, count, now);
  }
  if (h.firstCount + h.laterCount > 0) followFirstFragments(batch, s);
}

/**
 * Before the rules: later fragments are set aside (followFirstFragments() decides them,
 * once the burst's first fragments are decided), and first fragments start unanswered.
 */
function holdFragments(s: AclState): void {
  const h = s.headers;
  for (let j = 0; j < h.laterCount; j++) h.status[h.laterFragments[j]] = HEADERS_SKIP;
  for (let j = 0; j < h.firstCount; j++) s.answered[h.firstFragments[j]] = 0;
}

/**
 * After the rules: each first fragment's verdict is kept in the fragment table, and each
 * later fragment gets its first fragment's verdict, from this burst or an earlier one
 * (fragments.ts: until all the packet's bytes went by, or the timeout). A later fragment
 * whose first was not seen (lost, sent after it, its entry given up) is judged by the
 * rules alone: only rules that name no ports, ICMP fields or TCP flags match it.
 */
function followFirstFragments(batch: PacketBatch, s: AclState): void {
  const h = s.headers;
  const k = h.keys;
  const table = s.fragments;
  const ingress = batch.ingress;
  const nowMs = s.batchMs;
  let unfollowed = 0;
  for (let j = 0; j < h.firstCount; j++) {
    const i = h.firstFragments[j];
    const v6 = k.ipVersion[i] === 6;
    const verdict = batch.dropped(i) ? batch.egress[i] : s.answered[i] === 1 ? FRAGMENT_REJECTED : FRAGMENT_PASSED;
    if (!table.remember(ingress, v6 ? 6 : 4, h.fragmentProtocol[i], h.fragmentId[i], v6 ? k.src6 : k.src4, v6 ? k.dst6 : k.dst4, v6 ? i << 2 : i, h.fragmentBytes[i], verdict, batch.mark[i], nowMs)) unfollowed++;
  }
  if (unfollowed > 0) s.count(ingress, s.counter.unfollowed, unfollowed);
  if (h.laterCount === 0) return;
  const pending = s.pending;
  const pk = s.pendingKeys;
  let n = 0;
  let followed = 0;
  for (let j = 0; j < h.laterCount; j++) {
    const i = h.laterFragments[j];
    const v6 = (k.ipVersion[i] & 0x0f) === 6;
    const slot = table.find(ingress, v6 ? 6 : 4, h.fragmentProtocol[i], h.fragmentId[i], v6 ? k.src6 : k.src4, v6 ? k.dst6 : k.dst4, v6 ? i << 2 : i, nowMs);
    if (slot < 0) {
      h.status[i] = HEADERS_LATER_FRAGMENT;
      pending[n] = i;
      copyKeys(k, i, pk, n);
      n++;
      continue;
    }
    followed++;
    const verdict = table.verdict;
    if (verdict === FRAGMENT_PASSED) {
      if (table.mark !== 0) batch.mark[i] = table.mark;
    } else if (verdict === FRAGMENT_REJECTED) {
      // RFC 1122 3.2.2: no ICMP error about a fragment but the first
      batch.dropAs(i, s.drop.silent);
    } else {
      // the egress code its first fragment was dropped with: the same reason
      batch.egress[i] = verdict;
    }
    table.took(slot, h.fragmentBytes[i], h.fragmentEnd[i]);
  }
  if (followed > 0) s.count(ingress, s.counter.followed, followed);
  if (n === 0) return;
  const matches = s.matches;
  s.classifier.classifyBurst(pk, n, matches);
  let permitted = 0;
  for (let j = 0; j < n; j++) if (act(batch, s, pending[j], matches[j]) === ACTED_PERMIT) permitted++;
  if (permitted > 0) s.count(ingress, s.counter.permitted, permitted);
}

/** Without connection tracking: the rules decide every packet, classified as one burst. */
function filter(batch: PacketBatch, s: AclState, count: number): void {
  const status = s.headers.status;
  const matches = s.matches;
  s.classifier.classifyBurst(s.headers.keys, count, matches);
  const hits = s.hits;
  const actions = s.actions;
  const marks = s.marks;
  const mark = batch.mark;
  const unmatched = s.ruleCount;
  let permitted = 0;
  let rejected = 0;
  // Hits are added up per run of packets that matched the same rule: one store per burst
  // of one kind of traffic, where a store per packet cost 2 ns.
  let lastHit = -1;
  let run = 0;
  for (let i = 0; i < count; i++) {
    const st = status[i];
    if (st >= HEADERS_NOT_IP) {
      if (st === HEADERS_BAD) batch.dropAs(i, s.drop.bad);
      continue;
    }
    const rule = matches[i];
    const hit = rule >= 0 ? rule : unmatched;
    if (hit !== lastHit) {
      if (run > 0) hits[lastHit] += run;
      lastHit = hit;
      run = 0;
    }
    run++;
    const action = rule >= 0 ? actions[rule] : s.defaultAction;
    if (action === PERMIT) {
      if (rule >= 0 && marks[rule] !== 0) mark[i] = marks[rule];
      permitted++;
    } else if (action === DENY) {
      batch.dropAs(i, s.drop.deny);
    } else if (rejectPacket(batch, s, i) === ACTED_REJECT) {
      rejected++;
    }
  }
  if (run > 0) hits[lastHit] += run;
  if (permitted > 0) s.count(batch.ingress, s.counter.permitted, permitted);
  if (rejected > 0) s.count(batch.ingress, s.counter.rejected, rejected);
}

/** Packet i gets what `rule` (or the default, for -1) says: counts the hit, marks, drops or rejects. */
function act(batch: PacketBatch, s: AclState, i: number, rule: number): number {
  s.hits[rule >= 0 ? rule : s.ruleCount] += 1;
  const action = rule >= 0 ? s.actions[rule] : s.defaultAction;
  if (action === PERMIT) {
    if (rule >= 0 && s.marks[rule] !== 0) batch.mark[i] = s.marks[rule];
    return ACTED_PERMIT;
  }
  if (action === DENY) {
    batch.dropAs(i, s.drop.deny);
    return ACTED_DROP;
  }
  return rejectPacket(batch, s, i);
}

/** Packet i rejected: answered (ACTED_REJECT), or dropped when it gets no answer. */
function rejectPacket(batch: PacketBatch, s: AclState, i: number): number {
  const r = s.rejecter.reject(batch, i, s.headers);
  if (r === REJECT_SENT) {
    s.answered[i] = 1;
    return ACTED_REJECT;
  }
  batch.dropAs(i, r === REJECT_LIMITED ? s.drop.limited : s.drop.silent);
  return ACTED_DROP;
}

/**
 * With connection tracking, for the packets the flow cache did not pass (parseBurst()),
 * in three passes over the burst: every packet's entry is read (without Atomics, see
 * Conntrack.settle()); packets of tracked flows pass; the rest, often none, are classified
 * together and decided as filter() does, opening entries. NB: the burst classified first
 * and the table read then per packet with Atomics cost 160 ns per established packet (100
 * rules, bench/micro/stages.ts); these passes alone, 70; with the flow cache, 27-33.
 */
function filterTracked(batch: PacketBatch, s: AclState, ct: Conntrack, count: number, now: number): void {
  const d = batch.data;
  const h = s.headers;
  const k = h.keys;
  const status = h.status;
  const track = s.track;
  const found = s.found;
  const foundSeq = s.foundSeq;
  const foundStatus = s.foundStatus;
  const foundMark = s.foundMark;
  const foundExpires = s.foundExpires;
  const fromA = s.fromA;
  const cacheable = s.cacheable;
  const protocol = k.protocol;
  const tcpFlags = k.tcpFlags;

  // 1. Each packet's entry: IPv4 TCP, UDP and SCTP in one loop, the others by trackKey().
  ct.peekBurst4(k, status, HEADERS_L4, count, now, found, foundSeq, foundStatus, foundMark, foundExpires, fromA);
  for (let i = 0; i < count; i++) {
    if (found[i] !== NOT_PEEKED) {
      track[i] = protocol[i] === 6 && (tcpFlags[i] & TCP_RST) !== 0 ? FOLLOWS : OPENS;
      cacheable[i] = protocol[i] === 132 ? 0 : 1;
      continue;
    }
    cacheable[i] = 0;
    found[i] = MISS;
    const t = trackKey(s, ct, d, batch.offset(i), i);
    track[i] = t;
    if (t === UNTRACKED) continue;
    const at = ct.peek(now);
    found[i] = at;
    fromA[i] = ct.srcIsA ? 1 : 0;
    if (at < 0) continue;
    foundSeq[i] = ct.foundSeq;
    foundStatus[i] = ct.foundStatus;
    foundMark[i] = ct.foundMark;
  }
  ct.settle();

  // 2. Packets whose entry held still pass; the others go to the rules.
  const pending = s.pending;
  const pk = s.pendingKeys;
  let n = 0;
  let established = 0;
  let related = 0;
  for (let i = 0; i < count; i++) {
    const st = status[i];
    if (st >= HEADERS_NOT_IP) {
      if (st === HEADERS_BAD) batch.dropAs(i, s.drop.bad);
      continue;
    }
    const at = found[i];
    if (at >= 0 && ct.stable(at, foundSeq[i]) && !echoAgainst(k, i, foundStatus[i], fromA[i] === 1)) {
      if (track[i] === ICMP_ERROR) {
        related++;
        continue;
      }
      const flags = protocol[i] === 6 ? tcpFlags[i] : 0;
      // A SYN on a closed connection opens a new one: the rules decide it afresh (3.).
      if (flags === 0 || (flags & (TCP_SYN | TCP_ACK | TCP_RST)) !== TCP_SYN || !Conntrack.closed(foundStatus[i])) {
        // The flow cache takes the entry as this packet left it: unchanged, or else it
        // notes the entry at its next packet (the slot's sequence moved on).
        if (ct.refresh(at, foundSeq[i], foundStatus[i], fromA[i] === 1, flags, now) && cacheable[i] === 1) {
          ct.remember(k, i, at, foundSeq[i], foundStatus[i], foundMark[i], foundExpires[i], fromA[i] === 1, now);
        }
        const mark = foundMark[i];
        if (mark !== 0) batch.mark[i] = mark;
        established++;
        continue;
      }
    }
    pending[n] = i;
    copyKeys(k, i, pk, n);
    n++;
  }
  const c = s.counter;
  const ingress = batch.ingress;
  if (established > 0) s.count(ingress, c.established, established);
  if (n === 0) {
    if (related > 0) s.count(ingress, c.related, related);
    return;
  }

  // 3. The rules, for the packets of flows without an entry (or with one in doubt).
  const matches = s.matches;
  s.classifier.classifyBurst(pk, n, matches);
  let permitted = 0;
  let rejected = 0;
  let opened = 0;
  established = 0;
  let inserted = false;
  for (let j = 0; j < n; j++) {
    const i = pending[j];
    let t = track[i];
    let keyed = false;
    s.reopen = -1;
    // Looked up again, with Atomics, when the first read did not settle it (a slot
    // mid-write or changed since, a SYN on a closed entry), or when an earlier packet of
    // the burst opened an entry: it may be this packet's flow.
    if (t !== UNTRACKED && (found[i] !== MISS || inserted)) {
      t = trackKey(s, ct, d, batch.offset(i), i);
      keyed = true;
      const entry = ct.lookup(now);
      // An echo the wrong way for its entry is the rules' alone, and opens none (the key is taken).
      if (entry >= 0 && echoAgainst(k, i, ct.foundStatus, ct.srcIsA)) t = UNTRACKED;
      else if (entry >= 0) {
        if (t === ICMP_ERROR) {
          related++;
          continue;
        }
        const flags = protocol[i] === 6 ? tcpFlags[i] : 0;
        if (flags !== 0 && (flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && Conntrack.closed(ct.foundStatus)) {
          s.reopen = entry;
        } else {
          ct.update(entry, flags, now);
          if (ct.foundMark !== 0) batch.mark[i] = ct.foundMark;
          established++;
          continue;
        }
      }
    }
    const rule = matches[j];
    if (t === OPENS && rule >= 0 && s.tracked[rule] === 1 && s.actions[rule] === PERMIT) {
      if (!keyed) trackKey(s, ct, d, batch.offset(i), i);
      const flags = protocol[i] === 6 ? tcpFlags[i] : 0;
      const mark = s.marks[rule];
      const made = s.reopen >= 0 && ct.reopen(s.reopen, flags, mark, now, ingress) ? INSERTED : ct.insert(flags, mark, now, ingress);
      if (made !== INSERTED) {
        s.hits[rule] += 1;
        batch.dropAs(i, made === PORT_FULL ? s.drop.portFull : s.drop.full);
        continue;
      }
      inserted = true;
      opened++;
    }
    const acted = act(batch, s, i, rule);
    if (acted === ACTED_PERMIT) permitted++;
    else if (acted === ACTED_REJECT) rejected++;
  }
  if (permitted > 0) s.count(ingress, c.permitted, permitted);
  if (rejected > 0) s.count(ingress, c.rejected, rejected);
  if (opened > 0) s.count(ingress, c.opened, opened);
  if (established > 0) s.count(ingress, c.established, established);
  if (related > 0) s.count(ingress, c.related, related);
}

/** Packet i's keys into `to` at j: the classifier reads a burst's keys side by side. */
function copyKeys(from: FlowKeys, i: number, to: FlowKeys, j: number): void {
  const version = from.ipVersion[i];
  to.ipVersion[j] = version;
  to.src4[j] = from.src4[i];
  to.dst4[j] = from.dst4[i];
  if ((version & 0x0f) === 6) {
    const a = i << 2;
    const b = j << 2;
    for (let w = 0; w < 4; w++) {
      to.src6[b + w] = from.src6[a + w];
      to.dst6[b + w] = from.dst6[a + w];
    }
  }
  to.protocol[j] = from.protocol[i];
  to.srcPort[j] = from.srcPort[i];
  to.dstPort[j] = from.dstPort[i];
  to.icmpType[j] = from.icmpType[i];
  to.icmpCode[j] = from.icmpCode[i];
  to.tcpFlags[j] = from.tcpFlags[i];
  to.inPort[j] = from.inPort[i];
  to.outPort[j] = from.outPort[i];
}

/**
 * Conntrack aging, a slice of this PMD's share of the table per poll round, each share
 * swept at most once a second; and while the fragment table holds entries, a few of its
 * slots. Takes the time of this round's last burst, or else reads the clock (not the last
 * burst's second): a PMD whose ports are idle still ages its share of a table the others
 * fill. NB: a clock read is 60-90 ns, 2-3 ns per packet of a burst of 32.
 */
function betweenBursts(s: AclState): void {
  const ct = s.conntrack;
  const fragments = s.fragments;
  if (ct === null && fragments.live === 0) return;
  const ms = s.burstMs >= 0 ? s.burstMs : s.now();
  s.burstMs = -1;
  if (fragments.live > 0) fragments.sweep(ms);
  if (ct === null) return;
  const now = Math.floor(ms / 1000);
  if (now === s.sweptAt) return;
  if (ct.age(now)) s.sweptAt = now;
}

/** The per-rule hit counts, summed over the PMDs: `rules[i]` for acl[i], and the packets no rule matched. */
export function readRuleHits(shared: Readonly<Record<string, ArrayBufferLike>>, config: AclConfig): { rules: number[]; unmatched: number } {
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
export function readConntrack(shared: Readonly<Record<string, ArrayBufferLike>>, nowSeconds = Math.floor(wallClockMs() / 1000)): { flows: number; entries: number; capacity: number } | null {
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
  const memory = setup.shared[names.tables];
  // A region kept from before that holds these very rules is what the PMDs read: written
  // again, they could see it half-way (a change of the default action, a refused change
  // undone). A new region is compiled.
  if (setup.fresh(names.tables) || !holdsRules(memory, rules)) {
    const summary = await setup.runJob<CompileSummary>(COMPILE_JOB, { rules, memory } satisfies CompileInput);
    setup.log.info(`${summary.rules} rules compiled in ${summary.ms.toFixed(1)} ms into ${(summary.bytes / 1024).toFixed(0)} KiB`);
  }
  // A table kept from before a reload holds live connections (and the seed they hash by).
  if (setup.config.tracking && setup.fresh(CONNTRACK_REGION)) initConntrack(setup.shared[CONNTRACK_REGION], crypto.getRandomValues(new Uint32Array(1))[0]);
}

/**
 * A reload's new rules: the state built again over the new tables, between bursts; the
 * connection table is the same memory when its size did not change, so tracked
 * connections carry on. The clock is kept (tests set it).
 */
function tablesChanged(s: AclState, update: { config: AclConfig; shared: Readonly<Record<string, ArrayBufferLike>> }): void {
  const now = s.now;
  Object.assign(s, createState({ ...s.ctx, config: update.config, shared: update.shared }));
  s.now = now;
}

const ACTION_NAMES = ['permit', 'deny', 'reject'];

/** The rules in order, as written, with their hits summed over the PMDs; then the default. */
function listRules(view: TableView<AclConfig>): Record<string, unknown>[] {
  const hits = readRuleHits(view.shared, view.config);
  const rules = view.config.rules.map((r, i) => ({ index: i, ...r.source, hits: hits.rules[i] }));
  return [...rules, { index: 'default', action: ACTION_NAMES[view.config.defaultAction] ?? view.config.defaultAction, hits: hits.unmatched }];
}

/** the conntrack gauges' counts, scanned at most once a second whatever the scrape rate */
const flowCounts = new FlowCounts();

/** Rules, and with connection tracking: live flows and the table's capacity. */
function gauges(view: TableView<AclConfig>): Record<string, number> {
  const memory = view.shared[CONNTRACK_REGION];
  const ct = memory === undefined ? null : flowCounts.read(memory, Math.floor(wallClockMs() / 1000));
  return { rules: view.config.rules.length, ...(ct === null ? {} : { conntrack_flows: ct.flows, conntrack_capacity: ct.capacity }) };
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
  tablesChanged,
  gauges,
  tables: { rules: { description: 'a rule, as written, with the packets it matched (the last entry: the default action)', list: listRules } },
};

export default plugin;
