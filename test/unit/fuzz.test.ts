// Random descriptor tables, available rings, packed rings and vhost-user messages, from a
// seeded generator: the data path and the control path must count and carry on, never throw,
// never hang, never crash the daemon. A seed that finds a bug stays here as a case.
import t from 'tap';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { deliverBurst, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { COUNTERS_PER_PORT, QUEUES_BASE } from '../../src/dataplane/counters.ts';
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { DriverQueue, GuestRam } from '../support/virtio-driver.ts';
import { PackedDriverQueue } from '../support/packed-driver.ts';
import { PackedQueue } from '../../src/virtio/packed-queue.ts';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import { DeferredPayloads } from '../../src/dataplane/deferred-payloads.ts';
import { OFFLOAD_CSUM_FROM_GUEST } from '../../src/dataplane/offloads.ts';
import { encodeMessage, memRegionPayload, memTablePayload, PluggedRam, PROTOCOL_MEM_SLOTS, PROTOCOL_MQ_REPLY_ACK_STATUS, startDevice, u32pair, u64, VhostFrontend, vringAddrPayload } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { processResources, trafficFlows, waitFor } from '../support/traffic.ts';

/** xorshift32: the same cases on every run for a given seed */
function rng(seed: number) {
  let x = seed || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

t.test('random descriptor chains against both directions of the data path', async (t) => {
  const ram = new GuestRam(1 << 20);
  t.teardown(() => ram.close());
  const size = 64;
  const q = new DriverQueue(ram, size, { eventIdx: true });
  const mem = new GuestMemory([ram.region()]);
  const pool = PacketPool.standalone(256);
  const handles = new Uint32Array(32).fill(0xffffffff);
  let failures = 0;
  let frames = 0;
  for (const seed of [1, 2, 3, 42, 1234, 99991]) {
    const random = rng(seed);
    for (let round = 0; round < 300; round++) {
      const queue = SplitQueue.create(mem, q.layout({ lastAvailIdx: random(65536) }));
      if (typeof queue === 'string') throw new Error(queue);
      const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: 0 };
      for (let i = 0; i < size; i++) {
        const inMemory = random(4) !== 0;
        q.writeDesc(i, {
          addr: inMemory ? ram.gpa(random(ram.size)) : random(2) ? random(0x100000) : 2 ** 40 + random(1000),
          len: random(3) === 0 ? random(0x100000) : random(3000),
          flags: random(8),
          next: random(4) === 0 ? random(1000) : random(size),
        });
      }
      for (let i = 0; i < size; i++) ram.dv.setUint16(q.availOff + 4 + 2 * i, random(8) === 0 ? random(65536) : random(size), true);
      const jump = random(5) === 0 ? random(65536) : random(size + 1);
      q.setAvailIdx((queue.lastAvailIdx + jump) & 0xffff);
      const before = queue.usedIdx;
      const n = random(2) ? receiveBurst(owner, pool, handles, 0, 32) : deliverBurst(owner, random(2) === 0, pool, handles, fillHandles(pool, handles, random));
      t.ok(n >= -1, 'a result, not an exception');
      if (queue.failure !== '') failures++;
      else t.ok(((queue.usedIdx - before) & 0xffff) <= jump, 'never more used than made available');
      for (let i = 0; i < 32; i++) if (handles[i] !== 0xffffffff) pool.free(handles[i]);
      handles.fill(0xffffffff);
      frames += Math.max(0, n);
      t.equal(pool.available, 256, 'no buffer leaked');
    }
  }
  t.ok(failures > 0, `corrupt rings were detected (${failures})`);
  t.ok(frames > 0, `and some random chains were valid frames (${frames})`);
});

t.test('random chains copied once: rests left in one random ring, delivered into another', async (t) => {
  const ram = new GuestRam(1 << 20);
  t.teardown(() => ram.close());
  const size = 64;
  const txRing = new DriverQueue(ram, size, { eventIdx: true });
  const rxRing = new DriverQueue(ram, size, { eventIdx: true });
  const mem = new GuestMemory([ram.region()]);
  const pool = PacketPool.standalone(256);
  const deferred = new DeferredPayloads(256, 32);
  const handles = new Uint32Array(32);
  let left = 0;
  let delivered = 0;
  for (const seed of [3, 8, 21, 555]) {
    const random = rng(seed);
    for (let round = 0; round < 300; round++) {
      const owners = [txRing, rxRing].map((q): QueueOwner => {
        const queue = SplitQueue.create(mem, q.layout({ lastAvailIdx: random(65536) }));
        if (typeof queue === 'string') throw new Error(queue);
        for (let i = 0; i < size; i++) {
          q.writeDesc(i, {
            addr: random(4) !== 0 ? ram.gpa(random(ram.size)) : 2 ** 40 + random(1000),
            len: random(3) === 0 ? random(0x100000) : random(3000),
            flags: q === rxRing ? VIRTQ_DESC_F_WRITE | (random(4) === 0 ? random(8) : 0) : random(4) === 0 ? random(8) : 0,
            next: random(size),
          });
          ram.dv.setUint16(q.availOff + 4 + 2 * i, random(size), true);
        }
        q.setAvailIdx((queue.lastAvailIdx + random(size + 1)) & 0xffff);
        return { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: random(2) ? OFFLOAD_CSUM_FROM_GUEST : 0 };
      });
      const n = receiveBurst(owners[0], pool, handles, 0, 32, deferred);
      t.ok(n >= -1, 'a result, not an exception');
      left += deferred.count;
      if (n > 0) delivered += deliverBurst(owners[1], random(2) === 0, pool, handles, n, deferred);
      for (let i = 0; i < Math.max(0, n); i++) pool.free(handles[i]);
      deferred.release();
      t.equal(pool.available, 256, 'no buffer leaked');
      t.equal(deferred.window.every((w) => w === -1), true, 'no rest left behind');
    }
  }
  t.ok(left > 0, `rests were left in the sender (${left})`);
  t.ok(delivered > 0, `and frames delivered from there (${delivered})`);
});

t.test('random packed rings against both directions of the data path', async (t) => {
  const ram = new GuestRam(1 << 20);
  t.teardown(() => ram.close());
  const mem = new GuestMemory([ram.region()]);
  const pool = PacketPool.standalone(256);
  const handles = new Uint32Array(32).fill(0xffffffff);
  const rings = [1, 7, 64, 100].map((size) => new PackedDriverQueue(ram, size, { eventIdx: true }));
  const callFd = sys.eventfd();
  t.teardown(() => sys.close(callFd));
  let failures = 0;
  let frames = 0;
  let interrupts = 0;
  for (const seed of [5, 17, 123, 4242, 77777]) {
    const random = rng(seed);
    for (let round = 0; round < 200; round++) {
      const q = rings[random(rings.length)];
      const size = q.size;
      const queue = PackedQueue.create(mem, q.layout({ lastAvailIdx: random(size) | (random(2) << 15), eventIdx: random(2) === 0, indirect: random(4) !== 0 }));
      if (typeof queue === 'string') throw new Error(queue);
      const owner: QueueOwner = { queue, callFd, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: QUEUES_BASE, maxFrame: 9018, offloads: 0 };
      // Flags: any of NEXT, WRITE, INDIRECT, and AVAIL/USED marks of either lap, mostly the
      // ones that make a descriptor available at the device's position.
      const marks = [VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, 0, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED];
      for (let i = 0; i < size; i++) {
        const inMemory = random(4) !== 0;
        q.writeDesc(i, {
          addr: inMemory ? ram.gpa(random(ram.size)) : random(2) ? random(0x100000) : 2 ** 40 + random(1000),
          len: random(3) === 0 ? random(0x100000) : random(3000),
          id: random(65536),
          flags: random(8) | (random(3) === 0 ? marks[random(4)] : queue.lastAvailIdx >> 15 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED),
        });
      }
      q.setDriverEvent(random(4), random(65536));
      for (let burst = 0; burst < 3; burst++) {
        const n = random(2) ? receiveBurst(owner, pool, handles, 0, 32) : deliverBurst(owner, random(2) === 0, pool, handles, fillHandles(pool, handles, random));
        t.ok(n >= -1, 'a result, not an exception');
        t.ok((queue.lastAvailIdx & 0x7fff) < size && queue.lastAvailIdx <= 0xffff, 'the position stays inside the ring');
        t.equal(queue.usedIdx, queue.lastAvailIdx, 'between bursts, used where taken: every chain taken was returned');
        for (let i = 0; i < 32; i++) if (handles[i] !== 0xffffffff) pool.free(handles[i]);
        handles.fill(0xffffffff);
        frames += Math.max(0, n);
        t.equal(pool.available, 256, 'no buffer leaked');
        if (queue.failure !== '') {
          failures++;
          break;
        }
      }
      interrupts += sys.eventfdDrain(callFd);
    }
  }
  t.ok(failures > 0, `corrupt rings were detected (${failures})`);
  t.ok(frames > 0, `and some random chains were valid frames (${frames})`);
  t.ok(interrupts > 0, `interrupts were sent when the random driver flags asked (${interrupts})`);
});

function fillHandles(pool: PacketPool, handles: Uint32Array, random: (n: number) => number): number {
  const n = 1 + random(32);
  for (let i = 0; i < n; i++) {
    handles[i] = pool.alloc();
    pool.length[handles[i]] = 14 + random(9004);
  }
  return n;
}

/**
 * Rounds go to the fuzzed ports in turn: each port's share of the control thread (its
 * connections and the PMD commands they cause) then holds them all at once.
 */
const FUZZED = ['a', 'f1', 'f2', 'f3'];

t.test('random vhost-user messages never bring the daemon down', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'f1', 'f2', 'f3']));
  t.teardown(() => vr.stop());
  const random = rng(7);
  const ram = new GuestRam(1 << 20);
  t.teardown(() => ram.close());
  const requests = Object.values(Req);
  for (let round = 0; round < 60; round++) {
    const fe = await VhostFrontend.connect(vr.sockets[FUZZED[round % FUZZED.length]]);
    for (let m = 0; m < 1 + random(12); m++) {
      const payload = new Uint8Array(random(4) === 0 ? random(300) : [0, 8, 40, 264][random(4)]);
      for (let i = 0; i < payload.length; i++) payload[i] = random(3) === 0 ? random(256) : 0;
      const request = random(5) === 0 ? random(100) : requests[random(requests.length)];
      try {
        fe.sendRaw(encodeMessage(request, payload, [1, 1, 1, 9, 5][random(5)]), random(4) === 0 ? [ram.fd] : []);
      } catch {
        break; // the daemon closed this connection: that is one of the right answers
      }
    }
    fe.close();
  }
  t.ok(vr.alive(), 'still running after 60 connections of random messages');
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  t.ok(a && b, 'and both ports take a well-behaved frontend');
});

/**
 * Plausible set-up sequences gone wrong: tables whose rings do not fit or that change
 * under running vrings, regions added and removed one at a time (overlapping, not in
 * force, the rings' own), vring fds replaced while running, requests whose replies are
 * never read, and hang-ups at any point, often while a PMD is still carrying out a command.
 */
t.test('random set-up sequences, cut short and left unanswered', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'h', 'h1', 'h2', 'h3'], { pmd: { cores: [0, 1] } }));
  const fuzzed = ['h', 'h1', 'h2', 'h3'];
  t.teardown(() => vr.stop());
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => [a, b].forEach((d) => d.close()));
  const baseline = processResources(vr.proc.pid!);
  const random = rng(2024);
  const ram = new GuestRam(8 << 20);
  const queues = [new DriverQueue(ram, 256, { eventIdx: true }), new DriverQueue(ram, 256, { eventIdx: true })];
  const dimm = new PluggedRam(1 << 20, 0x40000000, 0x7f1000000000);
  t.teardown(() => {
    ram.close();
    dimm.close();
  });
  const tables = [
    [{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 }],
    [{ gpa: ram.gpaBase, size: 1 << 20, uva: ram.uvaBase, offset: 0 }], // the rings outside
    [{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase + 2 ** 32, offset: 0 }], // moved away
    [{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 4096 }], // past the end of the file
  ];
  for (let round = 0; round < 80; round++) {
    const fe = await VhostFrontend.connect(vr.sockets[fuzzed[round % fuzzed.length]]);
    const fds: number[] = [];
    const eventfd = () => (fds.push(sys.eventfd()), fds[fds.length - 1]);
    const flags = () => (random(3) === 0 ? VERSION : VERSION | FLAG_NEED_REPLY);
    const regions = [...tables.map((table) => table[0]), dimm.slot(), { ...dimm.slot(), gpa: ram.gpaBase + 4096 }, { ...dimm.slot(), uva: ram.uvaBase }];
    const region = () => regions[random(regions.length)];
    const regionFd = (r: (typeof regions)[number]) => (r.gpa === dimm.gpaBase || r.uva === dimm.uvaBase ? [dimm.fd] : [ram.fd]);
    const steps: (() => void)[] = [
      () => fe.send(Req.GET_PROTOCOL_FEATURES),
      () => fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_MQ_REPLY_ACK_STATUS | (random(3) === 0 ? 0n : PROTOCOL_MEM_SLOTS))),
      // every third round packed rings (bit 34): the same split-layout rings read as packed ones
      () => fe.send(Req.SET_FEATURES, u64((1n << 32n) | (1n << 30n) | (1n << 15n) | (1n << 29n) | (1n << 28n) | (round % 3 === 0 ? 1n << 34n : 0n)), [], flags()),
      () => {
        const table = tables[random(tables.length)];
        if (random(2) === 0) fe.send(Req.SET_MEM_TABLE, memTablePayload(table), [ram.fd], flags());
        else fe.send(Req.ADD_MEM_REG, memRegionPayload(table[0]), [ram.fd], flags());
      },
    ];
    for (const i of [0, 1]) {
      const l = queues[i].layout();
      steps.push(
        () => fe.send(Req.SET_VRING_NUM, u32pair(i, 256), [], flags()),
        () => fe.send(Req.SET_VRING_BASE, u32pair(i, queues[i].availIdx), [], flags()),
        () => fe.send(Req.SET_VRING_ADDR, vringAddrPayload(i, l.descAddr, l.usedAddr, l.availAddr), [], flags()),
        () => fe.send(Req.SET_VRING_CALL, u64(i), [eventfd()], flags()),
        () => fe.send(Req.SET_VRING_KICK, u64(i), [eventfd()], flags()),
        () => fe.send(Req.SET_VRING_ENABLE, u32pair(i, 1), [], flags()),
      );
    }
    const extras: (() => void)[] = [
      () => fe.send(Req.SET_MEM_TABLE, memTablePayload(tables[random(tables.length)]), [ram.fd], flags()),
      () => fe.send(Req.SET_VRING_KICK, u64(random(2)), [eventfd()], flags()),
      () => fe.send(Req.SET_VRING_CALL, u64(random(2)), [eventfd()], flags()),
      () => fe.send(Req.GET_VRING_BASE, u32pair(random(2), 0), [], flags()),
      () => fe.send(Req.SET_VRING_ENABLE, u32pair(random(2), random(2)), [], flags()),
      () => fe.send(Req.RESET_DEVICE),
      () => fe.send(Req.GET_MAX_MEM_SLOTS, new Uint8Array(0), [], flags()),
      () => {
        const r = region();
        fe.send(Req.ADD_MEM_REG, memRegionPayload(r), random(8) === 0 ? [] : regionFd(r), flags());
      },
      () => {
        const r = region();
        fe.send(Req.REM_MEM_REG, memRegionPayload(r), random(2) === 0 ? [] : regionFd(r), flags());
      },
    ];
    const cut = 1 + random(steps.length);
    try {
      for (const step of steps.slice(0, cut)) step();
      for (let e = random(8); e > 0; e--) extras[random(extras.length)]();
      if (random(4) === 0) await new Promise((r) => setTimeout(r, random(30)));
    } catch {
      // the daemon closed this connection: one of the right answers
    }
    fe.close();
    sys.closeAll(fds);
  }
  t.ok(vr.alive(), 'still running after 80 set-ups gone wrong');
  // A last round, well formed: which messages of the rounds above arrive before their
  // connection is cut depends on timing, and a region may never have been removed there.
  const last = await startDevice(vr.sockets.h, { memorySlots: true });
  t.equal(await last.frontend.request(Req.ADD_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'then, set up well, a region is added');
  t.equal(await last.frontend.request(Req.REM_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, 'and removed');
  last.close();
  // The log arrives a little after the reply.
  const logged = (re: RegExp) => waitFor(`a log line ${re}`, () => re.test(vr.stderr()) || undefined, 3000).then(() => true, () => false);
  t.ok(await logged(/port h\d?: memory region added/), 'regions were added');
  t.ok(await logged(/port h\d?: memory region removed/), 'and removed');
  t.equal(await trafficFlows(a, b, 32, '52:54:00:00:00:0a', '52:54:00:00:00:0b'), 32, 'a and b still forward');
  await waitFor('fds and mappings given back', () => {
    const now = processResources(vr.proc.pid!);
    return now.fds <= baseline.fds && now.guestMappings === baseline.guestMappings;
  }, 10000);
  t.pass('no fd or mapping left behind');
  const h = await startDevice(vr.sockets.h);
  t.teardown(() => h.close());
  t.equal(await trafficFlows(a, h, 32, '52:54:00:00:00:0a', '52:54:00:00:00:0c'), 32, 'and a well-behaved frontend on h forwards');
});
