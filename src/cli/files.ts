// The operator's files that commands send (a config document, ACL rules): read and parsed
// here, so that a missing or broken file is a usage error naming it, before anything is sent.
import { readFileSync } from 'node:fs';
import { MAX_JSON_DEPTH, tooDeep } from '../control/json-depth.ts';
import { repeatedKey } from '../control/json-keys.ts';
import { misuse, type Command } from './command.ts';

export function readJsonFile(path: string, command: Command): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw misuse(command, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw misuse(command, `${path} is not JSON: ${(err as Error).message}`);
  }
  const deep = tooDeep(value);
  if (deep !== null) throw misuse(command, `${path}: ${deep} is nested more than ${MAX_JSON_DEPTH} deep`);
  // Sent parsed, the first of a key given twice would be gone before vrouter could say so.
  const twice = repeatedKey(text);
  if (twice !== null) throw misuse(command, `${path}: ${twice} is given twice in one object (JSON keeps only the last)`);
  return value;
}
