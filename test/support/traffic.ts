// Waiting and traffic helpers shared by the tests that drive a running vrouter through the
// test frontend: poll for a condition, push frames across and count what arrives, and read
// what the daemon holds (fds, mappings, threads) from /proc.
import { readdirSync, readFileSync } from 'node:fs';
import { ethernetFrame, postRxBuffer, sendFrame, type DriverRing } from './virtio-driver.ts';

/** A device of the test frontend, on split or packed rings (see vhost-frontend.ts). */
interface Endpoint {
  tx: DriverRing;
  rx: DriverRing & { takeUsed(): unknown[] };
  kick(): void;
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Sends n frames from one device and waits until the other has them all in its RX queue. */
export async function trafficFlows(from: Endpoint, to: Endpoint, n: number, src: string, dst: string, timeoutMs = 3000): Promise<number> {
  for (let i = 0; i < n; i++) postRxBuffer(to.rx, 2048);
  for (let i = 0; i < n; i++) sendFrame(from.tx, ethernetFrame(dst, src, 100, i));
  from.kick();
  let got = 0;
  await waitFor(`${n} frames`, () => (got += to.rx.takeUsed().length) >= n || undefined, timeoutMs).catch(() => undefined);
  return got;
}

export interface ProcessResources {
  fds: number;
  /** mappings of memfd files (guest memory) */
  guestMappings: number;
  threads: number;
}

/** What a process holds right now, from /proc. */
export function processResources(pid: number): ProcessResources {
  const own = oneProcess(pid);
  return [...dataplanePids(pid), ...sparePids(pid)].map(oneProcess).reduce((sum, r) => ({ fds: sum.fds + r.fds, guestMappings: sum.guestMappings + r.guestMappings, threads: sum.threads + r.threads }), own);
}

/** The data-plane process in use of a vrouter supervisor (its child named vrouter-dataplane). */
export function dataplanePids(pid: number): number[] {
  return childrenNamed(pid, 'vrouter-dataplane');
}

/** Its spare data-plane process, loaded and waiting (pmd.spare). */
export function sparePids(pid: number): number[] {
  return childrenNamed(pid, 'vrouter-dataplane-spare');
}

/** Every child process of pid, whatever it is and whether it is ending or not (none once pid has ended). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function childrenNamed(pid: number, name: string): number[] {
  return childPids(pid).filter((child) => {
    try {
      return readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0')[0] === name && !exiting(child);
    } catch {
      return false;
    }
  });
}

/** PF_EXITING in a task's flags: set as it begins to end. */
const PF_EXITING = 0x4;

/**
 * Whether a process is ending: a data plane that was killed is replaced once its threads
 * have ended (its death watch), while the kernel may still tear it down and list it.
 */
function exiting(pid: number): boolean {
  // The fields after the command's closing parenthesis: state first, flags the seventh.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return fields[0] === 'Z' || fields[0] === 'X' || (Number(fields[6]) & PF_EXITING) !== 0;
}

function oneProcess(pid: number): ProcessResources {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  return {
    fds: readdirSync(`/proc/${pid}/fd`).length,
    // memfds but vrouter's own shared memory
    guestMappings: maps.split('\n').filter((l) => l.includes('/memfd:') && !l.includes('/memfd:vrouter-state')).length,
    threads: readdirSync(`/proc/${pid}/task`).length,
  };
}
