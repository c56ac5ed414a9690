// ns per packet of the ratelimit stage, in bursts of 32 64-byte IPv4 frames on the PMD's own
// Batch, with a policer on the ingress port that never drops (100 Gbit/s): the cost a
// full-pipeline benchmark pays for one. Each case minus the "batch.begin() alone" line is
// the stage's own cost (the clock read per batch included). 1 thread, then 2 threads metering
// into the one policer. Run: node plugins/ratelimit/ratelimit-bench.ts
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { PerformanceObserver } from 'node:perf_hooks';
import { Batch } from '../../src/dataplane/batch.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import type { PluginContext, Topology } from '../../src/pipeline/api.ts';
import { udp4 } from '../../test/support/frames.ts';
import ratelimit, { type RateLimitState } from './index.ts';
import type { RateLimitConfig } from './config.ts';

const BURST = 32;
const SECONDS = 2;

interface Case {
  name: string;
  policers: unknown[];
  /** frames' sources vary over this many addresses (per-address cases) */
  sources: number;
  /** whether a policer meets port a's packets */
  metered: boolean;
}

const CASES: Case[] = [
  { name: 'no policer on the port', policers: [{ name: 'elsewhere', cir: '100gbit', apply: [{ inPort: 'b' }] }], sources: 1, metered: false },
  { name: 'srTCM on the in-port, pass', policers: [{ name: 'port', cir: '100gbit', apply: [{ inPort: 'a' }] }], sources: 1, metered: true },
  { name: 'trTCM on the in-port, remark green', policers: [{ name: 'port', type: 'trTCM', cir: '100gbit', pir: '200gbit', actions: { green: { remark: 'af11' } }, apply: [{ inPort: 'a' }] }], sources: 1, metered: true },
  { name: 'per-source buckets, 4 sources a burst', policers: [{ name: 'hosts', cir: '100gbit', apply: [{ perSource: '10.0.0.0/8' }] }], sources: 4, metered: true },
];

interface Job {
  policers: unknown[];
  sources: number;
  metered: boolean;
  shared: Record<string, SharedArrayBuffer>;
  pmd: number;
  pmdCount: number;
  /** begin() alone: the batch's own cost, to subtract */
  baseline: boolean;
  /** Int32 words: ready count, go */
  control: SharedArrayBuffer;
}

interface Result {
  packets: number;
  seconds: number;
  gcs: number;
}

const TOPOLOGY = (pmdCount: number): Topology => ({
  ports: ['a', 'b'].map((name, index) => ({ index, name, bridge: null, settings: { name } })),
  bridges: [],
  bridgeSettings: {},
  pmdCount,
});

async function run(job: Job): Promise<Result> {
  const config = ratelimit.parseConfig!({ policers: job.policers });
  const topology = TOPOLOGY(job.pmdCount);
  const counters = new Float64Array(64);
  const ctx: PluginContext<RateLimitConfig> = {
    config,
    pmd: job.pmd,
    pmdCount: job.pmdCount,
    ports: topology.ports,
    bridges: [],
    bridgeSettings: {},
    previous: null,
    shared: job.shared,
    log: { info() {}, warn() {} },
    dropCode: (reason) => 100 + ratelimit.dropReasons!.findIndex(([n]) => n === reason),
    counterId: (counter) => ratelimit.counters!.findIndex(([n]) => n === counter),
    count: (port, counter, n) => {
      counters[port * 8 + counter] += n;
    },
    wantBatch() {},
    portUp: () => true,
  };
  const state: RateLimitState = ratelimit.createState(ctx);
  const pool = PacketPool.standalone(256);
  const batch = new Batch(pool);
  for (let i = 0; i < BURST; i++) {
    const h = pool.alloc();
    batch.handles[i] = h;
    const frame = udp4({ src: `10.0.0.${1 + (i % job.sources)}`, dst: '10.9.0.1', srcPort: 1000, dstPort: 2000, payload: 18 });
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
  }
  const baseline = job.baseline;
  // Read once: the getter returns a new heap number at each call V8 does not inline, garbage
  // the GC count below would put down to the stage.
  const timeOrigin = performance.timeOrigin;
  const burst = (bursts: number): void => {
    for (let b = 0; b < bursts; b++) {
      batch.begin(0, BURST);
      // The PMD's clock read of the round: buckets refill by it (without it they never would).
      batch.now = timeOrigin + performance.now();
      if (!baseline) ratelimit.process(batch, state);
    }
  };
  const control = new Int32Array(job.control);
  Atomics.add(control, 0, 1);
  while (Atomics.load(control, 1) === 0);
  const warmEnd = performance.now() + 500;
  while (performance.now() < warmEnd) burst(1000);
  let gcs = 0;
  const observer = new PerformanceObserver((list) => (gcs += list.getEntries().length));
  observer.observe({ entryTypes: ['gc'] });
  let packets = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    burst(1000);
    packets += 1000 * BURST;
  }
  const seconds = (performance.now() - start) / 1000;
  await new Promise((r) => setTimeout(r, 10)); // gc entries are delivered asynchronously
  observer.disconnect();
  const green = counters[ctx.counterId('green')]; // port a's
  if (!baseline && (green > 0) !== job.metered) throw new Error(`port a's policers coloured ${green} packets green`);
  if (batch.dropped(0)) throw new Error('the bench policer dropped packets');
  return { packets, seconds, gcs };
}

/** The plugin's memory as the supervisor would allocate and prepare it. */
async function prepared(policers: unknown[], pmdCount: number): Promise<Record<string, SharedArrayBuffer>> {
  const config = ratelimit.parseConfig!({ policers });
  const topology = TOPOLOGY(pmdCount);
  const shared = Object.fromEntries(Object.entries(ratelimit.sharedMemory!(config, topology)).map(([k, n]) => [k, new SharedArrayBuffer(n)]));
  await ratelimit.prepare!({ config, topology, shared, fresh: () => true, log: { info() {}, warn() {} }, runJob: () => Promise.reject(new Error('no jobs')) });
  return shared;
}

async function measure(c: Case, threads: number, baseline = false): Promise<Result[]> {
  const shared = await prepared(c.policers, threads);
  const control = new SharedArrayBuffer(8);
  const job = (pmd: number): Job => ({ policers: c.policers, sources: c.sources, metered: c.metered, shared, pmd, pmdCount: threads, baseline, control });
  const workers = Array.from({ length: threads - 1 }, (_, i) => new Worker(new URL(import.meta.url), { workerData: job(i + 1) }));
  const results = workers.map((w) => new Promise<Result>((resolve, reject) => (w.once('message', resolve), w.once('error', reject))));
  const words = new Int32Array(control);
  while (Atomics.load(words, 0) < threads - 1) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(words, 1, 1);
  return Promise.all([run(job(0)), ...results]);
}

function line(name: string, results: Result[]): string {
  const ns = results.map((r) => (r.seconds * 1e9) / r.packets);
  const gcs = results.reduce((sum, r) => sum + r.gcs, 0);
  return `${name}: ${ns.map((n) => n.toFixed(1)).join(' + ')} ns/packet, ${gcs} garbage collections`;
}

if (!isMainThread) {
  parentPort!.postMessage(await run(workerData as Job));
} else {
  console.log(line('1 thread, batch.begin() alone', await measure(CASES[0], 1, true)));
  for (const c of CASES) console.log(line(`1 thread, ${c.name}`, await measure(c, 1)));
  console.log(line('2 threads, one shared in-port policer', await measure(CASES[1], 2)));
}
