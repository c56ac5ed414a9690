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

const text = (v: unknown) => JSON.stringify(v);

export function configDiff(running: unknown, next: unknown): ConfigChange[] {
  const a = (running ?? {}) as Record<string, unknown>;
  const b = (next ?? {}) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  const changes: ConfigChange[] = [];
  for (const key of keys) {
    if (text(a[key]) === text(b[key])) continue;
    if (Array.isArray(a[key]) || Array.isArray(b[key])) {
      const before = Array.isArray(a[key]) ? (a[key] as unknown[]) : [];
      const after = Array.isArray(b[key]) ? (b[key] as unknown[]) : [];
      const beforeText = new Set(before.map(text));
      const afterText = new Set(after.map(text));
      const added = after.filter((e) => !beforeText.has(text(e)));
      const removed = before.filter((e) => !afterText.has(text(e)));
      // The same entries in another order: for ordered lists (ACL rules) that is a change.
      changes.push(added.length + removed.length > 0 ? { key, added, removed } : { key, before, after });
      continue;
    }
    changes.push({ key, before: a[key], after: b[key] });
  }
  return changes;
}
