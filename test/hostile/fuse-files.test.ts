// A file on FUSE among a frontend's fds: its daemon answers every close, stat and statfs
// of it, and a frontend that stops the daemon would hold the control thread, every port's
// messages, in the first of them. Such an fd is set aside as it arrives (kept open, never
// used), the frontend is disconnected, and the other ports are served on.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { memTablePayload } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { ackingFrontend, withNeighbours } from './lib.ts';

const REGION_BYTES = 1 << 20;

t.test('a memory file on FUSE whose daemon the frontend stopped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-fuse-'));
  const source = join(dir, 'source');
  const mount = join(dir, 'mount');
  mkdirSync(source);
  mkdirSync(mount);
  writeFileSync(join(source, 'guest-ram'), Buffer.alloc(REGION_BYTES));
  // bindfs (Debian): a FUSE file system that shows a directory again; -f keeps its daemon
  // in this process's hands.
  const daemon = spawn('bindfs', ['-f', source, mount], { stdio: ['ignore', 'ignore', 'pipe'] });
  let daemonErr = '';
  daemon.stderr.on('data', (d: Buffer) => (daemonErr += d.toString()));
  const n = await withNeighbours(['h', 'g']);
  let fd = -1;
  // One teardown, in this order: the daemon goes on before anything closes a file of it
  // (vrouter keeps one open until it stops; this test has its own).
  t.teardown(async () => {
    if (daemon.pid !== undefined) process.kill(daemon.pid, 'SIGCONT');
    if (fd >= 0) closeSync(fd);
    await n.close();
    spawnSync('umount', ['-l', mount]);
    daemon.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const mounted = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mount && l.includes(' - fuse'));
  await waitFor(`bindfs mounting ${mount} (${daemonErr.trim() || 'no error'})`, () => mounted() || undefined, 10_000);
  fd = openSync(join(mount, 'guest-ram'), 'r+');
  process.kill(daemon.pid!, 'SIGSTOP');

  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0x100000, size: REGION_BYTES, uva: 0x7f0000000000, offset: 0 }]), [fd], VERSION | FLAG_NEED_REPLY);
  t.ok(await fe.closedByPeer(5000), 'the connection is closed, at once');
  await waitFor('the reason in the log', () => /port h: connection closed: protocol error: an fd of a file on fuse/.test(n.vr.stderr()) || undefined);
  t.match(n.vr.stderr(), /an fd of a file on fuse(\.\w+)?, whose daemon every close, stat and statfs of it would wait for: refused, and kept open unused/, 'the log says why');

  const other = await ackingFrontend(n.vr.sockets.g);
  t.teardown(() => other.close());
  const started = performance.now();
  other.send(Req.GET_QUEUE_NUM);
  t.equal(await other.replyU64(5000), 1n, 'another port\'s connection is answered');
  t.ok(performance.now() - started < 2000, 'within 2 s: the control thread is not waiting for the stopped daemon');
  const again = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => again.close());
  again.send(Req.GET_QUEUE_NUM);
  t.equal(await again.replyU64(5000), 1n, 'the port takes a new connection');
  t.ok(await n.stillForward(), 'a and b still forward');
  t.ok(n.vr.alive(), 'vrouter runs');
});
