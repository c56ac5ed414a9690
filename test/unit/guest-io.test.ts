// The split-ring data path against a driver written here: frames in both directions,
// hostile descriptor chains, 16-bit index wrap-around, mergeable buffers, interrupts.
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { deliverBurst, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, DROP, DROPS_BASE, RX_PACKETS, TX_PACKETS } from '../../src/dataplane/counters.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

function setup(t: Test, opts: { size?: number; startIdx?: number; eventIdx?: boolean; maxFrame?: number } = {}) {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const driverQ = new DriverQueue(ram, opts.size ?? 256, { startIdx: opts.startIdx, eventIdx: opts.eventIdx });
  const mem = new GuestMemory([ram.region()]);
  const queue = SplitQueue.create(mem, driverQ.layout());
  if (typeof queue === 'string') throw new Error(queue);
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters, counterBase: 0, maxFrame: opts.maxFrame ?? 1518 };
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
  const frames = [ethernetFrame(B, A, 50, 1), ethernetFrame(B, A, 1000, 2), ethernetFrame(B, A, 300, 3)];
  const heads = [
    sendFrame(driverQ, frames[0]),
    sendFrame(driverQ, frames[1], { split: [6, 6, 14, 1000] }), // header split over two descriptors
    sendFrame(driverQ, frames[2], { split: [NET_HDR_LEN, 314], indirect: true }),
  ];
  const n = receiveBurst(owner, pool, handles, 0, 32);
  t.equal(n, 3, 'three frames taken');
  frames.forEach((f, i) => t.same(frameOf(pool, handles[i]), f, `frame ${i} copied byte for byte`));
  t.same(driverQ.takeUsed().map((u) => u.id), heads, 'every chain returned in order');
  t.equal(counters[RX_PACKETS], 3);
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 0, 'nothing more pending');
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

t.test('guest RX: mergeable buffers spanning several descriptors', async (t) => {
  const { ram, driverQ, owner, counters, pool } = setup(t, { maxFrame: 9018 });
  const rx = [postRxBuffer(driverQ, 1024), postRxBuffer(driverQ, 1024), postRxBuffer(driverQ, 1024)];
  const frame = ethernetFrame(A, B, 2500 - 14, 9);
  const h = pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  t.equal(deliverBurst(owner, true, pool, Uint32Array.of(h), 1), 1);
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

t.test('queue layout is validated before any view is made', async (t) => {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const q = new DriverQueue(ram, 256);
  const mem = new GuestMemory([ram.region()]);
  t.match(SplitQueue.create(mem, q.layout({ size: 100 })), /power of 2/);
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
