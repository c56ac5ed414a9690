// The packed-ring data path against the driver-side frontend (test/support/packed-driver.ts):
// frames both ways, wrap counters over many laps with buffer ids reused, chained and
// indirect descriptors, mergeable RX, event suppression both ways, hostile rings (chains
// that never end, out-of-bounds buffers, oversized or nested indirect tables), resuming
// where a previous owner stopped, IN_ORDER with a split ring, and RX lines claimed ahead.
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { FRESH_RING, PackedQueue } from '../../src/virtio/packed-queue.ts';
import { CHAIN_BAD, CHAIN_TOO_LONG, MAX_CHAIN_DESCRIPTORS } from '../../src/virtio/virtqueue.ts';
import { NET_HDR_LEN, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { gatherCalls, settleCalls } from '../../src/dataplane/notify.ts';
import { deliverBurst, RECEIVE_DESCRIPTOR_BUDGET, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, DROP, DROPS_BASE, QUEUES_BASE, RX_PACKETS, TX_PACKETS } from '../../src/dataplane/counters.ts';
import { ethernetFrame, GuestRam, postRxBuffer, postRxChain, sendFrame } from '../support/virtio-driver.ts';
import { PackedDriverQueue } from '../support/packed-driver.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

function setup(t: Test, opts: { size?: number; start?: number; eventIdx?: boolean; maxFrame?: number } = {}) {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const driverQ = new PackedDriverQueue(ram, opts.size ?? 256, { start: opts.start, eventIdx: opts.eventIdx });
  const mem = new GuestMemory([ram.region()]);
  const queue = PackedQueue.create(mem, driverQ.layout());
  if (typeof queue === 'string') throw new Error(queue);
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters, counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: opts.maxFrame ?? 1518, offloads: 0 };
  const pool = PacketPool.standalone(64);
  const handles = new Uint32Array(32);
  return { ram, mem, driverQ, owner, queue, counters, pool, handles };
}

const drop = (counters: Float64Array, reason: keyof typeof DROP) => counters[DROPS_BASE + DROP[reason]];

function frameOf(pool: PacketPool, handle: number): Uint8Array {
  const off = pool.frameOffset(handle);
  return pool.data.slice(off, off + pool.length[handle]);
}

function bufferWith(pool: PacketPool, frame: Uint8Array): number {
  const h = pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  return h;
}

t.test('guest TX: direct, chained and indirect frames arrive whole; ids come back in order', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t);
  const frames = [ethernetFrame(B, A, 50, 1), ethernetFrame(B, A, 1000, 2), ethernetFrame(B, A, 300, 3)];
  const ids = [
    sendFrame(driverQ, frames[0]),
    sendFrame(driverQ, frames[1], { split: [6, 6, 14, 1000] }),
    sendFrame(driverQ, frames[2], { split: [NET_HDR_LEN, 314], indirect: true }),
  ];
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 3, 'three frames taken');
  frames.forEach((f, i) => t.same(frameOf(pool, handles[i]), f, `frame ${i} copied byte for byte`));
  const used = driverQ.takeUsed();
  t.same(used.map((u) => u.id), ids, 'every buffer returned in order, by its id');
  t.same(used.map((u) => u.flags & VIRTQ_DESC_F_WRITE), [0, 0, 0], 'nothing written into TX buffers: no WRITE in the used flags');
  t.equal(driverQ.nextUsed, 1 + 4 + 1, 'the used descriptors skip each chain\'s length: 1 + 4 + 1 (indirect: one slot)');
  t.equal(counters[RX_PACKETS], 3);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'nothing more pending');
});

t.test('wrap counters: many laps of an odd-sized ring, chains straddling the end, ids reused', async (t) => {
  const size = 7; // packed rings need not be a power of 2
  const { driverQ, owner, queue, pool, handles } = setup(t, { size });
  let sent = 0;
  const seenIds = new Set<number>();
  for (let round = 0; round < 40; round++) {
    // one- and two-descriptor chains, so that chains cross the ring's end at every offset
    const batch = 1 + (round % 3);
    const ids: number[] = [];
    for (let i = 0; i < batch; i++) {
      const frame = ethernetFrame(B, A, 46, sent + i);
      ids.push(sendFrame(driverQ, frame, (sent + i) % 2 === 0 ? {} : { split: [NET_HDR_LEN, 60] }));
    }
    const n = receiveBurst(owner, pool, handles, 0, 32);
    t.equal(n, batch, `round ${round}: the batch taken`);
    for (let i = 0; i < n; i++) {
      t.equal(frameOf(pool, handles[i])[14], (sent + i) & 0xff, `frame ${sent + i} in order`);
      pool.free(handles[i]);
    }
    const used = driverQ.takeUsed();
    t.same(used.map((u) => u.id), ids, `round ${round}: the same ids back`);
    ids.forEach((id) => seenIds.add(id));
    t.equal(queue.lastAvailIdx, driverQ.availIdx, `round ${round}: device and driver agree on position and wrap`);
    t.equal(queue.usedIdx, queue.lastAvailIdx, 'used position equals the available one between bursts');
    sent += n;
  }
  t.ok(driverQ.usedWrap === driverQ.availWrap, 'the driver saw every used descriptor of the lap it is in');
  t.ok(sent * 1.5 > 6 * size, `${sent} frames went round the ring of ${size} several times`);
  t.ok(seenIds.size <= size, `ids reused: ${seenIds.size} distinct`);
});

t.test('a batch becomes visible at once: the first used descriptor\'s flags are written last', async (t) => {
  const { driverQ, owner, pool, handles } = setup(t, { size: 8 });
  const frames = [0, 1, 2].map((i) => ethernetFrame(B, A, 46, i));
  frames.forEach((f) => driverQ.addChain([{ addr: placeFrame(driverQ.ram, f), len: NET_HDR_LEN + f.length }]));
  // Written but not yet made available: the device must not take any.
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'nothing taken before the first flags are written');
  driverQ.makeAvailable();
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 3, 'the batch taken once published');
  const first = driverQ.readDesc(0);
  t.equal(first.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED, 'used marks of wrap 1 on the first');
  t.equal(driverQ.takeUsed().length, 3);
});

function placeFrame(ram: GuestRam, frame: Uint8Array): number {
  const off = ram.alloc(NET_HDR_LEN + frame.length);
  ram.bytes.fill(0, off, off + NET_HDR_LEN);
  ram.bytes.set(frame, off + NET_HDR_LEN);
  return ram.gpa(off);
}

t.test('guest RX, mergeable: a frame over several buffers, chained buffers skipped by their length', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { size: 8, maxFrame: 9018 });
  // Past the ring's end, so that the frame's buffers straddle a wrap.
  for (let lap = 0; lap < 5; lap++) {
    const rx = [postRxBuffer(driverQ, 1024), postRxChain(driverQ, [512, 512]), postRxBuffer(driverQ, 1024)];
    const frame = ethernetFrame(A, B, 2500 - 14, lap);
    t.equal(deliverBurst(owner, true, pool, Uint32Array.of(bufferWith(pool, frame)), 1), 1, `lap ${lap}: delivered`);
    const used = driverQ.takeUsed();
    t.same(used.map((u) => u.id), [rx[0].head, rx[1].head, rx[2].head], 'three buffers used, in order');
    t.same(used.map((u) => u.len), [1024, 1024, NET_HDR_LEN + 2500 - 2048], 'lengths cover header and frame');
    t.ok(used.every((u) => (u.flags & VIRTQ_DESC_F_WRITE) !== 0), 'WRITE set: the device wrote them');
    const first = (rx[0] as { off: number }).off;
    t.equal(ram.dv.getUint16(first + 10, true), 3, 'num_buffers = 3');
    const second = rx[1] as { offs: number[] };
    const third = (rx[2] as { off: number }).off;
    const got = new Uint8Array(2500);
    got.set(ram.bytes.subarray(first + NET_HDR_LEN, first + 1024), 0);
    got.set(ram.bytes.subarray(second.offs[0], second.offs[0] + 512), 1024 - NET_HDR_LEN);
    got.set(ram.bytes.subarray(second.offs[1], second.offs[1] + 512), 1536 - NET_HDR_LEN);
    got.set(ram.bytes.subarray(third, third + 2500 - 2048 + NET_HDR_LEN), 2048 - NET_HDR_LEN);
    t.same(got, frame, 'the frame reassembles byte for byte');
  }
  t.equal(counters[TX_PACKETS], 5);
});

t.test('guest RX: a frame that does not fit is rolled back, and nothing of it is published', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { size: 8, maxFrame: 9018 });
  const posted = [postRxBuffer(driverQ, 1024), postRxBuffer(driverQ, 1024)];
  const before = posted.map((_, i) => driverQ.readDesc(i));
  const h = pool.alloc();
  pool.length[h] = 3000;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 0, '2 KiB posted, 3 KiB needed');
  t.equal(drop(counters, 'guest_ring_full'), 1);
  t.same([0, 1].map((i) => driverQ.readDesc(i)), before, 'the ring is untouched: ids, lengths and flags');
  postRxBuffer(driverQ, 1024);
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 1, 'delivered once the guest posts more');
  t.same(driverQ.takeUsed().map((u) => u.len), [1024, 1024, NET_HDR_LEN + 3000 - 2048]);
});

t.test('guest RX without mergeable buffers: too small stays, a fitting frame takes it, indirect RX', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const small = postRxBuffer(driverQ, 1000);
  const h = pool.alloc();
  pool.length[h] = 9014;
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(h), 1), 0);
  t.equal(drop(counters, 'guest_buffer_too_small'), 1);
  t.equal(driverQ.takeUsed().length, 0, 'the small buffer stays posted');
  const frame = ethernetFrame(A, B, 500 - 14, 5);
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(bufferWith(pool, frame)), 1), 1);
  t.same(driverQ.takeUsed().map(({ id, len }) => ({ id, len })), [{ id: small.head, len: NET_HDR_LEN + 500 }]);
  const off = ram.alloc(4 * 4096);
  const id = driverQ.addIndirectChain([0, 1, 2].map((i) => ({ addr: ram.gpa(off + 4096 * i), len: 4096, write: true })));
  driverQ.makeAvailable();
  const jumbo = ethernetFrame(A, B, 9000, 6);
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(bufferWith(pool, jumbo)), 1), 1, 'a jumbo frame into an indirect table of three buffers');
  t.same(driverQ.takeUsed().map(({ id, len }) => ({ id, len })), [{ id, len: NET_HDR_LEN + 9014 }]);
  t.same(ram.bytes.slice(off + NET_HDR_LEN, off + NET_HDR_LEN + 9014), jumbo);
});

t.test('event suppression: the driver\'s flags decide interrupts; ours ask for kicks only before sleeping', async (t) => {
  const { driverQ, owner, queue, pool, handles } = setup(t, { size: 8, eventIdx: true });
  const callFd = sys.eventfd();
  t.teardown(() => sys.close(callFd));
  owner.callFd = callFd;
  const burst = (n: number) => {
    for (let i = 0; i < n; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, i));
    const got = receiveBurst(owner, pool, handles, 0, 32);
    for (let i = 0; i < got; i++) pool.free(handles[i]);
    driverQ.takeUsed();
    return sys.eventfdDrain(callFd);
  };
  driverQ.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
  t.equal(burst(3), 0, 'DISABLE: no interrupt');
  driverQ.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
  t.equal(burst(3), 1, 'ENABLE: one interrupt for the burst');
  // The device is at 6 (wrap 1); DESC asks for the used descriptor at 1 of the next lap.
  driverQ.setDriverEvent(RING_EVENT_FLAGS_DESC, 1 | (0 << 15));
  t.equal(burst(1), 0, 'DESC at 1 of the next lap: 6 written, not yet');
  t.equal(burst(1), 0, 'DESC: 7 written, not yet');
  t.equal(burst(2), 1, 'DESC: 0 and 1 of the next lap written: one interrupt');
  t.equal(burst(2), 0, 'DESC: past it, none until the driver moves it');
  driverQ.setDriverEvent(RING_EVENT_FLAGS_DESC, 4 | (1 << 15));
  t.equal(burst(1), 0, 'DESC naming the lap just left: a wrap-1 offset while the device is in wrap 0, no interrupt');
  queue.suppressNotifications();
  t.equal(driverQ.deviceEventFlags(), RING_EVENT_FLAGS_DISABLE, 'polling: DISABLE, no kicks');
  queue.enableNotifications();
  t.equal(driverQ.deviceEventFlags(), RING_EVENT_FLAGS_ENABLE, 'before sleeping: ENABLE');
  t.equal(queue.pending(), 0, 'and nothing pending');
  sendFrame(driverQ, ethernetFrame(B, A, 46));
  t.ok(queue.pending() > 0, 'a buffer made available is seen');
});

t.test('event suppression: DESC without EVENT_IDX is taken as ENABLE', async (t) => {
  const { driverQ, owner, pool, handles } = setup(t, { size: 8, eventIdx: false });
  const callFd = sys.eventfd();
  t.teardown(() => sys.close(callFd));
  owner.callFd = callFd;
  driverQ.setDriverEvent(RING_EVENT_FLAGS_DESC, 5);
  sendFrame(driverQ, ethernetFrame(B, A, 46));
  receiveBurst(owner, pool, handles, 0, 32);
  t.equal(sys.eventfdDrain(callFd), 1);
});

t.test('a packed ring in a round: its used descriptors visible as its burst ends, its interrupt at the round\'s end', async (t) => {
  const { driverQ, owner, pool, handles } = setup(t, { size: 8, eventIdx: false });
  const callFd = sys.eventfd();
  t.teardown(() => sys.close(callFd));
  owner.callFd = callFd;
  driverQ.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
  gatherCalls();
  sendFrame(driverQ, ethernetFrame(B, A, 46));
  const n = receiveBurst(owner, pool, handles, 0, 32);
  t.equal(driverQ.takeUsed().length, 1, 'the used descriptor written as the burst ends');
  const interrupts = sys.eventfdDrain(callFd);
  settleCalls();
  for (let i = 0; i < n; i++) pool.free(handles[i]);
  t.same([interrupts, sys.eventfdDrain(callFd)], [0, 1], 'the interrupt after the round\'s one barrier (notify.ts)');
});

t.test('hostile TX chains are skipped whole, returned and counted; the queue keeps working', async (t) => {
  const { ram, driverQ, owner, counters, pool, handles, queue } = setup(t, { size: 256 });
  const buf = ram.gpa(ram.alloc(2048));
  const table = ram.alloc(16 * 4, 16);
  const bad: [string, () => number][] = [
    ['address outside guest memory', () => driverQ.addChain([{ addr: 0x10, len: 100 }])],
    ['range running past the end of memory', () => driverQ.addChain([{ addr: ram.gpa(ram.size - 8), len: 100 }])],
    ['device-writable buffer on a TX queue', () => driverQ.addChain([{ addr: buf, len: 100, write: true }])],
    ['bad buffer in the middle of a chain', () => driverQ.addChain([{ addr: buf, len: 12 }, { addr: 0x10, len: 60 }, { addr: buf, len: 60 }])],
    ['indirect table not a multiple of 16 bytes', () => driverQ.addTablePointer(ram.gpa(table), 20)],
    ['indirect table outside memory', () => driverQ.addTablePointer(0x20, 64)],
    ['indirect table longer than the chain may be', () => driverQ.addTablePointer(buf, 16 * (MAX_CHAIN_DESCRIPTORS + 1))],
    ['indirect descriptor with NEXT', () => driverQ.addRawChain([{ addr: ram.gpa(table), len: 64, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT }, { addr: buf, len: 60, flags: 0 }])],
    ['an indirect table inside an indirect table', () => driverQ.addIndirectChain([{ addr: buf, len: 100 }], { tableFlags: VIRTQ_DESC_F_INDIRECT })],
    ['a chain longer than the cap', () => driverQ.addChain(Array.from({ length: MAX_CHAIN_DESCRIPTORS + 1 }, () => ({ addr: buf, len: 0 })))],
  ];
  for (const [what, add] of bad) {
    const id = add();
    const good = sendFrame(driverQ, ethernetFrame(B, A, 60));
    const before = drop(counters, 'bad_descriptor');
    const n = receiveBurst(owner, pool, handles, 0, 32);
    t.equal(n, 1, `${what}: the good frame after it is taken`);
    for (let i = 0; i < n; i++) pool.free(handles[i]);
    t.equal(drop(counters, 'bad_descriptor'), before + 1, `${what}: counted`);
    t.same(driverQ.takeUsed().map((u) => u.id), [id, good], `${what}: both returned, the bad one first`);
    t.equal(queue.failure, '', 'the queue still runs');
  }
});

t.test('a ring whose chain never ends stops the queue, and only that queue', async (t) => {
  const { ram, driverQ, owner, queue, pool, handles } = setup(t, { size: 16 });
  const other = setup(t);
  const buf = ram.gpa(ram.alloc(2048));
  // NEXT on every descriptor of the ring, all available.
  for (let i = 0; i < 16; i++) driverQ.writeDesc(i, { addr: buf, len: 64, id: i, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
  const started = performance.now();
  t.equal(receiveBurst(owner, pool, handles, 0, 32), -1, 'the burst says the ring is corrupt');
  t.ok(performance.now() - started < 100, 'and comes back at once');
  t.match(queue.failure, /never ends/, 'failure says why');
  t.equal(driverQ.takeUsed().length, 0, 'nothing returned from a corrupt ring');
  t.equal(pool.available, 64, 'no buffer leaked');
  sendFrame(other.driverQ, ethernetFrame(B, A, 60));
  t.equal(receiveBurst(other.owner, other.pool, other.handles, 0, 32), 1, 'another queue is not disturbed');
  // The same ring as a guest RX queue: deliverBurst drops, the caller sees the failure.
  const rx = setup(t, { size: 16 });
  for (let i = 0; i < 16; i++) rx.driverQ.writeDesc(i, { addr: buf, len: 64, id: i, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL });
  t.equal(deliverBurst(rx.owner, true, rx.pool, Uint32Array.of(bufferWith(rx.pool, ethernetFrame(A, B, 60))), 1), 0);
  t.match(rx.queue.failure, /never ends/);
});

t.test('a chain past the most descriptors a chain may have fails the queue, read no further', async (t) => {
  // Skipped whole, such a chain would cost up to the ring's size in reads every burst (its
  // end is where the next chain starts), and the guest re-arms it with two stores.
  const { ram, driverQ, owner, queue, pool, handles } = setup(t, { size: 1024 });
  const buf = ram.gpa(ram.alloc(2048));
  for (let i = 0; i < 1024; i++) driverQ.writeDesc(i, { addr: buf, len: 64, id: i, flags: (i === 1000 ? 0 : VIRTQ_DESC_F_NEXT) | VIRTQ_DESC_F_AVAIL });
  queue.descriptorsRead = 0;
  t.equal(receiveBurst(owner, pool, handles, 0, 32), -1, 'the burst says the ring is corrupt');
  t.match(queue.failure, /from 0 has more than 128 descriptors/, 'failure says why');
  t.ok(queue.descriptorsRead <= MAX_CHAIN_DESCRIPTORS + 1, `${queue.descriptorsRead} descriptors read, not 1,001`);
  t.equal(pool.available, 64, 'no buffer leaked');
  // As a guest RX queue.
  const rx = setup(t, { size: 1024 });
  for (let i = 0; i < 1024; i++) rx.driverQ.writeDesc(i, { addr: buf, len: 64, id: i, flags: (i === 1000 ? 0 : VIRTQ_DESC_F_NEXT) | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL });
  rx.queue.descriptorsRead = 0;
  t.equal(deliverBurst(rx.owner, true, rx.pool, Uint32Array.of(bufferWith(rx.pool, ethernetFrame(A, B, 60))), 1), 0);
  t.match(rx.queue.failure, /has more than 128 descriptors/);
  t.ok(rx.queue.descriptorsRead <= MAX_CHAIN_DESCRIPTORS + 1, `${rx.queue.descriptorsRead} descriptors read as an RX chain`);
});

t.test('guest TX: a burst of long chains stops at its descriptor budget; the rest waits', async (t) => {
  const { ram, driverQ, owner, pool, handles, counters } = setup(t, { size: 1024 });
  const off = ram.alloc(2048);
  ram.bytes.set(ethernetFrame(B, A, 60), off + NET_HDR_LEN);
  const chains = 8;
  const perChain = 100;
  for (let c = 0; c < chains; c++) {
    driverQ.addChain([{ addr: ram.gpa(off), len: NET_HDR_LEN + 74 }, ...Array.from({ length: perChain - 1 }, () => ({ addr: ram.gpa(off), len: 0 }))]);
  }
  driverQ.makeAvailable();
  owner.queue.descriptorsRead = 0;
  const n = receiveBurst(owner, pool, handles, 0, 32);
  t.ok(n < chains && n >= RECEIVE_DESCRIPTOR_BUDGET / perChain, `${n} chains of ${perChain} taken in the first burst`);
  t.ok(owner.queue.descriptorsRead <= RECEIVE_DESCRIPTOR_BUDGET + perChain, 'no more read than the budget and one chain');
  for (let i = 0; i < n; i++) pool.free(handles[i]);
  const m = receiveBurst(owner, pool, handles, 0, 32);
  t.equal(n + m, chains, 'the rest in the next burst');
  t.equal(drop(counters, 'bad_descriptor'), 0, 'nothing dropped');
});

t.test('queue layout is validated; any size up to 2^15; a position inside the ring', async (t) => {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const q = new PackedDriverQueue(ram, 256);
  const mem = new GuestMemory([ram.region()]);
  t.type(PackedQueue.create(mem, q.layout({ size: 100 })), PackedQueue, 'size 100: not a power of 2, allowed');
  t.match(PackedQueue.create(mem, q.layout({ size: 32769 })), /not 1 to 32768/);
  t.match(PackedQueue.create(mem, q.layout({ size: 0 })), /not 1 to 32768/);
  t.match(PackedQueue.create(mem, q.layout({ descAddr: q.layout().descAddr + 8 })), /not 16-byte aligned/);
  t.match(PackedQueue.create(mem, q.layout({ availAddr: q.layout().availAddr + 2 })), /not 4-byte aligned/);
  t.match(PackedQueue.create(mem, q.layout({ usedAddr: 0x1000 })), /outside guest memory/);
  t.match(PackedQueue.create(mem, q.layout({ descAddr: ram.uvaBase + ram.size - 16 * 128 })), /outside guest memory/);
  t.match(PackedQueue.create(mem, q.layout({ lastAvailIdx: 300 })), /outside a ring of 256/);
  t.match(PackedQueue.create(mem, q.layout({ lastAvailIdx: 0x1_0000 })), /outside a ring/);
});

t.test('a new owner resumes where the last one stopped (a data plane restarted)', async (t) => {
  const { mem, driverQ, owner, pool, handles } = setup(t, { size: 8 });
  for (let i = 0; i < 8; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, i));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 8, 'a lap');
  for (let i = 0; i < 8; i++) pool.free(handles[i]);
  driverQ.takeUsed();
  for (let i = 0; i < 3; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, 8 + i));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 3, 'and three into the next');
  for (let i = 0; i < 3; i++) pool.free(handles[i]);
  driverQ.takeUsed();
  for (let i = 0; i < 2; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, 100 + i));
  const next = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: -1 }));
  if (typeof next === 'string') throw new Error(next);
  t.equal(next.lastAvailIdx, 3, 'position 3 of wrap 0');
  const n = receiveBurst({ ...owner, queue: next }, pool, handles, 0, 32);
  t.equal(n, 2, 'only the two frames made available since');
  t.equal(frameOf(pool, handles[0])[14], 100, 'the first of them');
});

t.test('a fresh ring\'s base after exactly a lap: index 0 of wrap 0 is told from a new ring by the descriptors', async (t) => {
  // What we leave in our event suppression area at index 0 of wrap 0 is 0, as a new ring's.
  const { mem, driverQ, owner, pool, handles } = setup(t, { size: 8 });
  for (let i = 0; i < 8; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, i));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 8, 'a lap of wrap 1');
  for (let i = 0; i < 8; i++) pool.free(handles[i]);
  t.equal(driverQ.takeUsed().length, 8);
  // A new vrouter, and QEMU reconnecting with the base of a new ring.
  const next = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: FRESH_RING }));
  if (typeof next === 'string') throw new Error(next);
  t.equal(next.lastAvailIdx, 0, 'index 0 of wrap 0: slot 0 was used in wrap 1');
  for (let i = 0; i < 3; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, 20 + i));
  t.equal(receiveBurst({ ...owner, queue: next }, pool, handles, 0, 32), 3, 'the frames of the next lap are taken');
  t.same([0, 1, 2].map((k) => frameOf(pool, handles[k])[14]), [20, 21, 22]);
  for (let i = 0; i < 3; i++) pool.free(handles[i]);
  t.equal(driverQ.takeUsed().length, 3, 'and used, where the driver looks for them');
  // The driver made slot 0 available again before the reconnect: still wrap 0.
  const again = setup(t, { size: 8 });
  for (let i = 0; i < 8; i++) sendFrame(again.driverQ, ethernetFrame(B, A, 46, i));
  t.equal(receiveBurst(again.owner, again.pool, again.handles, 0, 32), 8);
  for (let i = 0; i < 8; i++) again.pool.free(again.handles[i]);
  again.driverQ.takeUsed();
  sendFrame(again.driverQ, ethernetFrame(B, A, 46, 30));
  const resumed = PackedQueue.create(again.mem, again.driverQ.layout({ lastAvailIdx: FRESH_RING }));
  if (typeof resumed === 'string') throw new Error(resumed);
  t.equal(resumed.lastAvailIdx, 0, 'index 0 of wrap 0');
  t.equal(receiveBurst({ ...again.owner, queue: resumed }, again.pool, again.handles, 0, 32), 1, 'the frame made available meanwhile is taken');
  t.equal(frameOf(again.pool, again.handles[0])[14], 30);
  // The lap of wrap 1 began with the tail of a chain that straddled the end (slot 0 kept
  // the driver's marks): the other slots the device used in that lap tell.
  const straddled = setup(t, { size: 8 });
  const lap = (frames: { split?: number[] }[]) => {
    for (const [k, opts] of frames.entries()) sendFrame(straddled.driverQ, ethernetFrame(B, A, 46, k), opts);
    const n = receiveBurst(straddled.owner, straddled.pool, straddled.handles, 0, 32);
    for (let i = 0; i < n; i++) straddled.pool.free(straddled.handles[i]);
    straddled.driverQ.takeUsed();
    return n;
  };
  const single = (n: number) => Array.from({ length: n }, () => ({}));
  const twoSlots = { split: [12, 60] };
  t.equal(lap(single(7)), 7, 'slots 0-6 of wrap 1');
  t.equal(lap([twoSlots]), 1, 'slots 7 and 0 of wrap 0');
  t.equal(lap(single(6)), 6, 'slots 1-6');
  t.equal(lap([twoSlots]), 1, 'slots 7 and 0 of wrap 1');
  t.equal(lap(single(7)), 7, 'slots 1-7: index 0 of wrap 0 next');
  const afterStraddle = PackedQueue.create(straddled.mem, straddled.driverQ.layout({ lastAvailIdx: FRESH_RING }));
  if (typeof afterStraddle === 'string') throw new Error(afterStraddle);
  t.equal(afterStraddle.lastAvailIdx, 0, 'index 0 of wrap 0');
  sendFrame(straddled.driverQ, ethernetFrame(B, A, 46, 50));
  t.equal(receiveBurst({ ...straddled.owner, queue: afterStraddle }, straddled.pool, straddled.handles, 0, 32), 1, 'the next frame is taken');
  t.equal(frameOf(straddled.pool, straddled.handles[0])[14], 50);
  // A new ring whose driver made buffers available before the device started: the base.
  const posted = setup(t, { size: 8 });
  sendFrame(posted.driverQ, ethernetFrame(B, A, 46, 40));
  const fresh = PackedQueue.create(posted.mem, posted.driverQ.layout({ lastAvailIdx: FRESH_RING }));
  t.equal(typeof fresh !== 'string' && fresh.lastAvailIdx, FRESH_RING, 'a new ring: index 0 of wrap 1');
});

t.test('IN_ORDER: frames the device only read go back one used descriptor a burst, frames it wrote one each', async (t) => {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const mem = new GuestMemory([ram.region()]);
  const tx = new PackedDriverQueue(ram, 8, { inOrder: true });
  const txQueue = PackedQueue.create(mem, tx.layout({ inOrder: true }));
  if (typeof txQueue === 'string') throw new Error(txQueue);
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const owner: QueueOwner = { queue: txQueue, callFd: -1, kickFd: -1, counters, counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 1518, offloads: 0 };
  const pool = PacketPool.standalone(64);
  const handles = new Uint32Array(32);
  // Three laps of a ring of 8 in bursts of 5, some frames in two descriptors: the bursts
  // straddle the ring's end, in both wraps.
  for (let burst = 0; burst < 4; burst++) {
    const ids = Array.from({ length: 5 }, (_, k) => sendFrame(tx, ethernetFrame(B, A, 46, 10 * burst + k), k === 1 ? { split: [12, 60] } : {}));
    const firstSlot = tx.nextUsed;
    t.equal(receiveBurst(owner, pool, handles, 0, 32), 5, `burst ${burst}: taken`);
    t.same(Array.from(handles.subarray(0, 5), (h) => frameOf(pool, h)[14]), [0, 1, 2, 3, 4].map((k) => 10 * burst + k), 'whole and in order');
    for (let k = 0; k < 5; k++) pool.free(handles[k]);
    const written = Array.from({ length: 6 }, (_, k) => tx.readDesc((firstSlot + k) % 8)).filter((d) => (d.flags & VIRTQ_DESC_F_USED) === ((d.flags & VIRTQ_DESC_F_AVAIL) << 8));
    t.equal(written.length, 1, 'one used descriptor written for the burst');
    t.equal(written[0].id, ids[4], 'with the last buffer\'s id');
    t.same(tx.takeUsed().map((u) => u.id), ids, 'the driver takes every buffer of the burst back');
  }
  t.equal(counters[RX_PACKETS], 20);
  // A guest's RX queue: each buffer's length goes back in its own used descriptor.
  const rx = new PackedDriverQueue(ram, 8, { inOrder: true });
  const rxQueue = PackedQueue.create(mem, rx.layout({ inOrder: true }));
  if (typeof rxQueue === 'string') throw new Error(rxQueue);
  const rxOwner: QueueOwner = { ...owner, queue: rxQueue };
  const posted = [postRxBuffer(rx, 1024), postRxBuffer(rx, 1024), postRxBuffer(rx, 1024)];
  const frames = [60, 200, 1000].map((len, k) => bufferWith(pool, ethernetFrame(A, B, len - 14, k)));
  t.equal(deliverBurst(rxOwner, false, pool, Uint32Array.from(frames), 3), 3);
  const used = rx.takeUsed();
  t.same(used.map((u) => u.id), posted.map((p) => p.head));
  t.same(used.map((u) => u.len), [60, 200, 1000].map((len) => NET_HDR_LEN + len), 'each length in its own descriptor');
});

t.test('IN_ORDER with a split ring: buffers used in the order made available, across rollbacks', async (t) => {
  // vrouter uses every chain in order whatever is negotiated; with a split ring under
  // IN_ORDER the driver posts descriptors in table order, and the used ring must follow.
  const { DriverQueue } = await import('../support/virtio-driver.ts');
  const { SplitQueue } = await import('../../src/virtio/split-queue.ts');
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const q = new DriverQueue(ram, 8);
  const queue = SplitQueue.create(new GuestMemory([ram.region()]), q.layout());
  if (typeof queue === 'string') throw new Error(queue);
  const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: 0 };
  const pool = PacketPool.standalone(8);
  const posted = [postRxBuffer(q, 1024), postRxBuffer(q, 1024)];
  const big = pool.alloc();
  pool.length[big] = 3000;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(big), 1), 0, 'rolled back: not enough room');
  posted.push(postRxBuffer(q, 1024), postRxBuffer(q, 1024));
  const small = pool.alloc();
  pool.length[small] = 100;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(small, big), 2), 2);
  t.same(q.takeUsed().map((u) => u.id), posted.map((p) => p.head), 'used in table order: 0, 1, 2, 3');
});

t.test('a fresh ring\'s base where the device area holds a position: the frontend lost track, the position wins', async (t) => {
  const { ram, mem, driverQ, owner, pool, handles } = setup(t, { size: 8 });
  const fresh = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: FRESH_RING }));
  t.equal(typeof fresh !== 'string' && fresh.lastAvailIdx, FRESH_RING, 'a zero area (a new ring): the base, index 0 of wrap 1');
  for (let i = 0; i < 5; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, i));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 5);
  for (let i = 0; i < 5; i++) pool.free(handles[i]);
  driverQ.takeUsed();
  // A new vrouter, and QEMU reconnecting with the base of a new ring.
  const next = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: FRESH_RING }));
  if (typeof next === 'string') throw new Error(next);
  t.equal(next.lastAvailIdx, 5 | 0x8000, 'resumes at 5 of wrap 1, where the last device left it');
  sendFrame(driverQ, ethernetFrame(B, A, 46, 9));
  t.equal(receiveBurst({ ...owner, queue: next }, pool, handles, 0, 32), 1, 'and takes the next frame');
  t.equal(frameOf(pool, handles[0])[14], 9);
  const given = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: 3 }));
  t.equal(typeof given !== 'string' && given.lastAvailIdx, 3, 'any other base is taken as given');
  ram.dv.setUint16(driverQ.deviceEventOff, 200, true);
  const garbage = PackedQueue.create(mem, driverQ.layout({ lastAvailIdx: FRESH_RING }));
  t.equal(typeof garbage !== 'string' && garbage.lastAvailIdx, FRESH_RING, 'a position outside the ring in the area: the base');
});

t.test('guest RX: lines claimed ahead in available one-buffer device-writable descriptors, up to the first that is not', async (t) => {
  const { ram, driverQ, owner, queue, pool } = setup(t, { size: 8 });
  const first = postRxBuffer(driverQ, 256);
  const second = postRxBuffer(driverQ, 256);
  const chained = postRxChain(driverQ, [128, 128]);
  const after = postRxBuffer(driverQ, 256);
  const buffers: [number, number][] = [[first.off, 256], [second.off, 256], [chained.offs[0], 128], [chained.offs[1], 128], [after.off, 256]];
  for (const [off, len] of buffers) ram.bytes.fill(0xee, off, off + len);
  t.ok(queue.pending() > 0);
  queue.claimChains(8, NET_HDR_LEN);
  // The header of a frame that leaves the guest nothing to do (num_buffers 1), and a zero where the frame goes.
  const claimed = new Uint8Array(256).fill(0xee);
  claimed.fill(0, 0, NET_HDR_LEN + 4);
  claimed[10] = 1;
  t.same(ram.bytes.slice(first.off, first.off + 256), claimed, 'first buffer: the header and a zero where the frame goes');
  t.same(ram.bytes.slice(second.off, second.off + 256), claimed, 'second buffer too');
  for (const [off, len] of buffers.slice(2)) t.ok(ram.bytes.subarray(off, off + len).every((b) => b === 0xee), 'from the chain of two on: not written');
  const frame = ethernetFrame(A, B, 100, 7);
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(bufferWith(pool, frame)), 1), 1);
  t.same(ram.bytes.slice(first.off + NET_HDR_LEN, first.off + NET_HDR_LEN + frame.length), frame, 'the frame written over the claimed words');
  t.equal(ram.dv.getUint16(first.off + 10, true), 1, 'num_buffers = 1');
  t.same(driverQ.takeUsed().map((u) => u.id), [first.head], 'the first buffer used');
});

t.test('guest RX: the chains the claims read serve the walk, as first made available, until pending() reads again', async (t) => {
  const { ram, driverQ, queue } = setup(t, { size: 8 });
  const first = postRxBuffer(driverQ, 256);
  const second = postRxBuffer(driverQ, 256);
  const elsewhere = ram.alloc(256);
  t.ok(queue.pending() > 0);
  queue.claimChains(2, NET_HDR_LEN);
  // A driver that rewrites a descriptor it made available (its address, its length).
  const rewritten = driverQ.readDesc(0);
  driverQ.writeDesc(0, { ...rewritten, addr: ram.gpa(elsewhere), len: 64 });
  t.equal(queue.takeChain(true, 9000), 1, 'the first chain');
  t.same([queue.segOffset[0], queue.segLength[0]], [first.off, 256], 'the buffer made available first, as the claims read it');
  t.ok(queue.headerWritten, 'its header written by the claims');
  t.equal(queue.takeChain(true, 9000), 1, 'the second');
  t.same([queue.segOffset[0], queue.segLength[0]], [second.off, 256]);
  t.ok(queue.headerWritten);
  queue.returnChain(0);
  queue.returnChain(0);
  queue.forgetUsed(FRESH_RING);
  queue.lastAvailIdx = FRESH_RING;
  queue.forgetClaims();
  t.equal(queue.takeChain(true, 9000), 1, 'back where the claims started (a frame rolled back): the walk reads the ring');
  t.same([queue.segOffset[0], queue.segLength[0]], [elsewhere, 64], 'and finds the descriptor as it is now');
  t.notOk(queue.headerWritten, 'with no header written');
  queue.lastAvailIdx = FRESH_RING;
  queue.claimChains(2, NET_HDR_LEN);
  driverQ.writeDesc(0, rewritten);
  t.ok(queue.pending() > 0);
  t.equal(queue.takeChain(true, 9000), 1);
  t.same([queue.segOffset[0], queue.segLength[0]], [first.off, 256], 'so does a walk after pending(), the claims before it forgotten');
  t.notOk(queue.headerWritten);
});

t.test('guest RX: a claimed chain too long for the frame, and one outside guest memory, walked as without the claims', async (t) => {
  const { ram, driverQ, queue } = setup(t, { size: 8 });
  const first = postRxBuffer(driverQ, 256);
  driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(ram.size - 16), len: 256, write: true }]));
  t.ok(queue.pending() > 0);
  queue.claimChains(2, NET_HDR_LEN);
  t.equal(queue.takeChain(true, 100), CHAIN_TOO_LONG, 'longer than maxBytes: too long');
  t.equal(queue.takeChain(true, 9000), CHAIN_BAD, 'outside guest memory: refused');
  t.ok(ram.bytes.subarray(ram.size - 16).every((b) => b === 0), 'and not written');
  t.ok(ram.bytes.subarray(first.off, first.off + NET_HDR_LEN + 4).some((b) => b !== 0), 'the first claimed all the same');
});

t.test('a packed queue\'s index word is the flags of the descriptor pending() reads', async (t) => {
  const { driverQ, queue } = setup(t, { size: 8 });
  t.equal(queue.pending(), 0);
  t.equal(queue.indexWord() & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), 0, 'nothing made available yet');
  postRxBuffer(driverQ, 256);
  t.equal(queue.indexWord() & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_WRITE, 'made available: AVAIL set as the wrap counter, USED not');
  t.ok(queue.pending() > 0);
});
