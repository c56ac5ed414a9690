// Static routes added and removed as edits of the config document (POST, PATCH and DELETE
// /routes): each edit costs about the same whatever the number of routes. The changes that
// wait together are made on one copy of the document (Supervisor.applyEdit); the first
// route edit on a copy takes a copy of its routes and indexes them by prefix, the next
// ones use the index. The document in force is indexed once, for the checks a request
// makes before its edit waits (is there a route to remove?).
import { parsePrefix } from '../pipeline/api.ts';

/** The static routes of one copy of the document, changed in place, and indexed by prefix. */
export class RouteDraft {
  /** the copy's routes: the document's "routes" */
  readonly routes: unknown[];
  /** the routes to each prefix (canonical text), in the order of `routes` */
  private readonly byPrefix = new Map<string, unknown[]>();

  constructor(routes: unknown[]) {
    this.routes = routes;
    for (const route of routes) this.index(route);
  }

  add(route: unknown): void {
    this.routes.push(route);
    this.index(route);
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

  private index(route: unknown): void {
    const text = canonicalPrefix(prefixOf(route));
    if (text === null) return;
    const routes = this.byPrefix.get(text);
    if (routes === undefined) this.byPrefix.set(text, [route]);
    else routes.push(route);
  }
}

/** Each copy's draft, made by the first route edit on it. */
const drafts = new WeakMap<Record<string, unknown>, RouteDraft>();

/** The routes of this copy of the document, to change in place: its own, from now on. */
export function routeDraft(doc: Record<string, unknown>): RouteDraft {
  let draft = drafts.get(doc);
  if (draft === undefined) {
    draft = new RouteDraft(Array.isArray(doc.routes) ? [...(doc.routes as unknown[])] : []);
    doc.routes = draft.routes;
    drafts.set(doc, draft);
  }
  return draft;
}

/** The prefixes (canonical text) of a list of routes of a document in force, found once per list. */
const prefixesOfLists = new WeakMap<readonly unknown[], Set<string>>();

/** Whether the routes of a document in force hold one to `prefix` (as any text of it). */
export function hasRouteTo(routes: readonly unknown[], prefix: string): boolean {
  let prefixes = prefixesOfLists.get(routes);
  if (prefixes === undefined) {
    prefixes = new Set();
    for (const route of routes) {
      const text = canonicalPrefix(prefixOf(route));
      if (text !== null) prefixes.add(text);
    }
    prefixesOfLists.set(routes, prefixes);
  }
  const text = canonicalPrefix(prefix);
  return text !== null && prefixes.has(text);
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
