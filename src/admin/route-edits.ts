// Static routes added and removed as edits of the config document (POST, PATCH and DELETE
// /routes): each edit costs about the same whatever the number of routes. The changes that
// wait together are made on one copy of the document (Supervisor.applyEdit), whose routes
// are a copy of the list in force; each list is indexed by prefix, and a copy starts from a
// copy of its source's index (a copy of a map, not a parse of every route again), which is
// the index of the list in force once that copy is applied.
import { parsePrefix } from '../pipeline/api.ts';

/** The routes of a list by prefix (canonical text). Arrays in it are never changed: an add makes a new one, as indexes share them. */
type RouteIndex = Map<string, readonly unknown[]>;

/** Each list's index, made once: a draft's as it is edited, another's when first asked. */
const indexes = new WeakMap<readonly unknown[], RouteIndex>();

function indexOf(routes: readonly unknown[]): RouteIndex {
  let index = indexes.get(routes);
  if (index === undefined) {
    index = new Map();
    for (const route of routes) addTo(index, route);
    indexes.set(routes, index);
  }
  return index;
}

function addTo(index: RouteIndex, route: unknown): void {
  const text = canonicalPrefix(prefixOf(route));
  if (text === null) return;
  const routes = index.get(text);
  index.set(text, routes === undefined ? [route] : [...routes, route]);
}

/** The static routes of one copy of the document, changed in place, and indexed by prefix. */
export class RouteDraft {
  /** the copy's routes: the document's "routes" */
  readonly routes: unknown[];
  private readonly byPrefix: RouteIndex;

  /** `source`: the list in force, copied */
  constructor(source: readonly unknown[]) {
    this.routes = [...source];
    this.byPrefix = new Map(indexOf(source));
    indexes.set(this.routes, this.byPrefix);
  }

  add(route: unknown): void {
    this.routes.push(route);
    addTo(this.byPrefix, route);
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
      for (let i = this.routes.indexOf(route); i >= 0; i = this.routes.indexOf(route, i)) removed.push(...this.routes.splice(i, 1));
      return removed;
    }
    let kept = 0;
    for (const route of this.routes) {
      if (gone.has(route)) removed.push(route);
      else this.routes[kept++] = route;
    }
    this.routes.length = kept;
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
  return text !== null && indexOf(routes).has(text);
}

const prefixOf = (route: unknown): unknown => (typeof route === 'object' && route !== null ? (route as { prefix?: unknown }).prefix : undefined);

/** Prefixes as ip-address writes them, remembered: a document names the same ones again and again. */
const canonical = new Map<string, string | null>();
const CANONICAL_MAX = 1 << 20;

/** A prefix or address as ip-address writes it (192.0.2.0/24), or null for what is neither. */
export function canonicalPrefix(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  let text = canonical.get(value);
  if (text !== undefined) return text;
  try {
    text = parsePrefix(value).text;
  } catch {
    text = null;
  }
  if (canonical.size >= CANONICAL_MAX) canonical.clear();
  canonical.set(value, text);
  return text;
}
