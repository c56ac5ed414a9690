// Guest memory files a frontend could shrink under vrouter (a shrunk file under a mapping
// raises SIGBUS and kills the process): refused under memoryPolicy "strict", accepted with
// a warning under "warn"; misaligned regions are refused under either. Every refusal
// leaves the daemon running, holding neither the fd nor a mapping of the file, and the
// other ports forwarding.
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { Req } from '../../src/vhost/protocol.ts';
import { dataplanePids, sparePids, trafficFlows, waitFor } from '../support/traffic.ts';
import { failureAck, memTablePayload, startDevice, VhostFrontend } from '../support/vhost-frontend.ts';
import { ethernetFrame, sendFrame } from '../support/virtio-driver.ts';
import { inflightQueueBytes } from '../../src/virtio/inflight.ts';
import { REPO, type StartedVrouter } from '../support/vrouter-process.ts';
import { ackingFrontend, MAC_B, withNeighbours } from './lib.ts';

const MAC_S = '52:54:00:00:00:05';
const REGION_BYTES = 1 << 20;

/** Offers one region backed by fd; returns the backend's ack (0 = accepted). */
async function offerRegion(path: string, fd: number, region = { gpa: 0x100000, size: REGION_BYTES, uva: 0x7f0000000000, offset: 0 }): Promise<bigint | null> {
  const fe = await ackingFrontend(path);
  try {
    return await fe.request(Req.SET_MEM_TABLE, memTablePayload([region]), [fd]);
  } finally {
    fe.close();
  }
}

/** What vrouter's processes (the supervisor and its data plane) hold of a file: fds and mappings. */
function daemonHolds(vr: StartedVrouter, name: string): { fds: number; maps: number } {
  let fds = 0;
  let maps = 0;
  for (const pid of [vr.proc.pid!, ...dataplanePids(vr.proc.pid!), ...sparePids(vr.proc.pid!)]) {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).includes(name)) fds++;
      } catch {
        // closed while we looked
      }
    }
    maps += readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(name)).length;
  }
  return { fds, maps };
}

function memfd(name: string, sealing: boolean): number {
  const fd = sys.memfdCreate(name, { sealing });
  sys.ftruncate(fd, REGION_BYTES);
  return fd;
}

t.test('guest memory files and the memory policy', async (t) => {
  const n = await withNeighbours(['s', 'w'], { ports: { s: { memoryPolicy: 'strict' }, w: { memoryPolicy: 'warn' } } });
  t.teardown(() => n.close());
  const vr = n.vr;

  const stillForwards = async (t: Test) => {
    t.ok(vr.alive(), 'vrouter still runs');
    t.ok(await n.stillForward(), 'ports a and b still forward both ways');
  };

  await t.test('strict: a memfd made without MFD_ALLOW_SEALING is refused', async (t) => {
    const fd = memfd('unsealable-strict', false);
    t.teardown(() => sys.close(fd));
    t.equal(sys.sealAgainstShrinking(fd), false, 'precondition: the file cannot be sealed');
    t.ok(failureAck(await offerRegion(vr.sockets.s, fd)), 'SET_MEM_TABLE is answered with a failure');
    await waitFor('the refusal in the log', () => /port s: refused SET_MEM_TABLE: region 0: its file cannot be sealed against shrinking/.test(vr.stderr()));
    t.match(vr.stderr(), /region 0: its file cannot be sealed against shrinking .*memoryPolicy "strict"/, 'the log names the region and the reason');
    t.same(daemonHolds(vr, 'unsealable-strict'), { fds: 0, maps: 0 }, 'vrouter kept neither the fd nor a mapping');
    await stillForwards(t);
  });

  await t.test('strict, without REPLY_ACK: the refusal closes the connection', async (t) => {
    const fd = memfd('unsealable-noack', false);
    t.teardown(() => sys.close(fd));
    const fe = await VhostFrontend.connect(vr.sockets.s);
    t.teardown(() => fe.close());
    fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: REGION_BYTES, uva: 0, offset: 0 }]), [fd]);
    t.ok(await fe.closedByPeer(), 'connection closed');
    await waitFor('the reason in the log', () => /port s: connection closed: protocol error: SET_MEM_TABLE: region 0: its file cannot be sealed/.test(vr.stderr()));
    t.same(daemonHolds(vr, 'unsealable-noack'), { fds: 0, maps: 0 }, 'vrouter kept neither the fd nor a mapping');
    await stillForwards(t);
  });

  await t.test('strict: a regular file on a disk file system is refused', async (t) => {
    // .scratch is git-ignored and lies in the checkout, on a disk rather than tmpfs.
    const dir = join(REPO, '.scratch');
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `guest-ram-${process.pid}`);
    const fd = openSync(path, 'w+');
    t.teardown(() => (closeSync(fd), rmSync(path, { force: true })));
    sys.ftruncate(fd, REGION_BYTES);
    const fsType = sys.fileSystemType(fd);
    t.ok(fsType !== sys.TMPFS_MAGIC && fsType !== sys.HUGETLBFS_MAGIC, `precondition: ${dir} is not on tmpfs or hugetlbfs (f_type 0x${fsType.toString(16)})`);
    t.ok(failureAck(await offerRegion(vr.sockets.s, fd)), 'SET_MEM_TABLE is answered with a failure');
    await waitFor('the refusal in the log', () => /port s: refused SET_MEM_TABLE: region 0: its file is on .*not tmpfs or hugetlbfs/.test(vr.stderr()));
    t.match(vr.stderr(), new RegExp(`region 0: its file is on .*\\(f_type 0x${fsType.toString(16)}\\), not tmpfs or hugetlbfs; memoryPolicy "strict" refuses it`), 'the log names the file system');
    t.same(daemonHolds(vr, path), { fds: 0, maps: 0 }, 'vrouter kept neither the fd nor a mapping');
    await stillForwards(t);
  });

  await t.test('strict: a sealable memfd is accepted, sealed, and the device forwards', async (t) => {
    const s = await startDevice(vr.sockets.s);
    t.teardown(() => s.close());
    t.equal(sys.fileSystemType(s.ram.fd), sys.TMPFS_MAGIC, 'a memfd reports tmpfs');
    t.throws(() => sys.ftruncate(s.ram.fd, 4096), { code: 'EPERM' }, 'the frontend can no longer shrink it');
    t.equal(await trafficFlows(s, n.b, 20, MAC_S, MAC_B), 20, 'frames from the strict port reach b');
    t.notMatch(vr.stderr(), /port s: SET_MEM_TABLE: region/, 'no warning for it');
    await stillForwards(t);
  });

  await t.test('warn: the unsealable memfd is accepted and a warning is logged', async (t) => {
    const fd = memfd('unsealable-warn', false);
    t.teardown(() => sys.close(fd));
    const fe = await ackingFrontend(vr.sockets.w);
    t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0x100000, size: REGION_BYTES, uva: 0x7f0000000000, offset: 0 }]), [fd]), 0n, 'SET_MEM_TABLE is accepted');
    const warning = /warn vhost: port w: SET_MEM_TABLE: region 0: its file cannot be sealed against shrinking .*: a frontend that truncates it would crash vrouter/;
    await waitFor('the warning in the log', () => warning.test(vr.stderr()));
    t.match(vr.stderr(), warning, 'the warning names the region and the risk');
    t.same(daemonHolds(vr, 'unsealable-warn'), { fds: 1, maps: 1 }, 'mapped once, and one fd kept (the supervisor keeps it for a data plane that restarts)');
    fe.close();
    await waitFor('the mapping and the fd to go with the connection', () => (daemonHolds(vr, 'unsealable-warn').maps === 0 && daemonHolds(vr, 'unsealable-warn').fds === 0) || undefined);
    await stillForwards(t);
  });

  await t.test('warn: a regular file on a disk file system is accepted with a warning', async (t) => {
    const path = join(REPO, '.scratch', `guest-ram-warn-${process.pid}`);
    mkdirSync(join(REPO, '.scratch'), { recursive: true });
    const fd = openSync(path, 'w+');
    t.teardown(() => (closeSync(fd), rmSync(path, { force: true })));
    sys.ftruncate(fd, REGION_BYTES);
    t.equal(await offerRegion(vr.sockets.w, fd), 0n, 'SET_MEM_TABLE is accepted');
    const warning = /warn vhost: port w: SET_MEM_TABLE: region 0: its file is on .*not tmpfs or hugetlbfs\n/;
    await waitFor('the warning in the log', () => warning.test(vr.stderr()));
    t.match(vr.stderr(), warning, 'the file system is named');
    await stillForwards(t);
  });

  await t.test('misaligned regions are refused with the field at fault', async (t) => {
    const fd = memfd('misaligned', true);
    t.teardown(() => sys.close(fd));
    const cases: [string, { gpa: number; size: number; uva: number; offset: number }, RegExp][] = [
      ['a size of 4096 + 1', { gpa: 0x100000, size: 4097, uva: 0x7f0000000000, offset: 0 }, /region 0: size 0x1001 is not a multiple of 4096/],
      ['an mmap offset of 100', { gpa: 0x100000, size: 0x10000, uva: 0x7f0000000000, offset: 100 }, /region 0: mmap offset 0x64 is not a multiple of 4096/],
      ['a guest address off a page', { gpa: 0x100800, size: 0x10000, uva: 0x7f0000000000, offset: 0 }, /region 0: guest physical address 0x100800 is not a multiple of 4096/],
      ['a user address off a page', { gpa: 0x100000, size: 0x10000, uva: 0x7f0000000010, offset: 0 }, /region 0: user address 0x7f0000000010 is not a multiple of 4096/],
    ];
    for (const [what, region, reason] of cases) {
      t.ok(failureAck(await offerRegion(vr.sockets.w, fd, region)), `${what}: refused`);
      await waitFor(`${what} in the log`, () => reason.test(vr.stderr()));
      t.match(vr.stderr(), reason, `${what}: the log says why`);
    }
    t.same(daemonHolds(vr, 'misaligned'), { fds: 0, maps: 0 }, 'vrouter kept neither the fd nor a mapping');
    await stillForwards(t);
  });


  await t.test('warn: an unsealable inflight buffer shrunk under the data plane: its port is found and quarantined', async (t) => {
    const desc = { mmapSize: 2 * inflightQueueBytes(256), mmapOffset: 0, numQueues: 2, queueSize: 256 };
    const fd = sys.memfdCreate('unsealable-inflight', { sealing: false });
    sys.ftruncate(fd, desc.mmapSize);
    const w = await startDevice(vr.sockets.w, { inflight: true, inflightBuffer: { fd, desc, bytes: new Uint8Array(0) } });
    t.teardown(() => w.close());
    const warning = /port w: SET_INFLIGHT_FD: the inflight buffer: its file cannot be sealed against shrinking/;
    await waitFor('the warning in the log', () => warning.test(vr.stderr()) || undefined).catch(() => undefined);
    t.match(vr.stderr(), warning, 'accepted with a warning');
    sys.ftruncate(fd, 0);
    // The PMD marks the chain it takes in the buffer: past the end of the file now (SIGBUS).
    sendFrame(w.tx, ethernetFrame(MAC_B, MAC_S, 60, 1));
    w.kick();
    const culprit = /port w: its frontend shrank its guest memory under the data plane \(the inflight buffer's file shrank to 0 bytes; \d+ are mapped\)/;
    await waitFor('the culprit named', () => culprit.test(vr.stderr()) || undefined, 10_000);
    t.match(vr.stderr(), /the data-plane process died \(signal SIGBUS\)/, 'the data plane died of SIGBUS');
    t.match(vr.stderr(), culprit, 'port w is named, with what its frontend did');
    t.match(vr.stderr(), /port w: quarantined for \d+ s/, 'and quarantined');
    await stillForwards(t);
  });
});
