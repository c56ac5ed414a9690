// The routed 64 B row again, with the admin endpoint idle and then busy (admin-load.ts:
// /metrics 10 times a second and 1,000 route changes a second), in alternating windows of
// one run: this kind of machine changes speed from run to run, so only windows side by
// side compare (as test/e2e/hostile-neighbours.test.ts does). The rate is the generator's
// (its one-second samples inside each window); the route changes applied per second and
// the CPU of vrouter's threads other than the PMD come with it.
//
// The load, the generator's process and vrouter's threads other than the PMD run on the
// CPUs left to the host (all but the PMD's), where an operator keeps them (OVS-DPDK's
// dpdk-lcore-mask): this thread is restricted to them before it starts the others, which
// inherit it; the PMD and testpmd's lcores pin themselves.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setThreadCpus } from '../../src/sys/libc.ts';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { adminLoad, type AdminLoadCounts } from './admin-load.ts';
import { controlCpuSeconds } from './control-cpu.ts';
import { startGenerator } from './generator.ts';
import { vrouterJob } from './jobs.ts';
import { stopAll } from './processes.ts';

const WARM_UP_MS = 3000;
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
  changesPerSecond: number;
  scrapesPerSecond: number;
  /** % of one core used by vrouter's threads other than the PMD, in each kind of window */
  controlCpuIdle: number;
  controlCpuBusy: number;
  load: AdminLoadCounts;
}

const controlCpu = (pid: number) => {
  const { supervisor, dataplane } = controlCpuSeconds(pid);
  return supervisor + dataplane;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** `windows` idle and as many busy windows of `seconds`, alternating, idle first. */
export async function measureBusyAdmin(windows: number, seconds: number, batch = 1): Promise<BusyAdminResult> {
  const all = cpus().map((_, i) => i);
  const pmdCpu = 1;
  setThreadCpus(all.filter((c) => c !== pmdCpu));
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-admin-'));
  const sockets: [string, string] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  const vr = await startVrouter(vrouterJob('routed', sockets, [pmdCpu]));
  const generator = startGenerator(sockets, 64, false);
  const load = adminLoad(join(vr.dir, 'admin.sock'), { changesPerSecond: CHANGES_PER_SECOND, scrapesPerSecond: SCRAPES_PER_SECOND, via: '10.0.2.2', batch });
  try {
    await generator.flowing();
    await sleep(WARM_UP_MS);
    const idle: number[] = [];
    const busy: number[] = [];
    const cpu = { idle: 0, busy: 0 };
    for (let w = 0; w < 2 * windows; w++) {
      const busyWindow = w % 2 === 1;
      if (busyWindow) load.start();
      const from = performance.now();
      const cpuBefore = controlCpu(vr.proc.pid!);
      await sleep(seconds * 1000);
      const to = performance.now();
      cpu[busyWindow ? 'busy' : 'idle'] += controlCpu(vr.proc.pid!) - cpuBefore;
      load.pause();
      (busyWindow ? busy : idle).push(...generator.ratesBetween(from, to));
      // Changes still answered after the window are not the next idle window's.
      await load.settled();
    }
    const onSeconds = load.counts.onMs / 1000;
    const idleMpps = mean(idle) / 1e6;
    const busyMpps = mean(busy) / 1e6;
    return {
      idle,
      busy,
      idleMpps,
      busyMpps,
      ratio: busyMpps / idleMpps,
      changesPerSecond: load.counts.changes / onSeconds,
      scrapesPerSecond: load.counts.scrapes / onSeconds,
      controlCpuIdle: (100 * cpu.idle) / (windows * seconds),
      controlCpuBusy: (100 * cpu.busy) / (windows * seconds),
      load: load.counts,
    };
  } finally {
    await load.close();
    await generator.stop();
    await vr.stop();
    stopAll();
    rmSync(dir, { recursive: true, force: true });
    setThreadCpus(all);
  }
}

if (import.meta.main) {
  const r = await measureBusyAdmin(Number(process.argv[2] ?? 3), Number(process.argv[3] ?? 3), Number(process.argv[4] ?? 1));
  console.log(JSON.stringify(r, null, 2));
}
