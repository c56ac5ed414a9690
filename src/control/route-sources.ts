// Where routes come from besides the config ("routeSources"): a network namespace's main
// table through netlink (the namespace of a port's Linux mirror, where FRR or BIRD runs,
// among them), and FRR's zebra over FPM. Each source keeps its routes (LearnedTable); their
// union goes to the routing stage, as routes the config's overrule.
import type { Logger } from '../vhost/connection.ts';
import { NetlinkWatcher, type WatcherEvent } from '../uplink/netlink-watcher.ts';
import { FpmServer, type FpmEvent } from '../uplink/fpm-server.ts';
import type { RouteSourceConfig, VrouterConfig } from './config.ts';
import { LearnedTable, type Learned, type LeftOut } from './learned-table.ts';

/** A namespace that is not there (yet): tried again this often. */
const RETRY_MS = 1000;
/** The routes of a zebra whose FPM connection closed are kept this long, for it to come back. */
const FPM_GRACE_MS = 30_000;
/** After zebra connects, routes of the last connection it has not sent again by then go. */
const FPM_RESYNC_MS = 10_000;
/** Changes are gathered this long before the routes are handed on. */
const SETTLE_MS = 20;

export const sourceName = (s: RouteSourceConfig) => (s.type === 'netlink' ? `netlink ${s.netns}` : `fpm ${s.host}:${s.port}`);

interface RunningSource {
  config: RouteSourceConfig;
  table: LearnedTable;
  state: string;
  stop(): Promise<void>;
}

/** What GET /route-sources shows of a source. */
export interface RouteSourceStatus {
  source: string;
  state: string;
  routes: number;
  leftOut: Partial<Record<LeftOut, number>>;
}

export class RouteSources {
  private readonly sources = new Map<string, RunningSource>();
  private readonly onChange: (learned: Learned) => void;
  private readonly log: Logger;
  private settle: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(onChange: (learned: Learned) => void, log: Logger) {
    this.onChange = onChange;
    this.log = log;
  }

  /** Starts the sources the config names and stops the others; the mirrors' ports are read again. */
  configure(config: VrouterConfig): void {
    const wanted = new Map(config.routeSources.map((s) => [sourceName(s), s]));
    for (const [name, source] of this.sources) {
      if (wanted.has(name)) continue;
      this.sources.delete(name);
      void source.stop();
      this.log.info(`route source ${name} stopped: its routes are withdrawn`, 'routes.source', { source: name });
      this.changed();
    }
    for (const [name, s] of wanted) {
      const mirrors = s.type === 'netlink' ? mirrorsIn(config, s.netns) : new Map<string, string>();
      const running = this.sources.get(name);
      if (running !== undefined) {
        running.table.setMirrors(mirrors);
        this.changed();
        continue;
      }
      const table = new LearnedTable(name, mirrors);
      this.sources.set(name, s.type === 'netlink' ? this.startNetlink(s.netns, table) : this.startFpm(s.host, s.port, table));
    }
  }

  status(): RouteSourceStatus[] {
    return [...this.sources.entries()].map(([source, s]) => {
      const { routes, leftOut } = s.table.learned();
      return { source, state: s.state, routes: routes.length, leftOut };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.settle !== null) clearTimeout(this.settle);
    await Promise.all([...this.sources.values()].map((s) => s.stop()));
    this.sources.clear();
  }

  private startNetlink(netns: string, table: LearnedTable): RunningSource {
    const name = table.source;
    let watcher: NetlinkWatcher | null = null;
    let retry: NodeJS.Timeout | null = null;
    let warned = false;
    const source: RunningSource = {
      config: { type: 'netlink', netns },
      table,
      state: 'starting',
      stop: async () => {
        if (retry !== null) clearTimeout(retry);
        watcher?.stop();
        table.clear();
      },
    };
    const start = () => {
      retry = null;
      if (this.stopped || this.sources.get(name) !== source) return;
      const w = new NetlinkWatcher(netns, (events: WatcherEvent[]) => {
        if (events.some((e) => e.kind === 'sync-end')) source.state = 'in sync';
        if (table.apply(events)) this.changed();
      }, { log: this.log });
      try {
        w.start();
        watcher = w;
        this.log.info(`route source ${name}: reading the routes of network namespace ${netns}`, 'routes.source', { source: name });
      } catch (err) {
        source.state = `waiting: ${(err as Error).message}`;
        if (!warned) this.log.warn(`route source ${name}: ${(err as Error).message}; trying again every ${RETRY_MS / 1000} s`, 'routes.source', { source: name });
        warned = true;
        retry = setTimeout(start, RETRY_MS).unref();
      }
    };
    // Once the source is in the list (start() checks that it still is).
    setImmediate(start);
    return source;
  }

  private startFpm(host: string, port: number, table: LearnedTable): RunningSource {
    const name = table.source;
    let grace: NodeJS.Timeout | null = null;
    let resync: NodeJS.Timeout | null = null;
    const clearTimers = () => {
      if (grace !== null) clearTimeout(grace);
      if (resync !== null) clearTimeout(resync);
      grace = resync = null;
    };
    const server = new FpmServer({
      host,
      port,
      log: this.log,
      onEvents: (events: FpmEvent[]) => {
        for (const e of events) {
          if (e.kind === 'sync-start') {
            // zebra sends its whole table again: what it does not repeat goes, after a while.
            clearTimers();
            table.mark();
            source.state = 'connected';
            resync = setTimeout(() => {
              if (table.sweep()) this.changed();
            }, FPM_RESYNC_MS).unref();
          } else if (e.kind === 'disconnected') {
            clearTimers();
            source.state = `disconnected: ${e.reason}`;
            this.log.warn(`route source ${name}: zebra's connection closed (${e.reason}); its routes stay ${FPM_GRACE_MS / 1000} s for it to come back`, 'routes.source', { source: name });
            grace = setTimeout(() => {
              if (table.clear()) this.changed();
              this.log.warn(`route source ${name}: zebra did not come back: its routes are withdrawn`, 'routes.source', { source: name });
            }, FPM_GRACE_MS).unref();
          }
        }
        if (table.apply(events.filter((e) => e.kind !== 'sync-start' && e.kind !== 'disconnected'))) this.changed();
      },
    });
    const source: RunningSource = {
      config: { type: 'fpm', host, port },
      table,
      state: 'listening',
      stop: async () => {
        clearTimers();
        await server.close();
        table.clear();
      },
    };
    server.listen().then(
      () => this.log.info(`route source ${name}: listening for zebra (dplane_fpm_nl)`, 'routes.source', { source: name }),
      (err: Error) => {
        source.state = `not listening: ${err.message}`;
        this.log.warn(`route source ${name}: cannot listen: ${err.message}`, 'routes.source', { source: name });
      },
    );
    return source;
  }

  /** Some source's routes changed: the union goes on once the burst of changes settled. */
  private changed(): void {
    if (this.settle !== null || this.stopped) return;
    this.settle = setTimeout(() => {
      this.settle = null;
      const tables = [...this.sources.values()].map((s) => s.table);
      const addresses: Record<string, string[]> = {};
      for (const t of tables) for (const [port, list] of t.learnedAddresses()) addresses[port] = [...(addresses[port] ?? []), ...list];
      this.onChange({ routes: tables.flatMap((t) => t.learned().routes), addresses, neighbours: tables.flatMap((t) => t.learnedNeighbours()) });
    }, SETTLE_MS);
  }
}

/** The mirrors' interfaces in a namespace, and the ports they mirror. */
function mirrorsIn(config: VrouterConfig, netns: string): Map<string, string> {
  return new Map(config.ports.flatMap((p) => (p.mirror !== null && p.mirror.netns === netns ? [[p.interface!, p.mirror.of] as const] : [])));
}
