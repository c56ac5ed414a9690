// Control-plane jobs off the main thread: compiling route and ACL tables, and whatever a
// plugin's prepare() hands over. One piscina pool of two threads, started on the first job
// and kept: the supervisor's event loop (sockets, heartbeats) never waits on a compilation,
// and the PMDs never run one. The threads are never retired when idle: each thread that
// loads koffi (the jobs view the shared memory through it) reserves 3 MiB of address space
// that its exit does not give back, so a pool that shrank and grew again would leak two
// mappings per thread it started (the soak saw them).
import { Piscina } from 'piscina';
import { adoptShared, arenaAddress, decodeShared, encodeShared } from '../sys/shared-arena.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
let pool: Piscina | null = null;

/**
 * Runs `module`'s default export on `input` in the job pool. Regions of the shared memory
 * in the input are viewed there in place (posting one would copy it); SharedArrayBuffers
 * the job returns are copied into the shared memory, which the data plane can map.
 */
export async function runJob<T>(module: string | URL, input: unknown): Promise<T> {
  pool ??= new Piscina({
    filename: new URL(`./job-runner${MODULE_EXT}`, import.meta.url).href,
    minThreads: 2,
    maxThreads: 2,
  });
  const output: unknown = await pool.run({ module: String(module), input: encodeShared(input), arena: arenaAddress() });
  return adoptShared(decodeShared(output)) as T;
}

/** Ends the pool's threads (at shutdown). */
export async function closeJobs(): Promise<void> {
  const p = pool;
  pool = null;
  await p?.destroy();
}
