// The CPUs of a process's threads taken together. A thread is born on its creator's CPUs,
// and the threads a process has before any of its code runs (V8's and libuv's) were born on
// the CPUs it was started on: moving the calling thread alone leaves them there.
import { readdirSync, readFileSync } from 'node:fs';
import { setThreadCpus } from './libc.ts';

/**
 * Keeps every thread of this process to `cpus`, but those whose name (comm) `skip` matches.
 * Returns what failed, thread by thread; a thread that ended meanwhile is not a failure.
 */
export function keepThreadsToCpus(cpus: readonly number[], skip: RegExp | null = null): string[] {
  const failed: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (skip !== null && skip.test(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim())) continue;
      setThreadCpus(cpus, Number(tid));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ENOENT' && code !== 'ESRCH') failed.push(`thread ${tid}: ${(err as Error).message}`);
    }
  }
  return failed;
}
