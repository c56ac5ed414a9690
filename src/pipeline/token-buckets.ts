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
  constructor(count: number, burst: number) {
    this.tokens = new Float64Array(count).fill(burst);
    this.at = new Float64Array(count);
  }

  /** Takes a token from bucket `key` at `now` (ms), if it has one. */
  take(key: number, now: number, rate: number, burst: number): boolean {
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
