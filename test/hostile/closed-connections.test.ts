// Commands of a closed connection never outlive it, and fds are closed only after the PMD
// let go of them: frontends that hang up in the middle of their set-up, over and over,
// leave no fd, mapping or queue behind; a kick fd replaced on a running vring is the one
// the PMD waits on from then on.
import t from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { memTablePayload, PROTOCOL_MQ_REPLY_ACK_STATUS, startDevice, u32pair, u64, vringAddrPayload } from '../support/vhost-frontend.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { processResources, waitFor } from '../support/traffic.ts';
import { ackingFrontend, MAC_A, withNeighbours } from './lib.ts';

const MAC_H = '52:54:00:00:00:0c';
const FEATURES = (1n << 32n) | (1n << 30n) | (1n << 15n) | (1n << 29n);

t.test('frontends that hang up in the middle of their set-up', async (t) => {
  const n = await withNeighbours(['h', 'g']);
  t.teardown(() => n.close());
  const ram = new GuestRam();
  t.teardown(() => ram.close());
  const q = [new DriverQueue(ram, 256, { eventIdx: true }), new DriverQueue(ram, 256, { eventIdx: true })];
  const ask = VERSION | FLAG_NEED_REPLY;
  // Each round stops one message later, without waiting for any answer: the set-up is cut
  // at every point, while vrouter is still carrying out what came before.
  const setUp: ((fe: Awaited<ReturnType<typeof ackingFrontend>>, fds: number[]) => void)[] = [
    (fe) => fe.send(Req.SET_FEATURES, u64(FEATURES), [], ask),
    (fe) => fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 }]), [ram.fd], ask),
    ...[0, 1].flatMap((i) => {
      const l = q[i].layout();
      return [
        (fe: Awaited<ReturnType<typeof ackingFrontend>>) => fe.send(Req.SET_VRING_NUM, u32pair(i, 256), [], ask),
        (fe: Awaited<ReturnType<typeof ackingFrontend>>) => fe.send(Req.SET_VRING_ADDR, vringAddrPayload(i, l.descAddr, l.usedAddr, l.availAddr), [], ask),
        (fe: Awaited<ReturnType<typeof ackingFrontend>>, fds: number[]) => fe.send(Req.SET_VRING_CALL, u64(i), [fds[2 * i]], ask),
        (fe: Awaited<ReturnType<typeof ackingFrontend>>, fds: number[]) => fe.send(Req.SET_VRING_KICK, u64(i), [fds[2 * i + 1]], ask),
        (fe: Awaited<ReturnType<typeof ackingFrontend>>) => fe.send(Req.SET_VRING_ENABLE, u32pair(i, 1), [], ask),
      ];
    }),
    (fe) => fe.send(Req.GET_VRING_BASE, u32pair(1, 0), [], ask),
  ];
  for (let round = 0; round < 3; round++) {
    for (let cut = 1; cut <= setUp.length; cut++) {
      const fe = await ackingFrontend(n.vr.sockets[cut % 2 ? 'h' : 'g']);
      const fds = [sys.eventfd(), sys.eventfd(), sys.eventfd(), sys.eventfd()];
      for (const step of setUp.slice(0, cut)) step(fe, fds);
      fe.close();
      sys.closeAll(fds);
      // A well-behaved device comes and goes on the other port meanwhile, taking the fd
      // numbers the closed connection held: they must never be used for it.
      if (cut % 4 === 0) {
        const d = await startDevice(n.vr.sockets[cut % 2 ? 'g' : 'h']);
        d.close();
      }
    }
  }
  await waitFor('fds and mappings given back', () => {
    const now = processResources(n.vr.proc.pid!);
    return now.fds <= n.baseline.fds && now.guestMappings === n.baseline.guestMappings;
  }, 5000);
  t.pass('vrouter holds the fds and mappings it held before');
  t.equal(processResources(n.vr.proc.pid!).threads, n.baseline.threads, 'and the same threads');
  t.ok(n.vr.alive(), 'vrouter runs');
  t.ok(await n.stillForward(), 'a and b still forward');
  const h = await startDevice(n.vr.sockets.h);
  t.teardown(() => h.close());
  for (let i = 0; i < 8; i++) postRxBuffer(h.rx, 2048);
  for (let i = 0; i < 8; i++) sendFrame(n.a.tx, ethernetFrame(MAC_H, MAC_A, 100, i));
  n.a.kick();
  let got = 0;
  await waitFor('frames on h', () => (got += h.rx.takeUsed().length) >= 8 || undefined);
  t.equal(got, 8, 'and the next frontend on h gets a working port');
});

t.test('a kick fd replaced on a running vring is the one the PMD waits on', async (t) => {
  // Long idle sleeps: only a kick on the fd the PMD polls wakes it at once.
  const n = await withNeighbours(['h'], { pmd: { cores: [1], sleepMaxUs: 100_000 } });
  t.teardown(() => n.close());
  const h = await startDevice(n.vr.sockets.h);
  t.teardown(() => h.close());
  const kick = sys.eventfd();
  t.teardown(() => sys.closeAll([kick]));
  t.equal(await h.frontend.request(Req.SET_VRING_KICK, u64(1), [kick]), 0n, 'new kick fd on the running TX vring');
  const latencies: number[] = [];
  for (let i = 0; i < 5; i++) {
    postRxBuffer(n.a.rx, 2048);
    await new Promise((r) => setTimeout(r, 300)); // the PMD goes to sleep
    const start = performance.now();
    sendFrame(h.tx, ethernetFrame(MAC_A, MAC_H, 60, i));
    sys.eventfdSignal(kick);
    while (n.a.rx.takeUsed().length === 0) {
      if (performance.now() - start > 1000) throw new Error('the frame did not arrive within 1 s');
      await new Promise((r) => setImmediate(r));
    }
    latencies.push(performance.now() - start);
  }
  latencies.sort((x, y) => x - y);
  t.ok(latencies[2] < 30, `the new kick wakes the PMD: median ${latencies[2].toFixed(1)} ms (sleeps last up to 100 ms)`);
});

t.test('a reset asked for with NEED_REPLY is answered (the reset forgets REPLY_ACK, not the question)', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const fe = await ackingFrontend(n.vr.sockets.h);
  t.teardown(() => fe.close());
  for (const request of [Req.RESET_DEVICE, Req.RESET_OWNER]) {
    t.equal(await fe.request(request, new Uint8Array(0)), 0n, `${request === Req.RESET_DEVICE ? 'RESET_DEVICE' : 'RESET_OWNER'} answered`);
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_MQ_REPLY_ACK_STATUS));
  }
  t.ok(await n.stillForward());
});
