// The data plane's deaths within the last minute: how long to wait before the next start
// (dying again and again, longer each time, rather than spinning on restarts), and which
// ports to quarantine when it keeps dying while serving the same ones (a crash loop).
export const RESTART_WINDOW_MS = 60_000;
/** A data plane that died again soon is started again after a wait, doubling from this, at most 5 s. */
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5000;
/** A port served at each of this many crashes in a row (within RESTART_WINDOW_MS) is quarantined. */
const CRASHES_TO_QUARANTINE = 3;
/** Deaths that say nothing about a port: the OOM killer's or an operator's SIGKILL, a stop. */
const EXTERNAL_SIGNALS: readonly string[] = ['SIGKILL', 'SIGTERM', 'SIGINT'];

export interface DeathVerdict {
  /** deaths within the window, this one too */
  deaths: number;
  /** how long to wait before the next data plane starts */
  backoffMs: number;
  /** the ports (slots) served at each of the last CRASHES_TO_QUARANTINE crashes, with why */
  culprits: { port: number; error: string }[];
}

export class DataplaneDeaths {
  /** when each death happened */
  private deaths: number[] = [];
  /** the ports the PMDs were serving at each crash (not an external kill) */
  private crashServing: { at: number; slots: Set<number> }[] = [];

  /** A death at `now` (Date.now()) while the PMDs served `serving`, of `how` (a signal, or null for an exit). */
  record(now: number, serving: Set<number>, how: string, signal: string | null): DeathVerdict {
    this.deaths = [...this.deaths.filter((t) => now - t < RESTART_WINDOW_MS), now];
    const culprits = signal !== null && EXTERNAL_SIGNALS.includes(signal) ? [] : this.crashLoopCulprits(now, serving, how);
    const deaths = this.deaths.length;
    const backoffMs = deaths <= 1 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (deaths - 2));
    return { deaths, backoffMs, culprits };
  }

  /**
   * A crash loop: the ports served at each of the last CRASHES_TO_QUARANTINE crashes
   * within the window, to be quarantined so that the others keep a working data plane.
   * Each is named once: the crashes it was named for no longer count for it.
   */
  private crashLoopCulprits(now: number, serving: Set<number>, how: string): { port: number; error: string }[] {
    this.crashServing = [...this.crashServing.filter((c) => now - c.at < RESTART_WINDOW_MS), { at: now, slots: serving }];
    const last = this.crashServing.slice(-CRASHES_TO_QUARANTINE);
    if (last.length < CRASHES_TO_QUARANTINE) return [];
    const culprits = [...serving].filter((slot) => last.every((c) => c.slots.has(slot)));
    for (const slot of culprits) for (const c of this.crashServing) c.slots.delete(slot);
    return culprits.map((port) => ({ port, error: `the data plane died ${CRASHES_TO_QUARANTINE} times within ${RESTART_WINDOW_MS / 1000} s while serving it, last of ${how}` }));
  }
}
