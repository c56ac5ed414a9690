// Static routes added and removed as edits of the config document (POST, PATCH and DELETE
// /routes): each edit costs about the same whatever the number of routes. The changes that
// wait together are made on one copy of the document (Supervisor.applyEdit), whose routes
// are a copy of the list in force; each list is indexed by prefix, a copy's index by what
// its edits changed over its source's, and it is the index of the list in force once that
// copy is applied. Each copy also says how it was made from its source (recordListEdit),
// so that the routing stage parses only the routes it added.
import { parsePrefix } from '../pipeline/api.ts';
import { ListEditRecord, recordListEdit } from '../pipeline/list-edits.ts';

/**
 * The routes of a list by prefix (canonical text): a copy's index holds what its edits
 * changed over its source's, so that making one costs nothing whatever the number of
 * routes. Lookups go down the chain; a chain grown to MOST_LAYERS is compacted first: its
 * top layers merged into one, down to the first layer bigger than they are together
 * (sizes then grow down the chain, and an entry is copied a few times at most), and the
 * whole chain into one map once the layers above the bottom one hold half as many entries
 * as it.
 */
class RouteIndex {
  /** the routes to a prefix, or null for a prefix removed here but maybe in `base`; arrays are never changed */
  private own = new Map<string, readonly unknown[] | null>();
  private base: RouteIndex | null;
  private layers: number;

  constructor(base: RouteIndex | null) {
    if (base !== null && base.layers >= MOST_LAYERS) base.compact();
    this.base = base;
    this.layers = base === null ? 1 : base.layers + 1;
  }

  get(text: string): readonly unknown[] | undefined {
    for (let at: RouteIndex | null = this; at !== null; at = at.base) {
      const routes = at.own.get(text);
      if (routes !== undefined) return routes ?? undefined;
    }
    return undefined;
  }

  add(route: unknown): void {
    const text = canonicalPrefix(prefixOf(route));
    if (text === null) return;
    const routes = this.get(text);
    this.own.set(text, routes === undefined ? [route] : [...routes, route]);
  }

  delete(text: string): void {
    if (this.base === null) this.own.delete(text);
    else this.own.set(text, null);
  }

  /** The same contents in fewer layers (see the class). Copies never change a layer's contents, only how they are held. */
  private compact(): void {
    const chain: RouteIndex[] = [];
    for (let at: RouteIndex | null = this; at !== null; at = at.base) chain.push(at);
    const bottom = chain.length - 1;
    let merged = 0;
    let below = 0;
    while (below < bottom && (below < 2 || chain[below].own.size <= merged)) merged += chain[below++].own.size;
    const whole = below === bottom && 2 * merged >= chain[bottom].own.size;
    const own = new Map<string, readonly unknown[] | null>();
    for (let i = whole ? bottom : below - 1; i >= 0; i--) {
      entriesCompacted += chain[i].own.size;
      for (const [text, routes] of chain[i].own) {
        if (routes === null && whole) own.delete(text);
        else own.set(text, routes);
      }
    }
    this.own = own;
    this.base = whole ? null : chain[below];
    this.layers = whole ? 1 : chain[below].layers + 1;
  }
}
const MOST_LAYERS = 16;
let entriesCompacted = 0;

/** Index entries copied by compactions so far: for tests. */
export function indexEntriesCompacted(): number {
  return entriesCompacted;
}

/** Each list's index, made once: a draft's as it is edited, another's when first asked. */
const indexes = new WeakMap<readonly unknown[], RouteIndex>();

function indexOf(routes: readonly unknown[]): RouteIndex {
  let index = indexes.get(routes);
  if (index === undefined) {
    index = new RouteIndex(null);
    for (const route of routes) index.add(route);
    indexes.set(routes, index);
  }
  return index;
}

/** The static routes of one copy of the document, changed in place, and indexed by prefix. */
export class RouteDraft {
  /** the copy's routes: the document's "routes" */
  readonly routes: unknown[];
  private readonly byPrefix: RouteIndex;
  /** how routes was made from the source (recordListEdit): its first `kept` routes are the source's */
  private readonly edit: ListEditRecord;

  /** `source`: the list in force, copied */
  constructor(source: readonly unknown[]) {
    this.routes = source.slice();
    this.byPrefix = new RouteIndex(indexOf(source));
    indexes.set(this.routes, this.byPrefix);
    this.edit = new ListEditRecord(source);
    recordListEdit(this.routes, this.edit);
  }

  add(route: unknown): void {
    this.routes.push(route);
    this.byPrefix.add(route);
  }

  /** Removes the routes to these prefixes; returns them, in the order they had. */
  remove(prefixes: readonly string[]): unknown[] {
    const gone = new Set<unknown>();
    for (const prefix of prefixes) {
      const text = canonicalPrefix(prefix);
      if (text === null) continue;
      for (const route of this.byPrefix.get(text) ?? []) gone.add(route);
      this.byPrefix.delete(text);
    }
    if (gone.size === 0) return [];
    // One route out of many (a DELETE): found by identity, a scan of pointers.
    const removed: unknown[] = [];
    if (gone.size === 1) {
      const [route] = gone;
      for (let i = this.routes.indexOf(route); i >= 0; i = this.routes.indexOf(route, i)) {
        removed.push(...this.routes.splice(i, 1));
        if (i < this.edit.kept) this.edit.kept--;
      }
      return removed;
    }
    let kept = 0;
    let keptOfSource = 0;
    for (let i = 0; i < this.routes.length; i++) {
      const route = this.routes[i];
      if (gone.has(route)) removed.push(route);
      else {
        this.routes[kept++] = route;
        if (i < this.edit.kept) keptOfSource++;
      }
    }
    this.routes.length = kept;
    this.edit.kept = keptOfSource;
    return removed;
  }
}

/** Each copy's draft, made by the first route edit on it. */
const drafts = new WeakMap<Record<string, unknown>, RouteDraft>();

/** The routes of this copy of the document, to change in place: its own, from now on. */
export function routeDraft(doc: Record<string, unknown>): RouteDraft {
  let draft = drafts.get(doc);
  if (draft === undefined) {
    draft = new RouteDraft(Array.isArray(doc.routes) ? (doc.routes as unknown[]) : []);
    doc.routes = draft.routes;
    drafts.set(doc, draft);
  }
  return draft;
}

/** Whether the routes of a document in force hold one to `prefix` (as any text of it). */
export function hasRouteTo(routes: readonly unknown[], prefix: string): boolean {
  const text = canonicalPrefix(prefix);
  return text !== null && indexOf(routes).get(text) !== undefined;
}

const prefixOf = (route: unknown): unknown => (typeof route === 'object' && route !== null ? (route as { prefix?: unknown }).prefix : undefined);

/**
 * Prefixes as ip-address writes them, remembered: a document names the same ones again and
 * again. Two generations of at most CANONICAL_GENERATION each: one in use is carried into
 * the current one, so that a stream of new prefixes (a daemon's updates) keeps two
 * generations' worth (a few MB), not every prefix it ever sent (63 MB a million).
 */
let canonical = new Map<string, string | null>();
let olderCanonical = new Map<string, string | null>();
export const CANONICAL_GENERATION = 1 << 15;
/**
 * Longer than any prefix (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128` is 49):
 * neither parsed nor remembered, or a client's megabyte strings would be kept by the
 * generation's count.
 */
const PREFIX_TEXT_MAX = 64;

/** A prefix or address as ip-address writes it (192.0.2.0/24), or null for what is neither. */
export function canonicalPrefix(value: unknown): string | null {
  if (typeof value !== 'string' || value.length > PREFIX_TEXT_MAX) return null;
  let text = canonical.get(value);
  if (text !== undefined) return text;
  text = olderCanonical.get(value);
  if (text === undefined) {
    try {
      text = parsePrefix(value).text;
    } catch {
      text = null;
    }
  }
  if (canonical.size >= CANONICAL_GENERATION) {
    olderCanonical = canonical;
    canonical = new Map();
  }
  canonical.set(value, text);
  return text;
}

/** Prefixes remembered now (both generations): for tests. */
export function canonicalPrefixesHeld(): number {
  return canonical.size + olderCanonical.size;
}
