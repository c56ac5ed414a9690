// An AF_PACKET port's transmit ring when the kernel cannot take every frame at once: behind
// a slow qdisc the socket's send buffer fills, and the kernel leaves the frames after it in
// the ring (TP_STATUS_SEND_REQUEST) with nothing to tell it to go on. PacketRings hands
// them over again at every poll round (receive()) until the last one is taken: every frame
// leaves, with no further frame to send.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { ip, vethIntoNamespace } from '../support/netns.ts';
import { PacketRings } from '../../src/dataplane/packet-ring.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { COUNTERS_PER_PORT, queueBase, TX_PACKETS } from '../../src/dataplane/counters.ts';
import { close, mmapShared, munmap, packetRingBytes, packetSocket, view } from '../../src/sys/libc.ts';
import { ethernetFrame } from '../support/virtio-driver.ts';

const NETNS = `vrflush${process.pid}`;
const IFACE = `vrq${process.pid % 100000}`;
const PEER = `${IFACE}p`;
const FRAMES = 400;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Frames the peer's end of the veth has received. */
function peerReceived(): number {
  const [link] = JSON.parse(ip('-n', NETNS, '-s', '-j', 'link', 'show', 'dev', PEER)) as { stats64: { rx: { packets: number } } }[];
  return link.stats64.rx.packets;
}

t.test('frames the kernel left in the transmit ring leave at the next poll rounds, with nothing more to send', async (t) => {
  vethIntoNamespace(t, NETNS, IFACE, PEER);
  // Neither end sends anything of its own: the peer counts vrouter's frames alone.
  execFileSync('sysctl', ['-qw', `net.ipv6.conf.${IFACE}.disable_ipv6=1`]);
  execFileSync('ip', ['netns', 'exec', NETNS, 'sysctl', '-qw', `net.ipv6.conf.${PEER}.disable_ipv6=1`]);
  ip('-n', NETNS, 'link', 'set', PEER, 'up');
  ip('link', 'set', IFACE, 'up');
  // 20 Mbit/s, a queue long enough to drop nothing: 400 frames of 1,400 bytes take 0.22 s
  // to leave, and the socket's send buffer (about 200 KB) holds fewer than they are.
  execFileSync('tc', ['qdisc', 'add', 'dev', IFACE, 'root', 'tbf', 'rate', '20mbit', 'burst', '1600', 'limit', '3000000']);

  const shape = { blockBytes: 1 << 16, rxBlocks: 1, txBlocks: 16, txFrameBytes: 2048, retireMs: 10 };
  const fd = packetSocket(IFACE, shape);
  const bytes = packetRingBytes(shape);
  const address = mmapShared(fd, bytes);
  t.teardown(() => (munmap(address, bytes), close(fd)));
  const counters = new Float64Array(COUNTERS_PER_PORT);
  const rings = new PacketRings(fd, shape, view(address, bytes), counters, 0, queueBase(0, 0), 1518);

  const pool = PacketPool.standalone(512);
  const handles = new Uint32Array(FRAMES);
  const frame = ethernetFrame('02:00:00:00:00:0b', '02:00:00:00:00:0a', 1400 - 14, 1);
  for (let i = 0; i < FRAMES; i++) {
    const h = pool.alloc();
    pool.data.set(frame, pool.frameOffset(h));
    pool.length[h] = frame.length;
    handles[i] = h;
  }
  const before = peerReceived();
  rings.transmit(pool, handles, FRAMES);
  t.equal(counters[TX_PACKETS], FRAMES, 'every frame written to the ring');
  await sleep(500);
  const leftAlone = peerReceived() - before;
  t.ok(leftAlone < FRAMES, `with no poll round, the kernel took only ${leftAlone} of ${FRAMES} (what the send buffer held): the rest waits in the ring`);

  // Poll rounds, as a PMD's: each receive() tells the kernel again while frames wait.
  const received = new Uint32Array(16);
  const deadline = Date.now() + 5000;
  while (peerReceived() - before < FRAMES && Date.now() < deadline) {
    const n = rings.receive(pool, received, 0, 16);
    for (let i = 0; i < n; i++) pool.free(received[i]);
    await sleep(1);
  }
  t.equal(peerReceived() - before, FRAMES, 'with poll rounds, every frame left');
});
