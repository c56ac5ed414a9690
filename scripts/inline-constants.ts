// Writes the value of every module-level numeric `const` into the places that read it, in
// the JavaScript that the build emits (dist/): `ETH_HLEN` becomes `14`. V8 does not fold
// constants of ES modules: each read of one, imported or the module's own, is a load from
// the module's context or an import cell, a check that it is initialised and a check of
// its type, per packet on the data path (in a loop that reads six, a literal ran in 60 %
// of the time). The sources keep their names; the tests that run them as they are and the
// end-to-end tests that run dist/ check both forms.
//
// Conservative by construction: only `const NAME = <expression of numbers and such
// constants>` at a module's top level, only names bound nowhere else in the module that
// reads them (no shadowing to reason about), and every file parsed by acorn, so that a
// property name or an import is never taken for a read.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse, type AnyNode, type Expression, type Identifier, type Program } from 'acorn';
import { ancestor, type AncestorVisitors } from 'acorn-walk';

/** A module: its top-level constant expressions, what it imports and re-exports. */
interface ModuleInfo {
  path: string;
  text: string;
  program: Program;
  /** local name -> the initialiser of a top-level const */
  constants: Map<string, Expression>;
  /** local name -> [module path, exported name] */
  imports: Map<string, [string, string]>;
  /** exported name -> local name */
  exports: Map<string, string>;
  /** exported name -> [module path, name there] (export { A } from './x.js') */
  reexports: Map<string, [string, string]>;
  /** modules whose exports this one passes on (export * from './x.js') */
  stars: string[];
}

/** The value of a constant, once known; null for one that is not a number (or not constant). */
type Values = Map<string, number | null>;

const BINARY: Record<string, (a: number, b: number) => number> = {
  '+': (a, b) => a + b, '-': (a, b) => a - b, '*': (a, b) => a * b, '/': (a, b) => a / b, '%': (a, b) => a % b, '**': (a, b) => a ** b,
  '<<': (a, b) => a << b, '>>': (a, b) => a >> b, '>>>': (a, b) => a >>> b, '&': (a, b) => a & b, '|': (a, b) => a | b, '^': (a, b) => a ^ b,
};

function moduleInfo(path: string, text: string): ModuleInfo {
  const program = parse(text, { ecmaVersion: 'latest', sourceType: 'module' });
  const info: ModuleInfo = { path, text, program, constants: new Map(), imports: new Map(), exports: new Map(), reexports: new Map(), stars: [] };
  const from = (source: string) => resolve(dirname(path), source);
  for (const statement of program.body) {
    const declaration = statement.type === 'ExportNamedDeclaration' ? statement.declaration : statement;
    if (declaration?.type === 'VariableDeclaration' && declaration.kind === 'const') {
      for (const d of declaration.declarations) {
        if (d.id.type !== 'Identifier' || d.init == null) continue;
        info.constants.set(d.id.name, d.init);
        if (statement.type === 'ExportNamedDeclaration') info.exports.set(d.id.name, d.id.name);
      }
    }
    if (statement.type === 'ImportDeclaration' && typeof statement.source.value === 'string' && statement.source.value.startsWith('.')) {
      for (const s of statement.specifiers) {
        if (s.type === 'ImportSpecifier' && s.imported.type === 'Identifier') info.imports.set(s.local.name, [from(statement.source.value), s.imported.name]);
      }
    }
    if (statement.type === 'ExportNamedDeclaration' && statement.declaration == null) {
      for (const s of statement.specifiers) {
        if (s.local.type !== 'Identifier' || s.exported.type !== 'Identifier') continue;
        if (statement.source == null) info.exports.set(s.exported.name, s.local.name);
        else if (typeof statement.source.value === 'string' && statement.source.value.startsWith('.')) info.reexports.set(s.exported.name, [from(statement.source.value), s.local.name]);
      }
    }
    if (statement.type === 'ExportAllDeclaration' && statement.exported == null && typeof statement.source.value === 'string' && statement.source.value.startsWith('.')) {
      info.stars.push(from(statement.source.value));
    }
  }
  return info;
}

/** The numeric value of every top-level const of every module, where it has one. */
function evaluateAll(modules: Map<string, ModuleInfo>): Map<string, Values> {
  const values = new Map<string, Values>();
  const evaluating = new Set<string>();
  const exported = (path: string, name: string, via: ReadonlySet<string> = new Set()): number | null => {
    const m = modules.get(path);
    // via: the modules that passed the name on so far (export * cycles)
    if (m === undefined || via.has(path)) return null;
    const local = m.exports.get(name);
    if (local !== undefined) return named(m, local);
    const re = m.reexports.get(name);
    const passedOn = new Set(via).add(path);
    if (re !== undefined) return exported(re[0], re[1], passedOn);
    for (const star of m.stars) {
      const v = exported(star, name, passedOn);
      if (v !== null) return v;
    }
    return null;
  };
  const named = (m: ModuleInfo, name: string): number | null => {
    let own = values.get(m.path);
    if (own === undefined) values.set(m.path, (own = new Map()));
    const known = own.get(name);
    if (known !== undefined) return known;
    const key = `${m.path}\0${name}`;
    if (evaluating.has(key)) return null;
    evaluating.add(key);
    const init = m.constants.get(name);
    const imported = m.imports.get(name);
    const value = init !== undefined ? evaluate(m, init) : imported !== undefined ? exported(imported[0], imported[1]) : null;
    evaluating.delete(key);
    own.set(name, value);
    return value;
  };
  const evaluate = (m: ModuleInfo, e: Expression): number | null => {
    switch (e.type) {
      case 'Literal':
        return typeof e.value === 'number' ? e.value : null;
      case 'Identifier':
        return named(m, e.name);
      case 'UnaryExpression': {
        const v = evaluate(m, e.argument);
        if (v === null) return null;
        return e.operator === '-' ? -v : e.operator === '+' ? v : e.operator === '~' ? ~v : null;
      }
      case 'BinaryExpression': {
        const op = BINARY[e.operator];
        if (op === undefined || e.left.type === 'PrivateIdentifier') return null;
        const a = evaluate(m, e.left);
        const b = a === null ? null : evaluate(m, e.right);
        return a === null || b === null ? null : op(a, b);
      }
      default:
        return null;
    }
  };
  for (const m of modules.values()) for (const name of [...m.constants.keys(), ...m.imports.keys()]) named(m, name);
  return values;
}

/** How a number is written in place of a name: negative ones in brackets (`x - -1`, `a ** -2`). */
function literal(value: number): string | null {
  if (!Number.isFinite(value) || Object.is(value, -0)) return null;
  return value < 0 ? `(${value})` : String(value);
}

/** The module's text with each read of a numeric constant written as its value; and how many. */
function inlineModule(m: ModuleInfo, values: Values): { text: string; inlined: number } {
  // Names bound anywhere in the module but by its top-level const: left alone.
  const bindings = new Map<string, number>();
  // acorn-walk hands each binding's identifier to VariablePattern (its types omit it).
  const countBinding = { VariablePattern: (node: Identifier) => bindings.set(node.name, (bindings.get(node.name) ?? 0) + 1) };
  ancestor(m.program, countBinding as AncestorVisitors<unknown>);
  const edits: { start: number; end: number; text: string }[] = [];
  const valueOf = (name: string): string | null => {
    const v = values.get(name);
    if (v == null) return null;
    const boundOnce = m.constants.has(name) ? bindings.get(name) === 1 : (bindings.get(name) ?? 0) === 0;
    return boundOnce ? literal(v) : null;
  };
  ancestor(m.program, {
    Identifier(id: Identifier, _state: unknown, ancestors: AnyNode[]) {
      const text = valueOf(id.name);
      if (text === null) return;
      const parent = ancestors[ancestors.length - 2];
      if (parent?.type === 'Property' && parent.shorthand) edits.push({ start: parent.start, end: parent.end, text: `${id.name}: ${text}` });
      // `14.toString()` would not parse
      else if (parent?.type === 'MemberExpression' && parent.object === id) edits.push({ start: id.start, end: id.end, text: `(${text})` });
      else edits.push({ start: id.start, end: id.end, text });
    },
  });
  edits.sort((a, b) => b.start - a.start);
  let text = m.text;
  for (const e of edits) text = text.slice(0, e.start) + e.text + text.slice(e.end);
  return { text, inlined: edits.length };
}

/** Inlines the numeric constants of a set of modules (path -> text); returns the new texts. */
export function inlineConstants(files: Map<string, string>): Map<string, { text: string; inlined: number }> {
  const modules = new Map<string, ModuleInfo>();
  for (const [path, text] of files) modules.set(resolve(path), moduleInfo(resolve(path), text));
  const values = evaluateAll(modules);
  const out = new Map<string, { text: string; inlined: number }>();
  for (const [path, m] of modules) out.set(path, inlineModule(m, values.get(path) ?? new Map()));
  return out;
}

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.js'))
    .map((e) => join(e.parentPath, e.name));
}

if (import.meta.main) {
  const dir = process.argv[2];
  if (dir === undefined) {
    console.error('usage: node scripts/inline-constants.ts DIR (the build output)');
    process.exit(2);
  }
  const files = new Map(jsFiles(dir).map((f) => [resolve(f), readFileSync(f, 'utf8')]));
  let total = 0;
  for (const [path, { text, inlined }] of inlineConstants(files)) {
    if (inlined === 0) continue;
    writeFileSync(path, text);
    total += inlined;
  }
  console.log(`inline-constants: ${total} reads of numeric constants written as their values in ${files.size} modules`);
}
