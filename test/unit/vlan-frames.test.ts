// A trunk's frames as the VLAN code reads and rewrites them, in a packet pool: tags cut
// short, stacked or of another kind; a tag taken off and put on with the offload fields that
// count from the frame's start (a tagged super-frame must come out as the same frame sent
// untagged would have); offload fields that point into the bytes a tag's removal moves; a
// buffer with no room for the tag; a super-frame whose segments are longer than the VLAN's
// MTU allows.
import t from 'tap';
import { PacketPool, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN } from '../../src/dataplane/packet-pool.ts';
import { isSegmented, leavesChecksum, OFFLOAD_CSUM_FROM_GUEST, OFFLOAD_HEADER_TAKEN, OFFLOAD_TSO4_FROM_GUEST, takeOffloadHeader } from '../../src/dataplane/offloads.ts';
import { DROP } from '../../src/dataplane/counters.ts';
import { FOREIGN_TAG, UNTAGGED, tagFrame, untagFrame, vlanFrameRefusal, vlanIdOf } from '../../src/dataplane/vlan.ts';
import { tcp4 } from '../support/frames.ts';

const L2 = { srcMac: '52:54:00:00:00:0a', dstMac: '52:54:00:00:00:0b' };

function load(pool: PacketPool, frame: Uint8Array, superBuffer = false): number {
  const h = superBuffer ? pool.allocSuper() : pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  return h;
}

const bytesOf = (pool: PacketPool, h: number) => pool.data.slice(pool.frameOffset(h), pool.frameOffset(h) + pool.length[h]);
const fieldsOf = (pool: PacketPool, h: number) => Array.from(pool.offload.subarray(h * OFFLOAD_FIELDS, (h + 1) * OFFLOAD_FIELDS));

/** A virtio-net header before frame `h`, as the receive path leaves it in the headroom. */
function vnetHeader(pool: PacketPool, h: number, o: { gsoType: number; hdrLen: number; gsoSize: number; start: number; offset: number }): void {
  pool.data.set([1, o.gsoType, o.hdrLen & 0xff, o.hdrLen >> 8, o.gsoSize & 0xff, o.gsoSize >> 8, o.start & 0xff, o.start >> 8, o.offset & 0xff, o.offset >> 8, 0, 0], pool.frameOffset(h) - 12);
}

t.test('the VLAN of frames cut short, stacked, or of another kind', async (t) => {
  const pool = PacketPool.standalone(16);
  const cases: [string, number[], number][] = [
    ['13 bytes: no ethertype at all', [...Array(12).fill(2), 0x81], UNTAGGED],
    ['14 bytes: an 802.1Q TPID and nothing after it', [...Array(12).fill(2), 0x81, 0x00], FOREIGN_TAG],
    ['16 bytes: the tag, no inner ethertype', [...Array(12).fill(2), 0x81, 0x00, 0x00, 10], FOREIGN_TAG],
    ['18 bytes: the tag and an inner ethertype', [...Array(12).fill(2), 0x81, 0x00, 0x00, 10, 0x08, 0x00], 10],
    ['PCP and DEI bits beside the VLAN ID', [...Array(12).fill(2), 0x81, 0x00, 0xf0, 10, 0x08, 0x00], 10],
    ['VLAN 4095', [...Array(12).fill(2), 0x81, 0x00, 0x0f, 0xff, 0x08, 0x00], 4095],
    ['an 802.1ad tag', [...Array(12).fill(2), 0x88, 0xa8, 0x00, 10, 0x08, 0x00], FOREIGN_TAG],
    ['a priority tag alone', [...Array(12).fill(2), 0x81, 0x00, 0x00, 0x00, 0x08, 0x00], 0],
    ['a priority tag over an 802.1Q tag', [...Array(12).fill(2), 0x81, 0x00, 0x00, 0x00, 0x81, 0x00, 0x00, 10, 0x08, 0x00], FOREIGN_TAG],
    ['a priority tag over an 802.1ad tag', [...Array(12).fill(2), 0x81, 0x00, 0x00, 0x00, 0x88, 0xa8, 0x00, 10, 0x08, 0x00], FOREIGN_TAG],
    ['untagged IPv4', [...Array(12).fill(2), 0x08, 0x00, 0x45], UNTAGGED],
  ];
  for (const [what, bytes, vid] of cases) {
    const h = load(pool, Uint8Array.from(bytes));
    t.equal(vlanIdOf(pool, h), vid, what);
    pool.free(h);
  }
  // The tag inside a VLAN's: what vlanFrameRefusal() reads at byte 16.
  const inner = load(pool, Uint8Array.from([...Array(12).fill(2), 0x81, 0x00, 0x00, 10, 0x81, 0x00, 0x00, 20, 0x08, 0x00]));
  t.same([vlanIdOf(pool, inner), vlanIdOf(pool, inner, 16)], [10, 20], 'a tag inside a tag: both read');
  t.equal(vlanFrameRefusal(pool, inner, 1514), DROP.vlan_refused, 'and refused as a VLAN\'s frame');
});

t.test('a tag taken off and put on: the bytes after the MACs move, the offload fields with them', async (t) => {
  const pool = PacketPool.standalone(16, 4);
  const payload = Uint8Array.from({ length: 4000 }, (_, k) => (k * 13) & 0xff);
  const untagged = tcp4({ ...L2, src: '10.0.0.1', dst: '10.0.0.2', srcPort: 40000, dstPort: 80, flags: 'PA', payload });
  const tagged = tcp4({ ...L2, vlan: 10, src: '10.0.0.1', dst: '10.0.0.2', srcPort: 40000, dstPort: 80, flags: 'PA', payload });
  const offloads = OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO4_FROM_GUEST;
  // The same super-frame from two guests, one with a VLAN interface: taken as guests send them.
  const plain = load(pool, untagged, true);
  vnetHeader(pool, plain, { gsoType: 1, hdrLen: 54, gsoSize: 1448, start: 34, offset: 16 });
  t.equal(takeOffloadHeader(pool, plain, untagged.length, offloads, 1514), OFFLOAD_HEADER_TAKEN, 'the untagged super-frame is taken');
  const h = load(pool, tagged, true);
  vnetHeader(pool, h, { gsoType: 1, hdrLen: 58, gsoSize: 1448, start: 38, offset: 16 });
  t.equal(takeOffloadHeader(pool, h, tagged.length, offloads, 1518), OFFLOAD_HEADER_TAKEN, 'the tagged one too, its headers 4 bytes longer');
  t.ok(isSegmented(pool, h), 'as a super-frame');
  // Its segments with the tag: 1448 + 58 = 1506 bytes; 1502 without: VLAN MTU 1488 or more.
  t.equal(vlanFrameRefusal(pool, h, 1502), -1, 'its segments fit a VLAN whose frames are 1502 bytes');
  t.equal(vlanFrameRefusal(pool, h, 1501), DROP.frame_too_long, 'not one of 1501: refused as too long, though the frame is a super-frame');
  untagFrame(pool, h);
  t.same(bytesOf(pool, h), untagged, 'untagged: the same bytes as the frame sent untagged');
  t.same(fieldsOf(pool, h), fieldsOf(pool, plain), 'and the same offload fields: checksum start and header length 4 less');
  t.ok(tagFrame(pool, h, 10), 'tagged again');
  t.same(bytesOf(pool, h), tagged, 'the bytes as the VLAN interface sent them');
  const back = fieldsOf(pool, h);
  t.same([back[OFFLOAD_CSUM_START] - 1, back[OFFLOAD_HDR_LEN], back[OFFLOAD_GSO_SIZE], back[OFFLOAD_GSO_TYPE]], [38, 58, 1448, 1], 'the offload fields as they came');
});

t.test('offload fields pointing into the bytes a tag\'s removal moves are forgotten, never moved before the frame', async (t) => {
  const pool = PacketPool.standalone(16);
  const frame = tcp4({ ...L2, vlan: 10, src: '10.0.0.1', dst: '10.0.0.2', srcPort: 40000, dstPort: 80, payload: 100 });
  for (const start of [14, 15]) {
    const h = load(pool, frame);
    pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = start + 1;
    pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_GSO_TYPE] = 1;
    pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_HDR_LEN] = 20;
    pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_GSO_SIZE] = 1400;
    untagFrame(pool, h);
    t.same([leavesChecksum(pool, h), isSegmented(pool, h)], [false, false], `a checksum said to start at ${start}, in the tag: nothing left to do`);
    t.equal(pool.length[h], frame.length - 4, 'the tag off all the same');
    pool.free(h);
  }
  const h = load(pool, frame);
  pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = 16 + 1;
  untagFrame(pool, h);
  t.equal(pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] - 1, 12, 'a start at the inner ethertype moves with it (to 12: never before the frame\'s MACs)');
});

t.test('a tag put on where there is no room for it: refused, the frame unchanged', async (t) => {
  const pool = PacketPool.standalone(16);
  const full = new Uint8Array(pool.room(0)).fill(7);
  full.set([8, 0], 12);
  const h = load(pool, full);
  t.equal(tagFrame(pool, h, 10), false, `a frame of ${full.length} bytes, its buffer's room: no tag`);
  t.same([pool.length[h], bytesOf(pool, h)], [full.length, full], 'its length and bytes as they were');
  pool.length[h] = full.length - 4;
  t.equal(tagFrame(pool, h, 10), true, '4 bytes shorter: tagged');
  t.equal(pool.length[h], full.length, 'to the buffer\'s room exactly');
  const short = load(pool, Uint8Array.from(Array(11).fill(1)));
  t.equal(tagFrame(pool, short, 10), false, 'a frame shorter than its MACs: no tag');
  t.equal(pool.length[short], 11, 'unchanged');
});
