// A thread of the job pool (jobs.ts): imports the job's module and runs its default export.
export default async function run(job: { module: string; input: unknown }): Promise<unknown> {
  const mod = (await import(job.module)) as { default: (input: unknown) => unknown };
  if (typeof mod.default !== 'function') throw new Error(`${job.module} has no default export to run as a job`);
  return mod.default(job.input);
}
