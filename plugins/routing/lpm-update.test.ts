// Routes changed in place (lpm4-update.ts, lpm6-update.ts) against full compiles: random
// route sets (every length, nested, repeated, default routes) and random sequences of adds,
// next-hop changes and deletes (covering prefixes included) give exactly the lookups of a
// table compiled from the routes in force; space freed is reused after the grace period;
// and a thread looking up while the routes change only ever sees an address's route from
// before or after a change.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { compileLpm4, Lpm4, NO_ROUTE } from './lpm4.ts';
import { Lpm4Writer, mask4, route4Length, route4Prefix } from './lpm4-update.ts';
import { compileLpm6, Lpm6, type Lpm6Table } from './lpm6.ts';
import { Lpm6Writer, mask6 } from './lpm6-update.ts';
import { REUSE_AFTER_MS } from './table-space.ts';
import { prng } from '../../test/support/prng.ts';
import { probes, randomBelow } from './lpm6-probes.ts';

/** A clock the test moves: freed space becomes reusable when it passes REUSE_AFTER_MS. */
function testClock() {
  const clock = { ms: 0, now: () => clock.ms };
  return clock;
}

// ---- IPv4 ------------------------------------------------------------------------------------

interface R4 {
  prefix: number;
  length: number;
  nextHop: number;
}

const dotted = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;

function writer4(routes: readonly R4[], spareGroups: number, now: () => number): Lpm4Writer {
  const cols = { prefix: Uint32Array.from(routes, (r) => r.prefix), length: Uint8Array.from(routes, (r) => r.length), nextHop: Uint32Array.from(routes, (r) => r.nextHop) };
  const table = compileLpm4(cols, { spareGroups, depths: true });
  return new Lpm4Writer(table, table.depths!, cols, now);
}

/** The routes a writer holds, as a list to compile. */
function routesOf4(w: Lpm4Writer): R4[] {
  return [...w.routes].map(([key, nextHop]) => ({ prefix: route4Prefix(key), length: route4Length(key), nextHop }));
}

/** A random prefix: fresh, or nested in (or covering) one in force, as the length mix says. */
function randomPrefix4(rand: () => number, inForce: readonly R4[]): { prefix: number; length: number } {
  const kind = rand() % 8;
  const base = inForce.length > 0 ? inForce[rand() % inForce.length] : { prefix: rand(), length: rand() % 33 };
  if (kind < 2) return { prefix: rand(), length: rand() % 33 };
  if (kind < 3) return { prefix: 0x0a000000 | (rand() & 0xffff), length: 25 + (rand() % 8) }; // a crowded /16: many tbl8 groups
  if (kind < 6) {
    const length = base.length + (rand() % (33 - base.length));
    return { prefix: mask4(base.prefix, base.length) | (rand() & (length === 0 ? 0 : -1 >>> base.length)), length };
  }
  return { prefix: base.prefix, length: rand() % (base.length + 1) };
}

/** Addresses that matter to each route (first, last, the neighbours outside, one inside) and random ones. */
function probes4(rand: () => number, routes: readonly R4[], random: number): number[] {
  const out: number[] = [];
  for (const r of routes) {
    const first = mask4(r.prefix, r.length);
    const size = 2 ** (32 - r.length);
    out.push(first, (first + size - 1) >>> 0, (first - 1) >>> 0, (first + size) >>> 0, (first + (rand() % size)) >>> 0);
  }
  for (let i = 0; i < random; i++) out.push(rand());
  return out;
}

/** Where the changed table and a compile of its routes answer differently (at most 5). */
function differences4(changed: Lpm4, compiled: Lpm4, addrs: readonly number[]): string[] {
  const bad: string[] = [];
  for (const a of addrs) {
    const got = changed.lookup(a);
    const want = compiled.lookup(a);
    if (got !== want && bad.length < 5) bad.push(`${dotted(a)}: ${got}, compiled ${want}`);
  }
  return bad;
}

/** Whether two tables are the same entry for entry (tbl8 groups compared by content, wherever they are). */
function sameTables4(a: Lpm4, b: Lpm4): string | null {
  const a24 = new Int32Array(a.table.tbl24);
  const b24 = new Int32Array(b.table.tbl24);
  const a8 = new Int32Array(a.table.tbl8);
  const b8 = new Int32Array(b.table.tbl8);
  for (let i = 0; i < a24.length; i++) {
    const x = a24[i];
    const y = b24[i];
    if (x >= 0 || y >= 0) {
      if (x !== y) return `tbl24[${i}] (${dotted(i << 8)}/24): ${x}, compiled ${y}`;
      continue;
    }
    for (let j = 0; j < 256; j++) if (a8[~x + j] !== b8[~y + j]) return `${dotted((i << 8) | j)}: ${a8[~x + j]}, compiled ${b8[~y + j]}`;
  }
  return null;
}

t.test('IPv4: random adds, next-hop changes and deletes in place answer as a compile of the routes in force', async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const rand = prng(seed);
    const clock = testClock();
    const initial: R4[] = [{ prefix: 0, length: 0, nextHop: 1 }];
    for (let i = 0; i < 150; i++) initial.push({ ...randomPrefix4(rand, initial), nextHop: 2 + (rand() % 5000) });
    const w = writer4(initial, 64, clock.now);
    const lpm = new Lpm4(w.table);
    let ops = 0;
    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 60; k++, ops++) {
        const inForce = routesOf4(w);
        const op = rand() % 10;
        if (op < 5 || inForce.length === 0) {
          const p = randomPrefix4(rand, inForce);
          if (!w.set(p.prefix, p.length, 2 + (rand() % 5000))) t.bailout(`seed ${seed}: no room after ${ops} changes`);
        } else if (op < 7) {
          const r = inForce[rand() % inForce.length];
          w.set(r.prefix, r.length, 2 + (rand() % 5000));
        } else {
          // Deletes: any route, the default route and covering prefixes among them.
          const r = op === 9 ? inForce.reduce((a, b) => (b.length < a.length ? b : a)) : inForce[rand() % inForce.length];
          w.delete(r.prefix, r.length);
        }
        clock.ms += 200; // freed groups come back after ten changes
      }
      const routes = routesOf4(w);
      const compiled = new Lpm4(compileLpm4(routes));
      const addrs = probes4(rand, routes, 2000);
      t.same(differences4(lpm, compiled, addrs), [], `seed ${seed}, after ${ops} changes: ${routes.length} routes, every lookup as compiled`);
      if (round % 3 === 2) t.equal(sameTables4(lpm, compiled), null, `seed ${seed}, after ${ops} changes: tbl24 and every tbl8 group as compiled`);
    }
  }
});

t.test('IPv4: known changes, the default route and covering prefixes deleted under longer ones', async (t) => {
  const clock = testClock();
  const ip = (s: string) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0) >>> 0;
  const w = writer4([{ prefix: 0, length: 0, nextHop: 1 }, { prefix: ip('10.0.0.0'), length: 8, nextHop: 2 }], 4, clock.now);
  const lpm = new Lpm4(w.table);
  w.set(ip('10.1.2.0'), 24, 3);
  w.set(ip('10.1.2.128'), 25, 4);
  w.set(ip('10.1.2.129'), 32, 5);
  t.same(['10.1.2.1', '10.1.2.128', '10.1.2.129', '10.1.3.1', '11.0.0.0'].map((a) => lpm.lookup(ip(a))), [3, 4, 5, 2, 1]);
  w.delete(ip('10.1.2.0'), 24);
  t.same(['10.1.2.1', '10.1.2.128', '10.1.2.129'].map((a) => lpm.lookup(ip(a))), [2, 4, 5], 'the /24 under its longer prefixes gone: its addresses go to the /8');
  w.delete(0, 0);
  w.delete(ip('10.0.0.0'), 8);
  t.same(['10.1.2.1', '10.1.2.128', '11.0.0.0'].map((a) => lpm.lookup(ip(a))), [NO_ROUTE, 4, NO_ROUTE], 'the default route and the /8 gone');
  t.equal(w.usedGroups, 1, 'one tbl8 group in use');
  w.delete(ip('10.1.2.128'), 25);
  w.delete(ip('10.1.2.129'), 32);
  t.equal(lpm.lookup(ip('10.1.2.129')), NO_ROUTE);
  t.equal(new Int32Array(w.table.tbl24)[ip('10.1.2.0') >>> 8], NO_ROUTE, "the group's last longer prefix gone: its /24 holds the next hop again");

  // Room: 4 spare groups; freed ones wait out the grace period before they are used again.
  const hosts = [0, 1, 2, 3, 4].map((k) => ip(`20.0.${k}.1`));
  const fits = hosts.map((a) => w.set(a, 32, 9));
  t.same(fits, [true, true, true, false, false], 'four /24s with host routes fit, the fifth does not (one group still waits out its grace period)');
  t.equal(lpm.lookup(hosts[4]), NO_ROUTE, 'a route that did not fit changed nothing');
  clock.ms += REUSE_AFTER_MS;
  t.ok(w.set(hosts[4], 32, 9), 'after the grace period the freed group is used again');
  t.same(hosts.map((a) => lpm.lookup(a)), [9, 9, 9, NO_ROUTE, 9]);
});

// ---- IPv6 ------------------------------------------------------------------------------------

interface R6 {
  bytes: Uint8Array;
  length: number;
  nextHop: number;
}

function columns6(routes: readonly R6[]) {
  const prefix = new Uint8Array(16 * routes.length);
  routes.forEach((r, i) => prefix.set(r.bytes, 16 * i));
  return { prefix, length: Uint8Array.from(routes, (r) => r.length), nextHop: Uint32Array.from(routes, (r) => r.nextHop) };
}

function writer6(routes: readonly R6[], spareNodes: number, now: () => number): Lpm6Writer {
  const cols = columns6(routes);
  return new Lpm6Writer(compileLpm6(cols, { spareNodes }), cols, now);
}

const text6 = (a: Uint8Array): string => Array.from({ length: 8 }, (_, i) => ((a[2 * i] << 8) | a[2 * i + 1]).toString(16)).join(':');

/** Fresh prefixes, prefixes nested in or covering one in force, and many under a few /16s (deep subtries). */
function randomPrefix6(rand: () => number, inForce: readonly R6[]): { bytes: Uint8Array; length: number } {
  const roots = [Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, ...new Uint8Array(12)), Uint8Array.of(0xfd, 0, ...new Uint8Array(14))];
  const kind = rand() % 10;
  if (kind < 2 || inForce.length === 0) return { bytes: randomBelow(rand, new Uint8Array(16), 0), length: rand() % 129 };
  if (kind < 4) {
    const length = [32, 40, 48, 56, 64, 127, 128][rand() % 7] - (rand() % 3);
    return { bytes: randomBelow(rand, roots[rand() % 2], 16 + (rand() % 24)), length };
  }
  const base = inForce[rand() % inForce.length];
  if (kind < 8) {
    const length = Math.min(128, base.length + (rand() % 4 === 0 ? rand() % (129 - base.length) : rand() % 12));
    return { bytes: randomBelow(rand, base.bytes, base.length), length };
  }
  return { bytes: base.bytes, length: rand() % (base.length + 1) };
}

function routesOf6(w: Lpm6Writer): R6[] {
  return [...w.routes.values()].map((r) => ({ bytes: r.bytes, length: r.length, nextHop: r.nextHop }));
}

function differences6(changed: Lpm6, compiled: Lpm6, addrs: readonly Uint8Array[]): string[] {
  const bad: string[] = [];
  for (const a of addrs) {
    const got = changed.lookup(a, 0);
    const want = compiled.lookup(a, 0);
    if (got !== want && bad.length < 5) bad.push(`${text6(a)}: ${got}, compiled ${want}`);
  }
  return bad;
}

t.test('IPv6: random adds, next-hop changes and deletes in place answer as a compile of the routes in force', async (t) => {
  for (const seed of [11, 12, 13, 14]) {
    const rand = prng(seed);
    const clock = testClock();
    const initial: R6[] = [{ bytes: new Uint8Array(16), length: 0, nextHop: 1 }];
    for (let i = 0; i < 200; i++) initial.push({ ...randomPrefix6(rand, initial), nextHop: 2 + (rand() % 5000) });
    const w = writer6(initial, 20_000, clock.now);
    let ops = 0;
    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 80; k++, ops++) {
        const inForce = routesOf6(w);
        const op = rand() % 10;
        let room: boolean;
        if (op < 5 || inForce.length === 0) {
          const p = randomPrefix6(rand, inForce);
          room = w.set(p.bytes, 0, p.length, 2 + (rand() % 5000));
        } else if (op < 7) {
          const r = inForce[rand() % inForce.length];
          room = w.set(r.bytes, 0, r.length, 2 + (rand() % 5000));
        } else {
          const r = op === 9 ? inForce.reduce((a, b) => (b.length < a.length ? b : a)) : inForce[rand() % inForce.length];
          room = w.delete(r.bytes, 0, r.length);
        }
        if (!room) t.bailout(`seed ${seed}: no room after ${ops} changes`);
        clock.ms += 100;
      }
      // A reader made now, as a PMD makes one when told the tables changed.
      const lpm = new Lpm6(w.table);
      const routes = routesOf6(w);
      const compiled = new Lpm6(compileLpm6(columns6(routes)));
      t.same(differences6(lpm, compiled, probes(rand, routes, 2000)), [], `seed ${seed}, after ${ops} changes: ${routes.length} routes, every lookup as compiled`);
    }
    t.ok(w.usedNodes < 20_000, `seed ${seed}: ${w.usedNodes} nodes in use (freed ones reused)`);
  }
});

t.test('IPv6: known changes, deep and shallow, and the space they free', async (t) => {
  const clock = testClock();
  const p = (text: string, length: number) => {
    const [head, tail = ''] = text.split('::');
    const h = head ? head.split(':') : [];
    const tl = tail ? tail.split(':') : [];
    const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl];
    return mask6(Uint8Array.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 255])), 0, length);
  };
  const w = writer6([{ bytes: p('::', 0), length: 0, nextHop: 1 }], 64, clock.now);
  const lpm = new Lpm6(w.table);
  const look = (a: string) => lpm.lookup(p(a, 128), 0);
  w.set(p('2001:db8::', 32), 0, 32, 2);
  w.set(p('2001:db8:1::', 48), 0, 48, 3);
  w.set(p('2001:db8:1:2::', 64), 0, 64, 4);
  w.set(p('2001:db8:1:2::1', 128), 0, 128, 5);
  t.same(['2001:db8:9::', '2001:db8:1::', '2001:db8:1:2::', '2001:db8:1:2::1', '2001:db9::'].map(look), [2, 3, 4, 5, 1]);
  w.set(p('2000::', 3), 0, 3, 6);
  t.same(['2001:db9::', '2001:db8:9::', '3fff::', '4000::'].map(look), [6, 2, 6, 1], 'a /3 under the default route: direct entries, and the subtrie under them rebuilt');
  w.delete(p('2001:db8:1::', 48), 0, 48);
  w.delete(p('2001:db8::', 32), 0, 32);
  t.same(['2001:db8:1::', '2001:db8:1:2::', '2001:db8:1:2::1'].map(look), [6, 4, 5], 'covering prefixes gone: their addresses go to the /3');
  w.delete(p('2001:db8:1:2::', 64), 0, 64);
  w.delete(p('2001:db8:1:2::1', 128), 0, 128);
  t.same(['2001:db8:1:2::1', '2001:db8::'].map(look), [6, 6]);
  t.ok(new Int32Array(w.table.direct)[0x2001] >= 0, 'the last route under 2001::/16 gone: its direct entry is a next hop again');
  const used = w.usedNodes;
  clock.ms += REUSE_AFTER_MS;
  w.set(p('2001:db8::', 32), 0, 32, 7);
  t.ok(w.usedNodes < used, `freed nodes reclaimed after the grace period (${used} then ${w.usedNodes} in use)`);
  t.equal(look('2001:db8::5'), 7);
});

// ---- readers in another thread -----------------------------------------------------------------

t.test('a thread looking up while routes change in place sees, for each address, its route before or after', async (t) => {
  // Stable addresses: each under a route that never changes, with churn all around it
  // (host routes and /24s added and removed in the same /16s and /24s, tbl8 groups made
  // and collapsed; IPv6 /48s and /64s in the same subtrie, blocks copied and relinked).
  const ip = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  const stable4 = Array.from({ length: 64 }, (_, k) => ({ prefix: ip(10, k, 0, 0), length: 16, nextHop: 100 + k }));
  const w4 = writer4([{ prefix: 0, length: 0, nextHop: 1 }, ...stable4], 4096, () => performance.now());
  const six = (k: number, x: number) => Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, k, x, ...new Uint8Array(10));
  const stable6 = Array.from({ length: 64 }, (_, k) => ({ bytes: six(k, 0), length: 40, nextHop: 200 + k }));
  const w6 = writer6([{ bytes: new Uint8Array(16), length: 0, nextHop: 1 }, ...stable6], 200_000, () => performance.now());
  // The probes: addresses of the stable routes that no changing route covers, with their answer.
  const probe4 = Uint32Array.from(stable4, (r) => r.prefix + 0xff00 + 7);
  const want4 = Uint32Array.from(stable4, (r) => r.nextHop);
  const probe6 = new Uint8Array(16 * 64);
  stable6.forEach((r, k) => probe6.set(six(k, 0xff), 16 * k));
  const want6 = Uint32Array.from(stable6, (r) => r.nextHop);
  // [0] stop, [1] the reader started, [2] its lookups so far
  const stop = new Int32Array(new SharedArrayBuffer(12));
  const worker = new Worker(
    `const { workerData: d, parentPort } = require('node:worker_threads');
     Promise.all([import(d.url4), import(d.url6)]).then(([{ Lpm4 }, { Lpm6 }]) => {
       const lpm4 = new Lpm4(d.table4);
       const lpm6 = new Lpm6(d.table6);
       let lookups = 0, wrong = [];
       Atomics.store(d.stop, 1, 1);
       while (Atomics.load(d.stop, 0) === 0) {
         for (let k = 0; k < d.probe4.length; k++) {
           const got = lpm4.lookup(d.probe4[k]);
           if (got !== d.want4[k] && wrong.length < 5) wrong.push('v4 probe ' + k + ': ' + got);
           const got6 = lpm6.lookup(d.probe6, 16 * k);
           if (got6 !== d.want6[k] && wrong.length < 5) wrong.push('v6 probe ' + k + ': ' + got6);
           lookups += 2;
         }
         Atomics.store(d.stop, 2, lookups);
       }
       parentPort.postMessage({ lookups, wrong });
     });`,
    { eval: true, workerData: { url4: new URL('./lpm4.ts', import.meta.url).href, url6: new URL('./lpm6.ts', import.meta.url).href, table4: w4.table, table6: w6.table satisfies Lpm6Table, probe4, want4, probe6, want6, stop } },
  );
  t.teardown(() => worker.terminate());
  const answer = new Promise<{ lookups: number; wrong: string[] }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  // The changes start once the reader runs (its thread's start and imports can take seconds
  // on a loaded machine), and go on for 1.5 s and until it has looked up 10,000 times.
  const deadline = performance.now() + 60_000;
  while (Atomics.load(stop, 1) === 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const rand = prng(99);
  let changes = 0;
  const until = performance.now() + 1500;
  while ((performance.now() < until || Atomics.load(stop, 2) <= 10_000) && performance.now() < deadline) {
    for (let n = 0; n < 200; n++, changes++) {
      const k = rand() % 64;
      const on = rand() % 2 === 0;
      const host = ip(10, k, rand() % 255, rand() & 255);
      const net = ip(10, k, rand() % 255, 0);
      const deep = six(k, rand() % 255);
      deep[6] = rand() & 255;
      deep[7] = rand() & 255;
      if (on) {
        w4.set(host, 32, 2 + n);
        w4.set(net, 24, 3 + n);
        w6.set(deep, 0, 64, 4 + n);
        w6.set(deep, 0, 48, 5 + n);
      } else {
        for (const [p, l] of [[host, 32], [net, 24]]) w4.delete(p, l);
        w6.delete(deep, 0, 64);
        w6.delete(deep, 0, 48);
      }
    }
    await new Promise((r) => setImmediate(r));
  }
  Atomics.store(stop, 0, 1);
  const { lookups, wrong } = await answer;
  t.ok(lookups > 10_000, `${lookups} lookups in the other thread during ${changes} rounds of changes`);
  t.same(wrong, [], 'every lookup of an address under an unchanged route found that route');
});
