// What a reload (SIGHUP, the admin endpoint) may change while vrouter runs: the plugins'
// configs (routes, neighbours, rules, policers), the plugin files, the ports and bridges
// (port-change.ts). The PMDs' settings, the control threads', the pipeline's shape, the
// admin endpoint's and the plugins' paths need a restart.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { VrouterConfig } from './config.ts';

/** The first part of the config that differs in a way a reload cannot apply, or null. */
export function structuralChange(running: VrouterConfig, next: VrouterConfig): string | null {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(running.pmd, next.pmd)) return 'pmd';
  if (!same(running.control, next.control)) return 'control';
  if (!same(running.pipeline, next.pipeline)) return 'pipeline';
  if (!same(running.admin, next.admin)) return 'admin';
  const paths = (c: VrouterConfig) => c.plugins.map((p) => [p.name, p.path]);
  if (!same(paths(running), paths(next))) return 'plugins (their paths)';
  return null;
}

/** The digest of each plugin file, with the stat it was read at: an apply hashes only a file that changed. */
const digestsByPath = new Map<string, { stat: string; digest: string }>();

/** A digest of a plugin's entry file: a reload restarts the PMDs only when one changed. */
export function fileDigest(path: string): string {
  let stat: string;
  try {
    const s = statSync(path, { bigint: true });
    stat = `${s.dev} ${s.ino} ${s.size} ${s.mtimeNs} ${s.ctimeNs}`;
  } catch {
    return 'unreadable';
  }
  const known = digestsByPath.get(path);
  if (known?.stat === stat) return known.digest;
  let digest: string;
  try {
    digest = createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return 'unreadable';
  }
  digestsByPath.set(path, { stat, digest });
  return digest;
}

/**
 * Whether two plugin configs (as parseConfig returned them) are the same: whether their
 * JSON texts are, found without writing them out. Each apply compares every plugin's
 * config, a route table's among them, and the parts an edit did not touch are the same
 * objects in both.
 */
export function sameConfig(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (plainArray(a) && plainArray(b)) {
    if (a.length !== b.length) return false;
    // The same entry in both (most of a route table after an edit) costs one compare.
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !sameConfig(inArray(a[i]), inArray(b[i]))) return false;
    return true;
  }
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b) && !(a instanceof DataView) && !(b instanceof DataView) && a.constructor === b.constructor) {
    const x = a as unknown as ArrayLike<number>;
    const y = b as unknown as ArrayLike<number>;
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i] && JSON.stringify(x[i]) !== JSON.stringify(y[i])) return false;
    return true;
  }
  if (plainObject(a) && plainObject(b)) {
    const keys = jsonKeys(a);
    const other = jsonKeys(b);
    if (keys.length !== other.length) return false;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== other[i] || !sameConfig(a[keys[i]], b[keys[i]])) return false;
    return true;
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

const plainArray = (v: unknown): v is unknown[] => Array.isArray(v) && !('toJSON' in v);
const plainObject = (v: unknown): v is Record<string, unknown> => {
  if (typeof v !== 'object' || v === null || 'toJSON' in v) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};
/** An array element as JSON writes it: undefined, a function or a symbol is null there. */
const inArray = (v: unknown) => (v === undefined || typeof v === 'function' || typeof v === 'symbol' ? null : v);
/** The keys JSON writes, in its order: those whose value is not undefined, a function or a symbol. */
const jsonKeys = (o: Record<string, unknown>) => Object.keys(o).filter((k) => o[k] !== undefined && typeof o[k] !== 'function' && typeof o[k] !== 'symbol');
