// One log format for every thread: "vrouter: <level> <component>: <message>" on stderr.
// Lines are rate-limited by kind (the message with its numbers blanked): a frontend that
// provokes the same warning in a loop must not grow the log (and the process's memory,
// when stderr is slow) without bound, nor push every other line out.

export interface Log {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/** Per kind of line: a burst of this many, then LINES_PER_SECOND on average. */
const BURST_LINES = 20;
const LINES_PER_SECOND = 5;
/** Kinds remembered at once; past that the oldest are forgotten (they start afresh). */
const MAX_KINDS = 512;
const KIND_PREFIX = 64;

interface Bucket {
  tokens: number;
  refilledAt: number;
  suppressed: number;
}

/**
 * `write` takes each finished line: stderr by default. A PMD passes its lines to the main
 * thread instead: a worker's stderr is flushed by its event loop, which a PMD never runs.
 */
export function createLog(component: string, write: (line: string) => void = (line) => process.stderr.write(line), now: () => number = () => performance.now()): Log {
  const buckets = new Map<string, Bucket>();
  const log = (level: string, msg: string) => {
    const t = now();
    const kind = `${level} ${msg.replace(/\d+/g, '#').slice(0, KIND_PREFIX)}`;
    let b = buckets.get(kind);
    if (b === undefined) {
      if (buckets.size >= MAX_KINDS) buckets.delete(buckets.keys().next().value!);
      b = { tokens: BURST_LINES, refilledAt: t, suppressed: 0 };
      buckets.set(kind, b);
    }
    b.tokens = Math.min(BURST_LINES, b.tokens + ((t - b.refilledAt) / 1000) * LINES_PER_SECOND);
    b.refilledAt = t;
    if (b.tokens < 1) {
      b.suppressed++;
      return;
    }
    b.tokens--;
    const also = b.suppressed > 0 ? ` (and ${b.suppressed} more like it, not shown)` : '';
    b.suppressed = 0;
    write(`vrouter: ${level} ${component}: ${msg}${also}\n`);
  };
  return {
    info: (msg) => log('info', msg),
    warn: (msg) => log('warn', msg),
    error: (msg) => log('error', msg),
  };
}
