// npm run bench [-- --rounds N --seconds S --quick --against REV --only JOB,... --sizes BYTES,...]: vrouter against dpdk-testpmd's vhost io
// forwarding and OVS-DPDK, in one run, interleaved and repeated (this kind of machine is
// bimodal from run to run), at 64, 1518 and 9000 bytes; TCP between two guests under QEMU
// on vrouter, offloads on and off (bench/lib/guest-tcp.ts); the routed rate with the admin endpoint
// idle and busy (/metrics scraped, routes changed); how long forwarding stops when the
// data-plane process is killed or upgraded; then idle CPU, memory, first-frame latency
// after idle, the micro-benchmarks (the copy primitives among them), the table benchmarks,
// how fast a full BGP table pushed through a route source converges, and the uplink ports
// against Linux's forwarding (bench/uplinks.ts). Prints a table
// (and the last run's vrouter figures beside this one's; with --against, another
// revision's vrouter measured in the same run), writes results/*.json. --only measures the
// forwarding rates of the jobs named (and guest-tcp: the guests' TCP) and nothing else
// (results/latest.json is left alone); --sizes the bridged frame sizes measured.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ovsDpdkBackend, testpmdIoBackend, vrouterBackend, vrouterRssMiB, type Backend } from './lib/backends.ts';
import { measureDataplanePauses, type DataplanePauses } from './lib/dataplane-pauses.ts';
import { buildRevision } from './lib/revision.ts';
import { dataplanePids } from '../test/support/traffic.ts';
import { startGenerator, type Rings } from './lib/generator.ts';
import { DEFAULT_QUEUE_SIZE, measureBusyAdmin, type BusyAdminResult } from './lib/busy-admin.ts';
import { describeGuestTcp, measureGuestTcp, type GuestTcpResult } from './lib/guest-tcp.ts';
import type { JobName } from './lib/jobs.ts';
import { stopAll } from './lib/processes.ts';
import { bridgeConfig, REPO, startVrouter } from '../test/support/vrouter-process.ts';
import { micro as ringMicro } from './micro/spsc-ring.ts';
import { heapReport, micro as datapathMicro } from './micro/datapath.ts';
import { micro as copyMicro, releaseCopyMemory } from './micro/copy.ts';
import { measureFirstPacket } from './micro/first-packet.ts';
import { stageFigures } from './micro/stages.ts';
import { pmdFigures } from './micro/pmd.ts';
import { spawnSync } from 'node:child_process';
import { median } from './lib/stats.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' }, quick: { type: 'boolean' }, against: { type: 'string' }, only: { type: 'string' }, sizes: { type: 'string' } } });
const ROUNDS = values.quick ? 1 : Number(values.rounds ?? 3);
const SECONDS = values.quick ? 4 : Number(values.seconds ?? 8);
const ALL_SIZES = [64, 1518, 9000];
/** --sizes 64,1518: bridging at these frame sizes only */
const SIZES = values.sizes?.split(',').map(Number) ?? ALL_SIZES;
if (SIZES.some((s) => !ALL_SIZES.includes(s))) throw new Error(`--sizes ${values.sizes}: each of ${ALL_SIZES.join(', ')}`);
interface Case {
  job: JobName;
  size: number;
  /** the generator's virtqueues; the backends take what it offers */
  rings: Rings;
}
/** what is measured: every job at 64 bytes, bridging at every size too, and at 64 bytes on packed rings */
const ALL_CASES: Case[] = [
  ...SIZES.map((size) => ({ job: 'bridged' as const, size, rings: 'split' as const })),
  ...(SIZES.includes(64) ? [{ job: 'bridged' as const, size: 64, rings: 'packed' as const }] : []),
  { job: 'routed', size: 64, rings: 'split' },
  { job: 'full', size: 64, rings: 'split' },
];
/** a case as --only names it and the tables print it: bridged, bridged/packed, routed, full */
const caseName = (c: { job: JobName; rings: Rings }) => (c.rings === 'split' ? c.job : `${c.job}/${c.rings}`);
const ONLY = values.only?.split(',') ?? null;
const CASES = ONLY === null ? ALL_CASES : ALL_CASES.filter((c) => ONLY.includes(caseName(c)));
const GUEST_TCP = ONLY === null || ONLY.includes('guest-tcp');
if (CASES.length === 0 && !GUEST_TCP) throw new Error(`--only ${values.only}: no such job (bridged, bridged/packed, routed, full, guest-tcp)`);
const started = Date.now();
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});

const progress = (msg: string) => process.stderr.write(`\r\x1b[K[bench ${Math.round((Date.now() - started) / 1000)} s] ${msg}`);

const backends: Backend[] = [vrouterBackend([1]), testpmdIoBackend, ovsDpdkBackend];
// --against REV: that revision's vrouter too, in the same run (a change's before and after).
const against = values.against === undefined ? null : buildRevision(values.against);
if (against !== null) backends.splice(1, 0, vrouterBackend([1], against));
if (cpus().length >= 3) backends.splice(1, 0, vrouterBackend([1, 2]));
const twoPmdNote = cpus().length >= 3 ? null : `vrouter 2 PMDs not measured: ${cpus().length} CPUs, and 2 PMDs plus the generator need 3`;

interface Run extends Case {
  backend: string;
  round: number;
  pps?: number;
  rssMiB?: number;
  error?: string;
}
const runs: Run[] = [];

async function measureOnce(backend: Backend, { job, size, rings }: Case, round: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-'));
  const sockets: [string, string] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  let generator = null;
  let running = null;
  try {
    if (backend.generatorListens) generator = startGenerator(sockets, size, true, rings);
    running = await backend.start(sockets, job, size);
    generator ??= startGenerator(sockets, size, false, rings);
    const { pps } = await generator.measure(SECONDS);
    return { backend: backend.name, job, size, rings, round, pps, rssMiB: running.rssMiB() };
  } catch (err) {
    return { backend: backend.name, job, size, rings, round, error: (err as Error).message.split('\n')[0] };
  } finally {
    await generator?.stop();
    await running?.stop();
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (let round = 1; round <= ROUNDS; round++) {
  // The backends in one order, then the other: none always runs first in its round (the
  // machine's speed drifts within a round, and a round's ratios compare its neighbours).
  const inTurn = round % 2 === 1 ? backends : [...backends].reverse();
  for (const c of CASES) {
    for (const backend of inTurn) {
      if (!backend.jobs.includes(c.job)) continue;
      const why = backend.unavailable();
      if (why) {
        if (round === 1) runs.push({ backend: backend.name, ...c, round, error: why });
        continue;
      }
      progress(`round ${round}/${ROUNDS}, ${caseName(c)} ${c.size} B, ${backend.name}`);
      runs.push(await measureOnce(backend, c, round));
    }
  }
}

// TCP between two guests, offloads on and off (vrouter only; the guests are the bottleneck).
let guestTcp: GuestTcpResult | { error: string } | null = null;
if (GUEST_TCP) {
  progress('guest to guest TCP, offloads on and off');
  try {
    guestTcp = await measureGuestTcp(ROUNDS, SECONDS);
  } catch (err) {
    guestTcp = { error: (err as Error).message.split('\n')[0] };
  }
}
const guestTcpLine = (r: GuestTcpResult | { error: string }) => ('error' in r ? `guest to guest TCP: not measured: ${r.error}` : describeGuestTcp(r));

/** the runs of one backend in one case */
const runOf = (backend: string, job: JobName, size: number, rings: Rings) => (r: Run) => r.backend === backend && r.job === job && r.size === size && r.rings === rings;
const table = CASES.flatMap(({ job, size, rings }) =>
  backends.filter((b) => b.jobs.includes(job)).map((b) => {
    const mine = runOf(b.name, job, size, rings);
    const ok = runs.filter((r) => mine(r) && r.pps !== undefined);
    const pps = median(ok.map((r) => r.pps!));
    const error = runs.find((r) => mine(r) && r.error)?.error;
    return { backend: b.name, job, size, rings, mpps: pps / 1e6, gbps: (pps * size * 8) / 1e9, nsPerPacket: 1e9 / pps, runs: ok.map((r) => r.pps! / 1e6), rssMiB: median(ok.map((r) => r.rssMiB!)), error: ok.length ? undefined : error };
  }),
);
/** a paired ratio as the lines print it */
const paired = (p: { median: number; rounds: number[] }) => `round by round: median ${p.median.toFixed(2)} of ${p.rounds.map((x) => x.toFixed(2)).join(' ')}`;
const row = (name: string, job: JobName, size: number, rings: Rings) => table.find((r) => r.backend === name && r.job === job && r.size === size && r.rings === rings);
/**
 * The ratio of two backends' rates round by round (each round measures every backend of a
 * case one after the other): this kind of machine changes speed from run to run, by up to
 * 2.5 times, and rates measured seconds apart are more often in the same mode than the
 * medians of all rounds. Their median, and each round's.
 */
function pairedRatios(a: (r: Run) => boolean, b: (r: Run) => boolean): { median: number; rounds: number[] } {
  const rounds: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const x = runs.find((r) => r.round === round && a(r))?.pps;
    const y = runs.find((r) => r.round === round && b(r))?.pps;
    if (x !== undefined && y !== undefined) rounds.push(x / y);
  }
  return { median: median(rounds), rounds };
}
/** vrouterOverBridged: against bridging on split rings (for bridged/packed: packed against split) */
const ratios = CASES.map(({ job, size, rings }) => {
  const v = row('vrouter 1 PMD', job, size, rings)?.mpps ?? NaN;
  return {
    job,
    size,
    rings,
    vrouterOverTestpmd: v / (row('testpmd io', 'bridged', size, rings)?.mpps ?? NaN),
    vrouterOverOvs: v / (row('OVS-DPDK', job, size, rings)?.mpps ?? NaN),
    /** vrouter / OVS-DPDK round by round */
    vrouterOverOvsPaired: pairedRatios(runOf('vrouter 1 PMD', job, size, rings), runOf('OVS-DPDK', job, size, rings)),
    vrouterOverBridged: v / (row('vrouter 1 PMD', 'bridged', size, 'split')?.mpps ?? NaN),
    vrouterOverBridgedPaired: pairedRatios(runOf('vrouter 1 PMD', job, size, rings), runOf('vrouter 1 PMD', 'bridged', size, 'split')),
    vrouterOverRevision: against === null ? undefined : v / (row(`vrouter ${against.name} 1 PMD`, job, size, rings)?.mpps ?? NaN),
  };
});

if (ONLY !== null) {
  process.stderr.write('\r\x1b[K');
  for (const r of table) console.log(`${r.backend.padEnd(20)} ${caseName(r).padEnd(14)} ${String(r.size).padStart(4)} ${(r.mpps).toFixed(2).padStart(7)} Mpps ${r.gbps.toFixed(2).padStart(7)} Gbit/s  ${r.error ? `not measured: ${r.error}` : r.runs.map((x) => x.toFixed(2)).join(' ')}`);
  for (const r of ratios) {
    const vsBridged = r.job === 'bridged' && r.rings === 'split' ? '' : `, vrouter ${caseName(r)} / bridged = ${r.vrouterOverBridged.toFixed(2)} (${paired(r.vrouterOverBridgedPaired)})`;
    console.log(`${caseName(r)} ${r.size} B: vrouter / OVS-DPDK = ${r.vrouterOverOvs.toFixed(2)} (${paired(r.vrouterOverOvsPaired)})${vsBridged}${r.vrouterOverRevision === undefined ? '' : `, vrouter / vrouter ${against?.name} = ${r.vrouterOverRevision.toFixed(2)}`}`);
  }
  if (guestTcp !== null) console.log(guestTcpLine(guestTcp));
  mkdirSync(join(REPO, 'results'), { recursive: true });
  const file = join(REPO, 'results', `bench-only-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, table, ratios, guestTcp, runs }, null, 2));
  console.log(`results: ${file}`);
  process.exit(0);
}

// The routed row with the admin endpoint idle, then busy, in alternating windows of one run.
progress('routed 64 B, admin endpoint idle and busy');
/**
 * 1,000 changes a second as single POST/DELETE requests, and as PATCH /routes of 100 each (a
 * routing daemon's updates); the latter again with the generator's queues of 1,024 entries
 * (busy-admin.ts: how deep the generator's queues are decides how long the PMD keeps busy
 * while the control plane has the generator's CPU).
 */
const BUSY_ADMIN_RUNS = [
  { batch: 1, queueSize: DEFAULT_QUEUE_SIZE },
  { batch: 100, queueSize: DEFAULT_QUEUE_SIZE },
  { batch: 100, queueSize: 1024 },
];
const busyAdmins: { batch: number; queueSize: number; result: BusyAdminResult | { error: string } }[] = [];
for (const { batch, queueSize } of BUSY_ADMIN_RUNS) {
  try {
    busyAdmins.push({ batch, queueSize, result: await measureBusyAdmin(values.quick ? 2 : 6, values.quick ? 3 : 4, batch, queueSize) });
  } catch (err) {
    busyAdmins.push({ batch, queueSize, result: { error: (err as Error).message.split('\n')[0] } });
  }
}

// The data plane killed, and upgraded, while it forwards: how long forwarding stops.
progress('data-plane deaths and upgrades');
let pauses: DataplanePauses | { error: string };
try {
  pauses = await measureDataplanePauses(values.quick ? 3 : 10);
} catch (err) {
  pauses = { error: (err as Error).message.split('\n')[0] };
}

// Idle CPU and memory: vrouter with 2 ports and its default idle back-off.
progress('idle CPU and memory');
async function idleFigures(cores: number[]) {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores } }));
  await sleep(1000);
  const ticksOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13).reduce((a, b) => a + Number(b), 0);
  const ticks = () => [vr.proc.pid!, ...dataplanePids(vr.proc.pid!)].reduce((sum, pid) => sum + ticksOf(pid), 0);
  const t0 = ticks();
  await sleep(3000);
  const cpuPercent = ((ticks() - t0) / 100 / 3) * 100; // clock ticks are 1/100 s
  const rssMiB = vrouterRssMiB(vr.proc.pid!);
  await vr.stop();
  return { pmds: cores.length, cpuPercentOfOneCore: cpuPercent, rssMiB };
}
const idle = [await idleFigures([cpus().length - 1]), await idleFigures([0, cpus().length - 1])];

progress('first frame after idle');
const firstPacket = await measureFirstPacket();
const microResults = [];
for (const m of [...ringMicro, ...datapathMicro, ...copyMicro]) {
  progress(m.name);
  const { opsPerSec } = await m.run();
  microResults.push({ name: m.name, mopsPerSec: opsPerSec / 1e6, nsPerOp: 1e9 / opsPerSec });
}
releaseCopyMemory();
progress('ns per packet of each stage');
const stages = await stageFigures();
progress('ns per packet of a whole PMD');
const pmdMicro = await pmdFigures();
// The tables' own micro-benchmarks, each its own process (their tables are large): LPM with
// 1,000,000 IPv4 and 100,000 IPv6 routes, the ACL stage with 10, 100 and 1000 rules and
// 1,000,000 tracked flows, the policers; compile times and memory are in their output.
/** Benchmarks run on their own, with what they print kept (route-convergence runs vrouter with a million routes, uplinks every port type: longer). */
const TABLE_BENCHES = ['plugins/routing/lpm-bench.ts', 'plugins/acl/acl-bench.ts', 'plugins/ratelimit/ratelimit-bench.ts', 'bench/route-convergence.ts', 'bench/uplinks.ts'];
const tables = TABLE_BENCHES.map((file) => {
  progress(file);
  const args = file === 'bench/uplinks.ts' ? ['--rounds', String(ROUNDS), '--seconds', String(SECONDS)] : values.quick ? ['--quick'] : [];
  // execArgv: with the hook that inlines constants, as this process (micro/dataplane-jit.ts)
  const r = spawnSync(process.execPath, [...process.execArgv, join(REPO, file), ...args], { encoding: 'utf8', timeout: 1_200_000 });
  return { file, output: (r.stdout || '').trim(), error: r.status === 0 ? undefined : (r.stderr || r.error?.message || `exit ${r.status}`).split('\n')[0] };
});
process.stderr.write('\r\x1b[K');

/** The last run's figures, to set this run's beside them (results/latest.json, before it is replaced). */
const previous = ((): { machine: { date: string }; table: { backend: string; job: string; size: number; rings?: Rings; mpps: number }[] } | null => {
  try {
    return JSON.parse(readFileSync(join(REPO, 'results', 'latest.json'), 'utf8'));
  } catch {
    return null;
  }
})();
const machine = {
  cpu: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown',
  cpus: cpus().length,
  node: process.version,
  kernel: release(),
  date: new Date().toISOString(),
};
const fmt = (n: number | undefined, d = 2) => (n === undefined || Number.isNaN(n) ? '-' : n.toFixed(d));
console.log(`vrouter benchmark, ${machine.date}, ${machine.cpu}, ${machine.cpus} CPUs, Node ${machine.node}`);
console.log(`flowgen (dpdk-testpmd, 2 virtio-user ports, CPU 0) through each backend (CPU 1); ${ROUNDS} round(s) of ${SECONDS} s, medians\n`);
console.log('backend              job            size    Mpps   Gbit/s  ns/pkt   RSS MiB  runs (Mpps)       (RSS without the guests\' shared memory)');
for (const r of table) {
  console.log(`${r.backend.padEnd(20)} ${caseName(r).padEnd(14)} ${String(r.size).padStart(4)} ${fmt(r.mpps).padStart(7)} ${fmt(r.gbps).padStart(8)} ${fmt(r.nsPerPacket, 0).padStart(7)} ${fmt(r.rssMiB, 0).padStart(9)}  ${r.error ? `not measured: ${r.error}` : r.runs.map((x) => x.toFixed(2)).join(' ')}`);
}
for (const r of ratios) {
  const vsBridged = r.job === 'bridged' && r.rings === 'split' ? '' : `, vrouter ${caseName(r)} / bridged = ${fmt(r.vrouterOverBridged)} (${paired(r.vrouterOverBridgedPaired)})`;
  const vsRevision = r.vrouterOverRevision === undefined ? '' : `, vrouter / vrouter ${against?.name} = ${fmt(r.vrouterOverRevision)}`;
  console.log(`${caseName(r)} ${r.size} B: vrouter / OVS-DPDK = ${fmt(r.vrouterOverOvs)} (${paired(r.vrouterOverOvsPaired)})${r.job === 'bridged' ? `, vrouter / testpmd io = ${fmt(r.vrouterOverTestpmd)}` : ''}${vsBridged}${vsRevision}`);
}
if (twoPmdNote) console.log(twoPmdNote);
console.log(guestTcpLine(guestTcp!));
for (const { batch, queueSize, result: b } of busyAdmins) {
  const how = `${batch === 1 ? 'one POST or DELETE /routes each' : `PATCH /routes of ${batch} each`}, the generator's queues of ${queueSize}`;
  if ('error' in b) {
    console.log(`routed 64 B with a busy admin endpoint (${how}): not measured: ${b.error}`);
    continue;
  }
  const mpps = (xs: number[]) => xs.map((x) => (x / 1e6).toFixed(2)).join(' ');
  console.log(`routed 64 B, admin endpoint idle / busy (/metrics 10 times a second, 1,000 route changes a second asked, ${how}): ${fmt(b.idleMpps)} / ${fmt(b.busyMpps)} Mpps, busy / idle = ${fmt(b.ratio)}; each busy window against the idle ones beside it: median ${fmt(b.pairedRatio)} of ${b.windowRatios.map((x) => fmt(x)).join(' ')}`);
  console.log(`  route changes applied: ${fmt(b.changesPerSecond, 0)} a second (${b.load.errors} refused or failed, slowest answer ${fmt(b.load.slowestChangeMs, 0)} ms); /metrics scraped ${fmt(b.scrapesPerSecond, 1)} times a second`);
  console.log(`  vrouter's threads but the PMD: ${fmt(b.controlCpuIdle, 1)} % of a core idle, ${fmt(b.controlCpuBusy, 1)} % busy; the benchmark's own process (the load's client): ${fmt(b.benchCpuIdle, 1)} % idle, ${fmt(b.benchCpuBusy, 1)} % busy; one-second samples (Mpps): idle ${mpps(b.idle)}; busy ${mpps(b.busy)}`);
  console.log(`  the PMD itself, idle / busy: ${fmt(b.pmdNsIdle, 0)} / ${fmt(b.pmdNsBusy, 0)} ns of busy time per packet (busy / idle = ${fmt(b.pmdNsIdle / b.pmdNsBusy)}), busy ${fmt(b.pmdBusyIdle, 0)} / ${fmt(b.pmdBusyBusy, 0)} % of the time`);
  if (b.load.firstError) console.log(`  first error: ${b.load.firstError}`);
}
if ('error' in pauses) console.log(`data-plane deaths and upgrades: not measured: ${pauses.error}`);
else {
  const spread = (xs: number[]) => `median ${fmt(median(xs), 0)} ms (${fmt(Math.min(...xs), 0)} to ${fmt(Math.max(...xs), 0)}, ${xs.length} tries)`;
  console.log(`data plane killed (SIGKILL) while forwarding, to the first frame forwarded again: the spare taking over ${spread(pauses.deathMs)}; without a spare ${spread(pauses.coldDeathMs)}`);
  console.log(`  as vrouter measures it (GET /dataplane, from the death it saw to the queues handed over): ${spread(pauses.deathRestartMs)}`);
  console.log(`data plane upgraded while forwarding: pause ${spread(pauses.upgradePauseMs)} as vrouter measures it; longest stand-still of the counters ${spread(pauses.upgradeGapMs)}`);
}
if (previous !== null) {
  console.log(`\nthe previous run (${previous.machine.date}), vrouter 1 PMD, against this one:`);
  for (const r of table.filter((t) => t.backend === 'vrouter 1 PMD')) {
    const before = previous.table.find((p) => p.backend === r.backend && p.job === r.job && p.size === r.size && (p.rings ?? 'split') === r.rings);
    if (before !== undefined) console.log(`  ${caseName(r)} ${r.size} B: ${fmt(before.mpps)} then, ${fmt(r.mpps)} now (${fmt(r.mpps / before.mpps)})`);
  }
}
for (const i of idle) console.log(`idle, ${i.pmds} PMD(s), 2 ports: ${fmt(i.cpuPercentOfOneCore, 1)} % of one core, ${fmt(i.rssMiB, 0)} MiB RSS`);
for (const f of firstPacket) console.log(`first frame after 100 ms idle, ${f.mode}: median ${fmt(f.medianUs, 0)} µs, max ${fmt(f.maxUs, 0)} µs`);
for (const m of microResults) console.log(`${m.name}: ${fmt(m.mopsPerSec)} M/s (${fmt(m.nsPerOp, 1)} ns each)`);
for (const h of heapReport) console.log(`data path steady state, ${h.name}: ${h.gcs} garbage collections, heap ${fmt(h.heapGrowthKiB, 0)} KiB bigger`);
console.log('\nns per packet of each stage alone (burst of 32 64-byte UDP frames, one thread):');
for (const st of stages) console.log(`  ${st.name}: ${fmt(st.nsPerPacket, 1)}`);
console.log('ns per packet of a whole PMD, its pipeline as each job configures it (2 ports, bursts of 32 64-byte UDP frames of 1,024 flows, one thread, no peers):');
for (const f of pmdMicro) console.log(`  ${f.name}: ${fmt(f.nsPerPacket, 1)} (bridged / this = ${fmt(f.ofBridged)})`);
for (const tb of tables) {
  console.log(`\n${tb.file}${tb.error ? `: failed: ${tb.error}` : ''}`);
  if (tb.output) console.log(tb.output.split('\n').map((l) => `  ${l}`).join('\n'));
}

const results = { machine, rounds: ROUNDS, seconds: SECONDS, table, ratios, twoPmdNote, guestTcp, busyAdmin: busyAdmins, dataplanePauses: pauses, idle, firstPacket, micro: microResults, heap: heapReport, stages, pmdMicro, tables, runs };
const out = join(REPO, 'results');
mkdirSync(out, { recursive: true });
const text = JSON.stringify(results, null, 2);
writeFileSync(join(out, `bench-${machine.date.replace(/[:.]/g, '-')}.json`), text);
writeFileSync(join(out, 'latest.json'), text);
console.log(`\nresults: results/latest.json (${Math.round((Date.now() - started) / 1000)} s)`);
