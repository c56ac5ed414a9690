// A poll-mode driver: owns the virtqueues of its ports and polls the guests' TX queues in
// bursts; each burst goes through the stages of the pipeline (the bridge, plugins), which
// decide, then the egress step, which counts, delivers and frees. Control reaches it
// between bursts, never during one.
import { DOORBELL_HEARTBEAT, DOORBELL_SERVING, DOORBELL_STAGE, type PmdCommand, type PmdReply } from '../vhost/dataplane-link.ts';
// The clock through its module: the global `performance` is a getter that Node runs, with a
// check of its receiver, at every read (a call V8 does not inline, each poll round in a PMD).
import { performance } from 'node:perf_hooks';
import type { Log } from '../log.ts';
import type { Topology } from '../pipeline/api.ts';
import { Batch } from './batch.ts';
import { gatherCalls, markCallsIn, settleCalls } from './notify.ts';
import { CONTROL_WORDS, CaptureWriter, createCaptureMemory, type CaptureMemory } from './capture.ts';
import { countDrops, DROP, pmdCounters, PORT_SLOTS, portBase, RX_BYTES, RX_PACKETS } from './counters.ts';
import { EGRESS_DROP } from './egress-codes.ts';
import { Egress } from './egress.ts';
import { BURST, receiveBurst, type QueueOwner } from './guest-io.ts';
import { DeferredPayloads, HEADER_BYTES } from './deferred-payloads.ts';
import { IdleSleep } from './idle-sleep.ts';
import { PacketPool } from './packet-pool.ts';
import { PortRuntime, type PmdConfig, type PmdShared, type Uplink } from './port-runtime.ts';
import { QueueControl } from './queue-control.ts';
import { SpscRing } from './spsc-ring.ts';
import { monotonicMs } from '../sys/monotonic.ts';
import { linkVlanPorts, TrunkSplit, untagFrame, vlanFrameRefusal } from './vlan.ts';

export type { PmdConfig, PmdPortConfig, PmdShared } from './port-runtime.ts';
export { HANDLE_BITS } from './egress.ts';

/** A PMD's load record (PmdShared.load): busy ms, packets taken, busy rounds. */
export const LOAD_FIELDS = 4;
export const LOAD_BUSY_MS = 0;
export const LOAD_PACKETS = 1;
export const LOAD_BUSY_ROUNDS = 2;

/** A step of the pipeline: writes its decisions into the batch (see Batch). */
export interface Stage {
  process(batch: Batch): void;
  /** once per poll round, between bursts */
  betweenBursts(): void;
  /** once, as vrouter stops: frames the stage has still to send it asks batches for (Plugin.stopping) */
  stopping?(): void;
  /** before the PMD is replaced by one on `next`: frames the ports that change are owed it asks batches for (Plugin.leaving) */
  leaving?(next: Topology): void;
  /** for a captured packet, after process(): what the stage did to packet i, in words (or null) */
  describe?(batch: Batch, i: number): string | null;
  /** the most bytes of a frame process() reads or writes, if it reads headers alone (see the plugin API) */
  readonly headerBytes?: number;
}

/**
 * Makes the stages of a PMD's pipeline, in order, given the PMD's counter block, its
 * doorbell (where the stage being built is marked, as the one running a burst is) and
 * where stages ask for a batch of a port (PluginContext.wantBatch: 1 at the port's slot,
 * and at WANTED_ANY).
 */
export type PipelineBuilder = (counters: Float64Array, doorbell: Int32Array, wantedBatches: Uint8Array) => Stage[];

/** wantedBatches[WANTED_ANY]: some port's batch is wanted */
export const WANTED_ANY = PORT_SLOTS;

/** how long a PMD taking queues over waits to be told they are all back (Pmd.waitForQueues) */
const QUEUES_BACK_WAIT_MS = 2000;
const NO_PORTS: PortRuntime[] = [];

/**
 * Loads the index word of every queue a round polls or writes (each port's TX queues,
 * and its RX queue this PMD holds) before any is served. Each of those lines was last
 * written by the frontend's CPU: loaded queue by queue, as the round comes to each, they
 * came one at a time; loaded here, a few instructions apart, they come at once (1 to 3 %
 * of the time a frame on split rings, routed and bridged 64 B; packed rings level).
 */
function loadIndexWords(active: readonly PortRuntime[]): number {
  let loaded = 0;
  for (let a = 0; a < active.length; a++) {
    const port = active[a];
    for (let q = 0; q < port.txPoll.length; q++) loaded ^= port.txPoll[q].queue.indexWord();
    if (port.rxOut !== null) loaded ^= port.rxOut.queue.indexWord();
  }
  return loaded;
}

export class Pmd {
  private readonly cfg: PmdConfig;
  private readonly pool: PacketPool;
  private readonly ports: PortRuntime[];
  private readonly rxHolders: Int32Array;
  /** rings from each other PMD (consumer end) */
  private readonly ringsIn: SpscRing[];
  /** ports polled this round (those with a running guest TX queue, or an uplink's interface) */
  private active: PortRuntime[] = [];
  /** false while a PMD that takes queues over waits for every port's (waitForQueues) */
  private taking = true;
  private takingAnyway = 0;
  /** called once when a PMD that took queues over takes frames again (waitForQueues) */
  onResumed: (() => void) | null = null;
  /** the 'queues-back' command that waits for the tables being viewed, or -1 */
  private queuesBack = -1;
  private readonly batch: Batch;
  /** performance.timeOrigin, read once: its getter builds a number at every call V8 does not inline */
  private readonly timeOrigin = performance.timeOrigin;
  private readonly stages: Stage[];
  private readonly egress: Egress;
  private readonly control: QueueControl;
  private readonly idle: IdleSleep;
  private readonly capture: CaptureWriter;
  /** frames left partly in their sender's memory, this burst (copied once: deferred-payloads.ts) */
  private readonly deferred: DeferredPayloads;
  /** whether every stage reads headers alone, so that frames may be copied once */
  private readonly headersOnly: boolean;
  /** our load record (LOAD_*), in shared memory */
  private readonly load: Float64Array;
  /** our doorbell: commands posted, sleeping flag, the port being served */
  readonly doorbell: Int32Array;
  /** what loadIndexWords() loaded last, kept so that its loads are not left out */
  private indexWords = 0;
  /** a 'farewell' or 'leaving' command answered at the end of the next poll round, or -1 */
  private farewellAnswer = -1;
  /** the ports whose batch a stage wants this round, empty or not (see PipelineBuilder) */
  private readonly wantedBatches = new Uint8Array(PORT_SLOTS + 1);
  private readonly counters: Float64Array;
  /** a parent's burst split by VLAN (runTrunkBurst), and the size of the group it hands out */
  private readonly trunkSplit = new TrunkSplit();
  private readonly vlanGroup = new Int32Array(1);
  private readonly oneFrame = new Uint32Array(1);

  /** `capture`: the capture control block and rings (default: its own, never switched on) */
  constructor(cfg: PmdConfig, shared: PmdShared, log: Log, pipeline: PipelineBuilder, capture: CaptureMemory = createCaptureMemory(cfg.pmdCount, PORT_SLOTS)) {
    this.cfg = cfg;
    const counters = pmdCounters(shared.counters, cfg.id);
    const me = cfg.id;
    const others = Array.from({ length: cfg.pmdCount }, (_, p) => p);
    const ring = (buffer: ArrayBufferLike | null, capacity: number) => (buffer === null ? null : new SpscRing(buffer, capacity));
    this.pool = new PacketPool(
      shared.pool,
      me,
      others.map((p) => ring(shared.returnRings[me][p], shared.pool.returnCapacity)),
      others.map((p) => ring(shared.returnRings[p][me], shared.pool.returnCapacity)),
    );
    this.ringsIn = others.flatMap((p) => (p === me ? [] : [ring(shared.dataRings[p][me], shared.dataRingCapacity)!]));
    this.rxHolders = new Int32Array(shared.rxQueueHolders);
    this.doorbell = new Int32Array(shared.wakers[me].doorbell);
    markCallsIn(this.doorbell);
    // After a restart nothing runs here until the control thread hands the queues back.
    for (let port = 0; port < cfg.ports.length; port++) Atomics.store(this.rxHolders, port * cfg.pmdCount + me, 0);
    this.counters = counters;
    this.ports = cfg.ports.map((p) => new PortRuntime(p));
    linkVlanPorts(this.ports);
    this.control = new QueueControl(me, this.ports, counters, this.doorbell, log, (port) => this.queuesChanged(port));
    const queueFailed = (port: PortRuntime, owner: QueueOwner) => this.control.queueFailed(port, owner);
    this.capture = new CaptureWriter(capture, me);
    this.deferred = new DeferredPayloads(shared.pool.handleCount, BURST);
    this.egress = new Egress(cfg, shared, this.ports, this.pool, counters, queueFailed, this.capture, this.deferred);
    this.stages = pipeline(counters, this.doorbell, this.wantedBatches);
    this.headersOnly = this.stages.every((s) => s.headerBytes !== undefined && s.headerBytes <= HEADER_BYTES);
    this.batch = new Batch(this.pool, this.deferred);
    this.load = new Float64Array(shared.load, me * LOAD_FIELDS * 8, LOAD_FIELDS);
    this.idle = new IdleSleep(this.doorbell, shared.wakers[me].wakeFd, this.ringsIn);
  }

  // ---- data path ----------------------------------------------------------------------------

  /** One poll round: frames from other PMDs, then every running guest TX queue. */
  pollOnce(): number {
    let work = 0;
    // The clock once a round, before anything is taken: a round that finds work is busy
    // from here, its first receive included (the descriptors read, the headers copied).
    const started = performance.now();
    this.batch.now = this.timeOrigin + started;
    this.doorbell[DOORBELL_HEARTBEAT]++;
    const stages = this.stages;
    const bell = this.doorbell;
    // Each stage named while it runs, as in a burst: one that never returns is taken out.
    for (let s = 0; s < stages.length; s++) {
      bell[DOORBELL_STAGE] = s;
      stages[s].betweenBursts();
    }
    bell[DOORBELL_STAGE] = -1;
    // The round's used rings share one barrier, and their interrupts wait for it (notify.ts).
    gatherCalls();
    const ringsIn = this.ringsIn;
    for (let r = 0; r < ringsIn.length; r++) work += this.egress.drainRing(ringsIn[r]);
    if (!this.taking && performance.now() >= this.takingAnyway) this.resume();
    const active = this.taking ? this.active : NO_PORTS;
    this.indexWords = loadIndexWords(active);
    const batch = this.batch;
    const deferred = this.deferred;
    for (let a = 0; a < active.length; a++) {
      const port = active[a];
      bell[DOORBELL_SERVING] = port.cfg.index;
      const queues = port.txPoll;
      for (let q = 0; q < queues.length; q++) {
        const n = receiveBurst(queues[q], this.pool, batch.handles, 0, BURST, this.copyOnce(port.cfg.index));
        if (n > 0) {
          work += n;
          if (port.vlanPorts === null) this.runBurst(port.cfg.index, n);
          else this.runTrunkBurst(port, n);
        } else if (n < 0) {
          this.control.queueFailed(port, queues[q]);
        }
        if (deferred.count > 0) deferred.release();
      }
      const uplinks = port.uplinkPoll;
      for (let q = 0; q < uplinks.length; q++) {
        const n = uplinks[q].receive(this.pool, batch.handles, 0, BURST);
        if (n > 0) {
          work += n;
          if (port.vlanPorts === null) this.runBurst(port.cfg.index, n);
          else this.runTrunkBurst(port, n);
        }
      }
    }
    if (this.wantedBatches[WANTED_ANY] !== 0 && this.taking) work += this.runWantedBatches();
    if (ringsIn.length > 0) this.pool.flushAllReturns();
    settleCalls();
    if (this.farewellAnswer >= 0) {
      this.control.onLateReply({ id: this.farewellAnswer });
      this.farewellAnswer = -1;
    }
    // Load: the time of the rounds that found work (one more clock read each); idle time is
    // the rest of the wall clock.
    if (work > 0) {
      const load = this.load;
      load[LOAD_BUSY_MS] += performance.now() - started;
      load[LOAD_PACKETS] += work;
      load[LOAD_BUSY_ROUNDS]++;
    }
    return work;
  }

  /** The batches stages asked for this round: each wanted port's, empty, through the stages. Returns the packets they added. */
  private runWantedBatches(): number {
    const wanted = this.wantedBatches;
    wanted[WANTED_ANY] = 0;
    let added = 0;
    for (let port = 0; port < PORT_SLOTS; port++) {
      if (wanted[port] === 0) continue;
      wanted[port] = 0;
      // A VLAN port's frames are in its parent's queues (whose memory a fault would be in).
      const carrier = this.ports[port]?.cfg.parent ?? -1;
      this.doorbell[DOORBELL_SERVING] = carrier >= 0 ? carrier : port;
      this.runBurst(port, 0);
      added += this.batch.count;
    }
    return added;
  }

  /**
   * What receiveBurst() may leave in the guest's memory: frames through stages that read
   * headers alone, from a port not being captured (a capture records frames whole).
   */
  private copyOnce(port: number): DeferredPayloads | null {
    return this.headersOnly && this.capture.control[port * CONTROL_WORDS] === 0 ? this.deferred : null;
  }

  /** The n frames just taken from `port` (in batch.handles): through the stages, then out. */
  private runBurst(port: number, n: number): void {
    const batch = this.batch;
    const stages = this.stages;
    const bell = this.doorbell;
    batch.begin(port, n);
    // One plain load per burst while no capture runs on the port: the word is re-read with
    // Atomics.load (acquire) only when it is set.
    if (this.capture.control[port * CONTROL_WORDS] === 0) {
      for (let s = 0; s < stages.length; s++) {
        bell[DOORBELL_STAGE] = s;
        stages[s].process(batch);
      }
    } else {
      this.processCaptured(batch, port);
    }
    bell[DOORBELL_STAGE] = -1;
    this.egress.transmit(batch);
  }

  /**
   * The n frames just taken from a parent of VLAN ports: the parent's own through the
   * stages first, then each VLAN's as a burst of its port, its tag taken off.
   */
  private runTrunkBurst(port: PortRuntime, n: number): void {
    const batch = this.batch;
    const handles = batch.handles;
    const pool = this.pool;
    const split = this.trunkSplit;
    if (split.begin(pool, handles, n, port.vlanPorts!) === 0) {
      this.runBurst(port.cfg.index, n);
      return;
    }
    // Whole in their buffers: a frame moves for its tag, and buffers freed by one group's
    // egress may be taken again by the next group's stages (no rest may point at them).
    this.deferred.materializeAll(pool);
    const parent = port.cfg.index;
    const capturing = this.capture.control[parent * CONTROL_WORDS] !== 0;
    const counters = this.counters;
    // Frames of VLANs no port has: never the parent's, dropped before the stages.
    const refused = split.refusedFrames(handles);
    if (refused > 0) {
      if (capturing) this.capture.handedOn(parent, pool, handles, refused, EGRESS_DROP - DROP.vlan_refused);
      countDrops(counters, portBase(parent), DROP.vlan_refused, refused);
      for (let i = 0; i < refused; i++) pool.free(handles[i]);
    }
    const own = split.parentFrames(pool, handles);
    if (own > 0) this.runBurst(parent, own);
    const refusal = this.oneFrame;
    for (let vlan = split.nextVlan(handles, this.vlanGroup); vlan >= 0; vlan = split.nextVlan(handles, this.vlanGroup)) {
      const k = this.vlanGroup[0];
      const maxFrame = this.ports[vlan].cfg.maxFrame;
      let kept = 0;
      for (let i = 0; i < k; i++) {
        const h = handles[i];
        // The VLAN's MTU (which the parent's, the limit the frame was taken by, may pass),
        // and no tag inside the VLAN's.
        const reason = vlanFrameRefusal(pool, h, maxFrame);
        if (reason < 0) {
          handles[kept++] = h;
          continue;
        }
        refusal[0] = h;
        if (capturing) this.capture.handedOn(parent, pool, refusal, 1, EGRESS_DROP - reason);
        countDrops(counters, portBase(vlan), reason);
        pool.free(h);
      }
      if (kept === 0) continue;
      if (capturing) this.capture.handedOn(parent, pool, handles, kept, vlan);
      let bytes = 0;
      for (let i = 0; i < kept; i++) {
        untagFrame(pool, handles[i]);
        bytes += pool.length[handles[i]];
      }
      counters[portBase(vlan) + RX_PACKETS] += kept;
      counters[portBase(vlan) + RX_BYTES] += bytes;
      // The parent's memory, should a stage fault (the last group's egress named another port).
      this.doorbell[DOORBELL_SERVING] = parent;
      this.runBurst(vlan, kept);
    }
  }

  /** The stages over a burst from a port being captured: each stage's decisions recorded. */
  private processCaptured(batch: Batch, port: number): void {
    const stages = this.stages;
    const bell = this.doorbell;
    const capture = this.capture;
    // A capture switched on since the burst was taken: it records frames whole.
    this.deferred.materializeAll(this.pool);
    const recorded = capture.beginIngress(batch, port);
    for (let s = 0; s < stages.length; s++) {
      bell[DOORBELL_STAGE] = s;
      stages[s].process(batch);
      if (recorded > 0) capture.afterStage(s, stages[s], batch);
    }
    if (recorded > 0) capture.endIngress(batch);
  }

  /** Idle: sleeps until a kick, a command, frames from another PMD, or the timeout. */
  sleep(timeoutUs: number, seenCommands: number): void {
    this.idle.sleep(timeoutUs, seenCommands);
  }

  // ---- control --------------------------------------------------------------------------------

  /**
   * A PMD started to take over queues (a restart, a new data plane, a new layout) takes no
   * frames from guests or uplinks until the control thread says every port's queues are
   * back ('queues-back'): frames taken from one port's queue while the queue they go to still
   * waits would be lost. The control thread says so once it has sent every port's commands;
   * the PMD takes frames once it has carried them out too (every table viewed). Told
   * nothing (a fault), it takes them after QUEUES_BACK_WAIT_MS.
   */
  waitForQueues(): void {
    this.taking = false;
    this.takingAnyway = performance.now() + QUEUES_BACK_WAIT_MS;
  }

  private resume(): void {
    this.taking = true;
    const resumed = this.onResumed;
    this.onResumed = null;
    if (resumed !== null) resumed();
  }

  /**
   * vrouter stops (next: null; Plugin.stopping), or the PMD is about to be replaced by one on
   * the topology `next` (Plugin.leaving): each stage is told, and the batches they ask for
   * run at once, while the ports are still connected (the control thread closes them after).
   */
  private farewell(next: Topology | null): void {
    const bell = this.doorbell;
    for (let s = 0; s < this.stages.length; s++) {
      bell[DOORBELL_STAGE] = s;
      if (next === null) this.stages[s].stopping?.();
      else this.stages[s].leaving?.(next);
    }
    bell[DOORBELL_STAGE] = -1;
    if (this.wantedBatches[WANTED_ANY] !== 0) {
      this.batch.now = this.timeOrigin + performance.now();
      this.runWantedBatches();
    }
  }

  /** Carries out a command between two bursts; null: the answer comes through onLateReply. */
  execute(id: number, cmd: PmdCommand): Omit<PmdReply, 'id'> | null {
    if (cmd.t === 'farewell' || cmd.t === 'leaving') {
      this.farewell(cmd.t === 'leaving' ? cmd.next : null);
      // Answered after the next poll round: what other PMDs handed this one is delivered by then.
      this.farewellAnswer = id;
      return null;
    }
    if (cmd.t === 'queues-back') {
      if (this.control.building) {
        this.queuesBack = id;
        return null;
      }
      this.resume();
      return { resumedAt: monotonicMs() };
    }
    return this.control.execute(id, cmd);
  }

  set onLateReply(send: (reply: PmdReply) => void) {
    this.control.onLateReply = send;
  }

  /** Whether a memory table is being viewed (or 'queues-back' waits for one): the PMD must not sleep meanwhile. */
  get building(): boolean {
    return this.control.building || this.queuesBack >= 0;
  }

  /** Views one more window of a pending memory table. */
  stepBuilds(): void {
    this.control.stepBuilds();
    if (this.queuesBack >= 0 && !this.control.building) {
      this.resume();
      this.control.onLateReply({ id: this.queuesBack, resumedAt: monotonicMs() });
      this.queuesBack = -1;
    }
  }

  /** Rebuilds the lists the data path walks after a queue of the port came or went. */
  private queuesChanged(port: PortRuntime): void {
    port.txPoll = port.owners.filter((o, vring): o is QueueOwner => o !== null && o !== undefined && vring % 2 === 1);
    port.rxOut = port.owners.find((o, vring): o is QueueOwner => o !== null && o !== undefined && vring % 2 === 0) ?? null;
    port.uplinkPoll = port.uplinks.filter((u): u is Uplink => u !== null && u !== undefined);
    port.uplink = port.uplinkPoll[0] ?? null;
    this.active = this.ports.filter((p) => p.txPoll.length > 0 || p.uplink !== null);
    this.idle.watch(
      this.active.flatMap((p) => p.txPoll),
      this.active.flatMap((p) => p.uplinkPoll.map((u) => u.fd)),
    );
    const holds = port.rxOut !== null || port.uplink !== null;
    Atomics.store(this.rxHolders, port.cfg.index * this.cfg.pmdCount + this.cfg.id, holds ? 1 : 0);
  }
}
