// Lists of a config document made from the list in force by removing some of its entries
// and appending new ones (route edits through the admin endpoint). A plugin that parses
// such a list can take its parse of the source for the entries kept, in one pass of
// identity compares, instead of looking each entry up: what makes an edit's cost follow
// the number of changes rather than the size of the table.

/** How a list was made from `source`: its first `kept` entries are source's, in source's order (some left out); the rest are new. */
export interface ListEdit {
  readonly source: readonly unknown[];
  readonly kept: number;
}

const edits = new WeakMap<readonly unknown[], ListEdit>();

/** Records how `list` was made; the producer keeps `edit` true as it changes the list. */
export function recordListEdit(list: readonly unknown[], edit: ListEdit): void {
  edits.set(list, edit);
}

/** How `list` was made from another list, if its producer said. */
export function listEditOf(list: readonly unknown[]): ListEdit | undefined {
  return edits.get(list);
}

/**
 * `parsed` of the list's entries, from `before` (the parse of edit.source, entry for entry)
 * for the kept ones and `parse` for the new ones; null when the list does not follow the
 * edit (changed behind its producer's back): then the caller parses it as any list.
 */
export function parseEdited<T>(list: readonly unknown[], edit: ListEdit, before: readonly T[], parse: (raw: unknown, index: number) => T): T[] | null {
  const source = edit.source;
  if (before.length !== source.length || edit.kept > list.length) return null;
  // Made at its length: grown by push, a list of 100,000 took three times as long.
  const out = new Array<T>(list.length);
  let j = 0;
  for (let i = 0; i < edit.kept; i++) {
    const raw = list[i];
    while (j < source.length && source[j] !== raw) j++;
    if (j === source.length) return null;
    out[i] = before[j++];
  }
  for (let i = edit.kept; i < list.length; i++) out[i] = parse(list[i], i);
  return out;
}
