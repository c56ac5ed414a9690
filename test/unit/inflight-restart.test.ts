// INFLIGHT_SHMFD against the vrouter daemon, with a test frontend that keeps its rings and
// its inflight buffer while the whole of vrouter is killed and another started: the chains
// the dead vrouter had taken and not returned are forwarded by the new one, once, even
// though the frontend hands it a base past them. (QEMU uses the buffer for block devices,
// not virtio-net: no real frontend of vrouter's exercises it.)
import t from 'tap';
import { inflightQueueBytes, OFF_DESC_NUM, OFF_USED_IDX, OFF_VERSION } from '../../src/virtio/inflight.ts';
import { waitFor } from '../support/traffic.ts';
import { failureAck, reattachDevice, startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const MAC = { a: '02:00:00:00:00:0a', b: '02:00:00:00:00:0b' };
const NET_HDR = 12;
const QUEUE = 256;

/** A frame from a to b carrying its sequence number in its first two payload bytes. */
function numbered(seq: number): Uint8Array {
  const frame = ethernetFrame(MAC.b, MAC.a, 100, seq);
  frame[14] = seq >> 8;
  frame[15] = seq & 0xff;
  return frame;
}

/** Receives on b: the sequence numbers of the frames its RX ring got, in order. */
function receiver(b: VirtioNetDevice) {
  const bufferAt = new Map<number, number>();
  const seen: number[] = [];
  return {
    post(n: number) {
      for (let i = 0; i < n; i++) {
        const { head, off } = postRxBuffer(b.rx, 2048);
        bufferAt.set(head, off);
      }
    },
    collect(): number[] {
      for (const used of b.rx.takeUsed()) {
        const at = bufferAt.get(used.id)! + NET_HDR;
        seen.push((b.ram.bytes[at + 14] << 8) | b.ram.bytes[at + 15]);
      }
      return seen;
    },
  };
}

t.test('a whole-vrouter restart: chains in flight are forwarded by the next vrouter, once', async (t) => {
  const config = bridgeConfig(['a', 'b']);
  const first = await startVrouter(config);
  t.teardown(() => first.stop());
  const a = await startDevice(first.sockets.a, { inflight: true });
  const b = await startDevice(first.sockets.b);
  // The devices as last attached (a reattached device shares its memory and fds).
  const live = [a, b];
  t.teardown(() => live.forEach((d) => d.close()));
  t.ok(a.inflight, 'vrouter gave a an inflight buffer (GET_INFLIGHT_FD)');
  const perQueue = inflightQueueBytes(QUEUE);
  t.equal(a.inflight!.desc.mmapSize, 2 * perQueue, 'one area per vring');
  const txRecord = new DataView(a.inflight!.bytes.buffer, a.inflight!.bytes.byteOffset + perQueue, perQueue);
  const rx = receiver(b);
  rx.post(64);

  for (let seq = 0; seq < 10; seq++) sendFrame(a.tx, numbered(seq));
  a.kick();
  await waitFor('10 frames at b', () => rx.collect().length >= 10 || undefined, 5000);
  t.equal(txRecord.getUint16(OFF_VERSION, true), 1, "a's TX record is version 1");
  t.equal(txRecord.getUint16(OFF_DESC_NUM, true), QUEUE, 'for a queue of 256');
  t.equal(txRecord.getUint16(OFF_USED_IDX, true), a.tx.usedIdx(), 'its used_idx follows the ring');
  const marks = () => Array.from({ length: QUEUE }, (_, h) => a.inflight!.bytes[perQueue + 16 + 16 * h]).filter((m) => m !== 0).length;
  t.equal(marks(), 0, 'nothing marked between bursts');

  // vrouter dies whole; meanwhile a queues four more frames, and its record says the
  // first two were taken and not returned, as a vrouter killed mid-burst leaves it.
  first.proc.kill('SIGKILL');
  await waitFor('the first vrouter gone', () => !first.alive() || undefined, 5000);
  const heads = [10, 11, 12, 13].map((seq) => sendFrame(a.tx, numbered(seq)));
  heads.slice(0, 2).forEach((head, i) => {
    a.inflight!.bytes[perQueue + 16 + 16 * head] = 1;
    txRecord.setUint32(16 + 16 * head + 8, 1000 + i, true);
  });

  const second = await startVrouter(config);
  t.teardown(() => second.stop());
  // b first (resuming from its used ring, as QEMU does), so that it is there to receive;
  // then a, which believes the dead vrouter had taken up to 12 (the base it hands over).
  const b2 = await reattachDevice(second.sockets.b, b, (vring) => b.vrings[vring].usedIdx());
  const a2 = await reattachDevice(second.sockets.a, a, (vring) => (vring === 1 ? a.tx.usedIdx() + 2 : a.vrings[vring].usedIdx()), { inflight: true });
  live.splice(0, 2, a2, b2);
  a2.kick();
  await waitFor('14 frames at b', () => rx.collect().length >= 14 || undefined, 5000);
  await new Promise((r) => setTimeout(r, 200));
  t.same(rx.collect(), Array.from({ length: 14 }, (_, seq) => seq), 'every frame arrived once, in order: none lost, none repeated');
  t.match(second.stderr(), /port a: vring 1: inflight record held chains taken and never returned: 2 taken again/, 'the new vrouter says what it took again');
  t.equal(a.tx.takeUsed().length, 14, "a's ring got each of its 14 chains back");
  t.equal(marks(), 0, 'nothing left marked');
});

t.test('inflight requests are checked: a bad description or file is refused, naming why', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a']));
  t.teardown(() => vr.stop());
  const { VhostFrontend, PROTOCOL_INFLIGHT_SHMFD } = await import('../support/vhost-frontend.ts');
  const { Req, inflightDescPayload } = await import('../../src/vhost/protocol.ts');
  const { eventfd, memfdCreate, ftruncate, closeAll } = await import('../../src/sys/libc.ts');
  const REPLY_ACK = 1n << 3n;
  const u64 = (v: bigint) => {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, v, true);
    return out;
  };
  const session = async () => {
    const fe = await VhostFrontend.connect(vr.sockets.a);
    fe.send(Req.SET_OWNER);
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_INFLIGHT_SHMFD | REPLY_ACK));
    return fe;
  };
  const cases: [string, number, Uint8Array, () => number[], RegExp][] = [
    ['more queues than the port has', Req.GET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 0, mmapOffset: 0, numQueues: 9, queueSize: 256 }), () => [], /GET_INFLIGHT_FD: 9 queues \(the port has 2 vrings\)/],
    ['a queue size not a power of 2', Req.GET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 0, mmapOffset: 0, numQueues: 2, queueSize: 100 }), () => [], /queue size 100 is not a power of 2/],
    ['a short payload', Req.GET_INFLIGHT_FD, new Uint8Array(20), () => [], /GET_INFLIGHT_FD: payload of 20 bytes, expected 24/],
    ['an eventfd for a buffer', Req.SET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 8320, mmapOffset: 0, numQueues: 2, queueSize: 256 }), () => [eventfd()], /SET_INFLIGHT_FD: .*(not tmpfs|cannot be sealed|needs)/],
    [
      'a file smaller than it says',
      Req.SET_INFLIGHT_FD,
      inflightDescPayload({ mmapSize: 16384, mmapOffset: 0, numQueues: 2, queueSize: 256 }),
      () => {
        const fd = memfdCreate('small');
        ftruncate(fd, 4096);
        return [fd];
      },
      /SET_INFLIGHT_FD: the inflight buffer needs 16384 bytes of its file, which has 4096/,
    ],
    ['a size too small for its queues', Req.SET_INFLIGHT_FD, inflightDescPayload({ mmapSize: 4096, mmapOffset: 0, numQueues: 2, queueSize: 256 }), () => [memfdCreate('x')], /mmap size 4096 is less than the 8320 bytes 2 queues of 256 need/],
  ];
  for (const [what, request, payload, fds, why] of cases) {
    const fe = await session();
    const given = fds();
    fe.send(request, payload, given, 1 | 0x8);
    closeAll(given);
    const answer = await fe.replyU64();
    t.ok(failureAck(answer), `${what}: refused`);
    await waitFor(`${what} logged`, () => why.test(vr.stderr()) || undefined, 3000).catch(() => undefined);
    t.match(vr.stderr(), why, `${what}: the log says why`);
    fe.close();
  }
  t.ok(vr.alive(), 'vrouter runs on');
});
