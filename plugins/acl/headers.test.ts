// parseBurst's fast path (untagged IPv4 with a UDP or TCP header, its 32-bit fields read
// as 16-bit words) against parseFrame, which reads every field a byte at a time: the same
// keys and offsets on random frames.
import t from 'tap';
import { Batch } from '../../src/dataplane/batch.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { tcp4, udp4 } from '../../test/support/frames.ts';
import { prng } from '../../test/support/prng.ts';
import { createFlowKeys } from './classifier.ts';
import { Ipv6Walk } from '../../src/pipeline/api.ts';
import { createHeaders, HEADERS_L4, parseBurst, parseFrame } from './headers.ts';

/** Uniform in [0, 1), from the tests' seeded generator. */
function uniform(seed: number): () => number {
  const next = prng(seed);
  return () => next() / 4294967296;
}

t.test('parseBurst reads addresses and ports as parseFrame does, on random IPv4 frames', async (t) => {
  const rnd = uniform(1130);
  const byte = () => Math.floor(rnd() * 256);
  const address = () => `${byte()}.${byte()}.${byte()}.${byte()}`;
  const pool = PacketPool.standalone(64);
  const batch = new Batch(pool);
  const fast = createHeaders(createFlowKeys(32), 32);
  const slow = createHeaders(createFlowKeys(32), 32);
  const walk = new Ipv6Walk();
  let compared = 0;
  for (let round = 0; round < 100; round++) {
    for (let i = 0; i < 32; i++) {
      const o = { src: address(), dst: address(), srcPort: Math.floor(rnd() * 65536), dstPort: Math.floor(rnd() * 65536), ihl: 5 + Math.floor(rnd() * 11), payload: Math.floor(rnd() * 40) };
      const frame = rnd() < 0.5 ? udp4(o) : tcp4({ ...o, flags: 'A' });
      const h = pool.alloc();
      batch.handles[i] = h;
      pool.data.set(frame, pool.frameOffset(h));
      pool.length[h] = frame.length;
    }
    batch.begin(0, 32);
    parseBurst(fast, walk, batch, false, null, 0);
    for (let i = 0; i < 32; i++) {
      parseFrame(slow, walk, i, batch.data, batch.offset(i), batch.length(i));
      const f = fast.keys;
      const s = slow.keys;
      const a = [fast.status[i], fast.l4[i], f.protocol[i], f.src4[i], f.dst4[i], f.srcPort[i], f.dstPort[i]];
      const b = [slow.status[i], slow.l4[i], s.protocol[i], s.src4[i], s.dst4[i], s.srcPort[i], s.dstPort[i]];
      if (a.some((v, k) => v !== b[k])) t.fail(`frame ${round}.${i}: parseBurst ${a.join(' ')}, parseFrame ${b.join(' ')}`);
      if (fast.status[i] === HEADERS_L4) compared++;
      pool.free(batch.handles[i]);
    }
  }
  t.equal(compared, 3200, 'every frame parsed by the fast path and compared');
});
