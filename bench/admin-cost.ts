// node bench/admin-cost.ts [--seconds S] [--bin FILE]: what a busy admin endpoint costs
// vrouter, without a traffic generator: the routed job (dist/, as `npm run build` makes
// it) idle, with /metrics scraped 10 times a second, then with 1,000 route changes a
// second as well, as single requests and as PATCH /routes of 100 (admin-load.ts), each
// for S seconds (10). It prints the CPU used by the supervisor and by the data plane's
// threads other than the PMD, in % of a core, and the applies a second its log counts.
// The machine may be busy with other work: the CPU per 1,000 changes compares better
// then than the % of a core. --bin FILE runs another build of the daemon (an older
// revision's dist/bin/vrouter.js, for a before).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { startVrouter, VROUTER_BIN } from '../test/support/vrouter-process.ts';
import { adminLoad } from './lib/admin-load.ts';
import { controlCpuSeconds } from './lib/control-cpu.ts';
import { vrouterJob } from './lib/jobs.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string' }, bin: { type: 'string' } } });
const SECONDS = Number(values.seconds ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-cost-'));
const vr = await startVrouter(vrouterJob('routed', [join(dir, 'a.sock'), join(dir, 'b.sock')], [1]), 15000, undefined, values.bin ?? VROUTER_BIN);
const pid = vr.proc.pid!;

/** One window: the load (null: none) for SECONDS; CPU % of a core, and what the load did. */
async function window(name: string, batch: number | null, changesPerSecond = 1000): Promise<void> {
  const load = batch === null ? null : adminLoad(join(vr.dir, 'admin.sock'), { changesPerSecond, scrapesPerSecond: 10, via: '10.0.2.2', batch });
  // The log shows a few lines of a kind a second, and says how many it left out.
  const applies = () => [...vr.stderr().matchAll(/reloaded from [^\n]*?(?:\(and (\d+) more like it, not shown\))?\n/g)].reduce((n, m) => n + 1 + Number(m[1] ?? 0), 0);
  const appliesBefore = applies();
  const before = controlCpuSeconds(pid);
  load?.start();
  await sleep(SECONDS * 1000);
  load?.pause();
  const after = controlCpuSeconds(pid);
  const applied = applies() - appliesBefore;
  await load?.close();
  const pct = (s: number) => ((100 * s) / SECONDS).toFixed(1);
  const cpuMs = 1000 * (after.supervisor - before.supervisor + after.dataplane - before.dataplane);
  const perChanges = load === null || load.counts.changes === 0 ? '' : `; ${(cpuMs / (load.counts.changes / 1000)).toFixed(0)} ms of CPU per 1,000 changes`;
  const done = load === null ? '' : `${perChanges}; ${(load.counts.changes / SECONDS).toFixed(0)} changes/s (${load.counts.errors} errors), ${(load.counts.scrapes / SECONDS).toFixed(1)} scrapes/s, slowest change ${load.counts.slowestChangeMs.toFixed(0)} ms, ${(applied / SECONDS).toFixed(0)} applies/s${load.counts.firstError ? `, first error: ${load.counts.firstError}` : ''}`;
  console.log(`${name}: supervisor ${pct(after.supervisor - before.supervisor)} %, data plane (but the PMD) ${pct(after.dataplane - before.dataplane)} %, together ${pct(after.supervisor - before.supervisor + after.dataplane - before.dataplane)} % of a core${done}`);
}

try {
  await sleep(4000);
  await window('idle', null);
  await window('/metrics only', 1, 0);
  await window('single requests', 1);
  await window('PATCH of 100', 100);
} finally {
  await vr.stop();
  rmSync(dir, { recursive: true, force: true });
}
