// A guest's view of virtio: shared "guest RAM" in a memfd and split virtqueues driven from
// the driver side (packed ones: packed-driver.ts), as a Linux virtio-net driver would. One
// test frontend for the unit tests, the protocol tests and the benchmarks; it writes descriptors any way a test asks,
// including the ways a broken or hostile guest would.
import * as sys from '../../src/sys/libc.ts';
import { mapRegionWindows, type MemoryRegion } from '../../src/virtio/guest-memory.ts';
import { releaseSharedMapping, type SharedMapping } from '../../src/sys/shared-mapping.ts';
import type { QueueLayout } from '../../src/virtio/split-queue.ts';
import { NET_HDR_LEN, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';

/** Guest RAM: a memfd mapped here, with made-up guest-physical and frontend addresses. */
export class GuestRam {
  readonly fd: number;
  readonly size: number;
  readonly hostAddr: bigint;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** guest physical address of byte 0 (not 0, so that address 0 is outside memory) */
  readonly gpaBase: number;
  /** the frontend's virtual address of byte 0 */
  readonly uvaBase = 0x7f0000000000;
  private next = 0;
  /** the device's side: this RAM mapped as a data plane maps it, once asked for */
  private deviceView: (MemoryRegion & { windows: SharedMapping[] }) | null = null;

  /**
   * `sealing: false`: a memfd no one can seal, as DPDK's virtio-user makes (it can shrink).
   * `gpaBase`: where it lies in the guest's physical memory (a guest with more than 3 GiB
   * has RAM past 4 GiB).
   */
  constructor(size = 4 << 20, opts: { sealing?: boolean; gpaBase?: number } = {}) {
    this.size = size;
    this.gpaBase = opts.gpaBase ?? 0x100000;
    this.fd = sys.memfdCreate('test-guest-ram', { sealing: opts.sealing });
    sys.ftruncate(this.fd, size);
    this.hostAddr = sys.mmapShared(this.fd, size);
    this.bytes = new Uint8Array(sys.view(this.hostAddr, size));
    this.dv = new DataView(this.bytes.buffer);
  }

  /** Bump allocation of guest RAM; returns the byte offset. */
  alloc(len: number, align = 64): number {
    const off = Math.ceil(this.next / align) * align;
    if (off + len > this.size) throw new RangeError(`guest RAM full (${len} bytes asked)`);
    this.next = off + len;
    return off;
  }

  gpa(off: number): number {
    return this.gpaBase + off;
  }

  /** The RAM as a PMD gets it: mapped again, as the data-plane process maps a region (mapRegionWindows). */
  region(): MemoryRegion {
    if (this.deviceView === null) {
      const windows = mapRegionWindows(this.fd, 0, this.size, sys.fstatBlockSize(this.fd));
      this.deviceView = { guestPhysAddr: this.gpaBase, userAddr: this.uvaBase, size: this.size, windows };
    }
    return this.deviceView;
  }

  close(): void {
    this.deviceView?.windows.forEach(releaseSharedMapping);
    this.deviceView = null;
    sys.munmap(this.hostAddr, this.size);
    sys.close(this.fd);
  }
}

export interface Desc {
  addr: number;
  len: number;
  flags: number;
  next: number;
}

export interface UsedElem {
  id: number;
  len: number;
}

/** One split virtqueue, driver side. */
export class DriverQueue {
  readonly ram: GuestRam;
  readonly size: number;
  readonly descOff: number;
  readonly availOff: number;
  readonly usedOff: number;
  availIdx: number;
  lastUsedIdx: number;
  private nextDesc = 0;
  private readonly eventIdx: boolean;

  constructor(ram: GuestRam, size: number, opts: { eventIdx?: boolean; indirect?: boolean; startIdx?: number } = {}) {
    this.ram = ram;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.descOff = ram.alloc(16 * size, 16);
    this.availOff = ram.alloc(6 + 2 * size, 2);
    this.usedOff = ram.alloc(6 + 8 * size, 4);
    this.availIdx = opts.startIdx ?? 0;
    this.lastUsedIdx = this.availIdx;
    ram.dv.setUint16(this.availOff + 2, this.availIdx, true);
    ram.dv.setUint16(this.usedOff + 2, this.availIdx, true);
  }

  layout(over: Partial<QueueLayout> = {}): QueueLayout {
    return {
      size: this.size,
      descAddr: this.ram.uvaBase + this.descOff,
      availAddr: this.ram.uvaBase + this.availOff,
      usedAddr: this.ram.uvaBase + this.usedOff,
      lastAvailIdx: this.availIdx,
      eventIdx: this.eventIdx,
      indirect: true,
      ...over,
    };
  }

  writeDesc(index: number, d: Desc): void {
    const o = this.descOff + 16 * index;
    this.ram.dv.setUint32(o, d.addr % 4294967296, true);
    this.ram.dv.setUint32(o + 4, Math.floor(d.addr / 4294967296), true);
    this.ram.dv.setUint32(o + 8, d.len, true);
    this.ram.dv.setUint16(o + 12, d.flags, true);
    this.ram.dv.setUint16(o + 14, d.next, true);
  }

  /** Writes a chain into consecutive descriptor slots; returns its head. */
  addChain(buffers: { addr: number; len: number; write?: boolean }[]): number {
    const head = this.nextDesc;
    buffers.forEach((b, i) => {
      const index = (head + i) % this.size;
      const last = i === buffers.length - 1;
      this.writeDesc(index, {
        addr: b.addr,
        len: b.len,
        flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next: (index + 1) % this.size,
      });
    });
    this.nextDesc = (head + buffers.length) % this.size;
    return head;
  }

  /** Writes an indirect table in guest RAM and one descriptor pointing at it. */
  addIndirectChain(buffers: { addr: number; len: number; write?: boolean }[]): number {
    const table = this.ram.alloc(16 * buffers.length, 16);
    buffers.forEach((b, i) => {
      const o = table + 16 * i;
      const last = i === buffers.length - 1;
      this.ram.dv.setUint32(o, b.addr % 4294967296, true);
      this.ram.dv.setUint32(o + 4, Math.floor(b.addr / 4294967296), true);
      this.ram.dv.setUint32(o + 8, b.len, true);
      this.ram.dv.setUint16(o + 12, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), true);
      this.ram.dv.setUint16(o + 14, last ? 0 : i + 1, true);
    });
    const head = this.nextDesc;
    this.writeDesc(head, { addr: this.ram.gpa(table), len: 16 * buffers.length, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    this.nextDesc = (head + 1) % this.size;
    return head;
  }

  /**
   * An indirect table of `entries` zero-length descriptors chained one to the next, the
   * last pointing at `last` if given (a hostile guest: every entry costs the device a read
   * and carries no byte). Returns the head of the one descriptor that points at it.
   */
  addZeroLengthIndirectChain(entries: number, last?: { addr: number; len: number; write?: boolean }): number {
    const table = this.ram.alloc(16 * entries, 16);
    const write = last?.write ? VIRTQ_DESC_F_WRITE : 0;
    this.ram.bytes.fill(0, table, table + 16 * entries);
    for (let i = 0; i < entries; i++) {
      const o = table + 16 * i;
      const isLast = i === entries - 1;
      if (isLast && last) {
        this.ram.dv.setUint32(o, last.addr % 4294967296, true);
        this.ram.dv.setUint32(o + 4, Math.floor(last.addr / 4294967296), true);
        this.ram.dv.setUint32(o + 8, last.len, true);
      }
      this.ram.dv.setUint16(o + 12, write | (isLast ? 0 : VIRTQ_DESC_F_NEXT), true);
      this.ram.dv.setUint16(o + 14, isLast ? 0 : i + 1, true);
    }
    const head = this.nextDesc;
    this.writeDesc(head, { addr: this.ram.gpa(table), len: 16 * entries, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    this.nextDesc = (head + 1) % this.size;
    return head;
  }

  /**
   * `count` chains that all point at one table like addZeroLengthIndirectChain's (a guest
   * may share a table between chains: each costs the device the whole walk). Returns the
   * heads.
   */
  addZeroLengthIndirectChains(count: number, entries: number, last?: { addr: number; len: number; write?: boolean }): number[] {
    const first = this.addZeroLengthIndirectChain(entries, last);
    const o = this.descOff + 16 * first;
    const pointer = { addr: this.ram.dv.getUint32(o, true) + this.ram.dv.getUint32(o + 4, true) * 4294967296, len: 16 * entries, flags: VIRTQ_DESC_F_INDIRECT, next: 0 };
    const heads = [first];
    for (let i = 1; i < count; i++) {
      heads.push(this.nextDesc);
      this.writeDesc(this.nextDesc, pointer);
      this.nextDesc = (this.nextDesc + 1) % this.size;
    }
    return heads;
  }

  /** Puts heads in the available ring and publishes the new index. */
  makeAvailable(...heads: number[]): void {
    for (const head of heads) {
      this.ram.dv.setUint16(this.availOff + 4 + 2 * (this.availIdx % this.size), head, true);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.ram.dv.setUint16(this.availOff + 2, this.availIdx, true);
  }

  /** Sets avail->idx to any value (a broken driver). */
  setAvailIdx(value: number): void {
    this.ram.dv.setUint16(this.availOff + 2, value, true);
  }

  /** used_event (EVENT_IDX) or avail->flags NO_INTERRUPT. */
  setUsedEvent(value: number): void {
    this.ram.dv.setUint16(this.availOff + 4 + 2 * this.size, value, true);
  }

  setAvailFlags(flags: number): void {
    this.ram.dv.setUint16(this.availOff, flags, true);
  }

  usedIdx(): number {
    return this.ram.dv.getUint16(this.usedOff + 2, true);
  }

  /** The used elements the device returned since the last call. */
  takeUsed(): UsedElem[] {
    const out: UsedElem[] = [];
    const idx = this.usedIdx();
    while (this.lastUsedIdx !== idx) {
      const o = this.usedOff + 4 + 8 * (this.lastUsedIdx % this.size);
      out.push({ id: this.ram.dv.getUint32(o, true), len: this.ram.dv.getUint32(o + 4, true) });
      this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    }
    return out;
  }
}

/** What the helpers below need of a driver's queue, split (DriverQueue) or packed (PackedDriverQueue). */
export interface DriverRing {
  readonly ram: GuestRam;
  addChain(buffers: { addr: number; len: number; write?: boolean }[]): number;
  addIndirectChain(buffers: { addr: number; len: number; write?: boolean }[]): number;
  makeAvailable(...heads: number[]): void;
}

/** A guest sending frames: virtio-net header (zero, or `header`) + frame, in one or several segments. */
export function sendFrame(q: DriverRing, frame: Uint8Array, opts: { split?: number[]; indirect?: boolean; header?: Uint8Array } = {}): number {
  const ram = q.ram;
  const total = NET_HDR_LEN + frame.length;
  const off = ram.alloc(total);
  ram.bytes.fill(0, off, off + NET_HDR_LEN);
  if (opts.header) ram.bytes.set(opts.header.subarray(0, NET_HDR_LEN), off);
  ram.bytes.set(frame, off + NET_HDR_LEN);
  const sizes = opts.split ?? [total];
  const buffers: { addr: number; len: number }[] = [];
  let at = 0;
  for (const s of sizes) {
    buffers.push({ addr: ram.gpa(off + at), len: s });
    at += s;
  }
  if (at !== total) throw new Error(`split ${sizes} does not add up to ${total}`);
  const head = opts.indirect ? q.addIndirectChain(buffers) : q.addChain(buffers);
  q.makeAvailable(head);
  return head;
}

/** A guest posting an RX buffer of len bytes (one descriptor, device-writable). */
export function postRxBuffer(q: DriverRing, len: number): { head: number; off: number } {
  const off = q.ram.alloc(len);
  const head = q.addChain([{ addr: q.ram.gpa(off), len, write: true }]);
  q.makeAvailable(head);
  return { head, off };
}

/**
 * A guest posting one RX chain of device-writable descriptors of the given lengths (a
 * length of 0 makes a zero-length descriptor). Returns the head and each segment's offset.
 */
export function postRxChain(q: DriverRing, lens: number[]): { head: number; offs: number[] } {
  const offs = lens.map((len) => q.ram.alloc(Math.max(len, 1), 4));
  const head = q.addChain(lens.map((len, i) => ({ addr: q.ram.gpa(offs[i]), len, write: true })));
  q.makeAvailable(head);
  return { head, offs };
}

/** A test frame: Ethernet header with the given MACs, then `payload` bytes of a pattern. */
export function ethernetFrame(dst: string, src: string, payloadLen: number, seed = 0): Uint8Array {
  const frame = new Uint8Array(14 + payloadLen);
  frame.set(dst.split(':').map((h) => parseInt(h, 16)), 0);
  frame.set(src.split(':').map((h) => parseInt(h, 16)), 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  for (let i = 0; i < payloadLen; i++) frame[14 + i] = (i * 7 + seed) & 0xff;
  return frame;
}
