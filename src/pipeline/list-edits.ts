// Lists of a config document made from the list in force by removing some of its entries
// and appending new ones (route edits through the admin endpoint). A plugin that parses
// such a list can take its parse of the source for the entries kept, in one pass of
// identity compares, instead of looking each entry up: an edit's parse then costs a
// compare per route kept and a parse per route added.

/** How a list was made from `source`: its first `kept` entries are source's, in source's order (some left out); the rest are new. */
export interface ListEdit {
  readonly source: readonly unknown[];
  readonly kept: number;
}

/**
 * What a producer records, and keeps true as it changes the list (`kept`). The source is
 * held weakly: each list in force is the source of the next, and a chain of strong
 * references would keep every list there ever was.
 */
export class ListEditRecord {
  kept: number;
  private readonly source: WeakRef<readonly unknown[]>;

  constructor(source: readonly unknown[]) {
    this.source = new WeakRef(source);
    this.kept = source.length;
  }

  /** The edit, while its source lives. */
  edit(): ListEdit | undefined {
    const source = this.source.deref();
    return source === undefined ? undefined : { source, kept: this.kept };
  }
}

const edits = new WeakMap<readonly unknown[], ListEditRecord>();

/** Records how `list` was made. */
export function recordListEdit(list: readonly unknown[], record: ListEditRecord): void {
  edits.set(list, record);
}

/** How `list` was made from another list still alive, if its producer said. */
export function listEditOf(list: readonly unknown[]): ListEdit | undefined {
  return edits.get(list)?.edit();
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
