// A TAP queue's reads into packet buffers: with no buffer left nothing is read and nothing
// is counted (the frames wait in the interface's queue; there may be none), then the
// frames are taken once buffers come back.
import t from 'tap';
import { writeSync, closeSync } from 'node:fs';
import { COUNTERS_PER_PORT, DROP, DROPS_BASE, RX_PACKETS, queueBase } from '../../src/dataplane/counters.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { TapInterface } from '../../src/dataplane/tap-io.ts';
import { pipe } from '../support/raw-fds.ts';

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
