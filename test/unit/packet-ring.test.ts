// An AF_PACKET port's receive ring read by the PMD (src/dataplane/packet-ring.ts), on a
// ring of crafted blocks in a memfd instead of the kernel's: frames are taken as the
// kernel lays them out, and offsets that would put a frame outside its block (before its
// block's descriptor, past its end, misaligned) end the block rather than read elsewhere.
import t, { type Test } from 'tap';
import { PacketRings } from '../../src/dataplane/packet-ring.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { COUNTERS_PER_PORT, queueBase, RX_PACKETS } from '../../src/dataplane/counters.ts';
import { closeAll, ftruncate, memfdCreate, mmapShared, munmap, view } from '../../src/sys/libc.ts';
import { ethernetFrame } from '../support/virtio-driver.ts';

const BLOCK = 4096;
const SHAPE = { blockBytes: BLOCK, rxBlocks: 2, txBlocks: 1, txFrameBytes: 2048, retireMs: 10 };
const TP_STATUS_USER = 1;
/** where the crafted frames' data starts after their header (tp_mac), as the kernel puts it */
const MAC_AT = 66;

function setup(t: Test) {
  const fd = memfdCreate('packet-ring-test');
  const bytes = BLOCK * (SHAPE.rxBlocks + SHAPE.txBlocks);
  ftruncate(fd, bytes);
  const address = mmapShared(fd, bytes);
  const ring = view(address, bytes);
  t.teardown(() => (munmap(address, bytes), closeAll([fd])));
  const words = new Int32Array(ring);
  const u8 = new Uint8Array(ring);
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const rings = new PacketRings(-1, SHAPE, ring, counters, 0, queueBase(0, 0), 9018);
  const pool = PacketPool.standalone(16);
  const handles = new Uint32Array(16);
  /** a block handed over: `frames` frames, the first at `first` from the block's start */
  const block = (b: number, frames: number, first: number) => {
    words[(b * BLOCK) / 4 + 3] = frames;
    words[(b * BLOCK) / 4 + 4] = first;
    words[(b * BLOCK) / 4 + 2] = TP_STATUS_USER;
  };
  /** a frame's header and data at byte `at` of the ring; `next`: tp_next_offset */
  const frame = (at: number, data: Uint8Array, next: number) => {
    words[at / 4] = next;
    words[at / 4 + 3] = data.length;
    words[at / 4 + 4] = data.length;
    words[at / 4 + 5] = TP_STATUS_USER;
    new Uint16Array(u8.buffer, at + 24, 1)[0] = MAC_AT;
    u8.set(data, at + MAC_AT);
  };
  const taken = () => {
    const n = rings.receive(pool, handles, 0, 16);
    const frames = Array.from(handles.subarray(0, n), (h) => pool.data.slice(pool.frameOffset(h), pool.frameOffset(h) + pool.length[h]));
    for (let i = 0; i < n; i++) pool.free(handles[i]);
    return frames;
  };
  const released = (b: number) => words[(b * BLOCK) / 4 + 2] === 0;
  return { block, frame, taken, released, counters };
}

const one = ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60, 1);
const two = ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 100, 2);

t.test('frames are taken as the kernel lays them out, and each block given back', async (t) => {
  const { block, frame, taken, released, counters } = setup(t);
  frame(64, one, 256);
  frame(64 + 256, two, 0);
  block(0, 2, 64);
  t.same(taken(), [one, two], 'both frames of the block, byte for byte');
  t.ok(released(0), 'the block is the kernel\'s again');
  t.equal(counters[RX_PACKETS], 2, 'counted received');
});

t.test('a block whose first frame would lie outside it is given back unread', async (t) => {
  const { block, frame, taken, released, counters } = setup(t);
  // A frame that would pass every check, at the end of block 0: what a negative offset in
  // block 1 points at.
  frame(BLOCK - 256, one, 0);
  block(0, 0, 64);
  t.same(taken(), [], 'block 0 has no frames');
  block(1, 1, -256);
  t.same(taken(), [], 'an offset before its block: nothing read from the block before');
  t.ok(released(1), 'the block is given back');
  frame(8, two, 0);
  block(0, 1, 8);
  t.same(taken(), [], 'an offset within the block\'s descriptor: nothing read');
  t.ok(released(0), 'given back');
  block(1, 1, BLOCK - 16);
  t.same(taken(), [], 'a frame header that would run past the block: nothing read');
  t.ok(released(1), 'given back');
  frame(66, two, 0);
  block(0, 1, 66);
  t.same(taken(), [], 'a misaligned offset: nothing read');
  t.equal(counters[RX_PACKETS], 0, 'nothing counted received');
  frame(BLOCK + 64, one, 0);
  block(1, 1, 64);
  t.same(taken(), [one], 'the next good block is read');
});

t.test('a next offset that would leave the block, or is misaligned, ends it after the frame it follows', async (t) => {
  const { block, frame, taken, released } = setup(t);
  frame(64, one, BLOCK - 64 - 16);
  frame(BLOCK - 16, two, 0);
  block(0, 2, 64);
  t.same(taken(), [one], 'the frame before, not one whose header would run past the block');
  t.ok(released(0), 'given back');
  frame(BLOCK + 64, one, 258);
  frame(BLOCK + 64 + 258, two, 0);
  block(1, 2, 64);
  t.same(taken(), [one], 'not one at a misaligned offset');
  t.ok(released(1), 'given back');
});
