// The build's constant inlining (scripts/inline-constants.ts): each read of a module-level
// numeric const becomes its value, through imports, renames and re-exports; names that
// are not reads, not numbers or bound more than once stay as they are; and the modules
// compute what they computed before.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inlineConstants } from '../../scripts/inline-constants.ts';

const dir = '/build';
const at = (name: string) => join(dir, name);

function inline(files: Record<string, string>): Record<string, string> {
  const out = inlineConstants(new Map(Object.entries(files).map(([name, text]) => [at(name), text])));
  return Object.fromEntries(Object.keys(files).map((name) => [name, out.get(at(name))!.text]));
}

t.test('imports, renames, re-exports and export * resolve to the value', async (t) => {
  const out = inline({
    'net.js': 'export const ETH_HLEN = 14;\nexport const WORDS = 2 << 3;\nexport const NEG = -9;\n',
    'api.js': "export * from './net.js';\nexport { WORDS as W } from './net.js';\n",
    'use.js': "import { ETH_HLEN, NEG } from './api.js';\nimport { W as size } from './api.js';\nexport function f(off) { return off + ETH_HLEN + size * NEG; }\n",
  });
  t.equal(out['use.js'].split('\n')[2], 'export function f(off) { return off + 14 + 16 * (-9); }');
  // the declarations stay: other modules, and the admin endpoint's code, may still read them
  t.match(out['net.js'], 'export const ETH_HLEN = 14;');
});

t.test('a module reads its own constants as values, computed from others', async (t) => {
  const out = inline({ 'a.js': 'const SHIFT = 4;\nconst SIZE = 1 << SHIFT;\nconst MASK = SIZE - 1;\nexport const at = (i) => (i & MASK) * SIZE;\n' });
  t.match(out['a.js'], 'export const at = (i) => (i & 15) * 16;');
  t.match(out['a.js'], 'const MASK = 16 - 1;');
});

t.test('names that are not reads of the constant stay', async (t) => {
  const src = [
    'const LIMIT = 32;',
    'const o = { LIMIT: 1, [LIMIT]: 2, LIMIT };',
    'class C { LIMIT = 3; static LIMIT() { return o.LIMIT; } }',
    'export const text = LIMIT.toString();',
    'export { LIMIT, o, C };',
  ].join('\n');
  const out = inline({ 'p.js': src })['p.js'];
  t.match(out, 'const o = { LIMIT: 1, [32]: 2, LIMIT: 32 };');
  t.match(out, 'class C { LIMIT = 3; static LIMIT() { return o.LIMIT; } }');
  t.match(out, 'export const text = (32).toString();');
  t.match(out, 'export { LIMIT, o, C };');
});

t.test('shadowed names, non-numbers and unknown values stay', async (t) => {
  const src = [
    "import { FROM_PACKAGE } from 'some-package';",
    "import { MISSING } from './nowhere.js';",
    'const SHADOWED = 1;',
    'const TEXT = "x";',
    'let MUTABLE = 2;',
    'const COMPUTED = Math.max(1, 2);',
    'const SELF = SELF_TOO + 1;',
    'const SELF_TOO = SELF + 1;',
    'export function f(SHADOWED) { return SHADOWED + TEXT + MUTABLE + COMPUTED + FROM_PACKAGE + MISSING + SELF; }',
    'export const g = () => SHADOWED;',
  ].join('\n');
  const out = inline({ 'q.js': src })['q.js'];
  t.equal(out, src);
});

t.test('a transformed module set computes what it did before', async (t) => {
  const files: Record<string, string> = {
    'consts.js': 'export const A = 0x0800;\nexport const B = -1073741824;\nexport const C = 7 ** 2 % 10;\n',
    'mid.js': "export * from './consts.js';\nexport const D = 3;\n",
    'main.js': "import { A, B, C, D } from './mid.js';\nexport const result = [A + 1, B | 0, C, -D, D - -D, `${A}`, [A, B].map((x) => x >>> 28), { A, D }];\n",
  };
  const before = mkdtempSync(join(tmpdir(), 'inline-before-'));
  const after = mkdtempSync(join(tmpdir(), 'inline-after-'));
  const transformed = inline(files);
  t.not(transformed['main.js'], files['main.js'], 'main.js was changed');
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(before, name), text);
    writeFileSync(join(after, name), transformed[name]);
  }
  const a = await import(pathToFileURL(join(before, 'main.js')).href);
  const b = await import(pathToFileURL(join(after, 'main.js')).href);
  t.same(b.result, a.result);
  t.same(a.result, [2049, -1073741824, 9, -3, 6, '2048', [0, 12], { A: 2048, D: 3 }]);
});
