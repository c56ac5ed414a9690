// A whole PMD on one thread, as the benchmark's jobs configure it (bench/lib/jobs.ts): two
// ports, each a guest's TX and RX queues in memory of this process, the plugins loaded and
// prepared as the supervisor does, and Pmd.pollOnce() doing what it does in the data plane:
// receive, the stages, egress. Each round both ports post a burst of 32 64-byte UDP frames
// as flowgen sends them (to the router's MAC, half routed back out of the port they came
// in on) and RX buffers for what comes back, frames and buffers where testpmd's mbufs
// have them (the virtio-net header at the end of the headroom). ns per packet of the
// PMD's own work, without peers or scheduling noise: where the real benchmark's rate goes,
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

const BURST = 32;
const SIZE = 256;
const RX_BUFFER = 2048;
/** RTE_PKTMBUF_HEADROOM: where an mbuf's data starts */
const MBUF_HEADROOM = 128;
const quiet = { info() {}, warn() {}, error() {} };

/** One port's guest side: its TX ring with the burst's frames, its RX ring with buffers. */
interface GuestSide {
  tx: DriverQueue;
  rx: DriverQueue;
}

/** The PMD of `job` with both ports' queues running, and a function that runs one round. */
async function pmdFor(job: JobName, inTurn: boolean): Promise<{ round(): number; delivered(): number; close(): void }> {
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
    const side = { tx: new DriverQueue(ram, SIZE, { eventIdx: true }), rx: new DriverQueue(ram, SIZE, { eventIdx: true }) };
    run({ t: 'memory', port, gen: 1, regions: [ram.region()] });
    for (const [vring, q] of [[0, side.rx], [1, side.tx]] as const) {
      run({ t: 'vring-start', port, gen: 1, vring, layout: q.layout(), callFd: -1, kickFd: -1, mergeable: true, offloads: 0, inflight: null });
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
  sides.forEach((side, port) => {
    for (let i = 0; i < SIZE; i++) {
      side.tx.writeDesc(i, { addr: framesAt[port][i].gpa, len: framesAt[port][i].len, flags: 0, next: 0 });
      side.rx.writeDesc(i, { addr: ram.gpa(mbufData(RX_BUFFER) - NET_HDR_LEN), len: RX_BUFFER, flags: 2, next: 0 });
    }
  });
  /** posts `count` descriptors, slot = descriptor, on a ring whose device side keeps up; TX ones pointed at their frame */
  const post = (q: DriverQueue, count: number, frames: { gpa: number; len: number }[] | null) => {
    for (let i = 0; i < count; i++) {
      const slot = (q.availIdx + i) % SIZE;
      if (frames !== null) {
        // The frames all lie in the first 4 GiB of guest memory: the address's high word stays 0.
        const f = frames[(Math.floor((q.availIdx + i) / SIZE) & 1) * SIZE + slot];
        ram.dv.setUint32(q.descOff + 16 * slot, f.gpa, true);
        ram.dv.setUint32(q.descOff + 16 * slot + 8, f.len, true);
      }
      ram.dv.setUint16(q.availOff + 4 + 2 * slot, slot, true);
    }
    q.availIdx = (q.availIdx + count) & 0xffff;
    q.setAvailIdx(q.availIdx);
  };
  /** frames the guests' RX rings have received so far (their used indexes, wrapped) */
  const delivered = () => sides.reduce((sum, s) => sum + ram.dv.getUint16(s.rx.usedOff + 2, true), 0);
  return {
    round() {
      for (let port = 0; port < 2; port++) {
        post(sides[port].tx, BURST, framesAt[port]);
        post(sides[port].rx, BURST, null);
      }
      return pmd.pollOnce();
    },
    delivered,
    close() {
      ram.close();
      closeAll(layout.shared.wakers.map((w) => w.wakeFd));
    },
  };
}

/** ns per packet of `job`: the fastest of many short slices (as the stage figures are taken). */
export async function pmdFigure(job: JobName, slices = 2000, inTurn = false): Promise<number> {
  const p = await pmdFor(job, inTurn);
  try {
    for (let i = 0; i < 20000; i++) p.round(); // the JIT settles
    // Every frame taken must have left, or the figure would time a path that drops.
    const before = p.delivered();
    const taken = p.round();
    if (taken !== 2 * BURST || ((p.delivered() - before) & 0xffff) !== taken) throw new Error(`${job}: ${taken} frames taken, ${(p.delivered() - before) & 0xffff} delivered`);
    let best = Infinity;
    for (let s = 0; s < slices; s++) {
      let packets = 0;
      const start = performance.now();
      for (let r = 0; r < 50; r++) packets += p.round();
      if (packets === 0) throw new Error(`${job}: the PMD forwarded nothing`);
      const ns = ((performance.now() - start) * 1e6) / packets;
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

if (import.meta.main) {
  for (const f of await pmdFigures()) console.log(`PMD, one thread, 64 B, ${f.name}: ${f.nsPerPacket.toFixed(1)} ns/packet (bridged / this = ${f.ofBridged.toFixed(2)})`);
}
