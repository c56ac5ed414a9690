// What a new config document changes against the running one, key by key, as an operator
// reads it: entries added and removed for lists (routes, rules, ports), before and after for
// the rest. Dry runs return it; applied changes are logged with it.

export interface ConfigChange {
  /** the top-level key */
  key: string;
  /** for lists: the entries only in the new document, and only in the running one */
  added?: unknown[];
  removed?: unknown[];
  /** for the rest: the value before and after (undefined: absent) */
  before?: unknown;
  after?: unknown;
}

/**
 * JSON texts of the document's objects, kept while they live: documents are never changed
 * in place (an edit replaces what it changes, see Supervisor.applyEdit), so the routes an
 * edit did not touch are the same objects in the next document, and are written out once.
 */
const texts = new WeakMap<object, string | undefined>();
function text(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null) return JSON.stringify(v);
  if (texts.has(v)) return texts.get(v);
  const t = JSON.stringify(v);
  texts.set(v, t);
  return t;
}

/** Whether two values have the same JSON text: a list entry by entry, each entry's text kept. */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b)) return text(a) === text(b);
  if (a.length !== b.length) return false;
  // In a list, JSON writes undefined (and what it cannot write) as null.
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && (text(a[i]) ?? 'null') !== (text(b[i]) ?? 'null')) return false;
  return true;
}

export function configDiff(running: unknown, next: unknown): ConfigChange[] {
  const a = (running ?? {}) as Record<string, unknown>;
  const b = (next ?? {}) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  const changes: ConfigChange[] = [];
  for (const key of keys) {
    if (same(a[key], b[key])) continue;
    if (Array.isArray(a[key]) || Array.isArray(b[key])) {
      const before = Array.isArray(a[key]) ? (a[key] as unknown[]) : [];
      const after = Array.isArray(b[key]) ? (b[key] as unknown[]) : [];
      // Entries in both lists as the same objects are in neither part: only the others
      // are compared by their texts.
      const kept = new Set(before);
      const stays = new Set(after);
      const newOnes = after.filter((e) => !kept.has(e));
      const goneOnes = before.filter((e) => !stays.has(e));
      const added = newOnes.length === 0 ? [] : without(newOnes, before);
      const removed = goneOnes.length === 0 ? [] : without(goneOnes, after);
      // The same entries in another order: for ordered lists (ACL rules) that is a change.
      changes.push(added.length + removed.length > 0 ? { key, added, removed } : { key, before, after });
      continue;
    }
    changes.push({ key, before: a[key], after: b[key] });
  }
  return changes;
}

/** The entries of `some` whose text no entry of `list` has. */
function without(some: unknown[], list: unknown[]): unknown[] {
  const listed = textsOf(list);
  return some.filter((e) => !listed.has(text(e)));
}

/** The texts of a list's entries, kept with it: the next document's list is compared with this one. */
const listTexts = new WeakMap<unknown[], Set<string | undefined>>();
function textsOf(list: unknown[]): Set<string | undefined> {
  let texts = listTexts.get(list);
  if (texts === undefined) {
    texts = new Set(list.map(text));
    listTexts.set(list, texts);
  }
  return texts;
}

/**
 * The changes of edits made one after another on one document, as one diff: lists' entries
 * added and removed by key, an entry added by one edit and removed by a later one in
 * neither. Other keys: the last edit's.
 */
export function mergeChanges(changes: readonly ConfigChange[][]): ConfigChange[] {
  const byKey = new Map<string, ConfigChange>();
  for (const change of changes.flat()) {
    const before = byKey.get(change.key);
    if (before === undefined || before.added === undefined || change.added === undefined) {
      byKey.set(change.key, before === undefined ? change : { ...change, before: before.before });
      continue;
    }
    const removed = new Set(change.removed);
    const undone = new Set(before.added.filter((e) => removed.has(e)));
    byKey.set(change.key, {
      key: change.key,
      added: [...before.added.filter((e) => !undone.has(e)), ...change.added],
      removed: [...(before.removed ?? []), ...(change.removed ?? []).filter((e) => !undone.has(e))],
    });
  }
  return [...byKey.values()];
}
