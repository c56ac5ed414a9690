// A guest's descriptor chains taken in steady state allocate nothing, where its memory lies
// past 2 GiB of guest-physical addresses (a guest of more than 3 GiB has RAM above 4 GiB):
// such an address is no small integer, and passed to a function V8 did not inline it is a
// heap number at every call. Chains of two descriptors (the virtio-net header apart, as
// Linux sends a frame with fragments) and indirect tables, on split and packed rings, with
// frames copied in JavaScript and frames long enough for the native copy; and long frames
// from one guest's TX queue into another's RX queue, copied twice and once.
// Measured with V8 inlining nothing (test/support/steady-allocation.ts says why).
import t from 'tap';
import { deliverBurst, NATIVE_COPY_MIN, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { DeferredPayloads } from '../../src/dataplane/deferred-payloads.ts';
import { COUNTERS_PER_PORT, QUEUES_BASE } from '../../src/dataplane/counters.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { PackedQueue } from '../../src/virtio/packed-queue.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { NET_HDR_LEN, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED } from '../../src/virtio/constants.ts';
import { DriverQueue, ethernetFrame, GuestRam } from '../support/virtio-driver.ts';
import { PackedDriverQueue } from '../support/packed-driver.ts';
import { checkSteady, steadyAllocation } from '../support/steady-allocation.ts';

const BURST = 32;
const SIZE = 256;
const CHUNK = 50;
const WARM_UP = 20_000;
const MEASURED = 10_000;
/** 5 GiB: past 4 GiB, as a large guest's RAM above the PCI hole (its low word 2^30: the test's own stores of it stay small integers) */
const GPA_BASE = 5 * 2 ** 30;
/** Frames copied in JavaScript (shorter than NATIVE_COPY_MIN), and by Node's copy. */
const FRAMES = [ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 186), ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 1504)];

type Kind = 'chained' | 'indirect';

/** A queue's owner as the PMD has it; `queue` a queue, or why it could not be made. */
function ownerOf(queue: SplitQueue | PackedQueue | string): QueueOwner {
  if (typeof queue === 'string') throw new Error(queue);
  return { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: 0 };
}

/** Each chain: the header, then the frame; or one descriptor pointing at a table of those two. */
function chainBuffers(ram: GuestRam, frame: Uint8Array): { addr: number; len: number }[] {
  const off = ram.alloc(NET_HDR_LEN + frame.length);
  ram.bytes.set(frame, off + NET_HDR_LEN);
  return [
    { addr: ram.gpa(off), len: NET_HDR_LEN },
    { addr: ram.gpa(off + NET_HDR_LEN), len: frame.length },
  ];
}

/** A split TX ring whose chains are written once; a round makes BURST of them available again. */
function splitRing(kind: Kind, ram: GuestRam, mem: GuestMemory, frame: Uint8Array): { owner: QueueOwner; post: () => void } {
  const q = new DriverQueue(ram, SIZE);
  const heads: number[] = [];
  for (let c = 0; c < (kind === 'chained' ? SIZE / 2 : SIZE); c++) heads.push(kind === 'chained' ? q.addChain(chainBuffers(ram, frame)) : q.addIndirectChain(chainBuffers(ram, frame)));
  const owner = ownerOf(SplitQueue.create(mem, q.layout()));
  const ringHeads = Uint16Array.from(heads);
  let next = 0;
  const post = () => {
    for (let i = 0; i < BURST; i++) {
      ram.dv.setUint16(q.availOff + 4 + 2 * ((q.availIdx + i) % SIZE), ringHeads[next], true);
      next = next + 1 < ringHeads.length ? next + 1 : 0;
    }
    q.availIdx = (q.availIdx + BURST) & 0xffff;
    q.setAvailIdx(q.availIdx);
  };
  return { owner, post };
}

/** A packed TX ring: each round the driver writes BURST chains anew at its position, the flags of each chain's first descriptor last. */
function packedRing(kind: Kind, ram: GuestRam, mem: GuestMemory, frame: Uint8Array): { owner: QueueOwner; post: () => void } {
  const q = new PackedDriverQueue(ram, SIZE);
  const owner = ownerOf(PackedQueue.create(mem, q.layout()));
  const perChain = kind === 'chained' ? 2 : 1;
  // One chain's buffers per descriptor pair (or table) slot, written once.
  const addrs = new Float64Array(SIZE);
  const lens = new Uint32Array(SIZE);
  for (let at = 0; at < SIZE; at += perChain) {
    const buffers = chainBuffers(ram, frame);
    if (kind === 'chained') {
      addrs[at] = buffers[0].addr;
      lens[at] = buffers[0].len;
      addrs[at + 1] = buffers[1].addr;
      lens[at + 1] = buffers[1].len;
    } else {
      const table = ram.alloc(32, 16);
      buffers.forEach((b, i) => {
        ram.dv.setUint32(table + 16 * i, b.addr % 2 ** 32, true);
        ram.dv.setUint32(table + 16 * i + 4, Math.floor(b.addr / 2 ** 32), true);
        ram.dv.setUint32(table + 16 * i + 8, b.len, true);
      });
      addrs[at] = ram.gpa(table);
      lens[at] = 32;
    }
  }
  let position = 0;
  let wrap = 1;
  const post = () => {
    const marks = wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
    for (let c = BURST - 1; c >= 0; c--) {
      for (let k = perChain - 1; k >= 0; k--) {
        const at = position + c * perChain + k;
        const o = q.descOff + 16 * at;
        ram.dv.setUint32(o, addrs[at] % 4294967296, true);
        ram.dv.setUint32(o + 4, Math.floor(addrs[at] / 4294967296), true);
        ram.dv.setUint32(o + 8, lens[at], true);
        ram.dv.setUint16(o + 12, position + c * perChain, true);
        ram.dv.setUint16(o + 14, marks | (kind === 'indirect' ? VIRTQ_DESC_F_INDIRECT : k === 0 ? VIRTQ_DESC_F_NEXT : 0), true);
      }
    }
    position += BURST * perChain;
    if (position === SIZE) {
      position = 0;
      wrap ^= 1;
    }
  };
  return { owner, post };
}

for (const frame of FRAMES) {
  const copy = frame.length < NATIVE_COPY_MIN ? 'copied in JavaScript' : "Node's copy";
  for (const layout of ['split', 'packed'] as const) {
    for (const kind of ['chained', 'indirect'] as const) {
      t.test(`${layout} ring, ${kind === 'chained' ? 'chains of two descriptors' : 'indirect tables'}, at 5 GiB, ${frame.length}-byte frames (${copy})`, async (t) => {
        const ram = new GuestRam(8 << 20, { gpaBase: GPA_BASE });
        t.teardown(() => ram.close());
        const mem = new GuestMemory([ram.region()]);
        const { owner, post } = layout === 'split' ? splitRing(kind, ram, mem, frame) : packedRing(kind, ram, mem, frame);
        const pool = PacketPool.standalone(256);
        const handles = new Uint32Array(BURST);
        const taken = new Int32Array(1);
        const run = () => {
          for (let b = 0; b < CHUNK; b++) {
            post();
            const n = receiveBurst(owner, pool, handles, 0, BURST);
            taken[0] = n;
            for (let i = 0; i < n; i++) pool.free(handles[i]);
          }
        };
        for (let c = 0; c < WARM_UP / CHUNK; c++) run();
        t.equal(taken[0], BURST, 'every chain of a burst taken');
        t.equal(pool.length[handles[0]], frame.length, 'as a frame of its length');
        t.same(pool.data.subarray(pool.frameOffset(handles[0]), pool.frameOffset(handles[0]) + frame.length), frame, 'byte for byte');
        t.equal(owner.queue.failure, '', 'the queue never failed');
        checkSteady(t, await steadyAllocation(run, MEASURED / CHUNK), MEASURED);
      });
    }
  }
}

// A guest's TX queue into another's RX queue (mergeable buffers of 2 KiB), both at 5 GiB:
// through the packet buffers, and once from the sender's memory into the receiver's (its
// rest left there: DeferredPayloads).
for (const copies of ['twice', 'once'] as const) {
  t.test(`${FRAMES[1].length}-byte frames from a TX queue into an RX queue, at 5 GiB, copied ${copies}`, async (t) => {
    const frame = FRAMES[1];
    const ram = new GuestRam(8 << 20, { gpaBase: GPA_BASE });
    t.teardown(() => ram.close());
    const mem = new GuestMemory([ram.region()]);
    const tx = new DriverQueue(ram, SIZE);
    const rx = new DriverQueue(ram, SIZE);
    const rxBuffers: number[] = [];
    for (let i = 0; i < SIZE; i++) {
      const at = ram.alloc(NET_HDR_LEN + frame.length);
      ram.bytes.set(frame, at + NET_HDR_LEN);
      tx.writeDesc(i, { addr: ram.gpa(at), len: NET_HDR_LEN + frame.length, flags: 0, next: 0 });
      rxBuffers.push(ram.alloc(2048));
      rx.writeDesc(i, { addr: ram.gpa(rxBuffers[i]), len: 2048, flags: 2, next: 0 });
    }
    const txOwner = ownerOf(SplitQueue.create(mem, tx.layout()));
    const rxOwner = ownerOf(SplitQueue.create(mem, rx.layout()));
    const pool = PacketPool.standalone(256);
    const deferred = copies === 'once' ? new DeferredPayloads(256, BURST) : null;
    const handles = new Uint32Array(BURST);
    const moved = new Int32Array(1);
    /** frames of the last burst whose rests stayed in the sender's memory */
    const left = new Int32Array(1);
    const queues = [tx, rx];
    const run = () => {
      for (let b = 0; b < CHUNK; b++) {
        for (const q of queues) {
          for (let i = 0; i < BURST; i++) ram.dv.setUint16(q.availOff + 4 + 2 * ((q.availIdx + i) % SIZE), (q.availIdx + i) % SIZE, true);
          q.availIdx = (q.availIdx + BURST) & 0xffff;
          q.setAvailIdx(q.availIdx);
        }
        const n = receiveBurst(txOwner, pool, handles, 0, BURST, deferred);
        left[0] = deferred === null ? 0 : deferred.count;
        moved[0] = deliverBurst(rxOwner, true, pool, handles, n, deferred);
        for (let i = 0; i < n; i++) pool.free(handles[i]);
        if (deferred !== null && deferred.count > 0) deferred.release();
      }
    };
    for (let c = 0; c < WARM_UP / CHUNK; c++) run();
    t.equal(moved[0], BURST, 'every frame of a burst delivered');
    t.equal(left[0], copies === 'once' ? BURST : 0, copies === 'once' ? "each frame's rest left in the sender's memory" : 'every frame copied whole into its buffer');
    const last = rxBuffers[(rx.availIdx - 1) % SIZE];
    t.same(ram.bytes.subarray(last + NET_HDR_LEN, last + NET_HDR_LEN + frame.length), frame, 'byte for byte');
    t.equal(txOwner.queue.failure + rxOwner.queue.failure, '', 'neither queue failed');
    checkSteady(t, await steadyAllocation(run, MEASURED / CHUNK), MEASURED);
  });
}
