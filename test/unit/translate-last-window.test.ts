// The rings' walks try the window of the last translation before GuestMemory.translateAt()
// (written out in split-queue.ts and packed-queue.ts): with guest memory in two regions,
// buffers that alternate between them, and buffers outside both right after one inside,
// every chain must come out as a fresh translation says, and nothing outside be taken.
import t, { type Test } from 'tap';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { PackedQueue } from '../../src/virtio/packed-queue.ts';
import { CHAIN_BAD, type Virtqueue } from '../../src/virtio/virtqueue.ts';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { DriverQueue, GuestRam } from '../support/virtio-driver.ts';
import { PackedDriverQueue } from '../support/packed-driver.ts';

/** guest physical address of the second region: past the first, with a gap between */
const SECOND_GPA = 0x10000000;
const BUFFER = 2048;

interface Place {
  addr: number;
  /** the marker byte written at its start, or -1 for an address outside guest memory */
  marker: number;
}

function twoRegions(t: Test): { first: GuestRam; second: GuestRam; mem: GuestMemory; places: Place[] } {
  const first = new GuestRam();
  const second = new GuestRam();
  t.teardown(() => {
    first.close();
    second.close();
  });
  const mem = new GuestMemory([first.region(), { ...second.region(), guestPhysAddr: SECOND_GPA, userAddr: second.uvaBase + (1 << 30) }]);
  t.equal(mem.count, 2, 'two windows');
  const inFirst = (marker: number): Place => {
    const off = first.alloc(BUFFER);
    first.bytes[off] = marker;
    return { addr: first.gpa(off), marker };
  };
  const inSecond = (marker: number): Place => {
    const off = second.alloc(BUFFER);
    second.bytes[off] = marker;
    return { addr: SECOND_GPA + off, marker };
  };
  const places = [
    inFirst(1),
    inSecond(2),
    inSecond(3),
    inFirst(4),
    // right after a buffer of the first region: in the gap between the two
    { addr: first.gpa(first.size - 16), marker: -1 },
    inSecond(5),
    // past the end of the second region by a few bytes: its start is inside the last window
    { addr: SECOND_GPA + second.size - BUFFER + 8, marker: -1 },
    inFirst(6),
  ];
  return { first, second, mem, places };
}

function expectWalks(t: Test, queue: Virtqueue, places: Place[], writable: boolean): void {
  for (const [k, place] of places.entries()) {
    const segments = queue.takeChain(writable, 9000);
    if (place.marker < 0) {
      t.equal(segments, CHAIN_BAD, `chain ${k}, outside guest memory: refused`);
    } else {
      t.equal(segments, 1, `chain ${k}: one segment`);
      t.equal(queue.mem.bytes[queue.segWindow[0]][queue.segOffset[0]], place.marker, `chain ${k}: the buffer at its address`);
      t.ok(queue.mem.translate(place.addr, BUFFER), `chain ${k}: a fresh translation finds it too`);
    }
    queue.returnChain(0);
  }
}

/**
 * Claims the chains of every place: nothing is written outside guest memory, and each
 * buffer inside starts with a zero (a split ring's claims write the header there, a
 * packed ring's a zero), which the walks then find.
 */
function claimAll(t: Test, queue: Virtqueue, first: GuestRam, second: GuestRam, places: Place[]): void {
  const gapBefore = first.bytes.slice(first.size - 16);
  const endBefore = second.bytes.slice(second.size - BUFFER + 8);
  queue.claimChains(places.length, NET_HDR_LEN);
  t.same(first.bytes.slice(first.size - 16), gapBefore, 'nothing written for the chain in the gap');
  t.same(second.bytes.slice(second.size - BUFFER + 8), endBefore, 'nor for the one past the second region');
  for (const p of places) if (p.marker >= 0) p.marker = 0;
}

/** A split ring (its rings in the first region) with a chain of one buffer at each place made available. */
function splitRing(first: GuestRam, mem: GuestMemory, places: Place[], write: boolean): SplitQueue {
  const driver = new DriverQueue(first, 16);
  const queue = SplitQueue.create(mem, driver.layout());
  if (typeof queue === 'string') throw new Error(queue);
  driver.makeAvailable(...places.map((p) => driver.addChain([{ addr: p.addr, len: BUFFER, write }])));
  return queue;
}

t.test('split ring: chains alternating between two regions, and outside both', async (t) => {
  const { first, mem, places } = twoRegions(t);
  const queue = splitRing(first, mem, places, false);
  t.equal(queue.pending(), places.length);
  expectWalks(t, queue, places, false);
});

t.test('split ring: claims and the walk after them, across two regions', async (t) => {
  const { first, second, mem, places } = twoRegions(t);
  const queue = splitRing(first, mem, places, true);
  t.equal(queue.pending(), places.length);
  claimAll(t, queue, first, second, places);
  expectWalks(t, queue, places, true);
});

t.test('packed ring: claims and walks across two regions', async (t) => {
  const { first, second, mem, places } = twoRegions(t);
  const driver = new PackedDriverQueue(first, 16);
  const queue = PackedQueue.create(mem, driver.layout());
  if (typeof queue === 'string') throw new Error(queue);
  for (const p of places) driver.addChain([{ addr: p.addr, len: BUFFER, write: true }]);
  driver.makeAvailable();
  t.ok(queue.pending() > 0);
  claimAll(t, queue, first, second, places);
  expectWalks(t, queue, places, true);
});
