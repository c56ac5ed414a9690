// What a data-path loop allocates in steady state, for the allocation tests: garbage
// collections and heap growth while a driver runs bursts, with V8 inlining nothing.
// Without inlining, every call a number past the small integers crosses (a time in ms, an
// address past 2^31) makes a heap number; what V8 inlines depends on a budget that differs
// from run to run, so code that allocates only where a call stays out of line passes most
// runs and fails now and then: without inlining, every run finds it.
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Batch, BATCH_MAX } from '../../src/dataplane/batch.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import type { Plugin } from '../../src/pipeline/api.ts';
import { PluginHarness, type HarnessOptions } from '../../src/pipeline/testing.ts';

// Set as this module loads: before V8 optimises the code a test measures.
setFlagsFromString('--expose-gc');
setFlagsFromString('--no-turbo-inlining');
const gc = runInNewContext('gc') as () => void;

/**
 * Heap growth allowed over a measured run: a 16-byte heap number per burst would be ten times
 * this. Runs that allocate nothing show under 1 KiB, now and then some KiB more: code V8
 * compiles meanwhile (measured with a loop that only adds to a Float64Array).
 */
export const BOUND_BYTES = 32 * 1024;
/** a run this clean needs no other */
const CLEAN_BYTES = 4 * 1024;

/** Garbage collections and heap growth (bytes) over `calls` calls of `run`. */
async function allocation(run: () => void, calls: number): Promise<{ gcs: number; bytes: number }> {
  gc(); // an empty young generation: nothing left over starts a collection in the loop
  // What the collection threw away of the code that runs here (V8 builds some of it again on
  // first use, some KiB) is built before the heap is read, not during the bursts.
  run();
  getHeapStatistics();
  let gcs = 0;
  const observer = new PerformanceObserver((list) => {
    gcs += list.getEntries().length;
  });
  observer.observe({ entryTypes: ['gc'] });
  const before = getHeapStatistics().used_heap_size;
  for (let c = 0; c < calls; c++) run();
  const bytes = getHeapStatistics().used_heap_size - before;
  await new Promise((resolve) => setTimeout(resolve, 20)); // gc entries arrive asynchronously
  observer.disconnect();
  return { gcs, bytes };
}

/**
 * The best of up to five runs of `calls` calls of `run` (each its bursts, already warmed up):
 * code V8 compiles during a run takes heap too (some KiB, once), and on a busy machine a run
 * now and then meets the code deoptimised for a while; an allocation per burst shows in every
 * run.
 */
export async function steadyAllocation(run: () => void, calls: number): Promise<{ gcs: number; bytes: number }> {
  let best = { gcs: Infinity, bytes: Infinity };
  for (let attempt = 0; attempt < 5 && !(best.gcs === 0 && best.bytes <= CLEAN_BYTES); attempt++) {
    const r = await allocation(run, calls);
    if (r.gcs < best.gcs || (r.gcs === best.gcs && r.bytes < best.bytes)) best = r;
  }
  return best;
}

/** The two checks on `best` over `bursts` bursts: no collection, growth within BOUND_BYTES. */
export function checkSteady(t: { equal(a: unknown, b: unknown, m: string): void; ok(v: unknown, m: string): void }, best: { gcs: number; bytes: number }, bursts: number): void {
  t.equal(best.gcs, 0, `no garbage collection during ${bursts} bursts`);
  t.ok(best.bytes <= BOUND_BYTES, `the heap grew ${(best.bytes / 1024).toFixed(1)} KiB over ${bursts} bursts (${(best.bytes / bursts).toFixed(1)} bytes a burst); at most ${BOUND_BYTES / 1024} KiB allowed`);
}

/**
 * A stage's bursts for an allocation test: `run()` takes `chunk` bursts of `frames` from port
 * `port` through the plugin (bursts a call: V8 optimises a function called again and again
 * whole), each burst's frames written again first (a stage may rewrite them); time moves 1 µs
 * a burst. `once()` takes one burst of other frames through the same state (what a test has
 * the stage learn first); `egress()`: the last burst's decisions.
 */
export async function stageBursts(
  plugin: Plugin<unknown, unknown>,
  options: HarnessOptions,
  frames: readonly Uint8Array[],
  port: number,
  chunk: number,
): Promise<{ run: () => void; once: (frames: readonly Uint8Array[], port: number) => void; egress: () => number[] }> {
  const h = await PluginHarness.create(plugin, options);
  const pool = PacketPool.standalone(256);
  const batch = new Batch(pool);
  const handles = new Uint32Array(BATCH_MAX);
  const offsets = new Uint32Array(BATCH_MAX);
  for (let i = 0; i < BATCH_MAX; i++) {
    handles[i] = pool.alloc();
    offsets[i] = pool.frameOffset(handles[i]);
  }
  const state = h.state;
  const data = pool.data;
  const length = pool.length;
  // The time lives in the batch's field: a double in a variable this closure shares would be a
  // heap number per store, the test's allocation, not the stage's.
  batch.now = performance.timeOrigin + performance.now();
  const take = (burst: readonly Uint8Array[], from: number) => {
    for (let i = 0; i < burst.length; i++) {
      data.set(burst[i], offsets[i]);
      length[handles[i]] = burst[i].length;
      batch.handles[i] = handles[i];
    }
    batch.begin(from, burst.length);
    batch.now += 0.001;
    plugin.process(batch, state);
  };
  const run = () => {
    for (let b = 0; b < chunk; b++) take(frames, port);
  };
  return { run, once: take, egress: () => Array.from(batch.egress.subarray(0, frames.length)) };
}
