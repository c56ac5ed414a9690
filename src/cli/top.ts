// `vrouterctl top`: a live view of the data path, refreshed every second, from successive
// GET /counters and GET /pmds: per port rx/tx packets and bits per second and drops per
// second, per PMD its busy share of the wall clock, packets per second and busy ns per
// packet, and the busiest drop reasons (what `ovs-appctl dpif-netdev/pmd-stats-show` and
// `vppctl show run` / `show errors` tell). On a terminal it redraws one screen and gives
// the terminal back as it found it on Ctrl-C; else (a pipe, a file, --json) it prints one
// snapshot a refresh, as plain lines.
import { integerArg, secondsArg } from './args.ts';
import type { Command, Context } from './command.ts';
import { describeTarget } from './target.ts';
import { bitRate, table, type Cell } from './format.ts';
import { dropsByReason, totalDrops, type PmdCounters, type PortCounters } from './ports.ts';

interface Sample {
  /** ms, monotonic: when the counters were read (the middle of the two requests) */
  at: number;
  ports: Record<string, PortCounters>;
  pmds: PmdCounters[];
}

interface PortRates {
  rx_pps: number | null;
  tx_pps: number | null;
  rx_bps: number | null;
  tx_bps: number | null;
  drops_ps: number | null;
  rx_packets: number;
  tx_packets: number;
  drops: number;
}

interface PmdRates {
  pmd: number;
  cpu: number;
  /** the share of the interval the PMD spent on bursts, 0-100 (the rest it polled idle or slept) */
  busy_pct: number | null;
  rx_pps: number | null;
  tx_pps: number | null;
  /**
   * busy time over the frames it took from guests in the interval, as OVS's "avg processing
   * cycles per packet" (frames another PMD hands it for delivery cost busy time, not count)
   */
  ns_per_packet: number | null;
  rx_packets: number;
  tx_packets: number;
}

interface Snapshot {
  time: string;
  seconds: number;
  ports: Record<string, PortRates>;
  pmds: PmdRates[];
  /** the drop reasons that counted in this interval, busiest first */
  drops: { port: string; reason: string; per_second: number }[];
}

const TOP_DROP_REASONS = 10;
// Alternate screen, cursor hidden while drawing; given back as they were on exit.
const ENTER_SCREEN = '\x1b[?1049h\x1b[?25l';
const LEAVE_SCREEN = '\x1b[?25h\x1b[?1049l';

async function sample(ctx: Context): Promise<Sample> {
  const start = performance.now();
  const [counters, pmds] = await Promise.all([ctx.api.get('/counters'), ctx.api.get('/pmds')]);
  return { at: (start + performance.now()) / 2, ports: counters.json as Sample['ports'], pmds: pmds.json as PmdCounters[] };
}

/** Per second over the interval; a counter that went down (the daemon restarted) has no rate. */
function rate(now: number, before: number | undefined, seconds: number): number | null {
  if (before === undefined || now < before) return null;
  return (now - before) / seconds;
}

export function snapshot(prev: Sample, next: Sample): Snapshot {
  const seconds = (next.at - prev.at) / 1000;
  const ports: Record<string, PortRates> = {};
  const drops: Snapshot['drops'] = [];
  for (const [name, s] of Object.entries(next.ports)) {
    const p = prev.ports[name];
    ports[name] = {
      rx_pps: rate(s.rx_packets, p?.rx_packets, seconds),
      tx_pps: rate(s.tx_packets, p?.tx_packets, seconds),
      rx_bps: rate(s.rx_bytes * 8, p === undefined ? undefined : p.rx_bytes * 8, seconds),
      tx_bps: rate(s.tx_bytes * 8, p === undefined ? undefined : p.tx_bytes * 8, seconds),
      drops_ps: rate(totalDrops(s), p === undefined ? undefined : totalDrops(p), seconds),
      rx_packets: s.rx_packets,
      tx_packets: s.tx_packets,
      drops: totalDrops(s),
    };
    if (p === undefined) continue;
    const before = new Map(dropsByReason(p));
    for (const [reason, n] of dropsByReason(s)) {
      const r = rate(n, before.get(reason), seconds);
      if (r !== null && r > 0) drops.push({ port: name, reason, per_second: r });
    }
  }
  drops.sort((a, b) => b.per_second - a.per_second);
  const pmds = next.pmds.map((m, i): PmdRates => {
    const before = prev.pmds[i];
    const busyMsPerSecond = rate(m.busy_ms, before?.busy_ms, seconds);
    const rxPps = rate(m.rx_packets, before?.rx_packets, seconds);
    return {
      pmd: i,
      cpu: m.cpu,
      // The interval is timed at the requests, busy time by the PMD a round at a time: the
      // two may disagree by a round, so the share is capped at 100 %.
      busy_pct: busyMsPerSecond === null ? null : Math.min(100, busyMsPerSecond / 10),
      rx_pps: rxPps,
      tx_pps: rate(m.tx_packets, before?.tx_packets, seconds),
      ns_per_packet: busyMsPerSecond === null || rxPps === null || rxPps === 0 ? null : (busyMsPerSecond * 1e6) / rxPps,
      rx_packets: m.rx_packets,
      tx_packets: m.tx_packets,
    };
  });
  return { time: new Date().toISOString(), seconds: Math.round(seconds * 1000) / 1000, ports, pmds, drops: drops.slice(0, TOP_DROP_REASONS) };
}

const round = (n: number | null): number | null => (n === null ? null : Math.round(n));

export function renderSnapshot(s: Snapshot, where: string, hint: string): string[] {
  const ports = table(
    ['PORT', 'RX PKT/S', 'TX PKT/S', 'RX BIT/S', 'TX BIT/S', 'DROPS/S', 'RX PACKETS', 'TX PACKETS', 'DROPS'],
    Object.entries(s.ports).map(([name, p]): Cell[] => [name, round(p.rx_pps), round(p.tx_pps), bitRate(p.rx_bps), bitRate(p.tx_bps), round(p.drops_ps), p.rx_packets, p.tx_packets, p.drops]),
    [3, 4],
  );
  const pmds = table(
    ['PMD', 'CPU', 'BUSY %', 'RX PKT/S', 'TX PKT/S', 'NS/PKT', 'RX PACKETS', 'TX PACKETS'],
    s.pmds.map((m): Cell[] => [m.pmd, m.cpu, m.busy_pct === null ? null : m.busy_pct.toFixed(1), round(m.rx_pps), round(m.tx_pps), round(m.ns_per_packet), m.rx_packets, m.tx_packets]),
    [2],
  );
  const drops = s.drops.length === 0 ? 'no drops in this interval' : table(['DROPS/S', 'PORT', 'REASON'], s.drops.map((d) => [Math.round(d.per_second), d.port, d.reason]));
  return [`vrouter top ${where} ${s.time.slice(0, 19).replace('T', ' ')}Z, rates over ${s.seconds.toFixed(2)} s${hint}`, '', ...ports.split('\n'), '', ...pmds.split('\n'), '', ...drops.split('\n')];
}

/** A wait of ms that stop() ends early. */
function sleeper() {
  let wake: () => void = () => undefined;
  let timer: NodeJS.Timeout | undefined;
  return {
    sleep: (ms: number) => new Promise<void>((resolve) => ((wake = resolve), (timer = setTimeout(resolve, Math.max(0, ms))))),
    stop: () => (clearTimeout(timer), wake()),
  };
}

export const topCommand: Command = {
  words: ['top'], args: '[--count N] [--interval SECONDS]', options: ['count', 'interval'],
  summary: 'live rates, each second: ports (packets, bits, drops) and PMDs (busy %, packets, ns per packet)',
  run: async (ctx) => {
    const usage = 'vrouterctl top [--count N] [--interval SECONDS]';
    const limit = ctx.options.count === undefined ? Infinity : integerArg(ctx.options.count, '--count', 1, 1e9, usage);
    const intervalMs = (ctx.options.interval === undefined ? 1 : secondsArg(ctx.options.interval, '--interval', 0.1, 3600, usage)) * 1000;
    const screen = ctx.stdout.isTTY === true && !ctx.json;
    const where = describeTarget(ctx.target);
    let stopped = false;
    const wait = sleeper();
    // A request under way is ended too: an endpoint slow to answer would keep Ctrl-C waiting.
    const stop = () => {
      stopped = true;
      wait.stop();
      ctx.api.abort();
    };
    let onScreen = false;
    const leave = () => {
      if (onScreen) ctx.stdout.write(LEAVE_SCREEN);
      onScreen = false;
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, stop);
    // Should anything end the process while the screen is up, the terminal is still given back.
    process.on('exit', leave);
    /** A sample, or null when Ctrl-C ended the request under way. */
    const take = async (): Promise<Sample | null> => {
      try {
        return await sample(ctx);
      } catch (err) {
        if (stopped) return null;
        throw err;
      }
    };
    try {
      let prev = await take();
      if (prev === null) return;
      if (screen) {
        ctx.stdout.write(`${ENTER_SCREEN}\x1b[Hvrouter top ${where}: sampling…\x1b[K\x1b[J`);
        onScreen = true;
      }
      const start = performance.now();
      for (let n = 1; n <= limit && !stopped; n++) {
        // Ticks at fixed times from the start: the refresh does not drift by the requests' time.
        await wait.sleep(start + n * intervalMs - performance.now());
        if (stopped) break;
        const next = await take();
        if (next === null) break;
        const snap = snapshot(prev, next);
        prev = next;
        if (ctx.json) ctx.out(JSON.stringify(snap));
        else if (!screen) ctx.out(`${renderSnapshot(snap, where, '').join('\n')}\n`);
        else {
          const width = ctx.stdout.columns || 200;
          const height = ctx.stdout.rows || 50;
          const lines = renderSnapshot(snap, where, ' (Ctrl-C quits)').slice(0, height - 1).map((l) => `${l.slice(0, width)}\x1b[K`);
          ctx.stdout.write(`\x1b[H${lines.join('\n')}\n\x1b[J`);
        }
      }
    } finally {
      leave();
      for (const s of signals) process.off(s, stop);
      process.off('exit', leave);
    }
  },
};
