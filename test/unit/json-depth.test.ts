// How deep a config or an API body nests, found without recursion.
import t from 'tap';
import { MAX_JSON_DEPTH, tooDeep } from '../../src/control/json-depth.ts';

t.test('the first value nested past the most, by its path; a million levels cost no stack', async (t) => {
  t.equal(tooDeep({ ports: [{ name: 'a', addresses: ['10.0.1.1/24'] }], routes: [] }), null, 'a config');
  let deep: unknown = 1;
  for (let i = 0; i < 1_000_000; i++) deep = [deep];
  t.equal(tooDeep({ routes: [{ via: deep }] }), `routes[0].via${'[0]'.repeat(MAX_JSON_DEPTH - 3)}`);
  let fits: unknown = 1;
  for (let i = 0; i < MAX_JSON_DEPTH; i++) fits = [fits];
  t.equal(tooDeep(fits), null, `${MAX_JSON_DEPTH} levels are taken`);
  t.equal(tooDeep([fits]), '[0]'.repeat(MAX_JSON_DEPTH), 'one more is not');
});
