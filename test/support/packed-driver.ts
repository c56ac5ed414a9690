// A packed virtqueue driven from the driver side (VIRTIO v1.2, 2.8), as Linux's and DPDK's
// drivers do it: descriptors written at the driver's position with the AVAIL/USED marks of
// its wrap counter, a batch's first descriptor's flags written last, buffer ids of the
// driver's choosing, used descriptors read back at its own used position. Like DriverQueue
// (virtio-driver.ts) it writes whatever a test asks, the ways a hostile guest would too.
import type { QueueLayout } from '../../src/virtio/split-queue.ts';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import type { GuestRam, UsedElem } from './virtio-driver.ts';

export interface PackedDesc {
  addr: number;
  len: number;
  id: number;
  flags: number;
}

type Buffer = { addr: number; len: number; write?: boolean };

export class PackedDriverQueue {
  readonly ram: GuestRam;
  readonly size: number;
  readonly descOff: number;
  readonly driverEventOff: number;
  readonly deviceEventOff: number;
  /** where the driver writes its next descriptor, and its wrap counter */
  nextAvail: number;
  availWrap: number;
  /** where the driver expects the device's next used descriptor */
  nextUsed: number;
  usedWrap: number;
  /** ring descriptors each outstanding buffer id took: the driver skips as many per used one (2.8.6) */
  private readonly descsOf = new Map<number, number>();
  /** chains written but not yet made available: their first descriptor's slot and flags */
  private readonly unpublished: { at: number; flags: number }[] = [];
  private readonly freeIds: number[];
  private readonly eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER negotiated: a used descriptor may stand for every buffer up to its id (2.8.9) */
  private readonly inOrder: boolean;
  /** the buffer ids in the order their chains were written: the order an in-order device uses them */
  private readonly posted: number[] = [];

  /** `start`: the position (index | wrap << 15) both sides begin at */
  constructor(ram: GuestRam, size: number, opts: { eventIdx?: boolean; start?: number; inOrder?: boolean } = {}) {
    this.ram = ram;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.inOrder = opts.inOrder ?? false;
    this.descOff = ram.alloc(16 * size, 16);
    this.driverEventOff = ram.alloc(4, 4);
    this.deviceEventOff = ram.alloc(4, 4);
    const start = opts.start ?? 0x8000;
    this.nextAvail = this.nextUsed = start & 0x7fff;
    this.availWrap = this.usedWrap = start >> 15;
    this.freeIds = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  /** The driver's position as vhost-user's vring base gives it: index | wrap << 15. */
  get availIdx(): number {
    return this.nextAvail | (this.availWrap << 15);
  }

  layout(over: Partial<QueueLayout> = {}): QueueLayout {
    return {
      size: this.size,
      descAddr: this.ram.uvaBase + this.descOff,
      availAddr: this.ram.uvaBase + this.driverEventOff,
      usedAddr: this.ram.uvaBase + this.deviceEventOff,
      lastAvailIdx: this.availIdx,
      eventIdx: this.eventIdx,
      indirect: true,
      packed: true,
      ...over,
    };
  }

  writeDesc(index: number, d: PackedDesc): void {
    const o = this.descOff + 16 * index;
    this.ram.dv.setUint32(o, d.addr % 4294967296, true);
    this.ram.dv.setUint32(o + 4, Math.floor(d.addr / 4294967296), true);
    this.ram.dv.setUint32(o + 8, d.len, true);
    this.ram.dv.setUint16(o + 12, d.id, true);
    this.ram.dv.setUint16(o + 14, d.flags, true);
  }

  readDesc(index: number): PackedDesc {
    const o = this.descOff + 16 * index;
    const dv = this.ram.dv;
    return { addr: dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 4294967296, len: dv.getUint32(o + 8, true), id: dv.getUint16(o + 12, true), flags: dv.getUint16(o + 14, true) };
  }

  /** AVAIL/USED marks of an available descriptor in the driver's current lap (2.8.1). */
  availMarks(wrap = this.availWrap): number {
    return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  private takeId(id?: number): number {
    if (id === undefined) {
      const free = this.freeIds.pop();
      if (free === undefined) throw new Error('no free buffer id: the ring is full');
      return free;
    }
    const i = this.freeIds.indexOf(id);
    if (i >= 0) this.freeIds.splice(i, 1);
    return id;
  }

  /** Writes raw descriptors at the driver's position (the first one's flags held back); returns the first slot. */
  private place(descs: PackedDesc[]): number {
    const first = this.nextAvail;
    this.posted.push(descs[0].id);
    descs.forEach((d, i) => {
      if (i === 0) this.writeDesc(this.nextAvail, { ...d, flags: this.readDesc(this.nextAvail).flags });
      else this.writeDesc(this.nextAvail, d);
      if (i === 0) this.unpublished.push({ at: this.nextAvail, flags: d.flags });
      if (++this.nextAvail === this.size) {
        this.nextAvail = 0;
        this.availWrap ^= 1;
      }
    });
    return first;
  }

  /**
   * Writes a chain of buffers in consecutive slots (NEXT on all but the last, the id on
   * every one as Linux writes it), not yet available (see makeAvailable). Returns its id.
   */
  addChain(buffers: Buffer[], opts: { id?: number } = {}): number {
    const id = this.takeId(opts.id);
    const descs = buffers.map((b, i) => {
      // the marks of the lap each slot falls in
      const wrap = this.nextAvail + i < this.size ? this.availWrap : this.availWrap ^ 1;
      const flags = (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i < buffers.length - 1 ? VIRTQ_DESC_F_NEXT : 0) | this.availMarks(wrap);
      return { addr: b.addr, len: b.len, id, flags };
    });
    this.place(descs);
    this.descsOf.set(id, descs.length);
    return id;
  }

  /** A chain of raw descriptors (flags as given, plus the lap's AVAIL/USED marks); returns its id. */
  addRawChain(descs: { addr: number; len: number; flags: number }[], id?: number): number {
    const taken = this.takeId(id);
    this.place(descs.map((d, i) => ({ ...d, id: taken, flags: d.flags | this.availMarks(this.nextAvail + i < this.size ? this.availWrap : this.availWrap ^ 1) })));
    this.descsOf.set(taken, descs.length);
    return taken;
  }

  /** Writes an indirect table (2.8.19: packed layout, only WRITE in its flags) and one descriptor pointing at it. */
  addIndirectChain(buffers: Buffer[], opts: { id?: number; tableFlags?: number } = {}): number {
    const table = this.ram.alloc(16 * buffers.length, 16);
    buffers.forEach((b, i) => {
      const o = table + 16 * i;
      this.ram.dv.setUint32(o, b.addr % 4294967296, true);
      this.ram.dv.setUint32(o + 4, Math.floor(b.addr / 4294967296), true);
      this.ram.dv.setUint32(o + 8, b.len, true);
      this.ram.dv.setUint16(o + 12, 0, true);
      this.ram.dv.setUint16(o + 14, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (opts.tableFlags ?? 0), true);
    });
    return this.addTablePointer(this.ram.gpa(table), 16 * buffers.length, opts.id);
  }

  /** One descriptor pointing at an indirect table of `len` bytes at guest address `addr`. */
  addTablePointer(addr: number, len: number, id?: number, extraFlags = 0): number {
    const taken = this.takeId(id);
    this.place([{ addr, len, id: taken, flags: VIRTQ_DESC_F_INDIRECT | extraFlags | this.availMarks() }]);
    this.descsOf.set(taken, 1);
    return taken;
  }

  /**
   * Makes every chain written since the last call available at once: the flags of all but
   * the first, then the first's (2.8.21.1), so that the device sees the batch whole.
   */
  makeAvailable(..._ids: number[]): void {
    const batch = this.unpublished.splice(0);
    for (let i = batch.length - 1; i >= 0; i--) this.ram.dv.setUint16(this.descOff + 16 * batch[i].at + 14, batch[i].flags, true);
  }

  /** The used buffers the device returned since the last call (2.8.7). */
  takeUsed(): (UsedElem & { flags: number })[] {
    const out: (UsedElem & { flags: number })[] = [];
    for (let seen = 0; seen < this.size; seen++) {
      const d = this.readDesc(this.nextUsed);
      const avail = (d.flags >> 7) & 1;
      const used = d.flags >> 15;
      if (avail !== this.usedWrap || used !== this.usedWrap) break;
      // In order, the buffers before it in the order written went back with it (2.8.9).
      const next = () => (this.inOrder && this.posted.length > 0 ? this.posted[0] : d.id);
      for (let id = next(); ; id = next()) {
        out.push({ id, len: id === d.id ? d.len : 0, flags: d.flags });
        const at = this.posted.indexOf(id);
        if (at >= 0) this.posted.splice(at, 1);
        this.release(id);
        if (id === d.id) break;
      }
    }
    return out;
  }

  /** A used buffer's id free again, and the driver past its descriptors. */
  private release(id: number): void {
    const descs = this.descsOf.get(id) ?? 1;
    this.descsOf.delete(id);
    this.freeIds.push(id);
    this.nextUsed += descs;
    if (this.nextUsed >= this.size) {
      this.nextUsed -= this.size;
      this.usedWrap ^= 1;
    }
  }

  /** The driver's event suppression area (2.8.10): when it wants interrupts. */
  setDriverEvent(flags: number, offWrap = 0): void {
    this.ram.dv.setUint16(this.driverEventOff, offWrap, true);
    this.ram.dv.setUint16(this.driverEventOff + 2, flags, true);
  }

  /** The device's event suppression flags: whether it wants kicks. */
  deviceEventFlags(): number {
    return this.ram.dv.getUint16(this.deviceEventOff + 2, true);
  }
}
