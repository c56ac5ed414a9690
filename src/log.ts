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

export function createLog(component: string, now: () => number = () => performance.now()): Log {
  const buckets = new Map<string, Bucket>();
  const write = (level: string, msg: string) => {
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
    process.stderr.write(`vrouter: ${level} ${component}: ${msg}${also}\n`);
  };
  return {
    info: (msg) => write('info', msg),
    warn: (msg) => write('warn', msg),
    error: (msg) => write('error', msg),
  };
}
