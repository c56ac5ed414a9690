// A PMD's control half: the commands of the vhost control thread (vring start and stop,
// fds, memory tables, resets), carried out between bursts. Each command carries its
// connection's generation (see PmdCommand); a memory table is viewed a window per poll
// round and applied all or nothing; a queue found corrupt stays stopped where it stopped.
import type { Log } from '../log.ts';
import { GuestMemory, GuestMemoryBuilder } from '../virtio/guest-memory.ts';
import { SplitQueue } from '../virtio/split-queue.ts';
import { FRESH_RING, PackedQueue } from '../virtio/packed-queue.ts';
import type { InflightRecovery, Virtqueue } from '../virtio/virtqueue.ts';
import { view } from '../sys/libc.ts';
import { PacketRings } from './packet-ring.ts';
import { TapInterface } from './tap-io.ts';
import { XdpRings } from './xdp-rings.ts';
import { DOORBELL_SERVING, type PortPmdCommand, type PmdReply } from '../vhost/dataplane-link.ts';
import { portBase, QUEUE_ERRORS, QUEUE_PAIRS_MAX, queueBase } from './counters.ts';
import type { QueueOwner } from './guest-io.ts';
import type { PortRuntime, VringSpec } from './port-runtime.ts';

/** An uplink's queue past the counter slots would count into the next port's. */
const isQueue = (queue: number) => Number.isInteger(queue) && queue >= 0 && queue < QUEUE_PAIRS_MAX;
const QUEUES_ARE = `a port has queues 0 to ${QUEUE_PAIRS_MAX - 1}`;

export class QueueControl {
  private readonly pmdId: number;
  private readonly ports: PortRuntime[];
  private readonly counters: Float64Array;
  private readonly doorbell: Int32Array;
  private readonly log: Log;
  /** the port's queues came or went: the PMD rebuilds what its data path walks */
  private readonly changed: (port: PortRuntime) => void;

  constructor(pmdId: number, ports: PortRuntime[], counters: Float64Array, doorbell: Int32Array, log: Log, changed: (port: PortRuntime) => void) {
    this.pmdId = pmdId;
    this.ports = ports;
    this.counters = counters;
    this.doorbell = doorbell;
    this.log = log;
    this.changed = changed;
  }

  /**
   * A corrupt ring: stop polling it, keep the port's other queues and the other ports. It
   * stays stopped, where it stopped, until the frontend sets it up again.
   */
  queueFailed(port: PortRuntime, owner: QueueOwner): void {
    this.counters[portBase(port.cfg.index) + QUEUE_ERRORS]++;
    const vring = port.owners.indexOf(owner);
    this.log.warn(`port ${port.cfg.name}: vring ${vring} stopped: ${owner.queue.failure}`, 'vring.stopped', { port: port.cfg.name, vring, failure: owner.queue.failure });
    if (vring >= 0) {
      port.owners[vring] = null;
      const spec = port.specs[vring];
      if (spec) {
        spec.failed = true;
        spec.layout = { ...spec.layout, lastAvailIdx: owner.queue.lastAvailIdx };
      }
    }
    this.changed(port);
  }

  /** Called with the answer to a command that completes after execute() returned (memory). */
  onLateReply: (reply: PmdReply) => void = () => {};
  private buildsPending = 0;
  /** the port whose table is viewed next: pending tables advance in turn */
  private nextBuild = 0;

  /**
   * Carries out a command between two bursts. Returns the answer, or null when it comes
   * later through onLateReply (a memory table is viewed a window per poll round).
   */
  execute(id: number, cmd: PortPmdCommand): Omit<PmdReply, 'id'> | null {
    const port = this.ports[cmd.port];
    if (port === undefined) return { error: `no port ${cmd.port} on PMD ${this.pmdId}` };
    this.doorbell[DOORBELL_SERVING] = cmd.port;
    if (cmd.gen < port.gen) return { error: `${cmd.t} of an earlier connection (${cmd.gen}; the port is at ${port.gen})` };
    if (cmd.gen > port.gen) {
      this.forget(port, 'a newer connection');
      port.gen = cmd.gen;
    }
    // What was sent after a table is for that table: it waits until the table is in use
    // (a vring start sent with its table, when a PMD gets a port's queues back).
    if (port.build !== null && cmd.t !== 'port-reset') {
      port.behindBuild.push({ id, cmd });
      return null;
    }
    switch (cmd.t) {
      case 'memory': {
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
        if (port.mem === null) return { error: 'no memory table' };
        const inflight = cmd.inflight && new Uint8Array(view(BigInt(cmd.inflight.hostAddr), cmd.inflight.bytes));
        const spec: VringSpec = { layout: cmd.layout, callFd: cmd.callFd, kickFd: cmd.kickFd, mergeable: cmd.mergeable, offloads: cmd.offloads, inflight, failed: false };
        const owner = this.buildQueue(port, cmd.vring, port.mem, spec);
        if (typeof owner === 'string') return { error: owner };
        this.logRecovery(port, cmd.vring, owner.queue.inflightRecovery);
        if (cmd.layout.packed && cmd.layout.lastAvailIdx === FRESH_RING && owner.queue.lastAvailIdx !== FRESH_RING) {
          this.log.info(`port ${port.cfg.name}: vring ${cmd.vring}: the frontend gave a fresh ring's base, the ring had moved on: resumed where the last device left it`, 'vring.resumed', { port: port.cfg.name, vring: cmd.vring, position: owner.queue.lastAvailIdx });
        }
        spec.layout = { ...spec.layout, lastAvailIdx: owner.queue.lastAvailIdx };
        port.specs[cmd.vring] = spec;
        port.owners[cmd.vring] = owner;
        port.mergeable = spec.mergeable;
        this.changed(port);
        return { lastAvailIdx: owner.queue.lastAvailIdx };
      }
      case 'vring-stop': {
        const owner = port.owners[cmd.vring];
        const spec = port.specs[cmd.vring];
        const lastAvailIdx = owner ? owner.queue.lastAvailIdx : spec ? spec.layout.lastAvailIdx : undefined;
        port.specs[cmd.vring] = null;
        port.owners[cmd.vring] = null;
        this.changed(port);
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
        this.changed(port);
        return {};
      }
      case 'tap-start': {
        if (cmd.fd < 0) return { error: 'tap-start without the interface\'s fd' };
        if (!isQueue(cmd.queue)) return { error: `tap-start for queue ${cmd.queue}: ${QUEUES_ARE}` };
        port.uplinks[cmd.queue] = new TapInterface(cmd.fd, this.counters, portBase(port.cfg.index), queueBase(port.cfg.index, cmd.queue), port.cfg.maxFrame);
        this.changed(port);
        return {};
      }
      case 'rings-start': {
        if (cmd.fd < 0 || cmd.ring.hostAddr === undefined) return { error: 'rings-start without the socket or its rings' };
        if (!isQueue(cmd.queue)) return { error: `rings-start for queue ${cmd.queue}: ${QUEUES_ARE}` };
        const address = BigInt(cmd.ring.hostAddr);
        port.uplinks[cmd.queue] = new PacketRings(cmd.fd, cmd.shape, view(address, cmd.ring.bytes), this.counters, portBase(port.cfg.index), queueBase(port.cfg.index, cmd.queue), port.cfg.maxFrame);
        this.changed(port);
        return {};
      }
      case 'xdp-start': {
        const { umem, rx, tx, fill, completion } = cmd.maps;
        if (cmd.fd < 0 || [umem, rx, tx, fill, completion].some((m) => m.hostAddr === undefined)) return { error: 'xdp-start without the socket or its mappings' };
        if (!isQueue(cmd.queue)) return { error: `xdp-start for queue ${cmd.queue}: ${QUEUES_ARE}` };
        const at = (m: { hostAddr?: string }) => BigInt(m.hostAddr!);
        const maps = { umem: at(umem), rx: at(rx), tx: at(tx), fill: at(fill), completion: at(completion) };
        port.uplinks[cmd.queue] = new XdpRings(cmd.fd, cmd.layout, maps, this.counters, portBase(port.cfg.index), queueBase(port.cfg.index, cmd.queue), port.cfg.maxFrame);
        this.changed(port);
        return {};
      }
      case 'port-reset':
        this.forget(port, 'port reset');
        port.gen = cmd.gen + 1;
        return {};
    }
  }

  /** Says what a vring found in its inflight record, when it found chains in flight. */
  private logRecovery(port: PortRuntime, vring: number, found: InflightRecovery | null): void {
    if (found === null || found.retaken + found.returned + found.disagreed === 0) return;
    const what =
      found.retaken > 0 ? `${found.retaken} taken again`
      : found.returned > 0 ? `${found.returned} returned unprocessed (not at the head of the available ring)`
      : `${found.disagreed}, more than the driver made available: the record was started afresh`;
    this.log.info(`port ${port.cfg.name}: vring ${vring}: inflight record held chains taken and never returned: ${what}`, 'vring.inflight', { port: port.cfg.name, vring, ...found });
  }

  /** Whether a memory table is being viewed: the PMD must not sleep meanwhile. */
  get building(): boolean {
    return this.buildsPending > 0;
  }

  /**
   * Views one more window of one pending memory table (one per poll round: a table of
   * hundreds of windows is viewed while the PMD forwards); applies the table once
   * complete, then carries out the commands that waited for it.
   */
  stepBuilds(): void {
    const n = this.ports.length;
    for (let k = 0; k < n; k++) {
      const at = (this.nextBuild + k) % n;
      const port = this.ports[at];
      const build = port.build;
      if (build === null) continue;
      this.nextBuild = (at + 1) % n;
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
        this.runBehindBuild(port);
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
      const owner = this.buildQueue(port, vring, mem, { ...spec, layout: { ...spec.layout, lastAvailIdx: running.queue.lastAvailIdx } });
      if (typeof owner === 'string') return { error: `vring ${vring} does not fit the new memory table: ${owner}` };
      moved[vring] = owner;
    }
    port.mem = mem;
    moved.forEach((owner, vring) => {
      port.owners[vring] = owner;
      if (owner) port.specs[vring]!.layout = { ...port.specs[vring]!.layout, lastAvailIdx: owner.queue.lastAvailIdx };
    });
    this.changed(port);
    return {};
  }

  private cancelBuild(port: PortRuntime, why: string): void {
    if (port.build === null) return;
    this.onLateReply({ id: port.build.id, error: `memory table not applied: ${why}` });
    port.build = null;
    this.buildsPending--;
  }

  /** The commands that waited for the port's table, in the order they came; those behind another table wait anew. */
  private runBehindBuild(port: PortRuntime): void {
    for (const { id, cmd } of port.behindBuild.splice(0)) {
      let reply: Omit<PmdReply, 'id'> | null;
      try {
        reply = this.execute(id, cmd);
      } catch (err) {
        reply = { error: (err as Error).message };
      }
      if (reply !== null) this.onLateReply({ id, ...reply });
    }
  }

  /** Drops everything of the port's connection: queues, memory views, a pending table. */
  private forget(port: PortRuntime, why: string): void {
    for (const { id, cmd } of port.behindBuild.splice(0)) this.onLateReply({ id, error: `${cmd.t} not carried out: ${why}` });
    this.cancelBuild(port, why);
    port.specs.length = 0;
    port.owners.length = 0;
    port.mem = null;
    port.uplinks.length = 0;
    this.changed(port);
  }

  /** The queue a spec describes on a memory table, or why it cannot be built. */
  private buildQueue(port: PortRuntime, vring: number, mem: GuestMemory, spec: VringSpec): QueueOwner | string {
    // VIRTIO v1.2, 5.1.2: receiveqN is virtqueue 2(N-1), transmitqN 2(N-1)+1. A pair past
    // the counter slots would count into the next port's.
    const pair = vring >> 1;
    if (pair >= QUEUE_PAIRS_MAX) return `vring ${vring}: queue pair ${pair} is past the ${QUEUE_PAIRS_MAX} a port has counters for`;
    let queue: Virtqueue | string;
    try {
      queue = spec.layout.packed ? PackedQueue.create(mem, spec.layout) : SplitQueue.create(mem, spec.layout, spec.inflight);
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
      queueCounterBase: queueBase(port.cfg.index, pair),
      maxFrame: port.cfg.maxFrame,
      offloads: spec.offloads,
    };
  }
}
