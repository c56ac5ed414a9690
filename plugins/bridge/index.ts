// bridge: MAC learning and switching among the ports of a bridge (ports with the same
// "bridge" in the config), as a stage of the pipeline. For each frame of a burst it learns
// the source, looks up the destination and writes the decision: a port, flood, or a drop.
// Each PMD learns into a table of its own per bridge (one writer, no locks) and reads the
// others' through a per-slot seqlock; the tables live in shared memory. A restarted PMD
// starts its own table afresh (its per-port counts are on its heap) and learns again.
// Aged entries are swept once a second, a table per poll round.
import { EGRESS_FLOOD, EGRESS_UNDECIDED, PLUGIN_API_VERSION, type PacketBatch, type Plugin, type PluginContext, type Topology } from '../../src/pipeline/api.ts';
import { LEARN_REFUSED, MacTable, macTableBytes, parseMac } from './mac-table.ts';

/** Whether the host stores the low byte of a word first, as x86-64 and arm64 do. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Entries per table (one per bridge and PMD): a power of 2. */
export const TABLE_CAPACITY = 4096;

interface PortRole {
  /** index into the bridges, or -1 */
  bridge: number;
  /** how many ports its bridge has: alone, a port has no destination */
  members: number;
  /** port security: the only source MAC allowed, as [high 16, low 32], or null */
  ownMac: [number, number] | null;
}

interface BridgeState {
  pmd: number;
  pmdCount: number;
  roles: PortRole[];
  /** by bridge: this PMD's own table, then every PMD's (read-only use for the others) */
  ownTables: MacTable[];
  allTables: MacTable[][];
  sameDrop: number;
  securityDrop: number;
  invalidSourceDrop: number;
  reservedDrop: number;
  refusedCounter: number;
  count: PluginContext<unknown>['count'];
  /** the second the last burst was switched at, and the second the tables were last swept for */
  clock: number;
  sweptAt: number;
  /** the next bridge whose table the sweep under way visits */
  sweepNext: number;
}

const tableName = (bridge: number, pmd: number) => `table-${bridge}-${pmd}`;

function createState(ctx: PluginContext<unknown>): BridgeState {
  const portCount = ctx.ports.length;
  const allTables = ctx.bridges.map((_, b) =>
    Array.from({ length: ctx.pmdCount }, (_, p) => new MacTable(TABLE_CAPACITY, undefined, ctx.shared[tableName(b, p)], p === ctx.pmd, portCount)),
  );
  const ownTables = allTables.map((tables) => tables[ctx.pmd]);
  const roles = ctx.ports.map((port): PortRole => {
    const bridge = port.bridge === null ? -1 : ctx.bridges.indexOf(port.bridge);
    const mac = typeof port.settings.mac === 'string' ? parseMac(port.settings.mac) : null;
    if (bridge >= 0) {
      ownTables[bridge].setLearnLimit(port.index, Number(port.settings.macLimit));
      if (mac !== null && !ownTables[bridge].addStatic(mac[0], mac[1], port.index)) {
        ctx.log.warn(`port ${port.name}: its mac is not a static entry: the bridge table has only static entries where it would go`);
      }
    }
    return {
      bridge,
      members: ctx.ports.filter((p) => p.bridge !== null && p.bridge === port.bridge).length,
      ownMac: port.settings.portSecurity === true ? mac : null,
    };
  });
  return {
    pmd: ctx.pmd,
    pmdCount: ctx.pmdCount,
    roles,
    ownTables,
    allTables,
    sameDrop: ctx.dropCode('same_port'),
    securityDrop: ctx.dropCode('source_mac_denied'),
    invalidSourceDrop: ctx.dropCode('source_mac_invalid'),
    reservedDrop: ctx.dropCode('link_constrained'),
    refusedCounter: ctx.counterId('mac_learning_refused'),
    count: ctx.count,
    clock: 0,
    sweptAt: 0,
    sweepNext: 0,
  };
}

/**
 * Our own table first: an entry seen this second or the last (or static) stands. Older or
 * missing, the other PMDs' are read too and the most recently seen entry wins: a MAC that
 * moved to a port another PMD polls (a VM migrated, a VRRP address taken over) is found
 * there within a second or two, not when ours ages out. Another PMD's entry naming a port
 * not in this bridge is no answer: across ports added or removed a PMD that has not
 * restarted yet keeps its table of before, where a bridge's index or a port's slot may mean
 * another one now.
 */
function lookup(s: BridgeState, bridge: number, hi: number, lo: number, now: number): number {
  const table = s.ownTables[bridge];
  const own = table.lookupOwn(hi, lo, now);
  if (s.pmdCount === 1 || (own >= 0 && (table.foundStatic || now - table.foundSeen <= 1))) return own;
  const tables = s.allTables[bridge];
  let best = own;
  let bestSeen = own >= 0 ? table.foundSeen : -1;
  for (let p = 0; p < tables.length; p++) {
    if (p === s.pmd) continue;
    const port = tables[p].lookupShared(hi, lo, now);
    if (port >= 0 && port < s.roles.length && s.roles[port].bridge === bridge && tables[p].foundSeen > bestSeen) {
      best = port;
      bestSeen = tables[p].foundSeen;
    }
  }
  return best;
}

function process(batch: PacketBatch, s: BridgeState): void {
  const ingress = batch.ingress;
  const role = s.roles[ingress];
  const count = batch.count;
  const data = batch.data;
  const egress = batch.egress;
  // Port security: only the port's own MAC may be a source (nothing is learned from others).
  const own = role.ownMac;
  const ownHi = own === null ? -1 : own[0];
  const ownLo = own === null ? 0 : own[1];
  // Without a bridge (or alone in one) frames stay undecided: dropped as no_destination.
  const switching = role.bridge >= 0 && role.members > 1;
  const bridge = role.bridge;
  const table = switching ? s.ownTables[bridge] : null;
  const now = Math.floor(batch.now / 1000);
  s.clock = now;
  // An L3 port without port security: nothing to learn, switch or check here.
  if (table === null && own === null) return;
  // A burst is mostly one conversation: the last source learned and the last destination
  // looked up are remembered for the rest of the burst (saves a hash probe per frame).
  let lastSrcHi = -1;
  let lastSrcLo = 0;
  let srcRefused = false;
  let refused = 0;
  let lastDstHi = -1;
  let lastDstLo = 0;
  let lastDst = EGRESS_FLOOD;
  // The MACs are read in place (as macHigh and macLow read them): in the PMD's poll loop V8
  // left those calls uninlined, 4 % of a bridged frame's time. Where the frame starts
  // 4-byte aligned (pool buffers start 64-byte aligned), as two 32-bit and two 16-bit words
  // of the machine's order, byte swapped: four loads instead of fourteen byte loads (0.96 to
  // 0.99 of the time a bridged frame).
  const w16 = batch.words16;
  const w32 = batch.words32;
  for (let i = 0; i < count; i++) {
    // A packet an earlier stage decided for (dropped, or sent somewhere) is left alone.
    if (egress[i] !== EGRESS_UNDECIDED) continue;
    const off = batch.offset(i);
    let srcHi: number;
    let srcLo: number;
    let srcGroup: number;
    let dstGroup: number;
    let hi: number;
    let lo: number;
    if (LITTLE_ENDIAN && (off & 3) === 0) {
      const d0 = w32[off >>> 2];
      const d1 = w16[(off >>> 1) + 2];
      const s0 = w16[(off >>> 1) + 3];
      const s1 = w32[(off >>> 2) + 2];
      srcHi = ((s0 & 0xff) << 8) | (s0 >>> 8);
      srcLo = ((s1 & 0xff) << 24) | ((s1 & 0xff00) << 8) | ((s1 >>> 8) & 0xff00) | (s1 >>> 24);
      hi = ((d0 & 0xff) << 8) | ((d0 >>> 8) & 0xff);
      lo = (((d0 >>> 16) & 0xff) << 24) | ((d0 >>> 24) << 16) | ((d1 & 0xff) << 8) | (d1 >>> 8);
      srcGroup = s0 & 1;
      dstGroup = d0 & 1;
    } else {
      srcHi = (data[off + 6] << 8) | data[off + 7];
      srcLo = (data[off + 8] << 24) | (data[off + 9] << 16) | (data[off + 10] << 8) | data[off + 11];
      hi = (data[off] << 8) | data[off + 1];
      lo = (data[off + 2] << 24) | (data[off + 3] << 16) | (data[off + 4] << 8) | data[off + 5];
      srcGroup = data[off + 6] & 1;
      dstGroup = data[off] & 1;
    }
    if (own !== null && (srcHi !== ownHi || srcLo !== ownLo)) {
      batch.dropAs(i, s.securityDrop);
      continue;
    }
    if (table === null) continue;
    // No station sends from a group or the all-zero address (Linux's bridge drops them too):
    // never learned, nor switched.
    if (srcGroup !== 0 || (srcHi | srcLo) === 0) {
      batch.dropAs(i, s.invalidSourceDrop);
      continue;
    }
    if (srcHi !== lastSrcHi || srcLo !== lastSrcLo) {
      srcRefused = table.learn(srcHi, srcLo, ingress, now) === LEARN_REFUSED;
      lastSrcHi = srcHi;
      lastSrcLo = srcLo;
      lastDstHi = -1;
    }
    // Counted per frame, so that the count is the traffic a limit kept from being learned.
    if (srcRefused) refused++;
    let dst = EGRESS_FLOOD;
    // IEEE 802.1D's link-constrained groups, 01:80:c2:00:00:00 to 0f (STP, pause, LACP,
    // 802.1X, LLDP), are the link's own: a bridge never relays them.
    if (dstGroup !== 0 && hi === 0x0180 && lo >>> 4 === 0x0c200000) {
      batch.dropAs(i, s.reservedDrop);
      continue;
    }
    if (dstGroup === 0) {
      if (hi !== lastDstHi || lo !== lastDstLo) {
        lastDst = lookup(s, bridge, hi, lo, now);
        lastDstHi = hi;
        lastDstLo = lo;
      }
      dst = lastDst;
    }
    if (dst === ingress) batch.dropAs(i, s.sameDrop);
    else egress[i] = dst < 0 ? EGRESS_FLOOD : dst;
  }
  if (refused > 0) s.count(ingress, s.refusedCounter, refused);
}

/**
 * Once a second: removes the aged entries of our tables, so that a port that reached its
 * macLimit learns again once its MACs age out. One table per round (a table takes some µs),
 * so that a PMD with many bridges never stalls a round. Reads no clock: the second of the
 * last burst switched.
 */
function betweenBursts(s: BridgeState): void {
  if (s.clock === s.sweptAt) return;
  if (s.sweepNext < s.ownTables.length) {
    s.ownTables[s.sweepNext++].ageOut(s.clock);
    return;
  }
  s.sweepNext = 0;
  s.sweptAt = s.clock;
}

/** For capture: on a port in no bridge (or alone in one) and without port security, the bridge does not apply. */
function describe(s: BridgeState, batch: PacketBatch): string | null {
  const role = s.roles[batch.ingress];
  return (role.bridge < 0 || role.members < 2) && role.ownMac === null ? '' : null;
}

const plugin: Plugin<unknown, BridgeState> = {
  name: 'bridge',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  dropReasons: [
    ['same_port', 'the destination MAC was learned on the ingress port'],
    ['source_mac_denied', "port security: the source MAC is not the port's configured mac"],
    ['source_mac_invalid', 'the source MAC is a group (multicast, broadcast) or the all-zero address: no station sends from one'],
    ['link_constrained', 'to an IEEE 802.1D link-constrained group, 01:80:c2:00:00:00 to 0f (STP, pause, LACP, 802.1X, LLDP): a bridge never relays them'],
  ],
  counters: [['mac_learning_refused', 'frames whose source MAC was not learned: the port had its macLimit of learned MACs (they are still forwarded)']],
  sharedMemory(_config: unknown, topology: Topology) {
    const regions: Record<string, number> = {};
    topology.bridges.forEach((_, b) => {
      for (let p = 0; p < topology.pmdCount; p++) regions[tableName(b, p)] = macTableBytes(TABLE_CAPACITY);
    });
    return regions;
  },
  // The two MACs (port security reads the source too): frames a bridge switches between
  // guests on one PMD are copied once.
  headerBytes: 12,
  createState,
  process,
  describe,
  betweenBursts,
};

export default plugin;
