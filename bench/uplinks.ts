// node bench/uplinks.ts [--rounds N --seconds S]: the rate through vrouter's uplink ports,
// against Linux's own forwarding between the same veths (what an operator would otherwise
// use), at 64 and 1518 bytes. testpmd flowgen (AF_PACKET driver, CPU 0) sends on one
// interface and receives on another; in between:
// - vrouter af_packet: two veth pairs, vrouter's AF_PACKET ports on one end of each;
// - vrouter af_xdp: the same, vrouter's AF_XDP ports (copy mode) on one end of each;
// - vrouter tap: vrouter's two TAP ports, the generator on the TAP interfaces themselves;
// - Linux: the same veth ends in a namespace that forwards (ip_forward, static neighbours).
// Every job routes (bench/lib/jobs.ts's addresses: the router's MAC 00:01:02:03:04:01 on
// both sides, 10.253.0.0/23 out of one, 10.253.2.0/23 out of the other). Each router under
// test has CPU 1, the generator CPU 0: vrouter's PMD is pinned there; Linux's forwarding is
// steered there (RPS on the routing namespace's veth ends). The kernel's work of delivering a
// frame into a receiving socket's ring runs on the sender's CPU (veth), for vrouter as for
// the generator: steering vrouter's interfaces to CPU 1 as well would set the kernel's
// softirqs against a PMD that never yields. Prints a table and writes results/uplinks-*.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MAC_A, MAC_B, startInterfaceGenerator } from './lib/generator.ts';
import { FLOWGEN_DST, ROUTED_TABLES } from './lib/jobs.ts';
import { stopAll } from './lib/processes.ts';
import { REPO, startVrouter } from '../test/support/vrouter-process.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' } } });
const ROUNDS = Number(values.rounds ?? 3);
const SECONDS = Number(values.seconds ?? 6);
const SIZES = [64, 1518];
/** where flowgen sends: the router's MAC on both sides */
const ROUTER_MAC = FLOWGEN_DST;
const tag = process.pid % 10000;
/** generator ends and router ends of the two veth pairs */
const GEN = [`ugA${tag}`, `ugB${tag}`] as const;
const DUT = [`urA${tag}`, `urB${tag}`] as const;
const FWD_NS = `vrfwd${tag}`;

const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
const quiet = (cmd: string, ...args: string[]) => {
  try {
    sh(cmd, ...args);
  } catch {
    // gone already
  }
};
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

/** An interface made fit for the measurement: its MAC, no IPv6 chatter, offloads that would merge or defer work off, up. */
function prepare(iface: string, mac: string, netns: string | null = null): void {
  const inNs = (...args: string[]) => (netns === null ? sh('ip', ...args) : sh('ip', '-n', netns, ...args));
  inNs('link', 'set', iface, 'address', mac);
  const exec = (...cmd: string[]) => (netns === null ? sh(cmd[0], ...cmd.slice(1)) : sh('ip', 'netns', 'exec', netns, ...cmd));
  exec('sysctl', '-q', '-w', `net.ipv6.conf.${iface}.disable_ipv6=1`);
  quiet(...((netns === null ? ['ethtool'] : ['ip', 'netns', 'exec', netns, 'ethtool']) as [string]), '-K', iface, 'gro', 'off', 'tso', 'off', 'gso', 'off');
  inNs('link', 'set', iface, 'up');
}

/** RPS: the receiving work of an interface (in a namespace) on CPU 1. */
function steerToCpu1(iface: string, netns: string): void {
  sh('ip', 'netns', 'exec', netns, 'sh', '-c', `echo 2 > /sys/class/net/${iface}/queues/rx-0/rps_cpus`);
}

function vethPairs(): void {
  for (let i = 0; i < 2; i++) {
    sh('ip', 'link', 'add', GEN[i], 'type', 'veth', 'peer', 'name', DUT[i]);
    prepare(GEN[i], i === 0 ? MAC_A : MAC_B);
  }
}

function cleanup(): void {
  stopAll();
  for (const g of GEN) quiet('ip', 'link', 'del', g);
  quiet('ip', 'netns', 'del', FWD_NS);
}

const routedConfig = (ports: object[]) => ({
  ports,
  pmd: { cores: [1], sleepMaxUs: 0, spare: false },
  pipeline: ['routing'],
  ...ROUTED_TABLES,
});

interface Setup {
  name: string;
  /** starts the router; returns the generator's interfaces and how to stop */
  start(): Promise<{ interfaces: [string, string]; stop(): Promise<void> }>;
}

const setups: Setup[] = [
  {
    name: 'vrouter af_packet',
    async start() {
      vethPairs();
      for (const d of DUT) prepare(d, ROUTER_MAC);
      const vr = await startVrouter(routedConfig(DUT.map((iface, i) => ({ name: i === 0 ? 'a' : 'b', type: 'af_packet', interface: iface, addresses: [i === 0 ? '10.0.1.1/24' : '10.0.2.1/24'], routerMac: ROUTER_MAC }))));
      return { interfaces: [GEN[0], GEN[1]], stop: async () => (await vr.stop(), cleanup()) };
    },
  },
  {
    name: 'vrouter af_xdp',
    async start() {
      vethPairs();
      for (const d of DUT) prepare(d, ROUTER_MAC);
      const vr = await startVrouter(routedConfig(DUT.map((iface, i) => ({ name: i === 0 ? 'a' : 'b', type: 'af_xdp', interface: iface, addresses: [i === 0 ? '10.0.1.1/24' : '10.0.2.1/24'], routerMac: ROUTER_MAC }))));
      return { interfaces: [GEN[0], GEN[1]], stop: async () => (await vr.stop(), cleanup()) };
    },
  },
  {
    name: 'vrouter tap',
    async start() {
      const taps = [`utA${tag}`, `utB${tag}`] as const;
      const vr = await startVrouter(routedConfig(taps.map((iface, i) => ({ name: i === 0 ? 'a' : 'b', type: 'tap', interface: iface, addresses: [i === 0 ? '10.0.1.1/24' : '10.0.2.1/24'], routerMac: ROUTER_MAC }))));
      // The generator sends on the TAP interfaces: its frames are what vrouter reads.
      taps.forEach((t, i) => prepare(t, i === 0 ? MAC_A : MAC_B));
      return { interfaces: [taps[0], taps[1]], stop: async () => (await vr.stop(), cleanup()) };
    },
  },
  {
    name: 'Linux forwarding',
    async start() {
      vethPairs();
      sh('ip', 'netns', 'add', FWD_NS);
      const fwd = (...args: string[]) => sh('ip', '-n', FWD_NS, ...args);
      for (const [i, d] of DUT.entries()) {
        sh('ip', 'link', 'set', d, 'netns', FWD_NS);
        prepare(d, ROUTER_MAC, FWD_NS);
        steerToCpu1(d, FWD_NS);
        fwd('address', 'add', i === 0 ? '10.0.1.1/24' : '10.0.2.1/24', 'dev', d);
      }
      for (const key of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', ...DUT.map((d) => `net.ipv4.conf.${d}.rp_filter=0`)]) {
        sh('ip', 'netns', 'exec', FWD_NS, 'sysctl', '-q', '-w', key);
      }
      fwd('route', 'add', '10.253.0.0/23', 'via', '10.0.1.2');
      fwd('route', 'add', '10.253.2.0/23', 'via', '10.0.2.2');
      fwd('neigh', 'replace', '10.0.1.2', 'lladdr', MAC_A, 'dev', DUT[0], 'nud', 'permanent');
      fwd('neigh', 'replace', '10.0.2.2', 'lladdr', MAC_B, 'dev', DUT[1], 'nud', 'permanent');
      return { interfaces: [GEN[0], GEN[1]], stop: async () => cleanup() };
    },
  },
];

interface Run {
  setup: string;
  size: number;
  round: number;
  pps?: number;
  error?: string;
}
const runs: Run[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const size of SIZES) {
    for (const s of setups) {
      process.stderr.write(`\r\x1b[K[uplinks] round ${round}/${ROUNDS}, ${size} B, ${s.name}`);
      let running = null;
      let generator = null;
      try {
        running = await s.start();
        generator = startInterfaceGenerator(running.interfaces, size);
        const { pps } = await generator.measure(SECONDS);
        runs.push({ setup: s.name, size, round, pps });
      } catch (err) {
        runs.push({ setup: s.name, size, round, error: (err as Error).message.split('\n')[0] });
      } finally {
        await generator?.stop();
        await running?.stop();
        cleanup();
      }
    }
  }
}
process.stderr.write('\r\x1b[K');

const table = SIZES.flatMap((size) =>
  setups.map((s) => {
    const mine = runs.filter((r) => r.setup === s.name && r.size === size);
    const ok = mine.filter((r) => r.pps !== undefined).map((r) => r.pps!);
    const pps = median(ok);
    return { setup: s.name, size, mpps: pps / 1e6, gbps: (pps * size * 8) / 1e9, runs: ok.map((p) => p / 1e6), error: ok.length ? undefined : mine.find((r) => r.error)?.error };
  }),
);
console.log(`uplinks, routed, ${ROUNDS} round(s) of ${SECONDS} s, medians (generator: testpmd flowgen on AF_PACKET, CPU 0; the router: CPU 1)`);
console.log('router               size    Mpps   Gbit/s  runs (Mpps)');
for (const r of table) {
  console.log(`${r.setup.padEnd(20)} ${String(r.size).padStart(4)} ${r.mpps.toFixed(3).padStart(7)} ${r.gbps.toFixed(2).padStart(8)}  ${r.error ? `not measured: ${r.error}` : r.runs.map((x) => x.toFixed(3)).join(' ')}`);
}
for (const size of SIZES) {
  const linux = table.find((r) => r.setup === 'Linux forwarding' && r.size === size)!.mpps;
  for (const r of table.filter((t) => t.size === size && t.setup !== 'Linux forwarding')) console.log(`${size} B: ${r.setup} / Linux forwarding = ${(r.mpps / linux).toFixed(2)}`);
}
const out = join(REPO, 'results');
mkdirSync(out, { recursive: true });
const file = join(out, `uplinks-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, table, runs }, null, 2));
console.log(`results: ${file}`);
