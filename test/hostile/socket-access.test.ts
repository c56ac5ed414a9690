// Who may reach a port: the socket file's mode and group (set before the socket listens),
// and the frontend's uid as the kernel reports it (SO_PEERCRED), in server and client mode.
import { readFileSync, rmSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { trafficFlows, waitFor } from '../support/traffic.ts';
import { startDevice, VhostFrontend } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const MAC_Q = '52:54:00:00:00:01';
const MAC_R = '52:54:00:00:00:02';
const OTHER_UID = 12345;
const uid = process.getuid!();
const gid = process.getgid!();

/** A group of /etc/group other than ours, so that a chown to it shows. */
function anotherGroup(): { name: string; gid: number } {
  for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
    const [name, , id] = line.split(':');
    if (name && id !== undefined && Number(id) !== gid) return { name, gid: Number(id) };
  }
  throw new Error('/etc/group lists no group but ours');
}

/** Accepts the connection vrouter (in client mode) makes to our listening socket. */
async function acceptFromVrouter(listenFd: number, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fd = sys.accept(listenFd);
    if (fd >= 0) return fd;
    if (Date.now() > deadline) throw new Error('vrouter did not connect');
    await sleep(20);
  }
}

/** True once the other end of fd has closed (end of file or reset). */
async function closedByPeer(fd: number, timeoutMs = 2000): Promise<boolean> {
  const buf = new Uint8Array(256);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const got = sys.recvMsg(fd, buf);
      if (got !== null) {
        sys.closeAll(got.fds);
        if (got.length === 0) return true;
      }
    } catch {
      return true;
    }
    await sleep(10);
  }
  return false;
}

t.test('socket permissions and frontend credentials', async (t) => {
  const group = anotherGroup();
  const ports = [
    { name: 'd', socket: '{dir}/d.sock' },
    { name: 'g', socket: '{dir}/g.sock', socketMode: '0660', socketGroup: group.name },
    { name: 'p', socket: '{dir}/p.sock', peerUid: OTHER_UID },
    { name: 'q', socket: '{dir}/q.sock', bridge: 'br0', peerUid: uid },
    { name: 'r', socket: '{dir}/r.sock', bridge: 'br0' },
    { name: 'cp', socket: '{dir}/frontend-p.sock', mode: 'client', peerUid: OTHER_UID },
    { name: 'cq', socket: '{dir}/frontend-q.sock', mode: 'client', peerUid: uid },
  ];
  const vr = await startVrouter({ ports, pmd: { cores: [1] } });
  t.teardown(() => vr.stop());

  await t.test('a socket file is 0600 by default, owned by vrouter', async (t) => {
    const st = statSync(vr.sockets.d);
    t.ok(st.isSocket(), 'a socket');
    t.equal((st.mode & 0o777).toString(8), '600', 'mode 0600');
    t.equal(st.uid, uid, 'owned by the user vrouter runs as');
  });

  await t.test('socketMode and socketGroup are applied', async (t) => {
    const st = statSync(vr.sockets.g);
    t.equal((st.mode & 0o777).toString(8), '660', 'mode 0660');
    t.equal(st.gid, group.gid, `group ${group.name} (${group.gid})`);
    t.equal(st.uid, uid, 'the owner is unchanged');
    const fe = await VhostFrontend.connect(vr.sockets.g);
    t.teardown(() => fe.close());
    t.notOk(await fe.closedByPeer(300), 'the socket listens: a connection is taken and kept');
  });

  await t.test('server mode: a frontend of another uid is disconnected at once', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.p);
    t.teardown(() => fe.close());
    t.ok(await fe.closedByPeer(1000), 'closed within a second');
    const why = `port p: refused a frontend (pid ${process.pid} uid ${uid} gid ${gid}): uid ${uid} is not peerUid ${OTHER_UID}`;
    await waitFor('the refusal in the log', () => vr.stderr().includes(why));
    t.ok(vr.stderr().includes(why), `the log says: ${why}`);
    t.notMatch(vr.stderr(), /port p: frontend connected/, 'never treated as connected');
    t.ok(vr.alive(), 'vrouter still runs');
  });

  await t.test('server mode: a frontend of the configured uid starts its device and forwards', async (t) => {
    const q = await startDevice(vr.sockets.q);
    const r = await startDevice(vr.sockets.r);
    t.teardown(() => (q.close(), r.close()));
    t.equal(await trafficFlows(q, r, 20, MAC_Q, MAC_R), 20, '20 frames q to r');
    const who = `pid ${process.pid} uid ${uid} gid ${gid}`;
    for (const port of ['q', 'r']) {
      const line = `port ${port}: frontend connected: ${who}`;
      await waitFor(line, () => vr.stderr().includes(line));
      t.ok(vr.stderr().includes(line), `the log shows ${who} for port ${port}${port === 'r' ? ' (no peerUid)' : ''}`);
    }
  });

  await t.test('client mode: a frontend socket of another uid is hung up on', async (t) => {
    rmSync(`${vr.dir}/frontend-p.sock`, { force: true });
    const listenFd = sys.unixListen(`${vr.dir}/frontend-p.sock`);
    t.teardown(() => sys.closeAll([listenFd]));
    const fd = await acceptFromVrouter(listenFd);
    t.teardown(() => sys.closeAll([fd]));
    t.ok(await closedByPeer(fd, 1000), 'vrouter closed the connection within a second');
    const why = `port cp: refused a frontend (pid ${process.pid} uid ${uid} gid ${gid}): uid ${uid} is not peerUid ${OTHER_UID}`;
    await waitFor('the refusal in the log', () => vr.stderr().includes(why));
    t.ok(vr.stderr().includes(why), `the log says: ${why}`);
  });

  await t.test('client mode: a frontend socket of the configured uid is kept', async (t) => {
    rmSync(`${vr.dir}/frontend-q.sock`, { force: true });
    const listenFd = sys.unixListen(`${vr.dir}/frontend-q.sock`);
    t.teardown(() => sys.closeAll([listenFd]));
    const fd = await acceptFromVrouter(listenFd);
    t.teardown(() => sys.closeAll([fd]));
    t.notOk(await closedByPeer(fd, 300), 'the connection stays');
    const line = `port cq: frontend connected: pid ${process.pid} uid ${uid} gid ${gid}`;
    await waitFor(line, () => vr.stderr().includes(line));
    t.ok(vr.stderr().includes(line), 'the log shows who listens');
  });

  t.ok(vr.alive(), 'vrouter still runs');
  t.equal(await vr.stop(), 0, 'clean exit on SIGTERM');
});
