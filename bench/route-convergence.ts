// node bench/route-convergence.ts [--routes N,...] [--source fpm|netlink,...] [--quick]
// [--timeout S] [--log FILE]: a full BGP table's worth of IPv4 routes pushed into a running
// vrouter (dist/, as `npm run build` makes it) through a route source, and taken away
// again: a synthetic zebra sending FPM frames of RTM_NEWROUTE messages over TCP (default:
// 100,000 and 1,000,000 prefixes, shaped like the Internet's table), and `ip -batch` in a
// network namespace vrouter reads through netlink (100,000; needs root). Reports the time
// from the first route sent until every route is in vrouter's FIB (the routing stage's
// route gauge counts the learned routes in its tables; then a sample of the prefixes is
// probed with packets that must leave port b to their gateway's MAC), the time until all
// are gone again, the supervisor's and the data plane's memory after, and whether
// forwarding stalled meanwhile: a guest on port a sends a packet every millisecond to a
// neighbour on port b throughout, and the longest gap between two arrivals bounds the
// longest time the PMD did not forward (this process's own lateness is in it, and shown).
// --log FILE keeps vrouter's log of the last run (its compiles, their times). --bin FILE
// runs another build of the daemon (an older revision's dist/bin/vrouter.js, for a before
// and after); its list and lookup are not measured (an older GET /routes makes the whole
// list at once).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { setThreadCpus } from '../src/sys/libc.ts';
import { adminClient, type AdminClient } from '../test/support/admin-client.ts';
import { udp4 } from '../test/support/frames.ts';
import { prng } from '../test/support/prng.ts';
import { testGuest, type TestGuest } from '../test/support/test-guest.ts';
import { dataplanePids } from '../test/support/traffic.ts';
import { startDevice } from '../test/support/vhost-frontend.ts';
import { startVrouter, VROUTER_BIN, type StartedVrouter } from '../test/support/vrouter-process.ts';

const { values } = parseArgs({ options: { routes: { type: 'string' }, source: { type: 'string' }, quick: { type: 'boolean' }, timeout: { type: 'string' }, log: { type: 'string' }, bin: { type: 'string' } } });
type Source = 'fpm' | 'netlink';
/** The runs: each source with each table size (netlink only up to 100,000: `ip` alone takes seconds for that many). */
const RUNS: { source: Source; routes: number }[] = (() => {
  if (values.quick) return [{ source: 'fpm', routes: 100_000 }];
  const sizes = (values.routes ?? '100000,1000000').split(',').map(Number);
  const sources = (values.source ?? 'fpm,netlink').split(',') as Source[];
  return sources.flatMap((source) => sizes.filter((n) => source === 'fpm' || n <= 100_000 || values.routes !== undefined).map((routes) => ({ source, routes })));
})();
/** How long a push may take to converge before the run is given up. */
const TIMEOUT_MS = Number(values.timeout ?? 600) * 1000;

const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01' };
const GUEST_A = '52:54:00:00:00:0a';
/** The gateways the routes use, each a static neighbour on b with a MAC of its own (the last byte is its index). */
const GATEWAYS = Array.from({ length: 8 }, (_, k) => ({ address: `10.0.2.${2 + k}`, mac: `52:54:00:00:0b:${(0x10 + k).toString(16)}` }));
/** The steady stream's destination: a neighbour on b, connected. */
const STEADY = { address: '10.0.2.200', mac: '52:54:00:00:0b:c8' };
const METRIC = 20;
const RTPROT_BGP = 186;
const PROBES = 200;
/** Routes changed at once with the table in force (the most the routing stage changes in place is 4,096). */
const CHURN = 4090;
const PMD_CPU = 1;

// ---- the routes --------------------------------------------------------------------------

/**
 * `count` distinct IPv4 prefixes shaped like the Internet's table (more than half /24s, most
 * of the rest /16 to /23, a few shorter and longer), outside 10/8, 127/8 and multicast,
 * each with one of the gateways.
 */
function bgpTable(count: number): { address: Uint32Array; length: Uint8Array; gateway: Uint8Array } {
  const rand = prng(2026);
  const shares: [number, number][] = [[24, 58], [23, 9], [22, 11], [21, 5], [20, 5], [19, 3], [18, 2], [17, 1], [16, 2], [12, 1], [25, 1], [28, 1], [32, 1]];
  const lengths: number[] = shares.flatMap(([length, n]) => Array<number>(n).fill(length));
  const out = { address: new Uint32Array(count), length: new Uint8Array(count), gateway: new Uint8Array(count) };
  const seen = new Set<number>();
  for (let i = 0; i < count; ) {
    const length = lengths[rand() % lengths.length];
    const first = 1 + (rand() % 223);
    if (first === 10 || first === 127) continue;
    const address = ((first << 24) | (rand() & 0xffffff)) & (length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0);
    const key = address * 33 + length;
    if (seen.has(key)) continue;
    seen.add(key);
    out.address[i] = address >>> 0;
    out.length[i] = length;
    out.gateway[i] = rand() % GATEWAYS.length;
    i++;
  }
  return out;
}

const dotted = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;

/**
 * The routes as zebra's dplane_fpm_nl sends them: FPM frames (version 1, netlink, length
 * with the header, big-endian) each holding as many netlink messages as fit in 65535 bytes.
 * Each message: nlmsghdr, rtmsg (main table, BGP, unicast), RTA_DST, RTA_PRIORITY,
 * RTA_GATEWAY, RTA_OIF; host byte order.
 */
function fpmFrames(table: ReturnType<typeof bgpTable>, op: 'add' | 'remove'): Buffer {
  const MESSAGE = 60;
  const PER_FRAME = Math.floor((65535 - 4) / MESSAGE);
  const count = table.address.length;
  const frames = Math.ceil(count / PER_FRAME);
  const out = Buffer.alloc(frames * 4 + count * MESSAGE);
  let o = 0;
  for (let i = 0; i < count; i += PER_FRAME) {
    const n = Math.min(PER_FRAME, count - i);
    out.writeUInt8(1, o);
    out.writeUInt8(1, o + 1);
    out.writeUInt16BE(4 + n * MESSAGE, o + 2);
    o += 4;
    for (let k = i; k < i + n; k++) {
      out.writeUInt32LE(MESSAGE, o);
      out.writeUInt16LE(op === 'add' ? 24 : 25, o + 4); // RTM_NEWROUTE, RTM_DELROUTE
      out.writeUInt16LE(op === 'add' ? 0x501 : 0x1, o + 6); // NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
      out.writeUInt32LE(k, o + 8);
      out.writeUInt32LE(0, o + 12);
      // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type; flags
      out.set([2, table.length[k], 0, 0, 254, RTPROT_BGP, 0, 1], o + 16);
      out.writeUInt32LE(0, o + 24);
      const attr = (at: number, type: number, value: (at: number) => void) => {
        out.writeUInt16LE(8, o + at);
        out.writeUInt16LE(type, o + at + 2);
        value(o + at + 4);
      };
      attr(28, 1, (at) => out.writeUInt32BE(table.address[k], at)); // RTA_DST
      attr(36, 6, (at) => out.writeUInt32LE(METRIC, at)); // RTA_PRIORITY
      attr(44, 5, (at) => out.writeUInt32BE(gatewayWord(table.gateway[k]), at)); // RTA_GATEWAY
      attr(52, 4, (at) => out.writeUInt32LE(2, at)); // RTA_OIF: zebra's interface, none of vrouter's
      o += MESSAGE;
    }
  }
  return out;
}

const gatewayWord = (k: number) => GATEWAYS[k].address.split('.').reduce((a, b) => a * 256 + Number(b), 0);

/** Writes `bytes` to zebra's end of the FPM connection, in pieces, minding backpressure. */
async function send(socket: Socket, bytes: Buffer): Promise<void> {
  const PIECE = 1 << 20;
  for (let o = 0; o < bytes.length; o += PIECE) {
    if (!socket.write(bytes.subarray(o, o + PIECE))) await new Promise((resolve) => socket.once('drain', resolve));
  }
}

async function connectFpm(port: number): Promise<Socket> {
  for (let tries = 0; ; tries++) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
        s.once('error', reject);
      });
    } catch (err) {
      if (tries > 100) throw err;
      await sleep(50);
    }
  }
}

// ---- what vrouter shows ------------------------------------------------------------------

/** The routing stage's route gauge (connected, configured and learned routes in force). */
async function routesInForce(api: AdminClient): Promise<number> {
  const text = (await api.call('GET', '/metrics')).text;
  return Number(/vrouter_plugin_state\{plugin="routing",name="routes"\} (\d+)/.exec(text)?.[1] ?? NaN);
}

function memory(pid: number | undefined): { rssMiB: number; anonMiB: number; peakMiB: number } {
  if (pid === undefined) return { rssMiB: NaN, anonMiB: NaN, peakMiB: NaN };
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rssMiB: kib('VmRSS') / 1024, anonMiB: kib('RssAnon') / 1024, peakMiB: kib('VmHWM') / 1024 };
}

/**
 * The guests: a sends to STEADY once a millisecond (and probes when asked); b's arrivals
 * are read as they come, and the gaps between STEADY's arrivals kept.
 */
function traffic(a: TestGuest, b: TestGuest) {
  let seq = 0;
  let lastSteady = 0;
  let window: { longest: number; late: number; from: number } | null = null;
  let watched = { gap: 0, late: 0 };
  const steady = () => udp4({ src: '10.0.1.2', dst: STEADY.address, srcPort: 1000 + (seq++ % 1000), dstPort: 9, payload: 18, srcMac: GUEST_A, dstMac: ROUTER.a });
  const probesSeen = new Map<string, string>();
  let lastTick = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    if (window !== null && lastTick >= window.from) window.late = Math.max(window.late, now - lastTick);
    lastTick = now;
    a.offer([steady()]);
    const got = b.poll();
    for (let k = 0; k < got.length; k++) {
      const f = got[k];
      if (f.ip?.dst === STEADY.address) {
        const at = b.at[k];
        if (window !== null && lastSteady >= window.from) window.longest = Math.max(window.longest, at - lastSteady);
        lastSteady = at;
      } else if (f.ip !== undefined) probesSeen.set(f.ip.dst, f.dstMac);
    }
    got.length = 0;
    b.at.length = 0;
    a.got.length = 0;
    a.at.length = 0;
  }, 1);
  return {
    /** watches for the longest gap until the promise settles (the gaps of several watches are kept together) */
    async watch<T>(during: Promise<T>): Promise<T> {
      window = { longest: watched.gap, late: watched.late, from: performance.now() };
      try {
        return await during;
      } finally {
        const w = window;
        window = null;
        watched = { gap: Math.max(w.longest, performance.now() - lastSteady), late: w.late };
      }
    },
    /** over the watches, in ms: the longest gap between two arrivals, and the longest this process's own timer was late (its part of a gap) */
    longestGap: () => watched,
    flowing: () => lastSteady > 0,
    /** sends a packet to `address` every millisecond until one leaves b with `mac` */
    async until(address: string, mac: string, timeoutMs: number): Promise<void> {
      const deadline = performance.now() + timeoutMs;
      probesSeen.delete(address);
      while (probesSeen.get(address) !== mac) {
        if (performance.now() > deadline) throw new Error(`no packet to ${address} left with ${mac} within ${timeoutMs} ms`);
        a.offer([udp4({ src: '10.0.1.2', dst: address, srcPort: 3000, dstPort: 9, payload: 18, srcMac: GUEST_A, dstMac: ROUTER.a })]);
        await sleep(1);
      }
    },
    /** sends a packet to each address; resolves with the MAC each left b with ('' if it did not) */
    async probe(addresses: string[]): Promise<string[]> {
      probesSeen.clear();
      for (let k = 0; k < addresses.length; k += 32) {
        const part = addresses.slice(k, k + 32).map((dst, j) => udp4({ src: '10.0.1.2', dst, srcPort: 2000 + j, dstPort: 9, payload: 18, srcMac: GUEST_A, dstMac: ROUTER.a }));
        while (a.offer(part) < part.length) await sleep(1);
        await sleep(2);
      }
      await sleep(200);
      return addresses.map((d) => probesSeen.get(d) ?? '');
    },
    stop: () => clearInterval(timer),
  };
}

// ---- one run ----------------------------------------------------------------------------

interface RunResult {
  source: Source;
  routes: number;
  /** seconds from the first route sent to all of them in force, and back to none after the withdrawal */
  addSeconds: number;
  removeSeconds: number;
  /** seconds the sender took (writing the frames; `ip -batch` running) */
  sendSeconds: number;
  /** probes forwarded to their route's gateway, of PROBES */
  probesRight: number;
  /** the longest time no packet of the steady stream arrived, while the routes came and went */
  longestGapMs: number;
  /** the longest time this process's 1 ms timer took: how much of the gap is the generator's own */
  senderLateMs: number;
  supervisor: ReturnType<typeof memory>;
  dataplane: ReturnType<typeof memory>;
  /** PMD restarts the log shows (a stuck PMD) */
  pmdRestarts: number;
  /** GET /routes with every route: how many, how big, how long, and the supervisor's peak memory after */
  list?: { routes: number; mib: number; seconds: number; peakMiB: number };
  /** GET /routes?lookup=ADDRESS */
  lookupMs?: number;
  /** ms from CHURN routes sent again with another gateway (the table in force) until the last of them forwards by it */
  churnMs?: number;
  error?: string;
}

async function untilRoutes(api: AdminClient, expected: number, since: number): Promise<number> {
  for (;;) {
    if ((await routesInForce(api)) === expected) return (performance.now() - since) / 1000;
    if (performance.now() - since > TIMEOUT_MS) throw new Error(`not converged within ${TIMEOUT_MS / 1000} s (routes in force: ${await routesInForce(api)}, ${expected} expected)`);
    await sleep(20);
  }
}

async function run(source: Source, count: number): Promise<RunResult> {
  const table = bgpTable(count);
  const fpmPort = 20000 + Math.floor(Math.random() * 20000);
  const netns = `vrt-conv-${randomBytes(3).toString('hex')}`;
  const batchFile = join(tmpdir(), netns);
  if (source === 'netlink') {
    execFileSync('ip', ['netns', 'add', netns]);
    execFileSync('ip', ['-n', netns, 'link', 'add', 'gw0', 'type', 'veth', 'peer', 'name', 'gw1']);
    execFileSync('ip', ['-n', netns, 'addr', 'add', '10.0.2.100/24', 'dev', 'gw0']);
    for (const l of ['gw0', 'gw1']) execFileSync('ip', ['-n', netns, 'link', 'set', l, 'up']);
  }
  const result: RunResult = { source, routes: count, addSeconds: NaN, removeSeconds: NaN, sendSeconds: NaN, probesRight: 0, longestGapMs: NaN, senderLateMs: NaN, supervisor: memory(undefined), dataplane: memory(undefined), pmdRestarts: 0 };
  let vr: StartedVrouter | null = null;
  let stopTraffic = () => {};
  try {
    vr = await startVrouter({
      ports: [
        { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
        { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
      ],
      pmd: { cores: [PMD_CPU], spare: false },
      pipeline: ['routing'],
      neighbours: [...GATEWAYS, STEADY].map((g) => ({ address: g.address, mac: g.mac, port: 'b' })),
      routeSources: [source === 'fpm' ? { type: 'fpm', listen: `127.0.0.1:${fpmPort}` } : { type: 'netlink', netns }],
    }, 60_000, undefined, values.bin ?? VROUTER_BIN);
    const api = adminClient(vr);
    const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
    const flows = traffic(testGuest(devA), testGuest(devB));
    stopTraffic = () => (flows.stop(), devA.close(), devB.close());
    const deadline = Date.now() + 10_000;
    while (!flows.flowing()) {
      if (Date.now() > deadline) throw new Error('the steady stream does not reach b');
      await sleep(10);
    }
    const base = await routesInForce(api);
    const fpm = source === 'fpm' ? await connectFpm(fpmPort) : null;
    // Made before the clock starts: building them would stall this process's steady stream.
    const adds = source === 'fpm' ? fpmFrames(table, 'add') : null;
    const removes = source === 'fpm' ? fpmFrames(table, 'remove') : null;
    const additions = `${batchFile}.add`;
    const removals = `${batchFile}.del`;
    if (source === 'netlink') {
      const lines = (op: string) => Array.from({ length: count }, (_, k) => `route ${op} ${dotted(table.address[k])}/${table.length[k]}${op === 'add' ? ` via ${GATEWAYS[table.gateway[k]].address}` : ''} metric ${METRIC}${op === 'add' ? ' proto bgp' : ''}\n`).join('');
      writeFileSync(additions, lines('add'));
      writeFileSync(removals, lines('del'));
    }
    const ipBatch = async (file: string) => {
      const child = spawn('ip', ['-n', netns, '-batch', file], { stdio: ['ignore', 'ignore', 'inherit'] });
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      if (code !== 0) throw new Error(`ip -batch exited with ${code}`);
    };
    // The probes: an address in each of a sample of the prefixes, and the gateway of the longest prefix pushed that holds it.
    const sample = prng(7);
    const addresses = Array.from({ length: PROBES }, () => {
      const k = sample() % count;
      return dotted((table.address[k] | (sample() & (table.length[k] === 32 ? 0 : 0xffffffff >>> table.length[k]))) >>> 0);
    });
    const expected = addresses.map((d) => GATEWAYS[table.gateway[longestMatch(table, d)]].mac);
    await sleep(500);

    // Every route pushed, then in force.
    let started = performance.now();
    const sent = (fpm !== null ? send(fpm, adds!) : ipBatch(additions)).then(() => (result.sendSeconds = (performance.now() - started) / 1000));
    result.addSeconds = await flows.watch(untilRoutes(api, base + count, started));
    await sent;
    const macs = await flows.probe(addresses);
    result.probesRight = macs.filter((m, k) => m === expected[k]).length;
    await sleep(1000);
    result.supervisor = memory(vr.proc.pid);
    result.dataplane = memory(dataplanePids(vr.proc.pid!)[0]);
    // A burst of changes with the table in force: CHURN of the routes to another gateway,
    // until a packet to the last of them leaves by its new gateway.
    if (count > CHURN) {
      const picked = Array.from({ length: CHURN }, (_, i) => Math.floor((i * count) / CHURN));
      const churned = { address: Uint32Array.from(picked, (k) => table.address[k]), length: Uint8Array.from(picked, (k) => table.length[k]), gateway: Uint8Array.from(picked, (k) => (table.gateway[k] + 1) % GATEWAYS.length) };
      // The last one whose first address it is itself the longest match for (no longer prefix pushed under it).
      let last = CHURN - 1;
      while (longestMatch(table, dotted(churned.address[last])) !== picked[last]) last--;
      const changes = fpm !== null ? fpmFrames(churned, 'add') : null;
      if (source === 'netlink') writeFileSync(additions, Array.from({ length: CHURN }, (_, k) => `route replace ${dotted(churned.address[k])}/${churned.length[k]} via ${GATEWAYS[churned.gateway[k]].address} metric ${METRIC} proto bgp\n`).join(''));
      await sleep(2000);
      const changed = performance.now();
      await flows.watch(Promise.all([fpm !== null ? send(fpm, changes!) : ipBatch(additions), flows.until(dotted(churned.address[last]), GATEWAYS[churned.gateway[last]].mac, TIMEOUT_MS)]));
      result.churnMs = performance.now() - changed;
      // As they were, for the withdrawal.
      if (fpm !== null) await send(fpm, fpmFrames({ address: churned.address, length: churned.length, gateway: Uint8Array.from(picked, (k) => table.gateway[k]) }, 'add'));
      await sleep(1000);
    }

    // The whole list, as GET /routes writes it out, and one route the FIB matches.
    if (values.bin === undefined) {
      let listed = performance.now();
      const all = await api.call('GET', '/routes');
      result.list = { routes: (all.text.match(/\n\{/g) ?? []).length, mib: all.text.length / 2 ** 20, seconds: (performance.now() - listed) / 1000, peakMiB: memory(vr.proc.pid).peakMiB };
      const lookups: number[] = [];
      for (let k = 0; k < 5; k++) {
        listed = performance.now();
        const one = await api.call('GET', `/routes?lookup=${addresses[k]}`);
        lookups.push(performance.now() - listed);
        if (one.json?.[0]?.via?.[0] !== GATEWAYS.find((g) => g.mac === expected[k])?.address) throw new Error(`GET /routes?lookup=${addresses[k]}: ${one.text}`);
      }
      result.lookupMs = lookups.sort((x, y) => x - y)[2];
    }

    // Every route withdrawn.
    started = performance.now();
    result.removeSeconds = await flows.watch(Promise.all([fpm !== null ? send(fpm, removes!) : ipBatch(removals), untilRoutes(api, base, started)]).then(([, seconds]) => seconds));
    ({ gap: result.longestGapMs, late: result.senderLateMs } = flows.longestGap());
    fpm?.destroy();
  } catch (err) {
    result.error = (err as Error).message.split('\n')[0];
  } finally {
    stopTraffic();
    result.pmdRestarts = (vr?.stderr().match(/is stuck|exited with code .*: restarting it/g) ?? []).length;
    // --log FILE: vrouter's log of the last run, to see what it did.
    if (values.log !== undefined) writeFileSync(values.log, vr?.stderr() ?? '');
    await vr?.stop();
    if (source === 'netlink') execFileSync('ip', ['netns', 'del', netns]);
    for (const ext of ['add', 'del']) rmSync(`${batchFile}.${ext}`, { force: true });
  }
  return result;
}

/** The index of the longest pushed prefix that holds `address` (a linear search: only for the probes). */
function longestMatch(table: ReturnType<typeof bgpTable>, address: string): number {
  const a = address.split('.').reduce((x, y) => x * 256 + Number(y), 0);
  let best = -1;
  for (let k = 0; k < table.address.length; k++) {
    const length = table.length[k];
    const mask = length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
    if (((a & mask) >>> 0) === table.address[k] && (best < 0 || length > table.length[best])) best = k;
  }
  return best;
}

const fmt = (n: number, d = 2) => (Number.isNaN(n) ? '-' : n.toFixed(d));
// This process (the guests, the sender) keeps off the PMD's CPU, as vrouter's own threads do.
setThreadCpus(cpus().map((_, i) => i).filter((c) => c !== PMD_CPU));
console.log('source   routes    in force (s)  withdrawn (s)  sent in (s)  probes  longest gap (ms)  supervisor RSS / anon / peak (MiB)  data plane RSS / anon (MiB)');
const results: RunResult[] = [];
for (const { source, routes } of RUNS) {
  const r = await run(source, routes);
  results.push(r);
  const mem = (m: ReturnType<typeof memory>, peak: boolean) => `${fmt(m.rssMiB, 0)} / ${fmt(m.anonMiB, 0)}${peak ? ` / ${fmt(m.peakMiB, 0)}` : ''}`;
  console.log(
    `${source.padEnd(8)} ${String(routes).padStart(7)}  ${fmt(r.addSeconds).padStart(13)}  ${fmt(r.removeSeconds).padStart(13)}  ${fmt(r.sendSeconds).padStart(11)}  ${`${r.probesRight}/${PROBES}`.padStart(7)}  ${`${fmt(r.longestGapMs, 0)} (${fmt(r.senderLateMs, 0)})`.padStart(16)}  ${mem(r.supervisor, true).padStart(34)}  ${mem(r.dataplane, false).padStart(27)}${r.pmdRestarts > 0 ? `  ${r.pmdRestarts} PMD restarts` : ''}${r.error ? `  failed: ${r.error}` : ''}`,
  );
}
for (const r of results) {
  if (r.churnMs !== undefined) console.log(`${r.source} ${r.routes}: ${CHURN} routes changed at once, the table in force: forwarding by the last of them ${fmt(r.churnMs, 0)} ms after the first was sent`);
  if (r.list !== undefined) console.log(`${r.source} ${r.routes}: GET /routes wrote ${r.list.routes} routes (${fmt(r.list.mib, 0)} MiB) in ${fmt(r.list.seconds)} s, the supervisor's peak then ${fmt(r.list.peakMiB, 0)} MiB; GET /routes?lookup=ADDRESS ${fmt(r.lookupMs ?? NaN, 1)} ms (median of 5)`);
}
console.log('longest gap: the longest time between two packets of a steady 1 kpps stream a -> b while the routes came and went, an upper bound of');
console.log('how long forwarding stood still; in brackets the longest this process\'s own 1 ms timer took, its share of the gap');
if (results.some((r) => r.error !== undefined)) process.exitCode = 1;
