// The vhost-user control path of a running vrouter against a frontend written in the
// tests: a full handshake and traffic between two ports, GET_VRING_BASE, reconnects, and
// malformed or hostile messages that must close one connection and disturb nothing else.
import t, { type Test } from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, MAX_MEM_SLOTS, Req, VERSION } from '../../src/vhost/protocol.ts';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import {
  encodeMessage,
  failureAck,
  memRegionPayload,
  memTablePayload,
  PluggedRam,
  PROTOCOL_MEM_SLOTS,
  startDevice,
  startPackedDevice,
  u32pair,
  u64,
  VhostFrontend,
  vringAddrPayload,
} from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { processResources, trafficFlows, waitFor } from '../support/traffic.ts';
import { adminClient } from '../support/admin-client.ts';

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
    // The control thread's log line reaches stderr through the supervisor, maybe after the close.
    const reason = /connection closed: protocol error: SET_FEATURES: payload of 3 bytes, expected 8/;
    await waitFor('the reason logged', () => reason.test(vr.stderr()) || undefined, 3000).catch(() => undefined);
    t.match(vr.stderr(), reason, 'the reason is logged');
    // b's connection was not disturbed: it still forwards to a new frontend on a.
    a = await startDevice(vr.sockets.a);
    t.equal(await trafficFlows(b, a, 20, MAC_B, MAC_A), 20, 'the other port still forwards');
    // Gone before the next test connects its own frontend to a.
    a.close();
    const admin = adminClient(vr);
    await waitFor('the new frontend on a gone', async () => (await admin.call('GET', '/ports/a')).json?.state?.connected === false || undefined, 3000);
  });

  await t.test('with REPLY_ACK a refused request is answered, and the connection stays', async (t) => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    t.teardown(() => fe.close());
    fe.send(Req.GET_PROTOCOL_FEATURES);
    await fe.replyU64();
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(1n << 3n));
    t.ok(failureAck(await fe.request(Req.SET_VRING_NUM, u32pair(9, 256))), 'vring 9 of 2: failure');
    t.ok(failureAck(await fe.request(Req.SET_VRING_NUM, u32pair(0, 300))), 'size 300: failure');
    t.ok(failureAck(await fe.request(Req.SET_FEATURES, u64(1n << 63n))), 'a feature never offered: failure');
    t.ok(failureAck(await fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 64 << 20, uva: 0, offset: 0 }]), [b.ram.fd])), 'region larger than its file: failure');
    t.ok(failureAck(await fe.request(77, u64(0))), 'unknown request: failure');
    const logged = vringAddrPayload(0, 0x1000, 0x2000, 0x3000);
    logged[4] = 1; // VHOST_VRING_F_LOG: dirty-page logging, never offered
    t.ok(failureAck(await fe.request(Req.SET_VRING_ADDR, logged)), 'a vring address asking for logging: failure');
    // Each request whose protocol feature was not negotiated (only REPLY_ACK was), and one
    // never offered that carries an fd (request-rules.ts).
    const gated: [string, number, Uint8Array, number[]][] = [
      ['GET_MAX_MEM_SLOTS', Req.GET_MAX_MEM_SLOTS, new Uint8Array(0), []],
      ['ADD_MEM_REG', Req.ADD_MEM_REG, memRegionPayload({ gpa: 0x80000000, size: 4096, uva: 0x7f2000000000, offset: 0 }), [b.ram.fd]],
      ['NET_SET_MTU', Req.NET_SET_MTU, u64(1500n), []],
      ['GET_INFLIGHT_FD', Req.GET_INFLIGHT_FD, new Uint8Array(24), []],
      ['SET_STATUS', Req.SET_STATUS, u64(0n), []],
    ];
    for (const [name, request, payload, fds] of gated) {
      t.ok(failureAck(await fe.request(request, payload, fds)), `${name} without its protocol feature: failure`);
      await waitFor(`${name}'s refusal logged`, () => new RegExp(`refused ${name}: its protocol feature was not negotiated`).test(vr.stderr()) || undefined, 3000);
    }
    t.ok(failureAck(await fe.request(Req.SET_LOG_FD, new Uint8Array(0), [b.ram.fd])), 'SET_LOG_FD (LOG_SHMFD never offered), with its fd: failure');
    await waitFor("SET_LOG_FD's refusal logged", () => /refused SET_LOG_FD: not supported by this backend \(never offered\)/.test(vr.stderr()) || undefined, 3000);
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

t.test('packed rings: a port on packed rings and one on split rings, each as it negotiated', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'c'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  // 100 descriptors: a packed ring need not be a power of 2.
  const a = await startPackedDevice(vr.sockets.a, { queueSize: 100 });
  t.teardown(() => a.close());
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  t.match(vr.stderr(), /port a: vring 1 \(guest tx\) running, size 100, base 32768/, 'a: a packed ring of 100, from index 0 of wrap 1');

  await t.test('frames both ways, over several laps of the packed ring', async (t) => {
    for (let round = 0; round < 5; round++) {
      t.equal(await trafficFlows(a, b, 50, MAC_A, MAC_B), 50, `round ${round}: 50 frames packed -> split`);
      t.equal(await trafficFlows(b, a, 50, MAC_B, MAC_A), 50, `round ${round}: 50 frames split -> packed`);
      a.tx.takeUsed();
    }
    t.same([a.rx.nextUsed, a.rx.usedWrap], [50, 1], 'a\'s RX ring went round twice: its driver reads used descriptors at 50 of wrap 1');
    const stats = await vr.stats();
    t.same([stats.a.rx_packets, stats.a.tx_packets, stats.a.queue_errors], [250, 250, 0]);
  });

  await t.test('GET_VRING_BASE: position and wrap counter, the used one (the same) in the upper half', async (t) => {
    a.frontend.send(Req.GET_VRING_BASE, u32pair(1, 0));
    const r = await a.frontend.reply();
    t.ok(r, 'answered');
    const dv = new DataView(r!.payload.buffer);
    const position = a.tx.availIdx;
    t.equal(position, 50 | 0x8000, 'the driver is at 50 of wrap 1 after 250 one-descriptor chains (two laps)');
    t.equal(dv.getUint32(4, true), (position | (position << 16)) >>> 0, 'bits 0-15 where the device takes next, 16-31 where it writes next');
  });

  await t.test('inflight tracking is refused once packed rings are negotiated', async (t) => {
    const { inflightDescPayload } = await import('../../src/vhost/protocol.ts');
    const { PROTOCOL_INFLIGHT_SHMFD, PROTOCOL_MQ_REPLY_ACK_STATUS } = await import('../support/vhost-frontend.ts');
    const fe = await VhostFrontend.connect(vr.sockets.c);
    t.teardown(() => fe.close());
    fe.send(Req.SET_OWNER);
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_INFLIGHT_SHMFD | PROTOCOL_MQ_REPLY_ACK_STATUS));
    fe.send(Req.SET_FEATURES, u64((1n << 32n) | (1n << 30n) | (1n << 34n)));
    fe.send(Req.GET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 0, mmapOffset: 0, numQueues: 2, queueSize: 256 }), [], VERSION | 0x8);
    t.ok(failureAck(await fe.replyU64()), 'refused');
    // The log comes from another thread than the reply: it may follow it.
    await waitFor('the reason in the log', () => /GET_INFLIGHT_FD: inflight tracking is for split rings only/.test(vr.stderr()) || undefined);
    t.pass('the log says why');
  });
});

t.test('memory slots: regions added and removed one at a time (CONFIGURE_MEM_SLOTS)', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  const pid = vr.proc.pid!;
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  const withoutA = processResources(pid);
  // As QEMU does once the feature is negotiated: the boot RAM comes in an ADD_MEM_REG.
  const a = await startDevice(vr.sockets.a, { memorySlots: true });
  let aConnected = true;
  t.teardown(() => aConnected && a.close());
  const fe = a.frontend;
  const plugged = new PluggedRam(1 << 20, 0x40000000, 0x7f1000000000);
  const tiny = sys.memfdCreate('tiny-slots');
  sys.ftruncate(tiny, MAX_MEM_SLOTS * 4096);
  t.teardown(() => {
    plugged.close();
    sys.closeAll([tiny]);
  });
  /** Whether the daemon logged a line matching re (its stderr arrives a little after the reply). */
  const logged = (re: RegExp) => waitFor(`a log line ${re}`, () => re.test(vr.stderr())).then(() => true, () => false);
  /** The frontend still answers, and the daemon holds what it held. */
  const unchanged = async (t: Test, held: ReturnType<typeof processResources>, what: string) => {
    fe.send(Req.GET_QUEUE_NUM);
    t.equal(await fe.replyU64(), 1n, `${what}: the connection still answers`);
    const now = processResources(pid);
    t.equal(now.guestMappings, held.guestMappings, `${what}: no mapping left behind`);
    t.equal(now.fds, held.fds, `${what}: no fd left behind`);
  };

  await t.test('offered and negotiated; the vrings run in a region that came by ADD_MEM_REG', async (t) => {
    fe.send(Req.GET_PROTOCOL_FEATURES);
    t.equal(((await fe.replyU64())! & PROTOCOL_MEM_SLOTS) !== 0n, true, 'CONFIGURE_MEM_SLOTS offered');
    fe.send(Req.GET_MAX_MEM_SLOTS);
    t.equal(await fe.replyU64(), BigInt(MAX_MEM_SLOTS), `GET_MAX_MEM_SLOTS: ${MAX_MEM_SLOTS}`);
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a to b');
    t.equal(await trafficFlows(b, a, 20, MAC_B, MAC_A), 20, 'b to a');
    t.ok(await logged(/port a: memory region added \(guest 0x100000 \+0x400000, user 0x7f0000000000\): 1 region\(s\)/), 'logged');
  });

  await t.test('a region added: frames are taken from it and written into it', async (t) => {
    const before = processResources(pid);
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]), 0n, 'added');
    t.equal(processResources(pid).guestMappings, before.guestMappings + 1, 'mapped once');
    // Into a: an RX buffer in the plugged RAM.
    const rxAddr = plugged.alloc(2048);
    const rxHead = a.rx.addChain([{ addr: rxAddr, len: 2048, write: true }]);
    a.rx.makeAvailable(rxHead);
    const inbound = ethernetFrame(MAC_A, MAC_B, 300, 7);
    sendFrame(b.tx, inbound);
    b.kick();
    const used = await waitFor('a frame in the plugged RAM', () => a.rx.takeUsed()[0]);
    t.same(used, { id: rxHead, len: NET_HDR_LEN + inbound.length });
    const at = rxAddr - plugged.gpaBase + NET_HDR_LEN;
    t.same(plugged.bytes.slice(at, at + inbound.length), inbound, 'its bytes, intact');
    // Out of a: a TX chain in the plugged RAM.
    const outbound = ethernetFrame(MAC_B, MAC_A, 400, 9);
    const txAddr = plugged.alloc(NET_HDR_LEN + outbound.length);
    const off = txAddr - plugged.gpaBase;
    plugged.bytes.fill(0, off, off + NET_HDR_LEN);
    plugged.bytes.set(outbound, off + NET_HDR_LEN);
    const rx = postRxBuffer(b.rx, 2048);
    a.tx.makeAvailable(a.tx.addChain([{ addr: txAddr, len: NET_HDR_LEN + outbound.length }]));
    a.kick();
    await waitFor('the frame on b', () => b.rx.takeUsed().length > 0 || undefined);
    t.same(b.ram.bytes.slice(rx.off + NET_HDR_LEN, rx.off + NET_HDR_LEN + outbound.length), outbound, 'taken from the plugged RAM');
  });

  await t.test('refusals are answered with a failure and leave the table as it was', async (t) => {
    const held = processResources(pid);
    const other = sys.memfdCreate('other');
    sys.ftruncate(other, 1 << 20);
    const bad = sys.eventfd();
    t.teardown(() => sys.closeAll([other, bad]));
    const region = (gpa: number, uva: number, size = 4096) => memRegionPayload({ gpa, size, uva, offset: 0 });
    t.equal(await fe.request(Req.ADD_MEM_REG, region(a.ram.gpaBase + 4096, 0x7f2000000000), [other]), 1n, 'overlapping the boot RAM in guest physical addresses');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, plugged.uvaBase + 8192), [other]), 1n, 'overlapping the plugged RAM in user addresses');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, 0x7f2000000000)), 1n, 'a region with no fd');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, 0x7f2000000000), [other, other]), 1n, 'a region with two fds');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, 0x7f2000000000), [bad]), 1n, 'an eventfd for a region');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, 0x7f2000000000, 2 << 20), [other]), 1n, 'a region past the end of its file');
    t.equal(await fe.request(Req.ADD_MEM_REG, region(0x80000000, 0x7f2000000000, 4097), [other]), 1n, 'a region not whole pages');
    t.equal(await fe.request(Req.ADD_MEM_REG, u64(0), [other]), 1n, 'a payload of the wrong size');
    t.equal(await fe.request(Req.REM_MEM_REG, region(plugged.gpaBase, plugged.uvaBase)), 1n, 'removing a region not in force (a size that differs)');
    t.equal(await fe.request(Req.REM_MEM_REG, region(0x90000000, 0x7f3000000000), [other]), 1n, 'removing a region never added, with an fd');
    const boot = { gpa: a.ram.gpaBase, size: a.ram.size, uva: a.ram.uvaBase, offset: 0 };
    t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(boot), [a.ram.fd]), 1n, 'removing the region the running vrings are in');
    await waitFor('the reason', () => /vring \d does not fit the new memory table/.test(vr.stderr()));
    await unchanged(t, held, 'after ten refusals');
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a still forwards');
    t.ok(await logged(/refused ADD_MEM_REG: the region overlaps region 0 in force .* in guest physical addresses/), 'logged');
    t.ok(await logged(/refused ADD_MEM_REG: the region overlaps region 1 in force .* in user addresses/), 'logged');
    t.ok(await logged(/refused ADD_MEM_REG: 0 fds, expected 1/), 'logged');
    t.ok(await logged(/refused REM_MEM_REG: no region in force is guest 0x40000000 \+0x1000/), 'logged');
  });

  await t.test('the plugged region removed: unmapped once the PMD switched', async (t) => {
    const held = processResources(pid);
    t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]), 0n, 'removed');
    // The data plane is told to unmap it as the answer goes: it may still be at it.
    const gone = () => processResources(pid).guestMappings === held.guestMappings - 1;
    await waitFor('its mapping gone', gone, 2000).catch(() => undefined);
    t.equal(processResources(pid).guestMappings, held.guestMappings - 1, 'its mapping is gone');
    t.ok(await logged(/port a: memory region removed \(guest 0x40000000 \+0x100000, user 0x7f1000000000\): 1 region\(s\)/), 'logged');
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a still forwards');
    t.equal(await trafficFlows(b, a, 20, MAC_B, MAC_A), 20, 'and receives');
  });

  await t.test('SET_MEM_TABLE after slots were added replaces them all', async (t) => {
    const held = processResources(pid);
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]), 0n, 'plugged again');
    t.equal(processResources(pid).guestMappings, held.guestMappings + 1);
    const boot = { gpa: a.ram.gpaBase, size: a.ram.size, uva: a.ram.uvaBase, offset: 0 };
    t.equal(await fe.request(Req.SET_MEM_TABLE, memTablePayload([boot]), [a.ram.fd]), 0n, 'a table of the boot RAM alone');
    // The data-plane process lets its views of the old table go once told (a message after
    // the PMDs switched), which may be just after the reply.
    const settled = await waitFor('the old mappings released', () => processResources(pid).guestMappings === held.guestMappings || undefined).catch(() => false);
    t.ok(settled, `the plugged region and the old boot mapping are unmapped, the new one mapped (${processResources(pid).guestMappings} mappings, ${held.guestMappings} expected)`);
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a forwards on the new table');
    t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload(plugged.slot())), 1n, 'the plugged region is no longer in force');
  });

  await t.test(`up to ${MAX_MEM_SLOTS} slots; each removal gives its mapping and fd back`, async (t) => {
    const held = processResources(pid);
    const free = MAX_MEM_SLOTS - 1; // the boot RAM is in force
    const slot = (i: number) => ({ gpa: 0x80000000 + i * 8192, size: 4096, uva: 0x7f2000000000 + i * 8192, offset: i * 4096 });
    for (let i = 0; i < free; i++) t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(slot(i)), [tiny]), 0n, `slot ${i + 2} added`);
    t.equal(processResources(pid).guestMappings, held.guestMappings + free, `${free} more mappings`);
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(slot(free)), [tiny]), 1n, `slot ${MAX_MEM_SLOTS + 1}: refused`);
    t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'a forwards with every slot in use');
    // QEMU sends the region's fd with REM_MEM_REG, and the offset of the removal is ignored.
    for (let i = 0; i < free; i++) t.equal(await fe.request(Req.REM_MEM_REG, memRegionPayload({ ...slot(i), offset: 0 }), [tiny]), 0n, `slot ${i + 2} removed`);
    await unchanged(t, held, 'after they all went');
  });

  await t.test('a disconnect frees every added region', async (t) => {
    t.equal(await fe.request(Req.ADD_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]), 0n, 'plugged again');
    a.close();
    aConnected = false;
    await waitFor('everything of a given back', () => {
      const now = processResources(pid);
      return now.guestMappings === withoutA.guestMappings && now.fds <= withoutA.fds;
    });
    t.pass('mappings and fds as before a connected');
  });

  await t.test('without the feature negotiated, the messages are refused', async (t) => {
    const other = await VhostFrontend.connect(vr.sockets.a);
    t.teardown(() => other.close());
    other.send(Req.GET_PROTOCOL_FEATURES);
    await other.replyU64();
    other.send(Req.SET_PROTOCOL_FEATURES, u64(1n << 3n));
    t.equal(await other.request(Req.ADD_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]), 1n, 'ADD_MEM_REG: failure');
    t.equal(await other.request(Req.GET_MAX_MEM_SLOTS, new Uint8Array(0)), 1n, 'GET_MAX_MEM_SLOTS: failure');
    other.send(Req.ADD_MEM_REG, memRegionPayload(plugged.slot()), [plugged.fd]);
    t.ok(await other.closedByPeer(), 'without NEED_REPLY, a refusal closes the connection');
    await waitFor('fds given back', () => processResources(pid).fds <= withoutA.fds);
  });
  t.ok(vr.alive());
});
