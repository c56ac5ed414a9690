// Frames copied once, from one guest's TX buffers into another's RX buffers, with only
// their first HEADER_BYTES in a packet buffer (src/dataplane/deferred-payloads.ts): what
// arrives is the frame byte for byte however either side splits its buffers, the headers
// are those taken (a sender changing its buffer afterwards changes only its own payload),
// the sender's chains go back only after delivery, and whatever reads a frame whole gets
// it whole.
import t, { type Test } from 'tap';
import { GuestMemory } from '../../src/virtio/guest-memory.ts';
import { SplitQueue } from '../../src/virtio/split-queue.ts';
import { NET_HDR_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 } from '../../src/virtio/constants.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { deliverBurst, receiveBurst, type QueueOwner } from '../../src/dataplane/guest-io.ts';
import { DeferredPayloads, HEADER_BYTES, MAX_HEAD_BYTES, MIN_REST_BYTES } from '../../src/dataplane/deferred-payloads.ts';
import { Batch } from '../../src/dataplane/batch.ts';
import { COUNTERS_PER_PORT, CSUM_COMPLETED, DROP, DROPS_BASE, queueBase, RX_PACKETS, TX_PACKETS } from '../../src/dataplane/counters.ts';
import { finishChecksum, onesSum } from '../../src/dataplane/checksum.ts';
import { OFFLOAD_CSUM_FROM_GUEST } from '../../src/dataplane/offloads.ts';
import { DriverQueue, ethernetFrame, GuestRam, postRxBuffer, postRxChain, sendFrame } from '../support/virtio-driver.ts';
import { udp4 } from '../support/frames.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

function ownerOf(t: Test, ram: GuestRam, offloads = 0): { driver: DriverQueue; owner: QueueOwner } {
  const driver = new DriverQueue(ram, 256);
  const queue = SplitQueue.create(new GuestMemory([ram.region()]), driver.layout());
  if (typeof queue === 'string') throw new Error(queue);
  const owner: QueueOwner = { queue, callFd: -1, kickFd: -1, counters: new Float64Array(COUNTERS_PER_PORT), counterBase: 0, queueCounterBase: queueBase(0, 0), maxFrame: 9018, offloads };
  return { driver, owner };
}

function setup(t: Test, opts: { sameGuest?: boolean; offloads?: number } = {}) {
  const ramA = new GuestRam();
  const ramB = opts.sameGuest ? ramA : new GuestRam();
  t.teardown(() => {
    ramA.close();
    if (ramB !== ramA) ramB.close();
  });
  const tx = ownerOf(t, ramA, opts.offloads);
  const rx = ownerOf(t, ramB);
  const pool = PacketPool.standalone(64);
  const deferred = new DeferredPayloads(64, 32);
  return { ramA, ramB, tx, rx, pool, deferred, handles: new Uint32Array(32) };
}

/** The bytes a guest's RX chain got after the virtio-net header, from segments at offs of lens. */
function readChain(ram: GuestRam, offs: number[], lens: number[], frameLen: number): Uint8Array {
  const all = new Uint8Array(lens.reduce((a, b) => a + b, 0));
  let at = 0;
  offs.forEach((off, i) => {
    all.set(ram.bytes.subarray(off, off + lens[i]), at);
    at += lens[i];
  });
  return all.slice(NET_HDR_LEN, NET_HDR_LEN + frameLen);
}

t.test('a frame goes from guest to guest with only its head in the buffer, whatever the chains', async (t) => {
  const { ramB, tx, rx, pool, deferred, handles } = setup(t);
  const frame = ethernetFrame(B, A, 1504, 1);
  sendFrame(tx.driver, frame);
  t.equal(receiveBurst(tx.owner, pool, handles, 0, 32, deferred), 1);
  t.equal(deferred.count, 1, 'its rest left in the sender');
  const h = handles[0];
  const off = pool.frameOffset(h);
  t.same(pool.data.slice(off, off + HEADER_BYTES), frame.subarray(0, HEADER_BYTES), 'the head in the buffer');
  t.equal(pool.length[h], frame.length, 'the length is the whole frame');
  t.equal(pool.data.subarray(off + HEADER_BYTES, off + frame.length).some((b) => b !== 0), false, 'nothing past the head copied');
  t.equal(tx.driver.takeUsed().length, 0, 'the sender does not have its chain back yet');
  t.equal(tx.owner.counters[RX_PACKETS], 1, 'counted as received');
  // Chains split across the head's end, and past it.
  const lens = [NET_HDR_LEN, 30, 40, 7, 2000];
  const chain = postRxChain(rx.driver, lens);
  t.equal(deliverBurst(rx.owner, false, pool, handles, 1, deferred), 1);
  t.same(readChain(ramB, chain.offs, lens, frame.length), frame, 'one chain: byte for byte');
  t.equal(rx.owner.counters[TX_PACKETS], 1);
  deferred.release();
  t.same(tx.driver.takeUsed().length, 1, 'the chain goes back once delivered');
  t.equal(deferred.window[h], -1, 'nothing left afterwards');
});

t.test('mergeable buffers smaller than the head, and frames in two descriptors', async (t) => {
  const { ramB, tx, rx, pool, deferred, handles } = setup(t);
  const least = HEADER_BYTES + MIN_REST_BYTES;
  const frames = [ethernetFrame(B, A, 900, 2), ethernetFrame(B, A, least - 14, 3), ethernetFrame(B, A, least - 15, 4), ethernetFrame(B, A, 1400, 5), ethernetFrame(B, A, 1400, 6)];
  sendFrame(tx.driver, frames[0], { split: [NET_HDR_LEN, 914] });
  sendFrame(tx.driver, frames[1], { split: [NET_HDR_LEN + 30, least - 30] });
  sendFrame(tx.driver, frames[2]);
  // As Linux sends TCP without segmentation offload: the headers, then the payload.
  sendFrame(tx.driver, frames[3], { split: [NET_HDR_LEN + 66, 1414 - 66] });
  sendFrame(tx.driver, frames[4], { split: [NET_HDR_LEN + MAX_HEAD_BYTES + 2, 1414 - MAX_HEAD_BYTES - 2] });
  t.equal(receiveBurst(tx.owner, pool, handles, 0, 32, deferred), 5);
  t.same(
    [0, 1, 2, 3, 4].map((i) => (deferred.window[handles[i]] >= 0 ? deferred.head[handles[i]] : 0)),
    [HEADER_BYTES, HEADER_BYTES, 0, 66, 0],
    'heads left: the header apart (64), the head split short of its end (64), the TCP-like (66); copied: a rest too short, a head too long',
  );
  const buffers = Array.from({ length: 160 }, () => postRxBuffer(rx.driver, 50));
  t.equal(deliverBurst(rx.owner, true, pool, handles, 5, deferred), 5);
  deferred.release();
  let at = 0;
  for (let i = 0; i < 5; i++) {
    const chains = Math.ceil((NET_HDR_LEN + frames[i].length) / 50);
    t.equal(ramB.dv.getUint16(buffers[at].off + 10, true), chains, `frame ${i}: num_buffers ${chains}`);
    const used = buffers.slice(at, at + chains);
    t.same(readChain(ramB, used.map((b) => b.off), used.map(() => 50), frames[i].length), frames[i], `frame ${i} byte for byte over 50-byte buffers`);
    at += chains;
  }
});

t.test('offload headers: a checksum left to do is completed from the whole frame; a super-frame is copied; a dropped one leaves no rest behind', async (t) => {
  const { ramB, tx, rx, pool, deferred, handles } = setup(t, { offloads: OFFLOAD_CSUM_FROM_GUEST });
  const frame = ethernetFrame(B, A, 1000, 5);
  const udp = udp4({ srcMac: A, dstMac: B, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 53, payload: 958 });
  // Over three descriptors: copied whole.
  sendFrame(tx.driver, frame, { split: [NET_HDR_LEN + 100, 500, 414] });
  // UDP's checksum to do (from byte 34, written at 34 + 6): left.
  const csum = new Uint8Array(NET_HDR_LEN);
  csum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  csum[6] = 34;
  csum[8] = 6;
  sendFrame(tx.driver, udp, { header: csum });
  // Segmentation the connection did not negotiate: dropped; the next frame may take its buffer.
  const tso = csum.slice();
  tso[1] = VIRTIO_NET_HDR_GSO_TCPV4;
  tso[4] = 0x10;
  sendFrame(tx.driver, frame, { header: tso });
  const after = ethernetFrame(B, A, 900, 6);
  sendFrame(tx.driver, after);
  // A checksum at a place that is no TCP or UDP checksum (the frame is not IP): completed
  // as it comes in, from the whole frame, its rest copied for it.
  sendFrame(tx.driver, frame, { header: csum });
  t.equal(receiveBurst(tx.owner, pool, handles, 0, 32, deferred), 4, 'four taken, the super-frame dropped');
  t.equal(tx.owner.counters[DROPS_BASE + DROP.offload_header_bad], 1);
  t.same([0, 1, 2, 3].map((i) => deferred.window[handles[i]] >= 0), [false, true, true, false], 'left: the one with UDP\'s checksum to do, and the one after the drop');
  const off = pool.frameOffset(handles[0]);
  t.same(pool.data.slice(off, off + frame.length), frame, 'the one over three descriptors whole in its buffer');
  const completedAt34 = (f: Uint8Array) => {
    const out = f.slice();
    const sum = finishChecksum(onesSum(out, 34, out.length));
    out[40] = sum >>> 8;
    out[41] = sum & 0xff;
    return out;
  };
  const off3 = pool.frameOffset(handles[3]);
  t.same(pool.data.slice(off3, off3 + frame.length), completedAt34(frame), 'the one whose checksum was no TCP or UDP one: whole, completed before any stage sees it');
  // The receiver takes no partial checksums: completed, from the whole frame.
  const buffers = [postRxBuffer(rx.driver, 2048), postRxBuffer(rx.driver, 2048), postRxBuffer(rx.driver, 2048), postRxBuffer(rx.driver, 2048)];
  t.equal(deliverBurst(rx.owner, true, pool, handles, 4, deferred), 4);
  deferred.release();
  t.equal(rx.owner.counters[CSUM_COMPLETED], 1, 'one checksum completed as it left');
  const got = (b: { off: number }, len: number) => ramB.bytes.slice(b.off + NET_HDR_LEN, b.off + NET_HDR_LEN + len);
  t.same(got(buffers[0], frame.length), frame, 'the whole one arrives as sent');
  t.same(got(buffers[1], udp.length), completedAt34(udp), 'UDP\'s checksum done over the whole frame');
  t.same(got(buffers[2], after.length), after, 'the one after the drop arrives as sent');
  t.same(got(buffers[3], frame.length), completedAt34(frame), 'the one completed as it came in arrives so');
  t.equal(tx.driver.takeUsed().length, 5, 'every chain returned once the burst is delivered');
});

t.test('what leaves is the head as taken: the sender cannot change the headers after the stages saw them', async (t) => {
  const { ramA, ramB, tx, rx, pool, deferred, handles } = setup(t);
  const frame = ethernetFrame(B, A, 600, 6);
  sendFrame(tx.driver, frame);
  receiveBurst(tx.owner, pool, handles, 0, 32, deferred);
  // The guest rewrites its whole buffer (MACs included) while the burst is in the stages.
  const sent = findFrame(ramA, frame);
  t.ok(sent >= 0, 'the frame is in the sender');
  ramA.bytes.fill(0xee, sent, sent + frame.length);
  const rxBuf = postRxBuffer(rx.driver, 2048);
  deliverBurst(rx.owner, true, pool, handles, 1, deferred);
  deferred.release();
  const got = ramB.bytes.slice(rxBuf.off + NET_HDR_LEN, rxBuf.off + NET_HDR_LEN + frame.length);
  t.same(got.subarray(0, HEADER_BYTES), frame.subarray(0, HEADER_BYTES), 'headers as taken');
  t.equal(got.subarray(HEADER_BYTES).every((b) => b === 0xee), true, "the rest is the sender's own bytes, as it left them");
});

t.test('made whole: materialize(), and a stage that changes the length', async (t) => {
  const { tx, pool, deferred, handles } = setup(t);
  const frames = [ethernetFrame(B, A, 700, 7), ethernetFrame(B, A, 800, 8)];
  frames.forEach((f) => sendFrame(tx.driver, f));
  receiveBurst(tx.owner, pool, handles, 0, 32, deferred);
  deferred.materialize(pool, handles[0]);
  const off0 = pool.frameOffset(handles[0]);
  t.same(pool.data.slice(off0, off0 + frames[0].length), frames[0], 'materialize(): the frame whole in its buffer');
  t.equal(deferred.window[handles[0]], -1);
  const batch = new Batch(pool, deferred);
  batch.handles.set(handles.subarray(0, 2));
  batch.begin(0, 2);
  batch.setLength(1, 500);
  const off1 = pool.frameOffset(handles[1]);
  t.same(pool.data.slice(off1, off1 + 500), frames[1].subarray(0, 500), 'setLength(): made whole first, then cut');
  t.equal(deferred.window[handles[1]], -1);
  deferred.release();
  t.equal(tx.driver.takeUsed().length, 2);
});

t.test('a guest whose RX buffer overlaps its own TX buffer: nothing outside the RX buffer is touched', async (t) => {
  const { ramA, tx, rx, pool, deferred, handles } = setup(t, { sameGuest: true });
  const frame = ethernetFrame(B, A, 1000, 9);
  sendFrame(tx.driver, frame);
  receiveBurst(tx.owner, pool, handles, 0, 32, deferred);
  const sent = findFrame(ramA, frame);
  // An RX descriptor over the TX buffer, 100 bytes on.
  const start = sent - NET_HDR_LEN + 100;
  const end = start + NET_HDR_LEN + frame.length;
  const head = rx.driver.addChain([{ addr: ramA.gpa(start), len: 2048, write: true }]);
  rx.driver.makeAvailable(head);
  const before = ramA.bytes.slice();
  t.equal(deliverBurst(rx.owner, true, pool, handles, 1, deferred), 1, 'delivered');
  deferred.release();
  const after = ramA.bytes;
  let outside = 0;
  for (let i = 0; i < after.length; i++) if ((i < start || i >= end) && after[i] !== before[i] && !inUsedRing(i, rx.driver, tx.driver)) outside++;
  t.equal(outside, 0, 'no byte outside the RX buffer and the rings changed');
  t.same(after.slice(start + NET_HDR_LEN, start + NET_HDR_LEN + HEADER_BYTES), frame.subarray(0, HEADER_BYTES), 'the head as taken');
});

/** Whether byte i of guest memory is in the used ring of one of `queues` (the device writes those). */
function inUsedRing(i: number, ...queues: DriverQueue[]): boolean {
  return queues.some((q) => i >= q.usedOff && i < q.usedOff + 6 + 8 * 256);
}

function findFrame(ram: GuestRam, frame: Uint8Array): number {
  for (let i = 0; i + frame.length <= ram.bytes.length; i += 4) {
    if (ram.bytes[i] === frame[0] && ram.bytes.subarray(i, i + frame.length).every((b, k) => b === frame[k])) return i;
  }
  return -1;
}
