// npm run soak -- --minutes N [--sample-seconds S]: vrouter under everything at once for N
// minutes, sampling what its processes hold, to show that nothing grows.
//
// Two guests ping and run iperf3 through a bridge of a routed vrouter (routing, acl and
// ratelimit stages); meanwhile one guest is rebooted every 5 minutes, the data-plane
// process is killed every 2 minutes (SIGKILL), hostile test frontends come and go on the
// routed ports (hang-ups mid-set-up, garbage, a short device session, and every 4 minutes from
// the third one that shrinks its guest memory under the data plane), routes change every second, the ACL
// every 10 seconds and a port is added and removed every minute. Every S seconds (15) the
// fds, resident memory, mappings and threads of the supervisor, the data plane and its spare
// are sampled. At the end: each figure's median over the first and the last third of the
// run, and whether anything grew. Exit status 1 if something did.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import * as sys from '../src/sys/libc.ts';
import { Req } from '../src/vhost/protocol.ts';
import { adminClient } from '../test/support/admin-client.ts';
import { ROUTED } from '../test/support/routed-config.ts';
import { dataplanePids, sparePids } from '../test/support/traffic.ts';
import { startDevice, VhostFrontend } from '../test/support/vhost-frontend.ts';
import { REPO, startVrouter } from '../test/support/vrouter-process.ts';
import { bootGuest, guestPrerequisites, type RunningGuest } from '../test/e2e/lib/guest.ts';

const { values } = parseArgs({ options: { minutes: { type: 'string' }, 'sample-seconds': { type: 'string' } } });
const MINUTES = Number(values.minutes ?? 30);
const SAMPLE_S = Number(values['sample-seconds'] ?? 15);
if (!(MINUTES > 0) || !(SAMPLE_S > 0)) throw new Error('usage: npm run soak -- --minutes N [--sample-seconds S]');
const missing = guestPrerequisites();
if (missing) throw new Error(`cannot run QEMU guests: ${missing}`);

/** What one process holds at one moment. */
interface Holdings {
  fds: number;
  rssKiB: number;
  mappings: number;
  threads: number;
}
type Role = 'supervisor' | 'dataplane' | 'spare';
interface Sample {
  atS: number;
  holdings: Partial<Record<Role, Holdings>>;
}

function holdings(pid: number): Holdings | undefined {
  try {
    return {
      fds: readdirSync(`/proc/${pid}/fd`).length,
      rssKiB: Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0),
      mappings: readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').length - 1,
      threads: readdirSync(`/proc/${pid}/task`).length,
    };
  } catch {
    return undefined; // it went between the listing and the reading
  }
}

const started = Date.now();
const elapsedS = () => Math.round((Date.now() - started) / 1000);
const say = (msg: string) => console.log(`[soak ${elapsedS()} s] ${msg}`);
const events: Record<string, number> = {};
const count = (what: string) => (events[what] = (events[what] ?? 0) + 1);

const config = { ...ROUTED, ports: [...ROUTED.ports, { name: 'e', socket: '{dir}/e.sock', bridge: 'br0' }] };
const vr = await startVrouter(config);
const api = adminClient(vr);
const supervisor = vr.proc.pid!;
const endAt = started + MINUTES * 60_000;
const guestSeconds = MINUTES * 60 + 120;

// d serves iperf3 (one test after the other); c pings it and runs iperf3 against it.
const bootD = () => bootGuest({ name: 'd', nics: [{ socket: vr.sockets.d, ip: '10.0.0.4/24' }], script: 'while true; do vr_iperf_server; done', timeoutS: guestSeconds });
let d: RunningGuest = bootD();
const c = bootGuest({
  name: 'c',
  nics: [{ socket: vr.sockets.c, ip: '10.0.0.3/24' }],
  script: `vr_wait_peer 10.0.0.4 120; end=$(( $(cut -d. -f1 /proc/uptime) + ${MINUTES * 60} )); while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do vr_ping 10.0.0.4 50 56 0.1; vr_iperf_client 10.0.0.4 3; done`,
  timeoutS: guestSeconds,
});

/**
 * Runs `step` every `everyMs` (the first time after `firstMs`) until the end, counting
 * failures rather than stopping.
 */
async function every(name: string, everyMs: number, step: () => Promise<void>, firstMs = everyMs): Promise<void> {
  for (let waitMs = firstMs; Date.now() + waitMs < endAt; waitMs = everyMs) {
    await sleep(waitMs);
    try {
      await step();
      count(name);
    } catch (err) {
      count(`${name} failed`);
      say(`${name}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
}

const hostileKinds = [
  async () => {
    // a frontend that hangs up in the middle of the set-up
    const fe = await VhostFrontend.connect(vr.sockets.b);
    fe.send(Req.SET_OWNER);
    fe.send(Req.GET_FEATURES);
    fe.close();
  },
  async () => {
    // garbage in place of a message header
    const fd = sys.unixConnect(vr.sockets.b);
    sys.sendMsg(fd, new Uint8Array(64).fill(0xa5));
    await sleep(50);
    sys.close(fd);
  },
  async () => {
    // a whole device set up, a few frames, then gone
    const dev = await startDevice(vr.sockets.b);
    await sleep(200);
    dev.close();
  },
];
let hostileTurn = 0;

const samples: Sample[] = [];
const tasks = [
  every('sample', SAMPLE_S * 1000, async () => {
    const h: Sample['holdings'] = { supervisor: holdings(supervisor) };
    const [dp] = dataplanePids(supervisor);
    const [spare] = sparePids(supervisor);
    if (dp !== undefined) h.dataplane = holdings(dp);
    if (spare !== undefined) h.spare = holdings(spare);
    samples.push({ atS: elapsedS(), holdings: h });
  }),
  every('guest reboot', 5 * 60_000, async () => {
    d.kill();
    await d.done;
    d = bootD();
  }),
  every('data-plane kill', 2 * 60_000, async () => {
    const [dp] = dataplanePids(supervisor);
    if (dp === undefined) throw new Error('no data plane to kill');
    process.kill(dp, 'SIGKILL');
  }),
  every('hostile session', 20_000, async () => {
    await hostileKinds[hostileTurn++ % hostileKinds.length]();
  }),
  every('memory shrunk under the data plane', 4 * 60_000, async () => {
    const dev = await startDevice(vr.sockets.a, { unsealable: true });
    await sleep(500);
    sys.ftruncate(dev.ram.fd, 0);
    await sleep(2000);
    dev.close();
    // Out of step with the kills, which would otherwise come at the same moments.
  }, 3 * 60_000),
  every('route change', 1000, async () => {
    const n = Math.floor(Math.random() * 250);
    const add = Array.from({ length: 10 }, (_, i) => ({ prefix: `198.18.${n}.${i * 16}/28`, via: '10.0.2.2' }));
    const answer = await api.call('PATCH', '/routes', { add, remove: [] });
    if (answer.status !== 200) throw new Error(`PATCH /routes: ${answer.text}`);
    const removed = await api.call('PATCH', '/routes', { add: [], remove: add.map((r) => r.prefix) });
    if (removed.status !== 200) throw new Error(`PATCH /routes: ${removed.text}`);
  }),
  every('ACL change', 10_000, async () => {
    const port = 1000 + Math.floor(Math.random() * 1000);
    const answer = await api.call('PUT', '/acl', { rules: [{ action: 'deny', protocol: 'tcp', dstPort: 23 }, { action: 'deny', protocol: 'udp', dstPort: port }] });
    if (answer.status !== 200) throw new Error(`PUT /acl: ${answer.text}`);
  }),
  every('port added and removed', 60_000, async () => {
    const added = await api.call('POST', '/ports', { name: 'x', socket: join(vr.dir, 'x.sock'), addresses: ['10.0.9.1/24'] });
    if (added.status !== 200) throw new Error(`POST /ports: ${added.text}`);
    await sleep(2000);
    const removed = await api.call('DELETE', '/ports/x');
    if (removed.status !== 200) throw new Error(`DELETE /ports/x: ${removed.text}`);
  }),
];
say(`running for ${MINUTES} minute(s), sampling every ${SAMPLE_S} s`);
await Promise.all(tasks);
const [rc, rd] = await Promise.all([c.done, (d.kill(), d.done)]);
const pings = rc.results.filter((r) => r.test === 'ping');
const iperfs = rc.results.filter((r) => r.test === 'iperf3');
const alive = vr.alive();
await vr.stop();

// Growth: the median of each figure over the last third against the first third.
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
};
const third = Math.max(1, Math.floor(samples.length / 3));
const roles: Role[] = ['supervisor', 'dataplane', 'spare'];
const fields: (keyof Holdings)[] = ['fds', 'rssKiB', 'mappings', 'threads'];
/** what counts as growth: more than this over the first third's median */
const SLACK: Record<keyof Holdings, (first: number) => number> = { fds: () => 2, rssKiB: (f) => f * 0.1, mappings: (f) => f * 0.05, threads: () => 1 };
const growth = roles.flatMap((role) =>
  fields.map((field) => {
    const series = samples.map((s) => s.holdings[role]?.[field]).filter((v): v is number => v !== undefined);
    const first = median(series.slice(0, third));
    const last = median(series.slice(-third));
    return { role, field, first, last, min: Math.min(...series), max: Math.max(...series), grew: last > first + SLACK[field](first) };
  }),
);
const machine = { cpu: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown', cpus: cpus().length, node: process.version, kernel: release(), date: new Date(started).toISOString() };
console.log(`\nvrouter soak, ${MINUTES} minute(s), ${machine.date}, ${machine.cpu}, ${machine.cpus} CPUs, Node ${machine.node}`);
console.log(`events: ${Object.entries(events).map(([k, v]) => `${k} ${v}`).join(', ')}`);
const lost = pings.reduce((sum, p) => sum + Number(p.sent) - Number(p.recv), 0);
const sent = pings.reduce((sum, p) => sum + Number(p.sent), 0);
console.log(`guest c: ${sent} pings, ${lost} lost (reboots of d and data-plane kills included); ${iperfs.length} iperf3 runs, median ${median(iperfs.map((r) => Number(r.receiver_mbps)))} Mbit/s`);
console.log('\nprocess     figure    first third  last third    min     max   grew');
for (const g of growth) console.log(`${g.role.padEnd(11)} ${g.field.padEnd(9)} ${String(g.first).padStart(11)} ${String(g.last).padStart(11)} ${String(g.min).padStart(7)} ${String(g.max).padStart(7)}   ${g.grew ? 'YES' : 'no'}`);
const grew = growth.filter((g) => g.grew);
console.log(alive ? (grew.length === 0 ? '\nnothing grew' : `\ngrew: ${grew.map((g) => `${g.role} ${g.field}`).join(', ')}`) : '\nvrouter died during the soak');
mkdirSync(join(REPO, 'results'), { recursive: true });
const file = join(REPO, 'results', `soak-${machine.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ machine, minutes: MINUTES, events, pings: { sent, lost }, iperf: iperfs, growth, samples, guestD: rd.qemuExit }, null, 2));
console.log(`results: ${file}`);
process.exit(alive && grew.length === 0 ? 0 : 1);
