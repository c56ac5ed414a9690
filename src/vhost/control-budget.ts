// A port's share of the control thread, as a router polices its control plane: every
// message its frontends send, and every connection they make, takes from a token bucket
// that belongs to the port (not to one connection, which a frontend could make anew). An
// empty bucket makes vrouter stop reading, or accepting, on that port until it refills:
// the frontend waits and nothing it sent is lost, and however fast it writes or reconnects
// it cannot take more of the control thread, the data plane's and the PMDs' attention
// (each connection ends with a reset on every PMD that serves the port) than its share.

/** Sustained messages a second per port: QEMU sends a few hundred to set up a device. */
export const MESSAGES_PER_SECOND = 1000;
/** What a port may spend at once: a device's whole set-up, many times over. */
export const BURST = 2000;
/**
 * A connection costs about as much as this many messages (measured: the handshake, the
 * frontend's credentials and the device's reset on the PMDs at its end): at most ten new
 * connections a second per port, twenty at once.
 */
export const CONNECTION_COST = 100;

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

  /** Takes what a message or connection cost, once it came (after holds() said yes). */
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
