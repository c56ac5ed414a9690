// One frontend connection (a VM's virtio-net device, or a DPDK virtio-user port) and its
// device state: negotiated features, memory table, vrings. Messages are validated before
// dispatch and handled one at a time in arrival order; vring changes go to the owning PMD
// and are answered once it has carried them out. Whatever the PMDs may still touch (guest
// memory, kick and call fds) is released only after they said they let go of it.
import type { Log } from '../log.ts';
import { closeAll, eventfdDrain, eventfdProblem, isNonBlocking, sendMsg, setNonBlocking } from '../sys/libc.ts';
import {
  bit,
  featureNames,
  isSplitQueueSize,
  MAX_PACKED_QUEUE_SIZE,
  MAX_QUEUE_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../virtio/constants.ts';
import { memoryTableProblem } from '../virtio/guest-memory.ts';
import type { Dataplane, GuestRegion, InflightFile, PmdReply, PortCommand } from './dataplane-link.ts';
import { adoptInflightBuffer, createInflightBuffer, inflightArea, shrunkInflightBuffer, type InflightBuffer } from './inflight-buffer.ts';
import { OFFERED_PROTOCOL_FEATURES, offeredFeatures, offloadsOf } from './features.ts';
import { additionProblem, describeRegion, regionIndex } from './memory-slots.ts';
import { expectedFds, NO_FEATURE, PROTOCOL_FEATURES, REQUEST_RULES, UNKNOWN_REQUEST } from './request-rules.ts';
import { checkRegions, regionsForDataplane, releaseRegions, shrunkRegion, type HeldRegion, type MemoryPolicy } from './memory-table.ts';
import { COMMAND_COST, GIB_COST, type ControlBudget } from './control-budget.ts';
import { MessageReader, type Message } from './message-reader.ts';
import {
  encodeReply,
  FLAG_NEED_REPLY,
  inflightDescPayload,
  MAX_MEM_SLOTS,
  ProtocolError,
  ProtocolFeature,
  readMemRegion,
  readMemTable,
  readInflightDesc,
  readU64,
  readVringAddr,
  readVringState,
  Req,
  requestName,
  u64Payload,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  vringStatePayload,
  type VringAddr,
} from './protocol.ts';

export interface PortSettings {
  index: number;
  name: string;
  queues: number;
  mtu: number;
  /** what to do with guest memory files a frontend could shrink under vrouter */
  memoryPolicy: MemoryPolicy;
  /** offer checksum offload (ports[].offloads) */
  offloads: boolean;
}

export type Logger = Pick<Log, 'info' | 'warn'>;

interface Vring {
  num: number;
  addr: VringAddr | null;
  /** SET_VRING_BASE, or where the PMD stopped or resumed */
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  /** fds replaced while the PMD used them: closed once it has let go */
  retiredFds: number[];
  /** "Ring states": "The back-end must start ring upon receiving a kick ... and stop ring upon receiving VHOST_USER_GET_VRING_BASE" */
  started: boolean;
  enabled: boolean;
  /** the PMD is processing it */
  running: boolean;
}

function newVring(): Vring {
  return { num: 0, addr: null, base: 0, kickFd: -1, callFd: -1, errFd: -1, retiredFds: [], started: false, enabled: false, running: false };
}

/** Why a request vrouter never offered is refused. */
const NOT_SERVED = 'not supported by this backend (never offered)';

/**
 * Thrown out of a handler whose connection was reset or closed while it waited for a PMD:
 * what it still holds belongs to the reset now, and it must not touch it.
 */
class Superseded extends Error {}

/** How long GET_VRING_BASE waits for a data plane that died to be back, to read where the vring stopped. */
const POSITION_WAIT_MS = 5000;

/** How often the vring fds are checked for a frontend that made them blocking after the fact. */
const FD_AUDIT_MS = 500;

/** Work of our own that must not interleave with the frontend's messages. */
type Task = () => Promise<void>;

export interface ConnectionOptions {
  /** a fresh connection generation (see PmdCommand): one per connection and per device reset */
  nextGeneration: () => number;
  onClosed: (reason: string) => void;
  /** the frontend sent `count` fds of files on FUSE, kept open for good (message-reader.ts); the connection closes */
  onKeptFiles: (count: number) => void;
  /** the port's share of the control thread: its messages, and the PMD commands they cause, take from it */
  budget: ControlBudget;
}

/** A connected device as the admin endpoint shows it. */
export interface DeviceState {
  features: string;
  /** the negotiated feature bits by name ("CSUM", "MRG_RXBUF", ...) */
  featureNames: string[];
  vrings: { index: number; direction: string; size: number; running: boolean }[];
}

export class VhostConnection {
  private readonly fd: number;
  private readonly port: PortSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private readonly options: ConnectionOptions;
  private readonly reader: MessageReader;
  private readonly audit: NodeJS.Timeout;
  private closed = false;

  private readonly queue: (Message | Task)[] = [];
  private queuedFds = 0;
  private processing = false;
  /** ends the wait of a queued message for its budget (a task came, which does not wait) */
  private wakeQueue: (() => void) | null = null;
  /** settles the promises of queued tasks that a close drops */
  private readonly tasksDropped = new Set<() => void>();

  // device state
  private gen: number;
  private features = 0n;
  private protocolFeatures = 0n;
  private status = 0;
  private memory: HeldRegion[] = [];
  /** every region mapped and not yet unmapped, with the generation that mapped it */
  private readonly mappings = new Map<HeldRegion, number>();
  /**
   * Regions added more than once, and how often: QEMU runs one vhost device per queue pair
   * over the socket, each adding (and later removing) the same regions.
   */
  private readonly regionRefs = new WeakMap<HeldRegion, number>();
  private vrings: Vring[];
  /** where the PMDs mark the chains in flight (INFLIGHT_SHMFD), once the frontend asked */
  private inflight: InflightBuffer | null = null;

  constructor(fd: number, port: PortSettings, dataplane: Dataplane, log: Logger, options: ConnectionOptions) {
    this.fd = fd;
    this.port = port;
    this.dataplane = dataplane;
    this.log = log;
    this.options = options;
    this.gen = options.nextGeneration();
    this.vrings = Array.from({ length: 2 * port.queues }, newVring);
    this.reader = new MessageReader(fd, { message: (m) => this.enqueue(m), end: (reason) => void this.close(reason), keptFiles: (count) => options.onKeptFiles(count) }, options.budget);
    this.audit = setInterval(() => this.auditFds(), FD_AUDIT_MS).unref();
  }

  /** What the device looks like now: features and each vring, for the admin endpoint. */
  state(): DeviceState {
    return {
      features: `0x${this.features.toString(16)}`,
      featureNames: featureNames(this.features),
      vrings: this.vrings.map((v, index) => ({ index, direction: index % 2 === 0 ? 'guest rx' : 'guest tx', size: v.num, running: v.running })),
    };
  }

  /** Closes the connection and frees everything it holds, once the PMDs let go (idempotent). */
  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.audit);
    this.reader.stop();
    closeAll([this.fd]);
    for (const m of this.queue.splice(0)) if (typeof m !== 'function') closeAll(m.fds);
    this.queuedFds = 0;
    this.wakeQueue?.();
    for (const settle of this.tasksDropped) settle();
    this.tasksDropped.clear();
    await this.resetDevice();
    this.options.onClosed(reason);
  }

  // ---- message queue ----------------------------------------------------------------------

  private enqueue(m: Message | Task): void {
    this.queue.push(m);
    if (typeof m !== 'function') this.queuedFds += m.fds.length;
    else this.wakeQueue?.();
    this.reader.backlog(this.queue.length, this.queuedFds);
    void this.processQueue();
  }

  private async processQueue(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        // What a message makes the PMDs do is charged as it is carried out: one read while
        // the port was within its budget waits here until what those before it cost is paid
        // back, or a burst of queued memory tables would all be viewed at once. A hand-over's
        // resync does not wait behind it (the other ports' queues wait for every port's): no
        // message before it has begun, so it runs as if it had come first.
        const owed = typeof this.queue[0] === 'function' ? 0 : this.options.budget.msUntil(1);
        const task = owed > 0 ? this.queue.findIndex((q) => typeof q === 'function') : -1;
        if (owed > 0 && task < 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => ((this.wakeQueue = null), resolve()), Math.ceil(owed));
            this.wakeQueue = () => (clearTimeout(timer), (this.wakeQueue = null), resolve());
          });
          continue;
        }
        const m = task > 0 ? this.queue.splice(task, 1)[0] : this.queue.shift()!;
        if (typeof m !== 'function') this.queuedFds -= m.fds.length;
        this.reader.backlog(this.queue.length, this.queuedFds);
        if (typeof m === 'function') {
          await m().catch((err) => this.unexpected(err));
          continue;
        }
        try {
          this.checkRule(m);
          await this.dispatch(m);
        } catch (err) {
          closeAll(m.fds);
          if (!(err instanceof Superseded)) this.failed(m, err as Error);
        }
      }
    } finally {
      this.processing = false;
    }
  }

  /** A bug of ours, not the frontend's: the connection's state is unknown, so it ends. */
  private unexpected(err: unknown): void {
    if (err instanceof Superseded) return;
    void this.close(`internal error: ${(err as Error).stack ?? String(err)}`);
  }

  /**
   * A request that could not be carried out: answered with a failure where the frontend
   * waits for one (REPLY_ACK), otherwise the connection is closed: its state is unknown.
   */
  private failed(m: Message, err: Error): void {
    const name = requestName(m.request);
    const what = err.message.startsWith(name) ? err.message : `${name}: ${err.message}`;
    if (this.wantsAck(m) && err instanceof ProtocolError) {
      this.log.warn(`port ${this.port.name}: refused ${what}`);
      this.reply(m.request, u64Payload(1n));
      return;
    }
    void this.close(err instanceof ProtocolError ? `protocol error: ${what}` : `internal error handling ${name}: ${err.stack ?? err.message}`);
  }

  /** What the request must come with (request-rules.ts): its fds, its protocol feature, split rings. */
  private checkRule(m: Message): void {
    const name = requestName(m.request);
    const r = REQUEST_RULES.get(m.request) ?? UNKNOWN_REQUEST;
    const fds = expectedFds(r, m);
    if (m.fds.length !== fds) throw new ProtocolError(`${name}: ${m.fds.length} fds, expected ${fds}`);
    if (!r.served) throw new ProtocolError(NOT_SERVED);
    if (r.feature === PROTOCOL_FEATURES) this.needProtocolFeatures(name);
    else if (r.feature !== NO_FEATURE) this.needProtocolFeature(r.feature, name);
    if (r.splitRings) this.needSplitRings(name);
  }

  private wantsAck(m: Message): boolean {
    return (m.flags & FLAG_NEED_REPLY) !== 0 && (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /**
   * Never throws and never waits: a frontend whose socket cannot take a whole reply now
   * (it does not read them) is disconnected.
   */
  private reply(request: number, payload: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) return;
    const bytes = encodeReply(request, payload);
    let sent: number;
    try {
      sent = sendMsg(this.fd, bytes, fds);
    } catch (err) {
      void this.close(`cannot send a reply: ${(err as Error).message} (the frontend does not read its replies)`);
      return;
    }
    if (sent !== bytes.length) void this.close(`a reply went out cut short (${sent} of ${bytes.length} bytes): the frontend does not read its replies`);
  }

  // ---- requests ---------------------------------------------------------------------------

  private async dispatch(m: Message): Promise<void> {
    const name = requestName(m.request);
    switch (m.request) {
      case Req.GET_FEATURES:
        return this.reply(m.request, u64Payload(offeredFeatures(this.port)));
      case Req.SET_FEATURES: {
        const f = readU64(m.payload, name);
        const extra = f & ~offeredFeatures(this.port);
        if (extra !== 0n) throw new ProtocolError(`features 0x${extra.toString(16)} were not offered`);
        if ((f & bit(VIRTIO_F_VERSION_1)) === 0n) throw new ProtocolError('VIRTIO_F_VERSION_1 not acked: legacy devices are not supported');
        this.features = f;
        this.log.info(`port ${this.port.name}: features 0x${f.toString(16)} negotiated (${featureNames(f).join(' ')})`, 'features.negotiated', { port: this.port.name, features: `0x${f.toString(16)}` });
        break;
      }
      case Req.GET_PROTOCOL_FEATURES:
        return this.reply(m.request, u64Payload(OFFERED_PROTOCOL_FEATURES));
      case Req.SET_PROTOCOL_FEATURES: {
        const f = readU64(m.payload, name);
        const extra = f & ~OFFERED_PROTOCOL_FEATURES;
        if (extra !== 0n) throw new ProtocolError(`protocol features 0x${extra.toString(16)} were not offered`);
        this.protocolFeatures = f;
        break;
      }
      case Req.GET_QUEUE_NUM:
        return this.reply(m.request, u64Payload(BigInt(this.port.queues)));
      case Req.SET_OWNER:
        break;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE: {
        // The reset forgets REPLY_ACK: whether the frontend waits for an answer is decided before.
        const ack = this.wantsAck(m);
        await this.resetDevice();
        if (ack) this.reply(m.request, u64Payload(0n));
        return;
      }
      case Req.SET_MEM_TABLE:
        await this.setMemTable(m);
        break;
      case Req.GET_MAX_MEM_SLOTS:
        return this.reply(m.request, u64Payload(BigInt(MAX_MEM_SLOTS)));
      case Req.ADD_MEM_REG:
        await this.addMemReg(m);
        break;
      case Req.REM_MEM_REG:
        await this.remMemReg(m);
        break;
      case Req.SET_VRING_NUM: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (v.running) throw new ProtocolError(`vring ${s.index} is running`);
        if (this.packed) {
          // VIRTIO v1.2, 2.8: a packed ring has up to 2^15 entries, of any number.
          if (s.num < 1 || s.num > MAX_PACKED_QUEUE_SIZE) throw new ProtocolError(`vring ${s.index}: size ${s.num} is not 1 to ${MAX_PACKED_QUEUE_SIZE}`);
        } else if (!isSplitQueueSize(s.num)) {
          throw new ProtocolError(`vring ${s.index}: size ${s.num} is not a power of 2 up to ${MAX_QUEUE_SIZE}`);
        }
        v.num = s.num;
        break;
      }
      case Req.SET_VRING_ADDR: {
        const a = readVringAddr(m.payload);
        const v = this.vring(a.index, name);
        if (v.running) throw new ProtocolError(`vring ${a.index} is running`);
        // "VHOST_VRING_F_LOG in ring's flags" ("Migration"): dirty-page logging, never offered.
        if (a.flags !== 0) throw new ProtocolError(`vring ${a.index}: flags 0x${a.flags.toString(16)} (logging is not supported)`);
        v.addr = a;
        break;
      }
      case Req.SET_VRING_BASE: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (v.running) throw new ProtocolError(`vring ${s.index} is running`);
        if (this.packed) {
          // A packed ring's base: bits 0-14 the next descriptor, bit 15 the avail wrap
          // counter; newer frontends add the used ones above, always equal between bursts
          // for vrouter (it returns chains in order, each in the burst that took it).
          v.base = s.num & 0xffff;
        } else {
          if (s.num > 0xffff) throw new ProtocolError(`vring ${s.index}: base ${s.num} out of range`);
          v.base = s.num;
        }
        break;
      }
      case Req.GET_VRING_BASE: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if ((await this.stopVring(s.index))?.restarted) await this.findPosition(s.index);
        v.started = false;
        closeAll([v.kickFd]);
        v.kickFd = -1;
        // Packed: the used position in the upper half, as QEMU reads it back: the same.
        return this.reply(m.request, vringStatePayload(s.index, this.packed ? (v.base | (v.base << 16)) >>> 0 : v.base));
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        await this.setVringFd(m);
        break;
      case Req.SET_VRING_ENABLE: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (s.num > 1) throw new ProtocolError(`vring ${s.index}: enable value ${s.num}`);
        v.enabled = s.num === 1;
        if (v.enabled) await this.startVring(s.index);
        else await this.stopVring(s.index);
        break;
      }
      case Req.NET_SET_MTU: {
        const mtu = Number(readU64(m.payload, name));
        if (mtu < 68 || mtu > this.port.mtu) throw new ProtocolError(`MTU ${mtu} is outside 68..${this.port.mtu}, the port's MTU`);
        this.log.info(`port ${this.port.name}: guest MTU ${mtu}`);
        break;
      }
      case Req.GET_INFLIGHT_FD: {
        const desc = readInflightDesc(m.payload, 'GET_INFLIGHT_FD');
        const buffer = createInflightBuffer(desc, this.vrings.length);
        this.useInflight(buffer, name);
        return this.reply(m.request, inflightDescPayload({ ...desc, mmapSize: buffer.region.size, mmapOffset: 0 }), [buffer.region.fd]);
      }
      case Req.SET_INFLIGHT_FD: {
        const fd = m.fds[0];
        m.fds = [];
        const { buffer, warnings } = adoptInflightBuffer(readInflightDesc(m.payload, 'SET_INFLIGHT_FD'), fd, this.vrings.length, this.port.memoryPolicy);
        for (const w of warnings) this.log.warn(`port ${this.port.name}: ${w}`);
        this.useInflight(buffer, name);
        break;
      }
      case Req.SET_STATUS:
        this.status = Number(readU64(m.payload, name) & 0xffn);
        break;
      case Req.GET_STATUS:
        return this.reply(m.request, u64Payload(BigInt(this.status)));
      default:
        throw new ProtocolError(NOT_SERVED);
    }
    if (this.wantsAck(m)) this.reply(m.request, u64Payload(0n));
  }

  /** VIRTIO_F_RING_PACKED negotiated: the rings are packed. */
  private get packed(): boolean {
    return (this.features & bit(VIRTIO_F_RING_PACKED)) !== 0n;
  }

  /** The inflight record vrouter keeps is the split rings' layout; packed rings have another, not kept. */
  private needSplitRings(what: string): void {
    if (this.packed) throw new ProtocolError(`${what}: inflight tracking is for split rings only (VIRTIO_F_RING_PACKED negotiated)`);
  }

  private needProtocolFeatures(what: string): void {
    if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n && this.protocolFeatures === 0n) {
      throw new ProtocolError(`${what} needs VHOST_USER_F_PROTOCOL_FEATURES`);
    }
  }

  private needProtocolFeature(feature: number, what: string): void {
    if ((this.protocolFeatures & bit(feature)) === 0n) throw new ProtocolError(`${what}: its protocol feature was not negotiated`);
  }

  private vring(index: number, what: string): Vring {
    if (!Number.isInteger(index) || index >= this.vrings.length) {
      throw new ProtocolError(`${what}: vring ${index} out of range (the port has ${this.vrings.length})`);
    }
    return this.vrings[index];
  }

  // ---- memory -------------------------------------------------------------------------------

  private async setMemTable(m: Message): Promise<void> {
    const descs = readMemTable(m.payload);
    const fds = m.fds;
    m.fds = [];
    const tooBig = memoryTableProblem(descs);
    if (tooBig !== null) {
      closeAll(fds);
      throw new ProtocolError(`SET_MEM_TABLE: ${tooBig}`);
    }
    const { regions: mapped, warnings } = checkRegions(descs, fds, this.port.memoryPolicy);
    for (const w of warnings) this.log.warn(`port ${this.port.name}: ${w}`);
    this.track(mapped);
    try {
      await this.switchTo(mapped, 'SET_MEM_TABLE');
    } catch (err) {
      if (err instanceof ProtocolError) this.unmap(mapped);
      throw err;
    }
    // Every PMD has switched to the new views: only now may the old mappings go.
    const old = this.memory;
    this.memory = mapped;
    this.unmap(old);
    const total = descs.reduce((sum, d) => sum + d.size, 0);
    this.log.info(`port ${this.port.name}: memory table of ${descs.length} region(s), ${Math.round(total / 2 ** 20)} MiB`, 'memory.mapped', { port: this.port.name, regions: descs.length });
    for (let i = 0; i < this.vrings.length; i++) await this.startVring(i);
  }

  /** One more region, in force once every PMD of the port views the table with it. */
  private async addMemReg(m: Message): Promise<void> {
    const desc = readMemRegion(m.payload, 'ADD_MEM_REG');
    const same = this.memory[regionIndex(this.memory, desc)];
    if (same !== undefined && same.mmapOffset === desc.mmapOffset) {
      // The region in force stays as it is mapped; the fd is not needed.
      closeAll(m.fds);
      m.fds = [];
      this.regionRefs.set(same, (this.regionRefs.get(same) ?? 1) + 1);
      return;
    }
    const problem = additionProblem(this.memory, desc);
    if (problem !== null) throw new ProtocolError(`ADD_MEM_REG: ${problem}`);
    const fds = m.fds;
    m.fds = [];
    const { regions: mapped, warnings } = checkRegions([desc], fds, this.port.memoryPolicy, 'ADD_MEM_REG');
    for (const w of warnings) this.log.warn(`port ${this.port.name}: ${w}`);
    this.track(mapped);
    const next = [...this.memory, ...mapped];
    try {
      await this.switchTo(next, 'ADD_MEM_REG');
    } catch (err) {
      if (err instanceof ProtocolError) this.unmap(mapped);
      throw err;
    }
    this.memory = next;
    this.logTable(`region added (${describeRegion(desc)})`);
    for (let i = 0; i < this.vrings.length; i++) await this.startVring(i);
  }

  /**
   * A region in force taken out: the PMDs switch to the table without it first (one whose
   * running vring lies in it refuses, and the region stays), then it is unmapped.
   */
  private async remMemReg(m: Message): Promise<void> {
    // "If a file descriptor is passed, the back-end MUST close it without using it otherwise."
    closeAll(m.fds);
    m.fds = [];
    const named = readMemRegion(m.payload, 'REM_MEM_REG');
    const index = regionIndex(this.memory, named);
    if (index < 0) throw new ProtocolError(`REM_MEM_REG: no region in force is ${describeRegion(named)}`);
    const removed = this.memory[index];
    const refs = this.regionRefs.get(removed) ?? 1;
    if (refs > 1) {
      this.regionRefs.set(removed, refs - 1);
      return;
    }
    const next = this.memory.filter((_, i) => i !== index);
    await this.switchTo(next, 'REM_MEM_REG');
    this.memory = next;
    this.unmap([removed]);
    this.logTable(`region removed (${describeRegion(removed)})`);
  }

  private logTable(change: string): void {
    const total = this.memory.reduce((sum, r) => sum + r.size, 0);
    const msg = `port ${this.port.name}: memory ${change}: ${this.memory.length} region(s), ${Math.round(total / 2 ** 20)} MiB`;
    this.log.info(msg, 'memory.mapped', { port: this.port.name, regions: this.memory.length, change });
  }

  /**
   * The PMDs switch to `next`, all or nothing. Throws ProtocolError if they did not (the
   * table in force stays), Superseded if the connection was reset or has to close.
   */
  private async switchTo(next: readonly HeldRegion[], what: string): Promise<void> {
    const error = await this.switchMemory(regionsForDataplane(next), this.gen);
    if (error === 'rollback failed') {
      // Some PMD may view the new table and none can be told otherwise: only a reset frees it.
      void this.close(`${what}: a PMD could not go back to the previous memory table`);
      throw new Superseded();
    }
    if (error !== null) throw new ProtocolError(`${what}: ${error}`);
  }

  /**
   * Gives every PMD of the port the new table, all or nothing: if one refuses it, those that
   * took it go back to the table in force. Returns null, why it failed, or 'rollback failed'.
   */
  private async switchMemory(regions: GuestRegion[], gen: number): Promise<string | null> {
    const owners = this.dataplane.ownersOf(this.port.index);
    const gib = Math.ceil(regions.reduce((sum, r) => sum + r.size, 0) / 2 ** 30);
    this.options.budget.spend((COMMAND_COST + GIB_COST * Math.max(0, gib - 1)) * owners.length);
    const replies = await Promise.all(owners.map((pmd) => this.dataplane.requestOn(pmd, { t: 'memory', port: this.port.index, gen, regions })));
    this.checkCurrent(gen);
    // A PMD that was gone refused nothing: its successor gets the table in force then (resync).
    const refusal = replies.find((r) => r.error !== undefined && !r.restarted);
    if (refusal === undefined) return null;
    const switched = owners.filter((_, i) => replies[i].error === undefined);
    const current = regionsForDataplane(this.memory);
    const back = await Promise.all(switched.map((pmd) => this.dataplane.requestOn(pmd, { t: 'memory', port: this.port.index, gen, regions: current })));
    this.checkCurrent(gen);
    return back.some((r) => r.error !== undefined && !r.restarted) ? 'rollback failed' : refusal.error!;
  }

  /** Regions just mapped, to be unmapped at the latest by the reset that ends this generation. */
  private track(regions: readonly HeldRegion[]): void {
    for (const r of regions) this.mappings.set(r, this.gen);
  }

  private unmap(regions: readonly HeldRegion[]): void {
    this.dataplane.unmap(releaseRegions(regions.filter((r) => this.mappings.delete(r))));
  }

  /**
   * The inflight buffer vrings started from now on use. A running vring keeps the one it
   * started with, so the buffer changes only while none runs (QEMU sends it before it
   * starts the device); the one it replaces is viewed by no PMD and goes at once.
   */
  private useInflight(buffer: InflightBuffer, what: string): void {
    const running = this.vrings.findIndex((v) => v.running);
    if (running >= 0) {
      this.dropInflight(buffer);
      throw new ProtocolError(`${what}: vring ${running} is running`);
    }
    if (this.inflight !== null) this.dropInflight(this.inflight);
    this.inflight = buffer;
    this.log.info(`port ${this.port.name}: inflight buffer for ${buffer.numQueues} queues of ${buffer.queueSize}`, 'inflight.buffer', { port: this.port.name, queues: buffer.numQueues, queueSize: buffer.queueSize });
  }

  /** Closes an inflight buffer's file; the data plane unmaps it (no PMD views it any more). */
  private dropInflight(buffer: InflightBuffer): void {
    this.dataplane.unmap(releaseRegions([buffer.region]));
  }

  /** A vring's area of the inflight buffer, or null (none, or the vring is not in it). */
  private inflightFor(index: number, size: number): InflightFile | null {
    if (this.inflight === null) return null;
    if (this.packed) {
      // The buffer came before the features (as vhost-user-blk sends it); its layout is the split rings'.
      this.log.warn(`port ${this.port.name}: vring ${index} runs without an inflight record: packed rings are not tracked`);
      return null;
    }
    const area = inflightArea(this.inflight, index, size);
    if (typeof area !== 'string') return area;
    this.log.warn(`port ${this.port.name}: vring ${index} runs without an inflight record: ${area}`);
    return null;
  }

  // ---- vrings -------------------------------------------------------------------------------

  private async setVringFd(m: Message): Promise<void> {
    const name = requestName(m.request);
    const value = readU64(m.payload, name);
    const index = Number(value & BigInt(VRING_IDX_MASK));
    if ((value & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0n) throw new ProtocolError(`${name}: reserved bits set`);
    const v = this.vring(index, name);
    const fd = m.fds.length === 1 ? m.fds[0] : -1;
    const problem = fd >= 0 ? eventfdProblem(fd) : null;
    if (problem !== null) throw new ProtocolError(`${name}: vring ${index}: the fd is ${problem}`);
    m.fds = [];
    const gen = this.gen;
    if (m.request === Req.SET_VRING_KICK) {
      const old = v.kickFd;
      v.kickFd = fd;
      v.retiredFds.push(old);
      if (v.running) {
        await this.command({ t: 'vring-kick', port: this.port.index, gen, vring: index, kickFd: fd });
      }
      this.releaseRetired(v);
      v.started = true;
      // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state."
      if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) v.enabled = true;
      await this.startVring(index);
    } else if (m.request === Req.SET_VRING_CALL) {
      v.retiredFds.push(v.callFd);
      v.callFd = fd;
      if (v.running) {
        const reply = await this.command({ t: 'vring-call', port: this.port.index, gen, vring: index, callFd: fd });
        if (reply.error && !reply.restarted) throw new ProtocolError(reply.error);
      }
      this.releaseRetired(v);
    } else {
      // Errors are logged and counted here rather than signalled: keep the fd for the
      // lifetime of the vring so that the frontend's handler stays valid.
      closeAll([v.errFd]);
      v.errFd = fd;
    }
  }

  /** Closes the fds a vring replaced, now that the PMD has the new ones. */
  private releaseRetired(v: Vring): void {
    closeAll(v.retiredFds.splice(0));
  }

  /** Hands a vring to the PMD once everything it needs has arrived. */
  private async startVring(index: number, resume = false): Promise<void> {
    const v = this.vrings[index];
    if (v.running || !v.started || !v.enabled || v.addr === null || v.num === 0 || this.memory.length === 0) return;
    if ((this.features & bit(VIRTIO_F_VERSION_1)) === 0n) return;
    const reply = await this.command({
      t: 'vring-start',
      port: this.port.index,
      gen: this.gen,
      vring: index,
      callFd: v.callFd,
      kickFd: v.kickFd,
      mergeable: (this.features & bit(VIRTIO_NET_F_MRG_RXBUF)) !== 0n,
      // This connection's, whatever an earlier one negotiated.
      offloads: offloadsOf(this.features),
      inflight: this.inflightFor(index, v.num),
      layout: {
        size: v.num,
        descAddr: v.addr.descAddr,
        availAddr: v.addr.availAddr,
        usedAddr: v.addr.usedAddr,
        lastAvailIdx: resume ? -1 : v.base,
        eventIdx: (this.features & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n,
        indirect: (this.features & bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
        packed: this.packed,
        // A guest's TX queues (odd): there every chain goes back unwritten, and a driver's
        // in-order receive path need not take batches (DPDK's packed one does not).
        inOrder: (this.features & bit(VIRTIO_F_IN_ORDER)) !== 0n && index % 2 === 1,
      },
    });
    if (reply.error) {
      // A PMD that was gone: its successor starts the vring when it gets the port (resync).
      if (!reply.restarted) this.log.warn(`port ${this.port.name}: vring ${index} not started: ${reply.error}`);
      return;
    }
    v.running = true;
    if (reply.lastAvailIdx !== undefined) v.base = reply.lastAvailIdx;
    this.log.info(`port ${this.port.name}: vring ${index} (${index % 2 === 0 ? 'guest rx' : 'guest tx'}) running, size ${v.num}, ${resume ? 'resumed from the used ring at' : 'base'} ${v.base}`, 'vring.started', { port: this.port.name, vring: index });
  }

  /** Stops a running vring; returns the PMD's answer (none if it was not running). */
  private async stopVring(index: number): Promise<PmdReply | null> {
    const v = this.vrings[index];
    if (!v.running) return null;
    const reply = await this.command({ t: 'vring-stop', port: this.port.index, gen: this.gen, vring: index });
    v.running = false;
    if (reply.lastAvailIdx !== undefined) v.base = reply.lastAvailIdx;
    if (!reply.restarted) this.log.info(`port ${this.port.name}: vring ${index} stopped, base ${v.base}`, 'vring.stopped', { port: this.port.name, vring: index, base: v.base });
    return reply;
  }

  /**
   * The PMD that ran the vring died before it could say where it stopped, and the base the
   * frontend asks for must be where the ring really is: the next PMD reads it from the used
   * ring (as it would resume), once the data plane is back, then stops the vring again.
   */
  private async findPosition(index: number): Promise<void> {
    const v = this.vrings[index];
    const gen = this.gen;
    const deadline = Date.now() + POSITION_WAIT_MS;
    while (Date.now() < deadline) {
      const pmd = this.dataplane.ownerOf(this.port.index, index);
      const reply = await this.dataplane.requestOn(pmd, { t: 'memory', port: this.port.index, gen, regions: regionsForDataplane(this.memory) });
      this.checkCurrent(gen);
      if (reply.restarted) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      if (reply.error === undefined) {
        await this.startVring(index, true);
        const stopped = await this.stopVring(index);
        if (stopped !== null && !stopped.restarted) return;
      }
      break;
    }
    this.log.warn(`port ${this.port.name}: vring ${index}: its PMD died and where it stopped is unknown: base ${v.base} is the last known`);
  }

  /**
   * A frontend may make an eventfd blocking after handing it over (the flag belongs to the
   * open file, which it shares): a PMD would then block on the fd for good. Such an fd is
   * made non-blocking again, poked so that a PMD blocked on it wakes, and the frontend is
   * disconnected.
   */
  private auditFds(): void {
    const found = unblockFds(this.vrings);
    if (found !== null) void this.close(found);
  }

  // ---- PMD commands ----------------------------------------------------------------------

  /** A vring command to its PMD; throws Superseded if the connection was reset meanwhile. */
  private async command(cmd: PortCommand): Promise<PmdReply> {
    this.checkCurrent(cmd.gen);
    this.options.budget.spend(COMMAND_COST);
    const reply = await this.dataplane.request(cmd);
    this.checkCurrent(cmd.gen);
    return reply;
  }

  private checkCurrent(gen: number): void {
    if (this.closed || this.gen !== gen) throw new Superseded();
  }

  /** Why the guest memory in force cannot be viewed any more (a file shrank), or null. */
  memoryProblem(): string | null {
    return shrunkRegion(this.memory) ?? (this.inflight && shrunkInflightBuffer(this.inflight));
  }

  /**
   * A PMD restarted: it gets this port's memory again, and every vring it owns resumes
   * where its used ring says (what the dead PMD published last). `sent` is called once
   * the commands are on their way, before their answers.
   */
  resync(pmd: number, sent: () => void = () => {}): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.tasksDropped.add(resolve);
      this.enqueue(async () => {
        try {
          const gen = this.gen;
          if (!this.dataplane.ownersOf(this.port.index).includes(pmd)) return;
          const memory = this.memory.length > 0 ? this.dataplane.requestOn(pmd, { t: 'memory', port: this.port.index, gen, regions: regionsForDataplane(this.memory) }) : null;
          // Every vring the PMD owns that can run: those it ran resume from their used ring;
          // one whose start was lost with the old PMD starts from the frontend's base. Sent
          // right behind the table (the PMD holds them until it is in use): no round trip
          // each while the queues wait.
          const starts: Promise<void>[] = [];
          for (let i = 0; i < this.vrings.length; i++) {
            const v = this.vrings[i];
            if (this.dataplane.ownerOf(this.port.index, i) !== pmd) continue;
            const resume = v.running;
            v.running = false;
            starts.push(this.startVring(i, resume));
          }
          sent();
          const [reply] = await Promise.all([memory, ...starts]);
          if (reply?.error) this.log.warn(`port ${this.port.name}: restarted pmd${pmd} refused the memory table: ${reply.error}`);
        } finally {
          this.tasksDropped.delete(resolve);
          resolve();
        }
      });
    });
  }

  /**
   * Back to the state of a new connection. The state is swapped out at once (handlers still
   * waiting on a PMD find themselves superseded), then every PMD of the port is told to
   * forget it; only then are its fds closed and its memory unmapped.
   */
  private async resetDevice(): Promise<void> {
    const gen = this.gen;
    const vrings = this.vrings;
    const inflight = this.inflight;
    this.inflight = null;
    this.gen = this.options.nextGeneration();
    this.vrings = Array.from({ length: 2 * this.port.queues }, newVring);
    this.memory = [];
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.status = 0;
    const owners = this.dataplane.ownersOf(this.port.index);
    this.options.budget.spend(COMMAND_COST * owners.length);
    // The PMDs use the old fds until they answer: a frontend that made one blocking as it
    // hung up (or reset) would hold a PMD blocked on it, and it would never answer.
    const audit = setInterval(() => unblockFds(vrings), FD_AUDIT_MS).unref();
    try {
      // Any answer means the PMD let go: it forgot the port, or it died (a dead thread holds nothing).
      await Promise.all(owners.map((pmd) => this.dataplane.requestOn(pmd, { t: 'port-reset', port: this.port.index, gen })));
    } finally {
      clearInterval(audit);
    }
    for (const v of vrings) closeAll([v.kickFd, v.callFd, v.errFd, ...v.retiredFds]);
    for (const [region, madeBy] of this.mappings) if (madeBy <= gen) this.unmap([region]);
    if (inflight !== null) this.dropInflight(inflight);
  }
}

/**
 * The vrings' kick and call eventfds found blocking, made non-blocking again, and a call
 * counter drained so that a PMD blocked writing to it, full, wakes; which was the first, or
 * null if none. Nothing here, nor in a PMD, reads or writes them in a way that could block
 * (eventfdDrain): the frontend can clear O_NONBLOCK again between any two calls. A PMD
 * blocked all the same is interrupted by the supervisor's watchdog.
 */
function unblockFds(vrings: readonly Vring[]): string | null {
  let first: string | null = null;
  for (const [index, v] of vrings.entries()) {
    for (const [fd, what] of [[v.kickFd, 'kick'], [v.callFd, 'call']] as const) {
      if (fd < 0 || isNonBlocking(fd)) continue;
      try {
        setNonBlocking(fd);
      } catch {
        // closed meanwhile: nothing can block on it any more
      }
      if (what === 'call') eventfdDrain(fd);
      first ??= `vring ${index}: the frontend made its ${what} eventfd blocking`;
    }
  }
  return first;
}
