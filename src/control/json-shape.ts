// What JSON.parse takes but vrouter does not, for every reader of an operator's JSON (the
// config file, an API body, a file vrouterctl sends): nesting past MAX_JSON_DEPTH, and a
// key given twice in one object.
import { MAX_JSON_DEPTH, tooDeep } from './json-depth.ts';
import { repeatedKey } from './json-keys.ts';

/** The field at fault and why, or null: `value` is what JSON.parse made of `text`. */
export function jsonShapeProblem(text: string, value: unknown): { field: string; reason: string } | null {
  const deep = tooDeep(value);
  if (deep !== null) return { field: deep, reason: `is nested more than ${MAX_JSON_DEPTH} deep` };
  const twice = repeatedKey(text);
  if (twice !== null) return { field: twice, reason: 'is given twice in one object (JSON keeps only the last)' };
  return null;
}
