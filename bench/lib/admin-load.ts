// A busy admin endpoint, as the routed row with a busy control plane drives it: /metrics
// scraped 10 times a second (a Prometheus with a short interval) and 1,000 route changes a
// second (POST /routes and DELETE /routes/PREFIX, issued at that pace without waiting for
// the answers, as many clients would), host routes and /24s in 198.18.0.0/15 (RFC 2544's
// benchmarking range), never the destinations of the measured flows. It runs only while
// `on` is set, counts what was done then, and removes the routes it added as it closes.
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';

export interface AdminLoadOptions {
  changesPerSecond: number;
  scrapesPerSecond: number;
  /** the gateway of the routes added (in a connected subnet) */
  via: string;
  /**
   * Changes a request carries: 1, a POST or DELETE each (as many small clients); more, a
   * PATCH /routes with half adds and half removals (as a routing daemon pushes its updates)
   */
  batch: number;
}

export interface AdminLoadCounts {
  /** route changes answered 200, while on */
  changes: number;
  /** changes refused or failed */
  errors: number;
  scrapes: number;
  /** ms the load was on */
  onMs: number;
  /** the slowest change, from request to answer (ms) */
  slowestChangeMs: number;
  /** the first error, to show */
  firstError: string | null;
}

/** Answers still to come before new changes wait: a bound on what piles up if vrouter falls behind. */
const MOST_IN_FLIGHT = 256;
/** Routes in the table from the load, about: then each add goes with the delete of the oldest. */
const LIVE_ROUTES = 256;

const noCounts = (): AdminLoadCounts => ({ changes: 0, errors: 0, scrapes: 0, onMs: 0, slowestChangeMs: 0, firstError: null });

export function adminLoad(socketPath: string, options: AdminLoadOptions) {
  const dispatcher = new Agent({ connect: { socketPath }, connections: 32 });
  const counts = noCounts();
  let on = false;
  let stopped = false;
  /** Resolved by start() and close(): a paused load waits on it rather than polling (its CPU is the generator's in the idle windows). */
  let resumed = Promise.withResolvers<void>();
  const wake = () => {
    resumed.resolve();
    resumed = Promise.withResolvers<void>();
  };
  let onSince = 0;
  let issued = 0;
  let inFlight = 0;
  let next = 0;
  /** routes added and answered, oldest first: the ones a delete may take */
  const live: string[] = [];
  /** the same, to look up: the load's own CPU is taken from the generator's */
  const inTable = new Set<string>();
  const pending = new Set<string>();

  /**
   * One request, its answer's status; an answer that went well is dropped as it comes, not
   * read through a stream (undici's dispatch() rather than request(): this client's CPU is
   * taken from the generator's). The start of an error's text is kept, to show.
   */
  const call = (method: 'GET' | 'POST' | 'DELETE' | 'PATCH', path: string, body?: unknown): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      let status = 0;
      let errorText = '';
      dispatcher.dispatch(
        { origin: 'http://vrouter', path, method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) },
        {
          onRequestStart() {},
          onResponseStart(_controller, statusCode) {
            status = statusCode;
          },
          onResponseData(_controller, chunk) {
            if (status !== 200 && errorText.length < 200) errorText += chunk.toString('utf8', 0, 200);
          },
          onResponseEnd() {
            if (status !== 200 && counts.firstError === null) counts.firstError = `${method} ${path}: ${status} ${errorText.slice(0, 200)}`;
            resolve(status);
          },
          onResponseError(_controller, err) {
            reject(err);
          },
        },
      );
    });

  const newPrefix = () => {
    // Every 8th a /24, the rest host routes; none twice in the table.
    let prefix: string;
    do {
      const n = next++;
      prefix = n % 8 === 0 ? `198.19.${(n >>> 3) & 255}.0/24` : `198.18.${(n >>> 8) & 255}.${n & 255}/32`;
    } while (inTable.has(prefix) || pending.has(prefix));
    return prefix;
  };

  /** One PATCH /routes: batch / 2 routes added, as many of the oldest removed once the table holds LIVE_ROUTES. */
  const changeMany = async () => {
    inFlight++;
    const started = performance.now();
    const add = Array.from({ length: options.batch >> 1 }, newPrefix);
    const remove = live.length >= LIVE_ROUTES ? live.splice(0, options.batch >> 1) : [];
    for (const p of remove) inTable.delete(p);
    for (const p of [...add, ...remove]) pending.add(p);
    let ok: boolean;
    try {
      ok = (await call('PATCH', '/routes', { add: add.map((prefix) => ({ prefix, via: options.via })), remove })) === 200;
      if (ok) {
        live.push(...add);
        for (const p of add) inTable.add(p);
      }
    } catch (err) {
      ok = false;
      if (counts.firstError === null) counts.firstError = (err as Error).message;
    }
    for (const p of [...add, ...remove]) pending.delete(p);
    inFlight--;
    if (!on) return;
    if (ok) counts.changes += add.length + remove.length;
    else counts.errors += add.length + remove.length;
    counts.slowestChangeMs = Math.max(counts.slowestChangeMs, performance.now() - started);
  };

  const change = async () => {
    inFlight++;
    const started = performance.now();
    let prefix: string;
    let ok: boolean;
    try {
      if (live.length >= LIVE_ROUTES && issued % 2 === 1) {
        prefix = live.shift()!;
        inTable.delete(prefix);
        pending.add(prefix);
        ok = (await call('DELETE', `/routes/${encodeURIComponent(prefix)}`)) === 200;
      } else {
        prefix = newPrefix();
        pending.add(prefix);
        ok = (await call('POST', '/routes', { prefix, via: options.via })) === 200;
        if (ok) {
          live.push(prefix);
          inTable.add(prefix);
        }
      }
      pending.delete(prefix);
    } catch (err) {
      ok = false;
      if (counts.firstError === null) counts.firstError = (err as Error).message;
    }
    inFlight--;
    if (!on) return;
    if (ok) counts.changes++;
    else counts.errors++;
    counts.slowestChangeMs = Math.max(counts.slowestChangeMs, performance.now() - started);
  };

  const changes = (async () => {
    while (!stopped) {
      // Off, or no changes asked (a window of scrapes alone): nothing to issue.
      if (!on || options.changesPerSecond <= 0) {
        await resumed.promise;
        continue;
      }
      // Issue what the pace asks for by now, at most MOST_IN_FLIGHT waiting.
      const due = Math.floor(((performance.now() - onSince) * options.changesPerSecond) / 1000 / options.batch) - issued;
      for (let k = 0; k < due && inFlight < MOST_IN_FLIGHT; k++, issued++) void (options.batch > 1 ? changeMany() : change());
      // Until the next one is due: this process's CPU is taken from the generator's.
      const next = onSince + ((issued + 1) * options.batch * 1000) / options.changesPerSecond;
      await sleep(Math.max(1, next - performance.now()));
    }
  })();

  const scrapes = (async () => {
    while (!stopped) {
      // Off, or no scrapes asked (a window of changes alone).
      if (!on || options.scrapesPerSecond <= 0) {
        await resumed.promise;
        continue;
      }
      const started = performance.now();
      try {
        if ((await call('GET', '/metrics')) === 200 && on) counts.scrapes++;
      } catch (err) {
        if (counts.firstError === null) counts.firstError = (err as Error).message;
      }
      await sleep(Math.max(0, 1000 / options.scrapesPerSecond - (performance.now() - started)));
    }
  })();

  return {
    counts,
    /** starts the load (again): the pace counts from now */
    start() {
      on = true;
      onSince = performance.now();
      issued = 0;
      wake();
    },
    pause() {
      if (on) counts.onMs += performance.now() - onSince;
      on = false;
    },
    /** counts from zero again (a warm-up's done are not the measurement's); while paused */
    resetCounts() {
      Object.assign(counts, noCounts());
    },
    /** until every change issued has its answer (at most `ms`) */
    async settled(ms = 30000) {
      const deadline = performance.now() + ms;
      while (inFlight > 0 && performance.now() < deadline) await sleep(5);
    },
    async close() {
      this.pause();
      stopped = true;
      wake();
      await Promise.all([changes, scrapes]);
      while (inFlight > 0) await sleep(5);
      // The routes it added go: a load started after it on the same router (another
      // window) would otherwise add some of them again, and be refused.
      for (let at = 0; at < live.length; at += LIVE_ROUTES) await call('PATCH', '/routes', { remove: live.slice(at, at + LIVE_ROUTES) });
      await dispatcher.close();
    },
  };
}
