// Checksums guests leave to do (VIRTIO_NET_F_CSUM): completed by vrouter they must be what
// the sender would have written. Frames built here with their checksums right are turned
// into what a guest with checksum offload sends (the field holding the pseudo-header's
// sum only), completed, and compared byte for byte; odd starts and lengths against a plain
// RFC 1071 sum. Super-frames (TSO) cut into segments as a NIC would: lengths, IDs,
// sequence numbers, flags, checksums and the payload whole; and those refused.
import t from 'tap';
import { PacketPool, OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS } from '../../src/dataplane/packet-pool.ts';
import {
  completeChecksum,
  isSegmented,
  leavesChecksum,
  MAX_GSO_SEGMENTS,
  OFFLOAD_COMPLETE_NOW,
  OFFLOAD_CSUM_FROM_GUEST,
  OFFLOAD_ECN_FROM_GUEST,
  OFFLOAD_HEADER_BAD,
  OFFLOAD_HEADER_TAKEN,
  OFFLOAD_TSO4_FROM_GUEST,
  OFFLOAD_TSO6_FROM_GUEST,
  segmentSuperFrame,
  takeOffloadHeader,
} from '../../src/dataplane/offloads.ts';
import { Batch } from '../../src/dataplane/batch.ts';
import { parseFrame, tcp4, tcp6, udp4, udp6 } from '../support/frames.ts';
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
  const header = (flags: number, gsoType: number, start: number, offset: number, frame: Uint8Array = new Uint8Array(100)) => {
    const h = pool.alloc();
    const at = pool.frameOffset(h) - 12;
    pool.data.fill(0, at, at + 12);
    pool.data.set(frame, pool.frameOffset(h));
    pool.data[at] = flags;
    pool.data[at + 1] = gsoType;
    pool.data[at + 6] = start & 0xff;
    pool.data[at + 7] = start >>> 8;
    pool.data[at + 8] = offset & 0xff;
    pool.data[at + 9] = offset >>> 8;
    return h;
  };
  const tcp = tcp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: 46 });
  const taken: [string, number, number][] = [
    ['no flags', header(0, 0, 0, 0), OFFLOAD_HEADER_TAKEN],
    ['NEEDS_CSUM, TCP after 20 bytes of IPv4', header(1, 0, 34, 16, tcp), OFFLOAD_HEADER_TAKEN],
    ['NEEDS_CSUM, the field\'s last byte is the frame\'s (no TCP or UDP checksum: completed at once)', header(1, 0, 34, 64), OFFLOAD_COMPLETE_NOW],
    ['NEEDS_CSUM, the field one byte past the frame', header(1, 0, 34, 65), OFFLOAD_HEADER_BAD],
    ['NEEDS_CSUM, starting inside the Ethernet header', header(1, 0, 13, 16), OFFLOAD_HEADER_BAD],
    ['NEEDS_CSUM, csum_start 0xffff', header(1, 0, 0xffff, 0xffff), OFFLOAD_HEADER_BAD],
    ['a segmentation offload (TCPv4) the connection did not negotiate', header(1, 1, 34, 16, tcp), OFFLOAD_HEADER_BAD],
    ['a segmentation type without NEEDS_CSUM', header(0, 1, 34, 16, tcp), OFFLOAD_HEADER_BAD],
  ];
  const names = ['refused', 'taken', 'to complete at once'];
  for (const [what, h, want] of taken) {
    t.equal(takeOffloadHeader(pool, h, 100, OFFLOAD_CSUM_FROM_GUEST, 1514), want, `${what}: ${names[want]}`);
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

/**
 * A super-frame as a guest with TSO sends it: Ethernet, IPv4 (ID 0x1234, DF) or IPv6, TCP
 * with `options` bytes, the payload; lengths of the whole; the TCP checksum field holding
 * the pseudo-header's sum (for the whole length, as Linux leaves it).
 */
function superFrame(v6: boolean, payload: Uint8Array, options: number, flags: number): Uint8Array {
  const l3 = 14;
  const ipLen = v6 ? 40 : 20;
  const tcpLen = 20 + options;
  const f = new Uint8Array(l3 + ipLen + tcpLen + payload.length);
  f.set([2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, v6 ? 0x86 : 0x08, v6 ? 0xdd : 0x00]);
  const ip = l3;
  if (v6) {
    f[ip] = 0x60;
    f[ip + 4] = (tcpLen + payload.length) >> 8;
    f[ip + 5] = (tcpLen + payload.length) & 0xff;
    f[ip + 6] = 6;
    f[ip + 7] = 64;
    f.set([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], ip + 8);
    f.set([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], ip + 24);
  } else {
    const total = ipLen + tcpLen + payload.length;
    f.set([0x45, 0, total >> 8, total & 0xff, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 1, 2, 10, 0, 2, 2], ip);
  }
  const tcp = ip + ipLen;
  f.set([0x9c, 0x40, 0, 80, 0xfe, 0xff, 0xff, 0x00, 0, 0, 0, 1, (tcpLen / 4) << 4, flags, 0xfa, 0xf0], tcp);
  for (let k = 0; k < options; k++) f[tcp + 20 + k] = k === options - 1 ? 0 : 1; // NOPs, then end of options
  f.set(payload, tcp + tcpLen);
  const addresses = v6 ? f.subarray(ip + 8, ip + 40) : f.subarray(ip + 12, ip + 20);
  const pseudo = onesSum(addresses, 0, addresses.length, 6 + tcpLen + payload.length);
  f[tcp + 16] = pseudo >> 8;
  f[tcp + 17] = pseudo & 0xff;
  return f;
}

/** A virtio-net header before frame `h`, as the receive path leaves it in the headroom. */
function header(pool: PacketPool, h: number, o: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; start: number; offset: number }): void {
  const at = pool.frameOffset(h) - 12;
  const v = [o.flags, o.gsoType, o.hdrLen & 0xff, o.hdrLen >> 8, o.gsoSize & 0xff, o.gsoSize >> 8, o.start & 0xff, o.start >> 8, o.offset & 0xff, o.offset >> 8, 0, 0];
  pool.data.set(v, at);
}

t.test('super-frames are cut into the segments a NIC would send', async (t) => {
  const pool = PacketPool.standalone(256, 4);
  const tso = OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO4_FROM_GUEST | OFFLOAD_TSO6_FROM_GUEST | OFFLOAD_ECN_FROM_GUEST;
  const cases: [string, boolean, number, number, number, number][] = [
    // what, IPv6, payload bytes, TCP option bytes, gso_size, TCP flags (PSH|ACK = 0x18, FIN = 1, CWR = 0x80)
    ['IPv4, 64000 bytes at 1448, the last segment short, PSH on the last only', false, 64000, 12, 1448, 0x18],
    ['IPv6, 30000 bytes at 1440, FIN and PSH on the last only, CWR on the first only', true, 30000, 0, 1440, 0x99],
    ['IPv4 over a 9000 MTU, 3 full segments', false, 3 * 8948, 0, 8948, 0x10],
  ];
  for (const [what, v6, bytes, options, mss, flags] of cases) {
    const payload = new Uint8Array(bytes);
    for (let k = 0; k < bytes; k++) payload[k] = (k * 7 + (k >> 8)) & 0xff;
    const frame = superFrame(v6, payload, options, flags);
    const h = pool.allocSuper();
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
    const l4 = 14 + (v6 ? 40 : 20);
    const hdrLen = l4 + 20 + options;
    header(pool, h, { flags: 1, gsoType: (v6 ? 4 : 1) | (flags & 0x80 ? 0x80 : 0), hdrLen, gsoSize: mss, start: l4, offset: 16 });
    t.equal(takeOffloadHeader(pool, h, frame.length, tso, mss === 8948 ? 9014 : 1514), OFFLOAD_HEADER_TAKEN, `${what}: taken`);
    t.ok(isSegmented(pool, h), 'a super-frame');
    const out = new Uint32Array(MAX_GSO_SEGMENTS);
    const free = pool.available;
    const n = segmentSuperFrame(pool, h, out, 0);
    const expected = Math.ceil(bytes / mss);
    t.equal(n, expected, `${what}: ${expected} segments`);
    t.equal(pool.available, free - n, 'each in a buffer of its own');
    const joined: number[] = [];
    let good = 0;
    for (let k = 0; k < n; k++) {
      const s = out[k];
      const segLen = k === n - 1 ? bytes - k * mss : mss;
      t.equal(pool.length[s], hdrLen + segLen, `segment ${k}: ${segLen} bytes of payload`);
      t.ok(leavesChecksum(pool, s), `segment ${k}: its checksum left to do`);
      completeChecksum(pool, s);
      const seg = frameOf(pool, s);
      const p = parseFrame(seg);
      t.equal(p.ip?.totalLength, seg.length - 14, `segment ${k}: IP length`);
      if (!v6) {
        t.ok(p.ip?.headerChecksumOk, `segment ${k}: IPv4 header checksum`);
        t.equal(p.ip?.id, (0x1234 + k) & 0xffff, `segment ${k}: IPv4 ID + ${k}`);
      }
      const tcp = l4;
      const seq = ((seg[tcp + 4] << 24) | (seg[tcp + 5] << 16) | (seg[tcp + 6] << 8) | seg[tcp + 7]) >>> 0;
      t.equal(seq, (0xfeffff00 + k * mss) >>> 0, `segment ${k}: sequence number (wrapping past 2^32)`);
      const f = seg[tcp + 13];
      t.equal(f & 0x09, k === n - 1 ? flags & 0x09 : 0, `segment ${k}: FIN and PSH ${k === n - 1 ? 'as sent' : 'cleared'}`);
      t.equal(f & 0x80, k === 0 ? flags & 0x80 : 0, `segment ${k}: CWR ${k === 0 ? 'as sent' : 'cleared'}`);
      t.same(seg.subarray(tcp + 20, tcp + 20 + options), frame.subarray(tcp + 20, tcp + 20 + options), `segment ${k}: TCP options copied`);
      const addresses = v6 ? seg.subarray(22, 54) : seg.subarray(26, 34);
      if (onesSum(seg, tcp, seg.length, onesSum(addresses, 0, addresses.length, 6 + seg.length - tcp)) === 0xffff) good++;
      joined.push(...seg.subarray(hdrLen));
      pool.free(s);
    }
    t.equal(good, n, `${what}: every segment's TCP checksum right`);
    t.same(Uint8Array.from(joined), payload, `${what}: the payload, in order, whole`);
    pool.free(h);
  }
});

t.test('super-frames vrouter will not cut', async (t) => {
  const pool = PacketPool.standalone(256, 4);
  const tso = OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO4_FROM_GUEST | OFFLOAD_TSO6_FROM_GUEST;
  const payload = new Uint8Array(20000);
  const v4 = superFrame(false, payload, 0, 0x18);
  const refused: [string, Partial<{ flags: number; gsoType: number; gsoSize: number; start: number; offset: number }>, number, Uint8Array?][] = [
    ['a gso_size that makes each segment longer than the port\'s frames', { gsoSize: 1461 }, tso],
    ['a gso_size of 100: 200 segments', { gsoSize: 100 }, tso],
    ['a gso_size of 0', { gsoSize: 0 }, tso],
    ['TCPv6 on an IPv4 frame', { gsoType: 4 }, tso],
    ['UDP fragmentation offload (gso_type 3)', { gsoType: 3 }, tso],
    ['ECN without HOST_ECN', { gsoType: 0x81 }, tso],
    ['TCPv4 without HOST_TSO4', {}, OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO6_FROM_GUEST],
    ['csum_start not at the TCP header', { start: 30 }, tso],
    ['csum_offset not TCP\'s', { offset: 6 }, tso],
    ['a UDP packet', {}, tso, (() => { const f = v4.slice(); f[23] = 17; return f; })()],
    // csum_start at its IHL (16 bytes): cutting would write TCP's fields over the IP header.
    ['an IPv4 header length (IHL) below 5', { start: 30 }, tso, (() => { const f = v4.slice(); f[14] = 0x44; f[42] = 0x50; return f; })()],
    ['an IPv4 fragment (more fragments)', {}, tso, (() => { const f = v4.slice(); f[20] = 0x20; return f; })()],
    ['an IPv4 fragment (a later one)', {}, tso, (() => { const f = v4.slice(); f[21] = 0x10; return f; })()],
  ];
  for (const [what, over, offloads, frame = v4] of refused) {
    const h = pool.allocSuper();
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
    header(pool, h, { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1460, start: 34, offset: 16, ...over });
    t.equal(takeOffloadHeader(pool, h, frame.length, offloads, 1514), OFFLOAD_HEADER_BAD, `${what}: refused`);
    pool.free(h);
  }
  // One segment's worth is a plain frame with its checksum left to do.
  const small = superFrame(false, new Uint8Array(1000), 0, 0x18);
  const h = pool.alloc();
  pool.data.set(small, pool.frameOffset(h));
  pool.length[h] = small.length;
  header(pool, h, { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1460, start: 34, offset: 16 });
  t.equal(takeOffloadHeader(pool, h, small.length, tso, 1514), OFFLOAD_HEADER_TAKEN, 'a super-frame of one segment: taken');
  t.notOk(isSegmented(pool, h), 'as a plain frame');
  t.ok(leavesChecksum(pool, h), 'with its checksum left to do');
});

t.test('a stage that shortens a super-frame or a frame with its checksum left to do keeps only what still fits', async (t) => {
  const pool = PacketPool.standalone(256, 4);
  const tso = OFFLOAD_CSUM_FROM_GUEST | OFFLOAD_TSO4_FROM_GUEST;
  const frame = superFrame(false, new Uint8Array(20000), 0, 0x18);
  const take = () => {
    const h = pool.allocSuper();
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
    header(pool, h, { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1460, start: 34, offset: 16 });
    t.ok(takeOffloadHeader(pool, h, frame.length, tso, 1514) === OFFLOAD_HEADER_TAKEN && isSegmented(pool, h), 'a super-frame of 20000 bytes');
    const batch = new Batch(pool, null);
    batch.handles[0] = h;
    batch.begin(0, 1);
    return { h, batch };
  };
  const cases: [string, number, number, boolean][] = [
    // what, the new length, segments it is cut into (0: no super-frame), its checksum still left to do
    ['cut to 3 segments', 54 + 3 * 1460, 3, true],
    ['cut to one segment\'s payload', 54 + 1000, 1, true],
    ['cut to its headers (a guest\'s IP length that says so)', 54, 0, true],
    ['cut inside its TCP header, before the checksum field', 40, 0, false],
  ];
  for (const [what, length, segments, checksum] of cases) {
    const { h, batch } = take();
    batch.setLength(0, length);
    t.equal(isSegmented(pool, h), segments > 0, `${what}: ${segments > 0 ? 'still a super-frame' : 'no super-frame'}`);
    t.equal(leavesChecksum(pool, h), checksum, `${what}: ${checksum ? 'its checksum left to do' : 'no checksum left to do'}`);
    if (segments > 0) {
      const out = new Uint32Array(MAX_GSO_SEGMENTS);
      const n = segmentSuperFrame(pool, h, out, 0);
      t.equal(n, segments, `cut into ${segments}`);
      t.equal(pool.length[out[n - 1]], length - (segments - 1) * 1460, 'the last segment as long as what is left');
      for (let k = 0; k < n; k++) pool.free(out[k]);
    }
    pool.free(h);
  }
});
