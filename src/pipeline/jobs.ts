// Control-plane jobs off the main thread: compiling route and ACL tables, and whatever a
// plugin's prepare() hands over. One piscina pool of up to two threads, started on the
// first job and kept: the supervisor's event loop (sockets, heartbeats) never waits on a
// compilation, and the PMDs never run one. The threads are never retired when idle: each
// thread that loads koffi (the jobs view the shared memory through it) reserves 3 MiB of
// address space that its exit does not give back, so a pool that shrank and grew again
// would leak two mappings per thread it started (the soak saw them).
import type { Piscina } from 'piscina';
import { adoptShared, arenaAddress, decodeShared, encodeShared, endLease, leaseShared } from '../sys/shared-arena.ts';
import type { JobResult, JobRunnerLoaded } from './job-runner.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
/** the pool, from the first job on: piscina is imported then (about 20 ms), not by every start */
let pool: Promise<Piscina> | null = null;
/** threads of the pool that have loaded (job-runner.ts says so), and jobs under way */
let loadedThreads = 0;
let jobsRunning = 0;
/** how long closeJobs() waits for threads still loading and jobs under way */
const CLOSE_WAIT_MS = 5000;

/**
 * Runs `module`'s default export on `input` in the job pool. Regions of the shared memory
 * in the input are viewed there in place (posting one would copy it); the regions the job
 * makes (sharedBuffer) are made in a lease of the shared memory, which the data plane
 * maps; SharedArrayBuffers it returns (past its lease) are copied in.
 */
export async function runJob<T>(module: string | URL, input: unknown): Promise<T> {
  pool ??= newPool();
  const jobs = await pool;
  const lease = leaseShared();
  let result: JobResult;
  jobsRunning++;
  try {
    result = (await jobs.run({ module: String(module), input: encodeShared(input), arena: arenaAddress(), lease })) as JobResult;
  } catch (err) {
    // What the job wrote is not known: all of the lease is emptied (cheap where untouched).
    if (lease !== null) endLease(lease, null, null);
    throw err;
  } finally {
    jobsRunning--;
  }
  const output = decodeShared(result.output);
  if (lease !== null) endLease(lease, output, result.leaseUsed);
  return adoptShared(output) as T;
}

async function newPool(): Promise<Piscina> {
  const { Piscina } = await import('piscina');
  const p = new Piscina({
    filename: new URL(`./job-runner${MODULE_EXT}`, import.meta.url).href,
    // One thread at first (a thread's start is about 150 ms of a control CPU); a second
    // only when two jobs run at once, kept from then on.
    minThreads: 1,
    maxThreads: 2,
    idleTimeout: Infinity,
  });
  p.on('message', (m: Partial<JobRunnerLoaded> | null) => {
    if (m?.jobRunnerLoaded === true) loadedThreads++;
  });
  return p;
}

/**
 * Ends the pool's threads (at shutdown), once none is loading and no job runs (bounded): a
 * thread stopped while it declares koffi's functions takes the process down (koffi cannot
 * throw into a thread being stopped, and aborts).
 */
export async function closeJobs(): Promise<void> {
  if (pool === null) return;
  const p = await pool;
  for (const end = Date.now() + CLOSE_WAIT_MS; Date.now() < end && (jobsRunning > 0 || loadedThreads < p.threads.length); ) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  pool = null;
  loadedThreads = 0;
  await p.destroy();
}
