// How long forwarding stops when the data-plane process goes: killed (SIGKILL; from the
// kill to the first frame forwarded again), and replaced by an upgrade (POST
// /dataplane/upgrade; the pause vrouter reports, and the longest gap in its counters). The
// generator (testpmd, 64 B) sends through a bridged vrouter meanwhile; the counters are
// read from the admin endpoint as fast as it answers (about every millisecond).
//
// Each death is measured on a vrouter of its own: deaths close together are a crash loop,
// which vrouter answers with growing waits before the next start, by design.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setThreadCpus } from '../../src/sys/libc.ts';
import { adminClient, type AdminClient } from '../../test/support/admin-client.ts';
import { dataplanePids } from '../../test/support/traffic.ts';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { startGenerator } from './generator.ts';
import { vrouterJob } from './jobs.ts';
import { stopAll } from './processes.ts';

export interface DataplanePauses {
  /** per death: ms from SIGKILL to the first frame forwarded after it, the spare taking over */
  deathMs: number[];
  /** per death: vrouter's own figure (GET /dataplane, lastDeath.restartMs): from the death as the supervisor saw it to the new PMDs taking frames again with every queue; not read through the counters, so the reader's own turn on the CPU does not count */
  deathRestartMs: number[];
  /** the same without a spare (pmd.spare false): a cold start of the data plane */
  coldDeathMs: number[];
  /** per upgrade: the pause vrouter reports, and the longest gap between two counter reads in which nothing was forwarded */
  upgradePauseMs: number[];
  upgradeGapMs: number[];
}

const PMD_CPU = 1;

async function forwarded(api: AdminClient): Promise<number> {
  const ports = (await api.call('GET', '/counters')).json as Record<string, { tx_packets: number }>;
  return Object.values(ports).reduce((sum, p) => sum + p.tx_packets, 0);
}

/** Reads the counters until `until` resolves; returns the longest time they stood still. */
async function longestGap(api: AdminClient, until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => (done = true));
  let last = await forwarded(api);
  let lastChange = performance.now();
  let gap = 0;
  for (let settle = 0; !done || settle < 50; settle += done ? 1 : 0) {
    const now = await forwarded(api);
    const at = performance.now();
    if (now !== last) {
      gap = Math.max(gap, at - lastChange);
      last = now;
      lastChange = at;
    }
  }
  return gap;
}

async function withForwarding<T>(spare: boolean, run: (api: AdminClient, pid: number) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-pause-'));
  const sockets: [string, string] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  const job = vrouterJob('bridged', sockets, [PMD_CPU]) as { pmd: object };
  const vr = await startVrouter({ ...job, pmd: { ...job.pmd, spare } });
  const generator = startGenerator(sockets, 64, false);
  try {
    await generator.flowing();
    await sleep(1000);
    return await run(adminClient(vr), vr.proc.pid!);
  } finally {
    await generator.stop();
    await vr.stop();
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Kills the data plane; ms until vrouter forwards again (a new data plane counting), and vrouter's own figure. */
async function timeToForward(api: AdminClient, pid: number): Promise<{ ms: number; restartMs: number }> {
  const [dataplane] = dataplanePids(pid);
  let seen = await forwarded(api);
  const killed = performance.now();
  process.kill(dataplane, 'SIGKILL');
  for (;;) {
    const now = await forwarded(api);
    // Frames counted by the dead one just before the kill do not count: the new one must run.
    if (now > seen && dataplanePids(pid).some((p) => p !== dataplane)) {
      const ms = performance.now() - killed;
      // Forwarding may start on some queues before the last port's are handed over.
      for (;;) {
        const { restartMs } = ((await api.call('GET', '/dataplane')).json as { lastDeath: { restartMs: number | null } }).lastDeath;
        if (restartMs !== null) return { ms, restartMs };
        if (performance.now() - killed > 10_000) throw new Error('the queues were not all handed over within 10 s of the kill');
        await sleep(1);
      }
    }
    seen = now;
    if (performance.now() - killed > 10_000) throw new Error('nothing forwarded within 10 s of the kill');
  }
}

export async function measureDataplanePauses(tries: number): Promise<DataplanePauses> {
  const all = cpus().map((_, i) => i);
  setThreadCpus(all.filter((c) => c !== PMD_CPU));
  try {
    const deaths = async (spare: boolean) => {
      const ms: number[] = [];
      const own: number[] = [];
      for (let i = 0; i < tries; i++) {
        const death = await withForwarding(spare, timeToForward);
        ms.push(death.ms);
        own.push(death.restartMs);
      }
      return { ms, own };
    };
    const { ms: deathMs, own: deathRestartMs } = await deaths(true);
    const { ms: coldDeathMs } = await deaths(false);
    const upgradePauseMs: number[] = [];
    const upgradeGapMs: number[] = [];
    await withForwarding(true, async (api) => {
      for (let i = 0; i < tries; i++) {
        const upgrade = api.call('POST', '/dataplane/upgrade');
        upgradeGapMs.push(await longestGap(api, upgrade));
        const answer = await upgrade;
        if (answer.status !== 200) throw new Error(`upgrade refused: ${answer.text}`);
        upgradePauseMs.push((answer.json as { pauseMs: number }).pauseMs);
        await sleep(500);
      }
    });
    return { deathMs, deathRestartMs, coldDeathMs, upgradePauseMs, upgradeGapMs };
  } finally {
    setThreadCpus(all);
  }
}

if (import.meta.main) console.log(JSON.stringify(await measureDataplanePauses(Number(process.argv[2] ?? 3)), null, 2));
