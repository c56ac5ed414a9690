// The data path alone on one thread, in bursts of 32 64-byte frames: a guest's TX queue
// into packet buffers, switched by the MAC table, into another guest's RX queue with
// mergeable buffers, on split rings and on packed ones. No peers, no scheduling noise: ns
// per packet of vrouter's own code (and of the driver's few writes to post buffers).
// Compiled with the data plane's V8 flags (dataplane-jit.ts), as the data plane is.
import './dataplane-jit.ts';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { PackedQueue } from '../../src/virtio/packed-queue.ts';
import type { Virtqueue } from '../../src/virtio/virtqueue.ts';
import { PackedDriverQueue } from '../../test/support/packed-driver.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { DeferredPayloads } from '../../src/dataplane/deferred-payloads.ts';
import { deliverBurst, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, QUEUES_BASE } from '../../src/dataplane/counters.ts';
import { MacTable, macHigh, macLow, nowSeconds } from '../../plugins/bridge/mac-table.ts';
import { DriverQueue, ethernetFrame, GuestRam } from '../../test/support/virtio-driver.ts';
import { NET_HDR_LEN, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';

const BURST = 32;
const SIZE = 256;

/** Garbage collections seen while the steady-state loop ran: none means no allocation per packet. */
export const heapReport: { name: string; gcs: number; heapGrowthKiB: number }[] = [];

/** A queue's owner as the PMD has it: a port with MTU 9000, no offloads negotiated. */
function ownerOf(queue: Virtqueue | string): QueueOwner {
  if (typeof queue === 'string') throw new Error(queue);
  return { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: 0 };
}

/** One burst from the guest's TX queue through the MAC table into the other's RX queue, as the PMD moves it: the frames delivered. */
function switchBurst(txOwner: QueueOwner, rxOwner: QueueOwner, pool: PacketPool, table: MacTable, handles: Uint32Array, deferred: DeferredPayloads | null): number {
  const n = receiveBurst(txOwner, pool, handles, 0, BURST, deferred);
  const now = nowSeconds();
  for (let i = 0; i < n; i++) {
    const off = pool.frameOffset(handles[i]);
    table.learn(macHigh(pool.data, off + 6), macLow(pool.data, off + 6), 0, now);
    table.lookup(macHigh(pool.data, off), macLow(pool.data, off), now);
  }
  const delivered = deliverBurst(rxOwner, true, pool, handles, n, deferred);
  for (let i = 0; i < n; i++) pool.free(handles[i]);
  if (deferred !== null && deferred.count > 0) deferred.release();
  return delivered;
}

/** Frames copied twice (guest to buffer to guest), or once where the PMD may (headers-only pipeline). */
type Copies = 'twice' | 'once';

async function run(frameLen: number, seconds: number, layout: 'split' | 'packed' = 'split', copies: Copies = 'once'): Promise<{ opsPerSec: number }> {
  if (layout === 'packed') return runPacked(frameLen, seconds, copies);
  const ram = new GuestRam(8 << 20);
  const tx = new DriverQueue(ram, SIZE, { eventIdx: true });
  const rx = new DriverQueue(ram, SIZE, { eventIdx: true });
  const mem = new GuestMemory([ram.region()]);
  const owner = (q: DriverQueue) => ownerOf(SplitQueue.create(mem, q.layout()));
  const txOwner = owner(tx);
  const rxOwner = owner(rx);
  // Every descriptor slot gets a fixed buffer once, as a guest driver recycles them.
  const frame = ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', frameLen - 14);
  // A receive buffer holds a frame (DPDK's mbufs hold 2 KiB, Linux posts at least 1518 bytes).
  const rxLen = Math.max(2048, NET_HDR_LEN + frameLen);
  for (let i = 0; i < SIZE; i++) {
    const t = ram.alloc(Math.max(2048, NET_HDR_LEN + frameLen));
    ram.bytes.set(frame, t + NET_HDR_LEN);
    tx.writeDesc(i, { addr: ram.gpa(t), len: NET_HDR_LEN + frameLen, flags: 0, next: 0 });
    rx.writeDesc(i, { addr: ram.gpa(ram.alloc(rxLen)), len: rxLen, flags: 2, next: 0 });
  }
  const pool = PacketPool.standalone(1024);
  const table = new MacTable();
  const handles = new Uint32Array(BURST);
  const deferred = copies === 'once' ? new DeferredPayloads(1024, BURST) : null;
  /** One burst through both directions; returns the frames moved. */
  const burst = (): number => {
    for (let i = 0; i < BURST; i++) {
      const slot = (tx.availIdx + i) % SIZE;
      ram.dv.setUint16(tx.availOff + 4 + 2 * slot, slot, true);
      ram.dv.setUint16(rx.availOff + 4 + 2 * ((rx.availIdx + i) % SIZE), (rx.availIdx + i) % SIZE, true);
    }
    tx.availIdx = (tx.availIdx + BURST) & 0xffff;
    rx.availIdx = (rx.availIdx + BURST) & 0xffff;
    tx.setAvailIdx(tx.availIdx);
    rx.setAvailIdx(rx.availIdx);
    return switchBurst(txOwner, rxOwner, pool, table, handles, deferred);
  };
  return measure(burst, seconds, `${frameLen} B, copied ${copies}`, ram);
}

/**
 * The same on packed rings: each burst the driver posts 32 descriptors on each ring (the
 * device overwrote their length and id with the used ones), the first one's flags last.
 */
async function runPacked(frameLen: number, seconds: number, copies: Copies): Promise<{ opsPerSec: number }> {
  const ram = new GuestRam(8 << 20);
  const tx = new PackedDriverQueue(ram, SIZE, { eventIdx: true });
  const rx = new PackedDriverQueue(ram, SIZE, { eventIdx: true });
  const mem = new GuestMemory([ram.region()]);
  const owner = (q: PackedDriverQueue) => ownerOf(PackedQueue.create(mem, q.layout()));
  const txOwner = owner(tx);
  const rxOwner = owner(rx);
  const frame = ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', frameLen - 14);
  for (let i = 0; i < SIZE; i++) {
    const t = ram.alloc(Math.max(2048, NET_HDR_LEN + frameLen));
    ram.bytes.set(frame, t + NET_HDR_LEN);
    tx.writeDesc(i, { addr: ram.gpa(t), len: 0, id: i, flags: 0 });
    rx.writeDesc(i, { addr: ram.gpa(ram.alloc(2048)), len: 0, id: i, flags: 0 });
  }
  const pool = PacketPool.standalone(1024);
  const table = new MacTable();
  const handles = new Uint32Array(BURST);
  const deferred = copies === 'once' ? new DeferredPayloads(1024, BURST) : null;
  const u32 = new Uint32Array(ram.bytes.buffer);
  const u16 = new Uint16Array(ram.bytes.buffer);
  let position = 0;
  let wrap = 1;
  /** posts BURST descriptors from `position` on the ring at descOff, flags of the first last */
  const post = (descOff: number, len: number, write: number) => {
    const marks = wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
    for (let i = BURST - 1; i >= 0; i--) {
      const d = (descOff >> 2) + 4 * (position + i);
      u32[d + 2] = len;
      u16[2 * d + 6] = position + i;
      u16[2 * d + 7] = marks | write;
    }
  };
  const burst = (): number => {
    post(tx.descOff, NET_HDR_LEN + frameLen, 0);
    post(rx.descOff, 2048, VIRTQ_DESC_F_WRITE);
    position += BURST;
    if (position === SIZE) {
      position = 0;
      wrap ^= 1;
    }
    return switchBurst(txOwner, rxOwner, pool, table, handles, deferred);
  };
  return measure(burst, seconds, `${frameLen} B packed, copied ${copies}`, ram);
}

/** Runs bursts for `seconds` and returns the rate; the heap is watched meanwhile (heapReport). */
async function measure(burst: () => number, seconds: number, name: string, ram: GuestRam): Promise<{ opsPerSec: number }> {
  // A first pass lets V8 optimize and settle before the heap is watched.
  for (let i = 0; i < 20000; i++) burst();
  let gcs = 0;
  const observer = new PerformanceObserver((list) => (gcs += list.getEntries().length));
  const heapBefore = getHeapStatistics().used_heap_size;
  observer.observe({ entryTypes: ['gc'] });
  let packets = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let round = 0; round < 1000; round++) packets += burst();
  }
  const elapsed = (performance.now() - start) / 1000;
  const heapGrowthKiB = (getHeapStatistics().used_heap_size - heapBefore) / 1024;
  await new Promise((r) => setTimeout(r, 10)); // gc entries are delivered asynchronously
  observer.disconnect();
  heapReport.push({ name, gcs, heapGrowthKiB });
  ram.close();
  return { opsPerSec: packets / elapsed };
}

export const micro = [
  { name: 'data path, one thread: guest TX -> MAC table -> guest RX, 64 B (packets)', run: () => run(64, 2) },
  { name: 'data path, one thread: guest TX -> MAC table -> guest RX, 1518 B (packets)', run: () => run(1518, 2) },
  { name: 'data path, one thread: guest TX -> MAC table -> guest RX, 1518 B, copied twice (packets)', run: () => run(1518, 2, 'split', 'twice') },
  { name: 'data path, one thread: guest TX -> MAC table -> guest RX, 9000 B (packets)', run: () => run(9000, 2) },
  { name: 'data path, one thread: guest TX -> MAC table -> guest RX, 9000 B, copied twice (packets)', run: () => run(9000, 2, 'split', 'twice') },
  { name: 'data path, one thread, packed rings: guest TX -> MAC table -> guest RX, 64 B (packets)', run: () => run(64, 2, 'packed') },
  { name: 'data path, one thread, packed rings: guest TX -> MAC table -> guest RX, 1518 B (packets)', run: () => run(1518, 2, 'packed') },
];

if (import.meta.main) {
  for (const m of micro) {
    const { opsPerSec } = await m.run();
    console.log(`${m.name}: ${(opsPerSec / 1e6).toFixed(2)} Mpps, ${(1e9 / opsPerSec).toFixed(0)} ns/packet`);
  }
  for (const h of heapReport) console.log(`steady state, ${h.name}: ${h.gcs} garbage collections, heap ${h.heapGrowthKiB.toFixed(0)} KiB bigger`);
}
