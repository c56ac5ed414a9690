// The far end of the ring and pool micro-benchmarks, in its own thread: it drains a data
// ring and, in pool mode, frees every buffer it got (back to the owner on a return ring).
import { workerData, parentPort } from 'node:worker_threads';
import { SpscRing } from '../../src/dataplane/spsc-ring.ts';
import { PacketPool, type PoolMemory } from '../../src/dataplane/packet-pool.ts';

export interface RingPeerData {
  mode: 'ring' | 'pool';
  data: SharedArrayBuffer;
  capacity: number;
  /** pool mode: the shared pool and the return ring to PMD 0 */
  pool?: PoolMemory;
  returns?: SharedArrayBuffer;
  stop: SharedArrayBuffer;
}

const { mode, data, capacity, pool: poolMemory, returns, stop } = workerData as RingPeerData;
const ring = new SpscRing(data, capacity);
const stopFlag = new Int32Array(stop);
const burst = new Uint32Array(32);
const pool = mode === 'pool' ? new PacketPool(poolMemory!, 1, [new SpscRing(returns!, poolMemory!.perPmd), null], []) : null;
let received = 0;
// Loaded: the owner starts its clock now, not at 'online' (this module still loading then,
// on a busy CPU for as long as the owner's timed loop, which would find nobody draining).
parentPort!.postMessage('ready');
while (Atomics.load(stopFlag, 0) === 0) {
  const n = ring.dequeueBurst(burst, 32);
  if (pool !== null) {
    for (let i = 0; i < n; i++) pool.free(burst[i]);
    pool.flushAllReturns();
  }
  received += n;
}
parentPort!.postMessage(received);
