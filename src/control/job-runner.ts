// A thread of the job pool (jobs.ts): imports the job's module and runs its default export.
// Shared memory travels as SharedRefs (jobs.ts), viewed here at the process's mapping.
import { decodeShared, encodeShared, useArena } from '../sys/shared-arena.ts';
import { collectGarbageSoon } from './collect.ts';
import { setThreadNice } from '../sys/libc.ts';

// Compiles are bulk work: this thread runs at 0, not at the nice value of the control
// threads it was started from (raising it needs no privilege; a positive one stays).
try {
  setThreadNice(0);
} catch {
  // left as inherited
}

export default async function run(job: { module: string; input: unknown; arena: { base: string; size: number } | null }): Promise<unknown> {
  const mod = (await import(job.module)) as { default: (input: unknown) => unknown };
  if (typeof mod.default !== 'function') throw new Error(`${job.module} has no default export to run as a job`);
  useArena(job.arena);
  try {
    return encodeShared(await mod.default(decodeShared(job.input)));
  } finally {
    // What the job made (a route table's SharedArrayBuffers: 80 MiB for a full table, copied
    // into the shared memory since) is freed only once this thread collects it, and an idle
    // thread allocates nothing that would make it collect.
    collectGarbageSoon();
  }
}
