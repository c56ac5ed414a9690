// A thread of the job pool (jobs.ts): imports the job's module and runs its default export.
// Shared memory travels as SharedRefs (jobs.ts), viewed here at the process's mapping.
import { decodeShared, encodeShared, useArena } from '../sys/shared-arena.ts';

export default async function run(job: { module: string; input: unknown; arena: { base: string; size: number } | null }): Promise<unknown> {
  const mod = (await import(job.module)) as { default: (input: unknown) => unknown };
  if (typeof mod.default !== 'function') throw new Error(`${job.module} has no default export to run as a job`);
  useArena(job.arena);
  return encodeShared(await mod.default(decodeShared(job.input)));
}
