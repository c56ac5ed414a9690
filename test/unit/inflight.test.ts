// The inflight record of a split queue (INFLIGHT_SHMFD): what the data path marks while a
// burst is under way and clears once it is published; where a new owner of the queue
// resumes from it (chains taken again, a last batch published but not cleared, chains a
// foreign backend left out of order); and records a hostile frontend filled with garbage.
import t, { type Test } from 'tap';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { INFLIGHT_VERSION, inflightQueueBytes, OFF_DESC_NUM, OFF_LAST_BATCH_HEAD, OFF_USED_IDX, OFF_VERSION } from '../../src/virtio/inflight.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { deliverBurst, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, queueBase } from '../../src/dataplane/counters.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxChain, sendFrame } from '../support/virtio-driver.ts';
import { prng } from '../support/prng.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const SIZE = 64;

function setup(t: Test) {
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const driverQ = new DriverQueue(ram, SIZE, { eventIdx: true });
  const mem = new GuestMemory([ram.region()]);
  const area = new Uint8Array(inflightQueueBytes(SIZE));
  const record = new DataView(area.buffer);
  /** a new owner of the queue (a vrouter started afresh), resuming at `lastAvailIdx` (-1: the used ring) */
  const open = (lastAvailIdx = driverQ.availIdx) => {
    const queue = SplitQueue.create(mem, driverQ.layout({ lastAvailIdx }), area);
    if (typeof queue === 'string') throw new Error(queue);
    const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: queueBase(0, 0), maxFrame: 1518, offloads: 0 };
    return owner;
  };
  const marked = () => Array.from({ length: SIZE }, (_, head) => head).filter((head) => area[16 + 16 * head] !== 0);
  return { ram, driverQ, area, record, open, marked, pool: PacketPool.standalone(64), handles: new Uint32Array(32) };
}

t.test('a blank record is started for the queue; a published burst leaves nothing marked', async (t) => {
  const { driverQ, record, open, marked, pool, handles } = setup(t);
  const owner = open();
  t.same(owner.queue.inflightRecovery, { retaken: 0, returned: 0, fresh: true, disagreed: 0 }, 'a blank record: nothing to recover');
  t.equal(record.getUint16(OFF_VERSION, true), INFLIGHT_VERSION, 'version written');
  t.equal(record.getUint16(OFF_DESC_NUM, true), SIZE, 'desc_num is the queue size');
  const heads = [1, 2, 3].map((i) => sendFrame(driverQ, ethernetFrame(B, A, 60, i)));
  t.equal(receiveBurst(owner, pool, handles, 0, 32), 3);
  t.same(marked(), [], 'no chain marked once the burst is published');
  t.equal(record.getUint16(OFF_USED_IDX, true), driverQ.usedIdx(), "the record's used_idx follows the ring's");
  t.equal(record.getUint16(OFF_LAST_BATCH_HEAD, true), heads[2], 'last_batch_head is the last chain returned');
});

t.test('chains taken and not yet published are marked; a new owner takes them again, once', async (t) => {
  const { driverQ, open, marked, pool, handles } = setup(t);
  const first = open();
  const frames = [1, 2, 3, 4].map((i) => ethernetFrame(B, A, 60, i));
  const heads = frames.map((f) => sendFrame(driverQ, f));
  // The first owner takes two chains and dies before publishing them.
  const split = first.queue as SplitQueue;
  split.putUsed(split.availHead(0), 0);
  split.putUsed(split.availHead(1), 0);
  first.queue.lastAvailIdx = 2;
  t.same(marked(), heads.slice(0, 2), 'the two chains taken are marked');
  t.equal(driverQ.usedIdx(), 0, 'nothing published');
  // The frontend believes all four were taken (the base it last heard): the record knows better.
  const second = open(4);
  t.same(second.queue.inflightRecovery, { retaken: 2, returned: 0, fresh: false, disagreed: 0 }, 'two chains in flight, at the head of the ring');
  t.equal(second.queue.lastAvailIdx, 0, 'resumes where the used ring stopped, not at the base it was given');
  t.equal(receiveBurst(second, pool, handles, 0, 32), 4, 'all four frames taken, none lost');
  t.same(driverQ.takeUsed().map((u) => u.id), heads, 'each chain returned once, in order');
  t.same(marked(), [], 'nothing left marked');
});

t.test('an owner that died between publishing a batch and clearing it: the batch is not taken again', async (t) => {
  const { driverQ, area, record, open, marked, pool, handles } = setup(t);
  const first = open();
  const heads = [1, 2, 3].map((i) => sendFrame(driverQ, ethernetFrame(B, A, 60, i)));
  t.equal(receiveBurst(first, pool, handles, 0, 32), 3);
  // Put the record back as it was between used->idx moving and the marks going.
  for (const head of heads) area[16 + 16 * head] = 1;
  record.setUint16(OFF_USED_IDX, 0, true);
  const second = open(-1);
  t.same(second.queue.inflightRecovery, { retaken: 0, returned: 0, fresh: false, disagreed: 0 }, 'the last batch is known returned');
  t.same(marked(), [], 'its marks cleared');
  t.equal(record.getUint16(OFF_USED_IDX, true), 3, 'used_idx caught up with the ring');
  t.equal(second.queue.lastAvailIdx, 3, 'resumes after the batch');
  t.equal(receiveBurst(second, pool, handles, 0, 32), 0, 'nothing taken twice');
});

t.test('chains a foreign backend left in flight out of ring order are returned unprocessed', async (t) => {
  const { driverQ, area, record, open, marked } = setup(t);
  open();
  const heads = [1, 2, 3].map((i) => sendFrame(driverQ, ethernetFrame(B, A, 60, i)));
  // In flight: the third and the first (a backend that completes out of order returned the second).
  const mark = (head: number, counter: number) => {
    area[16 + 16 * head] = 1;
    record.setUint32(16 + 16 * head + 8, counter, true);
  };
  mark(heads[2], 7);
  mark(heads[0], 9);
  const second = open(-1);
  t.same(second.queue.inflightRecovery, { retaken: 0, returned: 2, fresh: false, disagreed: 0 }, 'two chains returned');
  t.same(driverQ.takeUsed(), [{ id: heads[2], len: 0 }, { id: heads[0], len: 0 }], 'returned with length 0, oldest counter first');
  t.equal(second.queue.lastAvailIdx, 2, 'resumes where that backend had got to (used index + chains in flight)');
  t.same(marked(), [], 'nothing left marked');
});

t.test('guest RX: chains a frame took and gave back (rolled back) are unmarked', async (t) => {
  const { driverQ, open, marked, pool } = setup(t);
  const owner = open();
  // Two small chains: a large frame takes both, runs out, and rolls back.
  postRxChain(driverQ, [12 + 100]);
  postRxChain(driverQ, [100]);
  const handle = pool.alloc();
  pool.length[handle] = 1000;
  const handles = new Uint32Array([handle]);
  deliverBurst(owner, true, pool, handles, 1);
  t.equal(driverQ.usedIdx(), 0, 'nothing delivered: the frame did not fit');
  t.same(marked(), [], 'the chains it took are not left marked');
});

t.test('a record full of garbage: bounded, no exception, the queue still works', async (t) => {
  const { driverQ, area, record, open, pool, handles } = setup(t);
  const rand = prng(7);
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < area.length; i++) area[i] = (rand() * 256) | 0;
    // Half the rounds keep a few marks (fewer than the chains available), half keep them all.
    if (round % 2 === 0) for (let head = 0; head < SIZE; head++) if (rand() > 0.02) area[16 + 16 * head] = 0;
    record.setUint16(OFF_VERSION, INFLIGHT_VERSION, true);
    record.setUint16(OFF_DESC_NUM, SIZE, true);
    sendFrame(driverQ, ethernetFrame(B, A, 60, round));
    sendFrame(driverQ, ethernetFrame(B, A, 60, round));
    const owner = open(-1);
    const found = owner.queue.inflightRecovery!;
    t.ok(found.retaken + found.returned <= 2, `round ${round}: no more recovered than the driver made available`);
    const n = receiveBurst(owner, pool, handles, 0, 32);
    t.ok(n >= 0, `round ${round}: the queue still runs`);
    t.equal(driverQ.usedIdx(), driverQ.availIdx, `round ${round}: every chain made available is returned`);
    driverQ.takeUsed();
    for (let h = 0; h < n; h++) pool.free(handles[h]);
  }
});
