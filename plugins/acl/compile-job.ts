// The job the acl plugin's prepare() runs in the control plane's pool: compiles the rules
// into the tables region it is given (shared, so written in place), off the supervisor's
// event loop.
import type { AclRule } from './classifier.ts';
import { writeTables } from './tables.ts';

export interface CompileInput {
  rules: AclRule[];
  memory: ArrayBufferLike;
}

export interface CompileSummary {
  rules: number;
  /** bytes of the region the tables took */
  bytes: number;
  ms: number;
}

export default function compileJob(input: CompileInput): CompileSummary {
  const t0 = performance.now();
  const compiled = writeTables(input.memory, input.rules);
  const rows = compiled.rows;
  return { rules: compiled.ruleCount, bytes: rows.offset + rows.length * 4, ms: performance.now() - t0 };
}
