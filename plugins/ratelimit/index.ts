// ratelimit: three-colour policers (RFC 2697 srTCM, RFC 2698 trTCM) as a stage of the pipeline.
// A packet meets the policers it matches in a fixed order: the one its ACL rule named
// (batch.mark = policer + 1), those on its in-port, the per-address ones, those on its
// out-port; each colours it, counts it, and does its action for that colour (pass, drop, or
// rewrite the DSCP). A packet one policer drops meets no later one, as in a chain of tc
// police actions. Buckets live in shared memory and every PMD meters into the same ones
// (policer.ts: lock-free, one compareExchange per burst and policer), so a rate holds
// whatever the number of PMDs. Time is read once per batch.
import { createHash } from 'node:crypto';
import { PLUGIN_API_VERSION, PluginConfigError, type PacketBatch, type Plugin, type PluginContext, type PluginSetup, type TableView, type Topology } from '../../src/pipeline/api.ts';
import { AddressTable, addressTableBytes, clearAddressTable, formatAddressTable } from './address-table.ts';
import { ACTION_DROP, ACTION_PASS, ACTION_REMARK, isPerAddress, parseRateLimitConfig, type AddressAttachment, type PolicerSpec, type RateLimitConfig } from './config.ts';
import { dscpOf, ipHeaderAt, remarkIpv4, remarkIpv6 } from './dscp.ts';
import { formatPolicerTable, GREEN, isPolicerTable, nowMicroseconds, PolicerTable, policerTableBytes, RED, YELLOW, type PolicerConfig, type PolicerCounters } from './policer.ts';

/**
 * The regions' names, by what they hold: the policer table by the policers' names in order,
 * each per-address table by its policer's name and what its attachment says. A region is
 * kept across a reload only under the same name, so policers renamed or reordered, or
 * attachments moved, start afresh rather than read another's buckets and counters (their
 * colour counts would jump from one policer to another in /metrics).
 */
function regionNames(config: RateLimitConfig): RegionNames {
  // Once a config: every listing of a policer's counters (each /metrics scrape) asks.
  const known = namesByConfig.get(config);
  if (known !== undefined) return known;
  const seen = new Map<string, number>();
  const keys = addressAttachments(config).map(({ policer, a }) => {
    const key = digest(JSON.stringify([config.policers[policer].name, a.kind, a.prefix, a.inPort, a.outPort, a.maxAddresses, a.idleTimeout]));
    // The same attachment twice in a policer: one table each.
    const n = seen.get(key) ?? 0;
    seen.set(key, n + 1);
    return `${key}-${n}`;
  });
  const names = { policers: `policers-${digest(JSON.stringify(config.policers.map((p) => p.name)))}`, slots: keys.map((k) => `addresses-${k}`), buckets: keys.map((k) => `address-buckets-${k}`) };
  namesByConfig.set(config, names);
  return names;
}

interface RegionNames {
  policers: string;
  slots: string[];
  buckets: string[];
}
const namesByConfig = new WeakMap<RateLimitConfig, RegionNames>();

const digest = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);
/** room per batch for the scratch arrays; a longer batch grows them once */
const BATCH_ROOM = 64;

/** A per-address attachment as a PMD uses it. */
interface AddressPolicing {
  policer: number;
  table: AddressTable;
  bySource: boolean;
  family: number;
  /** prefix words and mask, big-endian, as int32 (IPv4: word 3 only) */
  n0: number;
  n1: number;
  n2: number;
  n3: number;
  m0: number;
  m1: number;
  m2: number;
  m3: number;
  /** port index the packet must come in by / go out of, or -1 */
  inPort: number;
  outPort: number;
}

export interface RateLimitState {
  /**
   * null: a batch is metered at its time (PacketBatch.now, read once per poll round). Tests set
   * a clock (microseconds on the clock every PMD shares) to drive time deterministically.
   */
  clock: (() => number) | null;
  /**
   * [0]: the batch's time in µs, the one cell every table of this PMD meters at (PolicerTable
   * time): one store per batch, and no call on the data path carries a double.
   */
  time: Float64Array;
  policerCount: number;
  table: PolicerTable | null;
  /** by policer * 3 + colour: ACTION_* and the DSCP a remark writes */
  actions: Uint8Array;
  remark: Uint8Array;
  /** by policer: 1 when colour-aware; by policer * 64 + DSCP: the colour a packet arrives with */
  aware: Uint8Array;
  colorOf: Uint8Array;
  /** by port: the policers attached to it, in config order */
  inPolicers: Int32Array[];
  outPolicers: Int32Array[];
  /** the ports that have out-port policers */
  outPorts: Int32Array;
  addresses: AddressPolicing[];
  /** whether a policer needs the IP header (colour-aware, remark, per-address) */
  readsIp: boolean;
  dropCodes: Int32Array;
  greenCounter: number;
  yellowCounter: number;
  redCounter: number;
  remarkedCounter: number;
  overflowCounter: number;
  count: PluginContext<unknown>['count'];
  /** what the state was built from, to build it again over a reload's config (tablesChanged) */
  ctx: PluginContext<RateLimitConfig>;
  // Scratch, per batch.
  ip: Int32Array;
  family: Uint8Array;
  bucket: Int32Array;
  members: Int32Array;
  lengths: Uint32Array;
  colorsIn: Uint8Array;
  colorsOut: Uint8Array;
}

/** The address attachments in config order: their place k names their regions. */
function addressAttachments(config: RateLimitConfig): { policer: number; a: AddressAttachment }[] {
  return config.policers.flatMap((p, policer) => p.apply.flatMap((a) => (isPerAddress(a) ? [{ policer, a }] : [])));
}

/** Thread slots of every table: one per PMD, and the control plane's (prepare) last. */
const threadsOf = (pmdCount: number) => pmdCount + 1;

function sharedMemory(config: RateLimitConfig, topology: Topology): Record<string, number> {
  // Asked for as the config is planned, before any plugin prepares: a port named wrong is
  // refused before the routing stage changes its tables in use.
  checkPorts(config, topology);
  if (config.policers.length === 0) return {};
  const threads = threadsOf(topology.pmdCount);
  const names = regionNames(config);
  const regions: Record<string, number> = { [names.policers]: policerTableBytes(config.policers.length, threads) };
  addressAttachments(config).forEach(({ a }, k) => {
    regions[names.slots[k]] = addressTableBytes(a.maxAddresses);
    regions[names.buckets[k]] = policerTableBytes(a.maxAddresses + 1, threads);
  });
  return regions;
}

function sameMeter(a: PolicerConfig | undefined, b: PolicerConfig): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Brings a table's policers to the config (a reload that kept the regions): a policer whose
 * configuration is already that keeps its buckets, so a restarted PMD resets nothing; a changed
 * one keeps its tokens when the meter and unit stay (policer.ts configure).
 */
function configurePolicers(table: PolicerTable, meters: readonly PolicerConfig[], nowUs: number): void {
  meters.forEach((meter, p) => {
    if (!sameMeter(table.readState(p)?.config, meter)) table.configure(p, meter, nowUs);
  });
}

/** An address table's buckets all take the policer's meter; a change empties the table. */
function configureAddressBuckets(slots: ArrayBufferLike, buckets: PolicerTable, meter: PolicerConfig, nowUs: number): void {
  if (sameMeter(buckets.readState(buckets.capacity - 1)?.config, meter)) return;
  clearAddressTable(slots);
  for (let b = 0; b < buckets.capacity; b++) buckets.configure(b, meter, nowUs);
}

/** Checks the port names against the topology: parseConfig could not (it has no ports). */
function checkPorts(config: RateLimitConfig, topology: Topology): void {
  const names = new Set(topology.ports.map((p) => p.name));
  for (const p of config.policers) {
    for (const a of p.apply) {
      const check = (name: string | null, field: string) => {
        if (name !== null && !names.has(name)) throw new PluginConfigError(field, `no port named "${name}" (ports: ${[...names].join(', ')})`);
      };
      if (!isPerAddress(a)) check(a.port, a.field);
      else {
        const at = a.field.slice(0, a.field.lastIndexOf('.'));
        check(a.inPort, `${at}.inPort`);
        check(a.outPort, `${at}.outPort`);
      }
    }
  }
}

/** First setup only (the regions are new and zero-filled): lays out the tables, configures every policer. */
function prepare(setup: PluginSetup<RateLimitConfig>): void {
  const { config, topology, shared } = setup;
  checkPorts(config, topology);
  if (config.policers.length === 0) return;
  const threads = threadsOf(topology.pmdCount);
  const control = threads - 1;
  const now = nowMicroseconds();
  // A region kept from before a reload keeps its buckets (the PMDs meter into it meanwhile):
  // it is only reconfigured.
  const names = regionNames(config);
  if (setup.fresh(names.policers) || !isPolicerTable(shared[names.policers])) formatPolicerTable(shared[names.policers], config.policers.length, threads);
  configurePolicers(new PolicerTable(shared[names.policers], control), config.policers.map((p) => p.meter), now);
  addressAttachments(config).forEach(({ policer, a }, k) => {
    const slots = names.slots[k];
    const buckets = names.buckets[k];
    if (setup.fresh(slots)) formatAddressTable(shared[slots], a.maxAddresses);
    if (setup.fresh(buckets) || !isPolicerTable(shared[buckets])) formatPolicerTable(shared[buckets], a.maxAddresses + 1, threads);
    configureAddressBuckets(shared[slots], new PolicerTable(shared[buckets], control), config.policers[policer].meter, now);
  });
}

function createState(ctx: PluginContext<RateLimitConfig>): RateLimitState {
  const policers = ctx.config.policers;
  const portIndex = (name: string | null) => (name === null ? -1 : ctx.ports.findIndex((p) => p.name === name));
  const now = nowMicroseconds();
  let table: PolicerTable | null = null;
  const time = new Float64Array(1);
  const addresses: AddressPolicing[] = [];
  if (policers.length > 0) {
    const names = regionNames(ctx.config);
    const region = ctx.shared[names.policers];
    if (region === undefined || !isPolicerTable(region)) throw new Error('ratelimit: the policer table was not prepared (prepare() runs before the PMDs)');
    table = new PolicerTable(region, ctx.pmd, time);
    configurePolicers(table, policers.map((p) => p.meter), now);
    addressAttachments(ctx.config).forEach(({ policer, a }, k) => {
      const buckets = new PolicerTable(ctx.shared[names.buckets[k]], ctx.pmd, time);
      configureAddressBuckets(ctx.shared[names.slots[k]], buckets, policers[policer].meter, now);
      addresses.push({
        policer,
        table: new AddressTable(ctx.shared[names.slots[k]], buckets, a.idleTimeout),
        bySource: a.kind === 'perSource',
        family: a.family,
        // int32, as the words read from packets: a uint32 past 2^31 is a heap number.
        n0: a.network[0] | 0, n1: a.network[1] | 0, n2: a.network[2] | 0, n3: a.network[3] | 0,
        m0: a.mask[0] | 0, m1: a.mask[1] | 0, m2: a.mask[2] | 0, m3: a.mask[3] | 0,
        inPort: portIndex(a.inPort),
        outPort: portIndex(a.outPort),
      });
    });
  }
  const attached = (kind: 'inPort' | 'outPort') =>
    ctx.ports.map((port) => Int32Array.from(policers.flatMap((p, i) => (p.apply.some((a) => a.kind === kind && a.port === port.name) ? [i] : []))));
  const outPolicers = attached('outPort');
  const actions = new Uint8Array(policers.length * 3);
  const remark = new Uint8Array(policers.length * 3);
  const aware = new Uint8Array(policers.length);
  const colorOf = new Uint8Array(policers.length * 64);
  policers.forEach((p: PolicerSpec, i) => {
    for (let c = 0; c < 3; c++) {
      actions[i * 3 + c] = p.actions[c];
      remark[i * 3 + c] = p.remark[c];
    }
    aware[i] = p.colorAware ? 1 : 0;
    colorOf.set(p.colorOf, i * 64);
  });
  return {
    clock: null,
    time,
    policerCount: policers.length,
    table,
    actions,
    remark,
    aware,
    colorOf,
    inPolicers: attached('inPort'),
    outPolicers,
    outPorts: Int32Array.from(outPolicers.flatMap((list, port) => (list.length > 0 ? [port] : []))),
    addresses,
    readsIp: addresses.length > 0 || policers.some((p) => p.colorAware || p.actions.includes(ACTION_REMARK)),
    dropCodes: Int32Array.from(['policer_green', 'policer_yellow', 'policer_red'].map((r) => ctx.dropCode(r))),
    greenCounter: ctx.counterId('green'),
    yellowCounter: ctx.counterId('yellow'),
    redCounter: ctx.counterId('red'),
    remarkedCounter: ctx.counterId('remarked'),
    overflowCounter: ctx.counterId('address_table_full'),
    count: ctx.count,
    ctx,
    ...scratch(BATCH_ROOM),
  };
}

/** A reload's new policers: the state built again over the new config and regions, its clock kept. */
function tablesChanged(s: RateLimitState, update: { config: RateLimitConfig; shared: Readonly<Record<string, ArrayBufferLike>> }): void {
  const clock = s.clock;
  Object.assign(s, createState({ ...s.ctx, config: update.config, shared: update.shared }));
  s.clock = clock;
}

function scratch(n: number) {
  return {
    ip: new Int32Array(n),
    family: new Uint8Array(n),
    bucket: new Int32Array(n),
    members: new Int32Array(n),
    lengths: new Uint32Array(n),
    colorsIn: new Uint8Array(n),
    colorsOut: new Uint8Array(n),
  };
}

/**
 * Meters the first m packets of s.members into `bucket` of `table` (policer `policer`'s
 * buckets) and does the policer's action for each colour; counts on `port`.
 */
function meterGroup(s: RateLimitState, batch: PacketBatch, table: PolicerTable, bucket: number, policer: number, m: number, port: number): void {
  const members = s.members;
  const lengths = s.lengths;
  const ip = s.ip;
  const family = s.family;
  const data = batch.data;
  // Bytes are the Ethernet frame's, header included, as tc and OVS meters count; a
  // super-frame's as its segments will leave, each with its headers.
  for (let j = 0; j < m; j++) lengths[j] = batch.wireLength(members[j]);
  let colorsIn: Uint8Array | null = null;
  if (s.aware[policer] === 1) {
    colorsIn = s.colorsIn;
    const map = policer * 64;
    for (let j = 0; j < m; j++) {
      const at = ip[members[j]];
      // A frame without an IP header has no DSCP: it arrives green.
      colorsIn[j] = at < 0 ? GREEN : s.colorOf[map + dscpOf(data, at, family[members[j]])];
    }
  }
  const colors = s.colorsOut;
  const red = table.meterBurst(bucket, lengths, m, colorsIn, colors);
  const green = table.burstGreen;
  const yellow = table.burstYellow;
  const actionAt = policer * 3;
  const actions = s.actions;
  let remarked = 0;
  // Most bursts need no action at all (a policer that is not exceeded passes green): the
  // loop below only runs when a colour that occurred has one.
  if ((green > 0 && actions[actionAt + GREEN] !== ACTION_PASS) || (yellow > 0 && actions[actionAt + YELLOW] !== ACTION_PASS) || (red > 0 && actions[actionAt + RED] !== ACTION_PASS)) {
    for (let j = 0; j < m; j++) {
      const c = colors[j];
      const action = actions[actionAt + c];
      if (action === ACTION_PASS) continue;
      const i = members[j];
      if (action === ACTION_DROP) batch.dropAs(i, s.dropCodes[c]);
      else {
        const at = ip[i];
        if (at < 0) continue; // nothing to remark: passed as it is
        if (family[i] === 4) remarkIpv4(data, at, s.remark[actionAt + c]);
        else remarkIpv6(data, at, s.remark[actionAt + c]);
        remarked++;
      }
    }
  }
  if (green > 0) s.count(port, s.greenCounter, green);
  if (yellow > 0) s.count(port, s.yellowCounter, yellow);
  if (red > 0) s.count(port, s.redCounter, red);
  if (remarked > 0) s.count(port, s.remarkedCounter, remarked);
}

/** The policers ACL rules named: one group per distinct mark, in order of first packet. */
function policeMarked(s: RateLimitState, batch: PacketBatch, table: PolicerTable, count: number): void {
  const mark = batch.mark;
  const bucket = s.bucket;
  let first = 0;
  while (first < count && mark[first] === 0) first++;
  if (first === count) return;
  // bucket[i]: the policer still to meter packet i into, or -1.
  let pending = 0;
  for (let i = 0; i < first; i++) bucket[i] = -1;
  for (let i = first; i < count; i++) {
    const mk = mark[i];
    bucket[i] = mk === 0 || mk > s.policerCount || batch.dropped(i) ? -1 : mk - 1;
    if (bucket[i] >= 0) pending++;
  }
  groupAndMeter(s, batch, table, count, pending, -1, batch.ingress);
}

/**
 * Meters every packet i with s.bucket[i] >= 0, one group per distinct bucket: into that
 * bucket of `table`, under policer `policer` (or, when -1, the policer the bucket number is).
 */
function groupAndMeter(s: RateLimitState, batch: PacketBatch, table: PolicerTable, count: number, pending: number, policer: number, port: number): void {
  const bucket = s.bucket;
  const members = s.members;
  for (let i = 0; i < count && pending > 0; i++) {
    const b = bucket[i];
    if (b < 0) continue;
    let m = 0;
    for (let k = i; k < count; k++) {
      if (bucket[k] !== b) continue;
      members[m++] = k;
      bucket[k] = -1;
    }
    pending -= m;
    meterGroup(s, batch, table, b, policer < 0 ? b : policer, m, port);
  }
}

function policeInPort(s: RateLimitState, batch: PacketBatch, table: PolicerTable, count: number): void {
  const list = s.inPolicers[batch.ingress];
  // The router's own packets (batch.local: an advertisement, an answer) are not the port's
  // traffic, as tc on a Linux router's ingress never sees its own output.
  const local = batch.local;
  for (let p = 0; p < list.length; p++) {
    let m = 0;
    for (let i = 0; i < count; i++) if (!batch.dropped(i) && local[i] === 0) s.members[m++] = i;
    if (m === 0) return;
    meterGroup(s, batch, table, list[p], list[p], m, batch.ingress);
  }
}

function policeOutPorts(s: RateLimitState, batch: PacketBatch, table: PolicerTable, count: number): void {
  const egress = batch.egress;
  for (let o = 0; o < s.outPorts.length; o++) {
    const port = s.outPorts[o];
    const list = s.outPolicers[port];
    for (let p = 0; p < list.length; p++) {
      // A dropped packet's egress is a drop code, never a port: this also skips those dropped
      // by the policer before.
      let m = 0;
      for (let i = 0; i < count; i++) if (egress[i] === port) s.members[m++] = i;
      if (m === 0) break;
      meterGroup(s, batch, table, list[p], list[p], m, port);
    }
  }
}

function policeAddresses(s: RateLimitState, batch: PacketBatch, a: AddressPolicing, count: number): void {
  if (a.inPort >= 0 && a.inPort !== batch.ingress) return;
  const data = batch.data;
  const ip = s.ip;
  const bucket = s.bucket;
  const egress = batch.egress;
  // A burst is mostly one conversation: the last address looked up is remembered (none while
  // lastBucket is -1). Address words are int32: as uint32, those past 2^31 would be heap
  // numbers when passed to bucketOf.
  let last0 = 0;
  let last1 = 0;
  let last2 = 0;
  let last3 = 0;
  let lastBucket = -1;
  let pending = 0;
  let overflowed = 0;
  for (let i = 0; i < count; i++) {
    bucket[i] = -1;
    const at = ip[i];
    if (at < 0 || s.family[i] !== a.family || batch.dropped(i) || batch.local[i] === 1) continue;
    if (a.outPort >= 0 && egress[i] !== a.outPort) continue;
    let k0 = 0;
    let k1 = 0;
    let k2 = 0xffff; // IPv4 as ::ffff:a.b.c.d
    let k3 = 0;
    if (a.family === 4) {
      k3 = readWord(data, at + (a.bySource ? 12 : 16));
      if ((k3 & a.m3) !== a.n3) continue;
    } else {
      const w = at + (a.bySource ? 8 : 24);
      k0 = readWord(data, w);
      k1 = readWord(data, w + 4);
      k2 = readWord(data, w + 8);
      k3 = readWord(data, w + 12);
      if ((k0 & a.m0) !== a.n0 || (k1 & a.m1) !== a.n1 || (k2 & a.m2) !== a.n2 || (k3 & a.m3) !== a.n3) continue;
    }
    if (lastBucket < 0 || k3 !== last3 || k0 !== last0 || k1 !== last1 || k2 !== last2) {
      lastBucket = a.table.bucketOf(k0, k1, k2, k3);
      last0 = k0;
      last1 = k1;
      last2 = k2;
      last3 = k3;
    }
    if (lastBucket === a.table.overflow) overflowed++;
    bucket[i] = lastBucket;
    pending++;
  }
  if (overflowed > 0) s.count(batch.ingress, s.overflowCounter, overflowed);
  if (pending > 0) groupAndMeter(s, batch, a.table.buckets, count, pending, a.policer, batch.ingress);
}

/** The big-endian word at d[o], as an int32. */
function readWord(d: Uint8Array, o: number): number {
  return (d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3];
}

function process(batch: PacketBatch, s: RateLimitState): void {
  const table = s.table;
  if (table === null) return;
  const count = batch.count;
  if (count > s.members.length) Object.assign(s, scratch(count)); // never with bursts of at most BATCH_ROOM
  // The batch's time: one clock read per poll round in the PMD, not one per stage and burst.
  const batchUs = Math.floor(batch.now * 1000);
  s.time[0] = s.clock !== null ? s.clock() : batchUs >= 0 ? batchUs : nowMicroseconds();
  if (s.readsIp) {
    const data = batch.data;
    for (let i = 0; i < count; i++) s.ip[i] = ipHeaderAt(data, batch.offset(i), batch.length(i), s.family, i);
  }
  policeMarked(s, batch, table, count);
  if (s.inPolicers[batch.ingress].length > 0) policeInPort(s, batch, table, count);
  for (let a = 0; a < s.addresses.length; a++) policeAddresses(s, batch, s.addresses[a], count);
  if (s.outPorts.length > 0) policeOutPorts(s, batch, table, count);
}

/**
 * A policer's packets and bytes by colour, summed over the PMDs and, for a per-address
 * policer, over its addresses' buckets: for the admin side and tests.
 */
export function policerCounters(shared: Readonly<Record<string, ArrayBufferLike>>, config: RateLimitConfig, name: string): PolicerCounters {
  const policer = config.policers.findIndex((p) => p.name === name);
  if (policer < 0) throw new RangeError(`no policer named "${name}"`);
  const sum: PolicerCounters = { green: { packets: 0, bytes: 0 }, yellow: { packets: 0, bytes: 0 }, red: { packets: 0, bytes: 0 }, retries: 0 };
  const add = (c: PolicerCounters) => {
    for (const colour of ['green', 'yellow', 'red'] as const) {
      sum[colour].packets += c[colour].packets;
      sum[colour].bytes += c[colour].bytes;
    }
    sum.retries += c.retries;
  };
  // Slot 0 to read with: reading takes no slot's records.
  const names = regionNames(config);
  add(new PolicerTable(shared[names.policers], 0).readCounters(policer));
  addressAttachments(config).forEach(({ policer: p }, k) => {
    if (p !== policer) return;
    const buckets = new PolicerTable(shared[names.buckets[k]], 0);
    for (let b = 0; b < buckets.capacity; b++) add(buckets.readCounters(b));
  });
  return sum;
}

/** The policers as the admin endpoint lists them: as written, with packets and bytes by colour. */
function listPolicers(view: TableView<RateLimitConfig>): Record<string, unknown>[] {
  return view.config.policers.map((p) => ({ ...p.source, counters: policerCounters(view.shared, view.config, p.name) }));
}

const plugin: Plugin<RateLimitConfig, RateLimitState> = {
  name: 'ratelimit',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  parseConfig: parseRateLimitConfig,
  tables: { policers: { description: 'a policer: its meter, actions, where it applies, packets and bytes by colour', list: listPolicers } },
  dropReasons: [
    ['policer_red', 'a policer marked the packet red and its red action is drop'],
    ['policer_yellow', 'a policer marked the packet yellow and its yellow action is drop'],
    ['policer_green', 'a policer marked the packet green and its green action is drop'],
  ],
  counters: [
    ['green', 'packets a policer marked green (a packet counts once per policer it meets)'],
    ['yellow', 'packets a policer marked yellow'],
    ['red', 'packets a policer marked red'],
    ['remarked', "packets whose DSCP a policer's action rewrote"],
    ['address_table_full', 'packets of an address that found no room in a per-address table: metered in its shared overflow bucket'],
  ],
  sharedMemory,
  prepare,
  // The IP header behind one VLAN tag at most: DSCP and its checksum, an IPv6 destination
  // ends at byte 18 + 40. Policing a bridge keeps its frames copied once.
  headerBytes: 58,
  createState,
  process,
  tablesChanged,
};

export default plugin;
