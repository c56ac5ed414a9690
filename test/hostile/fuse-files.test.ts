// A file on FUSE among a frontend's fds: its daemon answers every close, stat and statfs
// of it, and a frontend that stops the daemon would hold the control thread, every port's
// messages, in the first of them. Such an fd is set aside as it arrives (kept open, never
// used), the frontend is disconnected, and the other ports are served on; a port whose
// frontends made vrouter keep KEPT_FILES_MAX of them refuses every frontend after.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { KEPT_FILES_MAX } from '../../src/vhost/port-endpoint.ts';
import { ftruncate, MAX_FDS_PER_MESSAGE, memfdCreate } from '../../src/sys/libc.ts';
import { adminClient } from '../support/admin-client.ts';
import { memTablePayload, VhostFrontend } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { ackingFrontend, withNeighbours, type Neighbours } from './lib.ts';

const REGION_BYTES = 1 << 20;
/** What the log says after "an fd of a file on" and the file system. */
const WHY = 'where a close, stat or statfs of it may wait for a process outside the kernel \\(a FUSE daemon the frontend chose\\): refused, and kept open unused';

/**
 * A file of a bindfs mount (Debian's bindfs: a FUSE file system that shows a directory
 * again) whose daemon is stopped once the file is open, and vrouter with ports h and g
 * beside a and b. Where the file is opened: `here`, on the mount, in this process's mount
 * namespace (vrouter's); `hidden`, on a mount made in a mount namespace of its own
 * (unshare), through its daemon's root, so that neither this process (the frontend) nor
 * vrouter has the mount in its mountinfo; `overlay`, on an overlay mount whose lower layer
 * is the bindfs mount, read-only (a file opened to write is copied up into the upper
 * layer, here a tmpfs). Everything is undone in one teardown, in this order: the daemon
 * goes on before anything closes a file of it (vrouter keeps its fds open until it stops;
 * this test has its own).
 */
async function fileOfStoppedDaemon(t: Test, where: 'here' | 'hidden' | 'overlay'): Promise<{ fd: number; n: Neighbours }> {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-fuse-'));
  const source = join(dir, 'source');
  const mount = join(dir, 'mount');
  const layers = join(dir, 'layers');
  const merged = join(dir, 'merged');
  for (const d of [source, mount, layers, merged]) mkdirSync(d);
  writeFileSync(join(source, 'guest-ram'), Buffer.alloc(REGION_BYTES));
  // -f keeps the daemon in this process's hands; unshare (util-linux) execs it in a new
  // mount namespace, with the mounts it starts with made private.
  const bindfs = ['bindfs', '-f', source, mount];
  const daemon = where === 'hidden' ? spawn('unshare', ['--mount', ...bindfs], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(bindfs[0], bindfs.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let daemonErr = '';
  daemon.stderr.on('data', (d: Buffer) => (daemonErr += d.toString()));
  const n = await withNeighbours(['h', 'g']);
  let fd = -1;
  t.teardown(async () => {
    if (daemon.pid !== undefined) process.kill(daemon.pid, 'SIGCONT');
    if (fd >= 0) closeSync(fd);
    await n.close();
    if (where === 'overlay') for (const m of [merged, layers]) spawnSync('umount', ['-l', m]);
    if (where !== 'hidden') spawnSync('umount', ['-l', mount]);
    daemon.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const mountedIn = (table: string) => readFileSync(table, 'utf8').split('\n').some((l) => l.split(' ')[4] === mount && l.includes(' - fuse'));
  const table = where === 'hidden' ? `/proc/${daemon.pid}/mountinfo` : '/proc/self/mountinfo';
  await waitFor(`bindfs mounting ${mount} (${daemonErr.trim() || 'no error'})`, () => mountedIn(table) || undefined, 10_000);
  if (where === 'hidden') {
    t.notOk(mountedIn('/proc/self/mountinfo'), 'the mount is not in this process\'s mountinfo, nor in vrouter\'s');
    fd = openSync(`/proc/${daemon.pid}/root${mount}/guest-ram`, 'r+');
  } else if (where === 'overlay') {
    mustRun('mount', ['-t', 'tmpfs', 'layers', layers]);
    for (const d of ['upper', 'work']) mkdirSync(join(layers, d));
    mustRun('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${mount},upperdir=${join(layers, 'upper')},workdir=${join(layers, 'work')}`, merged]);
    fd = openSync(join(merged, 'guest-ram'), 'r');
  } else {
    fd = openSync(join(mount, 'guest-ram'), 'r+');
  }
  process.kill(daemon.pid!, 'SIGSTOP');
  return { fd, n };
}

function mustRun(command: string, args: string[]): void {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
}

/** The file offered as guest memory on port h: refused at once, and every other port served on. */
async function offeredAndRefused(t: Test, fd: number, n: Neighbours, reason: RegExp): Promise<void> {
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0x100000, size: REGION_BYTES, uva: 0x7f0000000000, offset: 0 }]), [fd], VERSION | FLAG_NEED_REPLY);
  t.ok(await fe.closedByPeer(5000), 'the connection is closed, at once');
  await waitFor('the reason in the log', () => /port h: connection closed: protocol error: an fd of a file on /.test(n.vr.stderr()) || undefined);
  t.match(n.vr.stderr(), reason, 'the log says why');

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
}

t.test('a memory file on FUSE whose daemon the frontend stopped', async (t) => {
  const { fd, n } = await fileOfStoppedDaemon(t, 'here');
  await offeredAndRefused(t, fd, n, new RegExp(`an fd of a file on fuse(\\.\\w+)?, ${WHY}`));
});

t.test('the same, mounted in a mount namespace neither vrouter nor the frontend is in', async (t) => {
  // Its type is in no mountinfo vrouter reads: the mount's backing device names it.
  const { fd, n } = await fileOfStoppedDaemon(t, 'hidden');
  await offeredAndRefused(t, fd, n, new RegExp(`an fd of a file on fuse or nfs \\(device 0:\\d+, mounted where neither vrouter nor the frontend sees it\\), ${WHY}`));
});

t.test('the same, read through an overlay mount whose lower layer is the FUSE mount', async (t) => {
  // Its mount is an overlay's: closing the fd flushes the FUSE file below (fstatfs asks the
  // upper layer, a tmpfs, and is answered).
  const { fd, n } = await fileOfStoppedDaemon(t, 'overlay');
  await offeredAndRefused(t, fd, n, new RegExp(`an fd of a file on overlay \\(whose layers may be on FUSE\\), ${WHY}`));
});

t.test('a tmpfs file, mounted in a mount namespace neither vrouter nor the frontend is in', async (t) => {
  // Nothing tells such a file system from an overlay stacked on FUSE without asking it.
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-hidden-'));
  const holder = spawn('unshare', ['--mount', 'sh', '-c', `mount -t tmpfs hidden ${dir} && head -c ${REGION_BYTES} /dev/zero > ${dir}/guest-ram && echo ready && exec sleep 600`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  holder.stdout.on('data', (d: Buffer) => (said += d.toString()));
  holder.stderr.on('data', (d: Buffer) => (said += d.toString()));
  const n = await withNeighbours(['h', 'g']);
  let fd = -1;
  t.teardown(async () => {
    if (fd >= 0) closeSync(fd);
    await n.close();
    holder.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(`a tmpfs mounted in a namespace of its own (${said.trim() || 'nothing said'})`, () => said.includes('ready') || undefined, 10_000);
  fd = openSync(`/proc/${holder.pid}/root${dir}/guest-ram`, 'r+');
  await offeredAndRefused(t, fd, n, new RegExp(`an fd of a file on a file system vrouter cannot name \\(device 0:\\d+, mounted where neither vrouter nor the frontend sees it\\), ${WHY}`));
});

t.test('a memfd is a memory file as ever', async (t) => {
  // A memfd's mount is the kernel's own, in no mountinfo: known by its device.
  const n = await withNeighbours(['h', 'g']);
  t.teardown(() => n.close());
  const fd = memfdCreate('guest-ram');
  t.teardown(() => closeSync(fd));
  ftruncate(fd, REGION_BYTES);
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0x100000, size: REGION_BYTES, uva: 0x7f0000000000, offset: 0 }]), [fd], VERSION | FLAG_NEED_REPLY);
  t.equal(await fe.replyU64(5000), 0n, 'the memory table is taken');
  t.notMatch(n.vr.stderr(), /an fd of a file on/, 'nothing set aside');
});

t.test(`a port whose frontends sent ${KEPT_FILES_MAX} such fds refuses every frontend after`, async (t) => {
  const { fd, n } = await fileOfStoppedDaemon(t, 'here');
  const messages = KEPT_FILES_MAX / MAX_FDS_PER_MESSAGE;
  const regions = Array.from({ length: MAX_FDS_PER_MESSAGE }, (_, k) => ({ gpa: 0x100000 + k * REGION_BYTES, size: REGION_BYTES, uva: 0x7f0000000000 + k * REGION_BYTES, offset: 0 }));
  for (let m = 0; m < messages; m++) {
    const fe = await ackingFrontend(n.vr.sockets.h);
    t.teardown(() => fe.close());
    // The same fd eight times: eight fds on arrival, each kept.
    fe.send(Req.SET_MEM_TABLE, memTablePayload(regions), Array(MAX_FDS_PER_MESSAGE).fill(fd), VERSION | FLAG_NEED_REPLY);
    t.ok(await fe.closedByPeer(5000), `frontend ${m + 1} of ${messages}: closed at once`);
  }
  await waitFor('the port refusing, in the log', () => /port h: refuses every frontend until the port is removed and added again, or vrouter restarts: its frontends sent \d+ fds of files whose close may wait for a FUSE daemon/.test(n.vr.stderr()) || undefined);
  const state = (await adminClient(n.vr).call('GET', '/ports/h')).json as { state: { refusedForGood: string | null } };
  t.match(state.state.refusedForGood, new RegExp(`its frontends sent ${KEPT_FILES_MAX} fds of files whose close may wait for a FUSE daemon`), 'GET /ports/h says why it refuses');

  const next = await VhostFrontend.connect(n.vr.sockets.h);
  t.teardown(() => next.close());
  t.ok(await next.closedByPeer(5000), 'a new frontend on h is closed at once');
  await waitFor('the refusal in the log', () => /port h: refused a frontend: the port refuses every frontend until it is removed and added again/.test(n.vr.stderr()) || undefined);
  const other = await ackingFrontend(n.vr.sockets.g);
  t.teardown(() => other.close());
  other.send(Req.GET_QUEUE_NUM);
  t.equal(await other.replyU64(5000), 1n, 'port g takes frontends');
  t.ok(await n.stillForward(), 'a and b still forward');
});
