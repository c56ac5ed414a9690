// Micro-benchmark of the route lookup tables: compile time and memory for 1,000,000 IPv4
// routes and 100,000 IPv6 routes, and lookups per second in bursts of 32 into a
// preallocated result array. Run: node plugins/routing/lpm-bench.ts [seconds per row]
import { loadavg } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { compileLpm4, Lpm4, type Route4, type Route4Columns } from './lpm4.ts';
import { compileLpm6, Lpm6, type Route6Columns } from './lpm6.ts';
import { prng } from '../../test/support/prng.ts';

const BURST = 32;
/** addresses per set: 4 MiB (IPv4) or 16 MiB (IPv6), streamed once per pass */
const ADDRESSES = 1 << 20;
const SECONDS = Number(process.argv[2] ?? 1);
/** distinct destinations of the hot address sets */
const HOT = 1024;


/** Picks a length from [length, weight] pairs. */
function lengthPicker(rand: () => number, mix: [number, number][]): () => number {
  const total = mix.reduce((a, [, w]) => a + w, 0);
  return () => {
    let x = (rand() / 2 ** 32) * total;
    for (const [length, weight] of mix) if ((x -= weight) < 0) return length;
    return mix[mix.length - 1][0];
  };
}

// IPv4: close to a full BGP table (about 60 % /24, most of the rest /16 - /23), plus
// more longer prefixes than BGP carries (a router in front of VMs holds host routes).
const MIX4: [number, number][] = [
  [8, 0.1], [12, 0.2], [14, 0.2], [16, 1.5], [17, 1], [18, 1.5], [19, 3], [20, 4], [21, 5], [22, 10], [23, 9],
  [24, 58], [25, 0.5], [26, 0.5], [27, 0.5], [28, 0.5], [29, 0.5], [30, 0.5], [31, 0.2], [32, 3],
];

function routes4(count: number, seed: number): Route4Columns {
  const rand = prng(seed);
  const pick = lengthPicker(rand, MIX4);
  const cols: Route4Columns = { prefix: new Uint32Array(count), length: new Uint8Array(count), nextHop: new Uint32Array(count) };
  cols.length[0] = 0;
  cols.nextHop[0] = 1;
  for (let i = 1; i < count; i++) {
    cols.length[i] = pick();
    // unicast space 1.0.0.0 .. 223.255.255.255
    cols.prefix[i] = ((1 + (rand() % 223)) * 2 ** 24 + (rand() & 0xffffff)) >>> 0;
    cols.nextHop[i] = 1 + (rand() % 65535);
  }
  return cols;
}

// IPv6: /48 sites and /64 subnets under a few thousand /32 (and /29) allocations in
// 2000::/3, most /64s inside a /48 already in the table; a few aggregates and host routes.
const MIX6: [number, number][] = [
  [20, 0.2], [24, 0.3], [28, 0.3], [29, 1], [32, 3], [36, 0.5], [40, 1.5], [44, 2], [48, 45], [52, 0.5],
  [56, 5], [60, 1], [64, 36], [96, 0.5], [112, 0.5], [127, 0.2], [128, 2.5],
];

function routes6(count: number, seed: number, clustered: boolean): Route6Columns {
  const rand = prng(seed);
  const pick = lengthPicker(rand, MIX6);
  const cols: Route6Columns = { prefix: new Uint8Array(16 * count), length: new Uint8Array(count), nextHop: new Uint32Array(count) };
  const allocations = Array.from({ length: 4000 }, () => (0x20000000 | (rand() & 0x1fffffff)) >>> 0);
  const sites: number[] = [];
  const p = cols.prefix;
  cols.length[0] = 0;
  cols.nextHop[0] = 1;
  for (let i = 1; i < count; i++) {
    const length = pick();
    const at = 16 * i;
    for (let b = 0; b < 16; b++) p[at + b] = rand() & 0xff;
    if (clustered) {
      if (length === 64 && sites.length > 0 && rand() % 10 < 7) {
        const site = sites[rand() % sites.length];
        p.copyWithin(at, site, site + 6);
      } else {
        const a = allocations[rand() % allocations.length];
        p[at] = a >>> 24;
        p[at + 1] = (a >>> 16) & 0xff;
        p[at + 2] = (a >>> 8) & 0xff;
        p[at + 3] = a & 0xff;
      }
      if (length === 48) sites.push(at);
    } else p[at] = 0x20 | (p[at] & 0x1f);
    cols.length[i] = length;
    cols.nextHop[i] = 1 + (rand() % 65535);
  }
  return cols;
}

let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ['gc'] });

interface Rate {
  mps: number;
  gcs: number;
}

/**
 * Runs one pass (every burst of the set) repeatedly for SECONDS, at least 3 times; the
 * rate of the fastest pass, in million lookups per second: other processes on the machine
 * only ever slow a pass down.
 */
function measure(pass: () => void): Rate {
  pass();
  pass();
  const gcBefore = gcs;
  let fastest = Infinity;
  const started = performance.now();
  for (let passes = 0; passes < 3 || performance.now() - started < SECONDS * 1000; passes++) {
    const t0 = performance.now();
    pass();
    fastest = Math.min(fastest, performance.now() - t0);
  }
  return { mps: ADDRESSES / fastest / 1000, gcs: gcs - gcBefore };
}

function bench4(lpm: Lpm4, addrs: Uint32Array): Rate {
  // One view per burst, made before the clock starts: the loop allocates nothing.
  const bursts = Array.from({ length: ADDRESSES / BURST }, (_, b) => addrs.subarray(b * BURST, b * BURST + BURST));
  const results = new Uint32Array(BURST);
  let check = 0;
  const rate = measure(() => {
    for (let b = 0; b < bursts.length; b++) {
      lpm.lookupBurst(bursts[b], results, BURST);
      check ^= results[b & 31];
    }
  });
  if (check === -1) console.log(check);
  return rate;
}

function bench6(lpm: Lpm6, bytes: Uint8Array): Rate {
  const offsets = Uint32Array.from({ length: ADDRESSES }, (_, i) => 16 * i);
  const bursts = Array.from({ length: ADDRESSES / BURST }, (_, b) => offsets.subarray(b * BURST, b * BURST + BURST));
  const results = new Uint32Array(BURST);
  let check = 0;
  const rate = measure(() => {
    for (let b = 0; b < bursts.length; b++) {
      lpm.lookupBurst(bytes, bursts[b], results, BURST);
      check ^= results[b & 31];
    }
  });
  if (check === -1) console.log(check);
  return rate;
}

function time<T>(f: () => T): [T, number] {
  const started = performance.now();
  const value = f();
  return [value, (performance.now() - started) / 1000];
}

const rows: string[][] = [];
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const rate = (r: Rate) => `${r.mps.toFixed(1)} (${(1000 / r.mps).toFixed(1)} ns)${r.gcs ? ` gc ${r.gcs}` : ''}`;

/** `count` addresses, each one of the first `distinct` of `addrs` (entries of `width`), at random: a few busy destinations. */
function hotSet<T extends Uint32Array | Uint8Array>(rand: () => number, addrs: T, width: number, distinct: number): T {
  const out = addrs.slice() as T;
  for (let a = 0; a < addrs.length / width; a++) {
    const from = width * (rand() % distinct);
    out.set(addrs.subarray(from, from + width), width * a);
  }
  return out;
}

{
  const rand = prng(4);
  const cols = routes4(1_000_000, 1);
  const objects: Route4[] = Array.from(cols.prefix, (prefix, i) => ({ prefix, length: cols.length[i], nextHop: cols.nextHop[i] }));
  const [table, seconds] = time(() => compileLpm4(cols));
  const [, objectSeconds] = time(() => compileLpm4(objects));
  const lpm = new Lpm4(table);
  const uniform = Uint32Array.from({ length: ADDRESSES }, () => rand());
  // in a route: a random route's prefix with random host bits
  const inRoute = Uint32Array.from({ length: ADDRESSES }, () => {
    const i = 1 + (rand() % (cols.prefix.length - 1));
    const host = cols.length[i] === 32 ? 0 : -1 >>> cols.length[i];
    return ((cols.prefix[i] & ~host) | (rand() & host)) >>> 0;
  });
  rows.push([
    'IPv4 DIR-24-8', '1,000,000', `${seconds.toFixed(2)} / ${objectSeconds.toFixed(2)}`, `${mib(lpm.bytes)} (${table.tbl8Groups} tbl8)`,
    rate(bench4(lpm, uniform)), rate(bench4(lpm, inRoute)), rate(bench4(lpm, hotSet(rand, inRoute, 1, HOT))),
  ]);
}

for (const clustered of [true, false]) {
  const rand = prng(6);
  const cols = routes6(100_000, 2, clustered);
  const objects = Array.from(cols.length, (length, i) => ({ prefix: cols.prefix.slice(16 * i, 16 * i + 16), length, nextHop: cols.nextHop[i] }));
  const [table, seconds] = time(() => compileLpm6(cols));
  const [, objectSeconds] = time(() => compileLpm6(objects));
  const uniform = new Uint8Array(16 * ADDRESSES);
  for (let i = 0; i < uniform.length; i++) uniform[i] = rand() & 0xff;
  const inRoute = new Uint8Array(16 * ADDRESSES);
  for (let a = 0; a < ADDRESSES; a++) {
    const i = 1 + (rand() % (cols.length.length - 1));
    const length = cols.length[i];
    for (let b = 0; b < 16; b++) {
      const kept = Math.max(0, Math.min(8, length - 8 * b));
      const mask = (0xff00 >>> kept) & 0xff;
      inRoute[16 * a + b] = (cols.prefix[16 * i + b] & mask) | (rand() & 0xff & ~mask);
    }
  }
  const hot = hotSet(rand, inRoute, 16, HOT);
  // The reader's default mode for a table this size, then the other one.
  const byDefault = new Lpm6(table);
  for (const lpm of [byDefault, new Lpm6(table, !byDefault.lockstep)]) {
    rows.push([
      `IPv6${clustered ? '' : ', unclustered'}${lpm.lockstep ? ', lockstep' : ', one by one'}${lpm === byDefault ? '' : ' (forced)'}`, '100,000',
      `${seconds.toFixed(2)} / ${objectSeconds.toFixed(2)}`, `${mib(lpm.bytes)} (${table.nodeCount} nodes)`,
      rate(bench6(lpm, uniform)), rate(bench6(lpm, inRoute)), rate(bench6(lpm, hot)),
    ]);
  }
}

const header = ['table', 'routes', 'compile s (columns / objects)', 'MiB', 'Mlookups/s: uniform addr', 'addr in a route', `${HOT} hot addr`];
const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
const line = (cells: string[]) => cells.map((cell, c) => cell.padEnd(widths[c])).join('  ');
console.log(`Node ${process.version}, bursts of ${BURST}, ${ADDRESSES} addresses per set, fastest pass of ${SECONDS} s, load average ${loadavg()[0].toFixed(1)}`);
console.log(line(header));
for (const r of rows) console.log(line(r));
console.log('uniform: random addresses; addr in a route: a random route with random host bits; hot: the latter, from a set of');
console.log(`${HOT} destinations (in cache). IPv6, unclustered: /48 and /64 with random bits below 2000::/3, the worst case for memory.`);
