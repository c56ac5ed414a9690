// IPv6 longest-prefix match: known cases, then random route lists (every length 0..128,
// nested, repeated, default and host routes) checked against a linear scan, recompiled
// after changes, addresses read at any offset of a packet buffer, and another thread.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { MAX_NEXT_HOP, NO_ROUTE } from './lpm4.ts';
import { compileLpm6, Lpm6, NODE_WORDS, type Route6 } from './lpm6.ts';
import { prng } from '../../test/support/prng.ts';
import { probes, randomBelow } from './lpm6-probes.ts';

/** Routes as the probes take them. */
const asPrefixes = (routes: readonly Route6[]) => routes.map((r) => ({ bytes: r.prefix, length: r.length }));


/** Address text (full or with ::) to 16 bytes. */
function ip6(text: string): Uint8Array {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 255;
  });
  return out;
}
const route = (cidr: string, nextHop: number): Route6 => {
  const [a, l] = cidr.split('/');
  return { prefix: ip6(a), length: Number(l), nextHop };
};
const text6 = (a: Uint8Array): string => Array.from({ length: 8 }, (_, i) => ((a[2 * i] << 8) | a[2 * i + 1]).toString(16)).join(':');

function covers(r: Route6, a: Uint8Array): boolean {
  const full = r.length >>> 3;
  for (let b = 0; b < full; b++) if (r.prefix[b] !== a[b]) return false;
  const rest = r.length & 7;
  return rest === 0 || ((r.prefix[full] ^ a[full]) & (0xff00 >>> rest) & 0xff) === 0;
}

/** The reference: a linear scan, the longest prefix wins, and of equal ones the later. */
function naive(routes: readonly Route6[], a: Uint8Array): number {
  let best = -1;
  let hop = NO_ROUTE;
  for (const r of routes) {
    if (r.length >= best && covers(r, a)) {
      best = r.length;
      hop = r.nextHop;
    }
  }
  return hop;
}

/**
 * Random routes over all lengths 0..128: some fresh, most derived from an earlier one (a
 * longer or shorter prefix of it, or the same again), so that they nest several to a trie
 * node and repeat; a few fixed /16s keep many routes under one direct entry.
 */
function randomRoutes(rand: () => number, count: number): Route6[] {
  const routes: Route6[] = [{ prefix: new Uint8Array(16), length: 0, nextHop: 1 + (rand() % 1000) }];
  const roots = [ip6('2001:db8::'), ip6('fd00::'), ip6('2a00:1450::')];
  while (routes.length < count) {
    const nextHop = 1 + (rand() % 100000);
    const base = routes[rand() % routes.length];
    const kind = rand() % 10;
    if (kind < 2) routes.push({ prefix: randomBelow(rand, roots[rand() % roots.length], 16), length: 16 + (rand() % 113), nextHop });
    else if (kind < 3) routes.push({ prefix: randomBelow(rand, new Uint8Array(16), 0), length: rand() % 129, nextHop });
    else if (kind < 7) {
      // a little longer most of the time, so that nesting stays within a node or two
      const length = Math.min(128, base.length + (rand() % 4 === 0 ? rand() % (129 - base.length) : rand() % 12));
      routes.push({ prefix: randomBelow(rand, base.prefix, base.length), length, nextHop });
    } else if (kind < 9) routes.push({ prefix: base.prefix, length: rand() % (base.length + 1), nextHop });
    else routes.push({ prefix: base.prefix, length: base.length, nextHop });
  }
  return routes;
}


function mismatches(lpm: Lpm6, routes: readonly Route6[], addrs: readonly Uint8Array[]): string[] {
  const bad: string[] = [];
  for (const a of addrs) {
    const want = naive(routes, a);
    const got = lpm.lookup(a, 0);
    if (got !== want && bad.length < 5) bad.push(`${text6(a)}: ${got}, expected ${want}`);
  }
  return bad;
}

t.test('known routes, nested from the default route down to a host route', async (t) => {
  const lpm = new Lpm6(compileLpm6([
    route('::/0', 1),
    route('2000::/3', 2),
    route('2001:db8::/32', 3),
    route('2001:db8:1::/48', 4),
    route('2001:db8:1:2::/64', 5),
    route('2001:db8:1:2::/63', 6),
    route('2001:db8:1:2::1/128', 7),
    route('2001:db8:1:2:8000::/65', 8),
    route('2001:db8:1:3::/64', 9),
    route('2001:dc0::/28', 10),
    route('fe80::/10', 11),
  ]));
  const cases: [string, number][] = [
    ['::1', 1], ['3fff::1', 2], ['4000::', 1], ['2001:db8:ffff::1', 3], ['2001:db8:1:ff::1', 4],
    ['2001:db8:1:2::', 5], ['2001:db8:1:2::1', 7], ['2001:db8:1:2::2', 5], ['2001:db8:1:2:7fff:ffff:ffff:ffff', 5],
    ['2001:db8:1:2:8000::', 8], ['2001:db8:1:3::1', 9], ['2001:db8:1:4::', 4], ['2001:dcf:1::', 10],
    ['2001:dd0::', 2], ['febf:ffff::', 11], ['fec0::', 1], ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 1],
  ];
  for (const [a, want] of cases) t.equal(lpm.lookup(ip6(a), 0), want, a);
});

t.test('an empty list routes nothing; no default route means NO_ROUTE outside the prefixes', async (t) => {
  const empty = new Lpm6(compileLpm6([]));
  t.equal(empty.lookup(ip6('2001:db8::1'), 0), NO_ROUTE);
  t.same([empty.table.nodeCount, empty.table.leafCount], [0, 0]);
  const lpm = new Lpm6(compileLpm6([route('2001:db8::1/128', 9)]));
  t.same([lpm.lookup(ip6('2001:db8::1'), 0), lpm.lookup(ip6('2001:db8::'), 0), lpm.lookup(ip6('2001:db8::2'), 0)], [9, NO_ROUTE, NO_ROUTE]);
  t.same([lpm.table.nodeCount, lpm.table.leafCount], [1, 0], 'a host route alone is one node, bytes 2..14 its path, its 3 leaves inline');
});

t.test('an address leaving a compressed path at any byte gets the route above the path', async (t) => {
  const host = ip6('2001:db8:1:2:3:4:5:6');
  const lpm = new Lpm6(compileLpm6([route('::/0', 1), route('2001:db8::/32', 2), { prefix: host, length: 128, nextHop: 3 }, route('2001:db8:1:2:3:4:5:7/128', 4)]));
  t.equal(lpm.lookup(host, 0), 3);
  for (let b = 0; b < 16; b++) {
    const other = Uint8Array.from(host);
    other[b] ^= 0x10;
    t.equal(lpm.lookup(other, 0), b < 4 ? 1 : 2, `byte ${b} differs`);
  }
});

t.test('host bits beyond the length are ignored; the later of two equal prefixes wins', async (t) => {
  const lpm = new Lpm6(compileLpm6([route('2001:db8::1/32', 1), route('2001:db9:1::/48', 2), route('2001:db9:1:ffff::/48', 3), route('::1/0', 4), route('::/0', 5)]));
  t.equal(lpm.lookup(ip6('2001:db8:5::'), 0), 1);
  t.equal(lpm.lookup(ip6('2001:db9:1::9'), 0), 3, 'the later duplicate');
  t.equal(lpm.lookup(ip6('::'), 0), 5, 'the later default route');
});

t.test('a prefix repeated 1000 times, under a default route repeated as often: the last copy of each wins', async (t) => {
  const routes: Route6[] = [];
  for (let i = 1; i <= 1000; i++) routes.push(route('2001:db8:1:2::/40', i), route('::/0', 5000 + i), route('2001:db8:1:2::/72', 9000 + i));
  const lpm = new Lpm6(compileLpm6(routes));
  t.same([lpm.lookup(ip6('2001:db8:1::'), 0), lpm.lookup(ip6('2001:db8:1:2::'), 0), lpm.lookup(ip6('::1'), 0)], [1000, 10000, 6000]);
});

t.test('route objects (bytes or number arrays) and columns compile to the same table', async (t) => {
  const rand = prng(7);
  const routes = randomRoutes(rand, 1500);
  const asArrays = routes.map((r) => ({ ...r, prefix: Array.from(r.prefix) }));
  const prefix = new Uint8Array(16 * routes.length);
  routes.forEach((r, i) => prefix.set(r.prefix, 16 * i));
  const columns = { prefix, length: Uint8Array.from(routes, (r) => r.length), nextHop: Uint32Array.from(routes, (r) => r.nextHop) };
  const tables = [compileLpm6(routes), compileLpm6(asArrays), compileLpm6(columns)];
  for (const other of tables.slice(1)) {
    t.ok((['direct', 'nodes'] as const).every((k) => Buffer.from(tables[0][k]).equals(Buffer.from(other[k]))), 'the buffers are equal byte for byte');
  }
});

t.test('random route lists against a linear scan (seeded)', async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const rand = prng(seed);
    const routes = randomRoutes(rand, 50 + (rand() % 800));
    const lpm = new Lpm6(compileLpm6(routes));
    const addrs = probes(rand, asPrefixes(routes), 3000);
    t.same(mismatches(lpm, routes, addrs), [], `seed ${seed}: ${routes.length} routes, every lookup as the reference`);
    // The same addresses in bursts (300 at a time: longer than one lockstep piece), the
    // lookups of a burst one after the other and in lockstep.
    const bytes = new Uint8Array(16 * addrs.length);
    addrs.forEach((a, i) => bytes.set(a, 16 * i));
    for (const lockstep of [false, true]) {
      const reader = new Lpm6(lpm.table, lockstep);
      const results = new Uint32Array(addrs.length);
      for (let i = 0; i < addrs.length; i += 300) {
        const count = Math.min(300, addrs.length - i);
        reader.lookupBurst(bytes, Uint32Array.from({ length: count }, (_, j) => 16 * (i + j)), results.subarray(i), count);
      }
      const wrong = addrs.findIndex((a, i) => results[i] !== naive(routes, a));
      t.equal(wrong, -1, `seed ${seed}: lookupBurst${lockstep ? ' in lockstep' : ''} as the reference${wrong < 0 ? '' : ` (not for ${text6(addrs[wrong])})`}`);
    }
  }
});

t.test('every prefix of one address, 0..128, and every prefix of lengths 17..24 under one /16', async (t) => {
  const rand = prng(12);
  const a = ip6('2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff');
  const chain = Array.from({ length: 129 }, (_, length) => ({ prefix: a, length, nextHop: 1000 + length }));
  const lpm = new Lpm6(compileLpm6(chain));
  for (let length = 0; length <= 128; length++) {
    // the address that leaves the chain just after bit `length` (flip the next bit)
    const off = Uint8Array.from(a);
    if (length < 128) off[length >>> 3] ^= 0x80 >>> (length & 7);
    t.equal(lpm.lookup(off, 0), length === 128 ? 1128 : 1000 + length, `left after /${length}`);
  }
  const dense: Route6[] = [];
  for (let length = 17; length <= 24; length++) {
    for (let i = 0; i < 2 ** (length - 16); i++) {
      const prefix = ip6('2001::');
      prefix[2] = i << (24 - length);
      dense.push({ prefix, length, nextHop: 1000 * length + i });
    }
  }
  for (let i = dense.length - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [dense[i], dense[j]] = [dense[j], dense[i]];
  }
  const full = new Lpm6(compileLpm6(dense));
  for (let v = 0; v < 256; v++) {
    const addr = ip6('2001::');
    addr[2] = v;
    t.equal(full.lookup(addr, 0), 24000 + v, `2001:${v.toString(16).padStart(2, '0')}00::`);
  }
  t.equal(full.table.leafCount, 256, 'a node with 256 different slots has 256 leaves');
});

t.test('routes added and removed, then recompiled: the new table answers as the new list, the old one as the old', async (t) => {
  for (const seed of [21, 22, 23]) {
    const rand = prng(seed);
    const before = randomRoutes(rand, 500);
    const old = new Lpm6(compileLpm6(before));
    const after = before.filter(() => rand() % 3 !== 0).concat(randomRoutes(rand, 200).slice(1));
    const updated = new Lpm6(compileLpm6(after));
    const addrs = probes(rand, asPrefixes(before.concat(after)), 1000);
    t.same(mismatches(updated, after, addrs), [], `seed ${seed}: the recompiled table`);
    t.same(mismatches(old, before, addrs), [], `seed ${seed}: the table still in use until the swap is untouched`);
  }
});

t.test('addresses read where they lie in a packet buffer; lookupBurst gives what lookup gives', async (t) => {
  const rand = prng(31);
  const routes = randomRoutes(rand, 600);
  const table = compileLpm6(routes);
  const addrs = probes(rand, asPrefixes(routes), 0).slice(0, 32);
  // 32 frames of 70 bytes each, the destination address at byte 38 (14 Ethernet + 24)
  const buffer = new Uint8Array(32 * 70).fill(0xee);
  const offsets = new Uint32Array(32);
  addrs.forEach((a, i) => {
    offsets[i] = 70 * i + 38;
    buffer.set(a, offsets[i]);
  });
  for (const lockstep of [false, true]) {
    const lpm = new Lpm6(table, lockstep);
    const results = new Uint32Array(32).fill(0xdead);
    lpm.lookupBurst(buffer, offsets, results, 31);
    t.same(Array.from(results.subarray(0, 31)), addrs.slice(0, 31).map((a) => naive(routes, a)), lockstep ? 'in lockstep' : 'one after the other');
    t.equal(results[31], 0xdead, 'nothing written past count');
  }
  const lpm = new Lpm6(table);
  t.notOk(lpm.lockstep, 'a small table is read one lookup after the other');
  for (let i = 0; i < 32; i++) t.equal(lpm.lookup(buffer, offsets[i]), naive(routes, addrs[i]), `frame ${i}`);
});

t.test('bad routes are refused with the field at fault', async (t) => {
  const cases: [unknown, string][] = [
    [[route('2001:db8::/32', 1), { prefix: new Uint8Array(16), length: 129, nextHop: 1 }], 'routes[1].length'],
    [[{ prefix: new Uint8Array(16), length: -1, nextHop: 1 }], 'routes[0].length'],
    [[{ prefix: new Uint8Array(16), length: 8, nextHop: 0 }], 'routes[0].nextHop'],
    [[{ prefix: new Uint8Array(16), length: 8, nextHop: MAX_NEXT_HOP + 1 }], 'routes[0].nextHop'],
    [[{ prefix: new Uint8Array(4), length: 8, nextHop: 1 }], 'routes[0].prefix'],
    [[{ prefix: [...new Uint8Array(15), 256], length: 8, nextHop: 1 }], 'routes[0].prefix[15]'],
    [{ prefix: new Uint8Array(32), length: new Uint8Array([8, 130]), nextHop: new Uint32Array([1, 1]) }, 'routes.length[1]'],
    [{ prefix: new Uint8Array(16), length: new Uint8Array(1), nextHop: new Uint32Array([0]) }, 'routes.nextHop[0]'],
    [{ prefix: new Uint8Array(17), length: new Uint8Array(1), nextHop: new Uint32Array(1) }, 'routes'],
  ];
  for (const [routes, field] of cases) {
    t.throws(() => compileLpm6(routes as Route6[]), { name: 'LpmError', code: 'LPM_BAD_ROUTE', field }, field);
  }
});

t.test('a reader refuses what is not a compiled table', async (t) => {
  const table = compileLpm6([route('2001:db8::/64', 1)]);
  t.throws(() => new Lpm6({ ...table, format: 'other' as 'poptrie-16-8/1' }), { code: 'LPM_BAD_TABLE', field: 'format' });
  t.throws(() => new Lpm6({ ...table, nodeCount: table.nodeCount + 1 }), { code: 'LPM_BAD_TABLE', field: 'nodes' });
  t.throws(() => new Lpm6({ ...table, leafCount: table.leafCount + 1 }), { code: 'LPM_BAD_TABLE', field: 'nodes' });
  t.throws(() => new Lpm6({ ...table, direct: new SharedArrayBuffer(4) }), { code: 'LPM_BAD_TABLE', field: 'direct' });
  t.equal(table.nodes.byteLength, (table.nodeCount * NODE_WORDS + table.leafCount) * 4, "the nodes, then the leaves not inline");
});

t.test('a table posted to another thread is shared, not copied, and answers the same there', async (t) => {
  const rand = prng(41);
  const routes = randomRoutes(rand, 300);
  const table = compileLpm6(routes);
  const addrs = probes(rand, asPrefixes(routes), 200);
  const bytes = new Uint8Array(16 * addrs.length);
  addrs.forEach((a, i) => bytes.set(a, 16 * i));
  const offsets = Uint32Array.from(addrs, (_, i) => 16 * i);
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ Lpm6 }) => {
       const lpm = new Lpm6(workerData.table, true);
       const results = new Uint32Array(workerData.offsets.length);
       lpm.lookupBurst(workerData.bytes, workerData.offsets, results, results.length);
       parentPort.postMessage(results);
     });`,
    { eval: true, workerData: { url: new URL('./lpm6.ts', import.meta.url).href, table, bytes, offsets } },
  );
  t.teardown(() => worker.terminate());
  const results = await new Promise<Uint32Array>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  t.same(Array.from(results), addrs.map((a) => naive(routes, a)), 'the worker found the reference next hops');
});
