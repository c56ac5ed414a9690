// vrouterctl's tables and key lists over long inputs: a full route table is a million rows.
import t from 'tap';
import { keyValues, table } from '../../src/cli/format.ts';

t.test('a table of 300,000 rows is laid out (widths from a loop, not an argument spread)', async (t) => {
  const rows = Array.from({ length: 300_000 }, (_, i) => [`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`, i]);
  const out = table(['PREFIX', 'METRIC'], rows);
  const lines = out.split('\n');
  t.equal(lines.length, 300_001);
  t.match(lines[300_000], /^10\.4\.147\.223\/32\s+299,999$/);
  t.equal(keyValues(rows.map(([k], i) => [String(k), String(i)])).split('\n').length, 300_000);
});
