// Where routes come from besides the config ("routeSources"): a network namespace's main
// table through netlink (the namespace of a port's Linux mirror, where FRR or BIRD runs,
// among them), and FRR's zebra over FPM. Each source keeps its routes (LearnedTable); their
// union is the routing stage's (LearnedRoutes, read where they are kept), as routes the
// config's overrule. What changes is handed on by prefix, a burst at a time: a full BGP
// table arriving costs a pass over it, and a route that changes costs one route's worth.
import type { Logger } from '../vhost/connection.ts';
import type { ChangedPrefixes, LearnedRoute, LearnedRoutes } from '../pipeline/api.ts';
import { NetlinkWatcher, type WatcherEvent } from '../uplink/netlink-watcher.ts';
import { FpmServer, type FpmEvent, type FpmPeer } from '../uplink/fpm-server.ts';
import type { RouteSourceConfig, VrouterConfig } from './config.ts';
import { LearnedTable, MAX_ROUTES, prefixKey, prefixText, type Learned, type LeftOut, type RouteLimit } from './learned-table.ts';

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
  /** what it learned: a namespace's one table, or one per FPM connection */
  tables(): LearnedTable[];
  /** the ports' mirrors in its namespace changed: whether routes through them did */
  setMirrors(mirrors: ReadonlyMap<string, string>): boolean;
  state: string;
  /** FPM: connections refused (from an address not in "peers", or with every place held by route senders) */
  refused(): number | undefined;
  /** FPM: connections closed, having sent no route, to make room for a new one */
  evicted(): number | undefined;
  /** FPM: closed connections whose routes are kept (see RouteSourceStatus.keptConnections) */
  kept?(): number;
  /** FPM: who may connect now */
  allowPeers(peers: readonly string[] | null): void;
  stop(): Promise<void>;
}

/** What GET /route-sources shows of a source. */
export interface RouteSourceStatus {
  source: string;
  state: string;
  routes: number;
  leftOut: Partial<Record<LeftOut, number>>;
  /** FPM: connections refused, from addresses not in "peers" or past the most kept */
  refusedConnections?: number;
  /** FPM: connections that held no route, closed to make room for a new one */
  evictedConnections?: number;
  /** FPM: closed connections whose routes are kept for zebra to come back */
  keptConnections?: number;
}

/**
 * What changed in a burst: how many prefixes' routes may differ (takeChanged() says
 * which), and the addresses and neighbours, when they changed (null otherwise).
 */
export interface LearnedChange {
  routes: number;
  others: Learned | null;
}

/**
 * The most prefixes kept as changed between two applies: past it every prefix counts as
 * changed (ChangedPrefixes.whole). A peer adding and removing distinct prefixes while a
 * slow apply runs would otherwise grow the set without bound (V8 ends a Set at 2^24).
 */
export const CHANGED_PREFIXES_MAX = 1_000_000;

export class RouteSources implements LearnedRoutes {
  private readonly sources = new Map<string, RunningSource>();
  private readonly onChange: (change: LearnedChange) => void;
  private readonly log: Logger;
  private settle: NodeJS.Timeout | null = null;
  private stopped = false;
  /** prefixes (prefixKey) whose routes may have changed since takeChanged(): the tables', gathered at each burst, and those of sources stopped */
  private changedKeys = new Set<number | string>();
  /** more than changedMax changed since takeChanged(): every prefix counts as changed (changedKeys is left empty) */
  private changedAll = false;
  private readonly changedMax: number;
  /** the addresses and neighbours last handed on, as JSON */
  private othersSent = JSON.stringify({ addresses: {}, neighbours: [] });

  /** how long FPM waits: for a zebra that hung up to come back, and for one's sync to end (tests shorten them) */
  private readonly fpmTimes: { graceMs: number; resyncMs: number };

  /** changedMax: see CHANGED_PREFIXES_MAX (tests lower it) */
  constructor(onChange: (change: LearnedChange) => void, log: Logger, fpmTimes = { graceMs: FPM_GRACE_MS, resyncMs: FPM_RESYNC_MS }, changedMax = CHANGED_PREFIXES_MAX) {
    this.onChange = onChange;
    this.log = log;
    this.fpmTimes = fpmTimes;
    this.changedMax = changedMax;
  }

  /** The routes to a prefix, every source's (LearnedRoutes). */
  get(prefix: string): readonly LearnedRoute[] {
    const key = prefixKey(prefix);
    const out: LearnedRoute[] = [];
    for (const s of this.sources.values()) for (const t of s.tables()) t.routesTo(key, prefix, out);
    return out;
  }

  /** The routes to each prefix, once (LearnedRoutes): a pass over every source's table. */
  *all(): Generator<readonly LearnedRoute[]> {
    const tables = this.allTables();
    for (let i = 0; i < tables.length; i++) {
      next: for (const key of tables[i].prefixes()) {
        // A prefix an earlier table has was done with that table.
        for (let j = 0; j < i; j++) if (tables[j].has(key)) continue next;
        const text = prefixText(key);
        const routes: LearnedRoute[] = [];
        for (let j = i; j < tables.length; j++) tables[j].routesTo(key, text, routes);
        if (routes.length > 0) yield routes;
      }
    }
  }

  /** Starts the sources the config names and stops the others; the mirrors' ports are read again. */
  configure(config: VrouterConfig): void {
    const wanted = new Map(config.routeSources.map((s) => [sourceName(s), s]));
    for (const [name, source] of this.sources) {
      if (wanted.has(name)) continue;
      this.sources.delete(name);
      for (const t of source.tables()) {
        t.clear();
        this.gather(t);
      }
      void source.stop();
      this.log.info(`route source ${name} stopped: its routes are withdrawn`, 'routes.source', { source: name });
      this.changed();
    }
    for (const [name, s] of wanted) {
      const mirrors = s.type === 'netlink' ? mirrorsIn(config, s.netns) : new Map<string, string>();
      const running = this.sources.get(name);
      if (running !== undefined) {
        if (running.setMirrors(mirrors)) this.changed();
        if (s.type === 'fpm') running.allowPeers(s.peers);
        continue;
      }
      this.sources.set(name, s.type === 'netlink' ? this.startNetlink(s.netns, new LearnedTable(name, mirrors, undefined, true)) : this.startFpm(s));
    }
  }

  status(): RouteSourceStatus[] {
    return [...this.sources.entries()].map(([source, s]) => {
      const refused = s.refused();
      const evicted = s.evicted();
      const kept = s.kept?.();
      const leftOut: Partial<Record<LeftOut, number>> = {};
      let routes = 0;
      for (const t of s.tables()) {
        const one = t.status();
        routes += one.routes;
        for (const [why, n] of Object.entries(one.leftOut) as [LeftOut, number][]) leftOut[why] = (leftOut[why] ?? 0) + n;
      }
      return { source, state: s.state, routes, leftOut, ...(refused === undefined ? {} : { refusedConnections: refused }), ...(evicted === undefined ? {} : { evictedConnections: evicted }), ...(kept === undefined ? {} : { keptConnections: kept }) };
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
      tables: () => [table],
      setMirrors: (mirrors) => table.setMirrors(mirrors),
      state: 'starting',
      refused: () => undefined,
      evicted: () => undefined,
      allowPeers: () => {},
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

  /**
   * An FPM listener: each connection (a zebra) has a table of its own, so that one zebra's
   * sync, withdrawals and hang-up touch only its own routes, not another's, nor those of
   * any local process that connects. A zebra that comes back from the same address within
   * the grace takes over the table it left (its new sync then replaces it).
   */
  private startFpm(config: Extract<RouteSourceConfig, { type: 'fpm' }>): RunningSource {
    const { host, port, peers } = config;
    const name = sourceName(config);
    interface Session {
      table: LearnedTable;
      /** "address" of the peer, without its port */
      address: string;
      resync: NodeJS.Timeout | null;
      grace: NodeJS.Timeout | null;
      /** when the grace ends (Date.now() ms): a connection that takes the table over and sends nothing does not extend it */
      graceEnds: number;
      /** taken over by a new connection that has sent nothing yet: the routes wait for it under their grace */
      waiting: boolean;
    }
    const sessions = new Map<number, Session>();
    // One limit for all its connections: sixteen of them must not hold sixteen full sources.
    const limit: RouteLimit = { held: 0, most: MAX_ROUTES };
    const clear = (session: Session) => {
      if (session.resync !== null) clearTimeout(session.resync);
      if (session.grace !== null) clearTimeout(session.grace);
      session.resync = session.grace = null;
    };
    const withdraw = (id: number, session: Session) => {
      clear(session);
      sessions.delete(id);
      if (session.table.clear()) this.gather(session.table);
      this.changed();
    };
    /** The routes of `session` (connection `id`) stay until its grace ends, then go. */
    const keep = (id: number, session: Session, remote: string) => {
      if (session.grace !== null) clearTimeout(session.grace);
      session.grace = setTimeout(() => {
        if (sessions.get(id) !== session) return;
        this.log.warn(`route source ${name}: zebra did not come back to ${remote}: its routes are withdrawn`, 'routes.source', { source: name });
        if (!session.waiting) return withdraw(id, session);
        // The connection that took them over is still open and has said nothing: the
        // routes go, the connection keeps its (empty) table for what it sends later.
        session.grace = null;
        session.waiting = false;
        if (session.table.clear()) this.gather(session.table);
        this.changed();
      }, Math.max(0, session.graceEnds - Date.now())).unref();
    };
    /** zebra sends its whole table again: what it does not repeat within the resync goes. */
    const resync = (session: Session) => {
      session.resync = setTimeout(() => {
        session.resync = null;
        if (session.table.sweep()) this.changed();
      }, this.fpmTimes.resyncMs).unref();
    };
    const server = new FpmServer({
      host,
      port,
      peers,
      log: this.log,
      holds: (peer) => !(sessions.get(peer.id)?.table.empty ?? true),
      onEvents: (events: FpmEvent[], peer: FpmPeer) => {
        for (const e of events) {
          if (e.kind === 'sync-start') {
            // A connection from the address of one whose routes are kept takes them over:
            // they stay under their grace until it sends something (any local process may
            // connect from 127.0.0.1 and say nothing), then what it does not send again
            // within the resync goes.
            const address = peer.remote.slice(0, peer.remote.lastIndexOf(':'));
            // Not one another connection took over already (`waiting`): a probe of the port
            // from the same address would take it from zebra, back before it sent a frame.
            const left = [...sessions.entries()].find(([, s]) => s.grace !== null && !s.waiting && s.address === address);
            if (left !== undefined) sessions.delete(left[0]);
            const session: Session = left?.[1] ?? { table: new LearnedTable(name, new Map(), limit), address, resync: null, grace: null, graceEnds: 0, waiting: false };
            sessions.set(peer.id, session);
            source.state = 'connected';
            if (left !== undefined) {
              clear(session);
              session.waiting = true;
              session.table.mark();
              keep(peer.id, session, peer.remote);
            } else {
              session.table.mark();
              resync(session);
            }
          } else if (e.kind === 'disconnected') {
            const session = sessions.get(peer.id);
            if (session === undefined) continue;
            // Its grace, if it is one that took kept routes over, is armed again below as it was.
            clear(session);
            if ([...sessions.values()].every((s) => s === session || (s.grace !== null && !s.waiting))) source.state = `disconnected: ${e.reason}`;
            if (this.stopped) continue;
            // Nothing to keep (a connection that never sent a route): gone at once, so that
            // connections opened and closed by the thousand leave no tables behind.
            if (session.table.empty) {
              withdraw(peer.id, session);
              continue;
            }
            // A connection that took kept routes over and sent nothing leaves them their grace as it was.
            if (!session.waiting) session.graceEnds = Date.now() + this.fpmTimes.graceMs;
            session.waiting = false;
            this.log.warn(`route source ${name}: zebra's connection from ${peer.remote} closed (${e.reason}); its routes stay ${Math.round((session.graceEnds - Date.now()) / 1000)} s for it to come back`, 'routes.source', { source: name });
            keep(peer.id, session, peer.remote);
          }
        }
        const session = sessions.get(peer.id);
        if (session === undefined) return;
        const data = events.filter((e) => e.kind !== 'sync-start' && e.kind !== 'disconnected');
        if (data.length > 0 && session.waiting && session.grace !== null) {
          // The connection that took the routes over speaks: they are its own now.
          clearTimeout(session.grace);
          session.grace = null;
          session.waiting = false;
          resync(session);
        }
        if (session.table.apply(data)) this.changed();
      },
    });
    const source: RunningSource = {
      config,
      tables: () => [...sessions.values()].map((s) => s.table),
      setMirrors: () => false,
      state: 'listening',
      refused: () => server.refused,
      evicted: () => server.evicted,
      kept: () => [...sessions.values()].filter((s) => s.grace !== null && !s.waiting).length,
      allowPeers: (allowed) => server.allowPeers(allowed),
      stop: async () => {
        await server.close();
        // Closing the connections set their graces: they go with the rest.
        for (const session of sessions.values()) {
          clear(session);
          session.table.clear();
        }
        sessions.clear();
      },
    };
    // An address in use (a vrouter before this one still closing, zebra's own listener) may
    // be free later: tried again every RETRY_MS, as a netlink source is, warned of once.
    let retry: NodeJS.Timeout | null = null;
    let warned = false;
    const listen = () => {
      retry = null;
      server.listen().then(
        () => {
          if (source.state.startsWith('not listening')) source.state = 'listening';
          this.log.info(`route source ${name}: listening for zebra (dplane_fpm_nl)`, 'routes.source', { source: name });
        },
        (err: Error) => {
          source.state = `not listening: ${err.message}`;
          if (!warned) this.log.warn(`route source ${name}: cannot listen: ${err.message}; trying again every ${RETRY_MS / 1000} s`, 'routes.source', { source: name });
          warned = true;
          if (!stopped) retry = setTimeout(listen, RETRY_MS).unref();
        },
      );
    };
    let stopped = false;
    const stopServer = source.stop;
    source.stop = async () => {
      stopped = true;
      if (retry !== null) clearTimeout(retry);
      await stopServer();
    };
    listen();
    return source;
  }

  /**
   * Some source's routes changed: once the burst of changes settled, the prefixes that
   * changed go on, and the addresses and neighbours if they did (there are few of them).
   */
  private changed(): void {
    if (this.settle !== null || this.stopped) return;
    this.settle = setTimeout(() => {
      this.settle = null;
      const tables = this.allTables();
      for (const t of tables) this.gather(t);
      const addresses: Record<string, string[]> = {};
      // Own keys only: a port named "constructor" has none of Object's.
      for (const t of tables) for (const [port, list] of t.learnedAddresses()) addresses[port] = [...(Object.hasOwn(addresses, port) ? addresses[port] : []), ...list];
      const others: Learned = { addresses, neighbours: tables.flatMap((t) => t.learnedNeighbours()) };
      const json = JSON.stringify(others);
      const othersChanged = json !== this.othersSent;
      this.othersSent = json;
      if (this.changedAll || this.changedKeys.size > 0 || othersChanged) this.onChange({ routes: this.changedAll ? this.changedMax : this.changedKeys.size, others: othersChanged ? others : null });
    }, SETTLE_MS);
  }

  /**
   * Every prefix counts as changed at the next takeChanged(): the changes taken last were
   * not applied (the apply failed), and a compile of all that the sources hold takes out
   * what was withdrawn meanwhile too.
   */
  retakeAll(): void {
    this.changedAll = true;
    this.changedKeys = new Set();
  }

  private allTables(): LearnedTable[] {
    return [...this.sources.values()].flatMap((s) => s.tables());
  }

  /** Adds what changed in a table to what changed since takeChanged() (the bigger set kept: a full table is a million prefixes). */
  private gather(table: LearnedTable): void {
    let keys = table.takeChanged();
    if (this.changedAll) return;
    if (keys.size > this.changedKeys.size) [keys, this.changedKeys] = [this.changedKeys, keys];
    for (const key of keys) this.changedKeys.add(key);
    if (this.changedKeys.size > this.changedMax) {
      this.changedAll = true;
      this.changedKeys = new Set();
    }
  }

  /**
   * The prefixes whose routes may have changed since the last call, and forgets them:
   * their text is made as it is read (a plugin that compiles whole for a big change reads
   * only how many).
   */
  takeChanged(): ChangedPrefixes {
    const keys = this.changedKeys;
    this.changedKeys = new Set();
    if (this.changedAll) {
      // Too many to list (added and removed while an apply ran): every prefix held now. A
      // plugin compiles whole for so many, which takes the removed ones out too.
      this.changedAll = false;
      const all = new Set<number | string>();
      for (const t of this.allTables()) for (const key of t.prefixes()) all.add(key);
      return { size: all.size, whole: true, *[Symbol.iterator]() { for (const key of all) yield prefixText(key); } };
    }
    return {
      size: keys.size,
      *[Symbol.iterator]() {
        for (const key of keys) yield prefixText(key);
      },
    };
  }
}

/** The mirrors' interfaces in a namespace, and the ports they mirror. */
function mirrorsIn(config: VrouterConfig, netns: string): Map<string, string> {
  return new Map(config.ports.flatMap((p) => (p.mirror !== null && p.mirror.netns === netns ? [[p.interface!, p.mirror.of] as const] : [])));
}
