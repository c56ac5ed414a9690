// The capture rings between a PMD (CaptureWriter) and the supervisor (CaptureControl), in one
// process: the supervisor's end takes nothing in shared memory on trust, and the PMD's
// drop counts wrap as 32-bit words do.
import t from 'tap';
import { CaptureControl, CaptureWriter, createCaptureMemory, RING_LAYOUT, RING_SLOTS, type CaptureRecord } from '../../src/dataplane/capture.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { enhancedPacket, interfaceStatistics } from '../../src/admin/pcapng.ts';
import { udp4 } from '../support/frames.ts';

const PORTS = 2;
const ANY = { family: 0, protocol: -1, portLo: -1, portHi: -1, src: null, dst: null, host: null, snap: 1500 };

/** A pool holding `count` copies of one UDP frame, and their handles. */
function frames(count: number): { pool: PacketPool; handles: Uint32Array } {
  const pool = PacketPool.standalone(64);
  const frame = udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1, dstPort: 2, payload: 20 });
  const handles = new Uint32Array(count);
  for (let k = 0; k < count; k++) {
    const h = pool.alloc();
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
    handles[k] = h;
  }
  return { pool, handles };
}

function rig() {
  const memory = createCaptureMemory(1, PORTS);
  const writer = new CaptureWriter(memory, 0);
  const control = new CaptureControl(memory);
  const words = new Int32Array(memory.rings[0]);
  const records: CaptureRecord[] = [];
  const drain = () => control.drain(() => true, (r) => records.push(r));
  return { memory, writer, control, words, records, drain };
}

t.test('a head no producer could have left is skipped, not walked; the ring works on after', async (t) => {
  const { writer, control, words, records, drain } = rig();
  control.start(1, 7, ANY);
  words[RING_LAYOUT.head] = 1_000_000_000;
  const started = performance.now();
  t.equal(drain(), 0, 'nothing read from the slots such a head would name');
  // Walking the 10^9 slots such a head names would take minutes.
  t.ok(performance.now() - started < 1000, `drained in ${(performance.now() - started).toFixed(1)} ms`);
  t.equal(control.skipped, 1, 'counted');
  // The producer, which kept its own head, publishes behind the consumer: skipped too, once.
  const { pool, handles } = frames(3);
  writer.egressBurst(1, pool, handles, 3);
  drain();
  t.equal(control.skipped, 2);
  // From then on the two agree again: the next records come through.
  writer.egressBurst(1, pool, handles, 3);
  t.equal(drain(), 3);
  t.equal(records.length, 3);
  t.same([...records[0].frame], [...pool.data.subarray(pool.frameOffset(handles[0]), pool.frameOffset(handles[0]) + pool.length[handles[0]])], 'the frame as written');
});

t.test("a record's fields are kept within the slot and within what pcapng can say", async (t) => {
  const { writer, control, memory, records, drain } = rig();
  control.start(1, 7, ANY);
  const { pool, handles } = frames(1);
  writer.egressBurst(1, pool, handles, 1);
  const slot = RING_LAYOUT.slot(PORTS, 0);
  const words = new Int32Array(memory.rings[0], slot);
  new Float64Array(memory.rings[0], slot)[RING_LAYOUT.time] = NaN;
  words[RING_LAYOUT.originalLength] = -5;
  // A trace said to be 400 bytes, whose one entry claims a text of 65,535 bytes.
  words[RING_LAYOUT.traceBytes] = 400;
  words[RING_LAYOUT.traceAt >>> 2] = 0xffff << 16;
  t.equal(drain(), 1);
  const [r] = records;
  t.equal(r.time, 0, 'a time that is not one is 0 (the reader puts the time it read it)');
  t.ok(r.originalLength >= r.frame.length && r.originalLength < 2 ** 32, `original length ${r.originalLength}`);
  t.equal(r.trace.length, 1);
  t.ok(r.trace[0].text!.length <= 400 - 12, `the text stops at the trace's end (${r.trace[0].text!.length} bytes)`);
  t.doesNotThrow(() => enhancedPacket({ interfaceId: 0, time: r.time, frame: r.frame, originalLength: r.originalLength, direction: 1, comments: [r.trace[0].text!], verdict: null }));
});

t.test('drop counts: differences across the 32-bit wrap of the PMD\'s word', async (t) => {
  const { writer, control, words, drain } = rig();
  words[RING_LAYOUT.drops + 1] = 0x7ffffffe;
  const before = control.drops(1);
  control.start(1, 7, ANY);
  const { pool, handles } = frames(8);
  // Fill the ring, then five frames more: each a drop.
  for (let k = 0; k < RING_SLOTS / 8; k++) writer.egressBurst(1, pool, handles, 8);
  writer.egressBurst(1, pool, handles, 5);
  t.equal(words[RING_LAYOUT.drops + 1], -0x7ffffffd, 'the word went past 2^31 - 1');
  t.equal(control.dropsSince(1, before), 5);
  t.equal(control.drops(0), 0, 'another port counts none');
  t.equal(drain(), RING_SLOTS);
  words[RING_LAYOUT.drops + 1] = -1;
  const nearTop = control.drops(1);
  writer.egressBurst(1, pool, handles, 8);
  writer.egressBurst(1, pool, handles, 8);
  for (let k = 0; k < RING_SLOTS / 8; k++) writer.egressBurst(1, pool, handles, 8);
  t.equal(control.dropsSince(1, nearTop), 16, 'and across 2^32');
  const lost = control.dropsSince(1, before);
  t.doesNotThrow(() => interfaceStatistics({ interfaceId: 0, start: 0, end: 1, received: lost, dropped: lost, comments: [] }));
});
