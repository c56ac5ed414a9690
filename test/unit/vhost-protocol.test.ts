// The vhost-user control path of a running vrouter against a frontend written in the
// tests: a full handshake and traffic between two ports, GET_VRING_BASE, reconnects, and
// malformed or hostile messages that must close one connection and disturb nothing else.
import t from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { encodeMessage, memTablePayload, startDevice, u32pair, u64, VhostFrontend, vringAddrPayload, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { trafficFlows, waitFor } from '../support/traffic.ts';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';

t.test('vrouter as a vhost-user backend, driven by the test frontend', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());

  let a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());

  await t.test('guest memory is sealed: the frontend can no longer shrink it under vrouter', async (t) => {
    t.throws(() => sys.ftruncate(a.ram.fd, 4096), { code: 'EPERM' }, 'ftruncate to a smaller size is refused');
    t.notMatch(vr.stderr(), /cannot be sealed/);
  });

  await t.test('frames cross the bridge with their bytes intact', async (t) => {
    const rx = postRxBuffer(b.rx, 2048);
    const frame = ethernetFrame(MAC_B, MAC_A, 200, 42);
    sendFrame(a.tx, frame);
    const used = await waitFor('a frame on b', () => b.rx.takeUsed()[0]);
    t.same(used, { id: rx.head, len: NET_HDR_LEN + frame.length });
    t.same(b.ram.bytes.slice(rx.off + NET_HDR_LEN, rx.off + NET_HDR_LEN + frame.length), frame);
    t.equal(await trafficFlows(b, a, 50, MAC_B, MAC_A), 50, '50 frames b to a');
    const stats = await vr.stats();
    t.equal(stats.a.rx_packets, 1);
    t.equal(stats.b.tx_packets, 1);
    t.equal(stats.b.rx_packets, 50);
    t.equal(stats.a.tx_packets, 50);
  });

  await t.test('GET_VRING_BASE stops the queue and reports where it stopped', async (t) => {
    a.frontend.send(Req.GET_VRING_BASE, u32pair(1, 0));
    const r = await a.frontend.reply();
    t.ok(r, 'answered');
    const dv = new DataView(r!.payload.buffer);
    t.equal(dv.getUint32(0, true), 1, 'vring 1');
    t.equal(dv.getUint32(4, true), a.tx.availIdx, 'base = every chain the guest made available');
    sendFrame(a.tx, ethernetFrame(MAC_B, MAC_A, 60));
    await new Promise((r) => setTimeout(r, 200));
    t.equal(a.tx.takeUsed().length, 1 + 0, 'the chain before the stop was used; none after (only the earlier one)');
  });

  await t.test('malformed messages close only their own connection', async (t) => {
    a.close();
    const cases: [string, (fe: VhostFrontend) => void][] = [
      ['a payload larger than any message', (fe) => fe.sendRaw(encodeMessage(Req.SET_FEATURES, new Uint8Array(5000).subarray(0, 0)).map((v, i) => (i === 8 ? 0x88 : i === 9 ? 0x13 : v)))],
      ['a reply flag from the frontend', (fe) => fe.send(Req.GET_FEATURES, new Uint8Array(0), [], VERSION | 0x4)],
      ['a wrong protocol version', (fe) => fe.send(Req.GET_FEATURES, new Uint8Array(0), [], 0x2)],
      ['a SET_FEATURES of the wrong size', (fe) => fe.send(Req.SET_FEATURES, new Uint8Array(3))],
      ['a request number nobody knows', (fe) => fe.send(99, u64(0))],
      ['a vring index out of range', (fe) => fe.send(Req.SET_VRING_NUM, u32pair(7, 256))],
      ['an fd on a message that takes none', (fe) => fe.send(Req.SET_OWNER, new Uint8Array(0), [b.callFds[0]])],
      ['a memory table with fewer fds than regions', (fe) => fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 4096, uva: 0, offset: 0 }, { gpa: 8192, size: 4096, uva: 8192, offset: 0 }]), [b.ram.fd])],
      ['a memory region past the end of its file', (fe) => fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 64 << 20, uva: 0, offset: 0 }]), [b.ram.fd])],
      ['a memory region whose size overflows', (fe) => fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 2 ** 52, size: 2 ** 52, uva: 0, offset: 0 }]), [b.ram.fd])],
      ['nine fds in one message', (fe) => fe.send(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 4096, uva: 0, offset: 0 }]), Array(9).fill(b.ram.fd))],
    ];
    for (const [what, send] of cases) {
      const fe = await VhostFrontend.connect(vr.sockets.a);
      send(fe);
      t.ok(await fe.closedByPeer(), `${what}: connection closed`);
      fe.close();
    }
    t.ok(vr.alive(), 'vrouter still runs');
    t.match(vr.stderr(), /connection closed: protocol error: SET_FEATURES: payload of 3 bytes, expected 8/, 'the reason is logged');
    t.equal(await trafficFlows(b, b, 0, MAC_B, MAC_A), 0);
  });

  await t.test('with REPLY_ACK a refused request is answered, and the connection stays', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    t.teardown(() => fe.close());
    fe.send(Req.GET_PROTOCOL_FEATURES);
    await fe.replyU64();
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(1n << 3n));
    t.not(await fe.request(Req.SET_VRING_NUM, u32pair(9, 256)), 0n, 'vring 9 of 2: failure');
    t.not(await fe.request(Req.SET_VRING_NUM, u32pair(0, 300)), 0n, 'size 300: failure');
    t.not(await fe.request(Req.SET_FEATURES, u64(1n << 63n)), 0n, 'a feature never offered: failure');
    t.not(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 64 << 20, uva: 0, offset: 0 }]), [b.ram.fd]), 0n, 'region larger than its file: failure');
    t.not(await fe.request(77, u64(0)), 0n, 'unknown request: failure');
    const logged = vringAddrPayload(0, 0x1000, 0x2000, 0x3000);
    logged[4] = 1; // VHOST_VRING_F_LOG: dirty-page logging, never offered
    t.not(await fe.request(Req.SET_VRING_ADDR, logged), 0n, 'a vring address asking for logging: failure');
    fe.send(Req.GET_QUEUE_NUM);
    t.equal(await fe.replyU64(), 1n, 'the connection still answers');
  });

  await t.test('a vring outside guest memory is not started; the port recovers', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    fe.send(Req.GET_PROTOCOL_FEATURES);
    await fe.replyU64();
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(1n << 3n));
    const kick = sys.eventfd();
    t.teardown(() => sys.close(kick));
    t.equal(await fe.request(Req.SET_FEATURES, u64((1n << 32n) | (1n << 30n))), 0n);
    t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: b.ram.size, uva: 0x10000000, offset: 0 }]), [b.ram.fd]), 0n);
    t.equal(await fe.request(Req.SET_VRING_NUM, u32pair(1, 256)), 0n);
    t.equal(await fe.request(Req.SET_VRING_ADDR, vringAddrPayload(1, 0x90000000, 0x90010000, 0x90020000)), 0n);
    t.equal(await fe.request(Req.SET_VRING_KICK, u64(1), [kick]), 0n);
    t.equal(await fe.request(Req.SET_VRING_ENABLE, u32pair(1, 1)), 0n);
    await waitFor('the log line', () => /vring 1 not started: descriptor table at 0x90000000 .* outside guest memory/.test(vr.stderr()));
    fe.close();
    a = await startDevice(vr.sockets.a);
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a new connection on the same socket forwards again');
    t.ok(vr.alive());
  });

  await t.test('a second frontend on a busy port is refused', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    t.ok(await fe.closedByPeer(), 'closed at once');
    fe.close();
    t.equal(await trafficFlows(a, b, 10, MAC_A, MAC_B), 10, 'the first one carries on');
    a.close();
  });

  await t.test('a frontend that sends half a message and vanishes', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    fe.sendRaw(encodeMessage(Req.SET_FEATURES, u64(0), VERSION | FLAG_NEED_REPLY).subarray(0, 15));
    fe.close();
    a = await startDevice(vr.sockets.a);
    t.equal(await trafficFlows(a, b, 10, MAC_A, MAC_B), 10, 'the port works for the next frontend');
    a.close();
  });

  const code = await vr.stop();
  t.equal(code, 0, 'clean exit on SIGTERM');
});
