// A poll-mode driver: owns the virtqueues of its ports, polls the guests' TX queues in
// bursts, switches each burst through its bridge (MAC learning) and writes the frames into
// the destination guests' RX queues. Control reaches it between bursts, never during one.
import { GuestMemory } from '../virtio/guest-memory.ts';
import { SplitQueue, type QueueLayout } from '../virtio/split-queue.ts';
import type { PmdCommand, PmdReply } from '../vhost/dataplane-link.ts';
import type { Log } from '../log.ts';
import { PacketPool } from './packet-pool.ts';
import { BURST, deliverBurst, receiveBurst, type QueueOwner } from './guest-io.ts';
import { DROP, DROPS_BASE, QUEUE_ERRORS, portBase } from './counters.ts';
import { MacTable, readMac } from './mac-table.ts';

export interface PmdPortConfig {
  index: number;
  name: string;
  /** index into PmdConfig.bridges, or -1 */
  bridge: number;
  /** largest frame without the virtio-net header: MTU + Ethernet header + a VLAN tag */
  maxFrame: number;
  /** the guest's MAC on this port, as a static bridge entry (48-bit integer) */
  staticMac: number | null;
}

export interface PmdConfig {
  id: number;
  cpu: number;
  ports: PmdPortConfig[];
  /** port indices of each bridge */
  bridges: number[][];
  poolSize: number;
  /** empty polls before the PMD starts sleeping, and the longest sleep (µs); 0 = pure polling */
  idleSpinRounds: number;
  idleSleepMaxUs: number;
}

interface VringSpec {
  layout: QueueLayout;
  callFd: number;
  mergeable: boolean;
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

  constructor(cfg: PmdPortConfig) {
    this.cfg = cfg;
  }
}

const FLOOD = -1;

export class Pmd {
  private readonly cfg: PmdConfig;
  private readonly counters: Float64Array;
  private readonly log: Log;
  private readonly pool: PacketPool;
  private readonly ports: PortRuntime[];
  private readonly macTables: MacTable[];
  /** ports polled this round (those with a running guest TX queue) */
  private active: PortRuntime[] = [];
  private readonly handles = new Uint32Array(BURST);
  /** destination ports with frames pending in this burst */
  private readonly touched: Int32Array;
  private touchedCount = 0;

  constructor(cfg: PmdConfig, counters: Float64Array, log: Log) {
    this.cfg = cfg;
    this.counters = counters;
    this.log = log;
    this.pool = PacketPool.standalone(cfg.poolSize);
    this.ports = cfg.ports.map((p) => new PortRuntime(p));
    this.touched = new Int32Array(cfg.ports.length);
    this.macTables = cfg.bridges.map(() => new MacTable());
    for (const p of cfg.ports) {
      if (p.bridge >= 0 && p.staticMac !== null) this.macTables[p.bridge].addStatic(p.staticMac, p.index);
    }
  }

  // ---- data path ----------------------------------------------------------------------------

  /** One poll round over every running guest TX queue. Returns the frames moved. */
  pollOnce(): number {
    let work = 0;
    const active = this.active;
    for (let a = 0; a < active.length; a++) {
      const port = active[a];
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
    return work;
  }

  /** Switches a burst from ingress by destination MAC, writes it out, frees the buffers. */
  private forward(ingress: PortRuntime, count: number): void {
    const pool = this.pool;
    const handles = this.handles;
    const counters = this.counters;
    const inBase = portBase(ingress.cfg.index);
    const bridge = ingress.cfg.bridge;
    if (bridge < 0 || this.cfg.bridges[bridge].length < 2) {
      counters[inBase + DROPS_BASE + DROP.no_destination] += count;
      for (let i = 0; i < count; i++) pool.free(handles[i]);
      return;
    }
    const members = this.cfg.bridges[bridge];
    const table = this.macTables[bridge];
    const data = pool.data;
    const now = performance.now();
    // A burst is mostly one conversation: the last source learned and the last destination
    // looked up are remembered for the rest of the burst (saves a hash probe per frame).
    let lastSrc = -1;
    let lastDstMac = -1;
    let lastDst = FLOOD;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      const off = pool.frameOffset(h);
      // Learn unicast sources only: a multicast source address is never a station.
      if ((data[off + 6] & 1) === 0) {
        const src = readMac(data, off + 6);
        if (src !== lastSrc) {
          table.learn(src, ingress.cfg.index, now);
          lastSrc = src;
          lastDstMac = -1;
        }
      }
      let dst = FLOOD;
      if ((data[off] & 1) === 0) {
        const dstMac = readMac(data, off);
        if (dstMac !== lastDstMac) {
          lastDst = table.lookup(dstMac, now);
          lastDstMac = dstMac;
        }
        dst = lastDst;
      }
      if (dst === FLOOD || dst < 0) {
        for (let m = 0; m < members.length; m++) {
          if (members[m] !== ingress.cfg.index) this.enqueue(this.ports[members[m]], h);
        }
      } else if (dst === ingress.cfg.index) {
        counters[inBase + DROPS_BASE + DROP.same_port]++;
      } else {
        this.enqueue(this.ports[dst], h);
      }
    }
    this.flush();
    for (let i = 0; i < count; i++) pool.free(handles[i]);
  }

  private enqueue(port: PortRuntime, handle: number): void {
    if (port.pendingCount === 0) this.touched[this.touchedCount++] = port.cfg.index;
    port.pending[port.pendingCount++] = handle;
  }

  private flush(): void {
    for (let t = 0; t < this.touchedCount; t++) {
      const port = this.ports[this.touched[t]];
      const out = port.rxOut;
      if (out === null) {
        this.counters[portBase(port.cfg.index) + DROPS_BASE + DROP.port_down] += port.pendingCount;
      } else if (out.queue.failure === '') {
        deliverBurst(out, port.mergeable, this.pool, port.pending, port.pendingCount);
        if (out.queue.failure !== '') this.queueFailed(port, out);
      } else {
        this.counters[portBase(port.cfg.index) + DROPS_BASE + DROP.port_down] += port.pendingCount;
      }
      port.pendingCount = 0;
    }
    this.touchedCount = 0;
  }

  /** A corrupt ring: stop polling it, keep the port's other queues and the other ports. */
  private queueFailed(port: PortRuntime, owner: QueueOwner): void {
    this.counters[portBase(port.cfg.index) + QUEUE_ERRORS]++;
    const vring = port.owners.indexOf(owner);
    this.log.warn(`port ${port.cfg.name}: vring ${vring} stopped: ${owner.queue.failure}`);
    if (vring >= 0) port.owners[vring] = null;
    this.refresh(port);
  }

  // ---- control --------------------------------------------------------------------------------

  execute(cmd: PmdCommand): Omit<PmdReply, 'id'> {
    const port = this.ports[cmd.port];
    if (port === undefined) return { error: `no port ${cmd.port} on PMD ${this.cfg.id}` };
    switch (cmd.t) {
      case 'memory': {
        this.saveQueuePositions(port);
        port.owners.fill(null);
        port.mem = null;
        if (cmd.regions.length > 0) {
          try {
            port.mem = new GuestMemory(cmd.regions);
          } catch (err) {
            this.refresh(port);
            return { error: `cannot view guest memory: ${(err as Error).message}` };
          }
        }
        // Queues running on the old table continue on the new one, where they stopped.
        port.specs.forEach((spec, vring) => {
          if (spec !== null) {
            const error = this.startQueue(port, vring, spec);
            if (error) this.log.warn(`port ${port.cfg.name}: vring ${vring} dropped with the memory change: ${error}`);
          }
        });
        this.refresh(port);
        return {};
      }
      case 'vring-start': {
        const spec = { layout: cmd.layout, callFd: cmd.callFd, mergeable: cmd.mergeable };
        const error = this.startQueue(port, cmd.vring, spec);
        this.refresh(port);
        return error ? { error } : {};
      }
      case 'vring-stop': {
        const spec = port.specs[cmd.vring];
        const owner = port.owners[cmd.vring];
        const lastAvailIdx = owner ? owner.queue.lastAvailIdx : spec ? spec.layout.lastAvailIdx : 0;
        port.specs[cmd.vring] = null;
        port.owners[cmd.vring] = null;
        this.refresh(port);
        return { lastAvailIdx };
      }
      case 'vring-call': {
        const spec = port.specs[cmd.vring];
        if (spec) spec.callFd = cmd.callFd;
        const owner = port.owners[cmd.vring];
        if (owner) owner.callFd = cmd.callFd;
        return {};
      }
      case 'port-reset':
        port.specs.length = 0;
        port.owners.length = 0;
        port.mem = null;
        this.refresh(port);
        return {};
    }
  }

  private saveQueuePositions(port: PortRuntime): void {
    port.owners.forEach((owner, vring) => {
      const spec = port.specs[vring];
      if (owner && spec) spec.layout = { ...spec.layout, lastAvailIdx: owner.queue.lastAvailIdx };
    });
  }

  private startQueue(port: PortRuntime, vring: number, spec: VringSpec): string | null {
    port.specs[vring] = spec;
    if (port.mem === null) return 'no memory table';
    const queue = SplitQueue.create(port.mem, spec.layout);
    if (typeof queue === 'string') {
      port.specs[vring] = null;
      return queue;
    }
    queue.suppressNotifications();
    port.mergeable = spec.mergeable;
    port.owners[vring] = {
      queue,
      callFd: spec.callFd,
      counters: this.counters,
      counterBase: portBase(port.cfg.index),
      maxFrame: port.cfg.maxFrame,
    };
    return null;
  }

  /** Rebuilds the lists the data path walks after a queue came or went. */
  private refresh(port: PortRuntime): void {
    port.txPoll = port.owners.filter((o, vring): o is QueueOwner => o !== null && vring % 2 === 1);
    port.rxOut = port.owners.find((o, vring): o is QueueOwner => o !== null && vring % 2 === 0) ?? null;
    this.active = this.ports.filter((p) => p.txPoll.length > 0);
  }
}
