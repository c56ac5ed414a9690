// DPDK's dpdk-testpmd with net_virtio_user ports: a poll-mode vhost-user frontend that
// nobody here wrote. Driven interactively over stdin so that counts are exact: traffic for
// a while, then a drain phase in rxonly mode, then the ports' cumulative statistics.
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface TestpmdPort {
  socket: string;
  mac: string;
  /** the virtio-user port listens and vrouter connects (a client-mode port) */
  server?: boolean;
  /** more net_virtio_user devargs, e.g. "packed_vq=1" */
  devargs?: string;
}

export interface PortCounters {
  rxPackets: number;
  txPackets: number;
  rxMissed: number;
}

export interface TestpmdRun {
  ports: PortCounters[];
  log: string;
}

const NIC_STATS = /NIC statistics for port (\d+)[\s\S]*?RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)[\s\S]*?TX-packets:\s*(\d+)/g;

export function testpmdPrerequisite(): string | null {
  return spawnSync('dpdk-testpmd', ['--version'], { timeout: 20000 }).error ? 'dpdk-testpmd is not installed (scripts/setup-peers.sh installs dpdk)' : null;
}

/**
 * Runs `mode` (txonly, flowgen, ...) for `seconds` on every port (`during` meanwhile, if
 * given; `args`: more testpmd options; `commands`: typed at its prompt first), then receives only until
 * the backend has nothing left in flight, and returns each port's totals. The forwarding
 * lcore runs on CPU 0 so that vrouter's PMD keeps CPU 1 (two pollers on one CPU collapse).
 */
export async function runTestpmd(ports: TestpmdPort[], opts: { mode: string; seconds: number; frameSize?: number; args?: string[]; commands?: string[]; during?: () => Promise<void> }): Promise<TestpmdRun> {
  const prefix = `vrouter-tp-${process.pid}-${Date.now()}`;
  const vdevs = ports.flatMap((p, i) => ['--vdev', `net_virtio_user${i},path=${p.socket},mac=${p.mac}${p.server ? ',server=1' : ''}${p.devargs ? `,${p.devargs}` : ''}`]);
  const peers = ports.map((_, i) => `--eth-peer=${i},${ports[(i + 1) % ports.length].mac}`);
  const args = [
    '--no-huge', '-m', '256', '--no-pci', '--file-prefix', prefix, '--lcores', '0@1,1@0', ...vdevs, '--',
    '-i', '--total-num-mbufs=16384', `--forward-mode=${opts.mode}`, `--txpkts=${opts.frameSize ?? 64}`, ...peers, ...(opts.args ?? []),
  ];
  // Line-buffered: testpmd's stdout to a pipe would otherwise hold back the statistics.
  const tp = spawn('stdbuf', ['-oL', 'dpdk-testpmd', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  // The prompt and the statistics are read from stdout alone: stderr lines written in the
  // middle of the prompt split it ("testpm", an error line, "d>"). The log has both.
  let out = '';
  let log = '';
  tp.stdout!.on('data', (d) => ((out += d), (log += d)));
  tp.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((resolve) => tp.on('exit', () => resolve()));
  const killer = setTimeout(() => tp.kill('SIGKILL'), (opts.seconds + 60) * 1000);
  const send = (line: string) => tp.stdin!.write(`${line}\n`);
  const waitFor = async (re: RegExp, what: string, ms = 30000) => {
    const deadline = Date.now() + ms;
    while (!re.test(out)) {
      if (tp.exitCode !== null || Date.now() > deadline) throw new Error(`dpdk-testpmd: no ${what}:\n${log.slice(-3000)}`);
      await sleep(50);
    }
  };
  try {
    await waitFor(/testpmd>/, 'prompt');
    for (const line of opts.commands ?? []) send(line);
    send('start');
    await Promise.all([sleep(opts.seconds * 1000), opts.during?.()]);
    send('stop');
    // Frames still inside vrouter arrive now: receive them before counting.
    send('set fwd rxonly');
    send('start');
    await sleep(1500);
    send('stop');
    const before = out.length;
    send('show port stats all');
    await waitFor(new RegExp(`NIC statistics for port ${ports.length - 1}[\\s\\S]*TX-packets`), 'port statistics');
    const stats = [...out.slice(before).matchAll(NIC_STATS)].map((m) => ({ port: Number(m[1]), rxPackets: Number(m[2]), rxMissed: Number(m[3]), txPackets: Number(m[4]) }));
    send('quit');
    // unref'd: a pending timer would keep the test process alive 10 s after testpmd quit
    await Promise.race([exited, sleep(10000, undefined, { ref: false })]);
    return { ports: stats.sort((a, b) => a.port - b.port).map(({ port: _, ...c }) => c), log };
  } finally {
    clearTimeout(killer);
    tp.kill('SIGKILL');
    await exited;
    rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
  }
}
