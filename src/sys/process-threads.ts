// Settings of a process's threads taken together (CPUs, nice). A thread is born with its
// creator's, and the threads a process has before any of its code runs (V8's and libuv's)
// were born with those it was started with: setting the calling thread's alone leaves them.
import { readdirSync, readFileSync } from 'node:fs';
import { setThreadCpus, setThreadNice } from './libc.ts';

/**
 * Calls `apply` with each thread of this process whose name (comm) `which` takes (all when
 * not given). Returns what failed, thread by thread; a thread that ended meanwhile is not a
 * failure.
 */
export function forEachThread(apply: (tid: number) => void, which: ((name: string) => boolean) | null = null): string[] {
  const failed: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (which !== null && !which(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim())) continue;
      apply(Number(tid));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ENOENT' && code !== 'ESRCH') failed.push(`thread ${tid}: ${(err as Error).message}`);
    }
  }
  return failed;
}

/** Keeps every thread of this process to `cpus`, but those `skip` names. */
export function keepThreadsToCpus(cpus: readonly number[], skip: RegExp | null = null): string[] {
  return forEachThread((tid) => setThreadCpus(cpus, tid), skip === null ? null : (name) => !skip.test(name));
}

/**
 * Sets the nice value of V8's worker threads, which compile and collect for every isolate
 * of the process, for a hand-over of queues and back after it. Posting them a task (new
 * code to optimise, a scavenge to share) signals a condition variable, and glibc's signal
 * waits until the workers its last signal woke have run: at 0, on control CPUs that guests
 * or a load generator keep busy, a thread of the hand-over (a PMD, the control thread, a
 * data plane's main thread) sat blocked there 15 to 40 ms at a time in an upgrade's pause
 * (perf, sched_switch: futex_wait in pthread_cond_signal and in the lock of
 * NodePlatform::PostTaskOnWorkerThreadImpl). Raised for good, they would take the control
 * CPUs from everything else for as long as new code compiles. What could not be set is
 * returned, and said through `warn` if given.
 */
export function setV8WorkersNice(nice: number, warn?: (message: string) => void): string[] {
  const failed = forEachThread((tid) => setThreadNice(nice, tid), (name) => name === 'V8Worker');
  if (failed.length > 0) warn?.(`V8's worker threads not at nice ${nice} for the hand-over: ${failed.join('; ')}`);
  return failed;
}
