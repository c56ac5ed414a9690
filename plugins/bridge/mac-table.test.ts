// The bridge's MAC table: learning, moves, aging, static entries, a table flooded with MACs
// (bounded probes, eviction, per-port limits, removal of aged entries), and reads from
// another thread's table through the sequence numbers.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { LEARN_NO_ROOM, LEARN_REFUSED, LEARNED, MacTable, macHigh, macLow, macTableBytes, parseMac, PROBE_WINDOW } from './mac-table.ts';

const [HI, LO] = parseMac('52:54:00:12:34:56');
const nth = (i: number): [number, number] => [0x5254, i];

/** Deterministic random unicast MACs: [high 16 bits (multicast bit clear), low 32 bits]. */
function randomMacs(count: number, seed: number): [number, number][] {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) | 0);
  return Array.from({ length: count }, () => [(next() >>> 16) & 0xfeff, next() ^ (next() << 7)]);
}

/** The table's arrays, as laid out in its buffer, to inspect or to set up a case. */
function slots(buffer: SharedArrayBuffer, capacity: number) {
  return {
    macHi: new Int32Array(buffer, 0, capacity),
    macLo: new Int32Array(buffer, 4 * capacity, capacity),
    lastSeen: new Int32Array(buffer, 8 * capacity, capacity),
    ports: new Int32Array(buffer, 12 * capacity, capacity),
    seq: new Int32Array(buffer, 16 * capacity, capacity),
  };
}

t.test('learn, look up, move, age out (times in seconds)', async (t) => {
  const table = new MacTable(16, 10, undefined, true, 8);
  t.equal(table.lookup(HI, LO, 0), -1, 'unknown at first');
  t.equal(table.learn(HI, LO, 3, 100), LEARNED);
  t.equal(table.lookup(HI, LO, 101), 3);
  table.learn(HI, LO, 5, 102);
  t.equal(table.lookup(HI, LO, 103), 5, 'a station that moved is found on its new port');
  t.same([table.learnedOn(3), table.learnedOn(5)], [0, 1], 'the move is counted on the new port only');
  t.equal(table.lookup(HI, LO, 111), 5, 'still there just before aging');
  t.equal(table.lookup(HI, LO, 112), -1, 'aged out after 10 s without traffic');
  t.equal(table.lookup(HI + 1, LO, 103), -1, 'the high half counts too');
});

t.test('static entries neither age nor move', async (t) => {
  const table = new MacTable(16, 10, undefined, true, 4);
  t.ok(table.addStatic(HI, LO, 1));
  table.learn(HI, LO, 2, 10);
  t.equal(table.lookup(HI, LO, 1e6), 1);
  t.equal(table.learnedOn(2), 0, 'nothing was learned on port 2');
  table.learn(...nth(7), 3, 10);
  t.ok(table.addStatic(...nth(7), 0), 'a learned MAC made static');
  t.same([table.lookup(...nth(7), 1e6), table.learnedOn(3)], [0, 0], 'it moved to the static port, and no longer counts on port 3');
});

t.test('a port flooding MACs fills the table; the other ports still learn', async (t) => {
  const table = new MacTable(4096, 300, undefined, true, 3);
  const [bHi, bLo] = parseMac('52:54:00:00:00:0b');
  const [cHi, cLo] = parseMac('52:54:00:00:00:0c');
  table.learn(bHi, bLo, 2, 0);
  // The worst case: port 1 without a limit sends 5 times as many MACs as the table holds.
  table.setLearnLimit(1, 4096);
  let notLearned = 0;
  for (const [hi, lo] of randomMacs(5 * 4096, 1)) if (table.learn(hi, lo, 1, 100) !== LEARNED) notLearned++;
  t.equal(notLearned, 0, 'every MAC of the flood was learned (evicting older ones)');
  t.ok(table.learnedOn(1) >= 4096 - 64, `the table is full of port 1's MACs (${table.learnedOn(1)} of 4096 slots)`);
  t.equal(table.lookup(bHi, bLo, 101), 2, "port 2's MAC, learned before the flood, survived it (port 1 evicted its own)");
  t.equal(table.learn(cHi, cLo, 2, 101), LEARNED, 'a MAC first seen after the flood is learned');
  t.equal(table.lookup(cHi, cLo, 102), 2, 'and found');
  t.equal(table.learnedOn(2), 2);
});

t.test('a port at its limit learns no more MACs until its entries age out', async (t) => {
  const table = new MacTable(1024, 10, undefined, true, 3);
  table.setLearnLimit(1, 8);
  const macs = randomMacs(40, 2);
  for (let i = 0; i < 8; i++) t.equal(table.learn(...macs[i], 1, 0), LEARNED, `MAC ${i} learned`);
  t.equal(table.learn(...macs[8], 1, 0), LEARN_REFUSED, 'the 9th is refused');
  t.equal(table.lookup(...macs[8], 0), -1, 'and not found');
  t.equal(table.learn(...macs[0], 1, 5), LEARNED, 'a MAC already learned is still refreshed at the limit');
  t.equal(table.learn(...macs[9], 2, 5), LEARNED, 'another port learns');
  t.equal(table.learn(...macs[9], 1, 5), LEARN_REFUSED, 'a station cannot move to a port at its limit');
  t.equal(table.lookup(...macs[9], 5), 2, 'it stays where it was');
  t.equal(table.learnedOn(1), 8);
  t.equal(table.ageOut(9), 0, 'nothing aged yet');
  t.equal(table.ageOut(10), 7, "port 1's seven MACs not seen since second 0 are removed");
  t.equal(table.learnedOn(1), 1, 'port 1 has one MAC left (refreshed at second 5)');
  t.equal(table.lookup(...macs[0], 10), 1, 'and it is still found');
  for (let i = 10; i < 17; i++) t.equal(table.learn(...macs[i], 1, 10), LEARNED, `MAC ${i} learned after aging`);
  t.equal(table.learn(...macs[17], 1, 10), LEARN_REFUSED, 'up to the limit again');
  t.equal(table.learnedOn(2), 1, "port 2's count is its own");
});

t.test('a port at its limit takes back its own aged entry on the probe path without a sweep', async (t) => {
  const table = new MacTable(16, 10, undefined, true, 2);
  table.setLearnLimit(1, 1);
  table.learn(...nth(100), 1, 0);
  // 16 slots, all in use: the whole table is one window without an EMPTY slot.
  for (let i = 0; i < 15; i++) table.learn(...nth(i), 0, 9);
  t.equal(table.learn(...nth(101), 1, 9), LEARN_REFUSED, 'at the limit while its entry is fresh');
  t.equal(table.learn(...nth(101), 1, 10), LEARNED, 'its aged entry is replaced');
  t.same([table.lookup(...nth(100), 10), table.lookup(...nth(101), 10), table.learnedOn(1), table.learnedOn(0)], [-1, 1, 1, 15]);
});

t.test('lookups and learns examine a bounded window of slots', async (t) => {
  const capacity = 64;
  const buffer = new SharedArrayBuffer(macTableBytes(capacity));
  const owner = new MacTable(capacity, 300, buffer, true, 8);
  owner.learn(HI, LO, 3, 0);
  const s = slots(buffer, capacity);
  const home = s.macLo.indexOf(LO);
  t.ok(home >= 0, 'the MAC went to its home slot of an empty table');
  // Every slot holds another MAC; the MAC is put at the last slot of its window, then one further.
  for (let i = 0; i < capacity; i++) {
    s.macHi[i] = 0x0200;
    s.macLo[i] = i;
    s.ports[i] = 1;
  }
  const table = new MacTable(capacity, 300, buffer, false, 8);
  const place = (at: number) => {
    s.macHi[at] = HI;
    s.macLo[at] = LO;
    s.ports[at] = 3;
  };
  place((home + PROBE_WINDOW - 1) & (capacity - 1));
  t.equal(table.lookupOwn(HI, LO, 1), 3, `found ${PROBE_WINDOW - 1} slots from its home`);
  t.equal(table.lookupShared(HI, LO, 1), 3, 'found by a reader on another thread too');
  s.macHi[(home + PROBE_WINDOW - 1) & (capacity - 1)] = 0x0200;
  place((home + PROBE_WINDOW) & (capacity - 1));
  t.equal(table.lookupOwn(HI, LO, 1), -1, `not looked for ${PROBE_WINDOW} slots away`);
  t.equal(table.lookupShared(HI, LO, 1), -1, 'not by a reader either');

  // In a full 4096-slot table, a million lookups of unknown MACs (a probe over the whole
  // table took 20-35 µs each: 20 s or more) and a million learns from a port at its limit.
  const big = new MacTable(4096, 300, undefined, true, 3);
  big.setLearnLimit(1, 4096);
  for (const [hi, lo] of randomMacs(3 * 4096, 3)) big.learn(hi, lo, 1, 0);
  const unknown = randomMacs(1024, 4);
  let started = performance.now();
  let found = 0;
  for (let i = 0; i < 1e6; i++) found += big.lookup(unknown[i & 1023][0], unknown[i & 1023][1], 1) >= 0 ? 1 : 0;
  const lookupMs = performance.now() - started;
  t.equal(found, 0);
  t.ok(lookupMs < 2000, `1e6 lookups of unknown MACs in a full table took ${lookupMs.toFixed(0)} ms`);
  big.setLearnLimit(2, 0);
  started = performance.now();
  let refused = 0;
  for (let i = 0; i < 1e6; i++) refused += big.learn(unknown[i & 1023][0], unknown[i & 1023][1] ^ i, 2, 1) === LEARN_REFUSED ? 1 : 0;
  const learnMs = performance.now() - started;
  t.equal(refused, 1e6);
  t.ok(learnMs < 2000, `1e6 refused learns in a full table took ${learnMs.toFixed(0)} ms`);
  started = performance.now();
  for (let i = 0; i < 1e6; i++) big.learn(unknown[i & 1023][0], unknown[i & 1023][1] ^ i, 1, 1);
  const evictMs = performance.now() - started;
  t.ok(evictMs < 2000, `1e6 learns that evict took ${evictMs.toFixed(0)} ms`);
});

t.test('static entries are never evicted; a window of static entries learns nothing', async (t) => {
  const table = new MacTable(64, 10, undefined, true, 8);
  for (let p = 0; p < 4; p++) t.ok(table.addStatic(...nth(p), p));
  table.setLearnLimit(4, 64);
  table.setLearnLimit(5, 64);
  // Learned entries are always more recently seen than the static ones (second 0).
  randomMacs(5000, 5).forEach(([hi, lo], i) => table.learn(hi, lo, 4 + (i & 1), 1 + (i >> 4)));
  t.ok(table.evicted > 1000, `entries were evicted (${table.evicted})`);
  for (let p = 0; p < 4; p++) t.equal(table.lookup(...nth(p), 1e6), p, `static entry ${p} kept its slot`);

  const statics = new MacTable(16, 10, undefined, true, 2);
  for (let i = 0; i < 16; i++) t.ok(statics.addStatic(...nth(i), 0), `static ${i}`);
  t.notOk(statics.addStatic(...nth(16), 0), 'a 17th static entry has no room');
  t.equal(statics.learn(...nth(17), 1, 1), LEARN_NO_ROOM, 'nor has a learned one');
  t.equal(statics.full, 1, 'counted');
  t.same(Array.from({ length: 16 }, (_, i) => statics.lookup(...nth(i), 1e6)), Array(16).fill(0), 'every static entry is still there');
});

/** The home slot of a MAC: where it goes in an empty table. */
function homeOf(mac: [number, number], capacity: number): number {
  const buffer = new SharedArrayBuffer(macTableBytes(capacity));
  new MacTable(capacity, 10, buffer).learn(...mac, 0, 0);
  return slots(buffer, capacity).ports.indexOf(0);
}

t.test('removed entries leave tombstones: the entries after them are still found', async (t) => {
  const capacity = 64;
  const buffer = new SharedArrayBuffer(macTableBytes(capacity));
  const table = new MacTable(capacity, 10, buffer, true, 2);
  const reader = new MacTable(capacity, 10, buffer, false);
  const s = slots(buffer, capacity);
  // Six MACs with one home slot h sit in h .. h + 5; the first five age out, the sixth not.
  const home = homeOf(nth(0), capacity);
  const same: [number, number][] = [];
  for (let i = 0; same.length < 6; i++) if (homeOf(nth(i), capacity) === home) same.push(nth(i));
  same.forEach((mac, i) => t.equal(table.learn(...mac, 1, i === 5 ? 5 : 0), LEARNED));
  t.equal(s.macLo[(home + 5) & (capacity - 1)], same[5][1], 'the sixth is 5 slots from its home');
  t.equal(table.ageOut(10), 5, 'five removed');
  t.same(Array.from({ length: 5 }, (_, k) => s.ports[(home + k) & (capacity - 1)]), Array(5).fill(-2), 'their slots are tombstones (the sixth lies past them)');
  t.equal(table.lookup(...same[5], 10), 1, 'the sixth is found past the tombstones');
  t.equal(reader.lookup(...same[5], 10, true), 1, 'by a reader too');
  for (let i = 0; i < 5; i++) t.equal(table.lookup(...same[i], 10), -1, `removed MAC ${i} is gone`);
  t.equal(table.learn(...same[2], 1, 11), LEARNED);
  t.equal(s.macLo[home], same[2][1], 'a learn reuses the first tombstone of the path');
  t.same([table.lookup(...same[2], 11), table.lookup(...same[5], 11), table.learnedOn(1)], [1, 1, 2]);
  t.equal(table.ageOut(100), 2, 'all aged');
  t.same([...s.ports], Array(capacity).fill(-1), 'an empty table is all EMPTY again, no tombstones left');

  // A full table that ages out entirely has no EMPTY slot to start from: the purge clears it.
  const small = new SharedArrayBuffer(macTableBytes(16));
  const full = new MacTable(16, 10, small, true, 2);
  full.setLearnLimit(1, 16);
  for (let i = 0; i < 16; i++) full.learn(...nth(i), 1, i % 4 === 0 ? 5 : 0);
  t.equal(full.ageOut(10), 12);
  for (let i = 0; i < 16; i++) t.equal(full.lookup(...nth(i), 10), i % 4 === 0 ? 1 : -1, `MAC ${i} ${i % 4 === 0 ? 'found' : 'gone'}`);
  t.equal(full.ageOut(20), 4);
  t.same([...slots(small, 16).ports], Array(16).fill(-1), 'all EMPTY again');
});

t.test('random learning, moves, limits and aging keep the counts exact and answers right', async (t) => {
  const capacity = 64;
  const buffer = new SharedArrayBuffer(macTableBytes(capacity));
  const table = new MacTable(capacity, 8, buffer, true, 4);
  const s = slots(buffer, capacity);
  for (let p = 0; p < 4; p++) table.setLearnLimit(p, 6 + 5 * p);
  table.addStatic(0x0200, 99, 0);
  const macs = randomMacs(150, 6);
  /** where each MAC was last learned (a learn that returned LEARNED) */
  const learnedAt = new Map<number, number>();
  let seed = 7;
  const next = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) | 0) >>> 8) % n;
  let now = 0;
  let wrong = 0;
  let badCounts = 0;
  let duplicates = 0;
  let hits = 0;
  for (let step = 0; step < 20000; step++) {
    if (next(50) === 0) now++;
    if (next(200) === 0) table.ageOut(now);
    const m = next(macs.length);
    const port = next(4);
    if (table.learn(...macs[m], port, now) === LEARNED) learnedAt.set(m, port);
    const q = next(macs.length);
    const found = table.lookup(...macs[q], now);
    if (found >= 0) hits++;
    if (found >= 0 && found !== learnedAt.get(q)) wrong++;
    const live = new Set<string>();
    const perPort = [0, 0, 0, 0];
    for (let i = 0; i < capacity; i++) {
      if (s.ports[i] < 0 || (s.seq[i] & (1 << 30)) !== 0) continue;
      perPort[s.ports[i]]++;
      const key = `${s.macHi[i]}:${s.macLo[i]}`;
      if (live.has(key)) duplicates++;
      live.add(key);
    }
    for (let p = 0; p < 4; p++) if (perPort[p] !== table.learnedOn(p) || perPort[p] > 6 + 5 * p) badCounts++;
  }
  t.equal(wrong, 0, 'a MAC is only ever found on the port it was last learned on');
  t.equal(duplicates, 0, 'no MAC is in the table twice');
  t.equal(badCounts, 0, "each port's count is the number of its entries, and within its limit");
  t.ok(hits > 1000, `lookups found MACs (${hits})`);
  t.equal(table.lookup(0x0200, 99, now), 0, 'the static entry is still there');
});

t.test("another PMD's table, read through the sequence numbers", async (t) => {
  const buffer = new SharedArrayBuffer(macTableBytes(16));
  const owner = new MacTable(16, 10, buffer, true, 8);
  const reader = new MacTable(16, 10, buffer, false);
  owner.learn(HI, LO, 4, 100);
  t.equal(reader.lookup(HI, LO, 101, true), 4, 'seen by the reader');
  t.equal(reader.foundSeen, 100);
  const { seq, ports } = slots(buffer, 16);
  const slot = ports.indexOf(4);
  seq[slot] += 1; // the writer is in the middle of changing this slot
  t.equal(reader.lookup(HI, LO, 101, true), -1, 'a slot being written is treated as unknown (the frame floods)');
});

t.test('a reader on another thread never sees a torn entry while the owner rewrites the table', async (t) => {
  const capacity = 16;
  const keys = 64;
  const buffer = new SharedArrayBuffer(macTableBytes(capacity));
  /** [0] stop flag, [1] the writer's clock, [2] writes done */
  const control = new Int32Array(new SharedArrayBuffer(12));
  // Key k is only ever learned on port k or k + 64: a port read with the MAC of another
  // key (a torn entry) is outside that set. 64 keys for 16 slots: every learn evicts or
  // moves, and every clock tick removes aged entries.
  const writer = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ MacTable }) => {
       const control = new Int32Array(workerData.control);
       const table = new MacTable(${capacity}, 2, workerData.buffer, true, 128);
       parentPort.postMessage('ready');
       let now = 0;
       for (let round = 0; Atomics.load(control, 0) === 0; round++) {
         for (let k = 0; k < ${keys}; k++) table.learn(0x5254, k, k + ((round + k) & 1) * ${keys}, now);
         if ((round & 7) === 0) {
           table.ageOut(++now);
           Atomics.store(control, 1, now);
         }
         Atomics.add(control, 2, ${keys});
       }
       parentPort.postMessage('done');
     });`,
    { eval: true, workerData: { url: new URL('./mac-table.ts', import.meta.url).href, buffer, control: control.buffer } },
  );
  t.teardown(() => writer.terminate());
  await new Promise((resolve, reject) => {
    writer.once('message', resolve);
    writer.once('error', reject);
  });
  const reader = new MacTable(capacity, 2, buffer, false);
  let torn = 0;
  let hits = 0;
  const end = performance.now() + 500;
  while (performance.now() < end) {
    const now = Atomics.load(control, 1);
    for (let k = 0; k < keys; k++) {
      const port = reader.lookup(0x5254, k, now, true);
      if (port < 0) continue;
      hits++;
      if (port !== k && port !== k + keys) torn++;
    }
  }
  Atomics.store(control, 0, 1);
  t.equal(torn, 0, 'every port found belongs to the MAC looked up');
  t.ok(hits > 10000, `the reader found entries (${hits})`);
  t.ok(Atomics.load(control, 2) > 100000, `the owner rewrote entries meanwhile (${Atomics.load(control, 2)} learns)`);
});

t.test('MACs read from frame bytes', async (t) => {
  const frame = Uint8Array.of(0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0x52, 0x54, 0, 0x12, 0x34, 0x56);
  t.same([macHigh(frame, 0), macLow(frame, 0)], [0xfffe, 0xfdfcfbfa | 0], 'all 48 bits, high bits set');
  t.same([macHigh(frame, 6), macLow(frame, 6)], [HI, LO]);
});
