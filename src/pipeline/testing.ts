// A harness for testing a plugin without a running vrouter: the plugin runs on real
// batches (the PMD's own Batch and buffer pool), with its config parsed, its shared memory
// allocated and its counters kept as the PMD would. Frames go in as bytes; what each stage
// decided comes out by name. Part of the plugin API, for plugin authors' tests.
import { Batch, BATCH_MAX, EGRESS_CONSUMED, EGRESS_DROP, EGRESS_FLOOD, EGRESS_UNDECIDED } from '../dataplane/batch.ts';
import { PacketPool } from '../dataplane/packet-pool.ts';
import { DROP_REASONS } from '../dataplane/counters.ts';
import type { LearnedRoute, LearnedRoutes, Plugin, PluginContext, PluginSetup, PortInfo, Topology } from './api.ts';

export interface HarnessPort {
  name: string;
  bridge?: string | null;
  /** the port's config entry as the plugin reads it (defaults are the caller's) */
  settings?: Record<string, unknown>;
}

export interface HarnessOptions {
  ports: HarnessPort[];
  /** the plugin's raw config (its "plugins" entry, or the top-level keys of a built-in) */
  config?: Record<string, unknown>;
  bridgeSettings?: Record<string, Record<string, unknown>>;
  /** the ports (and bridges' settings) of the PMD this one replaces, as after a change at run time (PluginContext.previous) */
  previous?: { ports: HarnessPort[]; bridgeSettings?: Record<string, Record<string, unknown>> };
  pmd?: number;
  pmdCount?: number;
  /** another harness's shared memory: two harnesses then act as two PMDs of one router */
  shareWith?: PluginHarness<unknown, unknown>;
  /** routes a route source learned (PluginSetup.learnedRoutes), for a plugin that takes them */
  learnedRoutes?: readonly LearnedRoute[];
}

/** Learned routes as the supervisor hands them to plugins, from a list (LearnedRoutes). */
export class LearnedRouteList implements LearnedRoutes {
  private readonly byPrefix = new Map<string, LearnedRoute[]>();

  constructor(routes: readonly LearnedRoute[] = []) {
    this.set(routes);
  }

  /** Replaces the routes; returns the prefixes whose routes changed. */
  set(routes: readonly LearnedRoute[]): string[] {
    const before = this.byPrefix;
    const after = new Map<string, LearnedRoute[]>();
    for (const r of routes) after.set(r.prefix, [...(after.get(r.prefix) ?? []), r]);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter((p) => JSON.stringify(before.get(p)) !== JSON.stringify(after.get(p)));
    this.byPrefix.clear();
    for (const [p, list] of after) this.byPrefix.set(p, list);
    return changed;
  }

  get(prefix: string): readonly LearnedRoute[] {
    return this.byPrefix.get(prefix) ?? [];
  }

  all(): Iterable<readonly LearnedRoute[]> {
    return this.byPrefix.values();
  }
}

/** What happened to one packet of a batch (received or emitted). */
export interface Outcome {
  /** a port name, 'flood', 'undecided', 'consumed', or 'drop' */
  to: string;
  /** the drop reason, when to = 'drop' */
  reason?: string;
  /** the frame as it would leave (a copy) */
  frame: Uint8Array;
  mark: number;
  /** false for packets a stage added with emit() */
  received: boolean;
  /** the port of the batch it was in */
  from: string;
  /** batch.local: the router's own packet, which filters leave alone */
  local: boolean;
}

const PLUGIN_ERROR = 'plugin_error';

/** Passes per timed slice in measure(): ~0.1-0.5 ms, shorter than a scheduler time slice. */
const MEASURE_SLICE = 100;

export class PluginHarness<Config = unknown, State = unknown> {
  readonly plugin: Plugin<Config, State>;
  /** the plugin's config, as parsed (reconfigure() gives it a new one) */
  config: Config;
  readonly topology: Topology;
  readonly shared: Record<string, ArrayBufferLike>;
  readonly state: State;
  /** the time a batch is run at (batch.now, ms since the epoch): the clock's, unless a test sets its own */
  clock: () => number = () => performance.timeOrigin + performance.now();
  private readonly pool = PacketPool.standalone(256);
  private readonly batch = new Batch(this.pool);
  private readonly dropReasons: string[];
  private readonly counterNames: string[];
  /** per port: drops by reason name */
  private readonly tallies: Map<string, number>[];
  /** per port: the plugin's counters */
  private readonly counterValues: Float64Array;

  /**
   * A harness for a plugin that has a prepare() (it runs here, its jobs in this thread);
   * with `shareWith`, the other harness's prepared memory is used as it is.
   */
  static async create<C, S>(plugin: Plugin<C, S>, options: HarnessOptions): Promise<PluginHarness<C, S>> {
    const config = plugin.parseConfig ? plugin.parseConfig(options.config ?? {}) : (undefined as C);
    const topology = topologyOf(options);
    const shared = options.shareWith?.shared ?? allocate(plugin.sharedMemory?.(config, topology) ?? {});
    const learned = new LearnedRouteList(options.learnedRoutes);
    if (options.shareWith === undefined && plugin.prepare) Object.assign(shared, (await plugin.prepare(setupOf(config, topology, shared, learned))) ?? {});
    const h = new PluginHarness(plugin, { ...options, shareWith: { shared } as PluginHarness<unknown, unknown> }, true);
    h.learned = learned;
    return h;
  }

  /** The routes the route sources hold, as the plugin reads them (learnRoutes changes them). */
  learned = new LearnedRouteList();

  /**
   * The route sources now hold `routes` (and no others): the plugin is told which prefixes
   * changed (Plugin.routesLearned), as the supervisor tells it, and the state takes the
   * tables it built anew, if it did (Plugin.tablesChanged). Returns the prefixes told.
   */
  async learnRoutes(routes: readonly LearnedRoute[]): Promise<string[]> {
    const prefixes = this.learned.set(routes);
    if (this.plugin.routesLearned === undefined || prefixes.length === 0) return prefixes;
    const more = await this.plugin.routesLearned(setupOf(this.config, this.topology, this.shared, this.learned), new Set(prefixes));
    if (more !== undefined && Object.entries(more).some(([name, buffer]) => this.shared[name] !== buffer)) {
      Object.assign(this.shared, more);
      this.plugin.tablesChanged?.(this.state, { config: this.config, shared: this.shared });
    }
    return prefixes;
  }

  constructor(plugin: Plugin<Config, State>, options: HarnessOptions, prepared = false) {
    if (plugin.prepare && !prepared && options.shareWith === undefined) throw new Error(`${plugin.name} has a prepare(): use PluginHarness.create()`);
    this.plugin = plugin;
    this.config = plugin.parseConfig ? plugin.parseConfig(options.config ?? {}) : (undefined as Config);
    this.topology = topologyOf(options);
    const { ports, bridges, bridgeSettings, pmdCount } = this.topology;
    this.shared = options.shareWith?.shared ?? allocate(plugin.sharedMemory?.(this.config, this.topology) ?? {});
    this.dropReasons = [PLUGIN_ERROR, ...(plugin.dropReasons ?? []).map(([n]) => n)];
    this.counterNames = (plugin.counters ?? []).map(([n]) => n);
    this.tallies = ports.map(() => new Map());
    this.counterValues = new Float64Array(ports.length * this.counterNames.length);
    const find = (names: string[], name: string, kind: string) => {
      const i = names.indexOf(name);
      if (i < 0) throw new Error(`plugin ${plugin.name} has no ${kind} "${name}"`);
      return i;
    };
    const ctx: PluginContext<Config> = {
      config: this.config,
      pmd: options.pmd ?? 0,
      pmdCount,
      ports,
      bridges,
      bridgeSettings,
      previous: options.previous === undefined ? null : topologyOf(options.previous),
      shared: this.shared,
      log: { info() {}, warn() {} },
      // Codes as in a PMD: after the core drop reasons (one of them is EGRESS_UNDECIDED's).
      dropCode: (reason) => DROP_REASONS.length + find(this.dropReasons, reason, 'drop reason'),
      counterId: (counter) => find(this.counterNames, counter, 'counter'),
      // A typed array, as in a PMD: measure() times the plugin, not this harness.
      count: (port, counter, n) => {
        this.counterValues[port * this.counterNames.length + counter] += n;
      },
      wantBatch: (port) => {
        if (Number.isInteger(port) && port >= 0 && port < ports.length) this.wantedBatches.add(port);
      },
      portUp: (port) => !this.portsDown.has(port),
    };
    this.state = plugin.createState(ctx);
  }

  /** the ports PluginContext.portUp says are down (none unless a test says so: setPortUp) */
  private readonly portsDown = new Set<number>();

  /** Port `name` is up (a frontend connected) or down, as PluginContext.portUp tells the plugin. */
  setPortUp(name: string, up: boolean): void {
    if (up) this.portsDown.delete(this.portIndex(name));
    else this.portsDown.add(this.portIndex(name));
  }

  /** the ports whose batch the plugin asked for (PluginContext.wantBatch), run after the batch that asked */
  private readonly wantedBatches = new Set<number>();

  /**
   * Runs one batch of frames received on port `ingress` (a name) through the plugin, then
   * the batches it asked for meanwhile (wantBatch), as a PMD does at the end of its round:
   * their packets follow in the outcomes (`received` false, `from` their port).
   */
  run(ingress: string, frames: readonly Uint8Array[]): Outcome[] {
    const out = this.runBatch(this.portIndex(ingress), frames);
    for (let rounds = 0; this.wantedBatches.size > 0 && rounds < 4; rounds++) out.push(...this.runWanted());
    return out;
  }

  /** Asks nothing: runs the batches the plugin wanted since (betweenBursts() may ask for some). */
  runWanted(): Outcome[] {
    const out: Outcome[] = [];
    const wanted = [...this.wantedBatches];
    this.wantedBatches.clear();
    for (const port of wanted) out.push(...this.runBatch(port, []));
    return out;
  }

  private runBatch(port: number, frames: readonly Uint8Array[]): Outcome[] {
    const batch = this.batch;
    if (frames.length > BATCH_MAX / 2) throw new RangeError(`a burst has at most ${BATCH_MAX / 2} frames`);
    frames.forEach((f, i) => {
      const h = this.pool.alloc();
      batch.handles[i] = h;
      this.pool.data.set(f, this.pool.frameOffset(h));
      this.pool.length[h] = f.length;
    });
    batch.begin(port, frames.length);
    batch.now = this.clock();
    this.plugin.process(batch, this.state);
    const out: Outcome[] = [];
    for (let i = 0; i < batch.count; i++) {
      const e = batch.egress[i];
      const frame = batch.data.slice(batch.offset(i), batch.offset(i) + batch.length(i));
      const o: Outcome = { to: '', frame, mark: batch.mark[i], received: i < frames.length, from: this.topology.ports[port]?.name ?? `port ${port}`, local: batch.local[i] === 1 };
      if (e >= 0) o.to = this.topology.ports[e]?.name ?? `port ${e}`;
      else if (e === EGRESS_FLOOD) o.to = 'flood';
      else if (e === EGRESS_UNDECIDED) o.to = 'undecided';
      else if (e === EGRESS_CONSUMED) o.to = 'consumed';
      else {
        o.to = 'drop';
        const code = EGRESS_DROP - e;
        o.reason = code < DROP_REASONS.length ? DROP_REASONS[code][0] : (this.dropReasons[code - DROP_REASONS.length] ?? `code ${code}`);
        this.add(port, o.reason, 1);
      }
      out.push(o);
      this.pool.free(batch.handles[i]);
    }
    return out;
  }

  /**
   * Times process() on one burst of frames, restored before each pass (the restoring is
   * timed apart and taken off): nanoseconds per packet. `passes` x `rounds` passes are
   * timed in short slices, with and without the plugin in turn, and the fastest slice of
   * each kind counts: on a shared machine a long run is rarely free of preemption, a short
   * slice often is (a best-of-5 over long runs varied from 46 to 83 ns for the same stage).
   */
  measure(ingress: string, frames: readonly Uint8Array[], passes = 20000, rounds = 5): number {
    const port = this.portIndex(ingress);
    const batch = this.batch;
    const n = frames.length;
    const handles = frames.map((f) => {
      const h = this.pool.alloc();
      this.pool.data.set(f, this.pool.frameOffset(h));
      return h;
    });
    const restore = () => {
      for (let i = 0; i < n; i++) {
        batch.handles[i] = handles[i];
        this.pool.data.set(frames[i], this.pool.frameOffset(handles[i]));
        this.pool.length[handles[i]] = frames[i].length;
      }
      batch.begin(port, n);
      batch.now = performance.timeOrigin + performance.now();
    };
    const slice = Math.min(passes, MEASURE_SLICE);
    const run = (withPlugin: boolean) => {
      const t0 = performance.now();
      for (let p = 0; p < slice; p++) {
        restore();
        if (!withPlugin) continue;
        this.plugin.process(batch, this.state);
        this.plugin.betweenBursts?.(this.state);
        for (let i = n; i < batch.count; i++) this.pool.free(batch.handles[i]);
      }
      return performance.now() - t0;
    };
    let bestWith = Infinity;
    let bestWithout = Infinity;
    const slices = Math.max(1, Math.round((passes * rounds) / slice));
    for (let s = 0; s < slices; s++) {
      bestWith = Math.min(bestWith, run(true));
      bestWithout = Math.min(bestWithout, run(false));
    }
    for (const h of handles) this.pool.free(h);
    return ((bestWith - bestWithout) * 1e6) / (slice * n);
  }

  /** Once per poll round in a PMD. */
  betweenBursts(): void {
    this.plugin.betweenBursts?.(this.state);
  }

  /** vrouter stops (Plugin.stopping): what the plugin then sends comes from runWanted(). */
  stopping(): void {
    this.plugin.stopping?.(this.state);
  }

  /** The PMD is replaced by one on the ports `next` (Plugin.leaving): what the plugin then sends comes from runWanted(). */
  leaving(next: HarnessPort[], bridgeSettings?: Record<string, Record<string, unknown>>): void {
    this.plugin.leaving?.(this.state, topologyOf({ ports: next, bridgeSettings }));
  }

  /** A port's counters and drops (by reason) so far, by name; absent ones are 0. */
  counts(port: string): Record<string, number> {
    const p = this.portIndex(port);
    const counters = this.counterNames.map((name, c) => [name, this.counterValues[p * this.counterNames.length + c]] as const).filter(([, v]) => v !== 0);
    return { ...Object.fromEntries(counters), ...Object.fromEntries(this.tallies[p]) };
  }

  /**
   * Applies a new config of the plugin as a reload does: prepare() on the regions it
   * declares, those of the same name and size kept from before (setup.fresh() says which
   * are new), then tablesChanged().
   */
  async reconfigure(raw: Record<string, unknown>): Promise<void> {
    const config = this.plugin.parseConfig ? this.plugin.parseConfig(raw) : (undefined as Config);
    const declared = this.plugin.sharedMemory?.(config, this.topology) ?? {};
    const kept = (name: string) => this.shared[name]?.byteLength === declared[name];
    const regions: Record<string, ArrayBufferLike> = Object.fromEntries(Object.keys(declared).map((name) => [name, kept(name) ? this.shared[name] : new SharedArrayBuffer(declared[name])]));
    const setup = { ...setupOf(config, this.topology, regions, this.learned), fresh: (name: string) => !kept(name) };
    Object.assign(regions, (await this.plugin.prepare?.(setup)) ?? {});
    for (const name of Object.keys(this.shared)) delete this.shared[name];
    Object.assign(this.shared, regions);
    this.config = config;
    this.plugin.tablesChanged?.(this.state, { config, shared: this.shared });
  }

  private portIndex(name: string): number {
    const i = this.topology.ports.findIndex((p) => p.name === name);
    if (i < 0) throw new Error(`no port ${name}`);
    return i;
  }

  private add(port: number, name: string, n: number): void {
    const t = this.tallies[port];
    t.set(name, (t.get(name) ?? 0) + n);
  }
}

function topologyOf(options: HarnessOptions): Topology {
  const ports: PortInfo[] = options.ports.map((p, index) => ({ index, name: p.name, bridge: p.bridge ?? null, settings: { name: p.name, bridge: p.bridge ?? null, ...p.settings } }));
  const bridges = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const bridgeSettings = Object.fromEntries(bridges.map((b) => [b, options.bridgeSettings?.[b] ?? {}]));
  return { ports, bridges, bridgeSettings, pmdCount: options.pmdCount ?? 1 };
}

function allocate(sizes: Record<string, number>): Record<string, ArrayBufferLike> {
  return Object.fromEntries(Object.entries(sizes).map(([k, n]) => [k, new SharedArrayBuffer(n)]));
}

/** What prepare() and routesLearned() get here: jobs run in this thread. */
function setupOf<C>(config: C, topology: Topology, shared: Record<string, ArrayBufferLike>, learnedRoutes: LearnedRoutes): PluginSetup<C> {
  const runJob = async <T>(module: string | URL, input: unknown) => ((await import(String(module))) as { default: (i: unknown) => T }).default(input);
  return { config, topology, shared, fresh: () => true, log: { info() {}, warn() {} }, runJob, learnedRoutes };
}
