// Checksums guests leave to do (VIRTIO_NET_F_CSUM): completed by vrouter they must be what
// the sender would have written. Frames built here with their checksums right are turned
// into what a guest with checksum offload sends (the field holding the pseudo-header's
// sum only), completed, and compared byte for byte; odd starts and lengths against a plain
// RFC 1071 sum.
import t from 'tap';
import { PacketPool, OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS } from '../../src/dataplane/packet-pool.ts';
import { completeChecksum, leavesChecksum, takeOffloadHeader } from '../../src/dataplane/offloads.ts';
import { tcp4, tcp6, udp4, udp6 } from '../support/frames.ts';
import { prng } from '../support/prng.ts';

const L2 = { srcMac: '52:54:00:00:00:0a', dstMac: '52:54:00:00:00:0b' };

/** RFC 1071 over big-endian 16-bit words, the last byte padded: folded, not complemented. */
function onesSum(bytes: Uint8Array, from = 0, to = bytes.length, initial = 0): number {
  let sum = initial;
  for (let i = from; i < to; i += 2) sum += (bytes[i] << 8) | (i + 1 < to ? bytes[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The frame as a guest with checksum offload sends it: the L4 checksum field holds the pseudo-header's sum. */
function partial(frame: Uint8Array): { frame: Uint8Array; start: number; offset: number } {
  const f = frame.slice();
  const v6 = f[12] === 0x86;
  const ip = 14;
  const start = v6 ? ip + 40 : ip + (f[ip] & 15) * 4;
  const proto = v6 ? f[ip + 6] : f[ip + 9];
  const offset = proto === 6 ? 16 : 6;
  const l4 = f.length - start;
  const addresses = v6 ? f.subarray(ip + 8, ip + 40) : f.subarray(ip + 12, ip + 20);
  const pseudo = onesSum(addresses, 0, addresses.length, proto + l4);
  f[start + offset] = pseudo >>> 8;
  f[start + offset + 1] = pseudo & 0xff;
  return { frame: f, start, offset };
}

function load(pool: PacketPool, frame: Uint8Array, start: number, offset: number): number {
  const h = pool.alloc();
  pool.data.set(frame, pool.frameOffset(h));
  pool.length[h] = frame.length;
  pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = start + 1;
  pool.offload[h * OFFLOAD_FIELDS + OFFLOAD_CSUM_OFFSET] = offset;
  return h;
}

const frameOf = (pool: PacketPool, h: number) => pool.data.slice(pool.frameOffset(h), pool.frameOffset(h) + pool.length[h]);

t.test('completed checksums are the ones the sender would have written', async (t) => {
  const pool = PacketPool.standalone(8);
  const cases: [string, Uint8Array][] = [
    ['TCP over IPv4, SYN', tcp4({ ...L2, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 80, flags: 'S' })],
    ['TCP over IPv4, 1460 bytes of data', tcp4({ ...L2, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 40000, dstPort: 80, flags: 'PA', payload: 1460 })],
    ['TCP over IPv4, an odd length', tcp4({ ...L2, src: '192.0.2.1', dst: '198.51.100.7', srcPort: 1, dstPort: 2, payload: 1001 })],
    ['UDP over IPv4', udp4({ ...L2, src: '10.0.1.2', dst: '10.0.2.2', srcPort: 5000, dstPort: 53, payload: 333 })],
    ['TCP over IPv6', tcp6({ ...L2, src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 40000, dstPort: 443, flags: 'PA', payload: 1200 })],
    ['UDP over IPv6, a jumbo frame', udp6({ ...L2, src: '2001:db8:1::2', dst: '2001:db8:2::2', srcPort: 5000, dstPort: 5001, payload: 8900 })],
  ];
  for (const [what, whole] of cases) {
    const { frame, start, offset } = partial(whole);
    t.not(frame[start + offset] * 256 + frame[start + offset + 1], whole[start + offset] * 256 + whole[start + offset + 1], `${what}: the partial field differs from the checksum`);
    const h = load(pool, frame, start, offset);
    t.ok(leavesChecksum(pool, h), `${what}: left to do`);
    completeChecksum(pool, h);
    t.same(frameOf(pool, h), whole, `${what}: completed byte for byte`);
    t.notOk(leavesChecksum(pool, h), `${what}: nothing left to do`);
    pool.free(h);
  }
});

t.test('a UDP sum of zero goes as 0xffff; odd starts and lengths sum as RFC 1071 does', async (t) => {
  const pool = PacketPool.standalone(8);
  // A UDP frame whose complemented sum is 0: adjust two payload bytes until it is.
  const whole = udp4({ ...L2, src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 64 });
  const { frame, start, offset } = partial(whole);
  const sum = onesSum(frame, start);
  const need = sum === 0xffff ? 0 : 0xffff - sum;
  const at = frame.length - 2;
  const word = ((frame[at] << 8) | frame[at + 1]) + need;
  const fixed = word > 0xffff ? (word & 0xffff) + 1 : word;
  frame[at] = fixed >>> 8;
  frame[at + 1] = fixed & 0xff;
  t.equal(onesSum(frame, start), 0xffff, 'the frame sums to 0xffff: its checksum would be 0');
  const h = load(pool, frame, start, offset);
  completeChecksum(pool, h);
  t.same([pool.data[pool.frameOffset(h) + start + offset], pool.data[pool.frameOffset(h) + start + offset + 1]], [0xff, 0xff], 'written as 0xffff, not 0 ("no checksum")');
  pool.free(h);

  const next = prng(7);
  const random = (n: number) => next() % n;
  for (let k = 0; k < 200; k++) {
    const len = 60 + random(3000);
    const bytes = new Uint8Array(len);
    for (let i = 0; i < len; i++) bytes[i] = random(256);
    const s = 14 + random(40);
    const off = 2 * random(Math.floor((len - s - 2) / 2));
    bytes[s + off] = random(256);
    bytes[s + off + 1] = random(256);
    const expected = ~onesSum(bytes, s) & 0xffff;
    const g = load(pool, bytes, s, off);
    completeChecksum(pool, g);
    const d = pool.data;
    const p = pool.frameOffset(g) + s + off;
    const got = (d[p] << 8) | d[p + 1];
    if (got !== expected && !(expected === 0 && off === 6 && got === 0xffff)) {
      t.fail(`start ${s}, length ${len}, field at +${off}: ${got.toString(16)}, expected ${expected.toString(16)}`);
      break;
    }
    // What a receiver checks: the range and the sum the field held (the pseudo-header's, in a real frame).
    const pseudo = (bytes[s + off] << 8) | bytes[s + off + 1];
    t.equal(onesSum(frameOf(pool, g), s, len, pseudo), 0xffff, `start ${s} (${s & 1 ? 'odd' : 'even'}), ${len - s} bytes: the completed range and the partial sum add up to 0xffff`);
    pool.free(g);
  }
});

t.test('a field outside the frame: checked on the way in, never written on the way out', async (t) => {
  const pool = PacketPool.standalone(8);
  const header = (flags: number, gsoType: number, start: number, offset: number) => {
    const h = pool.alloc();
    const at = pool.frameOffset(h) - 12;
    pool.data.fill(0, at, at + 12);
    pool.data[at] = flags;
    pool.data[at + 1] = gsoType;
    pool.data[at + 6] = start & 0xff;
    pool.data[at + 7] = start >>> 8;
    pool.data[at + 8] = offset & 0xff;
    pool.data[at + 9] = offset >>> 8;
    return h;
  };
  const taken: [string, number, boolean][] = [
    ['no flags', header(0, 0, 0, 0), true],
    ['NEEDS_CSUM, TCP after 20 bytes of IPv4', header(1, 0, 34, 16), true],
    ['NEEDS_CSUM, the field\'s last byte is the frame\'s', header(1, 0, 34, 64), true],
    ['NEEDS_CSUM, the field one byte past the frame', header(1, 0, 34, 65), false],
    ['NEEDS_CSUM, starting inside the Ethernet header', header(1, 0, 13, 16), false],
    ['NEEDS_CSUM, csum_start 0xffff', header(1, 0, 0xffff, 0xffff), false],
    ['a segmentation offload (TCPv4), never offered', header(1, 1, 34, 16), false],
  ];
  for (const [what, h, ok] of taken) {
    t.equal(takeOffloadHeader(pool, h, 100), ok, `${what}: ${ok ? 'taken' : 'refused'}`);
    pool.free(h);
  }
  // A stage shortened the frame under the field: nothing is written past the frame.
  const h = load(pool, new Uint8Array(100), 34, 16);
  pool.length[h] = 40;
  const after = pool.data.slice(pool.frameOffset(h) + 40, pool.frameOffset(h) + 100);
  completeChecksum(pool, h);
  t.same(pool.data.slice(pool.frameOffset(h) + 40, pool.frameOffset(h) + 100), after, 'bytes past the shortened frame untouched');
  t.notOk(leavesChecksum(pool, h), 'and nothing left to do');
  // A buffer taken again starts with nothing to do.
  pool.free(h);
  const again = pool.alloc();
  t.equal(again, h, 'the same buffer');
  t.notOk(leavesChecksum(pool, again), 'starts with nothing left to do');
});
