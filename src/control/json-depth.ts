// How deep a JSON value nests, found without recursion: a config or an API body nested
// thousands deep (a few bytes per level) passed JSON.parse, then overflowed the stack of the
// recursive checks, diffs and copies that read it (a RangeError answered as a 500).

/** Deeper than any config or body vrouter takes (a document's deepest is under ten). */
export const MAX_JSON_DEPTH = 64;

/** The path (as a field: "routes[0].via") of the first value nested deeper than MAX_JSON_DEPTH, or null. */
export function tooDeep(value: unknown): string | null {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value, path: '', depth: 0 }];
  while (stack.length > 0) {
    const { value: v, path, depth } = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= MAX_JSON_DEPTH) return path;
    if (Array.isArray(v)) v.forEach((item, i) => stack.push({ value: item, path: `${path}[${i}]`, depth: depth + 1 }));
    else for (const [key, item] of Object.entries(v)) stack.push({ value: item, path: path === '' ? key : `${path}.${key}`, depth: depth + 1 });
  }
  return null;
}
