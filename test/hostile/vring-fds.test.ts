// Kick, call and error fds of every kind a frontend can send: anything but a non-blocking
// eventfd is refused at the message, and an eventfd made blocking after it was accepted
// (the flag belongs to the open file, which the frontend shares) never blocks the PMD.
import t, { type Test } from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { startDevice, u64, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { blockingEventfd, closeOwn, directoryFd, eventfdAdd, lingeringSocket, makeBlocking, pipe } from '../support/raw-fds.ts';
import { dataplanePids, processResources, waitFor } from '../support/traffic.ts';
import { ackingFrontend, MAC_A, withNeighbours, type Neighbours } from './lib.ts';

const MAC_H = '52:54:00:00:00:0c';

t.test('vring fds that are not non-blocking eventfds', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-fds-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [pipeRead, pipeWrite] = pipe();
  const socket = sys.unixListen(join(dir, 'x.sock'));
  const memfd = sys.memfdCreate('not-an-eventfd');
  const dirFd = directoryFd(dir);
  const blocking = blockingEventfd();
  t.teardown(() => sys.closeAll([pipeRead, pipeWrite, socket, memfd, dirFd, blocking]));
  const kinds: [string, number, RegExp][] = [
    ['a directory', dirFd, /not an eventfd but a file or directory/],
    ['a pipe', pipeRead, /not an eventfd but pipe/],
    ['a socket', socket, /not an eventfd but socket/],
    ['a memfd', memfd, /not an eventfd but a file or directory/],
    ['a blocking eventfd', blocking, /a blocking eventfd/],
  ];

  await t.test('refused with REPLY_ACK: a failure answer and a logged reason', async (t) => {
    const fe = await ackingFrontend(n.vr.sockets.h);
    t.teardown(() => fe.close());
    for (const request of [Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR]) {
      for (const [what, fd, reason] of kinds) {
        const before = n.vr.stderr().length;
        t.equal(await fe.request(request, u64(1), [fd]), 1n, `request ${request} with ${what}: refused`);
        await waitFor('the log line', () => reason.test(n.vr.stderr().slice(before)));
      }
    }
    fe.send(Req.GET_QUEUE_NUM);
    t.equal(await fe.replyU64(), 1n, 'the connection still answers');
  });

  await t.test('refused without REPLY_ACK: the connection is closed', async (t) => {
    for (const [what, fd] of kinds) {
      const fe = await ackingFrontend(n.vr.sockets.h);
      fe.send(Req.SET_VRING_KICK, u64(0), [fd], VERSION); // no NEED_REPLY: nothing to answer a failure with
      t.ok(await fe.closedByPeer(), `${what} as kick fd: closed`);
      fe.close();
    }
  });

  t.ok(n.vr.alive(), 'vrouter runs');
  t.ok(await n.stillForward(), 'a and b still forward');
  await waitFor('fds given back', () => processResources(n.vr.proc.pid!).fds <= n.baseline.fds);
  t.pass(`vrouter holds ${processResources(n.vr.proc.pid!).fds} fds, as before the cases`);
});

/**
 * h's guest RX call fd made blocking with its counter full, then frames sent from a to h:
 * the PMD writes that fd when it delivers them, and a full counter on a blocking fd would
 * stop the write for good. Returns the fd.
 */
function blockCallFd(t: Test, n: Neighbours, h: VirtioNetDevice): number {
  const call = h.callFds[0];
  makeBlocking(call);
  t.ok(eventfdAdd(call, 2n ** 64n - 2n), 'the counter is full');
  for (let i = 0; i < 8; i++) postRxBuffer(h.rx, 2048);
  for (let i = 0; i < 8; i++) sendFrame(n.a.tx, ethernetFrame(MAC_H, MAC_A, 100, i));
  n.a.kick();
  return call;
}

t.test('an eventfd made blocking and full after it was accepted', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const h = await startDevice(n.vr.sockets.h);
  t.teardown(() => h.close());
  const before = n.vr.stderr().length;
  const call = blockCallFd(t, n, h);
  // The audit (every 500 ms) or the watchdog's interrupt (after 250 to 500 ms), whichever comes first.
  const by = await waitFor('the disconnect', () => {
    const log = n.vr.stderr().slice(before);
    return /made its call eventfd blocking/.test(log) ? 'the audit' : /port h: quarantined for 5 s: its frontend made a call eventfd blocking/.test(log) ? 'a quarantine' : undefined;
  }, 3000);
  t.ok(h.rx.takeUsed().length > 0, 'frames reached h, so the PMD did write its call fd');
  t.ok(await h.frontend.closedByPeer(), `h was disconnected, by ${by}`);
  if (by === 'the audit') t.ok(sys.isNonBlocking(call), 'and its fd made non-blocking again');
  t.ok(await n.stillForward(), 'a and b still forward: the PMD was not left blocked');
  t.ok(n.vr.alive());
});

for (const leaving of ['hangs up', 'resets the device'] as const) {
  t.test(`an eventfd made blocking and full, then the frontend ${leaving}`, async (t) => {
    // The PMD still writes the old call fd until it answers the reset: the fds are audited
    // until it does, not only while the connection lasts, and the watchdog interrupts a
    // write that waits (whichever comes first ends it).
    const n = await withNeighbours(['h']);
    t.teardown(() => n.close());
    const h = await startDevice(n.vr.sockets.h);
    t.teardown(() => h.close());
    const call = blockCallFd(t, n, h);
    await waitFor('frames on h', () => h.rx.takeUsed().length > 0 || undefined, 3000);
    if (leaving === 'hangs up') h.frontend.close();
    else h.frontend.send(Req.RESET_OWNER);
    t.ok(await n.stillForward(), 'a and b still forward: the PMD was not left blocked');
    const undone = await waitFor('the write ended', () => (sys.isNonBlocking(call) ? 'the audit' : /in a write to a call eventfd of port h for \d+ ms or more: interrupted/.test(n.vr.stderr()) ? 'an interrupt' : undefined), 3000);
    t.notMatch(n.vr.stderr(), /is stuck|did not end|killing the data-plane process/, `undone by ${undone}, not by terminating the PMD or killing the data plane`);
    if (leaving === 'hangs up') {
      // An interrupted write (if the watchdog came first) quarantines the port: for 5 s. The
      // audit's may have raced an interrupt: a moment for its line too.
      const quarantined = () => /port h: quarantined for 5 s/.test(n.vr.stderr()) || undefined;
      if (undone === 'an interrupt') await waitFor('the quarantine of h', quarantined, 3000);
      else await new Promise((r) => setTimeout(r, 600));
      if (quarantined()) await new Promise((r) => setTimeout(r, 5000));
      const again = await startDevice(n.vr.sockets.h);
      t.teardown(() => again.close());
      t.pass('a new frontend on h is set up');
    }
    t.ok(n.vr.alive());
  });
}

t.test('an eventfd made blocking and full, and non-blocking again once the PMD waits on it', async (t) => {
  // The flag is looked at as the write starts: the write waits on, and the audit, which
  // looks at the flag, sees nothing wrong. The watchdog interrupts the write instead, and
  // the port is quarantined.
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const [dataplane] = dataplanePids(n.vr.proc.pid!);
  const pmd0 = readdirSync(`/proc/${dataplane}/task`).find((tid) => readFileSync(`/proc/${dataplane}/task/${tid}/comm`, 'utf8').trim() === 'pmd0')!;
  // write(2) is system call 1 on x86-64: the first field of the thread's syscall file while it is in one.
  const inWrite = () => readFileSync(`/proc/${dataplane}/task/${pmd0}/syscall`, 'utf8').startsWith('1 ');
  for (let attempt = 1; ; attempt++) {
    const h = await startDevice(n.vr.sockets.h);
    t.teardown(() => h.close());
    const before = n.vr.stderr().length;
    const call = h.callFds[0];
    for (let i = 0; i < 8; i++) postRxBuffer(h.rx, 2048);
    t.ok(eventfdAdd(call, 2n ** 64n - 2n), 'the counter is full');
    makeBlocking(call);
    for (let i = 0; i < 8; i++) sendFrame(n.a.tx, ethernetFrame(MAC_H, MAC_A, 100, i));
    n.a.kick();
    // Blocking for as short a time as can be (the audit looks every 500 ms): until pmd0 is
    // seen in a write that lasts (the fd is blocking and full: it waits).
    const deadline = Date.now() + 2000;
    while (!(inWrite() && inWrite()) && Date.now() < deadline);
    const blocked = inWrite();
    sys.setNonBlocking(call);
    if (/made its call eventfd blocking/.test(n.vr.stderr().slice(before)) && attempt < 3) {
      t.comment(`attempt ${attempt}: the audit saw the fd blocking; again`);
      await h.frontend.closedByPeer();
      continue;
    }
    t.ok(blocked, 'pmd0 waits in its write to the call fd, which is non-blocking again');
    t.ok(h.rx.usedIdx() > 0, 'the frames reached h before');
    t.ok(await n.stillForward(), 'a and b forward: the PMD was not left blocked');
    await waitFor('the interrupt', () => /pmd0 was in a write to a call eventfd of port h for 250 ms or more: interrupted/.test(n.vr.stderr().slice(before)), 3000);
    // Quarantined only once the PMD found its write interrupted (EINTR: it had waited).
    await waitFor('the quarantine', () => /port h: quarantined for 5 s: its frontend made a call eventfd blocking with a full counter/.test(n.vr.stderr().slice(before)), 3000);
    t.ok(await h.frontend.closedByPeer(), 'h is disconnected, its port quarantined');
    t.notMatch(n.vr.stderr().slice(before), /is stuck|did not end|killing the data-plane process|made its call eventfd blocking/, 'interrupted: not terminated, not killed, not seen by the audit');
    t.ok(n.vr.alive());
    return;
  }
});

t.test('a header with reserved flag bits closes the connection', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  fe.send(Req.GET_FEATURES, new Uint8Array(0), [], VERSION | FLAG_NEED_REPLY | 0x10);
  t.ok(await fe.closedByPeer(), 'closed');
  await waitFor('the reason in the log', () => /GET_FEATURES: bad flags 0x19/.test(n.vr.stderr()));
  t.ok(await n.stillForward());
});

t.test('a socket set to linger, sent as a kick fd: refused, and let go without waiting for its data', async (t) => {
  const n = await withNeighbours(['h', 'g']);
  t.teardown(() => n.close());
  // Closing the last fd of it would wait 60 s for data its peer never reads.
  const socket = await lingeringSocket(60);
  t.teardown(() => socket.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  const answer = fe.request(Req.SET_VRING_KICK, u64(1), [socket.fd]);
  // Sent: vrouter's fd, once it reads the message, is the last one.
  closeOwn(socket.fd);
  t.equal(await answer, 1n, 'refused: not an eventfd');
  await waitFor('the log line', () => /not an eventfd but socket/.test(n.vr.stderr()));
  // Every port's messages go through the one control thread that closed it.
  const other = await ackingFrontend(n.vr.sockets.g);
  t.teardown(() => other.close());
  const started = performance.now();
  other.send(Req.GET_QUEUE_NUM);
  t.equal(await other.replyU64(5000), 1n, 'another port\'s connection is answered');
  const ms = performance.now() - started;
  t.ok(ms < 2000, `within ${ms.toFixed(0)} ms: the control thread did not wait out the socket's linger`);
  fe.send(Req.GET_QUEUE_NUM);
  t.equal(await fe.replyU64(), 1n, 'and the sender\'s connection still answers');
  t.ok(await n.stillForward(), 'a and b still forward');
});
