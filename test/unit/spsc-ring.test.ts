// The SPSC ring alone and between two threads, and the pool's return path across PMDs.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { SpscRing, spscRingBytes } from '../../src/dataplane/spsc-ring.ts';
import { createPoolMemory, PacketPool } from '../../src/dataplane/packet-pool.ts';

t.test('fill to capacity, then one more', async (t) => {
  const buffer = new SharedArrayBuffer(spscRingBytes(8));
  const producer = new SpscRing(buffer, 8);
  const consumer = new SpscRing(buffer, 8);
  const src = Uint32Array.from({ length: 9 }, (_, i) => 100 + i);
  t.equal(producer.enqueueBurst(src, 9), 8, 'only 8 fit');
  t.equal(producer.enqueueBurst(src, 1), 0, 'a full ring takes nothing and does not block');
  const dst = new Uint32Array(16);
  t.equal(consumer.dequeueBurst(dst, 3), 3);
  t.same([...dst.subarray(0, 3)], [100, 101, 102], 'in order');
  t.equal(producer.enqueueBurst(src, 9), 3, 'room for the three taken');
  t.equal(consumer.dequeueBurst(dst, 16, 1), 8, 'dequeue into an offset');
  t.same([...dst.subarray(1, 9)], [103, 104, 105, 106, 107, 100, 101, 102]);
  t.equal(consumer.dequeueBurst(dst, 16), 0, 'empty');
  t.throws(() => new SpscRing(buffer, 6), /power of 2/);
});

t.test('indices wrap past 2^31 without losing entries', async (t) => {
  const buffer = new SharedArrayBuffer(spscRingBytes(4));
  const words = new Int32Array(buffer);
  words[0] = 0x7ffffffe; // head
  words[16] = 0x7ffffffe; // tail
  const p = new SpscRing(buffer, 4);
  const c = new SpscRing(buffer, 4);
  const dst = new Uint32Array(4);
  for (let round = 0; round < 5; round++) {
    t.equal(p.enqueueBurst(Uint32Array.of(round, round + 1, round + 2), 3), 3);
    t.equal(c.dequeueBurst(dst, 4), 3);
    t.same([...dst.subarray(0, 3)], [round, round + 1, round + 2], `round ${round}`);
  }
});

t.test('two threads: every handle arrives once, in order', async (t) => {
  const capacity = 256;
  const buffer = new SharedArrayBuffer(spscRingBytes(capacity));
  const total = 200_000;
  const consumer = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const words = new Int32Array(workerData.buffer, 0, 32);
     const slots = new Uint32Array(workerData.buffer, 128, workerData.capacity);
     let tail = 0, expected = 0, bad = 0;
     while (expected < workerData.total) {
       const head = Atomics.load(words, 0);
       while (tail !== head) { if (slots[tail & (workerData.capacity - 1)] !== expected) bad++; expected++; tail = (tail + 1) | 0; }
       Atomics.store(words, 16, tail);
     }
     parentPort.postMessage({ bad, expected });`,
    { eval: true, workerData: { buffer, capacity, total } },
  );
  const ring = new SpscRing(buffer, capacity);
  const burst = new Uint32Array(32);
  let next = 0;
  while (next < total) {
    const n = Math.min(32, total - next);
    for (let i = 0; i < n; i++) burst[i] = next + i;
    next += ring.enqueueBurst(burst, n);
  }
  const result = await new Promise<{ bad: number; expected: number }>((resolve) => consumer.once('message', resolve));
  await consumer.terminate();
  t.same(result, { bad: 0, expected: total }, 'no handle lost, duplicated or reordered');
});

t.test('a buffer freed on another PMD goes back to its owner', async (t) => {
  const memory = createPoolMemory(2, 4);
  const rings = [0, 1].map(() => new SharedArrayBuffer(spscRingBytes(4)));
  // rings[0]: PMD 1 returns PMD 0's buffers; rings[1]: PMD 0 returns PMD 1's buffers
  const pmd0 = new PacketPool(memory, 0, [null, new SpscRing(rings[1], 4)], [null, new SpscRing(rings[0], 4)]);
  const pmd1 = new PacketPool(memory, 1, [new SpscRing(rings[0], 4), null], [new SpscRing(rings[1], 4), null]);
  const taken = [pmd0.alloc(), pmd0.alloc(), pmd0.alloc(), pmd0.alloc()];
  t.same(taken.sort(), [0, 1, 2, 3], 'PMD 0 allocates from its own partition');
  t.equal(pmd0.alloc(), -1, 'then it is empty');
  t.equal(pmd1.alloc() >= 4, true, 'PMD 1 has its own partition');
  for (const h of taken) pmd1.free(h);
  pmd1.flushAllReturns();
  t.equal(pmd0.available, 0, 'nothing back before PMD 0 looks');
  t.not(pmd0.alloc(), -1, 'alloc reclaims the returned buffers');
  t.equal(pmd0.available, 3);
});

/** The pools of PMDs 0 and 1 in `memory`, each with its return rings to the other. */
function twoPools(memory: ReturnType<typeof createPoolMemory>): [PacketPool, PacketPool] {
  const capacity = memory.returnCapacity;
  // rings[0]: PMD 1 returns PMD 0's buffers; rings[1]: PMD 0 returns PMD 1's buffers
  const rings = [0, 1].map(() => new SharedArrayBuffer(spscRingBytes(capacity)));
  return [
    new PacketPool(memory, 0, [null, new SpscRing(rings[1], capacity)], [null, new SpscRing(rings[0], capacity)]),
    new PacketPool(memory, 1, [new SpscRing(rings[0], capacity), null], [new SpscRing(rings[1], capacity), null]),
  ];
}

t.test('an empty pool whose returns are only super-frame buffers has no small buffer to give', async (t) => {
  const memory = createPoolMemory(2, 2, 2);
  const [pmd0, pmd1] = twoPools(memory);
  const small = [pmd0.alloc(), pmd0.alloc()];
  const superFrame = pmd0.allocSuper();
  t.ok(small.every((h) => h >= 0) && superFrame >= 0, 'its small buffers taken, and a super-frame buffer');
  pmd1.free(superFrame);
  pmd1.flushAllReturns();
  t.equal(pmd0.alloc(), -1, 'none: the super-frame buffer that came back is not one');
  t.equal(pmd0.available, 0, 'and the count of free small buffers stays 0');
  t.equal(pmd0.superAvailable, 2, 'the super-frame buffer is free again');
  pmd1.free(small[0]);
  pmd1.flushAllReturns();
  t.equal(pmd0.alloc(), small[0], 'a small buffer given back is given out again');
});

t.test("freeBurst: a burst's buffers freed in one call, as free() frees each, but those marked kept", async (t) => {
  const memory = createPoolMemory(2, 4, 2);
  const [pmd0, pmd1] = twoPools(memory);
  const own = [pmd1.alloc(), pmd1.alloc(), pmd1.alloc()];
  const foreign = [pmd0.alloc(), pmd0.alloc()];
  const superFrame = pmd1.allocSuper();
  t.ok(own.every((h) => h >= 0) && foreign.every((h) => h >= 0) && superFrame >= 0, 'buffers of both PMDs, and a super-frame buffer');
  const small = pmd1.available;
  const supers = pmd1.superAvailable;
  const KEPT = 255;
  const marks = new Uint8Array(memory.handleCount);
  marks[own[1]] = KEPT;
  const burst = Uint32Array.from([own[0], foreign[0], own[1], superFrame, own[2], foreign[1]]);
  pmd1.freeBurst(burst, burst.length, marks, KEPT);
  t.equal(pmd1.available, small + 2, 'its own small buffers are back on its stack, the one marked kept is not');
  t.equal(pmd1.superAvailable, supers + 1, 'its super-frame buffer too');
  pmd1.flushAllReturns();
  const before = pmd0.available;
  t.equal(pmd0.reclaim(), 2, "the other PMD's buffers go back to it");
  t.equal(pmd0.available, before + 2);
  const again = new Set<number>();
  for (let h = pmd1.alloc(); h >= 0; h = pmd1.alloc()) again.add(h);
  t.ok(again.has(own[0]) && again.has(own[2]) && !again.has(own[1]), 'the freed ones are allocated again, the kept one is not');
});
