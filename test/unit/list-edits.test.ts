// A list made by edits of another (removals, then new entries at its end) is parsed from
// the other's parse for the entries it kept; one that does not follow its edit any more
// is refused (null), and its parser parses it whole.
import t from 'tap';
import { ListEditRecord, parseEdited, recordListEdit, listEditOf } from '../../src/pipeline/list-edits.ts';

const source = ['a', 'b', 'c', 'd', 'e'].map((name) => ({ name }));
const before = source.map((raw) => ({ parsed: raw.name }));
const parse = (raw: unknown, i: number) => ({ parsed: `${(raw as { name: string }).name} new at ${i}` });

t.test('kept entries from the parse before, new ones parsed', async (t) => {
  const list = [source[0], source[2], source[4], { name: 'f' }];
  const record = new ListEditRecord(source);
  record.kept = 3;
  recordListEdit(list, record);
  const edit = listEditOf(list)!;
  const out = parseEdited(list, edit, before, parse)!;
  t.same(out.map((o) => o.parsed), ['a', 'c', 'e', 'f new at 3']);
  t.equal(out[1], before[2], 'a kept entry is the parse it had');
});

t.test('a list that does not follow its edit is refused', async (t) => {
  t.equal(parseEdited([source[2], source[0]], { source, kept: 2 }, before, parse), null, 'kept entries out of order');
  t.equal(parseEdited([source[0], { name: 'x' }], { source, kept: 2 }, before, parse), null, 'a kept entry that is not the source\'s');
  t.equal(parseEdited([source[0]], { source, kept: 2 }, before, parse), null, 'more kept than the list holds');
  t.equal(parseEdited([source[0]], { source, kept: 1 }, before.slice(1), parse), null, 'a parse that is not of the source');
  t.equal(listEditOf([source[0]]), undefined, 'a list no edit made has none');
});
