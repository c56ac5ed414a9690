// A thread of the job pool (jobs.ts): imports the job's module and runs its default export.
// Shared memory travels as SharedRefs (jobs.ts), viewed here at the process's mapping.
import { parentPort } from 'node:worker_threads';
import { decodeShared, encodeShared, leaseUsed, useArena, useLease, type ArenaLease } from '../sys/shared-arena.ts';
import { collectGarbageSoon } from './collect.ts';
import { setThreadNice } from '../sys/libc.ts';

// Compiles are bulk work: this thread runs at 0, not at the nice value of the control
// threads it was started from (raising it needs no privilege; a positive one stays).
try {
  setThreadNice(0);
} catch {
  // left as inherited
}

/** Posted once this thread has loaded its modules: only then may it be stopped (jobs.ts). */
export interface JobRunnerLoaded {
  jobRunnerLoaded: true;
}
parentPort?.postMessage({ jobRunnerLoaded: true } satisfies JobRunnerLoaded);

/** What a job gave back, and how much of its lease it wrote (the rest was never touched). */
export interface JobResult {
  output: unknown;
  leaseUsed: number;
}

export default async function run(job: { module: string; input: unknown; arena: { base: string; size: number } | null; lease: ArenaLease | null }): Promise<JobResult> {
  const mod = (await import(job.module)) as { default: (input: unknown) => unknown };
  if (typeof mod.default !== 'function') throw new Error(`${job.module} has no default export to run as a job`);
  useArena(job.arena);
  useLease(job.lease);
  try {
    return { output: encodeShared(await mod.default(decodeShared(job.input))), leaseUsed: leaseUsed() };
  } finally {
    useLease(null);
    // What the job made outside its lease (ordinary memory, SharedArrayBuffers past it) is
    // freed only once this thread collects it, and an idle thread allocates nothing that
    // would make it collect.
    collectGarbageSoon();
  }
}
