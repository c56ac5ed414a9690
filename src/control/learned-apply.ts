// When what the route sources learned is applied: the changes of a short window together,
// in the applies' turn, and not more often than the applies' own cost allows. Routes go
// to the plugins that take them as the prefixes that changed (applyRoutes); addresses on
// mirrors and permanent neighbours are part of the config, applied with the config in
// force (applyConfig). A refused address or neighbour is left out and tried again after
// the next change; a failed apply of routes is tried again, later and later.
import { NOTHING_LEARNED, type Learned } from './learned-table.ts';
import type { LearnedChange } from './route-sources.ts';

/**
 * Changes of the learned routes are applied together, this often at most: a routing
 * daemon's burst is one apply. After an apply that took longer (a full table compiled
 * whole), changes are gathered for twice as long as it took: a table arriving is compiled
 * a few times, each about three times bigger than the last (not once a window, each a
 * little bigger: quadratic), and the supervisor keeps two thirds of its time for reading
 * the sources and for the admin endpoint.
 */
const LEARNED_WINDOW_MS = 100;
const LEARNED_GATHER_PER_APPLY = 2;
/** An apply of learned routes that failed is tried again after 1 s, then twice as long each time, at most a minute. */
const LEARNED_RETRY_MS = { first: 1000, most: 60_000 };

export interface LearnedApplyHooks {
  /** runs `job` in the applies' turn (one apply at a time, in order); its failure is the caller's to log */
  queue(job: () => Promise<void>): void;
  /** applies the config in force again, parsed with `learned` as it is now; throws if refused */
  applyConfig(): Promise<void>;
  /** hands the prefixes whose learned routes changed to the plugins: whether any had changed, and what a plugin failed with (null: none) */
  applyRoutes(): Promise<{ changed: boolean; failure: unknown }>;
  /** every learned prefix counts as changed again (after a failed apply of them) */
  retakeAll(): void;
  stopping(): boolean;
}

export class LearnedApply {
  /** what the route sources hold besides routes, as the config in force was parsed with */
  private accepted: Learned = NOTHING_LEARNED;
  /** what they learned since, waiting for its apply */
  private waiting: Learned | null = null;
  /** what an apply of theirs refused, tried again after the next change */
  private refused: Learned | null = null;
  /** whether an apply is queued */
  private queued = false;
  /** how long the last apply took, and when it ended */
  private applied = { ms: 0, at: 0 };
  /** after an apply of routes that failed, how long until it is tried again (0: none failed) */
  private retryMs = 0;
  private readonly hooks: LearnedApplyHooks;

  constructor(hooks: LearnedApplyHooks) {
    this.hooks = hooks;
  }

  /** What the config in force is parsed with, besides the document. */
  get learned(): Learned {
    return this.accepted;
  }

  /** What the route sources hold changed: applied when the apply's turn comes (the changes of a short window together). */
  changed(change: LearnedChange): void {
    if (change.others !== null) {
      this.waiting = change.others;
      this.refused = null;
    }
    if (this.queued || this.hooks.stopping()) return;
    this.queued = true;
    this.applyAfter(LEARNED_WINDOW_MS);
  }

  /** After a change applied: what an apply refused, tried again (the change may have made room for it). */
  retryRefused(): void {
    if (this.refused === null) return;
    this.waiting ??= this.refused;
    this.refused = null;
    this.changed({ routes: 0, others: null });
  }

  /**
   * Applies what the route sources learned `ms` from now, or later: when its turn comes,
   * changes are gathered on until twice as long as the last apply of them took has gone by
   * since it ended (an apply that was running meanwhile counts).
   */
  private applyAfter(ms: number): void {
    setTimeout(() => {
      this.hooks.queue(async () => {
        if (this.hooks.stopping()) return;
        const gather = LEARNED_GATHER_PER_APPLY * this.applied.ms - (performance.now() - this.applied.at);
        if (gather > 1) return this.applyAfter(gather);
        this.queued = false;
        const started = performance.now();
        try {
          const waiting = this.waiting;
          if (waiting !== null) {
            this.waiting = null;
            await this.applyOthers(waiting);
          }
        } finally {
          await this.applyRoutes();
          this.applied = { ms: performance.now() - started, at: performance.now() };
        }
      });
    }, ms).unref();
  }

  /**
   * The route sources' addresses and neighbours applied with the config in force. Refused
   * (an address that is a route's gateway in the config, say), they stay out: the config
   * goes on being parsed with what was learned before, so that the operator's next changes
   * are not refused for what Linux holds; they are tried again after each change applied.
   */
  private async applyOthers(next: Learned): Promise<void> {
    const accepted = this.accepted;
    this.accepted = next;
    try {
      await this.hooks.applyConfig();
    } catch (err) {
      this.accepted = accepted;
      this.refused = next;
      throw new Error(`what the route sources learned (addresses, neighbours) is left out until a change makes room for it: ${(err as Error).message}`);
    }
  }

  /** The routes that changed handed on; if that failed, every prefix is handed on again (compiled whole, which takes the withdrawn ones out too), later and later while it fails. */
  private async applyRoutes(): Promise<void> {
    if (this.hooks.stopping()) return;
    const { changed, failure } = await this.hooks.applyRoutes();
    if (failure === null) {
      if (changed) this.retryMs = 0;
      return;
    }
    this.hooks.retakeAll();
    this.retryMs = Math.min(this.retryMs === 0 ? LEARNED_RETRY_MS.first : 2 * this.retryMs, LEARNED_RETRY_MS.most);
    if (!this.queued) {
      this.queued = true;
      this.applyAfter(this.retryMs);
    }
    throw new Error(`${(failure as Error)?.message ?? String(failure)}; all learned routes tried again in ${this.retryMs / 1000} s`);
  }
}
