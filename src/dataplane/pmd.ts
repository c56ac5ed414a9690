// A poll-mode driver: owns the virtqueues of its ports, polls the guests' TX queues in
// bursts, switches each burst through its bridge (MAC learning) and writes the frames into
// the destination guests' RX queues. Control reaches it between bursts, never during one.
import { GuestMemory, GuestMemoryBuilder } from '../virtio/guest-memory.ts';
import { SplitQueue, type QueueLayout } from '../virtio/split-queue.ts';
import { DOORBELL_COMMANDS, DOORBELL_SERVING, DOORBELL_SLEEPING, type PmdCommand, type PmdReply, type PmdWaker } from '../vhost/dataplane-link.ts';
import { eventfdDrain, eventfdSignal, isReady, pollSet, waitReadable } from '../sys/libc.ts';
import type { Log } from '../log.ts';
import { PacketPool, type PoolMemory } from './packet-pool.ts';
import { SpscRing } from './spsc-ring.ts';
import { BURST, deliverBurst, receiveBurst, type QueueOwner } from './guest-io.ts';
import { DROP, DROPS_BASE, MAC_LEARNING_REFUSED, QUEUE_ERRORS, pmdCounters, portBase } from './counters.ts';
import { LEARN_REFUSED, MacTable, macHigh, macLow, nowSeconds } from './mac-table.ts';

export interface PmdPortConfig {
  index: number;
  name: string;
  /** index into PmdConfig.bridges, or -1 */
  bridge: number;
  /** largest frame without the virtio-net header: MTU + Ethernet header + a VLAN tag */
  maxFrame: number;
  /** the guest's MAC on this port, as a static bridge entry: [high 16 bits, low 32 bits] */
  staticMac: [number, number] | null;
  /** most MACs this PMD's bridge table learns from the port */
  macLimit: number;
  /** only staticMac may be a source: frames from any other are dropped, nothing learned */
  portSecurity: boolean;
}

export interface PmdConfig {
  id: number;
  cpu: number;
  pmdCount: number;
  ports: PmdPortConfig[];
  /** port indices of each bridge */
  bridges: number[][];
  /** empty polls before the PMD starts sleeping, and the longest sleep (µs); 0 = pure polling */
  idleSpinRounds: number;
  idleSleepMaxUs: number;
}

/** The SharedArrayBuffers all PMDs work on together. */
export interface PmdShared {
  pool: PoolMemory;
  counters: SharedArrayBuffer;
  /** dataRings[x][y]: frames PMD x hands to PMD y (null where x = y) */
  dataRings: (SharedArrayBuffer | null)[][];
  /** returnRings[x][y]: buffers of PMD y that PMD x has freed */
  returnRings: (SharedArrayBuffer | null)[][];
  dataRingCapacity: number;
  /** macTables[bridge][pmd]: each PMD learns into its own table, all read every table */
  macTables: SharedArrayBuffer[][];
  macTableCapacity: number;
  /** Int32 per port and PMD: 1 while that PMD runs a guest RX queue of the port */
  rxQueueHolders: SharedArrayBuffer;
  /** each PMD's doorbell and wake eventfd */
  wakers: PmdWaker[];
}

/** A ring entry: destination port in the top bits, buffer handle below. */
export const HANDLE_BITS = 20;
const HANDLE_MASK = (1 << HANDLE_BITS) - 1;
/** refs value of a buffer handed to another PMD: no longer ours to free */
const GIVEN = 255;

interface VringSpec {
  /** lastAvailIdx: where the queue resumes after a memory change, or where it stopped */
  layout: QueueLayout;
  callFd: number;
  kickFd: number;
  mergeable: boolean;
  /** found corrupt: stays stopped (never revived by a memory change) until set up again */
  failed: boolean;
}

/** A memory table being viewed a window per poll round; `id` is the command to answer. */
interface MemoryBuild {
  id: number;
  builder: GuestMemoryBuilder;
}

/** A port as this PMD sees it. */
class PortRuntime {
  readonly cfg: PmdPortConfig;
  mem: GuestMemory | null = null;
  mergeable = false;
  /** by vring index: even = guest RX (we write), odd = guest TX (we read) */
  readonly specs: (VringSpec | null)[] = [];
  readonly owners: (QueueOwner | null)[] = [];
  /** running guest TX queues, polled every round */
  txPoll: QueueOwner[] = [];
  /** the guest RX queue frames for this port are written to */
  rxOut: QueueOwner | null = null;
  readonly pending = new Uint32Array(BURST);
  pendingCount = 0;
  /** the connection generation whose commands are accepted (see PmdCommand) */
  gen = 0;
  build: MemoryBuild | null = null;

  constructor(cfg: PmdPortConfig) {
    this.cfg = cfg;
  }
}

const FLOOD = -1;
/** the longest sleep while a polled queue has no kick fd to wake us */
const KICKLESS_SLEEP_US = 50;

export class Pmd {
  private readonly cfg: PmdConfig;
  private readonly counters: Float64Array;
  private readonly log: Log;
  private readonly pool: PacketPool;
  private readonly ports: PortRuntime[];
  /** by bridge: this PMD's own table, then every PMD's (read-only use for the others) */
  private readonly ownMacTables: MacTable[];
  private readonly allMacTables: MacTable[][];
  private readonly rxHolders: Int32Array;
  /** rings to (producer end) and from (consumer end) each other PMD; null for ourselves */
  private readonly ringsOut: (SpscRing | null)[];
  private readonly ringsIn: SpscRing[];
  /** ports polled this round (those with a running guest TX queue) */
  private active: PortRuntime[] = [];
  private readonly handles = new Uint32Array(BURST);
  /** per buffer handle: how many destinations this burst sends it to, or GIVEN */
  private readonly refs: Uint8Array;
  /** destination ports with frames pending in this burst */
  private readonly touched: Int32Array;
  private touchedCount = 0;
  /** per destination PMD: ring entries collected in this burst */
  private readonly outbox: Uint32Array[];
  private readonly outboxCount: Int32Array;
  private readonly inbox = new Uint32Array(BURST);
  /** our doorbell, and every PMD's (to wake one we give frames to) */
  readonly doorbell: Int32Array;
  private readonly peerBells: Int32Array[];
  private readonly peerWakeFds: number[];
  private readonly wakeFd: number;
  /** what an idle sleep waits on: our wake eventfd, then the kick fd of each polled queue */
  private sleepSet: Uint8Array = new Uint8Array(0);
  private sleepFdList: Int32Array = new Int32Array(0);
  private sleepFds = 0;
  /** some polled queue has no kick fd: sleeps stay short, nothing would wake us */
  private kickless = false;

  constructor(cfg: PmdConfig, shared: PmdShared, log: Log) {
    this.cfg = cfg;
    this.log = log;
    this.counters = pmdCounters(shared.counters, cfg.id, cfg.ports.length);
    const me = cfg.id;
    const others = Array.from({ length: cfg.pmdCount }, (_, p) => p);
    const ring = (buffer: SharedArrayBuffer | null, capacity: number) => (buffer === null ? null : new SpscRing(buffer, capacity));
    this.pool = new PacketPool(
      shared.pool,
      me,
      others.map((p) => ring(shared.returnRings[me][p], shared.pool.perPmd)),
      others.map((p) => ring(shared.returnRings[p][me], shared.pool.perPmd)),
    );
    this.ringsOut = others.map((p) => ring(shared.dataRings[me][p], shared.dataRingCapacity));
    this.ringsIn = others.flatMap((p) => (p === me ? [] : [ring(shared.dataRings[p][me], shared.dataRingCapacity)!]));
    this.outbox = others.map(() => new Uint32Array(BURST * Math.max(1, cfg.ports.length)));
    this.outboxCount = new Int32Array(cfg.pmdCount);
    this.refs = new Uint8Array(shared.pool.perPmd * shared.pool.pmdCount);
    this.rxHolders = new Int32Array(shared.rxQueueHolders);
    this.peerBells = shared.wakers.map((w) => new Int32Array(w.doorbell));
    this.peerWakeFds = shared.wakers.map((w) => w.wakeFd);
    this.doorbell = this.peerBells[me];
    this.wakeFd = this.peerWakeFds[me];
    // After a restart nothing runs here until the control thread hands the queues back.
    for (let port = 0; port < cfg.ports.length; port++) Atomics.store(this.rxHolders, port * cfg.pmdCount + me, 0);
    this.ports = cfg.ports.map((p) => new PortRuntime(p));
    this.touched = new Int32Array(cfg.ports.length);
    const portCount = cfg.ports.length;
    this.allMacTables = shared.macTables.map((perPmd) => perPmd.map((buffer, p) => new MacTable(shared.macTableCapacity, undefined, buffer, p === me, portCount)));
    this.ownMacTables = this.allMacTables.map((tables) => tables[me]);
    for (const p of cfg.ports) {
      if (p.bridge < 0) continue;
      const table = this.ownMacTables[p.bridge];
      table.setLearnLimit(p.index, p.macLimit);
      if (p.staticMac !== null && !table.addStatic(p.staticMac[0], p.staticMac[1], p.index)) {
        log.warn(`port ${p.name}: its mac is not a static entry: the bridge table has only static entries where it would go`);
      }
    }
  }

  // ---- data path ----------------------------------------------------------------------------

  /** One poll round: frames from other PMDs, then every running guest TX queue. */
  pollOnce(): number {
    let work = 0;
    // The clock forward() read last: no clock read here.
    if (this.macClock !== this.macSweptAt) this.ageOutMacTables();
    const ringsIn = this.ringsIn;
    for (let r = 0; r < ringsIn.length; r++) work += this.drainRing(ringsIn[r]);
    const active = this.active;
    const bell = this.doorbell;
    for (let a = 0; a < active.length; a++) {
      const port = active[a];
      bell[DOORBELL_SERVING] = port.cfg.index;
      const queues = port.txPoll;
      for (let q = 0; q < queues.length; q++) {
        const n = receiveBurst(queues[q], this.pool, this.handles, 0, BURST);
        if (n > 0) {
          work += n;
          this.forward(port, n);
        } else if (n < 0) {
          this.queueFailed(port, queues[q]);
        }
      }
    }
    if (ringsIn.length > 0) this.pool.flushAllReturns();
    return work;
  }

  /** Frames another PMD switched to ports whose RX queue we hold. */
  private drainRing(ring: SpscRing): number {
    const inbox = this.inbox;
    const n = ring.dequeueBurst(inbox, BURST);
    for (let i = 0; i < n; i++) {
      const entry = inbox[i];
      const handle = entry & HANDLE_MASK;
      inbox[i] = handle;
      this.refs[handle] = 1;
      this.enqueue(this.ports[entry >>> HANDLE_BITS], handle);
    }
    if (n > 0) this.flush();
    for (let i = 0; i < n; i++) if (this.refs[inbox[i]] !== GIVEN) this.pool.free(inbox[i]);
    return n;
  }

  /** Switches a burst from ingress by destination MAC, writes it out, frees the buffers. */
  private forward(ingress: PortRuntime, count: number): void {
    const pool = this.pool;
    const handles = this.handles;
    const counters = this.counters;
    const refs = this.refs;
    const inBase = portBase(ingress.cfg.index);
    const bridge = ingress.cfg.bridge;
    if (ingress.cfg.portSecurity) {
      count = this.dropForeignSources(ingress, count);
      if (count === 0) return;
    }
    if (bridge < 0 || this.cfg.bridges[bridge].length < 2) {
      counters[inBase + DROPS_BASE + DROP.no_destination] += count;
      for (let i = 0; i < count; i++) pool.free(handles[i]);
      return;
    }
    const members = this.cfg.bridges[bridge];
    const table = this.ownMacTables[bridge];
    const data = pool.data;
    const now = nowSeconds();
    this.macClock = now;
    // A burst is mostly one conversation: the last source learned and the last destination
    // looked up are remembered for the rest of the burst (saves a hash probe per frame).
    let lastSrcHi = -1;
    let lastSrcLo = 0;
    let srcRefused = false;
    let lastDstHi = -1;
    let lastDstLo = 0;
    let lastDst = FLOOD;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      const off = pool.frameOffset(h);
      // Learn unicast sources only: a multicast source address is never a station.
      if ((data[off + 6] & 1) === 0) {
        const hi = macHigh(data, off + 6);
        const lo = macLow(data, off + 6);
        if (hi !== lastSrcHi || lo !== lastSrcLo) {
          srcRefused = table.learn(hi, lo, ingress.cfg.index, now) === LEARN_REFUSED;
          lastSrcHi = hi;
          lastSrcLo = lo;
          lastDstHi = -1;
        }
        // Counted per frame, so that the count is the traffic a limit kept from being learned.
        if (srcRefused) counters[inBase + MAC_LEARNING_REFUSED]++;
      }
      let dst = FLOOD;
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
      refs[h] = 0;
      if (dst === FLOOD || dst < 0) {
        for (let m = 0; m < members.length; m++) {
          if (members[m] !== ingress.cfg.index) {
            refs[h]++;
            this.enqueue(this.ports[members[m]], h);
          }
        }
      } else if (dst === ingress.cfg.index) {
        counters[inBase + DROPS_BASE + DROP.same_port]++;
      } else {
        refs[h] = 1;
        this.enqueue(this.ports[dst], h);
      }
    }
    this.flush();
    for (let i = 0; i < count; i++) if (refs[handles[i]] !== GIVEN) pool.free(handles[i]);
  }

  /**
   * Port security: frames whose source is not the port's own MAC are dropped before the
   * bridge sees them (nothing is learned from them); returns how many of the burst are
   * left, moved to the front of handles.
   */
  private dropForeignSources(ingress: PortRuntime, count: number): number {
    const pool = this.pool;
    const handles = this.handles;
    const data = pool.data;
    const own = ingress.cfg.staticMac;
    // Without a configured mac (the config refuses that) no source is allowed: -1 never matches.
    const ownHi = own === null ? -1 : own[0];
    const ownLo = own === null ? 0 : own[1];
    let kept = 0;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      const off = pool.frameOffset(h) + 6;
      if (macHigh(data, off) === ownHi && macLow(data, off) === ownLo) handles[kept++] = h;
      else pool.free(h);
    }
    this.counters[portBase(ingress.cfg.index) + DROPS_BASE + DROP.source_mac_denied] += count - kept;
    return kept;
  }

  /** the second forward() last read, and the second the MAC tables were last swept for */
  private macClock = 0;
  private macSweptAt = 0;
  /** the next bridge whose table the sweep under way visits */
  private macSweepNext = 0;

  /**
   * Once a second, between bursts: removes the aged entries of our MAC tables, so that a
   * port that reached its macLimit learns again once its MACs age out. One table per poll
   * round (a table takes some µs), so that a PMD with many bridges never stalls a round.
   */
  private ageOutMacTables(): void {
    const tables = this.ownMacTables;
    if (this.macSweepNext < tables.length) {
      tables[this.macSweepNext++].ageOut(this.macClock);
      return;
    }
    this.macSweepNext = 0;
    this.macSweptAt = this.macClock;
  }

  /** Our own table first; then the other PMDs', the most recently seen entry winning. */
  private lookup(bridge: number, hi: number, lo: number, now: number): number {
    const own = this.ownMacTables[bridge].lookup(hi, lo, now);
    if (own >= 0 || this.cfg.pmdCount === 1) return own;
    const tables = this.allMacTables[bridge];
    let best = -1;
    let bestSeen = -1;
    for (let p = 0; p < tables.length; p++) {
      if (p === this.cfg.id) continue;
      const port = tables[p].lookup(hi, lo, now, true);
      if (port >= 0 && tables[p].foundSeen > bestSeen) {
        best = port;
        bestSeen = tables[p].foundSeen;
      }
    }
    return best;
  }

  private enqueue(port: PortRuntime, handle: number): void {
    if (port.pendingCount === 0) this.touched[this.touchedCount++] = port.cfg.index;
    port.pending[port.pendingCount++] = handle;
  }

  /** Writes each destination's frames: into its RX queue here, or to the PMD that holds one. */
  private flush(): void {
    for (let t = 0; t < this.touchedCount; t++) {
      const port = this.ports[this.touched[t]];
      this.doorbell[DOORBELL_SERVING] = port.cfg.index;
      const out = port.rxOut;
      if (out !== null && out.queue.failure === '') {
        deliverBurst(out, port.mergeable, this.pool, port.pending, port.pendingCount);
        if (out.queue.failure !== '') this.queueFailed(port, out);
      } else {
        const holder = this.rxHolder(port.cfg.index);
        if (holder < 0) this.counters[portBase(port.cfg.index) + DROPS_BASE + DROP.port_down] += port.pendingCount;
        else this.handOver(port, holder);
      }
      port.pendingCount = 0;
    }
    this.touchedCount = 0;
    for (let p = 0; p < this.outboxCount.length; p++) if (this.outboxCount[p] > 0) this.sendOutbox(p);
  }

  /** Another PMD that runs an RX queue of the port, or -1. */
  private rxHolder(port: number): number {
    const base = port * this.cfg.pmdCount;
    for (let p = 0; p < this.cfg.pmdCount; p++) if (p !== this.cfg.id && this.rxHolders[base + p] === 1) return p;
    return -1;
  }

  /** Queues a port's pending frames for PMD `to`: the buffer itself when this is its only destination, else a copy. */
  private handOver(port: PortRuntime, to: number): void {
    const pool = this.pool;
    const box = this.outbox[to];
    let n = this.outboxCount[to];
    const tag = port.cfg.index << HANDLE_BITS;
    for (let i = 0; i < port.pendingCount; i++) {
      const h = port.pending[i];
      if (this.refs[h] === 1) {
        this.refs[h] = GIVEN;
        pool.markAway(h);
        box[n++] = (tag | h) >>> 0;
        continue;
      }
      this.refs[h]--;
      const copy = pool.alloc();
      if (copy < 0) {
        this.counters[portBase(port.cfg.index) + DROPS_BASE + DROP.no_buffer]++;
        continue;
      }
      const len = pool.length[h];
      pool.data.copyWithin(pool.frameOffset(copy), pool.frameOffset(h), pool.frameOffset(h) + len);
      pool.length[copy] = len;
      this.refs[copy] = 0;
      pool.markAway(copy);
      box[n++] = (tag | copy) >>> 0;
    }
    this.outboxCount[to] = n;
  }

  private sendOutbox(to: number): void {
    const box = this.outbox[to];
    const n = this.outboxCount[to];
    const sent = this.ringsOut[to]!.enqueueBurst(box, n);
    // A full ring is a counted drop, never a wait: the buffers stay ours.
    for (let i = sent; i < n; i++) {
      const entry = box[i];
      const h = entry & HANDLE_MASK;
      this.counters[portBase(entry >>> HANDLE_BITS) + DROPS_BASE + DROP.ring_full]++;
      // An original goes back to its burst, which frees it; a copy is freed here.
      if (this.refs[h] === GIVEN) this.refs[h] = 1;
      else this.pool.free(h);
    }
    this.outboxCount[to] = 0;
    if (sent > 0 && Atomics.load(this.peerBells[to], DOORBELL_SLEEPING) === 1) eventfdSignal(this.peerWakeFds[to]);
  }

  /**
   * Idle: asks the guests to kick, checks once more for work, then blocks until a kick,
   * a command, frames from another PMD, or the timeout. The sleeping flag is set before
   * the last check, so whoever gives us work either is seen by it or sees us asleep.
   */
  sleep(timeoutUs: number, seenCommands: number): void {
    const bell = this.doorbell;
    Atomics.store(bell, DOORBELL_SLEEPING, 1);
    let busy = Atomics.load(bell, DOORBELL_COMMANDS) !== seenCommands;
    for (let a = 0; a < this.active.length; a++) {
      const queues = this.active[a].txPoll;
      for (let q = 0; q < queues.length; q++) {
        queues[q].queue.enableNotifications();
        if (queues[q].queue.pending() !== 0) busy = true;
      }
    }
    for (let r = 0; r < this.ringsIn.length; r++) if (this.ringsIn[r].size() > 0) busy = true;
    if (!busy) {
      const set = this.sleepSet;
      if (waitReadable(set, this.sleepFds, this.kickless ? Math.min(timeoutUs, KICKLESS_SLEEP_US) : timeoutUs) > 0) {
        for (let i = 0; i < this.sleepFds; i++) if (isReady(set, i)) eventfdDrain(this.sleepFdList[i]);
      }
    }
    Atomics.store(bell, DOORBELL_SLEEPING, 0);
    for (let a = 0; a < this.active.length; a++) {
      const queues = this.active[a].txPoll;
      for (let q = 0; q < queues.length; q++) queues[q].queue.suppressNotifications();
    }
  }

  /**
   * A corrupt ring: stop polling it, keep the port's other queues and the other ports. It
   * stays stopped, where it stopped, until the frontend sets it up again.
   */
  private queueFailed(port: PortRuntime, owner: QueueOwner): void {
    this.counters[portBase(port.cfg.index) + QUEUE_ERRORS]++;
    const vring = port.owners.indexOf(owner);
    this.log.warn(`port ${port.cfg.name}: vring ${vring} stopped: ${owner.queue.failure}`);
    if (vring >= 0) {
      port.owners[vring] = null;
      const spec = port.specs[vring];
      if (spec) {
        spec.failed = true;
        spec.layout = { ...spec.layout, lastAvailIdx: owner.queue.lastAvailIdx };
      }
    }
    this.refresh(port);
  }

  // ---- control --------------------------------------------------------------------------------

  /** Called with the answer to a command that completes after execute() returned (memory). */
  onLateReply: (reply: PmdReply) => void = () => {};
  private buildsPending = 0;

  /**
   * Carries out a command between two bursts. Returns the answer, or null when it comes
   * later through onLateReply (a memory table is viewed a window per poll round).
   */
  execute(id: number, cmd: PmdCommand): Omit<PmdReply, 'id'> | null {
    const port = this.ports[cmd.port];
    if (port === undefined) return { error: `no port ${cmd.port} on PMD ${this.cfg.id}` };
    this.doorbell[DOORBELL_SERVING] = cmd.port;
    if (cmd.gen < port.gen) return { error: `${cmd.t} of an earlier connection (${cmd.gen}; the port is at ${port.gen})` };
    if (cmd.gen > port.gen) {
      this.forget(port, 'a newer connection');
      port.gen = cmd.gen;
    }
    switch (cmd.t) {
      case 'memory': {
        this.cancelBuild(port, 'superseded by a newer memory table');
        let builder: GuestMemoryBuilder;
        try {
          builder = new GuestMemoryBuilder(cmd.regions);
        } catch (err) {
          return { error: `cannot view guest memory: ${(err as Error).message}` };
        }
        port.build = { id, builder };
        this.buildsPending++;
        return null;
      }
      case 'vring-start': {
        const spec: VringSpec = { layout: cmd.layout, callFd: cmd.callFd, kickFd: cmd.kickFd, mergeable: cmd.mergeable, failed: false };
        if (port.mem === null) return { error: 'no memory table' };
        const owner = this.buildQueue(port, port.mem, spec);
        if (typeof owner === 'string') return { error: owner };
        spec.layout = { ...spec.layout, lastAvailIdx: owner.queue.lastAvailIdx };
        port.specs[cmd.vring] = spec;
        port.owners[cmd.vring] = owner;
        port.mergeable = spec.mergeable;
        this.refresh(port);
        return { lastAvailIdx: owner.queue.lastAvailIdx };
      }
      case 'vring-stop': {
        const owner = port.owners[cmd.vring];
        const spec = port.specs[cmd.vring];
        const lastAvailIdx = owner ? owner.queue.lastAvailIdx : spec ? spec.layout.lastAvailIdx : undefined;
        port.specs[cmd.vring] = null;
        port.owners[cmd.vring] = null;
        this.refresh(port);
        return lastAvailIdx === undefined ? {} : { lastAvailIdx };
      }
      case 'vring-call': {
        const spec = port.specs[cmd.vring];
        if (spec) spec.callFd = cmd.callFd;
        const owner = port.owners[cmd.vring];
        if (owner) owner.callFd = cmd.callFd;
        return {};
      }
      case 'vring-kick': {
        const spec = port.specs[cmd.vring];
        if (spec) spec.kickFd = cmd.kickFd;
        const owner = port.owners[cmd.vring];
        if (owner) owner.kickFd = cmd.kickFd;
        this.refresh(port);
        return {};
      }
      case 'port-reset':
        this.forget(port, 'port reset');
        port.gen = cmd.gen + 1;
        return {};
    }
  }

  /** Whether a memory table is being viewed: the PMD must not sleep meanwhile. */
  get building(): boolean {
    return this.buildsPending > 0;
  }

  /**
   * Views one more window of one pending memory table (each view costs V8 a full garbage
   * collection: a few ms, so one per poll round); applies the table once complete.
   */
  stepBuilds(): void {
    for (const port of this.ports) {
      const build = port.build;
      if (build === null) continue;
      this.doorbell[DOORBELL_SERVING] = port.cfg.index;
      let reply: Omit<PmdReply, 'id'> | null = null;
      try {
        build.builder.step();
        if (build.builder.done) reply = this.applyMemory(port, build.builder.finish());
      } catch (err) {
        reply = { error: `cannot view guest memory: ${(err as Error).message}` };
      }
      if (reply !== null) {
        port.build = null;
        this.buildsPending--;
        this.onLateReply({ id: build.id, ...reply });
      }
      return;
    }
  }

  /**
   * Moves the port's queues onto a new memory table, where each stopped, all or nothing:
   * if one does not fit the new table, the port stays on the old one.
   */
  private applyMemory(port: PortRuntime, mem: GuestMemory): Omit<PmdReply, 'id'> {
    const moved: (QueueOwner | null)[] = [];
    for (let vring = 0; vring < port.specs.length; vring++) {
      const spec = port.specs[vring];
      const running = port.owners[vring];
      if (!spec || spec.failed || !running) {
        moved[vring] = null;
        continue;
      }
      const owner = this.buildQueue(port, mem, { ...spec, layout: { ...spec.layout, lastAvailIdx: running.queue.lastAvailIdx } });
      if (typeof owner === 'string') return { error: `vring ${vring} does not fit the new memory table: ${owner}` };
      moved[vring] = owner;
    }
    port.mem = mem;
    moved.forEach((owner, vring) => {
      port.owners[vring] = owner;
      if (owner) port.specs[vring]!.layout = { ...port.specs[vring]!.layout, lastAvailIdx: owner.queue.lastAvailIdx };
    });
    this.refresh(port);
    return {};
  }

  private cancelBuild(port: PortRuntime, why: string): void {
    if (port.build === null) return;
    this.onLateReply({ id: port.build.id, error: `memory table not applied: ${why}` });
    port.build = null;
    this.buildsPending--;
  }

  /** Drops everything of the port's connection: queues, memory views, a pending table. */
  private forget(port: PortRuntime, why: string): void {
    this.cancelBuild(port, why);
    port.specs.length = 0;
    port.owners.length = 0;
    port.mem = null;
    this.refresh(port);
  }

  /** The queue a spec describes on a memory table, or why it cannot be built. */
  private buildQueue(port: PortRuntime, mem: GuestMemory, spec: VringSpec): QueueOwner | string {
    let queue: SplitQueue | string;
    try {
      queue = SplitQueue.create(mem, spec.layout);
    } catch (err) {
      return (err as Error).message;
    }
    if (typeof queue === 'string') return queue;
    queue.suppressNotifications();
    return {
      queue,
      callFd: spec.callFd,
      kickFd: spec.kickFd,
      counters: this.counters,
      counterBase: portBase(port.cfg.index),
      maxFrame: port.cfg.maxFrame,
    };
  }

  /** Rebuilds the lists the data path walks after a queue came or went. */
  private refresh(port: PortRuntime): void {
    port.txPoll = port.owners.filter((o, vring): o is QueueOwner => o !== null && o !== undefined && vring % 2 === 1);
    port.rxOut = port.owners.find((o, vring): o is QueueOwner => o !== null && o !== undefined && vring % 2 === 0) ?? null;
    this.active = this.ports.filter((p) => p.txPoll.length > 0);
    const polled = this.active.flatMap((p) => p.txPoll);
    const kickFds = polled.map((q) => q.kickFd).filter((fd) => fd >= 0);
    this.kickless = kickFds.length < polled.length;
    this.sleepFdList = Int32Array.from([this.wakeFd, ...kickFds]);
    this.sleepSet = pollSet([...this.sleepFdList]);
    this.sleepFds = this.sleepFdList.length;
    Atomics.store(this.rxHolders, port.cfg.index * this.cfg.pmdCount + this.cfg.id, port.rxOut === null ? 0 : 1);
  }
}
