// The forwarding fast path's header rewrites against the slow, obvious way: TTL - 1 with the
// checksum updated in place (RFC 1624, on machine-order words or on bytes) must give the
// checksum a full recomputation gives, and both MACs must be those of the next hop and the
// router, with the sender's MAC kept for later stages (receivedSource).
import t from 'tap';
import routing from './index.ts';
import { decrementTtlBytes } from './ipv4.ts';
import { PluginHarness } from '../../src/pipeline/testing.ts';
import { Batch } from '../../src/dataplane/batch.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { ipv4HeaderChecksum } from '../../src/pipeline/api.ts';
import { parseFrame, udp4 } from '../../test/support/frames.ts';

const ROUTER = '02:00:00:00:0a:01';
const NEXT_HOP = '02:00:00:00:0b:02';
const ports = [
  { name: 'a', settings: { addresses: ['10.0.1.1/24'], routerMac: ROUTER, mtu: 1500 } },
  { name: 'b', settings: { addresses: ['10.0.2.1/24'], routerMac: '02:00:00:00:0b:01', mtu: 1500 } },
];
const config = { routes: [{ prefix: '10.253.0.0/16', via: '10.0.2.2' }], neighbours: [{ address: '10.0.2.2', mac: NEXT_HOP, port: 'b' }] };

/** A small deterministic generator (mulberry32): failures replay. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const below = (rnd: () => number, n: number) => Math.floor(rnd() * n);

/** A UDP frame with random TTL (2..255), TOS, ID, DF, header length and addresses, its checksum right. */
function randomFrame(rnd: () => number): Uint8Array {
  return udp4({
    src: `10.254.${below(rnd, 256)}.${1 + below(rnd, 254)}`,
    dst: `10.253.${below(rnd, 256)}.${below(rnd, 256)}`,
    srcPort: below(rnd, 65536),
    dstPort: below(rnd, 65536),
    payload: below(rnd, 64),
    ttl: 2 + below(rnd, 254),
    tos: below(rnd, 256),
    id: below(rnd, 65536),
    df: rnd() < 0.5,
    ihl: 5 + below(rnd, 11),
    srcMac: '52:54:00:00:00:0a',
    dstMac: ROUTER,
  });
}

t.test('routed headers: TTL - 1 and a checksum equal to a full recomputation, on random headers', async (t) => {
  const h = await PluginHarness.create(routing, { ports, config });
  const rnd = random(20261130);
  let checked = 0;
  for (let burst = 0; burst < 200; burst++) {
    const frames = Array.from({ length: 32 }, () => randomFrame(rnd));
    const out = h.run('a', frames);
    for (let i = 0; i < frames.length; i++) {
      const o = out[i];
      if (o.to !== 'b') {
        t.fail(`frame ${burst}.${i} went to ${o.to} (${o.reason ?? ''}), not b`);
        continue;
      }
      const ihl = (o.frame[14] & 15) * 4;
      const ttlBefore = frames[i][22];
      if (o.frame[22] !== ttlBefore - 1) t.fail(`frame ${burst}.${i}: TTL ${o.frame[22]}, expected ${ttlBefore - 1}`);
      const stored = (o.frame[24] << 8) | o.frame[25];
      const computed = ipv4HeaderChecksum(o.frame, 14, ihl);
      if (stored !== computed) t.fail(`frame ${burst}.${i}: checksum ${stored.toString(16)}, a full recomputation gives ${computed.toString(16)}`);
      const parsed = parseFrame(o.frame);
      if (parsed.dstMac !== NEXT_HOP || parsed.srcMac !== '02:00:00:00:0b:01') t.fail(`frame ${burst}.${i}: MACs ${parsed.dstMac} ${parsed.srcMac}`);
      // Everything past the Ethernet header but TTL and checksum is as it came.
      const same = o.frame.length === frames[i].length && o.frame.every((b, k) => k < 12 || k === 22 || k === 24 || k === 25 || b === frames[i][k]);
      if (!same) t.fail(`frame ${burst}.${i}: bytes other than TTL and checksum changed`);
      checked++;
    }
  }
  t.equal(checked, 200 * 32, 'every frame routed and checked');
});

t.test('decrementTtlBytes (any host, any alignment) agrees with a full recomputation', async (t) => {
  const rnd = random(7);
  const d = new Uint8Array(64 + 1);
  let wrong = 0;
  for (let n = 0; n < 100000; n++) {
    const ip = below(rnd, 2); // even and odd offsets
    for (let k = 0; k < 20; k++) d[ip + k] = below(rnd, 256);
    d[ip] = 0x45;
    d[ip + 8] = 2 + below(rnd, 254);
    const check = ipv4HeaderChecksum(d, ip, 20);
    d[ip + 10] = check >>> 8;
    d[ip + 11] = check & 0xff;
    const ttl = d[ip + 8];
    decrementTtlBytes(d, ip);
    if (d[ip + 8] !== ttl - 1 || ((d[ip + 10] << 8) | d[ip + 11]) !== ipv4HeaderChecksum(d, ip, 20)) wrong++;
  }
  t.equal(wrong, 0, 'no header of 100,000 got a checksum other than the recomputed one');
});

t.test('saveSource keeps the MAC a frame arrived with, before the frame is rewritten', async (t) => {
  const pool = PacketPool.standalone(8);
  const batch = new Batch(pool);
  const rnd = random(3);
  for (let i = 0; i < 4; i++) {
    const h = pool.alloc();
    batch.handles[i] = h;
    const off = pool.frameOffset(h);
    for (let k = 0; k < 64; k++) pool.data[off + k] = below(rnd, 256);
    pool.length[h] = 64;
  }
  batch.begin(0, 4);
  for (let i = 0; i < 4; i++) {
    const off = batch.offset(i);
    const source = Array.from(pool.data.subarray(off + 6, off + 12));
    const before = Array.from(pool.data.subarray(off - 8, off - 6));
    batch.saveSource(i);
    pool.data.fill(0xee, off, off + 12); // the rewrite
    batch.saveSource(i); // a second stage: the first saved MAC stays
    const at = batch.receivedSource(i);
    t.same(Array.from(pool.data.subarray(at, at + 6)), source, `frame ${i}: the source MAC as received`);
    t.same(Array.from(pool.data.subarray(off - 8, off - 6)), before, `frame ${i}: nothing before the saved MAC is touched`);
  }
});
