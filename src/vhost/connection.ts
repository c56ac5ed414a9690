// One frontend connection (a VM's virtio-net device, or a DPDK virtio-user port) and its
// device state: negotiated features, memory table, vrings. Messages are read without
// blocking, validated before dispatch, and handled one at a time in arrival order; vring
// changes go to the owning PMD and are answered once it has carried them out.
import { closeAll, MAX_FDS_PER_MESSAGE, recvMsg, sendMsg, watchReadable, type Watch } from '../sys/libc.ts';
import {
  bit,
  MAX_QUEUE_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../virtio/constants.ts';
import type { Dataplane, PmdCommand } from './dataplane-link.ts';
import { mapRegions, regionsForDataplane, unmapRegions, type MappedRegion } from './memory-table.ts';
import {
  decodeHeader,
  encodeReply,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_LEN,
  MAX_PAYLOAD,
  ProtocolError,
  ProtocolFeature,
  readMemTable,
  readU64,
  readVringAddr,
  readVringState,
  Req,
  requestName,
  u64Payload,
  VERSION,
  VERSION_MASK,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  vringStatePayload,
  type Header,
  type VringAddr,
} from './protocol.ts';

export interface PortSettings {
  index: number;
  name: string;
  queues: number;
  mtu: number;
}

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
}

export function offeredFeatures(port: PortSettings): bigint {
  let f = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_NET_F_MRG_RXBUF);
  f |= bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MTU);
  if (port.queues > 1) f |= bit(VIRTIO_NET_F_MQ);
  return f;
}

export const OFFERED_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.NET_MTU) | bit(ProtocolFeature.STATUS);

interface Vring {
  num: number;
  addr: VringAddr | null;
  /** SET_VRING_BASE, or where the PMD stopped */
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  /** "a ring is started when it receives a kick" and stopped by GET_VRING_BASE */
  started: boolean;
  enabled: boolean;
  /** the PMD is processing it */
  running: boolean;
}

function newVring(): Vring {
  return { num: 0, addr: null, base: 0, kickFd: -1, callFd: -1, errFd: -1, started: false, enabled: false, running: false };
}

interface Message extends Header {
  payload: Uint8Array;
  fds: number[];
}

/** Requests that carry fds, and how many (vring fds: one unless the NOFD bit is set). */
function expectedFds(m: Message): number {
  switch (m.request) {
    case Req.SET_MEM_TABLE:
      return m.payload.length >= 4 ? new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true) : 0;
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR:
      return m.payload.length === 8 && (m.payload[1] & 1) === 0 ? 1 : 0;
    case Req.SET_LOG_FD:
    case Req.SET_BACKEND_REQ_FD:
      return 1;
    default:
      return 0;
  }
}

export class VhostConnection {
  private readonly fd: number;
  private readonly port: PortSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private readonly onClosed: (reason: string) => void;
  private readonly watch: Watch;
  private closed = false;

  // framing: the message being read
  private readonly inbuf = new Uint8Array(HEADER_LEN + MAX_PAYLOAD);
  private have = 0;
  private header: Header | null = null;
  private inFds: number[] = [];
  /** frontend messages, and work of our own that must not interleave with them */
  private readonly queue: (Message | (() => Promise<void>))[] = [];
  private processing = false;

  // device state
  private features = 0n;
  private protocolFeatures = 0n;
  private status = 0;
  private memory: MappedRegion[] = [];
  private readonly vrings: Vring[];

  constructor(fd: number, port: PortSettings, dataplane: Dataplane, log: Logger, onClosed: (reason: string) => void) {
    this.fd = fd;
    this.port = port;
    this.dataplane = dataplane;
    this.log = log;
    this.onClosed = onClosed;
    this.vrings = Array.from({ length: 2 * port.queues }, newVring);
    this.watch = watchReadable(fd, () => this.readAvailable());
  }

  /** Closes the connection and frees everything it holds (idempotent). */
  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watch.stop();
    closeAll([this.fd]);
    closeAll(this.inFds);
    for (const m of this.queue.splice(0)) if (typeof m !== 'function') closeAll(m.fds);
    await this.resetDevice();
    this.onClosed(reason);
  }

  // ---- framing --------------------------------------------------------------------------

  private readAvailable(): void {
    try {
      while (!this.closed) {
        const want = this.header === null ? HEADER_LEN - this.have : HEADER_LEN + this.header.size - this.have;
        if (want > 0) {
          const got = recvMsg(this.fd, this.inbuf.subarray(this.have, this.have + want));
          if (got === null) return;
          this.inFds.push(...got.fds);
          if (got.fdsTruncated || this.inFds.length > MAX_FDS_PER_MESSAGE) {
            throw new ProtocolError(`more than ${MAX_FDS_PER_MESSAGE} fds in one message`);
          }
          if (got.length === 0) {
            void this.close('frontend disconnected');
            return;
          }
          this.have += got.length;
        }
        if (this.header === null && this.have === HEADER_LEN) {
          const h = decodeHeader(this.inbuf);
          if ((h.flags & VERSION_MASK) !== VERSION || (h.flags & FLAG_REPLY) !== 0) {
            throw new ProtocolError(`${requestName(h.request)}: bad flags 0x${h.flags.toString(16)}`);
          }
          if (h.size > MAX_PAYLOAD) throw new ProtocolError(`${requestName(h.request)}: payload of ${h.size} bytes`);
          this.header = h;
        }
        if (this.header !== null && this.have === HEADER_LEN + this.header.size) {
          this.queue.push({ ...this.header, payload: this.inbuf.slice(HEADER_LEN, this.have), fds: this.inFds });
          this.header = null;
          this.have = 0;
          this.inFds = [];
          void this.processQueue();
        }
      }
    } catch (err) {
      void this.close(`protocol error: ${(err as Error).message}`);
    }
  }

  private async processQueue(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        const m = this.queue.shift()!;
        if (typeof m === 'function') {
          await m();
          continue;
        }
        try {
          if (m.fds.length !== expectedFds(m)) {
            throw new ProtocolError(`${requestName(m.request)}: ${m.fds.length} fds, expected ${expectedFds(m)}`);
          }
          await this.dispatch(m);
        } catch (err) {
          closeAll(m.fds);
          this.failed(m, err as Error);
        }
      }
    } finally {
      this.processing = false;
    }
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
    void this.close(`protocol error: ${what}`);
  }

  private wantsAck(m: Message): boolean {
    return (m.flags & FLAG_NEED_REPLY) !== 0 && (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  private reply(request: number, payload: Uint8Array): void {
    if (!this.closed) sendMsg(this.fd, encodeReply(request, payload));
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
      case Req.RESET_DEVICE:
        await this.resetDevice();
        break;
      case Req.SET_MEM_TABLE:
        await this.setMemTable(m);
        break;
      case Req.SET_VRING_NUM: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (v.running) throw new ProtocolError(`vring ${s.index} is running`);
        if (s.num < 1 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
          throw new ProtocolError(`vring ${s.index}: size ${s.num} is not a power of 2 up to ${MAX_QUEUE_SIZE}`);
        }
        v.num = s.num;
        break;
      }
      case Req.SET_VRING_ADDR: {
        const a = readVringAddr(m.payload);
        const v = this.vring(a.index, name);
        if (v.running) throw new ProtocolError(`vring ${a.index} is running`);
        v.addr = a;
        break;
      }
      case Req.SET_VRING_BASE: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (v.running) throw new ProtocolError(`vring ${s.index} is running`);
        if (s.num > 0xffff) throw new ProtocolError(`vring ${s.index}: base ${s.num} out of range`);
        v.base = s.num;
        break;
      }
      case Req.GET_VRING_BASE: {
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        await this.stopVring(s.index);
        v.started = false;
        closeAll([v.kickFd]);
        v.kickFd = -1;
        return this.reply(m.request, vringStatePayload(s.index, v.base));
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        await this.setVringFd(m);
        break;
      case Req.SET_VRING_ENABLE: {
        this.needProtocolFeatures(name);
        const s = readVringState(m.payload, name);
        const v = this.vring(s.index, name);
        if (s.num > 1) throw new ProtocolError(`vring ${s.index}: enable value ${s.num}`);
        v.enabled = s.num === 1;
        if (v.enabled) await this.startVring(s.index);
        else await this.stopVring(s.index);
        break;
      }
      case Req.NET_SET_MTU: {
        this.needProtocolFeature(ProtocolFeature.NET_MTU, name);
        const mtu = Number(readU64(m.payload, name));
        if (mtu < 68 || mtu > this.port.mtu) throw new ProtocolError(`MTU ${mtu} is outside 68..${this.port.mtu}, the port's MTU`);
        this.log.info(`port ${this.port.name}: guest MTU ${mtu}`);
        break;
      }
      case Req.SET_STATUS:
        this.needProtocolFeature(ProtocolFeature.STATUS, name);
        this.status = Number(readU64(m.payload, name) & 0xffn);
        break;
      case Req.GET_STATUS:
        this.needProtocolFeature(ProtocolFeature.STATUS, name);
        return this.reply(m.request, u64Payload(BigInt(this.status)));
      default:
        throw new ProtocolError('not supported by this backend (never offered)');
    }
    if (this.wantsAck(m)) this.reply(m.request, u64Payload(0n));
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

  private async setMemTable(m: Message): Promise<void> {
    const descs = readMemTable(m.payload);
    const fds = m.fds;
    m.fds = [];
    const unsealed: number[] = [];
    const mapped = mapRegions(descs, fds, unsealed);
    if (unsealed.length > 0) {
      this.log.warn(`port ${this.port.name}: memory region(s) ${unsealed.join(', ')} cannot be sealed against shrinking: a frontend that truncates them would crash vrouter`);
    }
    const reply = await this.command({ t: 'memory', port: this.port.index, regions: regionsForDataplane(mapped) });
    if (reply.error) {
      unmapRegions(mapped);
      throw new ProtocolError(`SET_MEM_TABLE: ${reply.error}`);
    }
    // The PMD has switched to the new views: only now may the old mappings go.
    const old = this.memory;
    this.memory = mapped;
    unmapRegions(old);
    const total = descs.reduce((sum, d) => sum + d.size, 0);
    this.log.info(`port ${this.port.name}: memory table of ${descs.length} region(s), ${Math.round(total / 2 ** 20)} MiB`);
    for (let i = 0; i < this.vrings.length; i++) await this.startVring(i);
  }

  private async setVringFd(m: Message): Promise<void> {
    const name = requestName(m.request);
    const value = readU64(m.payload, name);
    const index = Number(value & BigInt(VRING_IDX_MASK));
    if ((value & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0n) throw new ProtocolError(`${name}: reserved bits set`);
    const v = this.vring(index, name);
    const fd = m.fds.length === 1 ? m.fds[0] : -1;
    m.fds = [];
    if (m.request === Req.SET_VRING_KICK) {
      closeAll([v.kickFd]);
      v.kickFd = fd;
      v.started = true;
      // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state."
      if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) v.enabled = true;
      await this.startVring(index);
    } else if (m.request === Req.SET_VRING_CALL) {
      const old = v.callFd;
      v.callFd = fd;
      if (v.running) {
        const reply = await this.command({ t: 'vring-call', port: this.port.index, vring: index, callFd: fd });
        if (reply.error) throw new ProtocolError(reply.error);
      }
      closeAll([old]);
    } else {
      // Errors are logged and counted here rather than signalled: keep the fd for the
      // lifetime of the vring so that the frontend's handler stays valid.
      closeAll([v.errFd]);
      v.errFd = fd;
    }
  }

  /** Hands a vring to the PMD once everything it needs has arrived. */
  private async startVring(index: number): Promise<void> {
    const v = this.vrings[index];
    if (v.running || !v.started || !v.enabled || v.addr === null || v.num === 0 || this.memory.length === 0) return;
    if ((this.features & bit(VIRTIO_F_VERSION_1)) === 0n) return;
    const reply = await this.command({
      t: 'vring-start',
      port: this.port.index,
      vring: index,
      callFd: v.callFd,
      kickFd: v.kickFd,
      mergeable: (this.features & bit(VIRTIO_NET_F_MRG_RXBUF)) !== 0n,
      layout: {
        size: v.num,
        descAddr: v.addr.descAddr,
        availAddr: v.addr.availAddr,
        usedAddr: v.addr.usedAddr,
        lastAvailIdx: v.base,
        eventIdx: (this.features & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n,
        indirect: (this.features & bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
      },
    });
    if (reply.error) {
      this.log.warn(`port ${this.port.name}: vring ${index} not started: ${reply.error}`);
      return;
    }
    v.running = true;
    this.log.info(`port ${this.port.name}: vring ${index} (${index % 2 === 0 ? 'guest rx' : 'guest tx'}) running, size ${v.num}, ${v.base < 0 ? 'resumed from the used ring' : `base ${v.base}`}`);
  }

  private async stopVring(index: number): Promise<void> {
    const v = this.vrings[index];
    if (!v.running) return;
    const reply = await this.command({ t: 'vring-stop', port: this.port.index, vring: index });
    v.running = false;
    if (reply.lastAvailIdx !== undefined) v.base = reply.lastAvailIdx;
  }

  /**
   * A PMD restarted: it gets this port's memory again, and every vring it owned resumes
   * where its used ring says (what the dead PMD published last).
   */
  resync(pmd: number): Promise<void> {
    return new Promise((resolve) => {
      this.queue.push(async () => {
        if (this.memory.length > 0) {
          const reply = await this.dataplane.requestOn(pmd, { t: 'memory', port: this.port.index, regions: regionsForDataplane(this.memory) });
          if (reply.error) this.log.warn(`port ${this.port.name}: restarted pmd${pmd} refused the memory table: ${reply.error}`);
        }
        for (let i = 0; i < this.vrings.length; i++) {
          const v = this.vrings[i];
          if (!v.running || this.dataplane.ownerOf(this.port.index, i) !== pmd) continue;
          v.running = false;
          v.base = -1;
          await this.startVring(i);
        }
        resolve();
      });
      void this.processQueue();
    });
  }

  private async command(cmd: PmdCommand) {
    return this.dataplane.request(cmd);
  }

  /** Back to the state of a new connection: PMD forgets the port, then fds and maps go. */
  private async resetDevice(): Promise<void> {
    const reply = await this.dataplane.request({ t: 'port-reset', port: this.port.index });
    if (reply.error) {
      // The PMD may still touch the memory and signal the call fds: leaking them is safe,
      // unmapping (SIGSEGV) or closing (the fd number may be reused) is not.
      this.log.warn(`port ${this.port.name}: reset failed (${reply.error}); guest memory and fds stay open`);
    } else {
      unmapRegions(this.memory);
      for (const v of this.vrings) closeAll([v.kickFd, v.callFd, v.errFd]);
    }
    this.memory = [];
    for (let i = 0; i < this.vrings.length; i++) this.vrings[i] = newVring();
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.status = 0;
  }
}
