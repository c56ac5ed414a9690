// One log for every thread, on stderr, in the format the process was started with:
//   text (default): "vrouter: <level> <component>: <message>"
//   json: one object a line, {"time", "level", "thread", "event", "msg", ...fields}, for
//   journald, log shippers and jq; "event" names what happened (EVENTS) so that a line
//   can be found without matching its wording.
// Lines are rate-limited by kind (the message with its numbers blanked): a frontend that
// provokes the same warning in a loop must not grow the log (and the process's memory,
// when stderr is slow) without bound, nor push every other line out.

export type LogFormat = 'text' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
/**
 * The format of a process and of its threads: worker threads are given a copy of
 * process.env when they start, so a format set before they start reaches them all,
 * the PMDs (whose lines the supervisor writes as they come) and the control thread alike.
 */
export const LOG_FORMAT_ENV = 'VROUTER_LOG_FORMAT';

/**
 * The lifecycle events, each with its meaning: a stable identifier, "subject.what", that
 * json lines carry as "event". A line that is not one of these has the event "log".
 */
export const EVENTS = {
  'vrouter.ready': 'every port listens or connects and every PMD polls',
  'vrouter.stopping': 'a signal asked vrouter to stop (SIGTERM, SIGINT, or its parent exited)',
  'vrouter.stopped': 'every thread stopped and every socket file was removed',
  'vrouter.failed': 'vrouter could not start, or one of its threads died',
  'config.invalid': 'the config was refused at start (vrouter exits with status 2)',
  'config.reloaded': 'a reload (SIGHUP, admin endpoint) put a new config in force, or found nothing changed',
  'config.refused': 'a reload was refused; the running config and plugins stay',
  'config.restore_failed': 'after a refused change, the tables in force could not be prepared again: what the PMDs read may differ from the config in force until the next change',
  'plugin.reloaded': 'a changed plugin file was loaded; the PMDs restart on it',
  'plugin.tables_swapped': 'a PMD took a plugin\'s new config and tables between bursts',
  'plugin.failed': 'a plugin threw, or could not start in a PMD and was taken out',
  'plugin.gauges_failed': "a plugin's gauges() threw or gave a value that is not a number: that gauge (or all of the plugin's) left out of /metrics",
  'admin.listening': 'the admin endpoint listens',
  'admin.refused': 'a connection to the admin endpoint was closed at once: it holds the most connections it keeps',
  'port.listening': 'a server-mode port listens on its socket',
  'port.quarantined': 'a port refuses frontends for a while: a PMD died serving it',
  'port.throttled': 'a port\'s frontend connects or sends faster than the port\'s share of the control thread: vrouter reads and accepts on it more slowly',
  'port.closed': 'a port removed or changed at run time stopped taking frontends',
  'port.failed': 'a changed port could not listen on its socket again',
  'port.mtu': 'a TAP port\'s interface took a new MTU in place (its addresses and routes kept)',
  'frontend.connected': 'a vhost-user frontend (QEMU, DPDK virtio-user) is connected to a port',
  'frontend.refused': 'a frontend was turned away (credentials, quarantine, one already connected)',
  'frontend.gone': 'a frontend\'s connection closed',
  'features.negotiated': 'the frontend set the virtio features it accepts (SET_FEATURES)',
  'memory.mapped': 'a memory table from the frontend is in use',
  'inflight.buffer': 'the frontend asked for, or handed back, the buffer that records the chains in flight (INFLIGHT_SHMFD)',
  'vring.started': 'a vring is polled',
  'vring.stopped': 'a vring is no longer polled: stopped by the frontend, or found corrupt',
  'vring.inflight': "a vring's inflight record held chains a previous vrouter took and never returned",
  'vring.resumed': 'a packed vring given a fresh ring\'s base resumed where the last device left it (a frontend reconnecting to a restarted vrouter)',
  'pmd.started': 'a PMD thread polls its queues',
  'pmd.crashed': 'a PMD thread died of an error',
  'pmd.restarted': 'a PMD thread that exited, crashed or hung is started again',
  'pmd.queues_returned': 'a restarted PMD was given back its queues',
  'dataplane.culprit': 'a frontend shrank its guest memory file under the data plane (the SIGBUS it died of): its port is quarantined',
  'dataplane.died': 'the data-plane process died; a new one is started with the same connections and state',
  'dataplane.spare': 'a spare data-plane process is loaded and waits to take over (pmd.spare)',
  'dataplane.upgraded': 'a data-plane process started from the code on disk took over from the running one; pauseMs: forwarding stopped that long; pauseSteps: when within it each step of the hand-over ended',
  'dataplane.restarted': 'a new data-plane process runs the PMDs after the last one died; ms: time since the death',
  'pmd.relayout': 'the PMDs were restarted on a new layout of ports and queues (ports added or removed, queues moved)',
  'pmd.stuck': 'a PMD made no poll round for too long',
  'pmd.interrupted': 'a PMD was in a write to a guest\'s call eventfd for a watchdog period: interrupted (if the frontend made it block, the queue stops and the port is quarantined)',
  'routes.source': 'a route source (a namespace\'s netlink, an FPM connection) started, stopped, or lost its routes',
  'routes.refused': 'routes learned from the route sources could not be applied; the routes in force stay',
  'stats': 'the counters, asked for with SIGUSR1',
} as const;
export type LogEvent = keyof typeof EVENTS;
/** The event of a line that names none. */
export const NO_EVENT = 'log';

/** Values a call site attaches to a line: json writes them as keys of the line's object. */
export type LogFields = Record<string, unknown>;

export interface Log {
  info(msg: string, event?: LogEvent, fields?: LogFields): void;
  warn(msg: string, event?: LogEvent, fields?: LogFields): void;
  error(msg: string, event?: LogEvent, fields?: LogFields): void;
}

export type LogLevel = 'info' | 'warn' | 'error';

/** Per kind of line: a burst of this many, then LINES_PER_SECOND on average. */
const BURST_LINES = 20;
const LINES_PER_SECOND = 5;
/** Kinds remembered at once; past that the oldest are forgotten (they start afresh). */
const MAX_KINDS = 512;
const KIND_PREFIX = 64;
/** Keys of a json line that fields cannot take: a field named so is written as "_name". */
const RESERVED = new Set(['time', 'level', 'thread', 'event', 'msg', 'suppressed']);

interface Bucket {
  tokens: number;
  refilledAt: number;
  suppressed: number;
}

/** The format named by `text` (a flag or the environment), or null if it names none. */
export function parseLogFormat(text: string | undefined): LogFormat | null {
  return LOG_FORMATS.find((f) => f === text) ?? null;
}

let processFormat: LogFormat = parseLogFormat(process.env[LOG_FORMAT_ENV]) ?? 'text';

/** The format of this process's logs. */
export function logFormat(): LogFormat {
  return processFormat;
}

/**
 * Sets the format of every log of this process, those made before included (modules make
 * theirs when loaded), and of the threads it starts from now on (LOG_FORMAT_ENV).
 */
export function setLogFormat(format: LogFormat): void {
  processFormat = format;
  process.env[LOG_FORMAT_ENV] = format;
}

/**
 * One finished line, newline included. `suppressed` counts the lines like it that the rate
 * limit held back since the last one shown.
 */
export function formatLine(format: LogFormat, level: LogLevel, component: string, msg: string, event: LogEvent | undefined, fields: LogFields | undefined, suppressed = 0, time = new Date()): string {
  if (format === 'text') {
    const also = suppressed > 0 ? ` (and ${suppressed} more like it, not shown)` : '';
    return `vrouter: ${level} ${component}: ${msg}${also}\n`;
  }
  const line: Record<string, unknown> = { time: time.toISOString(), level, thread: component, event: event ?? NO_EVENT, msg };
  if (suppressed > 0) line.suppressed = suppressed;
  const base = { ...line };
  for (const [key, value] of Object.entries(fields ?? {})) line[RESERVED.has(key) ? `_${key}` : key] = value;
  try {
    return `${JSON.stringify(line, jsonValue)}\n`;
  } catch (err) {
    // A cycle in the fields: the line is kept, its fields are not.
    return `${JSON.stringify({ ...base, fieldsError: (err as Error).message })}\n`;
  }
}

/** Values JSON has no form for: a log line must never throw. */
function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return value.message;
  return value;
}

/**
 * `write` takes each finished line: stderr by default. A PMD passes its lines to the main
 * thread instead: a worker's stderr is flushed by its event loop, which a PMD never runs.
 * `format` fixes the format; by default each line takes the process's (setLogFormat).
 */
export function createLog(component: string, write: (line: string) => void = (line) => process.stderr.write(line), now: () => number = () => performance.now(), format?: LogFormat): Log {
  const buckets = new Map<string, Bucket>();
  const log = (level: LogLevel, msg: string, event: LogEvent | undefined, fields: LogFields | undefined) => {
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
    const suppressed = b.suppressed;
    b.suppressed = 0;
    write(formatLine(format ?? processFormat, level, component, msg, event, fields, suppressed));
  };
  return {
    info: (msg, event, fields) => log('info', msg, event, fields),
    warn: (msg, event, fields) => log('warn', msg, event, fields),
    error: (msg, event, fields) => log('error', msg, event, fields),
  };
}
