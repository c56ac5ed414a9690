// A thread of the supervisor that learns of a data plane's death as its threads end, not
// when the process has ended: it waits for the life lock of the process's main thread
// (let go only as the process ends, and then no thread of it can start), then for every
// other lock of the block (its PMD threads'), and says how the process died. From then on
// nothing of that process reads or writes a queue, and its queues may be handed to the
// next data plane while the kernel still tears the dead one down.
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { awaitLifeLock, LIFE_LOCKS } from '../sys/life-locks.ts';
import { regionOf, useArena, type SharedRef } from '../sys/shared-arena.ts';

export interface DeathWatchData {
  arena: { base: string; size: number } | null;
  lifeLocks: SharedRef;
  pid: number;
}

/** How a death was seen: the exit code or signal, when /proc still had them. */
export interface DeathSeen {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The thread has started and waits for the locks (sent once, before any DeathSeen). */
export interface DeathWatching {
  watching: true;
}

/**
 * Each wait is bounded, so that the thread can end with the supervisor (which waits out the
 * wait under way); not shorter, since every wake costs CPU the generator's or the guests'
 * threads share (about 0.35 ms here: 0.2 % of a core per watch at 200 ms).
 */
const WAIT_SLICE_MS = 1000;

/** Signal names by number; of two names for one number (SIGABRT, SIGIOT) the first, as Node reports it. */
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, number] of Object.entries(constants.signals)) if (!SIGNAL_NAMES.has(number)) SIGNAL_NAMES.set(number, name as NodeJS.Signals);

/** The fields of /proc/PID/stat from the third (state) on, or null when there is no such process. */
function statFields(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  } catch {
    return null;
  }
}

/** When the process started (field 22, clock ticks after boot): with the pid, it names one process. */
export function startTimeOf(pid: number): string | null {
  return statFields(pid)?.[22 - 3] ?? null;
}

/**
 * The process's exit status as waitpid(2) would give it, from its main thread's entry in
 * /proc (field 52, exit_code: set as that thread begins to end, before it lets its locks
 * go, and kept until the process is reaped). `started` (startTimeOf) tells it from a
 * process that took the pid again after this one was reaped.
 */
export function exitStatusOf(pid: number, started: string | null): DeathSeen {
  const fields = statFields(pid);
  const status = Number(fields?.[52 - 3]);
  if (fields === null || started === null || fields[22 - 3] !== started || !Number.isInteger(status)) return { code: null, signal: null };
  const signal = status & 0x7f;
  return signal !== 0 ? { code: null, signal: SIGNAL_NAMES.get(signal) ?? null } : { code: (status >> 8) & 0xff, signal: null };
}

if (parentPort !== null && (workerData as DeathWatchData | undefined)?.lifeLocks !== undefined) {
  const data = workerData as DeathWatchData;
  useArena(data.arena);
  const locks = regionOf(data.lifeLocks);
  // Read while it lives (it said 'ready' before this thread started).
  const started = startTimeOf(data.pid);
  parentPort.postMessage({ watching: true } satisfies DeathWatching);
  while (!awaitLifeLock(locks, 0, WAIT_SLICE_MS));
  // Read now, while the other threads still end: once the last has, the process may be reaped.
  const seen = exitStatusOf(data.pid, started);
  for (let i = 1; i < LIFE_LOCKS; i++) while (!awaitLifeLock(locks, i, WAIT_SLICE_MS));
  parentPort.postMessage(seen satisfies DeathSeen);
}
