// control.nice: the supervisor's main thread, the vhost control thread and the main thread
// of the data plane that serves the queues (or of a spare once loaded: it relays the next
// hand-over) run at the raised priority, so does a loaded spare's PMD until it has taken the
// queues over; the PMDs, the job pool, the spare while it loads and its other threads at 0. The key is checked like any other, and changed only by a
// restart.
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { parseConfig } from '../../src/control/config.ts';
import { setV8WorkersNice } from '../../src/sys/process-threads.ts';
import { adminClient } from '../support/admin-client.ts';
import { ROUTED } from '../support/routed-config.ts';
import { dataplanePids, sparePids, waitFor } from '../support/traffic.ts';
import { startVrouter } from '../support/vrouter-process.ts';

interface ThreadNice {
  tid: number;
  name: string;
  nice: number;
}

/** Every thread of a process: its name and nice value (/proc/PID/task/TID/stat, field 19). */
function threadsOf(pid: number): ThreadNice[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => ({
    tid: Number(tid),
    name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(),
    nice: Number(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]),
  }));
}

t.test('the control threads at nice -10 by default, the PMDs and the job pool at 0', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const pid = vr.proc.pid!;
  const supervisor = threadsOf(pid);
  t.equal(supervisor.find((th) => th.tid === pid)?.nice, -10, 'the supervisor\'s main thread');
  t.equal(supervisor.find((th) => th.name === 'vhost-ctl')?.nice, -10, 'the vhost control thread');
  // The routing stage's tables were compiled at start: the job pool's thread exists (one:
  // a second starts only when two jobs run at once).
  const pool = supervisor.filter((th) => th.name === 'WorkerThread');
  t.equal(pool.length, 1, 'the job pool\'s thread');
  t.same(pool.map((th) => th.nice), [0], 'the job pool at 0');
  const [dataplane] = dataplanePids(pid);
  // Polling, not only named (its thread takes its name as it is born, at the main thread's
  // nice): it says so after it has put itself at 0, and a start on a loaded machine may be
  // ready before it does.
  await waitFor('pmd0 polling', () => /pmd0: polling on CPU/.test(vr.stderr()), 10000);
  const dp = threadsOf(dataplane);
  t.equal(dp.find((th) => th.tid === dataplane)?.nice, -10, 'the data plane\'s main thread');
  t.equal(dp.find((th) => th.name === 'pmd0')?.nice, 0, 'the PMD');
  t.same([...new Set(dp.filter((th) => th.tid !== dataplane && th.name !== 'pmd0').map((th) => th.nice))], [0], 'the data plane\'s other threads (V8\'s, libuv\'s) at 0');
  const [spare] = sparePids(pid);
  t.ok(spare !== undefined, 'a spare is there');
  // Loaded, it waits: its main thread (it relays the next hand-over) and its PMD (asleep
  // until the go, which it then answers promptly) at -10, the rest at 0.
  await waitFor('the spare loaded, its main thread at -10', () => threadsOf(spare).find((th) => th.tid === spare)?.nice === -10, 10000);
  t.equal(threadsOf(spare).find((th) => th.tid === spare)?.nice, -10, 'the loaded spare\'s main thread at -10');
  await waitFor('the spare\'s PMD waiting at -10', () => threadsOf(spare).find((th) => th.name === 'pmd0')?.nice === -10, 10000);
  t.equal(threadsOf(spare).find((th) => th.name === 'pmd0')?.nice, -10, 'its PMD at -10 while it waits for the go');
  t.same([...new Set(threadsOf(spare).filter((th) => th.tid !== spare && th.name !== 'pmd0').map((th) => th.nice))], [0], 'its other threads at 0 while it waits');
  t.match(vr.stderr(), /control threads at nice -10, PMDs at 0/, 'the log says so');

  // The spare takes over: its main thread now relays the hand-overs.
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare to take over', () => dataplanePids(pid).includes(spare), 10000);
  await waitFor('its main thread at -10', () => threadsOf(spare).find((th) => th.tid === spare)?.nice === -10, 3000);
  t.equal(threadsOf(spare).find((th) => th.tid === spare)?.nice, -10, 'the spare that took over: its main thread at -10');
  // Its PMD polls at 0 once it takes frames again (every queue back); V8's workers, raised
  // in both processes for the hand-over, are back at 0 after it.
  await waitFor('its PMD back at 0', () => threadsOf(spare).find((th) => th.name === 'pmd0')?.nice === 0, 3000);
  const atZero = (pid: number, which: (th: ThreadNice) => boolean) => threadsOf(pid).filter(which).every((th) => th.nice === 0);
  await waitFor('its other threads at 0', () => atZero(spare, (th) => th.tid !== spare), 3000).catch(() => undefined);
  t.same([...new Set(threadsOf(spare).filter((th) => th.tid !== spare).map((th) => th.nice))], [0], 'its other threads at 0, its PMD too');
  await waitFor('the supervisor\'s V8 workers at 0', () => atZero(pid, (th) => th.name === 'V8Worker'), 3000).catch(() => undefined);
  t.same([...new Set(threadsOf(pid).filter((th) => th.name === 'V8Worker').map((th) => th.nice))], [0], 'the supervisor\'s V8 workers at 0 after the hand-over');

  const api = adminClient(vr);
  const doc = (await api.call('GET', '/config')).json;
  t.match(await api.call('PUT', '/config', { ...doc, control: { nice: 0 } }), { status: 400, json: { error: { code: 'VR_NEEDS_RESTART', field: 'control' } } }, 'a live change is refused: it needs a restart');
  t.equal(threadsOf(pid).find((th) => th.tid === pid)?.nice, -10, 'and changes nothing');
});

t.test("V8's workers: at a hand-over's nice and back, the other threads untouched", (t) => {
  const before = threadsOf(process.pid);
  const workers = before.filter((th) => th.name === 'V8Worker').map((th) => th.tid);
  t.ok(workers.length > 0, `this process has V8 workers (${workers.length})`);
  t.same(setV8WorkersNice(-10), [], 'raised without failure');
  const raised = threadsOf(process.pid);
  t.same([...new Set(raised.filter((th) => workers.includes(th.tid)).map((th) => th.nice))], [-10], 'every V8 worker at -10');
  t.same(raised.filter((th) => !workers.includes(th.tid)).map((th) => [th.tid, th.nice]), before.filter((th) => !workers.includes(th.tid) && raised.some((r) => r.tid === th.tid)).map((th) => [th.tid, th.nice]), 'no other thread changed');
  t.same(setV8WorkersNice(0), [], 'lowered without failure');
  t.same([...new Set(threadsOf(process.pid).filter((th) => workers.includes(th.tid)).map((th) => th.nice))], [0], 'every V8 worker back at 0');
  t.end();
});

t.test('control.nice 0: every thread at 0', async (t) => {
  const vr = await startVrouter({ ...ROUTED, control: { nice: 0 } });
  t.teardown(() => vr.stop());
  const pid = vr.proc.pid!;
  const [dataplane] = dataplanePids(pid);
  for (const th of [...threadsOf(pid), ...threadsOf(dataplane)]) t.equal(th.nice, 0, `${th.name} (${th.tid}) at 0`);
});

t.test('control.nice is checked like any other key', async (t) => {
  for (const nice of [-21, 20, 1.5, '5']) {
    t.throws(() => parseConfig({ ...ROUTED, control: { nice } }, '/tmp'), { field: 'control.nice', message: /must be an integer from -20 to 19/ }, `${JSON.stringify(nice)} refused`);
  }
  t.throws(() => parseConfig({ ...ROUTED, control: { niceness: 1 } }, '/tmp'), { field: 'control.niceness', message: /unknown key/ }, 'an unknown key refused');
  t.equal(parseConfig({ ...ROUTED, control: { nice: 5 } }, '/tmp').control.nice, 5);
  t.equal(parseConfig(ROUTED, '/tmp').control.nice, -10, 'default -10');
});
