// Keys given twice in one JSON object are found, named by their field.
import t from 'tap';
import { repeatedKey } from '../../src/control/json-keys.ts';

t.test('a key given twice in one object, by its field; the same key in two objects is none', async (t) => {
  t.equal(repeatedKey('{"routes":[{"prefix":"10.0.0.0/8"}],"ports":[],"routes":[]}'), 'routes');
  t.equal(repeatedKey('{"ports":[{"name":"a","mtu":1500},{"name":"b","mtu":9000,"name":"c"}]}'), 'ports[1].name');
  t.equal(repeatedKey('{"a":{"b":[1,[2,{"c":1,"c":2}]]}}'), 'a.b[1][1].c');
  t.equal(repeatedKey('{"a":1,"\\u0061":2}'), 'a', 'one key however it is written');
  t.equal(repeatedKey('{"a":"x\\"y","b":["{\\"a\\":1}"],"c":{"a":1},"d":{"a":2}}'), null, 'quotes and braces inside strings, one key in many objects');
  t.equal(repeatedKey(' [ {"a" : 1 , "b":2} , {"a":3} ] '), null);
  t.equal(repeatedKey('"text"'), null);
  const big = JSON.stringify({ routes: Array.from({ length: 100_000 }, (_, i) => ({ prefix: `10.${i >> 8}.${i & 255}.0/24`, via: '10.0.0.1' })) });
  const started = performance.now();
  t.equal(repeatedKey(big), null);
  t.ok(performance.now() - started < 2000, `a document of ${big.length} bytes in ${Math.round(performance.now() - started)} ms`);
});
