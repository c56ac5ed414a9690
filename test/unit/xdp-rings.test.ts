// An AF_XDP queue as the PMD sees it, against a kernel played by the test
// (test/support/xdp-kernel.ts). Received frames are copied out and their chunks
// go back to the fill ring; descriptors naming memory outside the receive chunks are counted
// and never read; frames sent land in their slots' chunks, at most as many as there are slots
// until completions free them; a second PMD resumes where the first stood.
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { XdpRings } from '../../src/dataplane/xdp-rings.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { COUNTERS_PER_PORT, DROP, DROPS_BASE, RX_PACKETS, TX_PACKETS, queueBase } from '../../src/dataplane/counters.ts';
import { HEADROOM, playedKernel, RING } from '../support/xdp-kernel.ts';

/** 16 receive chunks and 8 transmit slots of 2 KiB: rings small enough to fill */
const LAYOUT = { chunkBytes: 2048, rxFrames: 16, rxSize: 16, txSize: 8, umemBytes: 24 * 2048 };

function setup(t: Test) {
  const kernel = playedKernel(LAYOUT.rxSize, LAYOUT.txSize);
  t.teardown(() => kernel.close());
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const pool = PacketPool.standalone(64);
  const handles = new Uint32Array(32);
  // Not an AF_XDP socket: the statistics and kicks fail, quietly, as on an interface gone.
  const fd = sys.memfdCreate('not-a-socket');
  t.teardown(() => sys.closeAll([fd]));
  const open = () => new XdpRings(fd, kernel.layout, kernel.maps, counters, 0, queueBase(0, 0), 1518);
  return { ...kernel, counters, pool, handles, open };
}

const drop = (counters: Float64Array, reason: keyof typeof DROP) => counters[DROPS_BASE + DROP[reason]];
const bytesOf = (pool: PacketPool, h: number) => pool.data.slice(pool.frameOffset(h), pool.frameOffset(h) + pool.length[h]);

t.test('received frames are copied out whole, and their chunks go back to the fill ring', async (t) => {
  const k = setup(t);
  const q = k.open();
  const chunks = [k.receiveInto(60, 1), k.receiveInto(1514, 2), k.receiveInto(300, 3)];
  t.equal(q.receive(k.pool, k.handles, 0, 32), 3, 'three frames taken');
  [60, 1514, 300].forEach((len, i) => {
    const want = Uint8Array.from({ length: len }, (_, b) => (i + 1 + b) & 0xff);
    t.same(bytesOf(k.pool, k.handles[i]), want, `frame ${i} (${len} bytes) as the kernel wrote it`);
  });
  t.equal(k.rx.u32[RING.consumer / 4], 3, 'the rx consumer moved past them');
  t.equal(k.fill.u32[0], LAYOUT.rxFrames + 3, 'three chunks back on the fill ring');
  t.same([0, 1, 2].map((i) => k.fill.u32[RING.desc / 4 + 2 * ((LAYOUT.rxFrames + i) % LAYOUT.rxSize)]), chunks, 'the same chunks, at their start');
  t.equal(k.counters[RX_PACKETS], 3, 'counted');
  // Round and round: many more frames than chunks, every one received.
  let taken = 0;
  for (let n = 0; n < 100; n++) {
    k.receiveInto(64, n);
    taken += q.receive(k.pool, k.handles, 0, 32);
    k.pool.free(k.handles[0]);
  }
  t.equal(taken, 100, `100 more frames through ${LAYOUT.rxFrames} chunks`);
});

t.test('a descriptor outside the receive chunks is counted and never read; the frames around it pass', async (t) => {
  const k = setup(t);
  const q = k.open();
  k.receiveInto(64, 7);
  k.post(HEADROOM, 64, 1); // above 4 GiB
  k.post(LAYOUT.rxFrames * LAYOUT.chunkBytes + HEADROOM, 64); // a transmit chunk
  k.post(LAYOUT.umemBytes + 4096, 64); // past the UMEM
  k.post(3 * LAYOUT.chunkBytes + 2000, 100); // across the end of its chunk
  k.post(0xffffffff, 0xffffffff);
  k.receiveInto(10, 0); // a runt
  k.receiveInto(1700, 0); // longer than MTU + 18
  k.receiveInto(64, 9);
  t.equal(q.receive(k.pool, k.handles, 0, 32), 2, 'the two good frames taken');
  t.same([bytesOf(k.pool, k.handles[0])[0], bytesOf(k.pool, k.handles[1])[0]], [7, 9], 'the right two');
  t.equal(drop(k.counters, 'bad_descriptor'), 5, 'five descriptors outside the receive chunks: bad_descriptor');
  t.equal(drop(k.counters, 'frame_too_short'), 1, 'the runt: frame_too_short');
  t.equal(drop(k.counters, 'frame_too_long'), 1, 'the long one: frame_too_long');
  t.equal(k.fill.u32[0], LAYOUT.rxFrames + 4, 'only chunks of sound descriptors go back to the fill ring');
  // A kernel that names chunks it never took from the fill ring cannot make the PMD overfill it.
  k.post(6 * LAYOUT.chunkBytes + HEADROOM, 64);
  k.post(7 * LAYOUT.chunkBytes + HEADROOM, 64);
  t.equal(q.receive(k.pool, k.handles, 0, 32), 2, 'two frames in chunks the fill ring still holds: taken');
  t.equal(k.fill.u32[0] - k.fill.u32[RING.consumer / 4], LAYOUT.rxSize, 'the fill ring full, not past full');
});

t.test('an rx producer more than the ring ahead of the consumer: nothing is taken', async (t) => {
  const k = setup(t);
  const q = k.open();
  k.receiveInto(64, 1);
  k.rx.u32[0] = 1 + LAYOUT.rxSize + 1;
  t.equal(q.receive(k.pool, k.handles, 0, 32), 0, 'nothing taken');
  t.equal(k.rx.u32[RING.consumer / 4], 0, 'the consumer stays');
});

t.test('frames sent land in their slots; a full tx ring refuses until completions free slots', async (t) => {
  const k = setup(t);
  const q = k.open();
  const handles = new Uint32Array(12);
  for (let i = 0; i < handles.length; i++) {
    const h = k.pool.alloc();
    k.pool.data.fill(0x40 + i, k.pool.frameOffset(h), k.pool.frameOffset(h) + 100 + i);
    k.pool.length[h] = 100 + i;
    handles[i] = h;
  }
  q.transmit(k.pool, handles, 12);
  t.equal(k.tx.u32[0], LAYOUT.txSize, `${LAYOUT.txSize} frames posted, as many as there are slots`);
  t.equal(drop(k.counters, 'interface_refused'), 4, 'the other four refused: interface_refused');
  t.equal(k.counters[TX_PACKETS], LAYOUT.txSize, 'the posted counted as sent');
  for (let s = 0; s < LAYOUT.txSize; s++) {
    const [addr, high, len] = k.tx.u32.subarray(RING.desc / 4 + 4 * s, RING.desc / 4 + 4 * s + 3);
    const chunk = (LAYOUT.rxFrames + s) * LAYOUT.chunkBytes;
    if (addr !== chunk || high !== 0 || len !== 100 + s || k.umem.u8[chunk] !== 0x40 + s || k.umem.u8[chunk + len - 1] !== 0x40 + s) {
      t.fail(`slot ${s}: descriptor ${addr}/${high}/${len}, its chunk at ${chunk}`);
    }
  }
  t.pass('each descriptor names its slot\'s chunk, holding the frame');
  // The kernel sends three and completes them: three slots free again.
  k.tx.u32[RING.consumer / 4] = 3;
  k.completion.u32[0] = 3;
  q.transmit(k.pool, handles, 4);
  t.equal(k.tx.u32[0], LAYOUT.txSize + 3, 'three more posted');
  t.equal(k.completion.u32[RING.consumer / 4], 3, 'the completions consumed');
  t.equal(drop(k.counters, 'interface_refused'), 5, 'the fourth refused');
});

t.test('a PMD that takes over resumes from the rings\' words', async (t) => {
  const k = setup(t);
  const first = k.open();
  for (let i = 0; i < 5; i++) k.receiveInto(64, i);
  t.equal(first.receive(k.pool, k.handles, 0, 3), 3, 'the first PMD takes three, then dies');
  const second = k.open();
  t.equal(second.receive(k.pool, k.handles, 0, 32), 2, 'the next takes the two left');
  t.same([bytesOf(k.pool, k.handles[0])[0], bytesOf(k.pool, k.handles[1])[0]], [3, 4], 'the frames the first had not taken');
  t.equal(k.fill.u32[0], LAYOUT.rxFrames + 5, 'all five chunks back on the fill ring');
});
