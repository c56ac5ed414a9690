// The per-address table's hash is seeded per table: addresses a guest finds sharing another
// address's window in one table (or in the hash without a seed) share nothing in another,
// so that keeping them live cannot push that address into the overflow bucket.
import t from 'tap';
import { AddressTable, addressTableBytes, formatAddressTable, WINDOW } from './address-table.ts';
import { createPolicerTable, PolicerTable } from './policer.ts';

const CAPACITY = 1024;

function table(seed?: number): AddressTable {
  const slots = new SharedArrayBuffer(addressTableBytes(CAPACITY));
  formatAddressTable(slots, CAPACITY, seed);
  const buckets = new PolicerTable(createPolicerTable(CAPACITY + 1, 1), 0);
  buckets.time[0] = 1_000_000_000;
  return new AddressTable(slots, buckets, 60);
}

/** IPv4 10.0.x.y as the table takes it (::ffff:a.b.c.d) */
const v4 = (n: number): [number, number, number, number] => [0, 0, 0xffff, (0x0a000000 + n) | 0];

t.test('addresses that fill a victim\'s window in one table leave it a slot in a table of another seed', async (t) => {
  const victim = v4(1);
  // The guest's offline work, in a table whose seed it knows: addresses whose windows are
  // the victim's own, until WINDOW of them are live there.
  const known = table(12345);
  const home = known.windowOf(...victim);
  const colliding: number[] = [];
  for (let n = 2; colliding.length < WINDOW && n < 5_000_000; n++) if (known.windowOf(...v4(n)) === home) colliding.push(n);
  t.equal(colliding.length, WINDOW, `${WINDOW} addresses found that land where the victim does`);
  for (const n of colliding) known.bucketOf(...v4(n));
  t.equal(known.bucketOf(...victim), known.overflow, 'in that table, the victim finds no slot: the overflow bucket');
  const other = table();
  for (const n of colliding) other.bucketOf(...v4(n));
  t.not(other.bucketOf(...victim), other.overflow, 'in a table of its own seed, the victim has a slot of its own');
});
