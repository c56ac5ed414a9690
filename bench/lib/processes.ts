// Child processes of the benchmark: every one is registered, so that a finished run, an
// error or Ctrl-C stops them all by PID and removes what DPDK leaves in /var/run/dpdk.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const running = new Set<ChildProcess>();
const dpdkPrefixes = new Set<string>();

export function track(cmd: string, args: string[]): { proc: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  running.add(proc);
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => (running.delete(proc), resolve(code))));
  return { proc, output: () => out, exited };
}

/** A unique EAL --file-prefix, removed at the end. */
export function dpdkPrefix(role: string): string {
  const prefix = `vrouter-bench-${role}-${process.pid}-${dpdkPrefixes.size}`;
  dpdkPrefixes.add(prefix);
  return prefix;
}

/** SIGINT (testpmd prints its statistics and exits), then SIGKILL after a grace period. */
export async function stop(p: { proc: ChildProcess; exited: Promise<number | null> }, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  p.proc.kill(signal);
  const done = await Promise.race([p.exited.then(() => true), sleep(8000, false, { ref: false })]);
  if (!done) {
    p.proc.kill('SIGKILL');
    await p.exited;
  }
}

export function stopAll(): void {
  for (const p of running) p.kill('SIGKILL');
  for (const prefix of dpdkPrefixes) rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
}

export async function waitFor(what: string, probe: () => boolean, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
