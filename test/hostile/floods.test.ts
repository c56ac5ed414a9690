// Frontends that flood the control thread: replies they never read, messages (with fds)
// as fast as the socket takes them, requests refused by the thousand, messages and
// connections beyond the port's share. Each is cut off or slowed on its own port; the
// daemon, its log and the other ports carry on.
import t from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { encodeMessage, memTablePayload, startDevice, u32pair, u64, type VhostFrontend } from '../support/vhost-frontend.ts';
import { processResources, waitFor } from '../support/traffic.ts';
import { adminClient } from '../support/admin-client.ts';
import { ackingFrontend, withNeighbours } from './lib.ts';

/** Sends until the daemon hangs up or `count` messages went; EAGAIN waits a moment. */
async function flood(fe: VhostFrontend, count: number, message: Uint8Array, fds: number[] = []): Promise<{ sent: number; closed: boolean }> {
  let sent = 0;
  while (sent < count) {
    try {
      fe.sendRaw(message, fds);
      sent++;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK') return { sent, closed: true };
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  return { sent, closed: false };
}

t.test('a frontend that never reads its replies is disconnected', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  // Refused (vring 9 of 2) and answered with a failure each time: 20 bytes per reply.
  const result = await flood(fe, 50_000, encodeMessage(Req.SET_VRING_NUM, u32pair(9, 256), VERSION | FLAG_NEED_REPLY));
  t.ok(result.sent < 50_000 || (await fe.closedByPeer(5000)), `disconnected after ${result.sent} requests`);
  await waitFor('the reason', () => /does not read its replies/.test(n.vr.stderr()), 5000);
  t.ok(n.vr.alive(), 'vrouter runs');
  t.ok(await n.stillForward(), 'a and b still forward');
});

t.test('messages with fds as fast as the socket takes them', async (t) => {
  const n = await withNeighbours(['h', 'g']);
  t.teardown(() => n.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  const ram = sys.memfdCreate('flood');
  const err = sys.eventfd();
  t.teardown(() => sys.closeAll([ram, err]));
  sys.ftruncate(ram, 1 << 20);
  let peakFds = 0;
  const sampler = setInterval(() => (peakFds = Math.max(peakFds, processResources(n.vr.proc.pid!).fds)), 5);
  const eightRegions = memTablePayload(Array.from({ length: 8 }, (_, i) => ({ gpa: i << 20, size: 1 << 20, uva: i << 20, offset: 0 })));
  const flooding = Promise.all([
    flood(fe, 4000, encodeMessage(Req.SET_VRING_ERR, u64(0)), [err]),
    flood(fe, 1000, encodeMessage(Req.SET_MEM_TABLE, eightRegions, VERSION | FLAG_NEED_REPLY), Array(8).fill(ram)),
  ]);
  // Meanwhile another frontend sets up its device on another port, and a and b forward.
  const started = performance.now();
  const g = await startDevice(n.vr.sockets.g);
  const setUpMs = performance.now() - started;
  g.close();
  t.ok(await n.stillForward(), 'a and b forward during the flood');
  await flooding;
  clearInterval(sampler);
  t.ok(setUpMs < 3000, `a device on another port was set up in ${setUpMs.toFixed(0)} ms during the flood`);
  t.ok(peakFds < n.baseline.fds + 150, `vrouter held at most ${peakFds} fds (${n.baseline.fds} before): the backlog is bounded`);
  fe.close();
  await waitFor('fds given back', () => processResources(n.vr.proc.pid!).fds <= n.baseline.fds, 10000);
  t.pass('and gives them all back');
  t.ok(n.vr.alive(), 'vrouter runs');
});

t.test('thousands of refused requests do not flood the log', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  const before = n.vr.stderr().length;
  const refusals = 2000;
  let answered = 0;
  for (let sent = 0; sent < refusals; sent += 100) {
    for (let i = 0; i < 100; i++) fe.send(Req.SET_VRING_NUM, u32pair(9, 256), [], VERSION | FLAG_NEED_REPLY);
    for (let i = 0; i < 100; i++) if ((await fe.replyU64()) === 1n) answered++;
  }
  t.equal(answered, refusals, 'every request was answered with a failure');
  fe.send(Req.SET_FEATURES, u64(1n << 63n), [], VERSION | FLAG_NEED_REPLY);
  t.equal(await fe.replyU64(), 1n);
  await waitFor('a refusal of another kind, logged', () => /refused SET_FEATURES: features 0x8000000000000000 were not offered/.test(n.vr.stderr().slice(before)));
  const log = n.vr.stderr().slice(before);
  const logged = (log.match(/refused SET_VRING_NUM: vring 9/g) ?? []).length;
  t.ok(logged < 100, `${logged} of ${refusals} refusals of one kind logged`);
  t.ok(await n.stillForward(), 'a and b still forward');
  fe.send(Req.SET_VRING_NUM, u32pair(9, 256), [], VERSION | FLAG_NEED_REPLY);
  await fe.replyU64();
  await new Promise((r) => setTimeout(r, 300));
  fe.send(Req.SET_VRING_NUM, u32pair(9, 256), [], VERSION | FLAG_NEED_REPLY);
  await fe.replyU64();
  await waitFor('the count of lines not shown', () => /refused SET_VRING_NUM: vring 9 .*\(and \d+ more like it, not shown\)/.test(n.vr.stderr().slice(before)));
  t.pass('a later line of the kind says how many were not shown');
});

t.test("a frontend faster than its port's share of the control thread waits, and loses nothing", async (t) => {
  const n = await withNeighbours(['h', 'g']);
  t.teardown(() => n.close());
  const api = adminClient(n.vr);
  // Messages: the port's burst (4000) is taken at once, the rest at 1000 a second.
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  const requests = 6000;
  let answered = 0;
  let otherSetUpMs = Infinity;
  const started = performance.now();
  for (let sent = 0; sent < requests; sent += 100) {
    for (let i = 0; i < 100; i++) fe.send(Req.GET_FEATURES);
    for (let i = 0; i < 100; i++) if ((await fe.replyU64()) !== null) answered++;
    if (sent === 4500) {
      // Meanwhile a device on another port sets up at its own pace.
      const from = performance.now();
      const g = await startDevice(n.vr.sockets.g);
      otherSetUpMs = performance.now() - from;
      g.close();
    }
  }
  const floodMs = performance.now() - started;
  t.equal(answered, requests, 'every request was answered');
  t.ok(floodMs >= 1900, `at the port's pace: ${requests} requests in ${floodMs.toFixed(0)} ms (after the burst of 4000, 1000 a second)`);
  t.ok(otherSetUpMs < 1000, `a device on another port was set up in ${otherSetUpMs.toFixed(0)} ms meanwhile`);
  t.ok(await n.stillForward(), 'a and b forward');
  fe.close();

  // Connections: each counts as 100 messages and its end (a reset on the PMD) as 50 more;
  // the messages above spent the bucket.
  const connections = 20;
  const from = performance.now();
  let handshakes = 0;
  for (let i = 0; i < connections; i++) {
    const c = await ackingFrontend(n.vr.sockets.h);
    c.send(Req.GET_FEATURES);
    if ((await c.replyU64()) !== null) handshakes++;
    c.close();
  }
  const connectMs = performance.now() - from;
  t.equal(handshakes, connections, 'every connection was served');
  t.ok(connectMs >= 1500, `at the port's pace: ${connections} connections in ${connectMs.toFixed(0)} ms`);

  // Memory tables: each is mapped in the data plane and viewed by the PMD (a command, 50
  // more), so a frontend that swaps its table in a loop gets about 20 a second.
  const tables = 40;
  const ram = sys.memfdCreate('tables');
  t.teardown(() => sys.closeAll([ram]));
  sys.ftruncate(ram, 1 << 20);
  const swapper = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => swapper.close());
  const table = memTablePayload([{ gpa: 0, size: 1 << 20, uva: 0x7f0000000000, offset: 0 }]);
  const fromTables = performance.now();
  let taken = 0;
  for (let i = 0; i < tables; i++) if ((await swapper.request(Req.SET_MEM_TABLE, table, [ram])) === 0n) taken++;
  const tablesMs = performance.now() - fromTables;
  swapper.close();
  t.equal(taken, tables, 'every memory table was taken');
  t.ok(tablesMs >= 1500, `at the port's pace: ${tables} memory tables in ${tablesMs.toFixed(0)} ms`);
  t.ok(await n.stillForward(), 'a and b forward');
  const port = (await api.call('GET', '/ports/h')).json as { state: { controlThrottled: number } };
  t.ok(port.state.controlThrottled > 0, `GET /ports/h counts the waits (${port.state.controlThrottled})`);
  t.match(n.vr.stderr(), /port h: its frontend connects or sends faster than the port's share of the control thread/, 'the log says why');
  t.notMatch(n.vr.stderr(), /port g: its frontend connects or sends faster/, 'and names no other port');
  t.ok(n.vr.alive(), 'vrouter runs');
});
