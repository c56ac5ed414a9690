// The bridge's MAC table: learning, moves, aging, static entries, and a full table.
import t from 'tap';
import { MacTable, parseMac, readMac } from '../../src/dataplane/mac-table.ts';

t.test('learn, look up, move, age out', async (t) => {
  const table = new MacTable(16, 1000);
  const mac = parseMac('52:54:00:12:34:56');
  t.equal(table.lookup(mac, 0), -1, 'unknown at first');
  table.learn(mac, 3, 100);
  t.equal(table.lookup(mac, 200), 3);
  table.learn(mac, 5, 300);
  t.equal(table.lookup(mac, 400), 5, 'a station that moved is found on its new port');
  t.equal(table.lookup(mac, 1299), 5, 'still there just before aging');
  t.equal(table.lookup(mac, 1300), -1, 'aged out after 1000 ms without traffic');
});

t.test('static entries neither age nor move', async (t) => {
  const table = new MacTable(16, 1000);
  const mac = parseMac('52:54:00:00:00:01');
  table.addStatic(mac, 1);
  table.learn(mac, 2, 10);
  t.equal(table.lookup(mac, 1e9), 1);
});

t.test('fill to capacity, then one more', async (t) => {
  const table = new MacTable(64, 1000);
  for (let i = 0; i < 64; i++) table.learn(0x525400000000 + i, i, 0);
  for (let i = 0; i < 64; i++) t.equal(table.lookup(0x525400000000 + i, 1), i, `entry ${i} kept`);
  table.learn(0x525400000000 + 64, 1, 1);
  t.equal(table.full, 1, 'the 65th station is counted as not learned');
  t.equal(table.lookup(0x525400000000 + 64, 1), -1);
  table.learn(0x525400000000 + 64, 7, 5000);
  t.equal(table.lookup(0x525400000000 + 64, 5001), 7, 'aged-out slots are reused');
});

t.test('MACs read from frame bytes', async (t) => {
  const frame = Uint8Array.of(0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0x52, 0x54, 0, 0x12, 0x34, 0x56);
  t.equal(readMac(frame, 0), 0xfffefdfcfbfa, 'all 48 bits, high bits set');
  t.equal(readMac(frame, 6), parseMac('52:54:00:12:34:56'));
});
