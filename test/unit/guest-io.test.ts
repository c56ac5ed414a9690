// The split-ring data path against a driver written here: frames in both directions,
// hostile descriptor chains, 16-bit index wrap-around, mergeable buffers, interrupts,
// what a guest's chains may cost the PMD (descriptor caps, the burst's budget), each
// queue pair's frames and bytes counted on its own slots, and RX chains read ahead (their
// lines claimed, what the walk then takes).
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { CHAIN_BAD, MAX_CHAIN_DESCRIPTORS, SplitQueue } from '../../src/virtio/split-queue.ts';
import { isPowerOfTwo, isSplitQueueSize, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { OFFLOAD_FIELDS, PacketPool } from '../../src/dataplane/packet-pool.ts';
import { DELIVER_DESCRIPTOR_BUDGET, deliverBurst, MAX_FRAME_CHAINS, RECEIVE_DESCRIPTOR_BUDGET, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, CSUM_COMPLETED, DROP, DROPS_BASE, QUEUE_PAIRS_MAX, QUEUE_RX_BYTES, QUEUE_RX_PACKETS, QUEUE_TX_BYTES, QUEUE_TX_PACKETS, queueBase, RX_CSUM_PARTIAL, RX_PACKETS, TX_CSUM_PARTIAL, TX_PACKETS } from '../../src/dataplane/counters.ts';
import { leavesChecksum, OFFLOAD_CSUM_FROM_GUEST, OFFLOAD_CSUM_TO_GUEST, OFFLOAD_TSO4_FROM_GUEST } from '../../src/dataplane/offloads.ts';
import { tcp4, tcp6, udp4 } from '../support/frames.ts';
import { gatherCalls, settleCalls } from '../../src/dataplane/notify.ts';
import { LIMITS } from '../../src/control/config.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxBuffer, postRxChain, sendFrame } from '../support/virtio-driver.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

function setup(t: Test, opts: { size?: number; startIdx?: number; eventIdx?: boolean; maxFrame?: number; offloads?: number; inOrder?: boolean } = {}) {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const driverQ = new DriverQueue(ram, opts.size ?? 256, { startIdx: opts.startIdx, eventIdx: opts.eventIdx });
  const mem = new GuestMemory([ram.region()]);
  const queue = SplitQueue.create(mem, driverQ.layout({ inOrder: opts.inOrder }));
  if (typeof queue === 'string') throw new Error(queue);
  const counters = new Float64Array(COUNTERS_PER_PORT);
  // Queue pair 1 of port 0: its counters apart from pair 0's.
  const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters, counterBase: 0, queueCounterBase: queueBase(0, 1), maxFrame: opts.maxFrame ?? 1518, offloads: opts.offloads ?? 0 };
  const pool = PacketPool.standalone(64);
  const handles = new Uint32Array(32);
  return { ram, driverQ, owner, counters, pool, handles };
}

const drop = (counters: Float64Array, reason: keyof typeof DROP) => counters[DROPS_BASE + DROP[reason]];

function frameOf(pool: PacketPool, handle: number): Uint8Array {
  const off = pool.frameOffset(handle);
  return pool.data.slice(off, off + pool.length[handle]);
}

t.test('guest TX: frames arrive whole, however the guest splits them', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t);
  const frames = [ethernetFrame(B, A, 50, 1), ethernetFrame(B, A, 1000, 2), ethernetFrame(B, A, 300, 3), ethernetFrame(B, A, 100, 4)];
  const heads = [
    sendFrame(driverQ, frames[0]),
    sendFrame(driverQ, frames[1], { split: [6, 6, 14, 1000] }), // header split over two descriptors
    sendFrame(driverQ, frames[2], { split: [NET_HDR_LEN, 314], indirect: true }),
    sendFrame(driverQ, frames[3], { split: [10, 9, 1, 106] }), // the header's end and the frame's start in one descriptor
  ];
  const n = receiveBurst(owner, pool, handles, 0, 32);
  t.equal(n, 4, 'four frames taken');
  frames.forEach((f, i) => t.same(frameOf(pool, handles[i]), f, `frame ${i} copied byte for byte`));
  t.same(driverQ.takeUsed().map((u) => u.id), heads, 'every chain returned in order');
  t.equal(counters[RX_PACKETS], 4);
  t.same([counters[queueBase(0, 1) + QUEUE_RX_PACKETS], counters[queueBase(0, 1) + QUEUE_RX_BYTES]], [4, 64 + 1014 + 314 + 114], 'counted on queue pair 1: frames and bytes');
  t.equal(counters[queueBase(0, 0) + QUEUE_RX_PACKETS], 0, 'not on pair 0');
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'nothing more pending');
});

t.test('a counter slot for every queue pair a port may have', async (t) => {
  t.ok(LIMITS.queuesMax <= QUEUE_PAIRS_MAX, `the config allows ${LIMITS.queuesMax} queue pairs, the counters have slots for ${QUEUE_PAIRS_MAX}`);
  t.ok(queueBase(0, QUEUE_PAIRS_MAX) <= COUNTERS_PER_PORT, 'the last pair\'s slots end within the port\'s counters');
});

t.test('guest TX: hostile chains are dropped and counted, the queue keeps working', async (t) => {
  const { ram, driverQ, owner, counters, pool, handles } = setup(t, { size: 16 });
  const good = ethernetFrame(B, A, 60);
  const buf = ram.alloc(2048);
  const bad: [string, () => number][] = [
    ['address outside guest memory', () => driverQ.addChain([{ addr: 0x10, len: 100 }])],
    ['range running past the end of memory', () => driverQ.addChain([{ addr: ram.gpa(ram.size - 8), len: 100 }])],
    ['device-writable buffer on a TX queue', () => driverQ.addChain([{ addr: ram.gpa(buf), len: 100, write: true }])],
    [
      'chain that loops',
      () => {
        driverQ.writeDesc(10, { addr: ram.gpa(buf), len: 64, flags: VIRTQ_DESC_F_NEXT, next: 11 });
        driverQ.writeDesc(11, { addr: ram.gpa(buf), len: 64, flags: VIRTQ_DESC_F_NEXT, next: 10 });
        return 10;
      },
    ],
    [
      'next index beyond the table',
      () => {
        driverQ.writeDesc(12, { addr: ram.gpa(buf), len: 64, flags: VIRTQ_DESC_F_NEXT, next: 999 });
        return 12;
      },
    ],
    [
      'indirect together with next',
      () => {
        driverQ.writeDesc(13, { addr: ram.gpa(buf), len: 32, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 0 });
        return 13;
      },
    ],
    [
      'indirect table of a size not a multiple of 16',
      () => {
        driverQ.writeDesc(14, { addr: ram.gpa(buf), len: 24, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        return 14;
      },
    ],
    [
      'nested indirect table',
      () => {
        const table = ram.alloc(16, 16);
        ram.dv.setUint32(table, ram.gpa(buf), true);
        ram.dv.setUint32(table + 8, 16, true);
        ram.dv.setUint16(table + 12, VIRTQ_DESC_F_INDIRECT, true);
        driverQ.writeDesc(15, { addr: ram.gpa(table), len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        return 15;
      },
    ],
    ['head index beyond the queue', () => 4000],
  ];
  for (const [what, make] of bad) {
    driverQ.makeAvailable(make());
    t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, `${what}: nothing forwarded`);
    t.equal(driverQ.takeUsed().length, 1, `${what}: the chain is given back`);
  }
  t.equal(drop(counters, 'bad_descriptor'), bad.length, 'each one counted as bad_descriptor');
  t.equal(owner.queue.failure, '', 'the queue has not failed');
  sendFrame(driverQ, good);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 1, 'a good frame still goes through');
  t.same(frameOf(pool, handles[0]), good);
  t.equal(pool.available, 63, 'no buffer leaked by the bad chains');
});

t.test('guest TX: too short, too long, and a corrupt available index', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t, { size: 16, maxFrame: 1518 });
  sendFrame(driverQ, new Uint8Array(10));
  sendFrame(driverQ, ethernetFrame(B, A, 1505));
  sendFrame(driverQ, ethernetFrame(B, A, 1504));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 1, 'only the 1518-byte frame passes');
  t.equal(drop(counters, 'frame_too_short'), 1);
  t.equal(drop(counters, 'frame_too_long'), 1);
  driverQ.setAvailIdx(driverQ.availIdx + 17);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), -1, 'an index 17 ahead on a 16-entry queue is corruption');
  t.match(owner.queue.failure, /jumped by 17/);
});

t.test('guest TX: the 16-bit indices wrap around', async (t) => {
  const { driverQ, owner, pool, handles } = setup(t, { size: 8, startIdx: 65530 });
  let received = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 5; i++) sendFrame(driverQ, ethernetFrame(B, A, 46, round * 5 + i));
    const n = receiveBurst(owner, pool, handles, 0, 32);
    for (let i = 0; i < n; i++) {
      t.equal(frameOf(pool, handles[i])[14], (round * 5 + i) & 0xff, `frame ${round * 5 + i} in order`);
      pool.free(handles[i]);
    }
    received += n;
    t.equal(driverQ.takeUsed().length, 5, `round ${round}: all chains used`);
  }
  t.equal(received, 25);
  t.equal(driverQ.usedIdx(), (65530 + 25) & 0xffff, 'used index wrapped past 65535');
});

t.test('guest TX with IN_ORDER: a burst goes back as one used element, in its first slot, naming its last chain', async (t) => {
  const { ram, driverQ, owner, pool, handles } = setup(t, { size: 8, startIdx: 65533, inOrder: true });
  const UNWRITTEN = 0xdeadbeef;
  const element = (slot: number) => driverQ.usedOff + 4 + 8 * slot;
  for (let slot = 0; slot < 8; slot++) [0, 4].forEach((at) => ram.dv.setUint32(element(slot) + at, UNWRITTEN, true));
  const slotsOf = () => Array.from({ length: 8 }, (_, slot) => [ram.dv.getUint32(element(slot), true), ram.dv.getUint32(element(slot) + 4, true)]);
  for (let round = 0; round < 3; round++) {
    const usedBefore = driverQ.usedIdx();
    // Chains of one and of two descriptors: the heads are not consecutive.
    const heads = [1, 2, 3].map((k) => {
      const frame = ethernetFrame(B, A, 60, round * 3 + k);
      return sendFrame(driverQ, frame, k === 2 ? { split: [NET_HDR_LEN, frame.length] } : {});
    });
    const before = slotsOf();
    t.equal(receiveBurst(owner, pool, handles, 0, 32), 3, `round ${round}: three frames`);
    for (let i = 0; i < 3; i++) pool.free(handles[i]);
    t.equal(driverQ.usedIdx(), (usedBefore + 3) & 0xffff, 'the used index moves past the whole batch (wrapping at 65535)');
    const first = usedBefore % 8;
    const after = slotsOf();
    t.same(after[first], [heads[2], 0], "the batch's first slot names its last chain, length 0");
    t.same([1, 2].map((k) => after[(first + k) % 8]), [1, 2].map((k) => before[(first + k) % 8]), 'its other slots are not written');
  }
});

t.test('guest RX: mergeable buffers spanning several descriptors', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const rx = [postRxBuffer(driverQ, 1024), postRxBuffer(driverQ, 1024), postRxBuffer(driverQ, 1024)];
  const frame = ethernetFrame(A, B, 2500 - 14, 9);
  const h = pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 1);
  t.same([counters[queueBase(0, 1) + QUEUE_TX_PACKETS], counters[queueBase(0, 1) + QUEUE_TX_BYTES]], [1, 2500], 'counted on queue pair 1: one frame of 2500 bytes');
  const used = driverQ.takeUsed();
  t.same(used.map((u) => u.id), rx.map((r) => r.head), 'three chains used');
  t.same(used.map((u) => u.len), [1024, 1024, NET_HDR_LEN + 2500 - 2048], 'lengths cover header and frame');
  t.equal(ram.dv.getUint16(rx[0].off + 10, true), 3, 'num_buffers = 3 in the first header');
  const got = new Uint8Array(2500);
  got.set(ram.bytes.subarray(rx[0].off + NET_HDR_LEN, rx[0].off + 1024), 0);
  got.set(ram.bytes.subarray(rx[1].off, rx[1].off + 1024), 1024 - NET_HDR_LEN);
  got.set(ram.bytes.subarray(rx[2].off, rx[2].off + 2500 - 2048 + NET_HDR_LEN), 2048 - NET_HDR_LEN);
  t.same(got, frame, 'the frame reassembles byte for byte');
  t.equal(counters[TX_PACKETS], 1);
});

t.test('guest RX: a frame that does not fit is not half-delivered', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  postRxBuffer(driverQ, 1024);
  postRxBuffer(driverQ, 1024);
  const h = pool.alloc();
  pool.length[h] = 3000;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 0, 'mergeable: 2 KiB posted, 3 KiB needed');
  t.equal(driverQ.takeUsed().length, 0, 'no chain published');
  t.equal(drop(counters, 'guest_ring_full'), 1);
  postRxBuffer(driverQ, 1024);
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 1, 'delivered once the guest posts more');
  t.equal(driverQ.takeUsed().length, 3);
});

t.test('guest RX without mergeable buffers: one chain per frame', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const small = postRxBuffer(driverQ, 1000);
  const h = pool.alloc();
  pool.length[h] = 9014;
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(h), 1), 0);
  t.equal(drop(counters, 'guest_buffer_too_small'), 1, 'a 9014-byte frame does not fit 1000 bytes');
  t.equal(driverQ.takeUsed().length, 0, 'the small buffer stays posted');
  const h2 = pool.alloc();
  pool.length[h2] = 500;
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(h2), 1), 1, 'a 500-byte frame takes it');
  t.same(driverQ.takeUsed(), [{ id: small.head, len: 512 }]);
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(h2), 1), 0, 'no buffer left');
  t.equal(drop(counters, 'guest_ring_full'), 1);
});

t.test('guest RX: jumbo frame into a chain of device-writable descriptors', async (t) => {
  const { ram, driverQ, owner, pool } = setup(t, { maxFrame: 9018 });
  const off = ram.alloc(3 * 4096);
  const head = driverQ.addChain([0, 1, 2].map((i) => ({ addr: ram.gpa(off + 4096 * i), len: 4096, write: true })));
  driverQ.makeAvailable(head);
  const frame = ethernetFrame(A, B, 9000, 4);
  const h = pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  t.equal(deliverBurst(owner, false, pool, Uint32Array.of(h), 1), 1);
  t.same(driverQ.takeUsed(), [{ id: head, len: NET_HDR_LEN + 9014 }]);
  t.same(ram.bytes.slice(off + NET_HDR_LEN, off + NET_HDR_LEN + 9014), frame);
});

t.test('interrupts: only when the guest asks for them', async (t) => {
  for (const eventIdx of [false, true]) {
    const { driverQ, owner, pool, handles } = setup(t, { eventIdx });
    const callFd = sys.eventfd();
    t.teardown(() => sys.close(callFd));
    owner.callFd = callFd;
    if (eventIdx) driverQ.setUsedEvent(5);
    else driverQ.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    for (let i = 0; i < 3; i++) sendFrame(driverQ, ethernetFrame(B, A, 46));
    receiveBurst(owner, pool, handles, 0, 32);
    t.equal(sys.eventfdDrain(callFd), 0, `${eventIdx ? 'used_event 5 not reached' : 'NO_INTERRUPT set'}: no interrupt`);
    if (eventIdx) driverQ.setUsedEvent(4);
    else driverQ.setAvailFlags(0);
    for (let i = 0; i < 3; i++) sendFrame(driverQ, ethernetFrame(B, A, 46));
    receiveBurst(owner, pool, handles, 0, 32);
    t.equal(sys.eventfdDrain(callFd), 1, `${eventIdx ? 'used_event 4 crossed' : 'NO_INTERRUPT clear'}: one interrupt for the burst`);
  }
});

t.test('interrupts of a round: each used index visible as its burst ends, the guests\' wishes read once at the round\'s end', async (t) => {
  const tx = setup(t, { eventIdx: true });
  const rx = setup(t, { eventIdx: true });
  const txCall = sys.eventfd();
  const rxCall = sys.eventfd();
  t.teardown(() => (sys.close(txCall), sys.close(rxCall)));
  tx.owner.callFd = txCall;
  rx.owner.callFd = rxCall;
  tx.driverQ.setUsedEvent(1);
  rx.driverQ.setUsedEvent(0);
  for (let i = 0; i < 3; i++) sendFrame(tx.driverQ, ethernetFrame(B, A, 46, i));
  for (let i = 0; i < 3; i++) postRxBuffer(rx.driverQ, 2048);
  gatherCalls();
  const n = receiveBurst(tx.owner, tx.pool, tx.handles, 0, 32);
  t.equal(tx.driverQ.usedIdx(), 3, 'the TX queue\'s used index is visible as its burst ends');
  deliverBurst(rx.owner, false, tx.pool, tx.handles, n);
  t.equal(rx.driverQ.usedIdx(), 3, 'so is the RX queue\'s');
  t.same([sys.eventfdDrain(txCall), sys.eventfdDrain(rxCall)], [0, 0], 'no interrupt before the round ends');
  settleCalls();
  t.same([sys.eventfdDrain(txCall), sys.eventfdDrain(rxCall)], [1, 1], 'then one for each queue whose used_event was crossed');

  // One queue published twice in a round: decided once, on both bursts.
  const twice = () => {
    gatherCalls();
    for (const _ of [0, 1]) {
      for (let i = 0; i < 3; i++) sendFrame(tx.driverQ, ethernetFrame(B, A, 46, i));
      const taken = receiveBurst(tx.owner, tx.pool, tx.handles, 0, 32);
      for (let i = 0; i < taken; i++) tx.pool.free(tx.handles[i]);
    }
    const before = sys.eventfdDrain(txCall);
    settleCalls();
    return [before, sys.eventfdDrain(txCall)];
  };
  tx.driverQ.setUsedEvent(7);
  t.same(twice(), [0, 1], 'used_event 7, crossed by the second burst (3 to 6, 6 to 9): one interrupt, at the round\'s end');
  tx.driverQ.setUsedEvent(10);
  t.same(twice(), [0, 1], 'used_event 10, crossed by the first (9 to 12, 12 to 15): one, at the round\'s end');
  tx.driverQ.setUsedEvent(15);
  t.same(twice(), [0, 1], 'used_event 15, crossed by the first burst\'s first buffer (15 to 18, 18 to 21): one, at the round\'s end');
  tx.driverQ.setUsedEvent(30);
  t.same(twice(), [0, 0], 'used_event 30, not reached (21 to 27): none');

  // Outside a round, publishes are decided at once.
  tx.driverQ.setUsedEvent(27);
  sendFrame(tx.driverQ, ethernetFrame(B, A, 46));
  receiveBurst(tx.owner, tx.pool, tx.handles, 0, 32);
  t.equal(sys.eventfdDrain(txCall), 1, 'no round: the interrupt at once');
});

t.test('queue layout is validated before any view is made', async (t) => {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const q = new DriverQueue(ram, 256);
  const mem = new GuestMemory([ram.region()]);
  t.match(SplitQueue.create(mem, q.layout({ size: 100 })), /power of 2/);
  // The one check of a split ring's size (SplitQueue.create, SET_VRING_NUM, GET_INFLIGHT_FD):
  // sizes come from the frontend, as any number.
  const sizes = [0, 1, 2, 3, 100, 256, 32768, 65536, 2 ** 31, -4, 2.5, NaN, Infinity];
  t.same(sizes.filter(isSplitQueueSize), [1, 2, 256, 32768], 'split ring sizes: powers of 2 from 1 to 32768');
  t.same(sizes.filter(isPowerOfTwo), [1, 2, 256, 32768, 65536], 'powers of 2 (up to 2^30)');
  t.match(SplitQueue.create(mem, q.layout({ descAddr: q.layout().descAddr + 8 })), /not 16-byte aligned/);
  t.match(SplitQueue.create(mem, q.layout({ usedAddr: ram.uvaBase + ram.size - 16 })), /outside guest memory/);
  t.match(SplitQueue.create(mem, q.layout({ availAddr: 0x1000 })), /outside guest memory/);
  t.type(SplitQueue.create(mem, q.layout()), SplitQueue);
});

t.test('mergeable RX writes a flag-free header; the descriptor flag constant is the spec value', async (t) => {
  t.equal(VIRTQ_DESC_F_WRITE, 2);
  const { ram, driverQ, owner, pool } = setup(t);
  const rx = postRxBuffer(driverQ, 2048);
  ram.bytes.fill(0xee, rx.off, rx.off + NET_HDR_LEN);
  const h = pool.alloc();
  pool.length[h] = 60;
  deliverBurst(owner, true, pool, Uint32Array.of(h), 1);
  t.same([...ram.bytes.slice(rx.off, rx.off + NET_HDR_LEN)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], 'header zeroed, num_buffers 1');
});

/** A guest TX chain: `zeros` zero-length descriptors, then header and frame in one. */
function sendAfterZeros(driverQ: DriverQueue, frame: Uint8Array, zeros: number, indirect: boolean): number {
  const ram = driverQ.ram;
  const off = ram.alloc(NET_HDR_LEN + frame.length);
  ram.bytes.fill(0, off, off + NET_HDR_LEN);
  ram.bytes.set(frame, off + NET_HDR_LEN);
  const data = { addr: ram.gpa(off), len: NET_HDR_LEN + frame.length };
  const head = indirect ? driverQ.addZeroLengthIndirectChain(zeros + 1, data) : driverQ.addChain([...Array.from({ length: zeros }, () => ({ addr: ram.gpa(off), len: 0 })), data]);
  driverQ.makeAvailable(head);
  return head;
}

/** Frames of the given lengths in packet buffers; returns their handles. */
function framesInPool(pool: PacketPool, lens: number[]): Uint32Array {
  return Uint32Array.from(lens, (len, i) => {
    const h = pool.alloc();
    pool.data.set(ethernetFrame(A, B, len - 14, i), pool.frameOffset(h));
    pool.length[h] = len;
    return h;
  });
}

t.test('every descriptor counts: zero-length ones beyond the chain cap make the chain bad', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t, { size: 512 });
  const vq = owner.queue;
  t.equal(vq.maxChain, MAX_CHAIN_DESCRIPTORS, 'a 512-entry queue is capped by MAX_CHAIN_DESCRIPTORS');
  const frame = ethernetFrame(B, A, 60);
  for (const indirect of [false, true]) {
    const how = indirect ? 'indirect' : 'direct';
    sendAfterZeros(driverQ, frame, MAX_CHAIN_DESCRIPTORS - 1, indirect);
    t.equal(receiveBurst(owner, pool, handles, 0, 32), 1, `${how}: ${MAX_CHAIN_DESCRIPTORS} descriptors, the last one holding the frame, pass`);
    t.same(frameOf(pool, handles[0]), frame, `${how}: the frame is read whole`);
    pool.free(handles[0]);
    sendAfterZeros(driverQ, frame, MAX_CHAIN_DESCRIPTORS, indirect);
    t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, `${how}: ${MAX_CHAIN_DESCRIPTORS + 1} descriptors are refused`);
    t.equal(vq.descriptorsRead, MAX_CHAIN_DESCRIPTORS + (indirect ? 1 : 0), `${how}: the walk stopped at the cap`);
    t.equal(driverQ.takeUsed().length, 2, `${how}: both chains given back`);
  }
  t.equal(drop(counters, 'bad_descriptor'), 2, 'each refused chain counted as bad_descriptor');
  t.equal(pool.available, 64, 'no buffer leaked');
});

t.test('a queue smaller than the cap caps chains at its size', async (t) => {
  const { ram, driverQ, owner, counters, pool, handles } = setup(t, { size: 16 });
  const vq = owner.queue;
  t.equal(vq.maxChain, 16);
  const frame = ethernetFrame(B, A, 60);
  sendAfterZeros(driverQ, frame, 15, false);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 1, 'a direct chain of 16 descriptors on a 16-entry queue passes');
  sendAfterZeros(driverQ, frame, 15, true);
  t.equal(receiveBurst(owner, pool, handles, 1, 32), 1, 'so does an indirect table of 16 entries');
  // A loop of zero-length descriptors over the whole table.
  for (let i = 0; i < 16; i++) driverQ.writeDesc(i, { addr: ram.gpa(0), len: 0, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % 16 });
  driverQ.makeAvailable(3);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'a loop of zero-length descriptors is bad');
  t.equal(vq.descriptorsRead, 16, 'found after 16 reads');
  t.equal(drop(counters, 'bad_descriptor'), 1);
});

t.test('an indirect table larger than the queue size is refused unread', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t, { size: 16 });
  const vq = owner.queue;
  const frame = ethernetFrame(B, A, 60);
  sendAfterZeros(driverQ, frame, 16, true);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'a table of 17 entries on a 16-entry queue is bad');
  t.equal(vq.descriptorsRead, 1, 'only the descriptor pointing at it was read');
  driverQ.makeAvailable(driverQ.addZeroLengthIndirectChain(32768));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'a 32768-entry table of zero-length descriptors is bad');
  t.equal(vq.descriptorsRead, 1, 'and costs one read, not 32768');
  t.equal(drop(counters, 'bad_descriptor'), 2, 'both counted as bad_descriptor');
  t.equal(driverQ.takeUsed().length, 2, 'both given back');
  sendFrame(driverQ, frame, { indirect: true });
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 1, 'a frame in a small indirect table still passes');
  t.same(frameOf(pool, handles[0]), frame);
});

t.test('guest TX: a burst of long chains stops at its descriptor budget; the rest waits, nothing is dropped', async (t) => {
  const { driverQ, owner, counters, pool, handles } = setup(t, { size: 512 });
  const frames = Array.from({ length: 32 }, (_, i) => ethernetFrame(B, A, 60, i));
  for (const f of frames) sendAfterZeros(driverQ, f, MAX_CHAIN_DESCRIPTORS - 1, true);
  const perChain = MAX_CHAIN_DESCRIPTORS + 1;
  const perBurst = Math.ceil(RECEIVE_DESCRIPTOR_BUDGET / perChain);
  t.ok(perBurst < 32, 'the budget ends a burst of such chains early');
  let received = 0;
  for (let round = 0; received < 32 && round < 32; round++) {
    const n = receiveBurst(owner, pool, handles, 0, 32);
    t.equal(n, Math.min(perBurst, 32 - received), `round ${round}: ${n} chains of ${perChain} descriptors taken`);
    t.ok(owner.queue.descriptorsRead <= RECEIVE_DESCRIPTOR_BUDGET + perChain, `round ${round}: ${owner.queue.descriptorsRead} reads`);
    for (let i = 0; i < n; i++) {
      t.same(frameOf(pool, handles[i]), frames[received + i], `frame ${received + i} whole and in order`);
      pool.free(handles[i]);
    }
    t.equal(driverQ.takeUsed().length, n, `round ${round}: only the chains taken are returned`);
    received += n;
  }
  t.equal(received, 32, 'every frame arrives');
  t.equal(counters[DROPS_BASE + DROP.bad_descriptor], 0, 'none dropped');
});

t.test('guest RX, mergeable: tiny buffers cost a burst at most its descriptor budget', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { size: 1024, maxFrame: 9018 });
  const vq = owner.queue;
  // 16-byte buffers over two descriptors: legal (each holds a virtio-net header), but a
  // 1514-byte frame would need 95 of them, more than a frame may take. Each frame is a
  // byte shorter than the one before, so that each must be tried.
  const tinyCount = 200;
  const tiny = Array.from({ length: tinyCount }, () => postRxChain(driverQ, [NET_HDR_LEN, 4]));
  const burst = framesInPool(pool, Array.from({ length: 32 }, (_, i) => 1514 - i));
  t.equal(deliverBurst(owner, true, pool, burst, 32), 0, 'no frame fits 64 tiny buffers');
  const walked = DELIVER_DESCRIPTOR_BUDGET / (MAX_FRAME_CHAINS * 2);
  t.ok(walked < 32, 'the budget ends the burst before its last frame');
  t.equal(drop(counters, 'guest_buffer_too_small'), walked, `${walked} frames walked ${MAX_FRAME_CHAINS} chains each and did not fit`);
  t.equal(drop(counters, 'guest_buffers_fragmented'), 32 - walked, 'the rest of the burst dropped unwalked, under its own reason');
  t.ok(vq.descriptorsRead <= DELIVER_DESCRIPTOR_BUDGET + vq.maxChain + 1, `reads bounded by the budget (${vq.descriptorsRead})`);
  t.equal(driverQ.takeUsed().length, 0, 'no chain was taken: the guest keeps its buffers');
  for (const h of burst) pool.free(h);

  // The queue still serves frames that fit, and the next burst has a fresh budget.
  const small = framesInPool(pool, Array(32).fill(60));
  t.equal(deliverBurst(owner, true, pool, small, 1), 1, 'a 60-byte frame goes over 5 tiny buffers');
  t.same(driverQ.takeUsed().map((u) => u.id), tiny.slice(0, 5).map((c) => c.head), 'the first five chains used');
  t.equal(ram.dv.getUint16(tiny[0].offs[0] + 10, true), 5, 'num_buffers = 5');
  let used = 5;
  while (used < tinyCount - 4) {
    deliverBurst(owner, true, pool, small, Math.min(32, Math.floor((tinyCount - used) / 5)));
    used += driverQ.takeUsed().length;
  }
  t.equal(used, tinyCount, 'frames that fit use up every tiny buffer');
  const good = postRxBuffer(driverQ, 2048);
  const big = framesInPool(pool, [1514]);
  t.equal(deliverBurst(owner, true, pool, big, 1), 1, 'a well-behaved buffer posted afterwards takes a full frame');
  t.same(driverQ.takeUsed(), [{ id: good.head, len: NET_HDR_LEN + 1514 }]);
  t.equal(ram.dv.getUint16(good.off + 10, true), 1, 'num_buffers = 1');
});

t.test('guest RX, mergeable: thousands of tiny buffers are walked once per burst for frames of one length', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { size: 4096, maxFrame: 9018 });
  for (let i = 0; i < 4000; i++) postRxBuffer(driverQ, NET_HDR_LEN);
  const burst = framesInPool(pool, Array(32).fill(1514));
  t.equal(deliverBurst(owner, true, pool, burst, 32), 0, 'no frame fits');
  t.equal(drop(counters, 'guest_buffer_too_small'), 32, 'every frame counted as too small');
  t.equal(owner.queue.descriptorsRead, MAX_FRAME_CHAINS, 'the first frame walked MAX_FRAME_CHAINS buffers; the others, as long, were not walked again');
  t.equal(drop(counters, 'guest_buffers_fragmented'), 0, 'so the budget was not reached');
  t.equal(driverQ.takeUsed().length, 0, 'no buffer taken');
});

t.test('guest RX, mergeable: a bad buffer in the middle of a frame is consumed with the frame', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const first = postRxBuffer(driverQ, 1024);
  const bad = postRxBuffer(driverQ, 4);
  const next = postRxBuffer(driverQ, 2048);
  const [h1, h2] = framesInPool(pool, [1500, 1000]);
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h1), 1), 0, 'the frame that reached the 4-byte buffer is dropped');
  t.equal(drop(counters, 'bad_descriptor'), 1);
  t.same(driverQ.takeUsed(), [{ id: first.head, len: 0 }, { id: bad.head, len: 0 }], 'its chains returned empty: the queue does not stall');
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h2), 1), 1, 'the next frame takes the next buffer');
  t.same(driverQ.takeUsed(), [{ id: next.head, len: NET_HDR_LEN + 1000 }]);
});

t.test('guest RX without mergeable buffers: a buffer too small for any frame is consumed', async (t) => {
  const { driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const bad = [
    postRxChain(driverQ, [8]), // smaller than the virtio-net header
    postRxChain(driverQ, [6, 100]), // the first segment cannot hold the header
    postRxChain(driverQ, [NET_HDR_LEN + 13]), // no room for an Ethernet header
    postRxChain(driverQ, [0, 0]), // no byte at all
  ];
  const good = postRxBuffer(driverQ, 2048);
  const frames = framesInPool(pool, [60, 60, 60, 60, 100]);
  t.equal(deliverBurst(owner, false, pool, frames, 5), 1, 'one frame delivered');
  t.equal(drop(counters, 'bad_descriptor'), bad.length, 'each bad buffer counted as bad_descriptor');
  t.equal(drop(counters, 'guest_buffer_too_small'), 0, 'not as too small: no frame would ever fit');
  t.same(driverQ.takeUsed(), [...bad.map((c) => ({ id: c.head, len: 0 })), { id: good.head, len: NET_HDR_LEN + 100 }], 'bad buffers returned empty, the good one takes the next frame');
  t.equal(drop(counters, 'guest_ring_full'), 0);
});

t.test('checksum offload: a checksum left to do is taken, passed on as it is, or completed', async (t) => {
  const whole = tcp4({ srcMac: A, dstMac: B, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 80, flags: 'PA', payload: 700 });
  // As a guest with VIRTIO_NET_F_CSUM sends it: the field holds the pseudo-header's sum (any value will do here).
  const sent = whole.slice();
  sent[34 + 16] = 0x12;
  sent[34 + 17] = 0x34;
  const header = Uint8Array.of(1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0);
  const bad = Uint8Array.of(1, 0, 0, 0, 0, 0, 34, 0, 0xff, 0x7f, 0, 0);

  const from = setup(t, { offloads: OFFLOAD_CSUM_FROM_GUEST });
  sendFrame(from.driverQ, sent, { header, split: [5, 7, sent.length] });
  sendFrame(from.driverQ, sent, { header: bad });
  const free = from.pool.available;
  t.equal(receiveBurst(from.owner, from.pool, from.handles, 0, 32), 1, 'the frame with a good header taken, the other dropped');
  t.equal(drop(from.counters, 'offload_header_bad'), 1, 'a checksum field past the frame: offload_header_bad');
  t.equal(from.pool.available, free - 1, 'its buffer given back');
  t.equal(from.driverQ.takeUsed().length, 2, 'both chains returned');
  t.equal(from.counters[RX_CSUM_PARTIAL], 1, 'counted as taken with its checksum left to do');
  const h = from.handles[0];
  t.same(frameOf(from.pool, h), sent, 'the frame as sent');

  // With TSO negotiated a frame past the MTU is read whole (it may be a super-frame).
  const tso = setup(t, { offloads: OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO4_FROM_GUEST });
  const long = new Uint8Array(1600);
  long.set(sent);
  sendFrame(tso.driverQ, long, { header });
  t.equal(receiveBurst(tso.owner, tso.pool, tso.handles, 0, 32), 0, 'a frame past the MTU with its checksum left to do, not a super-frame: dropped');
  t.equal(drop(tso.counters, 'frame_too_long'), 1, 'as frame_too_long');
  t.equal(tso.counters[RX_CSUM_PARTIAL], 0, 'and not counted as taken with its checksum left to do');

  const ignoring = setup(t, { offloads: 0 });
  sendFrame(ignoring.driverQ, sent, { header: bad });
  t.equal(receiveBurst(ignoring.owner, ignoring.pool, ignoring.handles, 0, 32), 1, 'without CSUM negotiated the header is not read');
  t.equal(ignoring.counters[RX_CSUM_PARTIAL], 0, 'nothing left to do');

  // To a guest that negotiated GUEST_CSUM: as it is, the header saying what is left.
  const taking = setup(t, { offloads: OFFLOAD_CSUM_TO_GUEST });
  const rx = postRxBuffer(taking.driverQ, 2048);
  const copy = taking.pool.alloc();
  taking.pool.data.set(sent, taking.pool.frameOffset(copy));
  taking.pool.length[copy] = sent.length;
  taking.pool.offload[copy * OFFLOAD_FIELDS] = from.pool.offload[h * OFFLOAD_FIELDS];
  taking.pool.offload[copy * OFFLOAD_FIELDS + 1] = from.pool.offload[h * OFFLOAD_FIELDS + 1];
  t.equal(deliverBurst(taking.owner, true, taking.pool, Uint32Array.of(copy), 1), 1);
  const hdr = taking.ram.bytes.slice(rx.off, rx.off + NET_HDR_LEN);
  t.same([...hdr], [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0], 'NEEDS_CSUM, csum_start 34, csum_offset 16, num_buffers 1');
  t.same(taking.ram.bytes.slice(rx.off + NET_HDR_LEN, rx.off + NET_HDR_LEN + sent.length), sent, 'the frame untouched');
  t.equal(taking.counters[TX_CSUM_PARTIAL], 1, 'counted as handed on with its checksum left to do');

  // To a guest that did not: completed first, and counted once delivered.
  const full = setup(t, { offloads: 0 });
  const same = from.pool.alloc();
  from.pool.data.set(sent, from.pool.frameOffset(same));
  from.pool.length[same] = sent.length;
  for (let f = 0; f < OFFLOAD_FIELDS; f++) from.pool.offload[same * OFFLOAD_FIELDS + f] = from.pool.offload[h * OFFLOAD_FIELDS + f];
  t.equal(deliverBurst(full.owner, true, from.pool, Uint32Array.of(same), 1), 0, 'to a guest with no buffer posted: not delivered');
  t.equal(drop(full.counters, 'guest_ring_full'), 1, 'a drop, guest_ring_full');
  t.equal(full.counters[CSUM_COMPLETED], 0, 'and no checksum counted as completed for that guest');
  const plain = setup(t, { offloads: 0 });
  const rx2 = postRxBuffer(plain.driverQ, 2048);
  t.equal(deliverBurst(plain.owner, true, from.pool, Uint32Array.of(h), 1), 1);
  t.same([...plain.ram.bytes.slice(rx2.off, rx2.off + NET_HDR_LEN)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], 'a plain header');
  t.same(plain.ram.bytes.slice(rx2.off + NET_HDR_LEN, rx2.off + NET_HDR_LEN + whole.length), partialDone(sent), 'the checksum completed in the frame');
  t.equal(plain.counters[CSUM_COMPLETED], 1, 'counted as completed');
});

t.test('checksum offload: a checksum left at any other place than a TCP or UDP checksum is completed as the frame comes in', async (t) => {
  // A guest chooses every byte the sum covers: completed after the stages, the sum would be
  // a value of its choosing in a field they judged (here UDP's destination port, IPv6's
  // source address). Completed before any stage looks, what they judge is what leaves.
  const v4 = udp4({ srcMac: A, dstMac: B, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 53, payload: 200 });
  const v6 = tcp6({ srcMac: A, dstMac: B, src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 40000, dstPort: 80, flags: 'PA', payload: 200 });
  const fragment = v4.slice();
  fragment[14 + 6] = 0x20; // more fragments: its UDP checksum would cover more than this frame
  const cases: [string, Uint8Array, number, number, boolean][] = [
    // what, the frame, csum_start, csum_offset, left to do (else completed at once)
    ['UDP\'s checksum', v4, 34, 6, true],
    ['UDP\'s destination port', v4, 34, 2, false],
    ['inside the IPv4 header', v4, 14, 16, false],
    ['a first fragment\'s UDP checksum', fragment, 34, 6, false],
    ['TCP\'s checksum over IPv6', v6, 54, 16, true],
    ['TCP\'s checksum at UDP\'s offset', v6, 54, 6, false],
    ['IPv6\'s source address', v6, 14, 10, false],
  ];
  for (const [what, frame, start, offset, leftToDo] of cases) {
    const from = setup(t, { offloads: OFFLOAD_CSUM_FROM_GUEST });
    const header = Uint8Array.of(1, 0, 0, 0, 0, 0, start & 0xff, start >> 8, offset, 0, 0, 0);
    sendFrame(from.driverQ, frame, { header });
    t.equal(receiveBurst(from.owner, from.pool, from.handles, 0, 32), 1, `${what}: taken`);
    const h = from.handles[0];
    t.equal(leavesChecksum(from.pool, h), leftToDo, `${what}: ${leftToDo ? 'left to do' : 'completed at once'}`);
    t.same(frameOf(from.pool, h), leftToDo ? frame : completedAt(frame, start, offset), `${what}: the frame the stages see`);
    t.equal(from.counters[RX_CSUM_PARTIAL], leftToDo ? 1 : 0, `${what}: counted as left to do only if it is`);
    t.equal(from.counters[CSUM_COMPLETED], leftToDo ? 0 : 1, `${what}: counted as completed only if it was`);
  }
});

/** `frame` with the one's complement sum from `start` written at start + offset, as completeChecksum does: a reference. */
function completedAt(frame: Uint8Array, start: number, offset: number): Uint8Array {
  let sum = 0;
  for (let i = start; i < frame.length; i += 2) sum += (frame[i] << 8) | (i + 1 < frame.length ? frame[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const out = frame.slice();
  out[start + offset] = (~sum >>> 8) & 0xff;
  out[start + offset + 1] = ~sum & 0xff;
  return out;
}

/** `sent` with its TCP checksum completed (the partial sum in its field included): a reference. */
function partialDone(sent: Uint8Array): Uint8Array {
  let sum = 0;
  for (let i = 34; i < sent.length; i += 2) sum += (sent[i] << 8) | (i + 1 < sent.length ? sent[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const out = sent.slice();
  out[50] = (~sum >>> 8) & 0xff;
  out[51] = ~sum & 0xff;
  return out;
}

t.test('frames cross byte for byte at every length and alignment, on the first pass and once V8 has optimised the copies', async (t) => {
  const { ram, driverQ, owner, counters, pool, handles } = setup(t, { size: 64 });
  const txBuffer = ram.alloc(2048);
  const rxBuffer = ram.alloc(2048);
  // Bytes that would not survive a copy through floating-point arithmetic (the 64-bit loop
  // moves Float64Array elements): a signalling NaN, V8's hole NaN, a negative zero.
  const awkward = [
    [0x01, 0, 0, 0, 0, 0, 0xf0, 0x7f],
    [0xff, 0xff, 0xf7, 0xff, 0xff, 0xff, 0xf7, 0xff],
    [0, 0, 0, 0, 0, 0, 0, 0x80],
    [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xf4, 0x7f],
  ];
  const lengths = [14, 60, 61, 63, 64, 67, 100, 255, 256, 300, 511, 512, 600];
  // Where the frame starts in the guest's buffers, past an 8-byte boundary: 0 as a DPDK
  // frontend's mbufs have it, 4 as a header in front of it leaves it, 2 and 1 as anything may.
  const shifts = [0, 4, 2, 1];
  const frames = lengths.map((len, i) => {
    const f = ethernetFrame(A, B, len - 14, i);
    for (let k = 16; k + 8 <= len; k += 8) f.set(awkward[(k >> 3) % awkward.length], k);
    return f;
  });
  /** Every frame at every shift, guest to buffer to guest; returns what did not come back whole. */
  const pass = (): string[] => {
    const wrong: string[] = [];
    for (const frame of frames) {
      for (const shift of shifts) {
        const at = txBuffer + 64 + shift;
        ram.bytes.fill(0, at - NET_HDR_LEN, at);
        ram.bytes.set(frame, at);
        driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(at - NET_HDR_LEN), len: NET_HDR_LEN + frame.length }]));
        if (receiveBurst(owner, pool, handles, 0, 32) !== 1) {
          wrong.push(`${frame.length} B at +${shift}: not taken`);
          continue;
        }
        if (Buffer.compare(frameOf(pool, handles[0]), frame) !== 0) wrong.push(`${frame.length} B at +${shift}: changed into the buffer`);
        const out = rxBuffer + 64 + shift;
        ram.bytes.fill(0, out, out + frame.length);
        driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(out - NET_HDR_LEN), len: 2048 - 128, write: true }]));
        if (deliverBurst(owner, true, pool, handles, 1) !== 1) wrong.push(`${frame.length} B at +${shift}: not delivered`);
        else if (Buffer.compare(ram.bytes.subarray(out, out + frame.length), frame) !== 0) wrong.push(`${frame.length} B at +${shift}: changed into the guest`);
        pool.free(handles[0]);
        driverQ.takeUsed();
      }
    }
    return wrong;
  };
  t.same(pass(), [], 'first pass (the copies not yet compiled)');
  for (let i = 0; i < 400; i++) pass();
  t.same(pass(), [], 'after 400 passes (the copies optimised)');
  t.equal(counters[RX_PACKETS], counters[TX_PACKETS], 'every frame taken was delivered');
});

/** A guest posting an RX buffer of len bytes at `off` (one descriptor, device-writable). */
function postRxBufferAt(ram: GuestRam, driverQ: DriverQueue, off: number, len: number): { head: number; off: number } {
  const head = driverQ.addChain([{ addr: ram.gpa(off), len, write: true }]);
  driverQ.makeAvailable(head);
  return { head, off };
}

/** What takeChain() gives for each of the next n chains: result, head and segments. */
function walked(queue: SplitQueue, n: number, maxBytes: number): unknown[] {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = queue.takeChain(true, maxBytes);
    const segs = r > 0 ? Array.from({ length: r }, (_, s) => [queue.segWindow[s], queue.segOffset[s], queue.segLength[s]]) : [];
    out.push({ r, head: queue.chainId, segs, bytes: r > 0 ? queue.chainBytes : 0 });
  }
  return out;
}

t.test('guest RX: chains read ahead; only one-buffer device-writable ones claimed, only where a frame goes', async (t) => {
  const { ram, driverQ, owner } = setup(t, { size: 16 });
  const queue = owner.queue as SplitQueue;
  const good = postRxBuffer(driverQ, 256);
  const shifted = postRxBufferAt(ram, driverQ, ram.alloc(260) + 4, 256);
  const chained = postRxChain(driverQ, [128, 128]);
  const readableOff = ram.alloc(256);
  driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(readableOff), len: 256 }]));
  const tiny = postRxBuffer(driverQ, NET_HDR_LEN + 3);
  driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(ram.size - 8), len: 100, write: true }]));
  driverQ.makeAvailable(driverQ.addIndirectChain([{ addr: ram.gpa(ram.alloc(256)), len: 256, write: true }]));
  driverQ.makeAvailable(99); // a head past the table of 16
  const emptyOff = ram.alloc(64);
  driverQ.makeAvailable(driverQ.addChain([{ addr: ram.gpa(emptyOff), len: 0, write: true }]));
  const late = postRxBuffer(driverQ, 256);
  const buffers: [string, number, number][] = [['one buffer', good.off, 256], ['one buffer, 4 bytes past 8-byte alignment', shifted.off, 256], ['chained', chained.offs[0], 128], ['chained, second', chained.offs[1], 128], ['device-readable', readableOff, 256], ['too short for the frame', tiny.off, NET_HDR_LEN + 3], ['zero-length', emptyOff, 64], ['past the count', late.off, 256]];
  for (const [, off, len] of buffers) ram.bytes.fill(0xee, off, off + len);
  t.equal(queue.pending(), 10);
  queue.claimChains(9, NET_HDR_LEN);
  // The header of a frame that leaves the guest nothing to do: num_buffers 1, the rest 0.
  const expected = new Uint8Array(256).fill(0xee);
  expected.fill(0, 0, NET_HDR_LEN + 4);
  expected[10] = 1;
  t.same(ram.bytes.slice(good.off, good.off + 256), expected, 'the one-buffer chain: the virtio-net header at its start and a zero where the frame goes, nothing else');
  t.same(ram.bytes.slice(shifted.off, shifted.off + 256), expected, 'the same 4 bytes past 8-byte alignment (where an mbuf has it)');
  for (const [what, off, len] of buffers.slice(2)) t.ok(ram.bytes.subarray(off, off + len).every((b) => b === 0xee), `${what}: not written`);

  // The walk gives what it gives unread ahead: a twin queue over the same rings reads everything afresh.
  const twin = SplitQueue.create(new GuestMemory([ram.region()]), driverQ.layout({ lastAvailIdx: queue.lastAvailIdx }));
  if (typeof twin === 'string') throw new Error(twin);
  twin.pending();
  for (const maxBytes of [0xffffffff, 200]) {
    const from = queue.lastAvailIdx;
    t.same(walked(queue, 10, maxBytes), walked(twin, 10, maxBytes), `every chain walked as read afresh, at most ${maxBytes} bytes`);
    // Walked again from the same place (a frame rolled back): the chains read ahead serve again.
    queue.lastAvailIdx = from;
    twin.lastAvailIdx = from;
  }
  t.equal(queue.takeChain(true, 0xffffffff), 1);
  t.equal(queue.chainId, good.head);
  t.ok(queue.headerWritten, 'taken with its header written');
  t.equal(queue.takeChain(true, 0xffffffff), 1);
  t.ok(queue.headerWritten, 'the next one too');
  t.equal(queue.takeChain(true, 0xffffffff), 2);
  t.notOk(queue.headerWritten, 'a chain of two: no header written for it');
});

t.test('guest RX: frames into chains whose claims wrote the header, and into chains a frame rolled back wrote over', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { size: 128, maxFrame: 9018 });
  // Buffers of a header and 20 bytes, every other one 4 bytes past 8-byte alignment.
  const room = NET_HDR_LEN + 20;
  const rx = Array.from({ length: 70 }, (_, i) => postRxBufferAt(ram, driverQ, ram.alloc(room + 4) + 4 * (i % 2), room));
  for (const b of rx) ram.bytes.fill(0xee, b.off, b.off + room);
  // A frame of 3000 bytes needs 95 of them, more than a frame may take: written into
  // MAX_FRAME_CHAINS of them, over the headers the claims wrote, then rolled back. The
  // frames after it, shorter, take those chains one each.
  const big = ethernetFrame(A, B, 3000 - 14, 5).fill(0xab, 14);
  const small = [ethernetFrame(A, B, 6, 1), ethernetFrame(A, B, 6, 2), ethernetFrame(A, B, 6, 3)];
  const burst = framesInPool(pool, [big.length, ...small.map((f) => f.length)]);
  [big, ...small].forEach((f, i) => pool.data.set(f, pool.frameOffset(burst[i])));
  t.equal(deliverBurst(owner, true, pool, burst, 4), 3, 'the short frames delivered');
  t.equal(drop(counters, 'guest_buffer_too_small'), 1, 'the long one dropped');
  const used = driverQ.takeUsed();
  t.same(used.map((u) => u.id), rx.slice(0, 3).map((b) => b.head), 'into the first three chains');
  const header = new Uint8Array(NET_HDR_LEN);
  header[10] = 1;
  small.forEach((f, i) => {
    const off = rx[i].off;
    t.same(ram.bytes.slice(off, off + NET_HDR_LEN), header, `frame ${i}: its own header (num_buffers 1), not what the long frame left`);
    t.same(ram.bytes.slice(off + NET_HDR_LEN, off + NET_HDR_LEN + f.length), f, `frame ${i} whole`);
  });
  // The next burst claims again: frames into chains whose headers the claims wrote.
  const next = framesInPool(pool, [20, 20]);
  next.forEach((h, i) => pool.data.set(small[i], pool.frameOffset(h)));
  t.equal(deliverBurst(owner, true, pool, next, 2), 2);
  t.same(driverQ.takeUsed().map((u) => u.id), rx.slice(3, 5).map((b) => b.head));
  for (const b of rx.slice(3, 5)) t.same(ram.bytes.slice(b.off, b.off + NET_HDR_LEN), header, `the header in the buffer at ${b.off % 8} past 8-byte alignment`);
});

t.test('guest RX: claims of the used ring\'s lines leave what the driver has not read yet as it is', async (t) => {
  // The index wraps past 0xffff on the way; the ring of 16 wraps too.
  const { ram, driverQ, owner, counters, pool } = setup(t, { size: 16, startIdx: 0xfffa });
  const queue = owner.queue as SplitQueue;
  const rx = Array.from({ length: 14 }, () => postRxBuffer(driverQ, 256));
  t.equal(deliverBurst(owner, true, pool, framesInPool(pool, Array.from({ length: 9 }, (_, i) => 60 + i)), 9), 9);
  const usedIdx = ram.dv.getUint16(driverQ.usedOff + 2, true);
  t.equal(usedIdx, (0xfffa + 9) & 0xffff, '9 published');
  const elements = () => Array.from({ length: 16 }, (_, slot) => [ram.dv.getUint32(driverQ.usedOff + 4 + 8 * slot, true), ram.dv.getUint32(driverQ.usedOff + 8 + 8 * slot, true)]);
  const before = elements();
  t.equal(queue.pending(), 5);
  queue.claimChains(5, NET_HDR_LEN);
  const after = elements();
  const published = new Set(Array.from({ length: 9 }, (_, k) => (0xfffa + k) & 15));
  for (let slot = 0; slot < 16; slot++) {
    if (published.has(slot)) t.same(after[slot], before[slot], `slot ${slot}: a published element, unread by the driver, as it was`);
  }
  t.equal(ram.dv.getUint16(driverQ.usedOff + 2, true), usedIdx, 'the used index as it was');
  t.same(driverQ.takeUsed().map((u) => [u.id, u.len]), rx.slice(0, 9).map((b, i) => [b.head, NET_HDR_LEN + 60 + i]), 'the driver reads the 9 frames\' chains and lengths');
  t.equal(counters[TX_PACKETS], 9);
});

t.test('guest RX: a descriptor the driver changes after it was read ahead: the buffer first made available, checked', async (t) => {
  const { ram, driverQ, owner } = setup(t, { size: 16 });
  const queue = owner.queue as SplitQueue;
  const good = postRxBuffer(driverQ, 256);
  const from = queue.lastAvailIdx;
  queue.pending();
  queue.claimChains(1, NET_HDR_LEN);
  driverQ.writeDesc(good.head, { addr: 0x10, len: 100, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  t.equal(queue.takeChain(true, 0xffffffff), 1, 'taken as read ahead');
  t.same([queue.segOffset[0], queue.segLength[0]], [good.off, 256], 'the buffer made available, inside guest memory');
  queue.lastAvailIdx = from;
  queue.pending();
  t.equal(queue.takeChain(true, 0xffffffff), CHAIN_BAD, 'after the next pending(), read again: outside guest memory, refused');
});

t.test('a queue\'s index word is the available index pending() reads', async (t) => {
  const { driverQ, owner } = setup(t, { size: 16 });
  const before = owner.queue.indexWord();
  postRxBuffer(driverQ, 256);
  postRxBuffer(driverQ, 256);
  t.equal(owner.queue.indexWord(), (before + 2) & 0xffff, 'avail->idx, two chains on');
  t.equal(owner.queue.pending(), 2);
});
