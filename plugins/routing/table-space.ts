// Space in a table the PMDs read while the control plane changes it in place (tbl8 groups,
// trie nodes, next-hop groups and their members): handed out in units, and taken back
// only after a grace period, so that a lookup which read a reference to the space just
// before it was unlinked has finished with it before anything else is written there.

/**
 * How long freed space waits before it is handed out again. A lookup lasts nanoseconds,
 * but its thread may be preempted in the middle; a PMD that makes no poll round for a
 * second is terminated by the supervisor's watchdog, so no lookup outlives this.
 */
export const REUSE_AFTER_MS = 2000;

export class TableSpace {
  /** units in the table */
  readonly capacity: number;
  /** units below this were never handed out */
  private top: number;
  /** free ranges by size: reused whole, never split (the sizes in use repeat) */
  private readonly free = new Map<number, number[]>();
  /** freed ranges waiting out the grace period, oldest first */
  private readonly waiting: { at: number; size: number; until: number }[] = [];
  private waitingHead = 0;
  private inUse: number;
  private readonly now: () => number;

  constructor(used: number, capacity: number, now: () => number = () => performance.now()) {
    this.top = used;
    this.inUse = used;
    this.capacity = capacity;
    this.now = now;
  }

  /** units handed out and not freed (or freed and still waiting) */
  get used(): number {
    return this.inUse;
  }

  /** The first unit of `size` free ones, or -1 when there is no room. */
  alloc(size: number): number {
    this.reclaim();
    const same = this.free.get(size);
    let at: number;
    if (same !== undefined && same.length > 0) at = same.pop()!;
    else if (this.top + size <= this.capacity) {
      at = this.top;
      this.top += size;
    } else return -1;
    this.inUse += size;
    return at;
  }

  /** Gives back `size` units from `at`, once no lookup can still be reading them. */
  release(at: number, size: number): void {
    this.waiting.push({ at, size, until: this.now() + REUSE_AFTER_MS });
  }

  private reclaim(): void {
    const now = this.now();
    const waiting = this.waiting;
    while (this.waitingHead < waiting.length && waiting[this.waitingHead].until <= now) {
      const { at, size } = waiting[this.waitingHead++];
      let same = this.free.get(size);
      if (same === undefined) this.free.set(size, (same = []));
      same.push(at);
      this.inUse -= size;
    }
    if (this.waitingHead > 1024 && this.waitingHead * 2 > waiting.length) {
      waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }
}
