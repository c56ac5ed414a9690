// The pieces the two processes share state through: the arena (regions of one memfd, as
// views in every thread and process that maps it) and the packet channel (values and fds
// over a SOCK_SEQPACKET socket).
import t from 'tap';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import * as sys from '../../src/sys/libc.ts';
import { PacketChannel } from '../../src/sys/packet-channel.ts';
import { adoptShared, arenaAddress, createArena, decodeShared, encodeShared, isSharedBuffer, releaseShared, sharedBuffer, sharedBytesInUse } from '../../src/sys/shared-arena.ts';

createArena(2 ** 30);

t.test('regions: zero-filled, freed to zeros, reused', async (t) => {
  const before = sharedBytesInUse();
  const a = sharedBuffer(10_000);
  t.ok(a instanceof ArrayBuffer && isSharedBuffer(a), 'an ArrayBuffer over the arena, known as shared');
  t.notOk(isSharedBuffer(new ArrayBuffer(8)), 'an ordinary ArrayBuffer is not');
  t.equal(sharedBytesInUse() - before, 12_288, 'whole pages');
  t.ok(new Uint8Array(a).every((b) => b === 0), 'zero-filled');
  new Uint8Array(a).fill(7);
  const ref = encodeShared({ a }).a as unknown as { $shared: number; bytes: number };
  releaseShared(a);
  t.equal(sharedBytesInUse(), before, 'released');
  const again = sharedBuffer(10_000);
  t.equal((encodeShared({ again }).again as unknown as { $shared: number }).$shared, ref.$shared, 'the freed range is taken again');
  t.ok(new Uint8Array(again).every((b) => b === 0), 'and reads zeros: its pages were given back');
  t.same(encodeShared({ a }).a, a, 'a released buffer is no longer sent as that region');
});

t.test('a region travels as its offset and is the same memory in another thread', async (t) => {
  const region = sharedBuffer(4096);
  const words = new Int32Array(region);
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const koffi = require(workerData.koffi);
     const view = koffi.view(BigInt(workerData.arena.base) + BigInt(workerData.ref.$shared), workerData.ref.bytes);
     new Int32Array(view)[5] = 42;
     parentPort.postMessage(new Int32Array(view)[1]);`,
    { eval: true, workerData: { arena: arenaAddress(), ref: encodeShared({ region }).region, koffi: createRequire(import.meta.url).resolve('koffi') } },
  );
  words[1] = 17;
  const seen = await new Promise((resolve) => worker.once('message', resolve));
  await worker.terminate();
  t.equal(seen, 17, 'the other thread reads what this one wrote');
  t.equal(words[5], 42, 'and this one what it wrote');
  t.equal(decodeShared(encodeShared({ region })).region, region, 'decoded here, the very same view (identity kept)');
});

t.test('only shared memory may cross to another process', async (t) => {
  t.throws(() => encodeShared({ table: new SharedArrayBuffer(64) }, true), /a buffer of 64 bytes is not in shared memory/);
  const own = new SharedArrayBuffer(64);
  new Uint8Array(own)[3] = 9;
  const adopted = adoptShared({ nested: [own] }).nested[0];
  t.ok(isSharedBuffer(adopted) && !(adopted instanceof SharedArrayBuffer), 'a SharedArrayBuffer is copied into the arena');
  t.equal(new Uint8Array(adopted)[3], 9, 'with what it held');
});

t.test('the packet channel: big values in pieces, fds with them, in order under back-pressure', async (t) => {
  const [left, right] = sys.seqpacketPair();
  const received: { value: unknown; fds: number[] }[] = [];
  let closed = false;
  const b = new PacketChannel(right, { message: (value, fds) => received.push({ value, fds }), closed: () => (closed = true) });
  const a = new PacketChannel(left, { message: () => undefined, closed: () => undefined });
  const big = { bytes: 'x'.repeat(300_000) };
  const efd = sys.eventfd();
  a.send(big, [efd]);
  for (let i = 0; i < 3000; i++) a.send({ i });
  const deadline = Date.now() + 5000;
  while (received.length < 3001 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  t.equal(received.length, 3001, 'every value arrived');
  t.same(received[0].value, big, 'the 300 kB value whole, though a packet holds 64 kB');
  t.equal(received[0].fds.length, 1, 'with its fd');
  t.ok(sys.eventfdSignal(efd) && sys.eventfdDrain(received[0].fds[0]) === 1, 'the same eventfd on both sides');
  t.ok(received.slice(1).every((r, i) => (r.value as { i: number }).i === i), 'the small ones in order, none lost when the socket was full');
  sys.closeAll([efd, ...received[0].fds]);
  a.close();
  await new Promise((r) => setTimeout(r, 50));
  t.ok(closed, 'the other end learns that the peer closed');
  b.close();
});
