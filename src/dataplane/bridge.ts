// The MAC-learning bridge as a stage of the PMD: for each frame of a burst it learns the
// source, looks up the destination and writes the decision (a port, flood, or a drop
// reason) into the batch. Each PMD learns into a table of its own per bridge and reads the
// others' (seqlocked); aged entries are swept once a second, between bursts.
import type { Log } from '../log.ts';
import { Batch, EGRESS_FLOOD, EGRESS_UNDECIDED } from './batch.ts';
import { DROP, MAC_LEARNING_REFUSED, portBase } from './counters.ts';
import { LEARN_REFUSED, MacTable, macHigh, macLow, nowSeconds } from './mac-table.ts';
import type { PacketPool } from './packet-pool.ts';
import type { PmdConfig, PmdShared } from './port-runtime.ts';

export class Bridge {
  private readonly cfg: PmdConfig;
  private readonly pool: PacketPool;
  private readonly counters: Float64Array;
  /** by bridge: this PMD's own table, then every PMD's (read-only use for the others) */
  private readonly ownTables: MacTable[];
  private readonly allTables: MacTable[][];
  /** the second the last burst was switched at, and the second the tables were last swept for */
  private clock = 0;
  private sweptAt = 0;
  /** the next bridge whose table the sweep under way visits */
  private sweepNext = 0;

  constructor(cfg: PmdConfig, shared: PmdShared, pool: PacketPool, counters: Float64Array, log: Log) {
    this.cfg = cfg;
    this.pool = pool;
    this.counters = counters;
    const me = cfg.id;
    const portCount = cfg.ports.length;
    this.allTables = shared.macTables.map((perPmd) => perPmd.map((buffer, p) => new MacTable(shared.macTableCapacity, undefined, buffer, p === me, portCount)));
    this.ownTables = this.allTables.map((tables) => tables[me]);
    for (const p of cfg.ports) {
      if (p.bridge < 0) continue;
      const table = this.ownTables[p.bridge];
      table.setLearnLimit(p.index, p.macLimit);
      if (p.staticMac !== null && !table.addStatic(p.staticMac[0], p.staticMac[1], p.index)) {
        log.warn(`port ${p.name}: its mac is not a static entry: the bridge table has only static entries where it would go`);
      }
    }
  }

  /** Decides where each frame of the batch goes. */
  process(batch: Batch): void {
    const ingress = this.cfg.ports[batch.ingress];
    const count = batch.count;
    const bridge = ingress.bridge;
    // Undecided packets are dropped as no_destination: without a bridge, only port security applies.
    if (bridge < 0 || this.cfg.bridges[bridge].length < 2) {
      if (ingress.portSecurity) this.dropForeignSources(batch);
      return;
    }
    batch.floodDomain = this.cfg.bridges[bridge];
    const table = this.ownTables[bridge];
    const handles = batch.handles;
    const pool = this.pool;
    const data = pool.data;
    const counters = this.counters;
    const inBase = portBase(ingress.index);
    const now = nowSeconds();
    this.clock = now;
    // A burst is mostly one conversation: the last source learned and the last destination
    // looked up are remembered for the rest of the burst (saves a hash probe per frame).
    let lastSrcHi = -1;
    let lastSrcLo = 0;
    let srcRefused = false;
    let lastDstHi = -1;
    let lastDstLo = 0;
    let lastDst = EGRESS_FLOOD;
    // Port security: only the port's own MAC may be a source (nothing is learned from others).
    const own = ingress.portSecurity ? ingress.staticMac : null;
    const ownHi = own === null ? -1 : own[0];
    const ownLo = own === null ? 0 : own[1];
    const egress = batch.egress;
    for (let i = 0; i < count; i++) {
      // A packet an earlier stage decided for (dropped or sent somewhere) is left alone.
      if (egress[i] !== EGRESS_UNDECIDED) continue;
      const off = pool.frameOffset(handles[i]);
      if (own !== null && (macHigh(data, off + 6) !== ownHi || macLow(data, off + 6) !== ownLo)) {
        batch.dropAs(i, DROP.source_mac_denied);
        continue;
      }
      // Learn unicast sources only: a multicast source address is never a station.
      if ((data[off + 6] & 1) === 0) {
        const hi = macHigh(data, off + 6);
        const lo = macLow(data, off + 6);
        if (hi !== lastSrcHi || lo !== lastSrcLo) {
          srcRefused = table.learn(hi, lo, ingress.index, now) === LEARN_REFUSED;
          lastSrcHi = hi;
          lastSrcLo = lo;
          lastDstHi = -1;
        }
        // Counted per frame, so that the count is the traffic a limit kept from being learned.
        if (srcRefused) counters[inBase + MAC_LEARNING_REFUSED]++;
      }
      let dst = EGRESS_FLOOD;
      if ((data[off] & 1) === 0) {
        const hi = macHigh(data, off);
        const lo = macLow(data, off);
        if (hi !== lastDstHi || lo !== lastDstLo) {
          lastDst = this.lookup(bridge, hi, lo, now);
          lastDstHi = hi;
          lastDstLo = lo;
        }
        dst = lastDst;
      }
      if (dst === ingress.index) batch.dropAs(i, DROP.same_port);
      else egress[i] = dst < 0 ? EGRESS_FLOOD : dst;
    }
  }

  /** Port security without a bridge: foreign sources count as such, not as no_destination. */
  private dropForeignSources(batch: Batch): void {
    const data = this.pool.data;
    const own = this.cfg.ports[batch.ingress].staticMac;
    for (let i = 0; i < batch.count; i++) {
      const off = this.pool.frameOffset(batch.handles[i]) + 6;
      if (batch.egress[i] !== EGRESS_UNDECIDED) continue;
      if (own === null || macHigh(data, off) !== own[0] || macLow(data, off) !== own[1]) batch.dropAs(i, DROP.source_mac_denied);
    }
  }

  /** Our own table first; then the other PMDs', the most recently seen entry winning. */
  private lookup(bridge: number, hi: number, lo: number, now: number): number {
    const own = this.ownTables[bridge].lookupOwn(hi, lo, now);
    if (own >= 0 || this.cfg.pmdCount === 1) return own;
    const tables = this.allTables[bridge];
    let best = -1;
    let bestSeen = -1;
    for (let p = 0; p < tables.length; p++) {
      if (p === this.cfg.id) continue;
      const port = tables[p].lookupShared(hi, lo, now);
      if (port >= 0 && tables[p].foundSeen > bestSeen) {
        best = port;
        bestSeen = tables[p].foundSeen;
      }
    }
    return best;
  }

  /**
   * Between bursts, once a second: removes the aged entries of our tables, so that a port
   * that reached its macLimit learns again once its MACs age out. One table per call (a
   * table takes some µs), so that a PMD with many bridges never stalls a round. Reads no
   * clock: the second of the last burst switched.
   */
  sweep(): void {
    if (this.clock === this.sweptAt) return;
    const tables = this.ownTables;
    if (this.sweepNext < tables.length) {
      tables[this.sweepNext++].ageOut(this.clock);
      return;
    }
    this.sweepNext = 0;
    this.sweptAt = this.clock;
  }
}
