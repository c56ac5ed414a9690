// The neighbour table's shares: an entry is charged to the port that asked for it until it is
// answered, then to the port it is on, and a port holds at most its share, whichever
// interface the addresses are on: a flood from one port leaves room for the others' next
// hops on every interface, a bridge's other members too.
import t from 'tap';
import { INCOMPLETE, MAX_PROBES, NEIGHBOUR_BYTES, NeighbourTable, REACHABLE, STATE_NAMES, STATIC, neighbourTableBytes } from './neighbours.ts';

const CAPACITY = 256;
const PORTS = 4;
/** ports 0 to 3; interfaces 0 (ports 0 and 1, a bridge) and 1 (ports 2 and 3) */
const table = () => new NeighbourTable(new SharedArrayBuffer(neighbourTableBytes(CAPACITY)), PORTS);
/** `table` with its clock at `time` (ms): what its next call is made at */
const at = (table: NeighbourTable, time: number): NeighbourTable => {
  table.clock[0] = time;
  return table;
};
const NOW = 1_000_000;

t.test('a port flooding next hops that never answer keeps to its share', async (t) => {
  const nb = table();
  t.equal(nb.share, CAPACITY / PORTS, 'the share: capacity / ports');
  // Port 3 sends to 1,000 absent hosts on interface 1.
  let created = 0;
  for (let k = 0; k < 1000; k++) if (at(nb, NOW).startResolving(1, 4, 0x0a020000 + k, 0, 0, 0, 3) >= 0) created++;
  t.equal(created, nb.share, `port 3 got its share (${created}) and no more`);
  t.equal(nb.heldBy(3), nb.share, 'and owns as many');
  // Within the time they are being resolved, none of them is taken for another port...
  t.ok(at(nb, NOW + 10).startResolving(1, 4, 0x0a02ffff, 0, 0, 0, 2) >= 0, 'port 2 still starts resolving a new neighbour on the same interface');
  t.ok(at(nb, NOW + 10).startResolving(0, 4, 0x0a01ffff, 0, 0, 0, 0) >= 0, 'and port 0 one on the other');
  t.equal(nb.heldBy(2), 1);
  t.equal(nb.heldBy(3), nb.share, "port 3's share is unchanged");
  // ...and port 3, at its share, takes only its own slots once they may be taken again.
  const later = NOW + MAX_PROBES * 1000 + 1;
  let reused = 0;
  for (let k = 0; k < 100; k++) if (at(nb, later).startResolving(1, 4, 0x0a030000 + k, 0, 0, 0, 3) >= 0) reused++;
  t.ok(reused > 0, `port 3 at its share reuses slots of its own once their requests timed out (${reused} of 100 new next hops)`);
  t.equal(nb.heldBy(3), nb.share, 'still at its share, not past it');
  t.equal(nb.heldBy(2), 1, "port 2's entry was not the one taken");
});

/** Port 3 asks for a share of next hops on interface 1 from `base` on: how many it got. */
function askShare(nb: NeighbourTable, base: number): number {
  let n = 0;
  for (let k = 0; k < nb.share; k++) if (at(nb, NOW).startResolving(1, 4, base + k, 0, 0, 0, 3) >= 0) n++;
  return n;
}

t.test("a port's answered requests leave its share for more (an uplink reaching many guests)", async (t) => {
  const nb = table();
  const asked = (base: number) => askShare(nb, base);
  t.equal(asked(0x0a020000), nb.share, 'port 3 asks for its share of next hops on interface 1');
  t.equal(at(nb, NOW).startResolving(1, 4, 0x0a02ff00, 0, 0, 0, 3), -1, 'and for no more while they are unanswered');
  for (let k = 0; k < nb.share; k++) t.ok(at(nb, NOW + 1).confirm(1, 4, 0x0a020000 + k, 0, 0, 0, 0x0200, k, 2, REACHABLE, false) >= 0);
  t.same([nb.heldBy(3), nb.heldBy(2)], [0, nb.share], 'answered on port 2: the entries are port 2\'s');
  t.equal(asked(0x0a030000), nb.share, 'and port 3 asks for as many again');
});

t.test("answers on a port at its share leave the entries charged to the port that asked (one guest's two ports cannot fill the table)", async (t) => {
  const nb = table();
  const ask = (base: number) => askShare(nb, base);
  const answer = (base: number) => {
    for (let k = 0; k < nb.share; k++) at(nb, NOW + 1).confirm(1, 4, base + k, 0, 0, 0, 0x0200, k, 2, REACHABLE, false);
  };
  t.equal(ask(0x0a020000), nb.share);
  answer(0x0a020000);
  t.same([nb.heldBy(3), nb.heldBy(2)], [0, nb.share], 'port 2 answered a share: its share is full');
  t.equal(ask(0x0a030000), nb.share, 'port 3 asks for a share more');
  answer(0x0a030000);
  t.same([nb.heldBy(3), nb.heldBy(2)], [nb.share, nb.share], 'answered on port 2, at its share: still port 3\'s');
  t.equal(ask(0x0a040000), 0, 'and port 3 asks for no more');
  t.ok(at(nb, NOW + 10).startResolving(0, 4, 0x0a01ffff, 0, 0, 0, 0) >= 0, 'port 0 still has room');
  t.ok(nb.find(1, 4, 0x0a030005, 0, 0, 0) >= 0);
  t.equal(nb.foundPort, 2, 'the entries answered say where the neighbour is: port 2');
});

t.test('forged senders from one member of a bridge leave room for the others', async (t) => {
  const nb = table();
  // Port 1 floods ARP from 1,000 forged senders on interface 0 (a bridge of ports 0 and 1).
  let created = 0;
  for (let k = 0; k < 1000; k++) if (at(nb, NOW).confirm(0, 4, 0x0a010000 + k, 0, 0, 0, 0x0200, k, 1, REACHABLE, true) >= 0) created++;
  t.equal(created, nb.share, 'port 1 got its share');
  t.ok(at(nb, NOW).confirm(0, 4, 0x0a01fffe, 0, 0, 0, 0x0200, 0xfe, 0, REACHABLE, true) >= 0, 'port 0, on the same bridge, still gets a new neighbour');
  t.ok(at(nb, NOW).confirm(0, 4, 0x0a01fffd, 0, 0, 0, 0x0200, 0xfd, 0, STATIC, true) >= 0, 'and a static one');
  t.equal(nb.heldBy(0), 2);
  // Static entries past a port's share are refused, as a flood is.
  const statics = new NeighbourTable(new SharedArrayBuffer(neighbourTableBytes(CAPACITY)), PORTS);
  let written = 0;
  for (let k = 0; k < 100; k++) if (at(statics, NOW).confirm(1, 4, 0x0a020000 + k, 0, 0, 0, 0x0200, k, 2, STATIC, true) >= 0) written++;
  t.equal(written, statics.share, 'static entries of one port: its share');
});

t.test('an entry is the asking port\'s until its answer, then the port it is on; removal and ageing give its slot back', async (t) => {
  const nb = table();
  const slot = at(nb, NOW).startResolving(1, 4, 0x0a020002, 0, 0, 0, 0);
  t.ok(slot >= 0);
  t.same(nb.entries().map((e) => [e.port, e.owner]), [[-1, 0]], 'being resolved: the port that asked for it');
  t.equal(at(nb, NOW).probed(slot), 1, 'requests are counted');
  t.equal(at(nb, NOW).probed(slot), 2);
  t.equal(nb.find(1, 4, 0x0a020002, 0, 0, 0), slot);
  t.equal(nb.foundState, INCOMPLETE);
  t.equal(nb.foundProbes, 2, 'the count read back, the owner apart');
  // The answer comes in on port 2, where the neighbour is.
  t.equal(at(nb, NOW + 5).confirm(1, 4, 0x0a020002, 0, 0, 0, 0x0200, 2, 2, REACHABLE, true), slot);
  t.equal(nb.find(1, 4, 0x0a020002, 0, 0, 0), slot);
  t.equal(nb.foundPort, 2, 'the MAC is where it was seen');
  t.equal(nb.foundProbes, 0, 'no request outstanding');
  t.same([nb.heldBy(0), nb.heldBy(2)], [0, 1], "now charged to port 2, where the neighbour is, not to the port that asked");
  t.same(nb.entries().map((e) => [e.port, e.owner]), [[2, 2]], 'as the table lists it');
  t.ok(nb.remove(1, 4, 0x0a020002, 0, 0, 0));
  t.equal(nb.heldBy(2), 0, 'removed: the share given back');
  // Aged out: failed entries past their hold, stale ones past gc.
  for (let k = 0; k < 10; k++) at(nb, NOW).startResolving(1, 4, 0x0a020100 + k, 0, 0, 0, 3);
  t.equal(nb.heldBy(3), 10);
  at(nb, NOW + 10 * 60_000).sweep(0, CAPACITY);
  t.equal(nb.heldBy(3), 0, 'swept: every share given back');
});

t.test('an entry charged to no port (left by a table of an earlier layout) counts for none', async (t) => {
  const buffer = new SharedArrayBuffer(neighbourTableBytes(CAPACITY));
  const nb = new NeighbourTable(buffer, PORTS);
  const slot = at(nb, NOW).startResolving(0, 4, 0x0a010005, 0, 0, 0, 1);
  // Its owner's bits cleared, as such a table has them; its count too.
  const words = new Int32Array(buffer);
  words[(slot * NEIGHBOUR_BYTES) / 4 + 11] &= 0xffff;
  Atomics.sub(new Int32Array(buffer, CAPACITY * NEIGHBOUR_BYTES + 64 * 4, 64), 1, 1);
  t.equal(nb.heldBy(1), 0);
  t.ok(nb.remove(0, 4, 0x0a010005, 0, 0, 0), 'removed');
  t.equal(nb.heldBy(1), 0, 'no count went below zero');
  t.throws(() => new NeighbourTable(buffer, 65), /at most 64 ports/, 'a table counts 64 ports');
});

t.test('the count by state (for /metrics) is the listing counted', async (t) => {
  const nb = table();
  for (let k = 0; k < 5; k++) at(nb, NOW).startResolving(1, 4, 0x0a020200 + k, 0, 0, 0, 3);
  for (let k = 0; k < 3; k++) at(nb, NOW).confirm(0, 4, 0x0a010200 + k, 0, 0, 0, 0x0200, k, 1, REACHABLE, true);
  at(nb, NOW).confirm(0, 4, 0x0a0102ff, 0, 0, 0, 0x0200, 0xff, 0, STATIC, true);
  const listed = STATE_NAMES.map((name) => nb.entries().filter((e) => e.state === name).length);
  t.same(nb.countByState(), listed, 'by state, as entries() lists them');
  t.same(nb.countByState().slice(1), [5, 3, 0, 0, 1], 'incomplete, reachable, stale, failed, static');
});

t.test('a new table hashes with a seed of its own, which every view of it uses; a table with entries keeps its hash', async (t) => {
  const seeded = () => {
    const buffer = new SharedArrayBuffer(neighbourTableBytes(CAPACITY));
    new NeighbourTable(buffer, PORTS).seedIfNew();
    return buffer;
  };
  const [one, two] = [seeded(), seeded()];
  const slots = (buffer: SharedArrayBuffer) => {
    const nb = new NeighbourTable(buffer, PORTS);
    return Array.from({ length: 32 }, (_, k) => at(nb, NOW).confirm(1, 6, 0x20010db8, 0, 0x1000 + k, 0x2000, 0x0200, k, 2, REACHABLE, true));
  };
  const [a, b] = [slots(one), slots(two)];
  t.ok(a.every((s) => s >= 0) && b.every((s) => s >= 0), 'each table took the 32 addresses');
  t.ok(a.filter((s, k) => s !== b[k]).length >= 24, `in other slots in the two tables (${a.filter((s, k) => s !== b[k]).length} of 32): a guest cannot tell which addresses share a window`);
  const view = new NeighbourTable(one, PORTS);
  t.same(Array.from({ length: 32 }, (_, k) => view.find(1, 6, 0x20010db8, 0, 0x1000 + k, 0x2000)), a, "another view (a PMD's) finds each where the first put it");

  const kept = new SharedArrayBuffer(neighbourTableBytes(CAPACITY));
  const before = new NeighbourTable(kept, PORTS);
  const slot = at(before, NOW).confirm(0, 4, 0x0a010002, 0, 0, 0, 0x0200, 2, 0, STATIC, true);
  new NeighbourTable(kept, PORTS).seedIfNew();
  t.equal(new NeighbourTable(kept, PORTS).find(0, 4, 0x0a010002, 0, 0, 0), slot, 'a table that holds entries is not seeded: they are found where they are');
});
