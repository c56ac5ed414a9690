// The eventfd calls made on fds a frontend sent, which it may make blocking at any moment:
// a drain never blocks, and a write that blocks is ended by interrupting its thread.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import * as sys from '../../src/sys/libc.ts';
import { blockingEventfd, eventfdAdd } from '../support/raw-fds.ts';

t.test('a drain of a blocking eventfd with nothing pending returns 0 at once', async (t) => {
  const fd = blockingEventfd();
  t.teardown(() => sys.closeAll([fd]));
  t.equal(sys.isNonBlocking(fd), false, 'the fd is blocking');
  const started = performance.now();
  t.equal(sys.eventfdDrain(fd), 0, 'nothing pending');
  t.ok(performance.now() - started < 100, 'and it did not wait');
  t.ok(eventfdAdd(fd, 3n));
  t.equal(sys.eventfdDrain(fd), 3, 'what is pending is read and cleared');
  t.equal(sys.eventfdDrain(fd), 0);
});

t.test('a thread blocked writing a full blocking eventfd returns, interrupted', async (t) => {
  sys.installInterruptHandler();
  t.ok(sys.interruptHandlerInstalled(), 'the handler is installed');
  const fd = blockingEventfd();
  t.teardown(() => sys.closeAll([fd]));
  t.ok(eventfdAdd(fd, 2n ** 64n - 2n), 'the counter is full');
  const tid = new Int32Array(new SharedArrayBuffer(4));
  // The worker's own copy of libc.ts: its write is the data path's eventfdSignal.
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.libc).then((sys) => {
      workerData.tid[0] = sys.threadId();
      const signalled = sys.eventfdSignal(workerData.fd);
      parentPort.postMessage({ signalled, interrupted: sys.lastCallInterrupted() });
    });`;
  const worker = new Worker(code, { eval: true, workerData: { fd, tid, libc: new URL('../../src/sys/libc.ts', import.meta.url).href } });
  t.teardown(() => worker.terminate());
  const answer = new Promise<{ signalled: boolean; interrupted: boolean }>((resolve) => worker.once('message', resolve));
  while (tid[0] === 0) await new Promise((r) => setTimeout(r, 10));
  const blocked = await Promise.race([answer.then(() => false), new Promise((r) => setTimeout(r, 300)).then(() => true)]);
  t.ok(blocked, 'the write waits');
  t.ok(sys.interruptThread(process.pid, tid[0]), 'the thread is sent the signal');
  t.same(await answer, { signalled: false, interrupted: true }, 'the write returns, interrupted (EINTR), and the thread goes on');
});
