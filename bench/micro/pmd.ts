// A whole PMD on one thread, as the benchmark's jobs configure it (bench/lib/jobs.ts): two
// ports, each a guest's TX and RX queues in memory of this process, the plugins loaded and
// prepared as the supervisor does, and Pmd.pollOnce() doing what it does in the data plane:
// receive, the stages, egress. Each round both ports post a burst of 32 64-byte UDP frames
// as flowgen sends them (to the router's MAC, half routed back out of the port they came
// in on) and RX buffers for what comes back, frames and buffers where testpmd's mbufs
// have them (the virtio-net header at the end of the headroom). ns per packet of the
// PMD's own work (pollOnce() alone is timed, not the test driver's posting of frames and
// buffers), without peers or scheduling noise: where the real benchmark's rate goes,
// stage by stage. Compiled with the data plane's V8 flags (dataplane-jit.ts).
import './dataplane-jit.ts';
import { parseConfig, topologyOf } from '../../src/control/config.ts';
import { dataplaneLayout } from '../../src/control/dataplane-layout.ts';
import { Pmd, type Stage } from '../../src/dataplane/pmd.ts';
import { PluginStage } from '../../src/pipeline/host.ts';
import { importPlugin, planPlugins } from '../../src/pipeline/loader.ts';
import { allocatePluginMemory, preparePlugins } from '../../src/pipeline/shared-memory.ts';
import { closeAll } from '../../src/sys/libc.ts';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import type { PmdCommand } from '../../src/vhost/dataplane-link.ts';
import { FLOWGEN_DST, vrouterJob, type JobName } from '../lib/jobs.ts';
import { MAC_A, MAC_B } from '../lib/generator.ts';
import { udp4 } from '../../test/support/frames.ts';
import { DriverQueue, GuestRam } from '../../test/support/virtio-driver.ts';
import { PackedDriverQueue } from '../../test/support/packed-driver.ts';
import { VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import type { Rings } from '../lib/generator.ts';

const BURST = 32;
/** ms spent in Pmd.pollOnce(), summed (round() adds to it): a typed array's cell, where a double costs no heap number a round */
const polling = new Float64Array(1);
const SIZE = 256;
const RX_BUFFER = 2048;
/** RTE_PKTMBUF_HEADROOM: where an mbuf's data starts */
const MBUF_HEADROOM = 128;
const quiet = { info() {}, warn() {}, error() {} };

/** One port's guest side: its TX ring with the burst's frames, its RX ring with buffers. */
interface GuestSide {
  tx: DriverQueue | PackedDriverQueue;
  rx: DriverQueue | PackedDriverQueue;
}

/** The PMD of `job` with both ports' queues running, and a function that runs one round. */
export async function pmdFor(job: JobName, inTurn: boolean, rings: Rings): Promise<{ round(): number; deliveredInLastRound(): number; close(): void }> {
  const config = parseConfig(vrouterJob(job, ['/tmp/pmd-bench-a.sock', '/tmp/pmd-bench-b.sock'], [1]), '/', 2);
  const layout = dataplaneLayout(config);
  const topology = topologyOf(config);
  const plans = await planPlugins(config.plugins, topology);
  const memory = allocatePluginMemory(plans);
  await preparePlugins(plans, memory, topology);
  const modules = await Promise.all(plans.map((p) => importPlugin(p.path, `plugins.${p.name}`, p.version)));
  const where = { id: 0, count: 1, ports: topology.ports, bridges: topology.bridges, bridgeSettings: topology.bridgeSettings };
  const pmd = new Pmd(layout.pmds[0], layout.shared, quiet, (counters): Stage[] =>
    plans.map((plan, i) => new PluginStage(modules[i], plan, where, memory[plan.name], counters, quiet)));
  const ram = new GuestRam(8 << 20);
  /** the data of a new DPDK mbuf (as testpmd's virtio-user posts and sends them): its headroom before, the virtio-net header at its end */
  const mbufData = (len: number) => ram.alloc(MBUF_HEADROOM + len) + MBUF_HEADROOM;
  let id = 0;
  const run = (cmd: PmdCommand) => {
    const answer = pmd.execute(++id, cmd);
    while (pmd.building) pmd.stepBuilds();
    if (answer !== null && 'error' in answer) throw new Error(`${cmd.t}: ${answer.error}`);
  };
  const sides: GuestSide[] = [0, 1].map((port) => {
    const side =
      rings === 'split'
        ? { tx: new DriverQueue(ram, SIZE, { eventIdx: true }), rx: new DriverQueue(ram, SIZE, { eventIdx: true }) }
        : { tx: new PackedDriverQueue(ram, SIZE, { eventIdx: true, inOrder: true }), rx: new PackedDriverQueue(ram, SIZE, { eventIdx: true }) };
    run({ t: 'memory', port, gen: 1, regions: [ram.region()] });
    // IN_ORDER on the TX queue only, as the connection gives it (virtio-user offers it).
    for (const [vring, q] of [[0, side.rx], [1, side.tx]] as const) {
      const queueLayout = q instanceof PackedDriverQueue && q === side.tx ? q.layout({ inOrder: true }) : q.layout();
      run({ t: 'vring-start', port, gen: 1, vring, layout: queueLayout, callFd: -1, kickFd: -1, mergeable: true, offloads: 0, inflight: null });
    }
    return side;
  });
  // Flowgen's frames: to the router's MAC from the generator's, 1,024 flows to
  // 10.253.0.0-10.253.3.255, one destination after the other (a run behind one next hop,
  // then the other's). Here each port sends 512 flows (its own source port) from 512
  // frames, a burst's to one next hop, the next burst's to the other, the two ports out of
  // step so that each receives a burst a round; its ring's descriptors point to the first
  // 256 frames on even passes round the ring, to the others on odd ones. `inTurn`: the next
  // hops alternate frame by frame instead (traffic of many flows mixed, as guests send it).
  const framesAt = [0, 1].map((port) =>
    Array.from({ length: 2 * SIZE }, (_, k) => {
      const half = ((inTurn ? k : k >> 5) + port) & 1;
      const j = ((k >> 6) << 5) | (k & 31);
      const frame = udp4({ src: '10.254.0.1', dst: `10.253.${half * 2 + (j >> 7)}.${j & 127}`, srcPort: 1000 + port, dstPort: 1001, payload: 18, srcMac: port === 0 ? MAC_A : MAC_B, dstMac: FLOWGEN_DST });
      const t = mbufData(frame.length) - NET_HDR_LEN;
      ram.bytes.set(frame, t + NET_HDR_LEN);
      return { gpa: ram.gpa(t), len: NET_HDR_LEN + frame.length };
    }),
  );
  const rxBuffers = [0, 1].map(() => Array.from({ length: SIZE }, () => ram.gpa(mbufData(RX_BUFFER) - NET_HDR_LEN)));
  sides.forEach((side, port) => {
    for (let i = 0; i < SIZE; i++) {
      if (side.tx instanceof DriverQueue && side.rx instanceof DriverQueue) {
        side.tx.writeDesc(i, { addr: framesAt[port][i].gpa, len: framesAt[port][i].len, flags: 0, next: 0 });
        side.rx.writeDesc(i, { addr: rxBuffers[port][i], len: RX_BUFFER, flags: VIRTQ_DESC_F_WRITE, next: 0 });
      }
    }
  });
  /** the frame `n` descriptors into the ring (its slot's, on even or odd passes round it) */
  const frameOf = (frames: { gpa: number; len: number }[], n: number) => frames[(Math.floor(n / SIZE) & 1) * SIZE + (n % SIZE)];
  /** posts `count` descriptors, slot = descriptor, on a ring whose device side keeps up; TX ones pointed at their frame */
  const post = (q: DriverQueue, count: number, frames: { gpa: number; len: number }[] | null) => {
    for (let i = 0; i < count; i++) {
      const slot = (q.availIdx + i) % SIZE;
      if (frames !== null) {
        // The frames all lie in the first 4 GiB of guest memory: the address's high word stays 0.
        const f = frameOf(frames, q.availIdx + i);
        ram.dv.setUint32(q.descOff + 16 * slot, f.gpa, true);
        ram.dv.setUint32(q.descOff + 16 * slot + 8, f.len, true);
      }
      ram.dv.setUint16(q.availOff + 4 + 2 * slot, slot, true);
    }
    q.availIdx = (q.availIdx + count) & 0xffff;
    q.setAvailIdx(q.availIdx);
  };
  /**
   * The same on a packed ring (2.8.6), as virtio-user writes them: each descriptor whole,
   * its buffer id its slot, the flags' AVAIL and USED marks those of the driver's lap.
   * `posted`: descriptors made available on the ring so far.
   */
  const postPacked = (q: PackedDriverQueue, posted: number, count: number, frames: { gpa: number; len: number }[] | null, buffers: number[]) => {
    for (let n = posted; n < posted + count; n++) {
      const slot = n % SIZE;
      const o = q.descOff + 16 * slot;
      const lap = (Math.floor(n / SIZE) & 1) === 0 ? 1 : 0;
      if (frames !== null) {
        const f = frameOf(frames, n);
        ram.dv.setUint32(o, f.gpa, true);
        ram.dv.setUint32(o + 8, f.len, true);
      } else {
        ram.dv.setUint32(o, buffers[slot], true);
        ram.dv.setUint32(o + 8, RX_BUFFER, true);
      }
      ram.dv.setUint16(o + 12, slot, true);
      ram.dv.setUint16(o + 14, q.availMarks(lap) | (frames === null ? VIRTQ_DESC_F_WRITE : 0), true);
    }
  };
  /**
   * Frames received in the buffers of `q` posted in [from, to): used descriptors (2.8.1: both
   * marks equal the lap's) whose length is a frame's, header included.
   */
  const receivedPacked = (q: PackedDriverQueue, from: number, to: number) => {
    let received = 0;
    for (let n = from; n < to; n++) {
      const lap = (Math.floor(n / SIZE) & 1) === 0 ? 1 : 0;
      const d = q.readDesc(n % SIZE);
      if (((d.flags >> 7) & 1) === lap && ((d.flags >> 15) & 1) === lap && d.len > NET_HDR_LEN) received++;
    }
    return received;
  };
  /** descriptors posted on each packed ring so far: the same on every ring, BURST a round */
  let postedPacked = 0;
  /** the guests' RX used indexes, summed, before the last round (split rings) */
  let usedBefore = 0;
  const usedIndexes = () => sides.reduce((sum, s) => sum + ram.dv.getUint16((s.rx as DriverQueue).usedOff + 2, true), 0);
  return {
    round() {
      for (let port = 0; port < 2; port++) {
        const { tx, rx } = sides[port];
        if (tx instanceof DriverQueue && rx instanceof DriverQueue) {
          post(tx, BURST, framesAt[port]);
          post(rx, BURST, null);
        } else if (tx instanceof PackedDriverQueue && rx instanceof PackedDriverQueue) {
          postPacked(tx, postedPacked, BURST, framesAt[port], rxBuffers[port]);
          postPacked(rx, postedPacked, BURST, null, rxBuffers[port]);
        }
      }
      if (rings === 'packed') postedPacked += BURST;
      else usedBefore = usedIndexes();
      // Timed alone: the posting above is the guest's work, not the PMD's, and costs a
      // packed ring's driver three writes a descriptor against a split ring's one (timed
      // with it, packed rings would seem slower than they are). Two clock reads a round:
      // about 1.6 ns a packet of the figure.
      const started = performance.now();
      const taken = pmd.pollOnce();
      polling[0] += performance.now() - started;
      return taken;
    },
    deliveredInLastRound() {
      if (rings === 'split') return (usedIndexes() - usedBefore) & 0xffff;
      return sides.reduce((sum, s) => sum + receivedPacked(s.rx as PackedDriverQueue, postedPacked - BURST, postedPacked), 0);
    },
    close() {
      ram.close();
      closeAll(layout.shared.wakers.map((w) => w.wakeFd));
    },
  };
}

/** ns per packet of `job`: the fastest of many short slices (as the stage figures are taken). */
export async function pmdFigure(job: JobName, slices = 2000, inTurn = false, rings: Rings = 'split'): Promise<number> {
  const p = await pmdFor(job, inTurn, rings);
  try {
    for (let i = 0; i < 20000; i++) p.round(); // the JIT settles
    // Every frame taken must have left, or the figure would time a path that drops.
    const taken = p.round();
    const delivered = p.deliveredInLastRound();
    if (taken !== 2 * BURST || delivered !== taken) throw new Error(`${job} (${rings} rings): ${taken} frames taken, ${delivered} delivered`);
    let best = Infinity;
    for (let s = 0; s < slices; s++) {
      let packets = 0;
      polling[0] = 0;
      for (let r = 0; r < 50; r++) packets += p.round();
      if (packets === 0) throw new Error(`${job}: the PMD forwarded nothing`);
      const ns = (polling[0] * 1e6) / packets;
      if (ns < best) best = ns;
    }
    return best;
  } finally {
    p.close();
  }
}

export interface PmdFigure {
  name: string;
  nsPerPacket: number;
  /** bridged ns / this job's ns: the job's rate as a fraction of bridging's */
  ofBridged: number;
}

/** The PMD's ns per packet for each job, and for routing with next hops in turn. */
export async function pmdFigures(): Promise<PmdFigure[]> {
  const runs: [string, JobName, boolean][] = [
    ['bridged', 'bridged', false],
    ['routed', 'routed', false],
    ['full (routing, 100 ACL rules + stateful, policer)', 'full', false],
    ['routed, next hops in turn frame by frame', 'routed', true],
  ];
  const ns: number[] = [];
  for (const [, job, inTurn] of runs) ns.push(await pmdFigure(job, 2000, inTurn));
  return runs.map(([name], k) => ({ name, nsPerPacket: ns[k], ofBridged: ns[0] / ns[k] }));
}

// `node bench/micro/pmd.ts packed`: bridging on packed rings, in a process of its own, whose
// data path has seen one kind of queue, as a data plane whose guests all use packed rings.
if (import.meta.main && process.argv[2] === 'packed') {
  console.log(`PMD, one thread, 64 B, bridged, packed rings: ${(await pmdFigure('bridged', 2000, false, 'packed')).toFixed(1)} ns/packet`);
} else if (import.meta.main) {
  for (const f of await pmdFigures()) console.log(`PMD, one thread, 64 B, ${f.name}: ${f.nsPerPacket.toFixed(1)} ns/packet (bridged / this = ${f.ofBridged.toFixed(2)})`);
}
