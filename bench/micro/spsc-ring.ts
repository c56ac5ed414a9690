// Micro-benchmarks of the pieces PMDs share, between two threads, in bursts of 32:
// the SPSC ring alone (handles per second), and the packet pool's cross-thread cycle
// (allocate here, hand over on a ring, free there, come back on the return ring).
import { Worker } from 'node:worker_threads';
import { SpscRing, spscRingBytes } from '../../src/dataplane/spsc-ring.ts';
import { createPoolMemory, PacketPool } from '../../src/dataplane/packet-pool.ts';
import type { RingPeerData } from './ring-peer.ts';

const CAPACITY = 1024;
const SECONDS = 2;

async function measure(mode: 'ring' | 'pool'): Promise<{ opsPerSec: number }> {
  const data = new SharedArrayBuffer(spscRingBytes(CAPACITY));
  const stop = new SharedArrayBuffer(4);
  const poolMemory = createPoolMemory(2, 4096);
  const returns = new SharedArrayBuffer(spscRingBytes(4096));
  const peerData: RingPeerData = { mode, data, capacity: CAPACITY, pool: poolMemory, returns, stop };
  const peer = new Worker(new URL('./ring-peer.ts', import.meta.url), { workerData: peerData });
  // Its first message says it has loaded and drains; the second, once stopped, its count.
  await new Promise((resolve) => peer.once('message', resolve));
  const received = new Promise<number>((resolve) => peer.once('message', resolve));
  const ring = new SpscRing(data, CAPACITY);
  const pool = new PacketPool(poolMemory, 0, [], [null, new SpscRing(returns, 4096)]);
  const burst = new Uint32Array(32);
  for (let i = 0; i < 32; i++) burst[i] = i;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    for (let round = 0; round < 1000; round++) {
      if (mode === 'pool') {
        let n = 0;
        while (n < 32) {
          const h = pool.alloc();
          if (h < 0) break;
          burst[n++] = h;
        }
        const sent = ring.enqueueBurst(burst, n);
        for (let i = sent; i < n; i++) pool.free(burst[i]);
      } else {
        ring.enqueueBurst(burst, 32);
      }
    }
  }
  Atomics.store(new Int32Array(stop), 0, 1);
  const total = await received;
  const elapsed = (performance.now() - start) / 1000;
  await peer.terminate();
  return { opsPerSec: total / elapsed };
}

export const micro = [
  { name: 'spsc ring: handles between two threads, bursts of 32', run: () => measure('ring') },
  { name: 'packet pool: alloc, hand over, free on the other thread, reclaim (bursts of 32)', run: () => measure('pool') },
];

if (import.meta.main) {
  for (const m of micro) console.log(`${m.name}: ${((await m.run()).opsPerSec / 1e6).toFixed(1)} Mops/s`);
}
