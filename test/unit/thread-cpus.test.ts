// A thread's CPUs (sched_getaffinity) and a thread started on given CPUs: the new thread has
// them from its start, the thread that started it keeps its own.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { setThreadCpus, startOnCpus, threadCpus } from '../../src/sys/libc.ts';

/** The kernel's list for this (main) thread, as "0-1" or "0,2": expanded. */
function allowedByKernel(): number[] {
  const list = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1];
  return list.split(',').flatMap((part) => {
    const [from, to] = part.split('-').map(Number);
    return Array.from({ length: (to ?? from) - from + 1 }, (_, k) => from + k);
  });
}

/** A worker that reports its own CPUs, as seen from inside it at its start. */
const CPU_REPORTER = `
  import { parentPort } from 'node:worker_threads';
  const { threadCpus } = await import(${JSON.stringify(new URL('../../src/sys/libc.ts', import.meta.url).href)});
  parentPort.postMessage(threadCpus());
`;
async function cpusOfNewThread(start: () => Worker): Promise<number[]> {
  const worker = start();
  const seen = await new Promise<number[]>((resolve, reject) => worker.once('message', resolve).once('error', reject));
  await worker.terminate();
  return seen;
}
const reporter = () => new Worker(new URL(`data:text/javascript,${encodeURIComponent(CPU_REPORTER)}`));

t.test('threadCpus() lists the CPUs the kernel allows the calling thread', async (t) => {
  t.same(threadCpus(), allowedByKernel());
});

t.test('a thread started on one CPU has that CPU alone; its starter keeps its own', async (t) => {
  const before = threadCpus();
  t.ok(before.length >= 2, `two CPUs or more this thread may run on are needed to tell them apart (it may run on ${before.join(', ')})`);
  const target = before.at(-1)!;
  t.same(await cpusOfNewThread(() => startOnCpus([target], reporter)), [target], `the new thread runs on CPU ${target} alone`);
  t.same(threadCpus(), before, 'the starting thread is back on its CPUs');
  t.same(await cpusOfNewThread(reporter), before, 'a thread started after inherits the starter\'s CPUs again');
});

t.test('a CPU the thread cannot go to: started where the starter runs, nothing changed', async (t) => {
  const before = threadCpus();
  let calls = 0;
  const seen = await cpusOfNewThread(() =>
    startOnCpus([1023], () => {
      calls++;
      return reporter();
    }),
  );
  t.equal(calls, 1, 'started once');
  t.same(seen, before, 'on the starter\'s CPUs');
  t.same(threadCpus(), before, 'the starter unchanged');
  t.throws(() => setThreadCpus([1023]), /sched_setaffinity/, 'as setThreadCpus itself would say');
});
