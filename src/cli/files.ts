// The operator's files that commands send (a config document, ACL rules): read and parsed
// here, so that a missing or broken file is a usage error naming it, before anything is sent.
import { readFileSync } from 'node:fs';
import { jsonShapeProblem } from '../control/json-shape.ts';
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
  // Sent parsed, the first of a key given twice would be gone before vrouter could say so.
  const problem = jsonShapeProblem(text, value);
  if (problem !== null) throw misuse(command, `${path}: ${problem.field} ${problem.reason}`);
  return value;
}
