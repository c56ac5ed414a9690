// What a change of the config document changes: worked out by comparing documents, or
// merged from what each edit of a group said it changed (route edits).
import t from 'tap';
import { configDiff, mergeChanges } from '../../src/control/config-diff.ts';

const r = (prefix: string) => ({ prefix, via: '10.0.2.2' });

t.test('lists: entries added and removed; equal texts are no change; other keys before and after', async (t) => {
  const a = r('192.0.2.0/24');
  const b = r('198.51.100.0/24');
  const running = { routes: [a, b], pmd: { cores: [1] } };
  const c = r('203.0.113.0/24');
  t.same(configDiff(running, { routes: [a, c], pmd: { cores: [1] } }), [{ key: 'routes', added: [c], removed: [b] }]);
  // The same route written again (another object, the same text) changes nothing.
  t.same(configDiff(running, { routes: [a, r('198.51.100.0/24')], pmd: { cores: [1] } }), []);
  t.same(configDiff(running, { routes: [b, a], pmd: { cores: [2] } }), [
    { key: 'routes', before: [a, b], after: [b, a] },
    { key: 'pmd', before: { cores: [1] }, after: { cores: [2] } },
  ]);
});

t.test('merged changes: a group of route edits as one diff', async (t) => {
  const a = r('192.0.2.0/24');
  const b = r('198.51.100.0/24');
  const c = r('203.0.113.0/24');
  const old = r('10.9.0.0/16');
  t.same(mergeChanges([[{ key: 'routes', added: [a], removed: [] }]]), [{ key: 'routes', added: [a], removed: [] }]);
  t.same(
    mergeChanges([
      [{ key: 'routes', added: [a, b], removed: [] }],
      [{ key: 'routes', added: [], removed: [old] }],
      [{ key: 'routes', added: [c], removed: [b] }],
    ]),
    [{ key: 'routes', added: [a, c], removed: [old] }],
    'a route added then removed in the same group is in neither part',
  );
  t.same(
    mergeChanges([[{ key: 'routes', added: [a], removed: [] }], [{ key: 'neighbours', added: [], removed: [old] }]]),
    [{ key: 'routes', added: [a], removed: [] }, { key: 'neighbours', added: [], removed: [old] }],
  );
});
