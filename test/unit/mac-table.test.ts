// The bridge's MAC table: learning, moves, aging, static entries, a full table, and reads
// from another thread's table through the sequence numbers.
import t from 'tap';
import { MacTable, macHigh, macLow, parseMac } from '../../src/dataplane/mac-table.ts';

const [HI, LO] = parseMac('52:54:00:12:34:56');
const nth = (i: number): [number, number] => [0x5254, i];

t.test('learn, look up, move, age out (times in seconds)', async (t) => {
  const table = new MacTable(16, 10);
  t.equal(table.lookup(HI, LO, 0), -1, 'unknown at first');
  table.learn(HI, LO, 3, 100);
  t.equal(table.lookup(HI, LO, 101), 3);
  table.learn(HI, LO, 5, 102);
  t.equal(table.lookup(HI, LO, 103), 5, 'a station that moved is found on its new port');
  t.equal(table.lookup(HI, LO, 111), 5, 'still there just before aging');
  t.equal(table.lookup(HI, LO, 112), -1, 'aged out after 10 s without traffic');
  t.equal(table.lookup(HI + 1, LO, 103), -1, 'the high half counts too');
});

t.test('static entries neither age nor move', async (t) => {
  const table = new MacTable(16, 10);
  table.addStatic(HI, LO, 1);
  table.learn(HI, LO, 2, 10);
  t.equal(table.lookup(HI, LO, 1e6), 1);
});

t.test('fill to capacity, then one more', async (t) => {
  const table = new MacTable(64, 10);
  for (let i = 0; i < 64; i++) table.learn(...nth(i), i, 0);
  for (let i = 0; i < 64; i++) t.equal(table.lookup(...nth(i), 1), i, `entry ${i} kept`);
  table.learn(...nth(64), 1, 1);
  t.equal(table.full, 1, 'the 65th station is counted as not learned');
  t.equal(table.lookup(...nth(64), 1), -1);
  table.learn(...nth(64), 7, 50);
  t.equal(table.lookup(...nth(64), 51), 7, 'aged-out slots are reused');
});

t.test("another PMD's table, read through the sequence numbers", async (t) => {
  const buffer = new SharedArrayBuffer(16 * 20);
  const owner = new MacTable(16, 10, buffer, true);
  const reader = new MacTable(16, 10, buffer, false);
  owner.learn(HI, LO, 4, 100);
  t.equal(reader.lookup(HI, LO, 101, true), 4, 'seen by the reader');
  t.equal(reader.foundSeen, 100);
  const seq = new Int32Array(buffer, 16 * 16, 16);
  const slot = seq.findIndex((s) => s !== 0);
  seq[slot] += 1; // the writer is in the middle of changing this slot
  t.equal(reader.lookup(HI, LO, 101, true), -1, 'a slot being written is treated as unknown (the frame floods)');
});

t.test('MACs read from frame bytes', async (t) => {
  const frame = Uint8Array.of(0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0x52, 0x54, 0, 0x12, 0x34, 0x56);
  t.same([macHigh(frame, 0), macLow(frame, 0)], [0xfffe, 0xfdfcfbfa | 0], 'all 48 bits, high bits set');
  t.same([macHigh(frame, 6), macLow(frame, 6)], [HI, LO]);
});
