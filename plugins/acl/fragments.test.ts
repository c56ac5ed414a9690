// The fragment table alone: which entry a new one takes in a full set (a port holding
// more live entries gives its own up, never those of a port holding fewer), expiry, the
// bytes that end an entry.
import t from 'tap';
import { FRAGMENT_TIMEOUT_MS, FragmentTable } from './fragments.ts';

const SRC = new Uint32Array([0x0a000002]);
const DST = new Uint32Array([0x0a000105]);

/** Identifications from `from` on whose keys (port, IPv4 UDP, SRC, DST) fall in the set of `like`'s. */
function sameSet(table: FragmentTable, port: number, likePort: number, like: number, count: number, from: number): number[] {
  const set = table.setOf((likePort << 16) | (4 << 8) | 17, like, SRC, DST, 0, 1);
  const ids: number[] = [];
  for (let id = from; ids.length < count; id++) if (table.setOf((port << 16) | (4 << 8) | 17, id, SRC, DST, 0, 1) === set) ids.push(id);
  return ids;
}

const remember = (table: FragmentTable, port: number, id: number, now: number, verdict = 0) => table.remember(port, 4, 17, id, SRC, DST, 0, 100, verdict, 0, now);
const find = (table: FragmentTable, port: number, id: number, now: number) => table.find(port, 4, 17, id, SRC, DST, 0, now);

t.test('a full set: the new entry takes the oldest of a port holding as many or more; else none', async (t) => {
  const table = new FragmentTable(12345);
  // port 1 holds ten entries elsewhere, port 2 fills one set with four
  const set2 = sameSet(table, 2, 2, 1, 4, 1);
  set2.forEach((id, k) => t.ok(remember(table, 2, id, 1000 + k), `port 2 entry ${k}`));
  const set = table.setOf((2 << 16) | (4 << 8) | 17, set2[0], SRC, DST, 0, 1);
  let elsewhere = 0;
  for (let id = 1; elsewhere < 10; id++) {
    if (table.setOf((1 << 16) | (4 << 8) | 17, id, SRC, DST, 0, 1) === set) continue;
    if (remember(table, 1, id, 1400)) elsewhere++;
  }
  const [one] = sameSet(table, 1, 2, set2[0], 1, 1);
  t.notOk(remember(table, 1, one, 1500), 'port 1 (10 entries) may not take the place of port 2 (4)');
  t.ok(set2.every((id) => find(table, 2, id, 1500) >= 0), "port 2's entries all stand");
  // port 3 (none yet) may: port 2's oldest goes
  const [three1] = sameSet(table, 3, 2, set2[0], 1, 1);
  t.ok(remember(table, 3, three1, 1500), 'port 3 (no entries) takes a place');
  t.equal(find(table, 2, set2[0], 1500), -1, "port 2's oldest entry gave way");
  t.ok(find(table, 2, set2[1], 1500) >= 0, 'its others stand');
  // port 2 (3 entries now) in its full set: its own oldest goes, not port 3's (1)
  const [two2] = sameSet(table, 2, 2, set2[0], 1, set2[3] + 1);
  t.ok(remember(table, 2, two2, 1500), 'port 2 takes the place of its own oldest');
  t.equal(find(table, 2, set2[1], 1500), -1, 'its oldest went');
  t.ok(find(table, 3, three1, 1500) >= 0, "port 3's entry stands");
});

t.test('an entry serves until its timeout, or until all its bytes came', async (t) => {
  const table = new FragmentTable(1);
  t.ok(remember(table, 0, 7, 0, -5));
  const slot = find(table, 0, 7, FRAGMENT_TIMEOUT_MS - 1);
  t.ok(slot >= 0, 'found before the timeout');
  t.equal(table.verdict, -5, 'with its verdict');
  t.equal(find(table, 0, 7, FRAGMENT_TIMEOUT_MS), -1, 'not at the timeout');
  t.equal(table.live, 0, 'an expired entry found is emptied');
  t.ok(remember(table, 0, 8, 0));
  const s8 = find(table, 0, 8, 1);
  table.took(s8, 100, 300); // the last fragment: the packet ends at 300, 200 bytes seen
  t.ok(find(table, 0, 8, 1) >= 0, 'not all the bytes yet');
  table.took(s8, 100, 0);
  t.equal(find(table, 0, 8, 1), -1, 'all 300 came: emptied');
  t.ok(remember(table, 0, 9, 0));
  table.sweep(FRAGMENT_TIMEOUT_MS * 2);
  for (let k = 0; k < 1024 / 16; k++) table.sweep(FRAGMENT_TIMEOUT_MS * 2);
  t.equal(table.live, 0, 'the sweep empties expired entries');
});
