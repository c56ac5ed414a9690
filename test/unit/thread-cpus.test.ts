// A thread's CPUs (sched_getaffinity) and a thread started on given CPUs: the new thread has
// them from its start, the thread that started it keeps its own; and where the threads of a
// running vrouter are: each PMD on its CPU, every other thread of its three processes on the
// CPUs the PMDs leave free.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { setThreadCpus, startOnCpus, threadCpus } from '../../src/sys/libc.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { dataplanePids, sparePids } from '../support/traffic.ts';

/** The kernel's list for this (main) thread, or a thread of another process, as "0-1" or "0,2": expanded. */
function allowedByKernel(status = '/proc/self/status'): number[] {
  const list = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(status, 'utf8'))![1];
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

/** Each thread of process `pid`: its name and the CPUs the kernel lets it run on. */
function threadsOf(pid: number): { tid: string; name: string; cpus: number[] }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => ({
    tid,
    name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(),
    cpus: allowedByKernel(`/proc/${pid}/task/${tid}/status`),
  }));
}

t.test("a running vrouter's threads: each PMD on its CPU, the others of its three processes on the CPUs left (the spare too, which loads on all)", async (t) => {
  const all = threadCpus();
  t.ok(all.length >= 2, `two CPUs or more are needed, one for the PMD (this test may run on ${all.join(', ')})`);
  const pmdCpu = all.at(-1)!;
  const control = all.filter((cpu) => cpu !== pmdCpu);
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [pmdCpu] } }));
  t.teardown(() => vr.stop());
  const [dataplane] = dataplanePids(vr.proc.pid!);
  const [spare] = sparePids(vr.proc.pid!);
  t.ok(dataplane !== undefined && spare !== undefined, `a data plane (${dataplane}) and its spare (${spare}), loaded`);
  const misplaced = (pid: number, expected: (name: string) => number[] | null) =>
    threadsOf(pid)
      .filter(({ name, cpus }) => {
        const want = expected(name);
        return want !== null && cpus.join(',') !== want.join(',');
      })
      .map(({ tid, name, cpus }) => `${tid} ${name} on ${cpus.join(',')}`);
  t.same(misplaced(vr.proc.pid!, () => control), [], `the supervisor's threads on CPU ${control.join(', ')}, V8's and libuv's too`);
  t.same(misplaced(dataplane, (name) => (name === 'pmd0' ? [pmdCpu] : control)), [], `the data plane's PMD on CPU ${pmdCpu}, its other threads on ${control.join(', ')}`);
  // The spare's PMD waits for the go, where it pins itself: it may be anywhere until then.
  t.same(misplaced(spare, (name) => (name === 'pmd0' ? null : control)), [], `the spare's threads but its PMD on CPU ${control.join(', ')}, once it has loaded`);
});
