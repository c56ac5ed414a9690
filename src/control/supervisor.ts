// The supervisor (main thread): turns the config into actors (the vhost control thread
// here, the data-plane process and its PMD threads, a spare of it), wires them together,
// starts again whatever dies, and answers signals: SIGTERM/SIGINT stop everything cleanly
// (sockets removed), SIGUSR1 prints the port counters, SIGHUP reloads.
import { Worker } from 'node:worker_threads';
import { pack, unpack } from '../sys/msgpack.ts';
import { createLog } from '../log.ts';
import { clearPortCounters, DROP_REASONS, movePluginCounters, pmdCounters, readPmdStats, readPortStats, type PmdTotals } from '../dataplane/counters.ts';
import { LOAD_BUSY_MS, LOAD_BUSY_ROUNDS, LOAD_FIELDS, LOAD_PACKETS } from '../dataplane/pmd.ts';
import type { CaptureMemory } from '../dataplane/capture.ts';
import type { TablesUpdate } from '../pipeline/pmd-thread.ts';
import type { PmdSpawnData } from '../dataplane/process-link.ts';
import { ARENA_BYTES, createArena, releaseShared } from '../sys/shared-arena.ts';
import { DataplaneProcess, NOT_STARTED } from './dataplane-process.ts';
import { collectGarbageSoon } from '../pipeline/collect.ts';
import { importPlugin, planPlugins, type PluginPlan, type PluginSpec } from '../pipeline/loader.ts';
import { NO_LEARNED_ROUTES, type LearnedRoutes, type Topology } from '../pipeline/api.ts';
import { closeJobs } from '../pipeline/jobs.ts';
import { allocatePluginMemory, learnRoutes, preparePlugins, type PluginMemory } from '../pipeline/shared-memory.ts';
import { setThreadNice, threadCpus } from '../sys/libc.ts';
import { keepThreadsToCpus, setV8WorkersNice } from '../sys/process-threads.ts';
import { cpus } from 'node:os';
import type { ControlEnvelope, ControlEvent, ControlRequest, ControlThreadData } from '../vhost/control-thread.ts';
import type { PortState } from '../vhost/port-endpoint.ts';
import { DOORBELL_SERVING, DOORBELL_STAGE, DOORBELL_TABLES_SEEN } from '../vhost/dataplane-link.ts';
import { PmdWatchdog, WATCHDOG_MS } from './pmd-watchdog.ts';
import { dirname, resolve } from 'node:path';
import { parseConfig, readConfigFile, topologyOf, type VrouterConfig } from './config.ts';
import { configDiff, mergeChanges, type ConfigChange } from './config-diff.ts';
import { fileDigest, sameConfig, structuralChange } from './reload.ts';
import { dataplaneLayout, pmdConfigsOf, type DataplaneLayout } from './dataplane-layout.ts';
import { endpointOf, portChange, type PortChange } from './port-change.ts';
import { assignSlots, type PortSlots } from './port-slots.ts';
import { CONTROL_WORDS } from '../dataplane/capture.ts';
import { RouteSources, type LearnedChange, type RouteSourceStatus } from './route-sources.ts';
import { LearnedApply } from './learned-apply.ts';
import { monotonicMs } from '../sys/monotonic.ts';
import { describePause, type UpgradeResult } from './upgrade-pause.ts';
import { CommitConfirmed } from './commit-confirmed.ts';
import { replaceFileDurably } from './durable-file.ts';
import { DataplaneDeaths, RESTART_WINDOW_MS } from './dataplane-deaths.ts';

const log = createLog('supervisor');

/** A change a running vrouter cannot make: the field, and that it needs a restart. */
export class NeedsRestart extends Error {
  readonly code = 'VR_NEEDS_RESTART';
  readonly field: string;
  constructor(field: string) {
    super(`${field}: changing it needs a restart of vrouter`);
    this.field = field;
  }
}

/** What an apply did, or would do (a dry run): how, to which plugins, and the diff. */
export interface ApplyResult {
  /** none: nothing to do; live: the PMDs switch tables; restart: the PMDs restart on new plugin versions or a new layout of ports and queues */
  mode: 'none' | 'live' | 'restart';
  plugins: string[];
  diff: ConfigChange[];
}
const SHUTDOWN_TIMEOUT_MS = 5000;
/** Workers start from the same kind of file as this one: .ts sources or the built .js. */
const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const MAX_RESTARTS = 5;
/** how long an upgrade waits for the old PMDs to stop between bursts before it kills them anyway */
const QUIESCE_TIMEOUT_MS = 500;
/** a spare that failed is made again this much later */
const SPARE_RETRY_MS = 5000;
/** how long an upgrade waits for its new data plane's death watch to start before its pause */
const DEATH_WATCH_START_WAIT_MS = 2000;
/** one whose code refused to serve this supervisor (COUNTER_LAYOUT) this much later: it refuses again until vrouter restarts, or the files on disk are put back */
const SPARE_REFUSED_RETRY_MS = 60_000;
/** How long a stuck PMD terminated may take to end before its process is killed. */
const TERMINATE_GRACE_MS = 3000;
/** How long a live change of tables waits for the PMDs to take them before it answers. */
const TABLES_TAKEN_MS = 1000;
/**
 * Changes arriving within this long of an apply of changes are applied together, after it
 * (applyEdit); one after a quiet spell is applied at once.
 */
const EDIT_WINDOW_MS = 20;
/** A data-plane process whose PMDs are loaded and wait (startSpare). */
interface Spare {
  dataplane: DataplaneProcess;
  /** its PMDs' incarnations, by PMD */
  incarnations: number[];
  /** the plugin loads its PMDs imported: a spare of older plugin files cannot take over */
  pluginLoads: number;
  loaded(pmd: number): void;
  failed(err: Error): void;
  /** resolves once every PMD loaded */
  ready: Promise<void>;
}

/** The last death of the data plane: when, of what, and how long until a new one had the queues (null: not yet). */
export interface LastDeath {
  at: string;
  how: string;
  /** ms from the death (as the supervisor saw it) to every queue handed to the new data plane */
  restartMs: number | null;
}

/** The last upgrade: when, and what it answered (the pause and its steps). */
export type LastUpgrade = UpgradeResult & { at: string };

export class Supervisor {
  private config: VrouterConfig;
  private readonly configPath: string;
  /** the config document in force, as written (the file, or what the admin endpoint applied) */
  private document: unknown;
  /** port-state requests to the control thread waiting for their answer, by id */
  private readonly stateRequests = new Map<number, (states: (PortState | null)[] | null) => void>();
  private stateRequestId = 0;
  /** the machine's CPUs, counted once: os.cpus() reads /proc and /sys each time, and an apply needs the count */
  private readonly cpuCount = cpus().length;
  /** when the last apply of changes (applyEdits) ended */
  private editsAppliedAt = -Infinity;
  /** changes waiting for their turn, applied together (applyEdit) */
  private readonly pendingEdits: { edit: (document: Record<string, unknown>) => void; source: string; changes?: () => ConfigChange[]; resolve: (r: ApplyResult) => void; reject: (err: unknown) => void }[] = [];
  /** applies run one after the other */
  private applying: Promise<unknown> = Promise.resolve();
  /** PUT /config?confirm=S: its steps take their turns among the applies */
  private readonly commitConfirmed = new CommitConfirmed({
    queue: (job) => this.queueApply(job),
    applyNow: (document, source, rollback) => this.applyNow(document, { source, pluginFiles: rollback === true ? false : undefined }),
    document: () => this.document,
    rollbackRefused: (message) => log.error(message, 'config.refused'),
  });
  /** when what the route sources learned is applied (learned-apply.ts) */
  private readonly learnedApply = new LearnedApply({
    queue: (job) => {
      const run = this.applying.then(job);
      this.applying = run.catch((err: Error) => log.error(`learned routes not applied: ${err.message}`, 'routes.refused'));
    },
    applyConfig: () => this.applyNow(this.document, { source: 'route sources', pluginFiles: false }).then(() => undefined),
    applyRoutes: () => this.applyLearnedRoutes(),
    retakeAll: () => this.routeSources?.retakeAll(),
    stopping: () => this.stopping,
  });
  private routeSources: RouteSources | null = null;
  /** each plugin's entry file as loaded: a reload restarts the PMDs only if one changed */
  private readonly digests = new Map<string, string>();
  private readonly layout: DataplaneLayout;
  /** which port holds each slot of the data plane (null: free) */
  private slots: PortSlots;
  /** requests to the control thread waiting for their 'done', by id */
  private readonly controlRequests = new Map<number, (done: ControlDone) => void>();
  private controlRequestId = 0;
  /** while the PMDs are restarted on a new layout: those still to exit, and what to call when none is left */
  private relayout: { exiting: Set<number>; allExited: () => void } | null = null;
  /** each PMD's doorbell: heartbeat, stage and port served, read by the watchdog and after a crash */
  private readonly doorbells: Int32Array[];
  private readonly pmdCount: number;
  /** the shared memory's fd, handed to each data-plane process */
  private readonly arenaFd: number;
  /** the data-plane process that runs the PMDs; null while one is being started */
  private dataplane: DataplaneProcess | null = null;
  /** PMD starts and stops on every PMD at once (a new layout, a new data plane) run one at a time */
  private lifecycle: Promise<unknown> = Promise.resolve();
  /** the last upgrade asked for, settled once it is done or refused: a stop waits for it */
  private upgrades: Promise<unknown> = Promise.resolve();
  /** the data plane's recent deaths: the wait before the next, crash loops */
  private readonly dataplaneDeaths = new DataplaneDeaths();
  /** what GET /dataplane shows: deaths and upgrades since start, the last death */
  private dataplaneHistory = { deaths: 0, upgrades: 0, lastDeath: null as LastDeath | null, lastUpgrade: null as LastUpgrade | null };
  /** since the last data plane died: the ports to quarantine at the hand-over to the next (crash loops) */
  private died: { culprits: { port: number; error: string }[] } | null = null;
  /** a data-plane process loaded and waiting, to take over (pmd.spare) */
  private spare: Spare | null = null;
  private spareTimer: NodeJS.Timeout | null = null;
  /** the nice value the control threads got (control.nice), 0 if they could not */
  private controlNice = 0;
  /** per PMD: which start of it runs; messages about another are stale */
  private readonly incarnations: number[] = [];
  private nextIncarnation = 1;
  /** counts the plugin table changes; each PMD says which it uses (DOORBELL_TABLES_SEEN) */
  private tablesGeneration = 0;
  /** regions of plugin tables replaced: freed once every PMD uses a later generation */
  private readonly retired: { buffers: ArrayBufferLike[]; generation: number }[] = [];
  /** when each PMD restart happened: too many too fast means a bug, not bad luck */
  private readonly restarts: number[] = [];
  /** per PMD: the error it died of, if it did */
  private readonly crashes: (string | null)[] = [];
  private readonly pmdWatchdog: PmdWatchdog;
  /** plugins taken out of restarted PMDs after they hung one */
  private readonly takenOut: string[] = [];
  private watchdog: NodeJS.Timeout | null = null;
  private control: Worker | null = null;
  private stopping = false;
  /** stop() was called: no change or upgrade is taken from then on */
  private closing = false;
  /** the data plane started with vrouter got ready: a death from then on is restarted from */
  private firstReady = false;

  /** the stages of the pipeline, loaded and validated (planPlugins) */
  private plugins: PluginPlan[];
  /** the module version of the plugin files in use (0: as loaded at start; see pluginLoadAttempts) */
  private pluginLoads = 0;
  /** module versions given to loads of changed plugin files so far (pluginLoads: the one in use) */
  private pluginLoadAttempts = 0;
  /** PMDs terminated to take new plugins: not crashes, not counted as such */
  private readonly reloading = new Set<number>();
  /** by PMD, what it counted for ports whose slots were since cleared for new ones (readPmdStats) */
  private readonly retiredPmdTotals: PmdTotals[];
  /** by PMD, the plugins whose slots it counts in (carryPluginCounters) */
  private readonly countedWith: (readonly PluginPlan[])[];
  private topology: Topology;
  /** while the PMDs start on a new layout: the topology of those they replace (PluginContext.previous) */
  private previousTopology: Topology | null = null;
  /** the plugins' shared memory: kept here, so that restarted PMDs find it */
  private pluginMemory: PluginMemory;

  constructor(config: VrouterConfig, plugins: PluginPlan[], configPath: string, document: unknown) {
    this.config = config;
    this.configPath = configPath;
    this.document = document;
    for (const p of plugins) this.digests.set(p.name, fileDigest(p.path));
    this.plugins = plugins;
    this.slots = assignSlots([], config.ports);
    this.topology = topologyOf(config, this.slots);
    // First: every shared buffer made from now on is a region of it.
    this.arenaFd = createArena();
    this.pluginMemory = allocatePluginMemory(plugins);
    this.layout = dataplaneLayout(config);
    this.pmdCount = config.pmd.cores.length;
    this.retiredPmdTotals = Array.from({ length: this.pmdCount }, () => ({ rx_packets: 0, tx_packets: 0 }));
    this.countedWith = Array.from({ length: this.pmdCount }, () => plugins);
    this.doorbells = this.layout.shared.wakers.map((w) => new Int32Array(w.doorbell));
    this.pmdWatchdog = new PmdWatchdog(this.doorbells, {
      pmdIds: () => this.layout.pmds.map(({ id }) => id),
      running: () => this.dataplane !== null,
      dataplanePid: () => this.dataplane?.pid,
      portName: (slot) => this.slots[slot] ?? null,
      stuck: (id, how) => this.pmdStuck(id, how),
      quarantine: (port, why) => this.control?.postMessage({ msg: pack({ t: 'quarantine', port, why } satisfies ControlRequest) }),
    });
  }

  /**
   * Before PMD `id` starts on the plugins in force: its plugin counters moved to the slots
   * these give them, if the plugins it last counted with had them elsewhere (a plugin file
   * reloaded with other drop reasons or counters). Its last incarnation has exited.
   */
  private carryPluginCounters(id: number): void {
    const before = this.countedWith[id];
    if (before === this.plugins) return;
    this.countedWith[id] = this.plugins;
    const same = (a: PluginPlan, b: PluginPlan) => a.name === b.name && a.slot === b.slot && sameConfig(a.dropReasons, b.dropReasons) && sameConfig(a.counters, b.counters);
    if (before.length === this.plugins.length && before.every((p, k) => same(p, this.plugins[k]))) return;
    movePluginCounters(pmdCounters(this.layout.shared.counters, id), before, this.plugins);
  }

  /** Starts every actor; resolves once all sockets listen. */
  async start(): Promise<void> {
    const startCpus = threadCpus();
    this.keepOffPmdCpus();
    // Before any thread or process is started: they inherit it.
    this.setControlNice();
    await preparePlugins(this.plugins, this.pluginMemory, this.topology, undefined, this.learnedRoutes);
    const started = this.startDataplane();
    // No PMD polls yet: the spare loads beside the data plane on every CPU vrouter was given
    // (the PMDs' too), rather than after it on the control CPUs alone.
    this.keepSpare(0, startCpus);
    // The control thread loads beside them too, and opens the ports once the data plane runs.
    const data: ControlThreadData = {
      endpoints: this.config.ports.flatMap((p, index) => endpointOf(p, index) ?? []),
      queueOwner: this.layout.queueOwner,
    };
    const control = new Worker(new URL(`../vhost/control-thread${MODULE_EXT}`, import.meta.url), { workerData: data, name: 'vhost-ctl' });
    this.control = control;
    control.on('error', (err) => this.actorDied('vhost control', err));
    const first = new Promise<ControlEvent>((resolve) => {
      control.on('message', (m: Uint8Array) => {
        const event = unpack(m) as ControlEvent;
        if (event.t === 'log') process.stderr.write(event.line);
        else if (event.t === 'ready' || event.t === 'fatal') resolve(event);
        else if (event.t === 'port-states') this.stateRequests.get(event.id)?.(event.states);
        else if (event.t === 'done') this.controlRequests.get(event.id)?.(event);
      });
    });
    // A failed start's stop() tells the control thread to stop instead of beginning.
    const { commandsFd } = await started;
    this.firstReady = true;
    for (const pmd of this.layout.pmds) this.spawnPmd(pmd.id, false);
    control.postMessage({ msg: pack({ t: 'begin', commandsFd, incarnations: this.incarnations } satisfies ControlRequest) });
    const outcome = await first;
    if (outcome.t === 'fatal') {
      await this.terminateAll();
      // Ended: a stop() after this failed start has no control thread to wait for.
      this.control = null;
      throw new Error(outcome.error);
    }
    control.on('exit', (code) => this.actorDied('vhost control', new Error(`exited with code ${code}`)));
    // Ready once the PMDs poll too (at nice 0, where each puts itself once loaded), as the
    // ports listen: the control thread, which loads beside the data plane now, is often first.
    await this.pmdsStarted();
    this.watchdog = setInterval(() => (this.release(), this.pmdWatchdog.check()), WATCHDOG_MS).unref();
    this.keepSpare();
    // After the ports: a mirror's namespace exists once its port is open.
    this.routeSources = new RouteSources((change) => this.learnedApply.changed(change), log);
    this.routeSources.configure(this.config);
    const cpus = this.config.pmd.cores.join(', ');
    log.info(`ready: ${this.config.ports.length} port(s), ${this.pmdCount} PMD(s) on CPU ${cpus} in the data-plane process (pid ${this.dataplane?.pid})`, 'vrouter.ready', { ports: this.config.ports.length, pmds: this.pmdCount });
  }

  /**
   * The supervisor's threads (V8's and libuv's, born before this code ran, too), and those
   * started after (the control thread, the job pool), run on the CPUs the PMDs leave free, as
   * OVS-DPDK keeps its own threads to dpdk-lcore-mask: a route compile or a collection of the
   * supervisor's heap must not take a PMD's CPU. Each PMD pins itself.
   */
  private keepOffPmdCpus(): void {
    const free = Array.from({ length: cpus().length }, (_, cpu) => cpu).filter((cpu) => !this.config.pmd.cores.includes(cpu));
    if (free.length === 0) return;
    try {
      const failed = keepThreadsToCpus(free);
      if (failed.length > 0) throw new Error(failed.join('; '));
      log.info(`control threads on CPU ${free.join(', ')}, PMDs on CPU ${this.config.pmd.cores.join(', ')}`);
    } catch (err) {
      log.warn(`control threads not kept off the PMDs' CPUs: ${(err as Error).message}`);
    }
  }

  /**
   * The supervisor's nice value (control.nice), which the control thread inherits. The job
   * pool, the PMDs and a data-plane process while it loads run at 0 (bulk work, or a poller
   * on its own CPU); a data plane's main thread takes control.nice once it serves queues.
   * On a CPU shared with other work, a hand-over of queues (a death, an upgrade) is a chain
   * of wake-ups across these threads, each of which would otherwise wait its turn behind it.
   */
  private setControlNice(): void {
    const nice = this.config.control.nice;
    try {
      setThreadNice(nice);
      this.controlNice = nice;
      log.info(`control threads at nice ${nice}, PMDs at 0`);
    } catch (err) {
      log.warn(`control threads not at nice ${nice} (control.nice; below 0 needs root or CAP_SYS_NICE): ${(err as Error).message}`);
    }
  }

  /**
   * Starts a data-plane process and waits until it mapped the shared memory (its
   * commandsFd is this process's end of its command socket, for the control thread); its
   * death is watched from then on.
   */
  private async startDataplane(): Promise<DataplaneProcess> {
    const dataplane = this.createDataplane();
    this.dataplane = dataplane;
    dataplane.watchForDeath();
    try {
      await dataplane.ready();
    } catch (err) {
      // Its command socket never goes to the control thread.
      dataplane.closeCommands();
      throw err;
    }
    return dataplane;
  }

  /**
   * A data-plane process. Its events count while it is the one in use; as the spare, an
   * error or an exit of one of its PMDs, or its death, only costs the spare (made again).
   */
  private createDataplane(spare = false, loadCpus: readonly number[] | null = null): DataplaneProcess {
    const dataplane: DataplaneProcess = new DataplaneProcess(this.arenaFd, ARENA_BYTES, this.config.control.nice, {
      pmdError: (id, incarnation, error) => {
        if (this.spare?.dataplane === dataplane) return this.spareFailed(`pmd${id} failed: ${error.split('\n')[0]}`);
        if (this.dataplane !== dataplane || this.incarnations[id] !== incarnation) return;
        log.error(`pmd${id} crashed: ${error}`, 'pmd.crashed', { pmd: id });
        this.crashes[id] = error.split('\n')[0];
      },
      pmdExit: (id, incarnation, code) => {
        if (this.spare?.dataplane === dataplane) return this.spareFailed(`pmd${id} exited with code ${code}`);
        if (this.incarnations[id] === incarnation && this.dataplane === dataplane) this.pmdExited(id, code);
      },
      pmdStandby: (id, incarnation, refused) => {
        if (this.spare?.dataplane !== dataplane || this.spare.incarnations[id] !== incarnation) return;
        // Its code on disk is another vrouter's: it refuses again until vrouter restarts, tried seldom.
        if (refused !== null) this.spareFailed(`pmd${id} refused to serve: ${refused}`, SPARE_REFUSED_RETRY_MS);
        else this.spare.loaded(id);
      },
      died: (code, signal) => {
        if (this.spare?.dataplane === dataplane) this.spareFailed(`it died (${signal ?? `exit code ${code}`})`);
        // The first, dead before it was ready, fails vrouter's start (its ready() rejects): no restart.
        else if (!this.firstReady && !dataplane.wasReady) return;
        else this.dataplaneDied(dataplane, code, signal);
      },
    }, spare, loadCpus);
    return dataplane;
  }

  /**
   * What PMD `id` is started with: the layout, plugins and tables as they are now. It waits
   * for its queues (waitForQueues) unless the data plane is starting, before any frontend.
   */
  private spawnData(id: number, waitForQueues = true): PmdSpawnData {
    return {
      config: this.layout.pmds[id],
      shared: this.layout.shared,
      // Each plugin with what the PMDs need of its config (Plugin.pmdConfig).
      plugins: this.plugins.map((p) => ({ ...p, config: p.pmdConfig })),
      takenOut: this.takenOut,
      topology: this.topology,
      previous: this.previousTopology,
      pluginMemory: this.pluginMemory,
      capture: this.layout.capture,
      tablesGeneration: this.tablesGeneration,
      waitForQueues,
    };
  }

  /** Watches PMD `id` from its first poll round on, and its start (loading plugins may take a while) for START_STUCK_MS. */
  private watchFromStart(id: number): void {
    this.crashes[id] = null;
    this.pmdWatchdog.watchFromStart(id);
    // Until it builds a stage, a hang is not a plugin's: the word may hold a stage of the incarnation before.
    this.doorbells[id][DOORBELL_STAGE] = -1;
  }

  /** Starts PMD `id` in the data-plane process in use, as a new incarnation of it. */
  private spawnPmd(id: number, waitForQueues = true): void {
    this.carryPluginCounters(id);
    const incarnation = this.nextIncarnation++;
    this.incarnations[id] = incarnation;
    this.watchFromStart(id);
    this.dataplane?.spawnPmd(id, incarnation, this.spawnData(id, waitForQueues));
  }

  /**
   * Starts a spare: a data-plane process from the code on disk that maps the shared memory
   * and loads its PMDs (plugins imported), which then wait without touching anything.
   * Resolves once all have loaded; rejects if it failed (it is then gone). `loadCpus`: where
   * it loads, when not on the control CPUs (DataplaneProcess).
   */
  private startSpare(loadCpus: readonly number[] | null = null): Promise<Spare> {
    const dataplane = this.createDataplane(true, loadCpus);
    let loadedAll!: () => void;
    let failed!: (err: Error) => void;
    const loaded = new Promise<void>((resolve, reject) => ((loadedAll = resolve), (failed = reject)));
    const waiting = new Set(this.layout.pmds.map(({ id }) => id));
    const timer = setTimeout(() => this.spareFailed(`its PMDs did not load within ${SHUTDOWN_TIMEOUT_MS} ms`), SHUTDOWN_TIMEOUT_MS);
    const spare: Spare = {
      dataplane,
      incarnations: this.layout.pmds.map(() => this.nextIncarnation++),
      pluginLoads: this.pluginLoads,
      loaded: (id) => {
        waiting.delete(id);
        if (waiting.size > 0) return;
        clearTimeout(timer);
        // Watched from now on, before it may serve; not while it loads, on the same CPUs.
        dataplane.watchForDeath();
        log.info(`a spare data plane (pid ${dataplane.pid}) is loaded and waits to take over`, 'dataplane.spare', { pid: dataplane.pid });
        loadedAll();
      },
      failed: (err) => (clearTimeout(timer), failed(err)),
      ready: loaded,
    };
    this.spare = spare;
    void dataplane
      .ready()
      .then(() => this.layout.pmds.forEach(({ id }) => dataplane.spawnPmd(id, spare.incarnations[id], this.spawnData(id), true)))
      // A spare replaced meanwhile (by an upgrade, new plugin files) is gone already: its
      // failure is its own, never the next spare's.
      // One that refused (its code on disk is another vrouter's) refuses again until vrouter restarts: tried seldom.
      .catch((err: Error & { refused?: boolean }) => (this.spare === spare ? this.spareFailed(err.message, err.refused === true ? SPARE_REFUSED_RETRY_MS : SPARE_RETRY_MS) : spare.failed(err)));
    return loaded.then(() => spare);
  }

  /** The spare cannot serve: it is killed (and, if spares are wanted, made again later). */
  private spareFailed(why: string, retryMs = SPARE_RETRY_MS): void {
    const spare = this.spare;
    if (spare === null) return;
    this.spare = null;
    // Stopping kills it: nothing to report then.
    if (!this.stopping) log.warn(`the spare data plane (pid ${spare.dataplane.pid}) is dropped: ${why}`);
    spare.failed(new Error(why));
    void spare.dataplane.discard();
    this.keepSpare(retryMs);
  }

  /** Makes sure a spare is loaded or loading (pmd.spare), `delayMs` from now; `loadCpus` as startSpare's. */
  private keepSpare(delayMs = 0, loadCpus: readonly number[] | null = null): void {
    if (!this.config.pmd.spare || this.stopping || this.spareTimer !== null) return;
    this.spareTimer = setTimeout(() => {
      this.spareTimer = null;
      if (this.spare !== null || this.stopping || this.dataplane === null) return;
      try {
        this.startSpare(loadCpus).catch(() => undefined);
      } catch (err) {
        // Not even started (no file descriptor or process left): tried again later.
        log.warn(`no spare data plane started: ${(err as Error).message}`);
        this.keepSpare(SPARE_RETRY_MS);
      }
    }, delayMs);
    this.spareTimer.unref();
  }

  /** Drops the spare (its plugins are not the ones in use any more); a new one follows. */
  private replaceSpare(): void {
    const spare = this.spare;
    if (spare === null) return this.keepSpare();
    this.spare = null;
    spare.failed(new Error('replaced'));
    void spare.dataplane.discard();
    this.keepSpare();
  }

  /**
   * The spare takes over: `old`, if still running, stops its PMDs between two bursts and is
   * killed; the spare's PMDs get the layout and tables as they are now and start, and the
   * control thread hands them the queues. Returns when each step ended (monotonicMs): the
   * old PMDs stopped, the new ones told to go, the control thread's last command sent, the
   * new PMDs taking frames again.
   */
  private async promote(spare: Spare, old: DataplaneProcess | null): Promise<HandOverSteps> {
    // The control thread's part of the hand-over waits on no V8 worker starved at 0.
    this.setHandOverV8WorkersNice(this.controlNice);
    try {
      return await this.handOver(spare, old);
    } finally {
      this.setHandOverV8WorkersNice(0);
    }
  }

  /** V8's workers at `nice` for a hand-over (setV8WorkersNice), if the control threads' nice is raised at all. */
  private setHandOverV8WorkersNice(nice: number): void {
    if (this.controlNice >= 0) return;
    setV8WorkersNice(nice, (message) => log.warn(message));
  }

  private async handOver(spare: Spare, old: DataplaneProcess | null): Promise<HandOverSteps> {
    // A PMD stuck in a plugin never answers: the process is killed anyway.
    const quiesced = old === null || (await Promise.race([old.quiesce().then(() => true), sleep(QUIESCE_TIMEOUT_MS).then(() => false)]));
    const oldStoppedAt = monotonicMs();
    if (this.spare !== spare) {
      // Dropped while the old PMDs stopped (it died, a PMD of it failed, new plugin files
      // replaced it). The old PMDs wait for good: the PMDs start in a new process, cold.
      this.dataplane = null;
      await old?.kill();
      const started = await this.startPmds();
      throw Object.assign(new Error(`the spare was lost while the old PMDs stopped: a new data plane (pid ${started.pid}) runs the PMDs, forwarding paused ${Math.round(started.resumedAt - oldStoppedAt)} ms more`), { code: 'VR_UPGRADE' });
    }
    this.spare = null;
    this.dataplane = spare.dataplane;
    // Its PMDs wait for good now: it goes once the new ones have the queues (its exit, the
    // kernel unmapping all it mapped, slowed the hand-over by a fifth). One that did not
    // stop is gone before any new PMD touches a queue.
    let gone = quiesced ? undefined : old?.kill();
    await gone;
    let goAt: number;
    let handedBack: { resumedAt: number; handedAt: number };
    try {
      spare.incarnations.forEach((inc, id) => (this.incarnations[id] = inc));
      for (const { id } of this.layout.pmds) this.watchFromStart(id);
      spare.dataplane.go(this.layout.pmds.map(({ id }) => this.spawnData(id)));
      goAt = monotonicMs();
      handedBack = await this.handQueuesBack(spare.dataplane.commandsFd);
    } finally {
      gone ??= old?.kill();
    }
    await gone;
    this.keepSpare();
    return { oldStoppedAt, goAt, ...handedBack };
  }

  /**
   * Upgrade: a data-plane process started from the code now on disk takes over from the
   * running one. It maps the shared memory and loads its PMDs while the old one forwards;
   * then the old PMDs stop between two bursts, the old process is killed, the new PMDs
   * start and the control thread hands them the queues. Frontends stay connected; the
   * pause is from the old PMDs' stop to the queues' hand-over, measured.
   */
  upgrade(): Promise<UpgradeResult> {
    const run = this.inLifecycle(async () => {
      if (this.closing) throw stoppingError();
      const old = this.dataplane;
      if (old === null) throw Object.assign(new Error('the data plane is restarting: try again'), { code: 'VR_BUSY' });
      const began = performance.now();
      // A spare already loaded runs the code of its start, which may not be the code now.
      const stale = this.spare;
      this.spare = null;
      if (stale !== null) (stale.failed(new Error('replaced by an upgrade')), void stale.dataplane.discard());
      let spare: Spare;
      try {
        spare = await this.startSpare();
      } catch (err) {
        throw Object.assign(new Error(`upgrade failed, the running data plane stays: ${(err as Error).message}`), { code: 'VR_UPGRADE' });
      }
      // Its death watch started as it finished loading, just now: Node's bootstrap of that
      // thread, on the control CPUs at control.nice, is let pass before the pause rather
      // than shared with it (the hand-over's threads sat waiting behind it). Bounded: a
      // watch never started is no reason to refuse the upgrade.
      await Promise.race([spare.dataplane.watching(), sleep(DEATH_WATCH_START_WAIT_MS)]);
      // Nothing refuses the upgrade from here on: promote() ends the old PMDs either way.
      await this.tellLeaving();
      // The pause: from the old PMDs' last burst (or a moment before) to the new ones' first.
      const paused = monotonicMs();
      const steps = await this.promote(spare, old);
      const since = (at: number) => Math.round((at - paused) * 10) / 10;
      const pauseSteps = { oldStopped: since(steps.oldStoppedAt), go: since(steps.goAt), queuesSent: since(steps.handedAt) };
      const result = { pid: spare.dataplane.pid ?? 0, previousPid: old.pid ?? 0, pauseMs: since(steps.resumedAt), pauseSteps, totalMs: Math.round(performance.now() - began) };
      this.dataplaneHistory.upgrades++;
      this.dataplaneHistory.lastUpgrade = { at: new Date().toISOString(), ...result };
      log.info(`data plane upgraded: pid ${result.previousPid} -> ${result.pid}, forwarding paused ${result.pauseMs} ms (${describePause(pauseSteps)}; ${result.totalMs} ms in all)`, 'dataplane.upgraded', result);
      return result;
    });
    this.upgrades = run.catch(() => undefined);
    return run;
  }

  /**
   * The PMDs running are to be replaced on the topology they run (an upgrade, plugin files
   * loaded again): the stages are told (Plugin.leaving) and their last frames go out first,
   * as at a change of ports (the routing stage drops what it holds, counted).
   */
  private async tellLeaving(): Promise<void> {
    // Their replacement goes on whatever this says: it is what was asked for.
    await this.askControl({ t: 'leaving', id: ++this.controlRequestId, next: this.topology }).catch((err: Error) => log.warn(`the PMDs were not told they are replaced: ${err.message}`));
  }

  /** Stops PMD `id` (it exits; pmdExited follows). */
  private terminatePmd(id: number): void {
    this.dataplane?.terminatePmd(id, this.incarnations[id]);
  }

  /**
   * The data-plane process died (a crash, a signal, the OOM killer, a SIGBUS from a guest's
   * memory): the spare takes over, or a new one is started, with the same state. The
   * connections, their fds and vring positions never left this process, and tables and
   * counters are in the shared memory, so the guests see a pause, not a disconnect; their
   * queues resume where the used rings say.
   */
  private dataplaneDied(dataplane: DataplaneProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.dataplane !== dataplane) return;
    this.dataplane = null;
    // Its PMDs are gone with it: whoever waits for them to exit waits no more.
    if (this.relayout !== null) this.relayout.allExited();
    if (this.stopping) return;
    const diedAt = monotonicMs();
    const now = Date.now();
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    this.dataplaneHistory.deaths++;
    const death: LastDeath = { at: new Date(now).toISOString(), how, restartMs: null };
    this.dataplaneHistory.lastDeath = death;
    const serving = new Set(this.layout.pmds.map(({ id }) => this.doorbells[id][DOORBELL_SERVING]).filter((slot) => slot >= 0 && this.slots[slot] != null));
    const names = [...serving].map((slot) => this.slots[slot]).join(', ') || 'none';
    log.error(`the data-plane process died (${how}); ports being served: ${names}`, 'dataplane.died', { code, signal });
    this.forgetPmds();
    const { deaths, backoffMs: backoff, culprits } = this.dataplaneDeaths.record(now, serving, how, signal);
    // Whichever hand-over to a new data plane comes next looks for the culprits first.
    this.died = { culprits: [...(this.died?.culprits ?? []), ...culprits] };
    if (backoff > 0) log.warn(`${deaths} data-plane deaths within ${RESTART_WINDOW_MS / 1000} s: starting the next one in ${backoff} ms`);
    const restart = this.inLifecycle(async () => {
      await sleep(backoff);
      // A change of layout may have started one meanwhile.
      if (this.dataplane !== null || this.stopping) return;
      const spare = this.spare;
      let how: string;
      let resumedAt: number;
      if (spare !== null && spare.pluginLoads === this.pluginLoads && (await spare.ready.then(() => true, () => false)) && this.spare === spare) {
        ({ resumedAt } = await this.promote(spare, null));
        how = `the spare data plane (pid ${spare.dataplane.pid}) took over`;
      } else {
        const started = await this.startPmds();
        resumedAt = started.resumedAt;
        how = `a new data-plane process (pid ${started.pid}) runs the PMDs`;
      }
      const ms = Math.round(resumedAt - diedAt);
      death.restartMs = ms;
      log.info(`${how}, ${ms} ms after the death of the last; the guests' queues resumed`, 'dataplane.restarted', { ms });
    });
    restart.catch((err: Error) => this.restartFailed(err));
  }

  /**
   * A data plane started after a death that did not start (it died, as under the memory
   * pressure that may have ended the last, or did not answer): it is one more death, and
   * the next start follows after its backoff, as long as it takes. Anything else ends
   * vrouter.
   */
  private restartFailed(err: Error): void {
    if ((err as { code?: string }).code !== NOT_STARTED || this.stopping) return this.actorDied('the data-plane process', err);
    log.error(`${err.message}: starting another`, 'dataplane.died');
    // One that did not answer is killed: its death starts the next. One that died has.
    void this.dataplane?.kill();
  }

  /**
   * The words the dead data plane's PMDs left in their doorbells, and how the watchdog saw
   * them, are no PMD's any more: a next data plane that dies before it runs one would be
   * blamed for their ports, and one slow to start would be found stuck and killed.
   */
  private forgetPmds(): void {
    for (const { id } of this.layout.pmds) this.pmdWatchdog.forget(id);
  }

  /** The data-plane process: its pid, and how often it died or was replaced. */
  dataplaneInfo(): { pid: number | null; sparePid: number | null; deaths: number; upgrades: number; lastDeath: LastDeath | null; lastUpgrade: LastUpgrade | null } {
    return { pid: this.dataplane?.pid ?? null, sparePid: this.spare?.dataplane.pid ?? null, ...this.dataplaneHistory };
  }

  /**
   * Every PMD started, in the data plane in use or, if none runs (it died), in a new one;
   * then the control thread hands them the queues. Returns the new process's pid, if any,
   * and when the PMDs took frames again (monotonicMs).
   */
  private async startPmds(): Promise<{ pid: number | undefined; resumedAt: number }> {
    const fresh = this.dataplane === null ? await this.startDataplane() : null;
    for (const { id } of this.layout.pmds) this.spawnPmd(id);
    const { resumedAt } = await this.handQueuesBack(fresh?.commandsFd);
    if (fresh !== null) this.keepSpare();
    return { pid: fresh?.pid, resumedAt };
  }

  /**
   * The control thread gives every PMD its queues (after a change of layout, or in a new
   * data-plane process, whose command socket is `commandsFd`); after a death, it first looks
   * for the culprits (died). Resolves to when the PMDs took frames again (monotonicMs), as
   * each PMD says (the answers' way back is no pause), or to the answer's arrival; and to when
   * the control thread had sent every command.
   */
  private async handQueuesBack(commandsFd?: number): Promise<{ resumedAt: number; handedAt: number }> {
    const died = commandsFd === undefined ? undefined : (this.died ?? undefined);
    if (commandsFd !== undefined) this.died = null;
    const { resumedAt, handedAt } = await this.askControl({ t: 'layout', id: ++this.controlRequestId, queueOwner: this.layout.queueOwner, slots: [...this.slots], incarnations: this.incarnations, commandsFd, died });
    const answered = monotonicMs();
    return { resumedAt: resumedAt ?? answered, handedAt: handedAt ?? answered };
  }

  /** Runs a start or stop of every PMD after the previous one finished. */
  private inLifecycle<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lifecycle.then(fn);
    this.lifecycle = run.catch(() => undefined);
    return run;
  }

  /**
   * Let it crash: a PMD that dies is started again and the control thread gives it back
   * its queues, which resume where the used rings say; the other PMDs never stop.
   */
  private pmdExited(id: number, code: number): void {
    if (this.stopping) return;
    if (this.relayout?.exiting.delete(id)) {
      if (this.relayout.exiting.size === 0) this.relayout.allExited();
      return;
    }
    const now = Date.now();
    if (!this.reloading.delete(id)) this.restarts.push(now);
    const recent = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS).length;
    if (recent > MAX_RESTARTS) {
      this.actorDied(`pmd${id}`, new Error(`exited with code ${code}, ${recent} PMD restarts within ${RESTART_WINDOW_MS / 1000} s`));
      return;
    }
    log.warn(`pmd${id} exited with code ${code}: restarting it`, 'pmd.restarted', { pmd: id, code });
    const culprit = this.culprit(id);
    this.spawnPmd(id);
    const event: ControlRequest = { t: 'pmd-restarted', pmd: id, incarnation: this.incarnations[id], culprit };
    this.control?.postMessage({ msg: pack(event) });
  }

  /**
   * A PMD that died of an error (not one terminated on request): the port it was serving
   * then, from the word it stores before each port's work, so that a guest that can crash
   * a PMD is not handed back to it unchanged.
   */
  private culprit(id: number): { port: number; error: string } | null {
    const error = this.crashes[id];
    if (error === null) return null;
    const port = this.doorbells[id][DOORBELL_SERVING];
    return port >= 0 && port < this.slots.length && this.slots[port] !== null ? { port, error } : null;
  }

  /**
   * A PMD whose heartbeat stopped is stuck (the watchdog's): it is terminated and restarted.
   * If it was stuck in a plugin, the new PMDs run without it (bypassed or dropping, per its
   * onError), and the log says so; otherwise (a blocking call, a vrouter bug) it is simply
   * restarted.
   */
  private pmdStuck(id: number, how: string): void {
    const stage = this.config.pipeline[this.doorbells[id][DOORBELL_STAGE]];
    const plan = this.plugins.find((p) => p.name === stage);
    if (plan) {
      if (!this.takenOut.includes(plan.name)) this.takenOut.push(plan.name);
      log.error(`pmd${id} is stuck in plugin ${plan.name} (${how}): restarting it without the plugin (${plan.onError}: ${plan.onError === 'bypass' ? 'its traffic passes unprocessed' : 'its traffic is dropped as plugin_error'})`, 'pmd.stuck', { pmd: id, plugin: plan.name });
    } else {
      log.error(`pmd${id} is stuck (${how}, not in a plugin): restarting it`, 'pmd.stuck', { pmd: id });
    }
    this.terminatePmd(id);
    this.killUnlessEnded(id);
  }

  /**
   * A thread blocked in a system call (a write to an eventfd a frontend made blocking and
   * full, any call that never returns) does not end when terminated: then the data-plane
   * process is killed, and the spare takes over as after a crash.
   */
  private killUnlessEnded(id: number): void {
    const dataplane = this.dataplane;
    const incarnation = this.incarnations[id];
    setTimeout(() => {
      if (this.stopping || this.dataplane !== dataplane || dataplane === null || this.incarnations[id] !== incarnation) return;
      log.error(`pmd${id} did not end ${TERMINATE_GRACE_MS} ms after it was terminated (blocked in a system call): killing the data-plane process`, 'pmd.stuck', { pmd: id });
      void dataplane.kill();
    }, TERMINATE_GRACE_MS).unref();
  }

  /** Frees the regions of replaced tables that no PMD uses any more. */
  private release(): void {
    const using = Math.min(...this.doorbells.map((bell) => bell[DOORBELL_TABLES_SEEN]));
    while (this.retired.length > 0 && this.retired[0].generation <= using) {
      for (const buffer of this.retired.shift()!.buffers) releaseShared(buffer);
    }
  }

  /**
   * SIGHUP: reads the config file and the plugin files again and applies them (apply()).
   * A refusal is logged; what runs stays.
   */
  async reload(): Promise<void> {
    try {
      await this.reloadFile(`${this.configPath} (SIGHUP)`);
    } catch (err) {
      log.error(`not reloaded, the running config and plugins stay: ${(err as Error).message}`, 'config.refused', { field: (err as { field?: string }).field });
    }
  }

  /** Reads the config file and the plugin files again and applies them; throws if refused. */
  async reloadFile(source = this.configPath): Promise<ApplyResult> {
    const result = await this.queueApply(async () => {
      // Read in its turn: a save queued before it writes the file first.
      const { document } = readConfigFile(this.configPath);
      const applied = await this.applyNow(document, { source });
      // The file replaced the change waiting for its confirm, and what it would go back to.
      if (this.commitConfirmed.replacedByFile()) log.info(`the change waiting for its confirm is replaced by ${this.configPath}: no rollback`, 'config.reloaded', { source });
      return applied;
    });
    if (result.mode === 'none') log.info(`reloaded from ${source}: nothing changed`, 'config.reloaded', { source, mode: 'none' });
    return result;
  }

  /**
   * Writes the config in force to the config file, so that a crash or a power cut leaves the
   * old file or the new one, never a part (durable-file.ts). Returns the path written.
   */
  saveDocument(): string {
    let target: string;
    try {
      target = replaceFileDurably(this.configPath, `${JSON.stringify(this.document, null, 2)}\n`);
    } catch (err) {
      throw new Error(`the config was not saved, ${(err as Error).message}`);
    }
    log.info(`config in force written to ${target}`);
    return target;
  }

  /** The running config, as checked. */
  get running(): VrouterConfig {
    return this.config;
  }

  /** The pipeline's plugins as loaded: name, version, path, tables. */
  pluginList(): { name: string; version: string; path: string; tables: string[] }[] {
    return this.plugins.map((p) => ({ name: p.name, version: p.pluginVersion, path: p.path, tables: p.tables }));
  }

  /**
   * Each port's connection as the control thread knows it, in the order of the config's
   * ports (null if it does not answer in time).
   */
  async portStates(): Promise<(PortState | null)[] | null> {
    const control = this.control;
    if (control === null) return null;
    const id = ++this.stateRequestId;
    const answer = new Promise<(PortState | null)[] | null>((resolve) => {
      this.stateRequests.set(id, resolve);
      setTimeout(() => resolve(null), 2000).unref();
    });
    const request: ControlRequest = { t: 'port-states', id };
    control.postMessage({ msg: pack(request) });
    const states = await answer;
    this.stateRequests.delete(id);
    // A VLAN port is up and down with its parent, whose link carries its frames.
    return states === null ? null : this.config.ports.map((p) => states[this.slots.indexOf(p.parent ?? p.name)] ?? null);
  }

  /** Per port of the config: the CPU of the PMD that polls each of its queue pairs. */
  queueCpus(): Record<string, number[]> {
    const cores = this.config.pmd.cores;
    return Object.fromEntries(this.config.ports.map((p) => [p.name, (this.layout.queueOwner[this.slots.indexOf(p.name)] ?? []).map((pmd) => cores[pmd])]));
  }

  /** A request to the control thread answered with 'done': resolves, or throws its error. */
  private askControl(request: ControlRequest & { id: number }): Promise<ControlDone> {
    const control = this.control;
    if (control === null) return Promise.reject(new Error('the control thread is not running'));
    return new Promise((resolve, reject) => {
      this.controlRequests.set(request.id, (done) => {
        this.controlRequests.delete(request.id);
        if (done.error === undefined) resolve(done);
        else reject(Object.assign(new Error(done.error), { code: 'VR_PORT', field: 'ports' }));
      });
      control.postMessage({ msg: pack(request) } satisfies ControlEnvelope);
    });
  }

  /** The routes the route sources hold, as plugins read them. */
  private get learnedRoutes(): LearnedRoutes {
    return this.routeSources ?? NO_LEARNED_ROUTES;
  }

  /** Every plugin's gauges (Plugin.gauges), read from shared memory. */
  async pluginGauges(): Promise<{ plugin: string; name: string; value: number }[]> {
    const out: { plugin: string; name: string; value: number }[] = [];
    for (const plan of this.plugins) {
      if (!plan.gauges) continue;
      const module = await importPlugin(plan.path, `plugins.${plan.name}`, plan.version);
      // An operator's plugin: what it throws or gives that is no number costs its gauges, not the scrape.
      let values: Record<string, unknown>;
      try {
        values = module.gauges!({ config: plan.config, topology: this.topology, shared: this.pluginMemory[plan.name], learnedRoutes: this.learnedRoutes });
      } catch (err) {
        log.warn(`${plan.name}: gauges() threw, its gauges left out: ${(err as Error)?.message ?? String(err)}`, 'plugin.gauges_failed');
        continue;
      }
      for (const [name, value] of Object.entries(values ?? {})) {
        if (typeof value === 'number') out.push({ plugin: plan.name, name, value });
        else log.warn(`${plan.name}: gauge ${JSON.stringify(name).slice(0, 80)} left out: its value is not a number`, 'plugin.gauges_failed');
      }
    }
    return out;
  }

  /**
   * A plugin's table (Plugin.tables), read from its shared memory, the entries the query
   * asks for; null if it has none so named. An iterable: a route table may be a million
   * entries long, made one by one as they are read.
   */
  async pluginTable(plugin: string, table: string, query: Readonly<Record<string, string>> = {}): Promise<Iterable<Record<string, unknown> | null> | null> {
    const plan = this.plugins.find((p) => p.name === plugin);
    if (plan === undefined || !plan.tables.includes(table)) return null;
    const module = await importPlugin(plan.path, `plugins.${plan.name}`, plan.version);
    return module.tables![table].list({ config: plan.config, topology: this.topology, shared: this.pluginMemory[plan.name], learnedRoutes: this.learnedRoutes }, query);
  }

  /**
   * Applies a new config document (from the file, or the admin endpoint). What may change
   * while vrouter runs: the plugins' configs (routes, neighbours, rules, policers) and the
   * plugin files; anything else needs a restart and is refused (ConfigError). Every changed
   * plugin is loaded, checked and its tables prepared (compiled in the job pool) while the
   * PMDs forward; then, if only configs of plugins that take them live changed, the PMDs
   * switch to the new tables between two bursts; otherwise they are restarted on the new
   * versions (their queues resume where the used rings say; not counted as crashes). If
   * anything fails, it throws (the error names the field) and what runs stays. A dry run
   * checks and prepares as much but changes nothing. One apply at a time, in order.
   */
  apply(document: unknown, options: { dryRun?: boolean; source: string }): Promise<ApplyResult> {
    return this.queueApply(() => this.applyNow(document, options));
  }

  /** Runs `job` after every apply queued before it, and before those queued after. */
  private queueApply<T>(job: () => Promise<T>): Promise<T> {
    // Not once vrouter stops: a port opened then would outlive the control thread's shutdown.
    const run = this.applying.then(() => (this.closing ? Promise.reject(stoppingError()) : job()));
    this.applying = run.catch(() => undefined);
    return run;
  }

  /** PUT /config: a whole document applied in its turn, rolled back unless confirmed within `seconds` (commit-confirmed.ts). */
  commit(document: unknown, seconds: number | null, source: string): Promise<ApplyResult & { rollbackInSeconds?: number }> {
    return this.commitConfirmed.commit(document, seconds, source);
  }

  /** POST /config/confirm: keeps the change waiting for its confirm. */
  confirmChange(): Promise<void> {
    return this.commitConfirmed.confirm();
  }

  /** POST /config/save: the document in force written to the file, after the changes queued before; refused while one waits for its confirm. */
  save(): Promise<string> {
    return this.commitConfirmed.save(() => this.saveDocument());
  }

  /**
   * Applies a change to the config in force (add a route, replace the rules): `edit` runs on
   * a copy of the document as it is when the change's turn comes, so that changes made at
   * the same time all land. The copy is shallow: `edit` replaces the keys it changes (a new
   * list of routes, a new port entry) and changes no object it finds in place. Changes that
   * wait together are applied as one (one compile of the tables for many route changes); if
   * that one is refused, each is applied alone, so that only the faulty ones fail.
   * `changes`, when the edit knows what it changed (routes added and removed): called once
   * the edit has run, it stands for a comparison of the documents, which costs a pass over
   * every route.
   */
  applyEdit(edit: (document: Record<string, unknown>) => void, source: string, changes?: () => ConfigChange[]): Promise<ApplyResult> {
    return new Promise<ApplyResult>((resolve, reject) => {
      this.pendingEdits.push({ edit, source, changes, resolve, reject });
      if (this.pendingEdits.length > 1) return;
      // The first of a group queues the group's turn; later ones join it until it comes.
      // While changes keep coming (an apply of them ended less than a window ago), the turn
      // is a short window later: it costs each change that much latency and saves an apply
      // (a check of the whole config, its diff, a pass over the route table) per change. A
      // change after a quiet spell (a person's, a daemon's every few seconds) is applied at
      // once: it waits for no others, and the supervisor does not wake once more for it.
      const run = this.applying
        .then(() => (performance.now() - this.editsAppliedAt < EDIT_WINDOW_MS ? sleep(EDIT_WINDOW_MS) : undefined))
        .then(() => this.applyEdits())
        .finally(() => (this.editsAppliedAt = performance.now()));
      this.applying = run.catch(() => undefined);
    });
  }

  /**
   * Hands the prefixes whose learned routes changed to the plugins that take them: their
   * tables change in place (the PMDs read them as they change), or the PMDs switch to
   * tables built anew between two bursts. No config is parsed, compared or copied. Says
   * whether any had changed, and what a plugin failed with (the others' tables are in use
   * then): learned-apply.ts tries them all again later.
   */
  private async applyLearnedRoutes(): Promise<{ changed: boolean; failure: unknown }> {
    if (this.routeSources === null) return { changed: false, failure: null };
    const prefixes = this.routeSources.takeChanged();
    // Whole with none listed: every learned route went (a full table withdrawn at once).
    if (prefixes.size === 0 && prefixes.whole !== true) return { changed: false, failure: null };
    let memory = this.pluginMemory;
    const changed: PluginPlan[] = [];
    let failure: unknown = null;
    for (const plan of this.plugins) {
      if (!plan.learnsRoutes) continue;
      let regions: Record<string, ArrayBufferLike>;
      try {
        regions = await learnRoutes(plan, memory[plan.name], this.topology, this.learnedRoutes, prefixes);
      } catch (err) {
        failure = err;
        break;
      }
      if (regions === memory[plan.name]) continue;
      memory = { ...memory, [plan.name]: regions };
      changed.push(plan);
    }
    if (changed.length > 0) {
      this.useMemory(memory);
      this.postTables(changed);
    }
    return { changed: true, failure };
  }

  /** The plugins' memory from now on: regions no longer in it are freed once no PMD uses them. */
  private useMemory(memory: PluginMemory): void {
    const kept = new Set(Object.values(memory).flatMap((regions) => Object.values(regions)));
    const dropped = Object.values(this.pluginMemory).flatMap((regions) => Object.values(regions)).filter((b) => !kept.has(b));
    this.pluginMemory = memory;
    const generation = ++this.tablesGeneration;
    if (dropped.length > 0) {
      this.retired.push({ buffers: dropped, generation });
      // What the compile left behind goes too, once the PMDs took the new tables.
      collectGarbageSoon();
    }
  }

  private async applyEdits(): Promise<void> {
    const group = this.pendingEdits.splice(0);
    // Edits replace what they change (they never change an object of the document in
    // place): a shallow copy is theirs to edit, and what they leave is shared.
    const editOf = (edits: typeof group) => {
      const doc = { ...(this.document as Record<string, unknown>) };
      for (const e of edits) e.edit(doc);
      return doc;
    };
    // What the edits say they changed, if each says: read after they ran.
    const changesOf = (edits: typeof group) => (edits.every((e) => e.changes !== undefined) ? mergeChanges(edits.map((e) => e.changes!())) : undefined);
    if (group.length > 1) {
      try {
        const doc = editOf(group);
        const result = await this.applyNow(doc, { source: `${group.length} changes (${group[0].source}, ...)`, diff: changesOf(group), pluginFiles: false });
        for (const e of group) e.resolve(result);
        return;
      } catch (err) {
        // In force, and then something failed (the PMDs' restart on new ports): applied
        // again one by one, each would be refused as there already.
        if ((err as { committed?: boolean }).committed === true) {
          for (const e of group) e.reject(err);
          return;
        }
        // One of them is refused: each on its own below, so that it alone fails.
      }
    }
    for (const e of group) {
      try {
        const doc = editOf([e]);
        e.resolve(await this.applyNow(doc, { source: e.source, diff: changesOf([e]), pluginFiles: false }));
      } catch (err) {
        e.reject(err);
      }
    }
  }

  /**
   * `diff`: what changed, when the caller knows (applyEdit); else the documents are compared.
   * `pluginFiles: false`: the plugin files are not looked at (changes through the admin
   * endpoint, the route sources') unless the PMDs restart on new ports: they load again on
   * a reload (SIGHUP, POST /reload) or a new document (PUT /config), not because a route
   * was added meanwhile. PMDs that restart import the files as they are on disk.
   */
  private async applyNow(document: unknown, options: { dryRun?: boolean; source: string; diff?: ConfigChange[]; pluginFiles?: boolean }): Promise<ApplyResult> {
    const next = parseConfig(document, dirname(resolve(this.configPath)), this.cpuCount, this.learnedApply.learned);
    const diff = options.diff ?? configDiff(this.document, document);
    const structural = structuralChange(this.config, next);
    if (structural !== null) throw new NeedsRestart(structural);
    const ports = portChange({ config: this.config, slots: this.slots, queueOwner: this.layout.queueOwner }, next);
    const topology = ports === null ? this.topology : topologyOf(next, ports.slots);
    // A plugin file loads again (a new module version) only when one changed on disk: each
    // load is a module record Node keeps for good.
    const digestOf = (spec: PluginSpec) => (options.pluginFiles === false && ports === null ? this.digests.get(spec.name) : undefined) ?? fileDigest(spec.path);
    const digests = new Map(next.plugins.map((spec) => [spec.name, digestOf(spec)]));
    const filesChanged = next.plugins.some((spec) => digests.get(spec.name) !== this.digests.get(spec.name));
    // A new module version for every load of changed files, kept or not: Node caches a
    // module by its URL, a failed import too, so a version a refused or dry-run load used
    // would give the next load what that one found (its error, or the file as it was then).
    const version = filesChanged ? ++this.pluginLoadAttempts : this.pluginLoads;
    const plans = await planPlugins(next.plugins, topology, version);
    const running = (p: PluginPlan) => this.plugins.find((o) => o.name === p.name)!;
    const newFiles = plans.filter((p) => digests.get(p.name) !== this.digests.get(p.name));
    // New ports or bridges: every plugin prepares again for them, and the PMDs restart on them.
    const changed = ports !== null ? plans : plans.filter((p) => newFiles.includes(p) || !sameConfig(p.config, running(p).config) || !sameConfig(p.sharedMemory, running(p).sharedMemory));
    const live = ports === null && newFiles.length === 0 && changed.every((p) => p.swappable);
    const mode = changed.length === 0 ? 'none' : live ? 'live' : 'restart';
    if (options.dryRun && changed.length > 0) await this.prepareDry(changed, topology);
    if (options.dryRun || changed.length === 0) {
      if (!options.dryRun) {
        // Nothing for the plugins or the ports; the route sources may have changed.
        this.document = document;
        this.config = next;
        this.routeSources?.configure(next);
        this.learnedApply.retryRefused();
      }
      return { mode, plugins: changed.map((p) => p.name), diff };
    }
    const memory = allocatePluginMemory(plans, this.pluginMemory);
    // Plugins that did not change keep all they had, the regions prepare() returned too.
    for (const p of plans) if (!changed.includes(p)) memory[p.name] = this.pluginMemory[p.name];
    try {
      await preparePlugins(changed, memory, topology, this.pluginMemory, this.learnedRoutes);
      // The last step that may refuse: the sockets of new ports.
      if (ports !== null) await this.askControl({ t: 'ports', id: ++this.controlRequestId, open: ports.open, close: ports.close, retune: ports.retune, next: topology });
    } catch (err) {
      await this.restoreTables(changed);
      throw err;
    }
    const versions = changed.map((p) => `${p.name} ${running(p).pluginVersion} -> ${p.pluginVersion}`).join(', ');
    // The PMDs read tables changed in place as they change: a plugin whose PMD config and
    // regions stayed (routes changed, which the routing stage's PMD config leaves out) has
    // nothing new for them, and they are not interrupted for it.
    const forPmds = changed.filter((p) => !sameConfig(p.pmdConfig, running(p).pmdConfig) || !sameRegions(memory[p.name], this.pluginMemory[p.name]));
    if (filesChanged) {
      this.pluginLoads = version;
      // The spare's PMDs imported the files as they were.
      this.replaceSpare();
    }
    this.config = next;
    this.document = document;
    this.plugins = plans;
    this.routeSources?.configure(next);
    // Regions of the tables replaced are freed once no PMD uses them.
    this.useMemory(memory);
    for (const p of newFiles) this.digests.set(p.name, digests.get(p.name)!);
    const names = changed.map((p) => p.name).join(', ');
    const what = diff.map((c) => (c.added || c.removed ? `${c.key} +${c.added?.length ?? 0} -${c.removed?.length ?? 0}` : c.key)).join(', ') || 'what the route sources hold';
    if (ports !== null) {
      log.info(`reloaded from ${options.source} (${what}): restarting the PMDs on the new layout of ports and queues`, 'config.reloaded', { source: options.source, mode: 'restart', plugins: names });
      try {
        await this.restartOnLayout(ports, topology);
      } catch (err) {
        throw Object.assign(new Error(`the change is in force, but the PMDs did not start on the new layout: ${(err as Error).message}`), { code: (err as { code?: string }).code, committed: true });
      }
    } else if (live) {
      const taken = forPmds.length > 0 ? 'the PMDs take the new tables between bursts' : 'the tables in use changed in place';
      log.info(`reloaded from ${options.source}: new config for ${names} (${what}); ${taken}`, 'config.reloaded', { source: options.source, mode: 'live', plugins: names });
      if (forPmds.length > 0) {
        this.postTables(forPmds);
        // Answered once the PMDs forward with them: a packet sent after the answer meets the change.
        await this.tablesTaken(this.tablesGeneration);
      }
    } else {
      log.info(`reloaded from ${options.source} (${versions}): restarting the PMDs on them`, 'plugin.reloaded', { source: options.source, mode: 'restart', versions });
      await this.pmdsStarted();
      await this.tellLeaving();
      for (const { id } of this.layout.pmds) {
        this.reloading.add(id);
        this.terminatePmd(id);
      }
    }
    this.learnedApply.retryRefused();
    return { mode, plugins: changed.map((p) => p.name), diff };
  }

  /**
   * A dry run's prepare: the plugins the change touches build their tables in memory of
   * their own, freed after, so that what only prepare() checks (gateways against the
   * interfaces, room in the neighbour table, an ACL's compile) refuses the dry run as it
   * would the change. The tables in use are not touched: every region is new.
   */
  private async prepareDry(plans: readonly PluginPlan[], topology: Topology): Promise<void> {
    const scratch = allocatePluginMemory(plans);
    try {
      await preparePlugins(plans, scratch, topology, undefined, this.learnedRoutes);
    } finally {
      for (const regions of Object.values(scratch)) for (const buffer of Object.values(regions)) releaseShared(buffer);
    }
  }

  /**
   * Ports added or removed, queues moved: every PMD stops, and starts again on the new
   * layout, as OVS reloads its PMDs; the control thread then hands each its queues, which
   * resume where their used rings say. Frontends of the ports kept stay connected.
   */
  private restartOnLayout(change: PortChange, topology: Topology): Promise<void> {
    return this.inLifecycle(async () => {
      await this.pmdsStarted();
      const started = performance.now();
      if (this.dataplane !== null) {
        await new Promise<void>((resolve) => {
          this.relayout = { exiting: new Set(this.layout.pmds.map(({ id }) => id)), allExited: resolve };
          for (const { id } of this.layout.pmds) this.terminatePmd(id);
        });
        this.relayout = null;
      }
      // No PMD runs: a new port's counters and a closed port's capture can be reset safely.
      for (const slot of change.fresh) clearPortCounters(this.layout.shared.counters, this.pmdCount, slot, this.retiredPmdTotals);
      const captureWords = new Int32Array(this.layout.capture.control);
      for (const slot of change.close) Atomics.store(captureWords, slot * CONTROL_WORDS, 0);
      this.slots = change.slots;
      this.previousTopology = this.topology;
      this.topology = topology;
      this.layout.queueOwner = change.queueOwner;
      this.layout.pmds = pmdConfigsOf(this.config, change.slots);
      // If the data plane died meanwhile, the new layout starts in a new one.
      try {
        await this.startPmds();
      } finally {
        // A PMD started later (a restart after a death) runs on the topology its ports had.
        this.previousTopology = null;
      }
      log.info(`PMDs running on the new layout after ${Math.round(performance.now() - started)} ms: ${this.slots.filter((s) => s !== null).length} port(s)`, 'pmd.relayout', { ports: this.slots.filter((s) => s !== null).length });
    });
  }

  /** Each route source: its state, and how many routes it has. */
  routeSourceStatus(): RouteSourceStatus[] {
    return this.routeSources?.status() ?? [];
  }

  /** The config document in force, as written. */
  get runningDocument(): unknown {
    return this.document;
  }

  /**
   * After a refused apply: prepare() may have changed tables in force in place (routes,
   * static neighbours, policers) before the step that refused. It runs again for those
   * plugins with the configs in force, over the memory in force (every region kept), so
   * that the PMDs read what the config in force says. Should it hand back other regions
   * than those in force, the PMDs take them as after a change.
   */
  private async restoreTables(touched: readonly PluginPlan[]): Promise<void> {
    const before = this.plugins.filter((p) => touched.some((t) => t.name === p.name));
    const memory: PluginMemory = Object.fromEntries(before.map((p) => [p.name, { ...this.pluginMemory[p.name] }]));
    try {
      await preparePlugins(before, memory, this.topology, memory, this.learnedRoutes);
    } catch (err) {
      log.error(`the tables in force could not be prepared again after a refused change: ${(err as Error).message}`, 'config.restore_failed');
      return;
    }
    const moved = before.filter((p) => !sameRegions(memory[p.name], this.pluginMemory[p.name]));
    if (moved.length === 0) return;
    this.useMemory({ ...this.pluginMemory, ...Object.fromEntries(moved.map((p) => [p.name, memory[p.name]])) });
    this.postTables(moved);
  }

  /** Hands the plugins' new config and tables to every PMD, and wakes those asleep. */
  private postTables(plans: readonly PluginPlan[]): void {
    const update: TablesUpdate = { generation: this.tablesGeneration, tables: plans.map((p) => ({ name: p.name, config: p.pmdConfig, shared: this.pluginMemory[p.name] })) };
    this.dataplane?.postTables(update);
  }

  /**
   * Until every PMD that polls has taken the tables of `generation` (between two bursts), at
   * most TABLES_TAKEN_MS: one starting takes the newest as it starts, one stuck is the
   * watchdog's.
   */
  private async tablesTaken(generation: number): Promise<void> {
    const deadline = performance.now() + TABLES_TAKEN_MS;
    // A PMD in its poll loop, whether the watchdog has seen it there yet or not (its
    // heartbeat moved since it started, as after a relayout a moment ago); one not there
    // yet takes the tables before its first poll.
    const behind = () => this.dataplane !== null && this.layout.pmds.some(({ id }) => this.pmdWatchdog.polling(id) && this.doorbells[id][DOORBELL_TABLES_SEEN] < generation);
    while (behind() && performance.now() < deadline) await sleep(1);
  }

  /**
   * Terminates a PMD as a crash would (SIGUSR2: a drill of the restart path); one still
   * starting once it polls (terminated while it loads, it would take its process down).
   */
  crashPmd(id: number): void {
    log.warn(`terminating pmd${id} on request`);
    if (id >= 0 && id < this.pmdCount) void this.pmdsStarted().then(() => this.terminatePmd(id));
  }

  /**
   * What packet capture needs: the capture memory, and names for what its records hold
   * (stages by index, drop reasons by code).
   */
  captureSource(): { memory: CaptureMemory; ports: string[]; stages: string[]; dropReasons: string[] } {
    const dropReasons: string[] = DROP_REASONS.map(([name]) => name);
    for (const p of this.plugins) p.dropReasons.forEach((r, k) => (dropReasons[DROP_REASONS.length + p.slot + k] = r));
    return { memory: this.layout.capture, ports: this.slots.map((name) => name ?? ''), stages: this.plugins.map((p) => p.name), dropReasons };
  }

  /** Port counters summed over the PMDs. */
  stats() {
    const counters = this.layout.shared.counters;
    const load = new Float64Array(this.layout.shared.load);
    const pmds = readPmdStats(counters, this.pmdCount, this.retiredPmdTotals).map((s, i) => {
      const busyMs = load[i * LOAD_FIELDS + LOAD_BUSY_MS];
      const polled = load[i * LOAD_FIELDS + LOAD_PACKETS];
      const queues = this.slots.flatMap((name, slot) => (name === null ? [] : (this.layout.queueOwner[slot] ?? []).flatMap((pmd, q) => (pmd === i ? [{ port: name, queue: q }] : []))));
      return { cpu: this.config.pmd.cores[i], ...s, busy_ms: Math.round(busyMs * 1000) / 1000, busy_rounds: load[i * LOAD_FIELDS + LOAD_BUSY_ROUNDS], ns_per_packet: polled > 0 ? Math.round((busyMs * 1e6) / polled) : null, queues };
    });
    const ports = readPortStats(counters, this.pmdCount, this.slots.map((name) => name ?? ''), this.plugins);
    // The data path counts in a slot for every queue pair a port may have: each shows its own.
    for (const p of this.config.ports) if (ports[p.name] !== undefined) ports[p.name].queues = ports[p.name].queues.slice(0, p.queues);
    return { ports, pmds };
  }

  /** Closes every connection and socket, then stops the threads. */
  async stop(): Promise<void> {
    // A change or an upgrade under way ends first, as it would have, and is answered (those
    // queued behind it are refused): what it opens is then closed with the rest.
    this.closing = true;
    await Promise.race([Promise.all([this.applying, this.upgrades]), sleep(SHUTDOWN_TIMEOUT_MS)]);
    this.stopping = true;
    await this.routeSources?.stop();
    const control = this.control;
    if (control) {
      const stopped = new Promise<void>((resolve) => {
        control.on('message', (m: Uint8Array) => {
          if ((unpack(m) as ControlEvent).t === 'stopped') resolve();
        });
      });
      const request: ControlRequest = { t: 'shutdown' };
      control.postMessage({ msg: pack(request) });
      const timedOut = await Promise.race([stopped.then(() => false), sleep(SHUTDOWN_TIMEOUT_MS).then(() => true)]);
      if (timedOut) log.warn(`the control thread did not stop within ${SHUTDOWN_TIMEOUT_MS} ms`);
    }
    await this.terminateAll();
  }

  private async terminateAll(): Promise<void> {
    this.stopping = true;
    if (this.watchdog) clearInterval(this.watchdog);
    await this.pmdsStarted();
    if (this.spareTimer !== null) clearTimeout(this.spareTimer);
    // The control thread first: a poll callback (a data plane's command socket hanging up)
    // that fires in a thread being terminated is a fatal error in koffi, not an exception.
    // Not for longer than a thread takes to end: one blocked in a call never would.
    await Promise.race([this.control?.terminate(), sleep(SHUTDOWN_TIMEOUT_MS)]);
    // SIGKILLed, a process ends once its system call does: one stuck in the kernel (an
    // uninterruptible wait) does not hold the stop for good.
    const killed = Promise.all([this.dataplane?.kill(), this.spare?.dataplane.discard()]).then(() => true);
    if (!(await Promise.race([killed, sleep(SHUTDOWN_TIMEOUT_MS).then(() => false)]))) log.warn(`a data-plane process did not end within ${SHUTDOWN_TIMEOUT_MS} ms of SIGKILL: left to end on its own`);
    await closeJobs();
  }

  /**
   * A thread terminated while it loads a native addon (koffi) takes the process down with a
   * fatal error: PMDs still starting (no poll round yet) are let finish first.
   */
  private async pmdsStarted(): Promise<void> {
    const deadline = Date.now() + SHUTDOWN_TIMEOUT_MS;
    // A PMD not spawned yet (a stop while vrouter starts) has no heartbeat to wait for.
    while (Date.now() < deadline && this.layout.pmds.some(({ id }) => this.pmdWatchdog.starting(id))) {
      await sleep(10);
    }
  }

  /** A thread that dies takes forwarding with it: stop cleanly and exit non-zero. */
  private actorDied(name: string, err: Error): void {
    if (this.closing || this.stopping) return;
    log.error(`${name} died: ${err.stack ?? err.message}`, 'vrouter.failed', { thread: name });
    void this.stop().then(() => process.exit(1));
  }
}

/** A change or an upgrade asked for once vrouter stops. */
function stoppingError(): Error {
  return Object.assign(new Error('vrouter is stopping'), { code: 'VR_BUSY' });
}

/** The control thread's answer to a request (its 'done' event). */
type ControlDone = Extract<ControlEvent, { t: 'done' }>;

/** When each step of a hand-over to a new data plane ended (monotonicMs): see promote(). */
interface HandOverSteps {
  oldStoppedAt: number;
  goAt: number;
  handedAt: number;
  resumedAt: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Whether a plugin's regions are the same buffers under the same names. */
function sameRegions(a: Readonly<Record<string, ArrayBufferLike>>, b: Readonly<Record<string, ArrayBufferLike>> | undefined): boolean {
  if (b === undefined) return false;
  const names = Object.keys(a);
  return names.length === Object.keys(b).length && names.every((name) => a[name] === b[name]);
}
