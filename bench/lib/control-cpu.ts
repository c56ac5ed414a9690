// CPU time of vrouter's threads other than the PMDs (named pmdN), in the supervisor and its
// data-plane process: what the control plane costs (a busy-polling PMD takes a core anyway).
import { readdirSync, readFileSync } from 'node:fs';
import { dataplanePids } from '../../test/support/traffic.ts';

/** CPU seconds so far of the supervisor's threads and of its data plane's threads, PMDs left out. */
export function controlCpuSeconds(supervisor: number): { supervisor: number; dataplane: number } {
  let dataplane = 0;
  for (const pid of dataplanePids(supervisor)) dataplane += controlTicks(pid);
  return { supervisor: controlTicks(supervisor) / 100, dataplane: dataplane / 100 }; // clock ticks are 1/100 s
}

function controlTicks(pid: number): number {
  let ticks = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (/^pmd\d/.test(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8'))) continue;
      const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ticks;
}
