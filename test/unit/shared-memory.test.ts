// The pieces the two processes share state through: the arena (regions of one memfd, as
// views in every thread and process that maps it) and the packet channel (values and fds
// over a SOCK_SEQPACKET socket).
import t from 'tap';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import * as sys from '../../src/sys/libc.ts';
import { PacketChannel } from '../../src/sys/packet-channel.ts';
import { adoptShared, arenaAddress, createArena, decodeShared, encodeShared, isSharedBuffer, regionOf, releaseShared, sharedBuffer, sharedBytesInUse } from '../../src/sys/shared-arena.ts';
import { closeJobs, runJob } from '../../src/pipeline/jobs.ts';
import type { LeaseJobInput } from '../support/lease-job.ts';

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

t.test('a job makes its regions in a lease of the arena: those it returns are kept, the rest given back', async (t) => {
  t.teardown(closeJobs);
  const job = new URL('../support/lease-job.ts', import.meta.url);
  const before = sharedBytesInUse();
  const out = await runJob<{ kept: ArrayBufferLike[]; droppedAt: number }>(job, { keep: [10_000, 4096], drop: 8192, fail: false } satisfies LeaseJobInput);
  t.ok(out.kept.every((b) => isSharedBuffer(b) && !(b instanceof SharedArrayBuffer)), 'regions of the arena, not copies of what the job made');
  t.same([new Uint8Array(out.kept[0])[9_999], new Uint8Array(out.kept[1])[4095]], [7, 7], 'holding what the job wrote');
  t.equal(sharedBytesInUse() - before, 12_288 + 4096, 'the regions returned, in whole pages, and nothing else of the lease');
  const dropped = regionOf({ $shared: out.droppedAt, bytes: 8192 });
  t.ok(new Uint8Array(dropped).every((b) => b === 0), 'a region the job made and dropped was emptied (it had written 9s)');
  const refs = encodeShared({ kept: out.kept }).kept as unknown as { $shared: number }[];
  releaseShared(out.kept[0]);
  t.equal(sharedBytesInUse() - before, 4096, 'a kept region is freed like any other');
  t.ok(new Uint8Array(regionOf({ $shared: refs[0].$shared, bytes: 10_000 })).every((b) => b === 0), 'its pages given back');
  await t.rejects(runJob(job, { keep: [4096], drop: 4096, fail: true } satisfies LeaseJobInput), /asked to fail/);
  t.equal(sharedBytesInUse() - before, 4096, 'a job that fails keeps nothing');
  // Each lease took half the arena here (it is short of LEASE_BYTES).
  const big = sharedBuffer(3 * 2 ** 28);
  t.ok(isSharedBuffer(big), 'the leases went back to the free list: a region of three quarters of the arena fits');
  releaseShared(big);
});

t.test('closing the pool waits for threads still loading and jobs under way', async (t) => {
  // A thread stopped while it declares koffi's functions takes the process down: the pool's
  // first thread still loads as the close comes, and its job runs to its end.
  const job = new URL('../support/lease-job.ts', import.meta.url);
  const first = runJob(job, { keep: [], drop: 4096, fail: false } satisfies LeaseJobInput);
  await closeJobs();
  t.same(await first.then(() => 'done', (err: Error) => err.message), 'done', 'the job started before the close ran to its end');
  t.same(await runJob<{ kept: unknown[] }>(job, { keep: [], drop: 4096, fail: false } satisfies LeaseJobInput).then((out) => out.kept), [], 'a job after the close starts a new pool');
  await closeJobs();
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
