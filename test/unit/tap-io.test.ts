// A TAP queue's reads into packet buffers: with no buffer left nothing is read and nothing
// is counted (the frames wait in the interface's queue; there may be none), then the
// frames are taken once buffers come back. Its reads and writes allocate nothing.
import t from 'tap';
import { writeSync, closeSync } from 'node:fs';
import { COUNTERS_PER_PORT, DROP, DROPS_BASE, RX_PACKETS, TX_PACKETS, queueBase } from '../../src/dataplane/counters.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { TapInterface } from '../../src/dataplane/tap-io.ts';
import { closeAll, seqpacketPair } from '../../src/sys/libc.ts';
import { pipe } from '../support/raw-fds.ts';
import { checkSteady, steadyAllocation } from '../support/steady-allocation.ts';

t.test('no buffer: nothing read, no drop counted; a buffer back: the waiting frame taken', async (t) => {
  // A pipe stands in for the TAP fd: one read a frame, as the TAP interface gives them.
  const [readEnd, writeEnd] = pipe();
  t.teardown(() => [readEnd, writeEnd].forEach((fd) => closeSync(fd)));
  const counters = new Float64Array(COUNTERS_PER_PORT * 2);
  const tap = new TapInterface(readEnd, counters, 0, queueBase(0, 0), 1514);
  const pool = PacketPool.standalone(2);
  const taken = [pool.alloc(), pool.alloc()];
  t.ok(taken.every((h) => h >= 0) && pool.alloc() < 0, 'the pool is empty');
  const handles = new Uint32Array(32);
  let read = 0;
  for (let round = 0; round < 100; round++) read += tap.receive(pool, handles, 0, 32);
  t.equal(read, 0, 'nothing taken');
  t.equal(counters[DROPS_BASE + DROP.no_buffer], 0, '100 poll rounds without a buffer: no frame was dropped, none counted');
  writeSync(writeEnd, new Uint8Array(60).fill(0xab));
  pool.free(taken[0]);
  // One frame at most: a second read of this pipe (blocking) would wait.
  t.equal(tap.receive(pool, handles, 0, 1), 1, 'the frame that waited is read once a buffer is back');
  t.equal(pool.length[handles[0]], 60);
  t.equal(counters[RX_PACKETS], 1);
});

t.test('frames written and read through a TAP queue allocate nothing: no heap number a frame for its address', async (t) => {
  // A SOCK_SEQPACKET pair stands in for the TAP fd: a message a read, as the interface gives
  // frames. The sender's writes come back as the receiver's reads, into other buffers.
  const [one, other] = seqpacketPair();
  t.teardown(() => closeAll([one, other]));
  const counters = new Float64Array(COUNTERS_PER_PORT * 2);
  const sender = new TapInterface(one, counters, 0, queueBase(0, 0), 1514);
  const receiver = new TapInterface(other, counters, COUNTERS_PER_PORT, queueBase(1, 0), 1514);
  const BURST = 32;
  // Megabytes, as a PMD's pool: mapped on its own, high in the address space (a small one
  // may come from the heap's low addresses).
  const pool = PacketPool.standalone(4096);
  t.ok(pool.address >= 2 ** 31, `the pool lies past 2^31 (at 0x${pool.address.toString(16)}), where an address given as a number is a heap number`);
  const out = new Uint32Array(BURST);
  for (let i = 0; i < BURST; i++) {
    out[i] = pool.alloc();
    pool.length[out[i]] = 60 + i * 40;
    pool.data.fill(i + 1, pool.frameOffset(out[i]), pool.frameOffset(out[i]) + pool.length[out[i]]);
  }
  const into = new Uint32Array(BURST);
  const got = new Int32Array(1);
  const run = () => {
    for (let b = 0; b < 100; b++) {
      sender.transmit(pool, out, BURST);
      const n = receiver.receive(pool, into, 0, BURST);
      got[0] += n;
      for (let k = 0; k < n; k++) pool.free(into[k]);
    }
  };
  run();
  t.equal(got[0], 100 * BURST, 'every frame written was read');
  const n = (sender.transmit(pool, out, BURST), receiver.receive(pool, into, 0, BURST));
  const frames = Array.from(into.subarray(0, n), (h) => Array.from(pool.data.subarray(pool.frameOffset(h), pool.frameOffset(h) + pool.length[h])));
  t.same(frames, Array.from({ length: BURST }, (_, i) => new Array(60 + i * 40).fill(i + 1)), 'each read whole into its own buffer, as written');
  for (let k = 0; k < n; k++) pool.free(into[k]);
  const best = await steadyAllocation(run, 20);
  checkSteady(t, best, 20 * 100);
  t.equal(counters[TX_PACKETS], counters[COUNTERS_PER_PORT + RX_PACKETS], 'as many counted sent as received');
});
