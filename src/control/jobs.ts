// Control-plane jobs off the main thread: compiling route and ACL tables, and whatever a
// plugin's prepare() hands over. One piscina pool of up to two threads, started on the
// first job and kept: the supervisor's event loop (sockets, heartbeats) never waits on a
// compilation, and the PMDs never run one. The threads are never retired when idle: each
// thread that loads koffi (the jobs view the shared memory through it) reserves 3 MiB of
// address space that its exit does not give back, so a pool that shrank and grew again
// would leak two mappings per thread it started (the soak saw them).
import { Piscina } from 'piscina';
import { adoptShared, arenaAddress, decodeShared, encodeShared, endLease, leaseShared } from '../sys/shared-arena.ts';
import type { JobResult } from './job-runner.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
let pool: Piscina | null = null;

/**
 * Runs `module`'s default export on `input` in the job pool. Regions of the shared memory
 * in the input are viewed there in place (posting one would copy it); the regions the job
 * makes (sharedBuffer) are made in a lease of the shared memory, which the data plane
 * maps; SharedArrayBuffers it returns (past its lease) are copied in.
 */
export async function runJob<T>(module: string | URL, input: unknown): Promise<T> {
  pool ??= new Piscina({
    filename: new URL(`./job-runner${MODULE_EXT}`, import.meta.url).href,
    // One thread at first (a thread's start is about 150 ms of a control CPU); a second
    // only when two jobs run at once, kept from then on.
    minThreads: 1,
    maxThreads: 2,
    idleTimeout: Infinity,
  });
  const lease = leaseShared();
  let result: JobResult;
  try {
    result = (await pool.run({ module: String(module), input: encodeShared(input), arena: arenaAddress(), lease })) as JobResult;
  } catch (err) {
    // What the job wrote is not known: all of the lease is emptied (cheap where untouched).
    if (lease !== null) endLease(lease, null, null);
    throw err;
  }
  const output = decodeShared(result.output);
  if (lease !== null) endLease(lease, output, result.leaseUsed);
  return adoptShared(output) as T;
}

/** Ends the pool's threads (at shutdown). */
export async function closeJobs(): Promise<void> {
  const p = pool;
  pool = null;
  await p?.destroy();
}
