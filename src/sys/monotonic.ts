// One clock for every process and thread of vrouter: CLOCK_MONOTONIC, which Node's hrtime
// reads. performance.now() counts from each thread's own start, so a time taken in a PMD
// and one taken in the supervisor do not compare; these do.

/** CLOCK_MONOTONIC in milliseconds (fractional). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
