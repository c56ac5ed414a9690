// The routed 64 B row again, with the admin endpoint idle and then busy (admin-load.ts:
// /metrics 10 times a second and 1,000 route changes a second), in alternating windows of
// one run: this kind of machine changes speed from run to run, so only windows side by
// side compare (as test/e2e/hostile-neighbours.test.ts does). The rate is the generator's
// (its one-second samples inside each window); the route changes applied per second and
// the CPU of vrouter's threads other than the PMD come with it, and the PMD's own figures
// (GET /pmds): its busy time per packet and its busy share of the window. On this machine
// the load shares its CPU with the generator, so the generator's rate answers whether the
// busy control plane slowed the traffic, and the PMD's ns per packet whether it slowed the
// PMD itself.
//
// The load, the generator's process and vrouter's threads other than the PMD run on the
// CPUs left to the host (all but the PMD's), where an operator keeps them (OVS-DPDK's
// dpdk-lcore-mask): this thread is restricted to them before it starts the others, which
// inherit it; the PMD and testpmd's lcores pin themselves.
//
// The generator's queues have 256 entries (QEMU's default for a guest's), or as many as
// asked: while the control plane has CPU 0, the generator sends and takes nothing, and the
// PMD runs dry once it has emptied the generator's transmit queue and filled its receive
// queue (256 frames: about 50 us at 5 Mpps); deeper queues, as NFV deployments give their
// VMs (1024: OpenStack's rx_queue_size and tx_queue_size), keep it busy for longer.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setThreadCpus } from '../../src/sys/libc.ts';
import { Agent, request } from 'undici';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { adminLoad, type AdminLoadCounts } from './admin-load.ts';
import { controlCpuSeconds } from './control-cpu.ts';
import { startGenerator } from './generator.ts';
import { vrouterJob } from './jobs.ts';
import { stopAll } from './processes.ts';
import { median } from './stats.ts';

const WARM_UP_MS = 3000;
/**
 * The load runs this long before the first window, unmeasured: at 20 requests a second V8
 * compiles the endpoint's code, and the load client's, for about a minute (the
 * supervisor's V8 worker threads woke 30 to 70 times a second in the first 30 s, 4 to 8
 * times from the 70th on), and a router runs for longer than that.
 */
const LOAD_WARM_UP_MS = 60000;
const CHANGES_PER_SECOND = 1000;
const SCRAPES_PER_SECOND = 10;

export interface BusyAdminResult {
  /** one-second samples, frames per second both ways, in the idle and in the busy windows */
  idle: number[];
  busy: number[];
  idleMpps: number;
  busyMpps: number;
  /** busy / idle */
  ratio: number;
  /**
   * Each busy window against the idle windows on either side of it (the mean of their rates),
   * and their median: this kind of machine can change speed in the middle of a run (by up
   * to 2.5 times), and windows side by side are then the only fair comparison.
   */
  windowRatios: number[];
  pairedRatio: number;
  changesPerSecond: number;
  scrapesPerSecond: number;
  /** entries of each of the generator's virtqueues */
  queueSize: number;
  /** % of one core used by vrouter's threads other than the PMD, in each kind of window */
  controlCpuIdle: number;
  controlCpuBusy: number;
  /** % of one core used by this process (the load's client, the generator's monitor), in each kind of window: the load's own share of CPU 0 is the difference */
  benchCpuIdle: number;
  benchCpuBusy: number;
  /** the PMD's busy time per packet it took (ns), and its busy time as % of the windows, in each kind of window */
  pmdNsIdle: number;
  pmdNsBusy: number;
  pmdBusyIdle: number;
  pmdBusyBusy: number;
  load: AdminLoadCounts;
}

const controlCpu = (pid: number) => {
  const { supervisor, dataplane } = controlCpuSeconds(pid);
  return supervisor + dataplane;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The PMD's busy time (ms) and the packets it took, so far (GET /pmds). */
async function pmdLoad(admin: Agent): Promise<{ busyMs: number; packets: number }> {
  const res = await request('http://vrouter/pmds', { dispatcher: admin });
  const [pmd] = (await res.body.json()) as { busy_ms: number; rx_packets: number }[];
  return { busyMs: pmd.busy_ms, packets: pmd.rx_packets };
}

/** The generator's queues unless asked otherwise: virtio-user's default, and QEMU's. */
export const DEFAULT_QUEUE_SIZE = 256;

/** `windows` idle and as many busy windows of `seconds`, alternating, idle first. */
export async function measureBusyAdmin(windows: number, seconds: number, batch = 1, queueSize = DEFAULT_QUEUE_SIZE): Promise<BusyAdminResult> {
  const all = cpus().map((_, i) => i);
  const pmdCpu = 1;
  setThreadCpus(all.filter((c) => c !== pmdCpu));
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-admin-'));
  const sockets: [string, string] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  const vr = await startVrouter(vrouterJob('routed', sockets, [pmdCpu]));
  const generator = startGenerator(sockets, 64, false, 'split', queueSize);
  const load = adminLoad(join(vr.dir, 'admin.sock'), { changesPerSecond: CHANGES_PER_SECOND, scrapesPerSecond: SCRAPES_PER_SECOND, via: '10.0.2.2', batch });
  const admin = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } });
  try {
    await generator.flowing();
    await sleep(WARM_UP_MS);
    load.start();
    await sleep(LOAD_WARM_UP_MS);
    load.pause();
    await load.settled();
    load.resetCounts();
    const idle: number[] = [];
    const busy: number[] = [];
    /** each window's mean rate, in order: idle, busy, idle, ... */
    const windowRates: number[] = [];
    const cpu = { idle: 0, busy: 0 };
    const benchCpu = { idle: 0, busy: 0 };
    const pmd = { idle: { ms: 0, packets: 0 }, busy: { ms: 0, packets: 0 } };
    for (let w = 0; w < 2 * windows; w++) {
      const busyWindow = w % 2 === 1;
      const pmdBefore = await pmdLoad(admin);
      if (busyWindow) load.start();
      const from = performance.now();
      const cpuBefore = controlCpu(vr.proc.pid!);
      const benchBefore = process.cpuUsage();
      await sleep(seconds * 1000);
      const to = performance.now();
      cpu[busyWindow ? 'busy' : 'idle'] += controlCpu(vr.proc.pid!) - cpuBefore;
      const bench = process.cpuUsage(benchBefore);
      benchCpu[busyWindow ? 'busy' : 'idle'] += (bench.user + bench.system) / 1e6;
      const pmdAfter = await pmdLoad(admin);
      pmd[busyWindow ? 'busy' : 'idle'].ms += pmdAfter.busyMs - pmdBefore.busyMs;
      pmd[busyWindow ? 'busy' : 'idle'].packets += pmdAfter.packets - pmdBefore.packets;
      load.pause();
      const rates = generator.ratesBetween(from, to);
      (busyWindow ? busy : idle).push(...rates);
      windowRates.push(mean(rates));
      // Changes still answered after the window are not the next idle window's.
      await load.settled();
    }
    const onSeconds = load.counts.onMs / 1000;
    // Each busy window (odd) against the idle ones before and after it (the last has none
    // after). A window without a sample of the generator (it prints one about every second)
    // has no rate, and no ratio.
    const windowRatios: number[] = [];
    for (let w = 1; w < windowRates.length; w += 2) {
      const ratio = windowRates[w] / mean(windowRates.slice(w - 1, w + 2).filter((_, k) => k !== 1));
      if (Number.isFinite(ratio)) windowRatios.push(ratio);
    }
    const idleMpps = mean(idle) / 1e6;
    const busyMpps = mean(busy) / 1e6;
    return {
      idle,
      busy,
      idleMpps,
      busyMpps,
      ratio: busyMpps / idleMpps,
      windowRatios,
      pairedRatio: median(windowRatios),
      changesPerSecond: load.counts.changes / onSeconds,
      scrapesPerSecond: load.counts.scrapes / onSeconds,
      queueSize,
      controlCpuIdle: (100 * cpu.idle) / (windows * seconds),
      controlCpuBusy: (100 * cpu.busy) / (windows * seconds),
      benchCpuIdle: (100 * benchCpu.idle) / (windows * seconds),
      benchCpuBusy: (100 * benchCpu.busy) / (windows * seconds),
      pmdNsIdle: (pmd.idle.ms * 1e6) / pmd.idle.packets,
      pmdNsBusy: (pmd.busy.ms * 1e6) / pmd.busy.packets,
      pmdBusyIdle: (100 * pmd.idle.ms) / (windows * seconds * 1000),
      pmdBusyBusy: (100 * pmd.busy.ms) / (windows * seconds * 1000),
      load: load.counts,
    };
  } finally {
    await load.close();
    await admin.close();
    await generator.stop();
    await vr.stop();
    stopAll();
    rmSync(dir, { recursive: true, force: true });
    setThreadCpus(all);
  }
}

if (import.meta.main) {
  const r = await measureBusyAdmin(Number(process.argv[2] ?? 3), Number(process.argv[3] ?? 3), Number(process.argv[4] ?? 1), Number(process.argv[5] ?? DEFAULT_QUEUE_SIZE));
  console.log(JSON.stringify(r, null, 2));
}
