// Keys given twice in one JSON object: JSON.parse keeps the last one, so a config whose
// "routes" appears twice lost its first list without a word.

/**
 * The field ("routes", "ports[0].name") of the first key given twice in one object of the
 * JSON text, or null. The text is valid JSON (parsed before): strings, numbers, literals
 * and punctuation are all it holds. One pass, no recursion.
 */
export function repeatedKey(text: string): string | null {
  const stack: { keys: Set<string> | null; path: string; index: number; key: string }[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      let end = i + 1;
      while (text.charCodeAt(end) !== QUOTE) end += text.charCodeAt(end) === BACKSLASH ? 2 : 1;
      const top = stack.at(-1);
      if (expectKey && top?.keys) {
        // Decoded: "a" and "\u0061" are one key.
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return field(top.path, key);
        top.keys.add(key);
        top.key = key;
        expectKey = false;
      }
      i = end;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      const top = stack.at(-1);
      const path = top === undefined ? '' : top.keys !== null ? field(top.path, top.key) : `${top.path}[${top.index}]`;
      stack.push({ keys: c === OPEN_OBJECT ? new Set() : null, path, index: 0, key: '' });
      expectKey = c === OPEN_OBJECT;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      stack.pop();
      expectKey = false;
    } else if (c === COMMA) {
      const top = stack.at(-1)!;
      if (top.keys !== null) expectKey = true;
      else top.index++;
    }
  }
  return null;
}

const field = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;
