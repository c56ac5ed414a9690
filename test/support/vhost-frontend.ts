// A vhost-user frontend written for the tests: it speaks the protocol the way QEMU and
// DPDK virtio-user do (or, on request, the way a broken one would) and drives the queues
// through the driver-side test frontend. Real frontends are tested in test/e2e.
import { setTimeout as sleep } from 'node:timers/promises';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, HEADER_LEN, inflightDescPayload, readInflightDesc, Req, u64Payload, VERSION, vringStatePayload, type InflightDesc } from '../../src/vhost/protocol.ts';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.ts';
import type { QueueLayout } from '../../src/virtio/split-queue.ts';
import { DriverQueue, GuestRam } from './virtio-driver.ts';
import { PackedDriverQueue } from './packed-driver.ts';

export const PROTOCOL_MQ_REPLY_ACK_STATUS = bit(0) | bit(3) | bit(16);
/** VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: regions added and removed one at a time */
export const PROTOCOL_MEM_SLOTS = bit(15);
/** VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: the backend records the chains in flight in a buffer the frontend keeps */
export const PROTOCOL_INFLIGHT_SHMFD = bit(12);

export function encodeMessage(request: number, payload: Uint8Array, flags = VERSION): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_LEN);
  return out;
}

export const u64 = (value: bigint | number): Uint8Array => u64Payload(BigInt(value));
/** struct vhost_vring_state: index, num */
export const u32pair = vringStatePayload;

export function memTablePayload(regions: { gpa: number; size: number; uva: number; offset: number }[], count = regions.length): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, count, true);
  regions.forEach((r, i) => {
    dv.setBigUint64(8 + 32 * i, BigInt(r.gpa), true);
    dv.setBigUint64(16 + 32 * i, BigInt(r.size), true);
    dv.setBigUint64(24 + 32 * i, BigInt(r.uva), true);
    dv.setBigUint64(32 + 32 * i, BigInt(r.offset), true);
  });
  return out;
}

/** "Single memory region description": u64 padding, then the region (ADD_MEM_REG, REM_MEM_REG). */
export function memRegionPayload(r: { gpa: number; size: number; uva: number; offset: number }): Uint8Array {
  const out = new Uint8Array(40);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(8, BigInt(r.gpa), true);
  dv.setBigUint64(16, BigInt(r.size), true);
  dv.setBigUint64(24, BigInt(r.uva), true);
  dv.setBigUint64(32, BigInt(r.offset), true);
  return out;
}

/** Guest RAM plugged in beside the boot RAM (a DIMM, a virtio-mem block): its own memfd and addresses. */
export class PluggedRam {
  readonly fd: number;
  readonly size: number;
  readonly gpaBase: number;
  readonly uvaBase: number;
  readonly bytes: Uint8Array;
  private readonly hostAddr: bigint;
  private next = 0;

  constructor(size: number, gpaBase: number, uvaBase: number) {
    this.size = size;
    this.gpaBase = gpaBase;
    this.uvaBase = uvaBase;
    this.fd = sys.memfdCreate('test-plugged-ram');
    sys.ftruncate(this.fd, size);
    this.hostAddr = sys.mmapShared(this.fd, size);
    this.bytes = new Uint8Array(sys.view(this.hostAddr, size));
  }

  /** Bump allocation; returns the guest physical address. */
  alloc(len: number): number {
    const off = Math.ceil(this.next / 64) * 64;
    if (off + len > this.size) throw new RangeError(`plugged RAM full (${len} bytes asked)`);
    this.next = off + len;
    return this.gpaBase + off;
  }

  /** This RAM as one region (offset 0 of its memfd). */
  slot(): { gpa: number; size: number; uva: number; offset: number } {
    return { gpa: this.gpaBase, size: this.size, uva: this.uvaBase, offset: 0 };
  }

  close(): void {
    sys.munmap(this.hostAddr, this.size);
    sys.closeAll([this.fd]);
  }
}

export function vringAddrPayload(index: number, desc: number, used: number, avail: number): Uint8Array {
  const out = new Uint8Array(40);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index, true);
  dv.setBigUint64(8, BigInt(desc), true);
  dv.setBigUint64(16, BigInt(used), true);
  dv.setBigUint64(24, BigInt(avail), true);
  return out;
}

export class VhostFrontend {
  readonly fd: number;
  private readonly buf = new Uint8Array(4096);

  private constructor(fd: number) {
    this.fd = fd;
  }

  static async connect(path: string, timeoutMs = 5000): Promise<VhostFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return new VhostFrontend(sys.unixConnect(path));
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(50);
      }
    }
  }

  send(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = VERSION): void {
    sys.sendMsg(this.fd, encodeMessage(request, payload, flags), fds);
  }

  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    sys.sendMsg(this.fd, bytes, fds);
  }

  /** The next reply's payload; null if the backend closed the connection. */
  async reply(timeoutMs = 3000): Promise<{ request: number; payload: Uint8Array } | null> {
    const got = await this.replyWithFds(timeoutMs);
    if (got !== null) sys.closeAll(got.fds);
    return got;
  }

  /** The next reply's payload and the fds it carried; null if the backend closed the connection. */
  async replyWithFds(timeoutMs = 3000): Promise<{ request: number; payload: Uint8Array; fds: number[] } | null> {
    const deadline = Date.now() + timeoutMs;
    let have = 0;
    let need = HEADER_LEN;
    const fds: number[] = [];
    while (have < need) {
      const got = sys.recvMsg(this.fd, this.buf.subarray(have, need));
      if (got !== null) {
        fds.push(...got.fds);
        if (got.length === 0) {
          sys.closeAll(fds);
          return null;
        }
        have += got.length;
        if (have === HEADER_LEN) need = HEADER_LEN + new DataView(this.buf.buffer).getUint32(8, true);
        continue;
      }
      if (Date.now() > deadline) {
        sys.closeAll(fds);
        throw new Error(`no reply within ${timeoutMs} ms`);
      }
      await sleep(5);
    }
    return { request: new DataView(this.buf.buffer).getUint32(0, true), payload: this.buf.slice(HEADER_LEN, need), fds };
  }

  async replyU64(timeoutMs = 3000): Promise<bigint | null> {
    const r = await this.reply(timeoutMs);
    return r === null ? null : new DataView(r.payload.buffer).getBigUint64(0, true);
  }

  /** Sends a request with NEED_REPLY and returns the backend's ack (0 = success). */
  async request(request: number, payload: Uint8Array, fds: number[] = [], timeoutMs = 3000): Promise<bigint | null> {
    this.send(request, payload, fds, VERSION | FLAG_NEED_REPLY);
    return this.replyU64(timeoutMs);
  }

  /** True once the backend has closed the connection (reads end of file). */
  async closedByPeer(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const got = sys.recvMsg(this.fd, this.buf);
        if (got !== null) {
          sys.closeAll(got.fds);
          if (got.length === 0) return true;
        }
      } catch {
        return true; // ECONNRESET
      }
      await sleep(10);
    }
    return false;
  }

  close(): void {
    sys.closeAll([this.fd]);
  }
}

/** What the set-up needs of a driver's queue, split (DriverQueue) or packed (PackedDriverQueue). */
interface DeviceRing {
  readonly size: number;
  /** where the driver is: SET_VRING_BASE's value */
  readonly availIdx: number;
  layout(): QueueLayout;
}

export interface VirtioNetDevice<Q extends DeviceRing = DriverQueue> {
  frontend: VhostFrontend;
  ram: GuestRam;
  /** queue pair 0 */
  rx: Q;
  tx: Q;
  /** every queue pair: vrings 2n (guest RX) and 2n + 1 (guest TX) */
  pairs: QueuePair<Q>[];
  vrings: Q[];
  callFds: number[];
  kickFds: number[];
  /** the inflight buffer (INFLIGHT_SHMFD), mapped here, when the device asked for one */
  inflight: InflightBufferCopy | null;
  /** notifies the device of new TX buffers on pair 0 (always: a spurious kick is allowed) */
  kick(): void;
  close(): void;
}

/** The frontend's side of an inflight buffer: its fd, what it describes, and a view of it. */
export interface InflightBufferCopy {
  fd: number;
  desc: InflightDesc;
  bytes: Uint8Array;
}

export interface QueuePair<Q extends DeviceRing = DriverQueue> {
  rx: Q;
  tx: Q;
  /** notifies the device of new TX buffers on this pair */
  kick(): void;
}

export interface DeviceOptions {
  queueSize?: number;
  features?: bigint;
  queuePairs?: number;
  memorySlots?: boolean;
  unsealable?: boolean;
  /** negotiate INFLIGHT_SHMFD and ask for a buffer (GET_INFLIGHT_FD), then hand it back (SET_INFLIGHT_FD), as QEMU does */
  inflight?: boolean;
  /** with `inflight`: hand over this buffer of the frontend's own instead of asking for one */
  inflightBuffer?: InflightBufferCopy;
}

/**
 * A virtio-net device set up the way DPDK virtio-user does it: protocol features with
 * REPLY_ACK, one memfd region, vrings 2n (guest RX) and 2n + 1 (guest TX) of each queue
 * pair n (MQ negotiated when there are several), then enable. With `memorySlots`, the
 * way QEMU does it when the backend offers CONFIGURE_MEM_SLOTS: the region comes in an
 * ADD_MEM_REG, never in a SET_MEM_TABLE.
 */
export async function startDevice(path: string, opts: DeviceOptions = {}): Promise<VirtioNetDevice> {
  const size = opts.queueSize ?? 256;
  const pairCount = opts.queuePairs ?? 1;
  const ram = new GuestRam(undefined, { sealing: opts.unsealable ? false : undefined });
  const vrings = Array.from({ length: 2 * pairCount }, () => new DriverQueue(ram, size, { eventIdx: true }));
  const callFds = vrings.map(() => sys.eventfd());
  const kickFds = vrings.map(() => sys.eventfd());
  const fe = await VhostFrontend.connect(path);
  return attachDevice(fe, { ram, vrings, callFds, kickFds, inflight: opts.inflightBuffer ?? null }, opts);
}

/** The same device on packed rings (VIRTIO_F_RING_PACKED negotiated too). */
export async function startPackedDevice(path: string, opts: DeviceOptions = {}): Promise<VirtioNetDevice<PackedDriverQueue>> {
  const size = opts.queueSize ?? 256;
  const pairCount = opts.queuePairs ?? 1;
  const ram = new GuestRam(undefined, { sealing: opts.unsealable ? false : undefined });
  const vrings = Array.from({ length: 2 * pairCount }, () => new PackedDriverQueue(ram, size, { eventIdx: true }));
  const callFds = vrings.map(() => sys.eventfd());
  const kickFds = vrings.map(() => sys.eventfd());
  const fe = await VhostFrontend.connect(path);
  const features = opts.features ?? (bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | (pairCount > 1 ? bit(VIRTIO_NET_F_MQ) : 0n));
  return attachDevice(fe, { ram, vrings, callFds, kickFds, inflight: null }, { ...opts, features: features | bit(VIRTIO_F_RING_PACKED) });
}

/**
 * Sets the device up again over a new connection (its backend went, and another took its
 * place), with its rings as they stand: each vring's base is `base(vring)`, and an
 * inflight buffer it had is handed back (SET_INFLIGHT_FD), as QEMU does on reconnection.
 */
export async function reattachDevice(path: string, device: VirtioNetDevice, base: (vring: number) => number, opts: DeviceOptions = {}): Promise<VirtioNetDevice> {
  device.frontend.close();
  const fe = await VhostFrontend.connect(path);
  return attachDevice(fe, device, { ...opts, queueSize: device.vrings[0].size, inflight: device.inflight !== null }, base);
}

async function attachDevice<Q extends DeviceRing>(
  fe: VhostFrontend,
  parts: Pick<VirtioNetDevice<Q>, 'ram' | 'vrings' | 'callFds' | 'kickFds' | 'inflight'>,
  opts: DeviceOptions,
  base: (vring: number) => number = (vring) => parts.vrings[vring].availIdx,
): Promise<VirtioNetDevice<Q>> {
  const { ram, vrings, callFds, kickFds } = parts;
  const size = vrings[0].size;
  const expectAck = async (what: string, ack: Promise<bigint | null>) => {
    const v = await ack;
    if (v !== 0n) throw new Error(`${what}: backend answered ${v}`);
  };
  fe.send(Req.SET_OWNER);
  fe.send(Req.GET_FEATURES);
  const offered = await fe.replyU64();
  fe.send(Req.GET_PROTOCOL_FEATURES);
  const protocol = (await fe.replyU64())!;
  const wanted = PROTOCOL_MQ_REPLY_ACK_STATUS | (opts.memorySlots ? PROTOCOL_MEM_SLOTS : 0n) | (opts.inflight ? PROTOCOL_INFLIGHT_SHMFD : 0n);
  fe.send(Req.SET_PROTOCOL_FEATURES, u64(protocol & wanted));
  const multiqueue = vrings.length > 2 ? bit(VIRTIO_NET_F_MQ) : 0n;
  const want = opts.features ?? (bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | multiqueue);
  let inflight = parts.inflight;
  if (opts.inflight) {
    if (inflight === null) {
      fe.send(Req.GET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 0, mmapOffset: 0, numQueues: vrings.length, queueSize: size }));
      const got = await fe.replyWithFds();
      if (got === null || got.fds.length !== 1) throw new Error(`GET_INFLIGHT_FD: ${got === null ? 'connection closed' : `${got.fds.length} fds`}`);
      const desc = readInflightDesc(got.payload, 'GET_INFLIGHT_FD');
      const addr = sys.mmapShared(got.fds[0], desc.mmapOffset + desc.mmapSize);
      inflight = { fd: got.fds[0], desc, bytes: new Uint8Array(sys.view(addr + BigInt(desc.mmapOffset), desc.mmapSize)) };
    }
    await expectAck('SET_INFLIGHT_FD', fe.request(Req.SET_INFLIGHT_FD, inflightDescPayload(inflight.desc), [inflight.fd]));
  }
  await expectAck('SET_FEATURES', fe.request(Req.SET_FEATURES, u64(want & offered!)));
  const boot = { gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 };
  if (opts.memorySlots) await expectAck('ADD_MEM_REG', fe.request(Req.ADD_MEM_REG, memRegionPayload(boot), [ram.fd]));
  else await expectAck('SET_MEM_TABLE', fe.request(Req.SET_MEM_TABLE, memTablePayload([boot]), [ram.fd]));
  for (const [index, q] of vrings.entries()) {
    await expectAck('SET_VRING_NUM', fe.request(Req.SET_VRING_NUM, u32pair(index, size)));
    await expectAck('SET_VRING_BASE', fe.request(Req.SET_VRING_BASE, u32pair(index, base(index))));
    const l = q.layout();
    await expectAck('SET_VRING_ADDR', fe.request(Req.SET_VRING_ADDR, vringAddrPayload(index, l.descAddr, l.usedAddr, l.availAddr)));
    await expectAck('SET_VRING_CALL', fe.request(Req.SET_VRING_CALL, u64(index), [callFds[index]]));
    await expectAck('SET_VRING_KICK', fe.request(Req.SET_VRING_KICK, u64(index), [kickFds[index]]));
  }
  for (const index of vrings.keys()) await expectAck('SET_VRING_ENABLE', fe.request(Req.SET_VRING_ENABLE, u32pair(index, 1)));
  const pairs = Array.from({ length: vrings.length / 2 }, (_, n): QueuePair<Q> => ({ rx: vrings[2 * n], tx: vrings[2 * n + 1], kick: () => sys.eventfdSignal(kickFds[2 * n + 1]) }));
  return {
    frontend: fe,
    ram,
    rx: pairs[0].rx,
    tx: pairs[0].tx,
    pairs,
    vrings,
    callFds,
    kickFds,
    inflight,
    kick: pairs[0].kick,
    close() {
      fe.close();
      ram.close();
      sys.closeAll([...callFds, ...kickFds, ...(inflight ? [inflight.fd] : [])]);
    },
  };
}

/**
 * Whether a REPLY_ACK answer says the request failed: an answer, and not 0. Null (the
 * backend hung up without one) is no refusal by answer: the connection should have stayed.
 */
export function failureAck(ack: bigint | null): boolean {
  return ack !== null && ack !== 0n;
}
