// node bench/micro/xdp-rings.ts: the PMD's own cost per frame on an AF_XDP queue, against
// the kernel played by the tests (test/support/xdp-kernel.ts), so that the kernel's work is
// left out: receive (descriptor checked, frame copied into a packet buffer, chunk back on the
// fill ring) and transmit (frame copied into its slot's chunk, descriptor posted, completions
// taken, the kick), bursts of 32, 64 and 1518 bytes. The kick is a sendto() on a file that
// is not a socket: a system call's cost, none of the kernel's sending. The played kernel's
// own share of each round is timed alone and taken out.
import { closeAll, memfdCreate } from '../../src/sys/libc.ts';
import { COUNTERS_PER_PORT, queueBase } from '../../src/dataplane/counters.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { XdpRings } from '../../src/dataplane/xdp-rings.ts';
import { playedKernel } from '../../test/support/xdp-kernel.ts';

const BURST = 32;
const SECONDS = 0.5;

/** ns per frame of `round`, which handles BURST frames */
function perFrame(round: () => void): number {
  const warm = performance.now() + 50;
  while (performance.now() < warm) round();
  let rounds = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    round();
    rounds++;
  }
  return ((performance.now() - start) * 1e6) / (rounds * BURST);
}

function measure(size: number): { receiveNs: number; transmitNs: number } {
  const kernel = playedKernel(2048, 1024);
  const fd = memfdCreate('not-a-socket');
  const pool = PacketPool.standalone(256);
  const handles = new Uint32Array(BURST);
  const q = new XdpRings(fd, kernel.layout, kernel.maps, new Float64Array(COUNTERS_PER_PORT), 0, queueBase(0, 0), 1518);
  const post = () => {
    for (let i = 0; i < BURST; i++) kernel.receiveInto(size, null);
  };
  // The kernel alone: post a burst, then take it back as the PMD would (consumer to producer, chunks refilled).
  const kernelRx = perFrame(() => {
    post();
    kernel.rx.u32[32] = kernel.rx.u32[0];
    kernel.fill.u32[0] += BURST;
  });
  const receiveNs = perFrame(() => {
    post();
    const n = q.receive(pool, handles, 0, BURST);
    for (let i = 0; i < n; i++) pool.free(handles[i]);
  }) - kernelRx;
  for (let i = 0; i < BURST; i++) {
    handles[i] = pool.alloc();
    pool.length[handles[i]] = size;
  }
  const kernelTx = perFrame(() => kernel.sendAll());
  const transmitNs = perFrame(() => {
    q.transmit(pool, handles, BURST);
    kernel.sendAll();
  }) - kernelTx;
  closeAll([fd]);
  kernel.close();
  return { receiveNs, transmitNs };
}

console.log(`AF_XDP queue, the PMD's side alone, bursts of ${BURST}, ns per frame`);
console.log('size   receive  transmit');
for (const size of [64, 1518]) {
  const { receiveNs, transmitNs } = measure(size);
  console.log(`${String(size).padStart(4)} ${receiveNs.toFixed(0).padStart(9)} ${transmitNs.toFixed(0).padStart(9)}`);
}
