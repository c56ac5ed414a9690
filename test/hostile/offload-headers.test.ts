// A guest that negotiated checksum and segmentation offloads and lies in every virtio-net
// header: random flags, gso types, gso sizes and checksum positions, on random bytes and on
// TCP super-frames whose gso_size asks for anything from one byte to more than a frame.
// Whatever vrouter takes it cuts and completes for the neighbours (which negotiated no
// offloads) within their frames; every frame is taken or dropped with a reason; the
// daemon runs, and the neighbours keep forwarding.
import t from 'tap';
import { bit, NET_HDR_LEN, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_RING_F_EVENT_IDX } from '../../src/virtio/constants.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { prng } from '../support/prng.ts';
import { withNeighbours } from './lib.ts';

const FRAMES = 1500;
const SLOTS = 32;
const SLOT_BYTES = 70_000;

t.test('random offload headers from a guest that negotiated them', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const features = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
  const h = await startDevice(n.vr.sockets.h, { features, queueSize: 64 });
  t.teardown(() => h.close());
  const next = prng(11);
  const random = (k: number) => next() % k;
  const slots = Array.from({ length: SLOTS }, () => h.ram.alloc(SLOT_BYTES));

  /** A broadcast frame (it floods to a and b): random bytes, or TCP/IPv4 with a header that says "cut me". */
  const frame = (at: number): number => {
    const d = h.ram.bytes;
    const superFrame = random(2) === 0;
    const len = superFrame ? 54 + 1 + random(65_000) : 14 + random(9_100);
    for (let k = 0; k < NET_HDR_LEN + len; k++) d[at + k] = random(256);
    const f = at + NET_HDR_LEN;
    d.fill(0xff, f, f + 6);
    if (superFrame) {
      const total = Math.min(len - 14, 0xffff);
      d.set([0x08, 0x00, 0x45, 0, total >> 8, total & 0xff, 0, 0, 0x40, 0, 64, 6], f + 12);
      d[f + 34 + 12] = 0x50;
      const gsoSize = [1, 100, 536, 1448, 1460, 1461, 9000, 65535][random(8)];
      d.set([1, [1, 4, 0x81, 3, 5][random(5)], 54, 0, gsoSize & 0xff, gsoSize >> 8, 34, 0, 16, 0, 0, 0], at);
    }
    return len;
  };

  let sent = 0;
  while (sent < FRAMES) {
    const heads = slots.map((at) => {
      const len = frame(at);
      return h.tx.addChain([{ addr: h.ram.gpa(at), len: NET_HDR_LEN + len }]);
    });
    h.tx.makeAvailable(...heads);
    h.kick();
    let back = 0;
    await waitFor('the burst taken', () => {
      back += h.tx.takeUsed().length;
      return back >= heads.length || undefined;
    }, 5000);
    sent += heads.length;
  }

  const s = await n.vr.stats();
  const hs = s.h;
  const dropped = hs.drops.offload_header_bad + hs.drops.frame_too_long + hs.drops.frame_too_short + hs.drops.bad_descriptor + hs.drops.no_buffer;
  t.equal(hs.rx_packets + dropped, sent, `every frame taken (${hs.rx_packets}) or dropped with a reason (${JSON.stringify(Object.fromEntries(Object.entries(hs.drops).filter(([, v]) => v > 0)))})`);
  t.ok(hs.drops.offload_header_bad > 100, `headers vrouter cannot honour refused: ${hs.drops.offload_header_bad}`);
  t.ok(hs.offloads.rx_gso_frames > 10, `super-frames taken: ${hs.offloads.rx_gso_frames}`);
  const cut = s.a.offloads.gso_segments + s.b.offloads.gso_segments;
  t.ok(cut > 10, `and cut into ${cut} segments for a and b, which take none`);
  t.ok(n.vr.alive(), 'vrouter runs');
  t.ok(await n.stillForward(), 'a and b still forward');
});
