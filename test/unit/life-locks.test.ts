// Life locks (src/sys/life-locks.ts) and the supervisor's watch for a data plane's death
// (src/control/dataplane-death-watch.ts), with real threads and processes: a lock is let
// go as its thread ends, however it ends, and the watch reports a process dead only once
// every lock of its block is let go, with how it died.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { awaitLifeLock, holdLifeLock, initLifeLocks, LIFE_BLOCK_BYTES, LIFE_LOCKS } from '../../src/sys/life-locks.ts';
import { arenaAddress, createArena, refOf, releaseShared, sharedBuffer, sharedBytesInUse } from '../../src/sys/shared-arena.ts';
import { DataplaneProcess } from '../../src/control/dataplane-process.ts';
import { waitFor } from '../support/traffic.ts';
import { exitStatusOf, startTimeOf, type DeathSeen, type DeathWatchData, type DeathWatching } from '../../src/control/dataplane-death-watch.ts';

const ARENA_BYTES = 2 ** 30;
const arenaFd = createArena(ARENA_BYTES);
const src = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url));

/**
 * A block of life locks in the arena, made ready; freed as the test ends, not whenever the
 * garbage collector finds it: a later test counts the bytes of the arena in use.
 */
function lockBlock(t: Test): ArrayBuffer {
  const block = sharedBuffer(LIFE_BLOCK_BYTES) as ArrayBuffer;
  initLifeLocks(block);
  t.teardown(() => releaseShared(block));
  return block;
}

t.test('a thread holds its lock until it ends; another takes it then, and not before', async (t) => {
  const block = lockBlock(t);
  // The region goes as its place in the arena: postMessage would copy mapped memory.
  const holder = new Worker(
    `import { workerData, parentPort } from 'node:worker_threads';
     import { regionOf, useArena } from ${JSON.stringify(src('sys/shared-arena.ts'))};
     import { holdLifeLock } from ${JSON.stringify(src('sys/life-locks.ts'))};
     useArena(workerData.arena);
     parentPort.postMessage(holdLifeLock(regionOf(workerData.ref), 0, 64));
     parentPort.once('message', () => process.exit(0));`,
    { eval: true, workerData: { arena: arenaAddress(), ref: refOf(block) } },
  );
  t.equal(await new Promise((r) => holder.once('message', r)), 0, 'the first free lock is the thread\'s');
  t.equal(holdLifeLock(block, 0, 1), -1, 'a held lock is not taken by another thread');
  t.equal(awaitLifeLock(block, 0, 50), false, 'a wait for it times out while its thread lives');
  t.equal(holdLifeLock(block, 0, 3), 1, 'the next free one is taken instead');
  holder.postMessage('end');
  const started = performance.now();
  let held = false;
  while (!held && performance.now() - started < 5000) held = awaitLifeLock(block, 0, 50);
  t.ok(held, 'its lock is let go as the thread ends, and taken by the one waiting');
  t.ok(awaitLifeLock(block, 2, 50), 'a lock no thread ever held is taken at once');
  t.throws(() => holdLifeLock(block, LIFE_LOCKS, LIFE_LOCKS + 1), RangeError, 'a lock past the block is refused');
});

/**
 * A process that holds lock 0 of `block` in its main thread and lock 1 in another thread,
 * and says "held". Then, as `how` says: 'killed', it waits to be killed; 'main-exits', once
 * a line comes on its stdin, its main thread ends alone, and 400 ms later the other thread
 * ends the process (exit code 0).
 */
function holderProcess(block: ArrayBuffer, how: 'killed' | 'main-exits') {
  const ref = refOf(block);
  const script = `
    import koffi from 'koffi';
    import { Worker } from 'node:worker_threads';
    import { arenaAddress, attachArena, regionOf } from ${JSON.stringify(src('sys/shared-arena.ts'))};
    import { holdLifeLock } from ${JSON.stringify(src('sys/life-locks.ts'))};
    const syscall = koffi.load('libc.so.6').func('long syscall(long number, long code)');
    const ref = ${JSON.stringify(ref)};
    // Memory written, as a data plane has: the kernel takes a while to tear it down.
    globalThis.ballast = Buffer.alloc(256 << 20, 1);
    attachArena(3, ${ARENA_BYTES});
    holdLifeLock(regionOf(ref), 0, 1);
    const mainEnds = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(\`
      import koffi from 'koffi';
      import { workerData, parentPort } from 'node:worker_threads';
      import { regionOf, useArena } from ${JSON.stringify(src('sys/shared-arena.ts'))};
      import { holdLifeLock } from ${JSON.stringify(src('sys/life-locks.ts'))};
      useArena(workerData.arena);
      parentPort.postMessage(holdLifeLock(regionOf(workerData.ref), 1, 2));
      Atomics.wait(workerData.mainEnds, 0, 0);
      Atomics.wait(workerData.mainEnds, 0, 1, 400);
      // The process ends (exit_group(2)), code 0.
      koffi.load('libc.so.6').func('long syscall(long number, long code)')(process.arch === 'arm64' ? 94 : 231, 0);
    \`, { eval: true, workerData: { arena: arenaAddress(), ref, mainEnds } });
    worker.once('message', (lock) => {
      process.stdout.write(lock === 1 ? 'held\\n' : 'not held\\n');
      if ('${how}' !== 'main-exits') return;
      process.stdin.once('data', () => {
        Atomics.store(mainEnds, 0, 1);
        Atomics.notify(mainEnds, 0);
        // The main thread alone ends (exit(2), not exit_group): the process lives on.
        syscall(process.arch === 'arm64' ? 93 : 60, 0);
      });
    });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit', arenaFd], cwd: fileURLToPath(new URL('../..', import.meta.url)) });
  const held = new Promise<string>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())));
  return { child, held };
}

/** How long a watch that says it watches is left to report nothing while the process lives. */
const QUIET_MS = 1000;

/** The death watch on `pid`'s locks: `watching` once it says it waits; `seen`, what it reports, and when. */
function watch(block: ArrayBuffer, pid: number): { watching: Promise<void>; seen: Promise<{ seen: DeathSeen; at: number }> } {
  const data: DeathWatchData = { arena: arenaAddress(), lifeLocks: refOf(block), pid };
  const w = new Worker(new URL('../../src/control/dataplane-death-watch.ts', import.meta.url), { workerData: data });
  let watching: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (watching = resolve));
  const seen = new Promise<{ seen: DeathSeen; at: number }>((resolve, reject) => {
    w.on('message', (m: DeathSeen | DeathWatching) => ('watching' in m ? watching() : resolve({ seen: m, at: performance.now() })));
    w.once('error', reject);
  });
  return { watching: started, seen };
}

t.test('the watch reports a killed process, with its signal, before the process is reaped', async (t) => {
  const block = lockBlock(t);
  const { child, held } = holderProcess(block, 'killed');
  t.teardown(() => child.kill('SIGKILL'));
  t.equal(await held, 'held', 'both of its threads hold their locks');
  const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(performance.now())));
  const { watching, seen } = watch(block, child.pid!);
  const first = await Promise.race([seen.then(() => 'reported'), watching.then(() => 'watching')]);
  t.equal(first, 'watching', 'the watch says it watches first');
  const early = await Promise.race([seen.then(() => 'reported'), new Promise((r) => setTimeout(() => r('none'), QUIET_MS))]);
  t.equal(early, 'none', 'nothing is reported while it lives');
  child.kill('SIGKILL');
  const report = await seen;
  t.same(report.seen, { code: null, signal: 'SIGKILL' }, 'reported as killed by SIGKILL (read from /proc before it was reaped)');
  t.ok(report.at <= (await exited), 'reported no later than Node saw the process end');
});

t.test('the exit status of a process that ended but is not reaped', async (t) => {
  // A shell that starts two sleeps, then becomes a sleep itself: its children are never reaped.
  const parent = spawn('sh', ['-c', 'sleep 60 & echo $!; sleep 60 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => parent.kill('SIGKILL'));
  let out = '';
  await new Promise<void>((resolve) => parent.stdout!.on('data', (d: Buffer) => (out += d.toString()).split('\n').length > 2 && resolve()));
  const [killed, aborted] = out.trim().split('\n').map(Number);
  const started = { killed: startTimeOf(killed), aborted: startTimeOf(aborted) };
  t.ok(started.killed !== null && started.aborted !== null, 'their start times, read while they live');
  t.same(exitStatusOf(killed, started.killed), { code: 0, signal: null }, 'a live process reads as code 0 (nothing ended yet)');
  t.same(exitStatusOf(killed, '1'), { code: null, signal: null }, 'another start time: another process, nothing known of it');
  process.kill(killed, 'SIGKILL');
  // SIGABRT ends a process with a core dump (the status says so too), and has a second name, SIGIOT.
  process.kill(aborted, 'SIGABRT');
  const ended = async (pid: number, start: string | null) => {
    let seen: DeathSeen = { code: null, signal: null };
    for (let tries = 0; tries < 100 && seen.signal === null; tries++) {
      await new Promise((r) => setTimeout(r, 10));
      seen = exitStatusOf(pid, start);
    }
    return seen;
  };
  t.same(await ended(killed, started.killed), { code: null, signal: 'SIGKILL' }, 'killed: SIGKILL');
  t.same(await ended(aborted, started.aborted), { code: null, signal: 'SIGABRT' }, 'aborted: SIGABRT, as Node names it');
  t.same(exitStatusOf(2 ** 22 + 1, '1'), { code: null, signal: null }, 'no such process: nothing known');
});

t.test('the watch waits for every lock: a process whose main thread ended is dead only once its other thread ends too', async (t) => {
  const block = lockBlock(t);
  const { child, held } = holderProcess(block, 'main-exits');
  t.teardown(() => child.kill('SIGKILL'));
  t.equal(await held, 'held', 'both of its threads held their locks');
  // Watched once its main thread holds its lock (a data plane's says 'ready' then).
  const { watching, seen } = watch(block, child.pid!);
  await watching;
  child.stdin!.write('end\n');
  const mainEnded = performance.now();
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
  const report = await seen;
  t.ok(report.at - mainEnded >= 300, `reported ${(report.at - mainEnded).toFixed(0)} ms after the main thread ended: once the other thread (400 ms later) ended too`);
  t.same(report.seen, { code: 0, signal: null }, 'with exit code 0');
  t.equal(await exited, 0, 'the process did end with code 0');
});

t.test('a data plane killed as its watch starts: the supervisor lives on, the watch ends by itself and its block is freed', async (t) => {
  // A thread terminated while it declares koffi's functions aborts the whole process (koffi
  // cannot throw into a thread being stopped): the watch is never terminated. Deaths at a
  // few points of its start: a terminate would abort the supervisor (this process) when it
  // came as koffi loads, and a watch terminated once it runs ends with code 1, not 0.
  for (const afterMs of [0, 30, 60, 90, 120]) {
    let died: (how: string) => void = () => undefined;
    const death = new Promise<string>((resolve) => (died = resolve));
    const before = sharedBytesInUse();
    const dataplane = new DataplaneProcess(arenaFd, ARENA_BYTES, 0, { pmdError: () => undefined, pmdExit: () => undefined, pmdStandby: () => undefined, died: (code, signal) => died(`${code} ${signal}`) });
    await dataplane.ready();
    t.ok(sharedBytesInUse() > before, `killed ${afterMs} ms after: its block of locks is in the arena`);
    dataplane.watchForDeath();
    await new Promise((r) => setTimeout(r, afterMs));
    process.kill(dataplane.pid!, 'SIGKILL');
    t.equal(await death, 'null SIGKILL', 'its death is reported, by SIGKILL');
    t.equal(await dataplane.deathWatchEnded(), 0, 'the watch ended by itself (not terminated)');
    t.ok(await waitFor('the block freed', () => sharedBytesInUse() === before, 5000).then(() => true, () => false), 'the block is freed once the watch has ended');
  }
});
