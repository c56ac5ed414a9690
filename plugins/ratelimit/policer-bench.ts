// ns per packet metered by the policer in bursts of 32 (64 to 1518 bytes, offered far above the
// rates, so all three colours occur): one thread, then two threads sharing one policer, beside
// two threads with a policer each. Run: node plugins/ratelimit/policer-bench.ts
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { PerformanceObserver } from 'node:perf_hooks';
import { createPolicerTable, nowMicroseconds, PolicerTable, validatePolicer, type PolicerConfig } from './policer.ts';

const BURST = 32;
const SECONDS = 2;

const TRTCM = validatePolicer({ meter: 'trtcm', cir: 1e9, cbs: 65_536, pir: 2e9, pbs: 65_536 });
const SRTCM = validatePolicer({ meter: 'srtcm', cir: 1e9, cbs: 65_536, ebs: 65_536 });

interface Job {
  table: ArrayBufferLike;
  thread: number;
  policer: number;
  /** synthetic: 1 µs later every burst, no clock read; real: one clock read per burst */
  clock: 'synthetic' | 'real';
  aware: boolean;
  /** Int32 words: ready count, go */
  control: SharedArrayBuffer;
}

interface Result {
  packets: number;
  seconds: number;
  gcs: number;
}

/** Meters for SECONDS after the go word; the first half-second lets V8 optimize the loop. */
async function meter(job: Job): Promise<Result> {
  const table = new PolicerTable(job.table, job.thread);
  const control = new Int32Array(job.control);
  const lengths = new Uint32Array(BURST);
  for (let i = 0; i < BURST; i++) lengths[i] = 64 + ((i * 389) % 1455);
  const colorsIn = new Uint8Array(BURST);
  for (let i = 0; i < BURST; i++) colorsIn[i] = i % 3 === 2 ? 1 : 0;
  const colorsOut = new Uint8Array(BURST);
  const aware = job.aware ? colorsIn : null;
  const synthetic = job.clock === 'synthetic';
  // The time lives in the table's cell, not in a variable this closure shares: a double stored
  // there is a new heap number per burst, garbage the GC count would put down to the meter.
  const time = table.time;
  time[0] = nowMicroseconds();
  const run = (bursts: number): void => {
    for (let b = 0; b < bursts; b++) {
      time[0] = synthetic ? time[0] + 1 : nowMicroseconds();
      table.meterBurst(job.policer, lengths, BURST, aware, colorsOut);
    }
  };
  Atomics.add(control, 0, 1);
  while (Atomics.load(control, 1) === 0);
  const warmEnd = performance.now() + 500;
  while (performance.now() < warmEnd) run(1000);
  let gcs = 0;
  const observer = new PerformanceObserver((list) => (gcs += list.getEntries().length));
  observer.observe({ entryTypes: ['gc'] });
  let packets = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    run(1000);
    packets += 1000 * BURST;
  }
  const seconds = (performance.now() - start) / 1000;
  await new Promise((r) => setTimeout(r, 10)); // gc entries are delivered asynchronously
  observer.disconnect();
  return { packets, seconds, gcs };
}

/** Runs one job per thread slot: slot 0 here, the others in workers, all started together. */
async function measure(cfg: PolicerConfig, threads: number, shared: boolean, clock: Job['clock'], aware: boolean): Promise<Result[]> {
  const policers = shared ? 1 : threads;
  const table = createPolicerTable(policers, threads);
  const control = new SharedArrayBuffer(8);
  const setup = new PolicerTable(table, 0);
  for (let p = 0; p < policers; p++) setup.configure(p, cfg, nowMicroseconds());
  const job = (thread: number): Job => ({ table, thread, policer: shared ? 0 : thread, clock, aware, control });
  const workers = Array.from({ length: threads - 1 }, (_, i) => new Worker(new URL(import.meta.url), { workerData: job(i + 1) }));
  const results = workers.map((w) => new Promise<Result>((resolve, reject) => (w.once('message', resolve), w.once('error', reject))));
  const words = new Int32Array(control);
  while (Atomics.load(words, 0) < threads - 1) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(words, 1, 1); // before meter() below, which waits for it on this thread
  const all = await Promise.all([meter(job(0)), ...results]);
  const counters = setup.readCounters(0);
  const colours = counters.green.packets + counters.yellow.packets + counters.red.packets;
  if (counters.green.packets === 0 || counters.red.packets === 0) throw new Error('the bench should see green and red packets');
  if (shared) retriesPerBurst.push((counters.retries / colours) * BURST);
  return all;
}

const retriesPerBurst: number[] = [];

function line(name: string, results: Result[]): string {
  const ns = results.map((r) => (r.seconds * 1e9) / r.packets);
  const mpps = results.reduce((sum, r) => sum + r.packets / r.seconds, 0) / 1e6;
  const gcs = results.reduce((sum, r) => sum + r.gcs, 0);
  return `${name}: ${ns.map((n) => n.toFixed(1)).join(' + ')} ns/packet, ${mpps.toFixed(1)} Mpps in all, ${gcs} garbage collections`;
}

if (!isMainThread) {
  parentPort!.postMessage(await meter(workerData as Job));
} else {
  console.log(line('1 thread, trTCM colour-blind, no clock read', await measure(TRTCM, 1, true, 'synthetic', false)));
  console.log(line('1 thread, srTCM colour-aware, no clock read', await measure(SRTCM, 1, true, 'synthetic', true)));
  console.log(line('1 thread, trTCM colour-blind, a clock read per burst', await measure(TRTCM, 1, true, 'real', false)));
  console.log(line('2 threads, a policer each, a clock read per burst', await measure(TRTCM, 2, false, 'real', false)));
  const shared = await measure(TRTCM, 2, true, 'real', false);
  console.log(`${line('2 threads, one shared policer, a clock read per burst', shared)}, ${retriesPerBurst.at(-1)!.toFixed(3)} retries per burst`);
}
