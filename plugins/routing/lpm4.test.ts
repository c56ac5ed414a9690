// IPv4 longest-prefix match: known cases, then random route lists (every length, overlaps,
// duplicates, default and host routes) checked against a linear scan, recompiled after
// changes, and read from another thread.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { compileLpm4, Lpm4, LpmError, MAX_NEXT_HOP, NO_ROUTE, type Route4 } from './lpm4.ts';
import { prng } from '../../test/support/prng.ts';


const ip = (s: string): number => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);
const route = (cidr: string, nextHop: number): Route4 => {
  const [a, l] = cidr.split('/');
  return { prefix: ip(a), length: Number(l), nextHop };
};
const covers = (r: Route4, addr: number): boolean => r.length === 0 || ((r.prefix ^ addr) >>> (32 - r.length)) === 0;

/** The reference: a linear scan, the longest prefix wins, and of equal ones the later. */
function naive(routes: readonly Route4[], addr: number): number {
  let best = -1;
  let hop = NO_ROUTE;
  for (const r of routes) {
    if (r.length >= best && covers(r, addr)) {
      best = r.length;
      hop = r.nextHop;
    }
  }
  return hop;
}

/**
 * Random routes over all lengths 0..32: half fresh, half derived from an earlier one (a
 * longer or shorter prefix of the same address, or the same prefix again), so that they
 * nest and repeat; with a default route and host routes.
 */
function randomRoutes(rand: () => number, count: number): Route4[] {
  const routes: Route4[] = [{ prefix: 0, length: 0, nextHop: 1 + (rand() % 1000) }];
  while (routes.length < count) {
    const nextHop = 1 + (rand() % 100000);
    const base = routes[rand() % routes.length];
    const kind = rand() % 8;
    if (kind < 3) routes.push({ prefix: rand(), length: rand() % 33, nextHop });
    else if (kind < 6) routes.push({ prefix: (base.prefix & ~(-1 >>> base.length)) | (rand() & (-1 >>> base.length)), length: base.length + (rand() % (33 - base.length)), nextHop });
    else if (kind === 6) routes.push({ prefix: base.prefix, length: rand() % (base.length + 1), nextHop });
    else routes.push({ prefix: base.prefix, length: base.length, nextHop });
  }
  return routes;
}

/** Addresses that matter to each route (its first and last, and the neighbours outside) and random ones. */
function probes(rand: () => number, routes: readonly Route4[], random: number): number[] {
  const out: number[] = [];
  for (const r of routes) {
    const size = 2 ** (32 - r.length);
    const first = r.length === 0 ? 0 : (r.prefix & (-1 << (32 - r.length))) >>> 0;
    out.push(first, first + size - 1, (first - 1) >>> 0, (first + size) >>> 0, (first + rand() % size) >>> 0);
  }
  for (let i = 0; i < random; i++) out.push(rand());
  return out;
}

function mismatches(lpm: Lpm4, routes: readonly Route4[], addrs: readonly number[]): string[] {
  const bad: string[] = [];
  for (const a of addrs) {
    const want = naive(routes, a);
    const got = lpm.lookup(a);
    if (got !== want && bad.length < 5) bad.push(`${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}: ${got}, expected ${want}`);
  }
  return bad;
}

t.test('known routes, nested from the default route down to a host route', async (t) => {
  const lpm = new Lpm4(compileLpm4([
    route('0.0.0.0/0', 1),
    route('10.0.0.0/8', 2),
    route('10.1.0.0/16', 3),
    route('10.1.2.0/24', 4),
    route('10.1.2.128/25', 5),
    route('10.1.2.129/32', 6),
    route('192.168.0.0/23', 7),
  ]));
  const cases: [string, number][] = [
    ['8.8.8.8', 1], ['10.200.0.1', 2], ['10.1.77.1', 3], ['10.1.2.0', 4], ['10.1.2.127', 4],
    ['10.1.2.128', 5], ['10.1.2.129', 6], ['10.1.2.130', 5], ['10.1.2.255', 5], ['10.1.3.0', 3],
    ['192.168.1.255', 7], ['192.168.2.0', 1], ['255.255.255.255', 1], ['0.0.0.0', 1],
  ];
  for (const [a, want] of cases) t.equal(lpm.lookup(ip(a)), want, a);
  t.equal(lpm.lookup(ip('10.1.2.129') | 0), 6, 'an int32 address with the same bits');
  t.equal(lpm.table.tbl8Groups, 1, 'one /24 holds longer prefixes');
});

t.test('an empty list routes nothing; no default route means NO_ROUTE outside the prefixes', async (t) => {
  const empty = new Lpm4(compileLpm4([]));
  t.equal(empty.lookup(ip('1.2.3.4')), NO_ROUTE);
  t.equal(empty.table.tbl8Groups, 0);
  const lpm = new Lpm4(compileLpm4([route('10.1.2.3/32', 9)]));
  t.same([lpm.lookup(ip('10.1.2.3')), lpm.lookup(ip('10.1.2.2')), lpm.lookup(ip('10.1.2.4'))], [9, NO_ROUTE, NO_ROUTE]);
});

t.test('host bits beyond the length are ignored; the later of two equal prefixes wins', async (t) => {
  const lpm = new Lpm4(compileLpm4([route('10.1.2.3/8', 1), route('10.9.9.9/16', 2), route('10.9.0.0/16', 3), route('0.0.0.0/0', 4), route('1.1.1.1/0', 5)]));
  t.equal(lpm.lookup(ip('10.200.1.1')), 1);
  t.equal(lpm.lookup(ip('10.9.1.1')), 3, 'the later duplicate');
  t.equal(lpm.lookup(ip('11.0.0.0')), 5, 'the later default route');
});

t.test('a prefix repeated 1000 times, under a default route repeated as often: the last copy of each wins', async (t) => {
  const routes: Route4[] = [];
  for (let i = 1; i <= 1000; i++) routes.push(route('10.1.0.0/16', i), route('0.0.0.0/0', 5000 + i), route('10.1.2.0/30', 9000 + i));
  const started = performance.now();
  const lpm = new Lpm4(compileLpm4(routes));
  t.ok(performance.now() - started < 2000, 'a repeated short prefix is expanded once, not 1000 times');
  t.same([lpm.lookup(ip('10.1.9.9')), lpm.lookup(ip('10.1.2.3')), lpm.lookup(ip('1.1.1.1'))], [1000, 10000, 6000]);
});

t.test('route objects and columns compile to the same table', async (t) => {
  const rand = prng(7);
  const routes = randomRoutes(rand, 2000);
  const columns = {
    prefix: Uint32Array.from(routes, (r) => r.prefix),
    length: Uint8Array.from(routes, (r) => r.length),
    nextHop: Uint32Array.from(routes, (r) => r.nextHop),
  };
  const a = compileLpm4(routes);
  const b = compileLpm4(columns);
  t.equal(a.tbl8Groups, b.tbl8Groups);
  t.ok(Buffer.from(a.tbl24).equals(Buffer.from(b.tbl24)) && Buffer.from(a.tbl8).equals(Buffer.from(b.tbl8)), 'the buffers are equal byte for byte');
});

t.test('random route lists against a linear scan (seeded)', async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const rand = prng(seed);
    const routes = randomRoutes(rand, 50 + (rand() % 600));
    const lpm = new Lpm4(compileLpm4(routes));
    t.same(mismatches(lpm, routes, probes(rand, routes, 5000)), [], `seed ${seed}: ${routes.length} routes, every lookup as the reference`);
  }
});

t.test('many routes longer than /24, one /24 full of them', async (t) => {
  const rand = prng(11);
  const routes: Route4[] = [route('10.0.0.0/8', 1)];
  // Every prefix of lengths 25..32 under 10.0.0.0/24, in random order: the group's 256
  // entries are each decided by the longest of eight nested routes.
  const nested: Route4[] = [];
  for (let length = 25; length <= 32; length++) {
    for (let i = 0; i < 2 ** (length - 24); i++) nested.push({ prefix: ip('10.0.0.0') + (i << (32 - length)), length, nextHop: 1000 * length + i });
  }
  for (let i = nested.length - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [nested[i], nested[j]] = [nested[j], nested[i]];
  }
  routes.push(...nested);
  // And 3000 host routes in distinct /24s: one group each.
  for (let i = 0; i < 3000; i++) routes.push({ prefix: ip('20.0.0.0') + i * 256 + (rand() & 255), length: 32, nextHop: 5 + i });
  const lpm = new Lpm4(compileLpm4(routes));
  t.equal(lpm.table.tbl8Groups, 3001);
  for (let a = 0; a < 256; a++) t.equal(lpm.lookup(ip('10.0.0.0') + a), 32000 + a, `10.0.0.${a}`);
  t.same(mismatches(lpm, routes, probes(rand, routes, 1000)), []);
});

t.test('routes added and removed, then recompiled: the new table answers as the new list, the old one as the old', async (t) => {
  for (const seed of [21, 22, 23]) {
    const rand = prng(seed);
    const before = randomRoutes(rand, 400);
    const old = new Lpm4(compileLpm4(before));
    const after = before.filter(() => rand() % 3 !== 0).concat(randomRoutes(rand, 150).slice(1));
    const updated = new Lpm4(compileLpm4(after));
    const addrs = probes(rand, before.concat(after), 2000);
    t.same(mismatches(updated, after, addrs), [], `seed ${seed}: the recompiled table`);
    t.same(mismatches(old, before, addrs), [], `seed ${seed}: the table still in use until the swap is untouched`);
  }
});

t.test('lookupBurst gives what lookup gives', async (t) => {
  const rand = prng(31);
  const routes = randomRoutes(rand, 500);
  const lpm = new Lpm4(compileLpm4(routes));
  const addrs = Uint32Array.from(probes(rand, routes, 0).slice(0, 32));
  const results = new Uint32Array(32).fill(0xdead);
  lpm.lookupBurst(addrs, results, 31);
  t.same(Array.from(results.subarray(0, 31)), Array.from(addrs.subarray(0, 31), (a) => lpm.lookup(a)));
  t.equal(results[31], 0xdead, 'nothing written past count');
});

t.test('bad routes are refused with the field at fault', async (t) => {
  const cases: [unknown, string][] = [
    [[route('10.0.0.0/8', 1), { prefix: ip('10.0.0.0'), length: 33, nextHop: 1 }], 'routes[1].length'],
    [[{ prefix: 0, length: 1.5, nextHop: 1 }], 'routes[0].length'],
    [[{ prefix: 0, length: 8, nextHop: 0 }], 'routes[0].nextHop'],
    [[{ prefix: 0, length: 8, nextHop: MAX_NEXT_HOP + 1 }], 'routes[0].nextHop'],
    [[{ prefix: 2 ** 32, length: 8, nextHop: 1 }], 'routes[0].prefix'],
    [[{ prefix: Number.NaN, length: 8, nextHop: 1 }], 'routes[0].prefix'],
    [{ prefix: new Uint32Array(2), length: new Uint8Array([8, 40]), nextHop: new Uint32Array([1, 1]) }, 'routes.length[1]'],
    [{ prefix: new Uint32Array(1), length: new Uint8Array(1), nextHop: new Uint32Array([0]) }, 'routes.nextHop[0]'],
    [{ prefix: new Uint32Array(2), length: new Uint8Array(1), nextHop: new Uint32Array(1) }, 'routes'],
  ];
  for (const [routes, field] of cases) {
    t.throws(() => compileLpm4(routes as Route4[]), { name: 'LpmError', code: 'LPM_BAD_ROUTE', field }, field);
  }
  t.ok(compileLpm4([{ prefix: MAX_NEXT_HOP, length: 32, nextHop: MAX_NEXT_HOP }]), 'the largest next hop is accepted');
});

t.test('a reader refuses what is not a compiled table', async (t) => {
  const table = compileLpm4([route('10.0.0.0/25', 1)]);
  t.throws(() => new Lpm4({ ...table, format: 'other' as 'dir-24-8/1' }), { code: 'LPM_BAD_TABLE', field: 'format' });
  t.throws(() => new Lpm4({ ...table, tbl8Groups: 2 }), { code: 'LPM_BAD_TABLE', field: 'tbl8' });
  t.throws(() => new Lpm4({ ...table, tbl24: new SharedArrayBuffer(16) }), { code: 'LPM_BAD_TABLE', field: 'tbl24' });
  t.type(new LpmError('LPM_BAD_TABLE', 'x', 'y'), Error);
});

t.test('a table posted to another thread is shared, not copied, and answers the same there', async (t) => {
  const rand = prng(41);
  const routes = randomRoutes(rand, 300);
  const table = compileLpm4(routes);
  const addrs = Uint32Array.from(probes(rand, routes, 500));
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ Lpm4 }) => {
       const lpm = new Lpm4(workerData.table);
       const results = new Uint32Array(workerData.addrs.length);
       lpm.lookupBurst(workerData.addrs, results, results.length);
       // A write through the worker's view shows whether the memory is shared.
       new Int32Array(workerData.table.tbl24)[0] = 0x1234;
       parentPort.postMessage(results);
     });`,
    { eval: true, workerData: { url: new URL('./lpm4.ts', import.meta.url).href, table, addrs } },
  );
  t.teardown(() => worker.terminate());
  const results = await new Promise<Uint32Array>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const lpm = new Lpm4(table);
  t.same(Array.from(results), Array.from(addrs, (a) => naive(routes, a)), 'the worker found the reference next hops');
  t.equal(new Int32Array(table.tbl24)[0], 0x1234, 'the worker wrote into the same memory');
  t.equal(lpm.lookup(0), 0x1234);
});
