// Offloads follow each connection's features, never an earlier one's: a guest that takes
// super-frames with their checksums left to do gets them so; the same guest back without
// offloads and without mergeable buffers gets segments, each complete, each in one
// buffer; a sender back without CSUM has its headers ignored. Against a running vrouter,
// through the driver-side test frontend.
import t from 'tap';
import {
  bit,
  NET_HDR_LEN,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
} from '../../src/virtio/constants.ts';
import { postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { waitFor } from '../support/traffic.ts';
import { parseFrame } from '../support/frames.ts';
import { adminClient } from '../support/admin-client.ts';

const BASE = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX);
const OFFLOADS = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO4);
const PAYLOAD = 10_000;
const MSS = 1448;

/** A TCP/IPv4 super-frame from 10.0.0.1 to 10.0.0.2 (MACs a -> b), its checksum field the pseudo-header's sum. */
function superFrame(): Uint8Array {
  const tcpLen = 20;
  const f = new Uint8Array(14 + 20 + tcpLen + PAYLOAD);
  f.set([0x52, 0x54, 0, 0, 0, 0x0b, 0x52, 0x54, 0, 0, 0, 0x0a, 0x08, 0x00]);
  const total = 20 + tcpLen + PAYLOAD;
  f.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  f.set([0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xfa, 0xf0], 34);
  for (let k = 0; k < PAYLOAD; k++) f[54 + k] = k & 0xff;
  let sum = 0;
  for (let k = 26; k < 34; k += 2) sum += (f[k] << 8) | f[k + 1];
  sum += 6 + tcpLen + PAYLOAD;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f[50] = sum >> 8;
  f[51] = sum & 0xff;
  return f;
}

/** NEEDS_CSUM at 34 + 16, TCPv4 cut at MSS, headers 54 bytes. */
const TSO_HEADER = Uint8Array.of(1, 1, 54, 0, MSS & 0xff, MSS >> 8, 34, 0, 16, 0, 0, 0);

/** Frames b's RX queue got: each used buffer's header and bytes (one buffer a frame: num_buffers is checked to be 1). */
async function received(dev: VirtioNetDevice, posted: Map<number, number>, count: number): Promise<{ header: Uint8Array; frame: Uint8Array }[]> {
  const got: { header: Uint8Array; frame: Uint8Array }[] = [];
  await waitFor(`${count} frames on b`, () => {
    for (const u of dev.rx.takeUsed()) {
      const off = posted.get(u.id)!;
      got.push({ header: dev.ram.bytes.slice(off, off + NET_HDR_LEN), frame: dev.ram.bytes.slice(off + NET_HDR_LEN, off + u.len) });
    }
    return got.length >= count || undefined;
  }, 5000);
  return got;
}

function post(dev: VirtioNetDevice, n: number, len: number): Map<number, number> {
  const posted = new Map<number, number>();
  for (let k = 0; k < n; k++) {
    const { head, off } = postRxBuffer(dev.rx, len);
    posted.set(head, off);
  }
  dev.kick();
  return posted;
}

t.test('each connection gets what it negotiated', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b']));
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const frame = superFrame();

  // b takes super-frames with their checksums left to do, into mergeable buffers.
  let a = await startDevice(vr.sockets.a, { features: BASE | OFFLOADS });
  let b = await startDevice(vr.sockets.b, { features: BASE | OFFLOADS | bit(VIRTIO_NET_F_MRG_RXBUF) });
  let posted = post(b, 16, 4096);
  sendFrame(a.tx, frame, { header: TSO_HEADER });
  a.kick();
  const [first] = await received(b, posted, 1);
  const parts = first.header[10] | (first.header[11] << 8);
  t.same([...first.header.subarray(0, 10)], [...TSO_HEADER.subarray(0, 10)], 'b\'s header: NEEDS_CSUM at 34 + 16, TCPv4 cut at 1448, 54 bytes of headers');
  t.equal(parts, 3, 'the super-frame over 3 mergeable buffers');
  t.same(first.frame, frame.subarray(0, 4096 - NET_HDR_LEN), 'its first buffer as a sent it');
  b.close();

  // b back without offloads or mergeable buffers: 7 complete segments, one buffer each.
  b = await startDevice(vr.sockets.b, { features: BASE });
  posted = post(b, 16, 2048);
  const names = await waitFor('b\'s queues running again', async () => {
    const device = ((await api.call('GET', '/ports/b')).json as { state: { device: { featureNames: string[]; vrings: { running: boolean }[] } | null } }).state.device;
    return device !== null && device.vrings.every((v) => v.running) ? device.featureNames : undefined;
  });
  t.notOk(names.some((n) => /CSUM|TSO|MRG_RXBUF/.test(n)), `b negotiated none of them now: ${names.join(' ')}`);
  sendFrame(a.tx, frame, { header: TSO_HEADER });
  a.kick();
  const segments = await received(b, posted, Math.ceil(PAYLOAD / MSS));
  t.equal(segments.length, 7, '7 segments');
  t.ok(segments.every((s) => s.header.every((x, k) => x === (k === 10 ? 1 : 0))), 'each with a plain header (num_buffers 1)');
  const joined: number[] = [];
  segments.forEach((s, k) => {
    const p = parseFrame(s.frame);
    t.ok(p.ip?.headerChecksumOk && p.l4?.checksumOk, `segment ${k}: IPv4 and TCP checksums right`);
    joined.push(...s.frame.subarray(54));
  });
  t.same(Uint8Array.from(joined), frame.subarray(54), 'the payload whole, in order');

  // a back without CSUM: its headers mean nothing; a frame longer than its MTU is one too long.
  a.close();
  a = await startDevice(vr.sockets.a, { features: BASE });
  const before = (await vr.stats()).a.drops.frame_too_long;
  sendFrame(a.tx, frame, { header: TSO_HEADER });
  a.kick();
  await waitFor('the super-frame refused', async () => ((await vr.stats()).a.drops.frame_too_long > before ? true : undefined), 5000);
  t.pass('a super-frame from a connection without TSO: frame_too_long');
  const s = await vr.stats();
  t.equal(s.a.drops.offload_header_bad, 0, 'not taken for an offload header');
  t.ok(s.a.offloads.rx_gso_frames === 2 && s.b.offloads.tx_gso_frames === 1 && s.b.offloads.gso_segments === 7, `counted: ${JSON.stringify(s.b.offloads)}`);
  a.close();
  b.close();
});

t.test('a burst of super-frames flooded to ports that take none whole: the PMD cuts what one burst to one port needs, at most', async (t) => {
  const receivers = ['b', 'c', 'd', 'e', 'f'];
  const vr = await startVrouter(bridgeConfig(['a', ...receivers]));
  t.teardown(() => vr.stop());
  const a = await startDevice(vr.sockets.a, { features: BASE | OFFLOADS });
  t.teardown(() => a.close());
  for (const name of receivers) {
    const dev = await startDevice(vr.sockets[name], { features: BASE });
    t.teardown(() => dev.close());
  }
  // 16 broadcast super-frames of 64 segments each (gso_size 1000), published at once: one burst.
  const frames = 16;
  const mss = 1000;
  const payload = 64 * mss;
  const f = new Uint8Array(54 + payload);
  f.set(superFrame().subarray(0, 54));
  f.fill(0xff, 0, 6);
  const total = 40 + payload;
  f[16] = total >> 8;
  f[17] = total & 0xff;
  const header = Uint8Array.of(1, 1, 54, 0, mss & 0xff, mss >> 8, 34, 0, 16, 0, 0, 0);
  const heads: number[] = [];
  for (let k = 0; k < frames; k++) {
    const off = a.ram.alloc(NET_HDR_LEN + f.length);
    a.ram.bytes.set(header, off);
    a.ram.bytes.set(f, off + NET_HDR_LEN);
    heads.push(a.tx.addChain([{ addr: a.ram.gpa(off), len: NET_HDR_LEN + f.length }]));
  }
  a.tx.makeAvailable(...heads);
  a.kick();
  const counts = () => vr.stats().then((s) => receivers.reduce((sum, p) => ({ segments: sum.segments + s[p].offloads.gso_segments, refused: sum.refused + s[p].drops.no_buffer }), { segments: 0, refused: 0 }));
  const wanted = frames * receivers.length;
  const done = await waitFor('every copy cut or refused', async () => {
    const c = await counts();
    return c.segments / 64 + c.refused === wanted ? c : undefined;
  }, 5000);
  t.ok(done.segments <= 32 * 64 + 63, `${done.segments} segments cut for ${wanted} copies of a 64-segment super-frame: no more than a burst to one port needs (2,048) and one super-frame's`);
  t.ok(done.refused > 0, `the other ${done.refused} copies dropped as no_buffer`);
  t.equal(a.tx.takeUsed().length, frames, 'the sender got its buffers back');
  t.ok(vr.alive());
});
