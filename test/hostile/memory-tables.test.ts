// Memory tables that cannot be applied leave nothing behind: a PMD applies a table all or
// nothing, the PMDs of a port all take it or all keep the old one, guest memory is unmapped
// only once no PMD views it, sizes are bounded, and a large table is viewed a window per
// poll round while the PMD keeps forwarding.
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, u64Payload, VERSION } from '../../src/vhost/protocol.ts';
import { memTablePayload, startDevice, u32pair, u64, vringAddrPayload, type VhostFrontend } from '../support/vhost-frontend.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { dataplanePids, processResources, waitFor } from '../support/traffic.ts';
import { adminClient } from '../support/admin-client.ts';
import { ackingFrontend, MAC_A, withNeighbours } from './lib.ts';
import { windowSpans } from '../../src/virtio/guest-memory.ts';

const MAC_H = '52:54:00:00:00:0c';
const FEATURES = (1n << 32n) | (1n << 30n) | (1n << 15n) | (1n << 29n); // VERSION_1, PROTOCOL_FEATURES, MRG_RXBUF, EVENT_IDX

/** Frames from a to h's RX queue `rx`: how many arrive. */
async function framesToH(n: Awaited<ReturnType<typeof withNeighbours>>, rx: DriverQueue, count: number): Promise<number> {
  for (let i = 0; i < count; i++) postRxBuffer(rx, 2048);
  for (let i = 0; i < count; i++) sendFrame(n.a.tx, ethernetFrame(MAC_H, MAC_A, 100, i));
  n.a.kick();
  let got = 0;
  await waitFor('frames on h', () => (got += rx.takeUsed().length) >= count || undefined).catch(() => undefined);
  return got;
}

/** One vring set up and enabled, its kick and call eventfds returned for closing. */
async function setupVring(fe: VhostFrontend, index: number, q: DriverQueue): Promise<number[]> {
  const fds = [sys.eventfd(), sys.eventfd()];
  const l = q.layout();
  const acks = [
    await fe.request(Req.SET_VRING_NUM, u32pair(index, q.size)),
    await fe.request(Req.SET_VRING_BASE, u32pair(index, 0)),
    await fe.request(Req.SET_VRING_ADDR, vringAddrPayload(index, l.descAddr, l.usedAddr, l.availAddr)),
    await fe.request(Req.SET_VRING_CALL, u64(index), [fds[1]]),
    await fe.request(Req.SET_VRING_KICK, u64(index), [fds[0]]),
    await fe.request(Req.SET_VRING_ENABLE, u32pair(index, 1)),
  ];
  if (acks.some((a) => a !== 0n)) throw new Error(`vring ${index} set-up refused: ${acks.join(',')}`);
  return fds;
}

t.test('a table one running vring does not fit is refused; the old table stays in force', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const h = await startDevice(n.vr.sockets.h);
  t.teardown(() => h.close());
  t.equal(await framesToH(n, h.rx, 16), 16, 'h receives before');
  // Same file, the frontend's addresses moved: the rings are no longer in guest memory.
  const moved = memTablePayload([{ gpa: h.ram.gpaBase, size: h.ram.size, uva: h.ram.uvaBase + 2 ** 32, offset: 0 }]);
  t.equal(await h.frontend.request(Req.SET_MEM_TABLE, moved, [h.ram.fd]), 1n, 'refused');
  await waitFor('the reason', () => /vring 0 does not fit the new memory table/.test(n.vr.stderr()));
  t.equal(await framesToH(n, h.rx, 16), 16, 'h still receives, on the old table');
  t.ok(await n.stillForward());
});

t.test('two PMDs: one refuses the table, the other goes back to the old one', async (t) => {
  const n = await withNeighbours(['h'], { pmd: { cores: [0, 1] }, ports: { h: { queues: 2 } } });
  t.teardown(() => n.close());
  const ram = new GuestRam(8 << 20);
  const fe = await ackingFrontend(n.vr.sockets.h);
  const fds: number[] = [];
  t.teardown(() => {
    fe.close();
    ram.close();
    sys.closeAll(fds);
  });
  t.equal(await fe.request(Req.SET_FEATURES, u64Payload(FEATURES | (1n << 22n))), 0n, 'features with MQ');
  t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 }]), [ram.fd]), 0n);
  const queues = [new DriverQueue(ram, 256, { eventIdx: true }), new DriverQueue(ram, 256, { eventIdx: true })];
  ram.alloc(4 << 20); // the second pair's rings sit past the first 4 MiB
  queues.push(new DriverQueue(ram, 256, { eventIdx: true }), new DriverQueue(ram, 256, { eventIdx: true }));
  for (const [index, q] of queues.entries()) fds.push(...(await setupVring(fe, index, q)));
  await waitFor('four vrings running', () => (n.vr.stderr().match(/port h: vring \d .* running/g) ?? []).length >= 4);
  // Queue pair 0 is on pmd0, pair 1 on pmd1 (round-robin after a and b): only pmd1 refuses.
  const half = memTablePayload([{ gpa: ram.gpaBase, size: 4 << 20, uva: ram.uvaBase, offset: 0 }]);
  t.equal(await fe.request(Req.SET_MEM_TABLE, half, [ram.fd]), 1n, 'refused');
  await waitFor('the reason', () => /vring [23] does not fit the new memory table/.test(n.vr.stderr()));
  t.equal(await framesToH(n, queues[0], 16), 16, 'queue pair 0 still receives, on the old table');
  t.ok(await n.stillForward());
});

t.test('size limits: a 4 TiB sparse table is refused before anything is mapped', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fd = sys.memfdCreate('sparse');
  t.teardown(() => sys.closeAll([fd]));
  sys.ftruncate(fd, 2 ** 42);
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  const started = Date.now();
  t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 2 ** 42, uva: 0, offset: 0 }]), [fd]), 1n, 'refused');
  t.ok(Date.now() - started < 1000, `answered in ${Date.now() - started} ms`);
  await waitFor('the reason', () => /more than the 256 GiB a port may map/.test(n.vr.stderr()));
  t.equal(processResources(n.vr.proc.pid!).guestMappings, n.baseline.guestMappings, 'nothing mapped');
  t.ok(await n.stillForward());
});

t.test('large tables are charged by the windows a PMD views: swapping them, the port waits for its share', async (t) => {
  // A 256 GiB table is 257 views of a PMD (milliseconds each): charged as one command, a
  // frontend swapping two such tables would keep its PMDs viewing for as long as it likes.
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const files = [sys.memfdCreate('big-0'), sys.memfdCreate('big-1')];
  t.teardown(() => sys.closeAll(files));
  for (const fd of files) sys.ftruncate(fd, 256 * 2 ** 30);
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  // The second waits for the first's cost (6,425 tokens of a 4,000 burst, at 1,000 a
  // second: about 2.4 s), then for its own 257 views.
  for (const fd of files) t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 256 * 2 ** 30, uva: 0, offset: 0 }]), [fd], 10_000), 0n, 'a 256 GiB table applied');
  const ports = (await adminClient(n.vr).call('GET', '/ports')).json as { name: string; state: { controlThrottled: number } }[];
  const waits = ports.find((p) => p.name === 'h')!.state.controlThrottled;
  t.ok(waits > 0, `h waited for its share of the control thread (${waits} times)`);
  t.ok(await n.stillForward());
});

/** h, its frontend having sent three 256 GiB memory tables at once (REPLY_ACK), a and b forwarding. */
async function threeTablesQueued(t: Test) {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const files = [0, 1, 2].map((i) => sys.memfdCreate(`big-${i}`));
  t.teardown(() => sys.closeAll(files));
  for (const fd of files) sys.ftruncate(fd, 256 * 2 ** 30);
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  for (const fd of files) fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 256 * 2 ** 30, uva: 0, offset: 0 }]), [fd], VERSION | FLAG_NEED_REPLY);
  return { n, fe, files };
}

t.test('large tables queued behind one another are each carried out within the port\'s budget, not at once', async (t) => {
  // Read while the budget held a message each (1 token), they would all be carried out as
  // fast as the PMD views them (about 1.3 s each) though each costs 6,425 tokens.
  const { n, fe, files } = await threeTablesQueued(t);
  const sent = Date.now();
  const at: number[] = [];
  for (let i = 0; i < files.length; i++) {
    t.equal(await fe.replyU64(20_000), 0n, `table ${i + 1} applied`);
    at.push(Date.now() - sent);
  }
  // The burst (4,000) and 1,000 a second pay for the first two (12,850) after 8.9 s at the
  // earliest: the third is carried out no sooner.
  t.ok(at[2] >= 8500, `the third applied ${at[2]} ms after they were sent (${at.join(', ')} ms)`);
  t.ok(await n.stillForward());
});

t.test('a port whose queued table waits for its budget does not hold up a hand-over: the other ports resume at once', async (t) => {
  // After a data-plane death every PMD waits for all ports' queues before it takes frames
  // (2 s at most): h's resync is not to wait behind its table.
  const { n, fe } = await threeTablesQueued(t);
  for (let i = 0; i < 2; i++) t.equal(await fe.replyU64(20_000), 0n, `table ${i + 1} applied`);
  // The third waits for its budget now, about 5 s more.
  const [dataplane] = dataplanePids(n.vr.proc.pid!);
  const killed = Date.now();
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare taking over', () => /the spare data plane \(pid \d+\) took over/.test(n.vr.stderr()), 5000);
  t.ok(await n.stillForward(1), 'a and b forward again');
  const resumed = Date.now() - killed;
  t.ok(resumed < 1900, `${resumed} ms after the death, not the 2 s the PMDs wait at most for every port's queues`);
  t.equal(await fe.replyU64(20_000), 0n, 'the third table applied in its turn');
});

t.test('a 64 GiB table is mapped and viewed at once while the PMD keeps forwarding, and unmapped at the end', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fd = sys.memfdCreate('big');
  t.teardown(() => sys.closeAll([fd]));
  sys.ftruncate(fd, 64 * 2 ** 30);
  const fe = await ackingFrontend(n.vr.sockets.h);
  const started = Date.now();
  fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 64 * 2 ** 30, uva: 0, offset: 0 }]), [fd], 0x1 | 0x8);
  // Both at once: the table's windows cost the data plane an mmap each and a PMD a typed
  // array each (one a poll round), so it may well be applied before the frames are through.
  const since = <T>(p: Promise<T>) => p.then((value) => ({ value, ms: Date.now() - started }));
  const [forwarded, applied] = await Promise.all([since(n.stillForward(16)), since(fe.replyU64())]);
  t.equal(applied.value, 0n, 'the table is applied');
  t.ok(forwarded.value, `a and b forwarded meanwhile (through after ${forwarded.ms} ms; the table applied after ${applied.ms} ms)`);
  t.ok(applied.ms < 1000, 'the table applied within a second');
  const windows = windowSpans(64 * 2 ** 30).length;
  t.equal(processResources(n.vr.proc.pid!).guestMappings, n.baseline.guestMappings + windows, `mapped once: a mapping for each of its ${windows} windows`);
  fe.close();
  await waitFor('the mappings released', () => processResources(n.vr.proc.pid!).guestMappings === n.baseline.guestMappings);
  t.ok(await n.stillForward());
});
