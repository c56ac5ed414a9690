// The PMDs' watchdog: reads each PMD's heartbeat in its doorbell every WATCHDOG_MS and
// says which one is stuck (no poll round for STUCK_MS, or none START_STUCK_MS after its
// start); interrupts a PMD blocked in a write to a guest's call eventfd, and has the
// port whose write it found interrupted quarantined. What to do with a stuck PMD is the
// supervisor's (stuck()).
import { DOORBELL_CALL_INTERRUPTED, DOORBELL_HEARTBEAT, DOORBELL_IN_CALL, DOORBELL_SERVING, DOORBELL_THREAD } from '../vhost/dataplane-link.ts';
import { interruptThread } from '../sys/libc.ts';
import { createLog } from '../log.ts';

const log = createLog('supervisor');

export const WATCHDOG_MS = 250;
/** A PMD whose heartbeat stands still this long is stuck (its longest sleep is 100 ms). */
export const STUCK_MS = 1000;
/**
 * A PMD that has not polled this long after it was started is stuck in its start: in a
 * plugin's createState, or importing a module that never returns (a start takes about a
 * second: modules loaded, stages built).
 */
export const START_STUCK_MS = 5000;

export interface WatchdogHooks {
  /** the PMDs of the layout in force */
  pmdIds(): readonly number[];
  /** whether a data-plane process runs the PMDs (none is watched while one starts) */
  running(): boolean;
  /** its pid */
  dataplanePid(): number | undefined;
  /** the name of the port in a slot, null if the slot is free */
  portName(slot: number): string | null;
  /** PMD `id` is stuck (`how`): called once until it is started again (watchFromStart) */
  stuck(id: number, how: string): void;
  /** the port's frontend blocked a PMD: it is to be quarantined */
  quarantine(slot: number, why: string): void;
}

export class PmdWatchdog {
  /** per PMD: its heartbeat when last seen to move, and when (at Infinity: not since its start) */
  private readonly heartbeats: { beat: number; at: number }[] = [];
  /** per PMD: whether it has made a poll round since it was (re)started */
  private readonly polled: boolean[] = [];
  /** per PMD: when it was (re)started (Date.now()), until it polls or is found stuck starting */
  private readonly startedAt: number[] = [];
  /** per PMD: the heartbeat at which it was last interrupted in a call write (said once per stop of its heartbeat) */
  private readonly interruptedAt: (number | null)[] = [];

  private readonly doorbells: readonly Int32Array[];
  private readonly hooks: WatchdogHooks;

  constructor(doorbells: readonly Int32Array[], hooks: WatchdogHooks) {
    this.doorbells = doorbells;
    this.hooks = hooks;
  }

  /** PMD `id` was (re)started: watched from its first poll round on, and its start for START_STUCK_MS. */
  watchFromStart(id: number): void {
    this.heartbeats[id] = { beat: this.doorbells[id][DOORBELL_HEARTBEAT], at: Infinity };
    this.polled[id] = false;
    this.startedAt[id] = Date.now();
  }

  /**
   * The data plane died: the words its PMDs left in their doorbells are no PMD's any more. A
   * next data plane that dies before it runs one would be blamed for their ports, and one
   * slow to start would be found stuck.
   */
  forget(id: number): void {
    const bell = this.doorbells[id];
    bell[DOORBELL_SERVING] = -1;
    bell[DOORBELL_IN_CALL] = 0;
    bell[DOORBELL_THREAD] = 0;
    this.heartbeats[id] = { beat: bell[DOORBELL_HEARTBEAT], at: Infinity };
    this.polled[id] = false;
    this.startedAt[id] = Infinity;
  }

  /** Whether PMD `id` was spawned and has made no poll round yet (it loads its modules). */
  starting(id: number): boolean {
    const seen = this.heartbeats[id];
    return seen !== undefined && !this.polled[id] && this.doorbells[id][DOORBELL_HEARTBEAT] === seen.beat;
  }

  /** Whether PMD `id` is in its poll loop, whether a check has seen it there yet or not (its heartbeat moved since its start). */
  polling(id: number): boolean {
    return this.polled[id] || this.doorbells[id][DOORBELL_HEARTBEAT] !== this.heartbeats[id]?.beat;
  }

  /** One look at every PMD's heartbeat (every WATCHDOG_MS). */
  check(): void {
    if (!this.hooks.running()) return;
    const now = Date.now();
    for (const id of this.hooks.pmdIds()) {
      const bell = this.doorbells[id];
      this.quarantineInterrupted(bell);
      const seen = this.heartbeats[id];
      if (seen === undefined) continue;
      const beat = bell[DOORBELL_HEARTBEAT];
      if (beat !== seen.beat) {
        this.heartbeats[id] = { beat, at: now };
        this.polled[id] = true;
        continue;
      }
      if (now - seen.at >= WATCHDOG_MS) this.interruptBlockedCall(id, bell, beat);
      // Not polled yet: it is starting (its first round counts from then).
      const starting = !this.polled[id] && seen.at === Infinity;
      if (starting ? now - this.startedAt[id] < START_STUCK_MS : now - seen.at < STUCK_MS) continue;
      this.heartbeats[id] = { beat, at: Infinity }; // once: the restart resets it
      this.startedAt[id] = Infinity;
      this.hooks.stuck(id, starting ? `no poll round ${START_STUCK_MS} ms after its start` : `no poll round for ${STUCK_MS} ms`);
    }
  }

  /**
   * A PMD with no round for a watchdog period while it writes a guest's call eventfd may be
   * blocked there: the frontend made the eventfd blocking with a full counter, and may have
   * made it non-blocking again since, which does not end the write. The thread is sent a
   * signal that makes a waiting write return (EINTR; one merely slow to run completes); the
   * PMD then fails that queue (notify.ts) and goes on, with all its other queues, instead
   * of being terminated.
   */
  private interruptBlockedCall(id: number, bell: Int32Array, beat: number): void {
    const pid = this.hooks.dataplanePid();
    const tid = bell[DOORBELL_THREAD];
    const port = bell[DOORBELL_IN_CALL] - 1;
    if (port < 0 || tid <= 0 || pid === undefined || !interruptThread(pid, tid) || this.interruptedAt[id] === beat) return;
    this.interruptedAt[id] = beat;
    log.warn(`pmd${id} was in a write to a call eventfd of port ${this.hooks.portName(port) ?? `in slot ${port}`} for ${WATCHDOG_MS} ms or more: interrupted`, 'pmd.interrupted', { pmd: id });
  }

  /**
   * The port whose call write a PMD found interrupted (it had blocked) is quarantined: its
   * frontend could set the queue up again, and block the PMD again, at will.
   */
  private quarantineInterrupted(bell: Int32Array): void {
    const port = Atomics.exchange(bell, DOORBELL_CALL_INTERRUPTED, 0) - 1;
    if (port < 0 || this.hooks.portName(port) == null) return;
    this.hooks.quarantine(port, 'its frontend made a call eventfd blocking with a full counter, which blocked a PMD');
  }
}
