// Settings of a process's threads taken together (CPUs, nice). A thread is born with its
// creator's, and the threads a process has before any of its code runs (V8's and libuv's)
// were born with those it was started with: setting the calling thread's alone leaves them.
import { readdirSync, readFileSync } from 'node:fs';
import { setThreadCpus } from './libc.ts';

/**
 * Calls `apply` with each thread of this process, but those whose name (comm) `skip`
 * matches. Returns what failed, thread by thread; a thread that ended meanwhile is not a
 * failure.
 */
export function forEachThread(apply: (tid: number) => void, skip: RegExp | null = null): string[] {
  const failed: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (skip !== null && skip.test(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim())) continue;
      apply(Number(tid));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ENOENT' && code !== 'ESRCH') failed.push(`thread ${tid}: ${(err as Error).message}`);
    }
  }
  return failed;
}

/** Keeps every thread of this process to `cpus`, but those `skip` names (forEachThread). */
export function keepThreadsToCpus(cpus: readonly number[], skip: RegExp | null = null): string[] {
  return forEachThread((tid) => setThreadCpus(cpus, tid), skip);
}
