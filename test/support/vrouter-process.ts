// The vrouter daemon as a child process, the way an operator runs it: a config file,
// stderr captured, SIGUSR1 for counters, SIGTERM to stop. Every process started here is
// stopped by PID in teardown, and its temporary directory removed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PortStats } from '../../src/dataplane/counters.ts';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
/** the built daemon, as operators run it (npm test builds it first) */
export const VROUTER_BIN = join(REPO, 'dist/bin/vrouter.js');

export interface StartedVrouter {
  proc: ChildProcess;
  dir: string;
  /** socket path of each port, by name */
  sockets: Record<string, string>;
  stderr(): string;
  stats(): Promise<Record<string, PortStats>>;
  /** frames each PMD took from and wrote into guests */
  pmdStats(): Promise<{ cpu: number; rx_packets: number; tx_packets: number }[]>;
  /** SIGTERM; resolves with the exit code */
  stop(): Promise<number | null>;
  alive(): boolean;
}

/**
 * The environment for a vrouter or vrouterctl process a test starts: the test's own, less
 * the hooks the test runner puts in NODE_OPTIONS (its process tracking, for coverage, which
 * is off), and the test scripts' own (no-process-info.mjs, and the compile cache,
 * NODE_COMPILE_CACHE: scripts/two-groups.sh):
 * the daemon runs as operators run it, and each of its processes starts without them (the
 * hooks cost 0.3 to 0.6 s a start of vrouter, for its three processes).
 */
export function daemonEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  // Each option as tap's hook writes it, in double quotes, or bare.
  const options = (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((o) => o !== '' && !/^"?--(import|loader|require)=.*(@tapjs\/|no-process-info\.mjs)/.test(o));
  const { NODE_COMPILE_CACHE: _cache, ...env } = process.env;
  return { ...env, NODE_OPTIONS: options.join(' '), ...extra };
}

/** Ports named by `names`, all in bridge br0, with sockets in the test's directory. */
export function bridgeConfig(names: string[] = ['a', 'b'], extra: object = {}): object {
  return { ports: names.map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0' })), ...extra };
}

const SPARE_WAIT_OTHER_BUILD_MS = 5000;

/**
 * Writes the config (socket paths may use {dir}: a fresh directory), starts dist/bin/vrouter.js
 * on it and waits for "ready"; `before` may put files in the directory first. `bin`: another
 * build of the daemon (a benchmark's older revision): its spare is waited for
 * SPARE_WAIT_OTHER_BUILD_MS at most.
 */
export async function startVrouter(config: object, timeoutMs = 15000, before?: (dir: string) => void, bin = VROUTER_BIN): Promise<StartedVrouter> {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-test-'));
  before?.(dir);
  const text = JSON.stringify(config).replaceAll('{dir}', dir);
  const configPath = join(dir, 'config.json');
  writeFileSync(configPath, text);
  const sockets: Record<string, string> = {};
  const parsed = JSON.parse(text) as { ports: { name: string; socket: string }[]; pmd?: { spare?: boolean } };
  for (const p of parsed.ports) sockets[p.name] = p.socket;
  const spare = parsed.pmd?.spare !== false;
  // Another build may start no spare: its spare is waited for SPARE_WAIT_OTHER_BUILD_MS at most
  // (a spare loading while a benchmark measures takes the generator's CPU).
  const spareRequired = bin === VROUTER_BIN;
  let readyAt = 0;
  const proc = spawn(process.execPath, [bin, '--config', configPath], { stdio: ['ignore', 'inherit', 'pipe'], env: daemonEnv() });
  let log = '';
  let exited = false;
  const exit = new Promise<number | null>((resolve) => proc.on('exit', (code) => ((exited = true), resolve(code))));
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  // The poll stops once the race is decided: a daemon that never gets ready must not keep
  // the test process alive.
  let decided = false;
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => {
      const check = () => {
        // Ready: the supervisor's threads run, the admin endpoint listens, and the spare
        // data plane (pmd.spare) has loaded: what a test measures then stays as it is.
        const running = /supervisor: ready/.test(log) && /admin: admin endpoint on/.test(log);
        if (running && readyAt === 0) readyAt = Date.now();
        const spareDone = !spare || /a spare data plane \(pid \d+\) is loaded/.test(log) || (!spareRequired && readyAt > 0 && Date.now() - readyAt > SPARE_WAIT_OTHER_BUILD_MS);
        if (running && spareDone) resolve(true);
        else if (!decided) setTimeout(check, 20);
      };
      check();
    }),
    exit.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref()),
  ]);
  decided = true;
  const stop = async () => {
    if (!exited) proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    const code = await exit;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
    return code;
  };
  if (!ready) {
    await stop();
    throw new Error(`vrouter did not become ready:\n${log}`);
  }
  return {
    proc,
    dir,
    sockets,
    stderr: () => log,
    alive: () => !exited,
    stop,
    async stats() {
      return (await statsLine()).ports;
    },
    async pmdStats() {
      return (await statsLine()).pmds;
    },
  };

  async function statsLine(): Promise<{ ports: Record<string, PortStats>; pmds: { cpu: number; rx_packets: number; tx_packets: number }[] }> {
    const before = log.length;
    proc.kill('SIGUSR1');
    const deadline = Date.now() + 5000;
    for (;;) {
      const m = /vrouter: stats (\{.*\})\n/.exec(log.slice(before));
      if (m) return JSON.parse(m[1]);
      if (Date.now() > deadline) throw new Error('no stats line after SIGUSR1');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
