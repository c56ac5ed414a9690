// A port's share of the control thread, as a router polices its control plane: every
// message its frontends send, every connection they make and every command a message makes
// a PMD carry out takes from a token bucket that belongs to the port (not to one
// connection, which a frontend could make anew). An empty bucket makes vrouter stop
// reading, or accepting, on that port until it refills: the frontend waits and nothing it
// sent is lost, and however fast it writes, reconnects or swaps its memory table it cannot
// take more than its share of the control thread, of the data plane's main thread (which
// maps guest memory) or of the PMDs, which serve the other ports too.

/** Sustained messages a second per port: QEMU sends a few hundred to set up a device. */
export const MESSAGES_PER_SECOND = 1000;
/**
 * What a port may spend at once: a device's whole set-up many times over, a multiqueue
 * device's (a memory table and two vring starts per queue pair) included.
 */
export const BURST = 4000;
/**
 * Costs in messages, as measured under floods of each kind: a connection (its handshake,
 * the frontend's credentials) about 100; a command to a PMD (a memory table mapped in the
 * data plane and viewed by the PMD; a vring started, stopped or reset) about 50 on top of
 * its message. At most ten new connections, or twenty PMD commands, a second per port.
 */
export const CONNECTION_COST = 100;
export const COMMAND_COST = 50;
/**
 * Each GiB of a memory table past its first, on each PMD that views it (a PMD views a
 * large table a 1 GiB window at a time, about 5 ms each): a frontend swapping 256 GiB
 * tables makes its PMDs view at most 40 GiB a second, and a 64 GiB guest's table still
 * fits in the burst. Small regions, however many, cost what one command does.
 */
export const GIB_COST = 25;

export class ControlBudget {
  private readonly onWait: () => void;
  private readonly perSecond: number;
  private readonly burst: number;
  private readonly now: () => number;
  private tokens: number;
  private refilledAt: number;
  /** times the port had to wait for its budget */
  throttled = 0;

  /** `onWait`: called each time the port has to wait */
  constructor(onWait: () => void = () => {}, perSecond = MESSAGES_PER_SECOND, burst = BURST, now: () => number = () => performance.now()) {
    this.onWait = onWait;
    this.perSecond = perSecond;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.refilledAt = now();
  }

  /** Whether the bucket holds `cost`; if not, the port waits (counted). */
  holds(cost: number): boolean {
    this.refill();
    if (this.tokens >= cost) return true;
    this.throttled++;
    this.onWait();
    return false;
  }

  /**
   * Takes what a message, connection or command cost, once it came (after holds() said
   * yes): what the bucket lacks is owed, and paid back before the port is read again.
   */
  spend(cost: number): void {
    this.tokens -= cost;
  }

  /** Milliseconds until the bucket holds `cost` (0 if it does). */
  msUntil(cost: number): number {
    this.refill();
    return Math.max(0, ((cost - this.tokens) * 1000) / this.perSecond);
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.refilledAt) * this.perSecond) / 1000);
    this.refilledAt = t;
  }
}
