// Memory regions added and removed one at a time (CONFIGURE_MEM_SLOTS) by a frontend that
// means harm: refusals close the connection (or are answered, with REPLY_ACK), regions are
// unmapped only once no PMD views them, hang-ups while a region is being added leave
// nothing mapped, and the other ports keep forwarding throughout.
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as sys from '../../src/sys/libc.ts';
import { MAX_MEM_SLOTS, Req } from '../../src/vhost/protocol.ts';
import { memRegionPayload, PluggedRam, PROTOCOL_MEM_SLOTS, PROTOCOL_MQ_REPLY_ACK_STATUS, startDevice, u64, VhostFrontend } from '../support/vhost-frontend.ts';
import { dataplanePids, processResources, trafficFlows, waitFor } from '../support/traffic.ts';
import { MAC_A, pluggingGuest, withNeighbours, type Neighbours } from './lib.ts';

const MAC_H = '52:54:00:00:00:0c';
const BOOT = { gpa: 0x100000, size: 1 << 20, uva: 0x7f0000000000, offset: 0 };

/** A frontend that negotiated CONFIGURE_MEM_SLOTS, with or without REPLY_ACK. */
async function slotsFrontend(path: string, replyAck: boolean): Promise<VhostFrontend> {
  const fe = await VhostFrontend.connect(path);
  fe.send(Req.GET_PROTOCOL_FEATURES);
  await fe.replyU64();
  fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_MEM_SLOTS | (replyAck ? PROTOCOL_MQ_REPLY_ACK_STATUS : 0n)));
  return fe;
}

async function nothingLeft(n: Neighbours): Promise<boolean> {
  await waitFor('fds and mappings given back', () => {
    const now = processResources(n.vr.proc.pid!);
    return now.fds <= n.baseline.fds && now.guestMappings === n.baseline.guestMappings;
  }, 10000);
  return true;
}

t.test('refusals without REPLY_ACK close the connection and leave nothing behind', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const ram = new PluggedRam(BOOT.size, BOOT.gpa, BOOT.uva);
  const other = new PluggedRam(1 << 20, 0x40000000, 0x7f1000000000);
  const unsealed = sys.memfdCreate('unsealed', { sealing: false });
  sys.ftruncate(unsealed, 1 << 20);
  t.teardown(() => {
    ram.close();
    other.close();
    sys.closeAll([unsealed]);
  });
  const cases: [string, (fe: VhostFrontend) => void][] = [
    ['a region overlapping one in force', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload({ ...other.slot(), gpa: BOOT.gpa + 4096 }), [other.fd])],
    ['the first half of the region in force', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload({ ...BOOT, size: BOOT.size / 2 }), [ram.fd])],
    ['a region with no fd', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload(other.slot()))],
    ['a region with eight fds', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload(other.slot()), Array(8).fill(other.fd))],
    ['a region past the end of its file', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload({ ...other.slot(), offset: 4096 }), [other.fd])],
    ['a region whose size overflows', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload({ gpa: 2 ** 52, size: 2 ** 52, uva: 0, offset: 0 }), [other.fd])],
    ['a payload of 39 bytes', (fe) => fe.send(Req.ADD_MEM_REG, memRegionPayload(other.slot()).subarray(0, 39), [other.fd])],
    ['the removal of a region not in force', (fe) => fe.send(Req.REM_MEM_REG, memRegionPayload(other.slot()), [other.fd])],
    ['a removal with two fds', (fe) => fe.send(Req.REM_MEM_REG, memRegionPayload(BOOT), [ram.fd, ram.fd])],
    ['the removal of half a region', (fe) => fe.send(Req.REM_MEM_REG, memRegionPayload({ ...BOOT, size: BOOT.size / 2 }))],
  ];
  for (const [what, send] of cases) {
    const fe = await slotsFrontend(n.vr.sockets.h, false);
    fe.send(Req.ADD_MEM_REG, memRegionPayload(BOOT), [ram.fd]);
    send(fe);
    t.ok(await fe.closedByPeer(), `${what}: connection closed`);
    fe.close();
  }
  await waitFor('the reasons', () => /protocol error: ADD_MEM_REG: the region overlaps region 0 in force/.test(n.vr.stderr()));
  await waitFor('the reasons', () => /protocol error: REM_MEM_REG: no region in force is guest 0x40000000/.test(n.vr.stderr()));
  t.ok(n.vr.alive(), 'vrouter still runs');
  t.ok(await n.stillForward(), 'a and b still forward');
  t.ok(await nothingLeft(n), 'no fd or mapping left behind');
});

t.test('strict memory policy: an added region the frontend could shrink is refused', async (t) => {
  const n = await withNeighbours(['s'], { ports: { s: { memoryPolicy: 'strict' } } });
  t.teardown(() => n.close());
  const unsealed = sys.memfdCreate('unsealed', { sealing: false });
  sys.ftruncate(unsealed, 1 << 20);
  t.teardown(() => sys.closeAll([unsealed]));
  const fe = await slotsFrontend(n.vr.sockets.s, true);
  t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(BOOT), [unsealed]), 1n, 'refused');
  await waitFor('the reason', () => /refused ADD_MEM_REG: the region: its file cannot be sealed against shrinking.* memoryPolicy "strict" refuses it/.test(n.vr.stderr()));
  t.equal(sys.ftruncate(unsealed, 4096), undefined, 'the frontend still owns its file');
  fe.close();
  t.ok(await nothingLeft(n), 'neither its fd nor a mapping kept');
});

t.test(`all ${MAX_MEM_SLOTS} slots, then a hang-up: every region is unmapped`, async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const file = sys.memfdCreate('slots');
  sys.ftruncate(file, MAX_MEM_SLOTS * 4096);
  t.teardown(() => sys.closeAll([file]));
  const fe = await slotsFrontend(n.vr.sockets.h, true);
  for (let i = 0; i < MAX_MEM_SLOTS; i++) {
    fe.send(Req.ADD_MEM_REG, memRegionPayload({ gpa: i * 8192, size: 4096, uva: 0x7f0000000000 + i * 8192, offset: i * 4096 }), [file], 0x1 | 0x8);
  }
  for (let i = 0; i < MAX_MEM_SLOTS; i++) t.equal(await fe.replyU64(), 0n, `slot ${i + 1}`);
  t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload({ gpa: 0x100000000, size: 4096, uva: 0x7f1000000000, offset: 0 }), [file]), 1n, 'one more: refused');
  t.equal(processResources(n.vr.proc.pid!).guestMappings, n.baseline.guestMappings + MAX_MEM_SLOTS, `${MAX_MEM_SLOTS} mappings`);
  fe.close();
  t.ok(await nothingLeft(n), 'all unmapped after the hang-up');
  t.ok(await n.stillForward());
});

t.test('regions far into their file take their own size of address space, not their offset', async (t) => {
  // Mapped from the file's start, 4 KiB at 4, 8, ... 32 TiB would take 144 TiB of the data
  // plane's address space: more than a process has, shared by every port and PMD.
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const file = sys.memfdCreate('sparse');
  sys.ftruncate(file, 2 ** 46);
  t.teardown(() => sys.closeAll([file]));
  const [dataplane] = dataplanePids(n.vr.proc.pid!);
  const vmSize = () => Number(readFileSync(`/proc/${dataplane}/status`, 'utf8').match(/VmSize:\s+(\d+)/)![1]) * 1024;
  const before = vmSize();
  const fe = await slotsFrontend(n.vr.sockets.h, true);
  t.teardown(() => fe.close());
  for (let k = 1; k <= 8; k++) {
    const offset = k * 2 ** 42 - 4096;
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload({ gpa: k * 2 ** 30, size: 4096, uva: 0x7f0000000000 + k * 2 ** 30, offset }), [file]), 0n, `4 KiB at ${k * 4} TiB: added`);
  }
  await waitFor('the mappings', () => processResources(n.vr.proc.pid!).guestMappings >= n.baseline.guestMappings + 8 || undefined, 5000);
  const grown = vmSize() - before;
  t.ok(grown < 2 ** 30, `the data plane's address space grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);
  t.ok(await n.stillForward());
});

t.test('a hang-up while a PMD views an added 64 GiB region leaves nothing mapped', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const big = sys.memfdCreate('big');
  sys.ftruncate(big, 64 * 2 ** 30);
  t.teardown(() => sys.closeAll([big]));
  for (const delayMs of [0, 5, 50]) {
    const h = await startDevice(n.vr.sockets.h, { memorySlots: true });
    h.frontend.send(Req.ADD_MEM_REG, memRegionPayload({ gpa: 2 ** 36, size: 64 * 2 ** 30, uva: 0x100000000000, offset: 0 }), [big], 0x1 | 0x8);
    await new Promise((r) => setTimeout(r, delayMs));
    h.close();
  }
  t.ok(await nothingLeft(n), 'every mapping given back');
  t.ok(await n.stillForward());
});

t.test('plugging and unplugging in a loop while h forwards; its own rings cannot be unplugged', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const { h, dimm } = await pluggingGuest(t, n);
  const fe = h.frontend;
  const withH = processResources(n.vr.proc.pid!);
  let forwarded = 0;
  for (let round = 0; round < 25; round++) {
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n);
    forwarded += await trafficFlows(n.a, h, 8, MAC_A, MAC_H);
    t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n);
    forwarded += await trafficFlows(h, n.a, 8, MAC_H, MAC_A);
  }
  t.equal(forwarded, 25 * 16, 'every frame arrived, whichever table was in force');
  // QEMU's vhost device per queue pair each add the same region: one mapping, removed by the last.
  t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'added');
  t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'added again');
  t.equal(processResources(n.vr.proc.pid!).guestMappings, withH.guestMappings + 1, 'mapped once');
  t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'removed once');
  t.equal(processResources(n.vr.proc.pid!).guestMappings, withH.guestMappings + 1, 'still mapped for the other adder');
  t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'removed twice');
  const boot = { gpa: h.ram.gpaBase, size: h.ram.size, uva: h.ram.uvaBase, offset: 0 };
  t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(boot), [h.ram.fd]), 1n, 'the region of the running rings: refused');
  t.equal(await trafficFlows(n.a, h, 16, MAC_A, MAC_H), 16, 'h still receives, on the table in force');
  const now = processResources(n.vr.proc.pid!);
  t.equal(now.guestMappings, withH.guestMappings, 'no mapping left by 25 plug-unplug rounds');
  t.equal(now.fds, withH.fds, 'no fd left');
  t.ok(await n.stillForward());
});
