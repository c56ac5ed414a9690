// Token buckets by key (a port slot, an interface), in typed arrays: the rate limits plugins
// keep per port so that one port's flood spends its own tokens, never another's.

/**
 * Each bucket fills at `rate` per second up to `burst`, as the caller says at each take
 * (the config in force: a reload changes them).
 */
export class TokenBuckets {
  private readonly tokens: Float64Array;
  /** ms of the last take (a clock that went back refills nothing) */
  private readonly at: Float64Array;
  /**
   * clock[0]: the time (ms) takes are made at, written by the owner once a burst (one cell
   * may serve several sets). Read by takeNow(), not passed to it: a time in ms is a heap
   * number at every call V8 does not inline, and takeNow() runs for every packet of a flood.
   * take(), given the time, writes it here first.
   */
  readonly clock: Float64Array;
  constructor(count: number, burst: number, clock: Float64Array = new Float64Array(1)) {
    this.tokens = new Float64Array(count).fill(burst);
    this.at = new Float64Array(count);
    this.clock = clock;
  }

  /** Takes a token from bucket `key` at `now` (ms), if it has one (clock[0] becomes `now`). */
  take(key: number, now: number, rate: number, burst: number): boolean {
    this.clock[0] = now;
    return this.takeNow(key, rate, burst);
  }

  /** take() at clock[0]: where it runs per packet, the time is not passed. */
  takeNow(key: number, rate: number, burst: number): boolean {
    const now = this.clock[0];
    const tokens = Math.min(burst, this.tokens[key] + (Math.max(0, now - this.at[key]) * rate) / 1000);
    this.at[key] = now;
    if (tokens < 1) {
      this.tokens[key] = tokens;
      return false;
    }
    this.tokens[key] = tokens - 1;
    return true;
  }
}
