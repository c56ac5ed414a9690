// A PMD stand-in for the policer tests: meters bursts of 32 into one shared policer as fast as it
// can until the test raises the stop word; then reports what it metered. Its clock is the real one,
// or a shared tick clock that advances 1 µs per burst metered by any thread: time then passes only
// while traffic is offered, so a thread descheduled for milliseconds (other processes on the CPUs)
// cannot make the bucket overflow, and the green count tests the token accounting alone.
import { parentPort, workerData } from 'node:worker_threads';
import { nowMicroseconds, PolicerTable } from './policer.ts';

export interface MeterWorkerData {
  table: ArrayBufferLike;
  thread: number;
  policer: number;
  /** Int32 words: READY (workers count themselves in), GO, STOP, TICKS */
  control: SharedArrayBuffer;
  clock: 'real' | 'ticks' | 'frozen';
  /** bytes of every packet */
  length: number;
}

export interface MeterWorkerResult {
  thread: number;
  packets: number;
  red: number;
  bursts: number;
  /** the longest time between two of this thread's bursts (real clock) */
  maxGapUs: number;
}

export const READY = 0;
export const GO = 1;
export const STOP = 2;
export const TICKS = 3;

if (parentPort !== null && workerData !== null && typeof workerData === 'object' && 'table' in workerData) {
  const data = workerData as MeterWorkerData;
  const table = new PolicerTable(data.table, data.thread);
  const control = new Int32Array(data.control);
  const lengths = new Uint32Array(32).fill(data.length);
  const colors = new Uint8Array(32);
  Atomics.add(control, READY, 1); // add, not store: workers starting together are each counted
  while (Atomics.load(control, GO) === 0); // all threads start metering together, once configured
  let packets = 0;
  let red = 0;
  let bursts = 0;
  let maxGapUs = 0;
  const ticks = data.clock === 'ticks';
  const real = data.clock === 'real';
  let last = nowMicroseconds();
  // The stop word is read once per 64 bursts: its Atomics.load should not weigh on the meter.
  while (Atomics.load(control, STOP) === 0) {
    for (let round = 0; round < 64; round++) {
      // Atomics.add: two threads never take the same tick, and no tick is lost between them.
      const now = ticks ? Atomics.add(control, TICKS, 1) : real ? nowMicroseconds() : 0;
      if (real && now - last > maxGapUs) maxGapUs = now - last;
      last = now;
      table.setTime(now);
      red += table.meterBurst(data.policer, lengths, 32, null, colors);
      packets += 32;
      bursts++;
    }
  }
  const result: MeterWorkerResult = { thread: data.thread, packets, red, bursts, maxGapUs };
  parentPort.postMessage(result);
}
