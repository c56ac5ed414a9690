// Entry point of a PMD worker thread: loads the pipeline's plugins, pins itself, then
// polls forever. Commands arrive on a MessagePort that it drains only when the doorbell
// word changes (one Atomics.load per round). When idle it sleeps in growing steps on the
// guests' kick eventfds and its own wake eventfd, so a packet, a command or frames from
// another PMD wake it at once.
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { pack, unpack } from '../sys/msgpack.ts';
import { interruptHandlerInstalled, pinThreadToCpu, setThreadName, setThreadNice, threadId } from '../sys/libc.ts';
import { decodeShared, regionOf, useArena, type SharedRef } from '../sys/shared-arena.ts';
import { holdLifeLock, LIFE_LOCKS } from '../sys/life-locks.ts';
import { createLog } from '../log.ts';
import { DOORBELL_COMMANDS, DOORBELL_IN_CALL, DOORBELL_SERVING, DOORBELL_STAGE, DOORBELL_TABLES, DOORBELL_TABLES_SEEN, DOORBELL_THREAD, type PmdRequest } from '../vhost/dataplane-link.ts';
import { Pmd, type PmdConfig, type PmdShared, type Stage } from '../dataplane/pmd.ts';
import { PluginStage } from './host.ts';
import { BUILT_IN_PLUGINS, builtInPluginPath, importPlugin, slotNames, type PluginPlan } from './loader.ts';
import { PLUGIN_API_VERSION, type Plugin, type Topology } from './api.ts';
import type { PluginMemory } from './shared-memory.ts';
import type { CaptureMemory } from '../dataplane/capture.ts';

export interface PmdThreadData {
  config: PmdConfig;
  shared: PmdShared;
  commands: MessagePort;
  /** the stages of the pipeline, in order */
  plugins: PluginPlan[];
  /** plugins taken out of this PMD's pipeline because they hung a PMD */
  takenOut: string[];
  topology: Topology;
  /** the topology of the PMDs this one replaces, if it starts on a new one (PluginContext.previous) */
  previous: Topology | null;
  pluginMemory: PluginMemory;
  /** packet capture's control words and rings */
  capture: CaptureMemory;
  /** the plugin tables' generation the PMD starts with (DOORBELL_TABLES_SEEN) */
  tablesGeneration: number;
  /** control.nice: a standby PMD's while it waits for the go and takes the queues over */
  handOverNice: number;
  /** started to take over queues: it takes no frames until told every port's are back (Pmd.waitForQueues) */
  waitForQueues: boolean;
  /**
   * A PMD of a spare data plane (or of an upgrade's) waits, loaded, until this word is set,
   * before it touches shared memory; then the first message on its parent port is its
   * PmdThreadData as it is then (layout, tables), which replaces what it was started with.
   */
  standby: SharedArrayBuffer | null;
  /** where this process mapped the shared memory: the buffers above come as SharedRefs into it */
  arena: { base: string; size: number } | null;
  /** the process's life locks (life-locks.ts): this thread holds one of them while it lives */
  lifeLocks: SharedRef | null;
}

const started = workerData as PmdThreadData;
useArena(started.arena);
/** Lines go to the supervisor, which writes them (see createLog). */
export interface PmdLogLine {
  log: string;
}
/** A PMD in standby loaded (refused: why it cannot serve the supervisor that started it, or null). */
export interface PmdStandbyLine {
  standby: true;
  refused: string | null;
}

/**
 * Why plugins as imported here cannot serve the plans they came with, or null: the code on
 * disk (an upgrade's) declares other drop reasons or counters than the supervisor gave
 * slots to when it loaded the plugin. Its PMDs would count in other slots, and a stage
 * whose state asks for a counter the plan lacks could not be built at all.
 */
function countsElsewhere(loaded: readonly Plugin[], plans: readonly PluginPlan[]): string | null {
  for (let i = 0; i < plans.length; i++) {
    if (unloadable.includes(plans[i].name)) continue;
    const { dropReasons, counters } = slotNames(loaded[i]);
    if (dropReasons.join(',') !== plans[i].dropReasons.join(',') || counters.join(',') !== plans[i].counters.join(',')) {
      return `plugin ${plans[i].name}'s code declares other drop reasons or counters than the running supervisor loaded (${dropReasons.slice(1).join(',')}; ${counters.join(',')}): restart vrouter to run it`;
    }
  }
  return null;
}
const log = createLog(`pmd${started.config.id}`, (line) => parentPort!.postMessage({ log: line } satisfies PmdLogLine));
// Held while this thread lives (the first lock is the main thread's): once the locks of a
// dead process are all let go, none of its threads touches a queue again (life-locks.ts).
if (started.lifeLocks !== null && holdLifeLock(regionOf(started.lifeLocks), 1, LIFE_LOCKS) < 0) {
  log.warn(`no life lock left of ${LIFE_LOCKS}: a death of this data plane is known only once the process has ended`);
}
// Plugins are imported first: in standby, that is the work done before the go. A file
// that no longer loads (edited on disk since the supervisor loaded it; this thread is a
// restart, a spare) takes its stage out, dropping what reaches it, rather than failing
// the thread at every restart until the whole data plane gives up: a reload with the
// file fixed brings it back.
const unloadable: string[] = [];
const modules = await Promise.all(started.plugins.map((p) => importPlugin(p.path, `plugins.${p.name}`, p.version).catch((err: unknown): Plugin => {
  log.error(`plugin ${p.name} cannot be imported (${(err as Error).message}): taken out of the pipeline, its packets dropped as plugin_error, until a reload loads it`, 'plugin.failed', { plugin: p.name });
  unloadable.push(p.name);
  return { name: p.name, version: '', apiVersion: PLUGIN_API_VERSION, createState: () => null, process: () => {} };
})));
let data = started;
if (started.standby !== null) {
  // Loaded: the data plane this one stands in for forwards until it is told to go; or code
  // of another vrouter, whose plugins count where the supervisor reads other counters.
  parentPort!.postMessage({ standby: true, refused: countsElsewhere(modules, started.plugins) } satisfies PmdStandbyLine);
  // It waits on its own CPU (asleep, it takes nothing there), to wake where it will poll:
  // at a hand-over after a death that CPU is idle, the control CPUs are not.
  try {
    pinThreadToCpu(started.config.cpu);
  } catch {
    // pinned after the go, or the error said then
  }
  // The go wakes it as promptly as the threads that relay it (the pause of a hand-over is a
  // chain of such wake-ups, on CPUs shared with other work); asleep, the nice costs nothing.
  try {
    setThreadNice(started.handOverNice);
  } catch {
    // without CAP_SYS_NICE: at 0 (the main thread's log says so)
  }
  Atomics.wait(new Int32Array(started.standby), 0, 0);
  // Posted before the go word was set; looked for a little longer all the same.
  let now = receiveMessageOnPort(parentPort!);
  for (let tries = 0; now === undefined && tries < 1000; tries++) {
    Atomics.wait(new Int32Array(started.standby), 1, 0, 1);
    now = receiveMessageOnPort(parentPort!);
  }
  if (now === undefined) throw new Error('started without its layout and tables');
  data = { ...started, ...(now.message as Partial<PmdThreadData>) };
}
const { config, commands, plugins, takenOut, topology } = data;
const { shared, pluginMemory, capture } = decodeShared({ shared: data.shared, pluginMemory: data.pluginMemory, capture: data.capture });
try {
  setThreadName(`pmd${config.id}`);
  pinThreadToCpu(config.cpu);
} catch (err) {
  log.error(`cannot pin to CPU ${config.cpu}: ${(err as Error).message}`);
}
// Not the control threads' nice: a poller at a raised priority would starve whatever else
// the system runs on its CPU. A standby PMD keeps it until it takes frames again.
function pollAtNiceZero(): void {
  try {
    setThreadNice(0);
  } catch (err) {
    log.warn(`stays at the control threads' nice value: ${(err as Error).message}`);
  }
}
if (started.standby === null) pollAtNiceZero();
/** By port and PMD: 1 where that PMD holds the port's receive queue (see Pmd.queuesChanged). */
const rxHolders = new Int32Array(shared.rxQueueHolders);
function portUp(port: number): boolean {
  if (!Number.isInteger(port) || port < 0 || port >= config.ports.length) return false;
  // A VLAN port is up while its parent is: the parent's queues carry its frames.
  const carrier = config.ports[port].parent >= 0 ? config.ports[port].parent : port;
  for (let p = 0; p < config.pmdCount; p++) if (Atomics.load(rxHolders, carrier * config.pmdCount + p) !== 0) return true;
  return false;
}
const where = { id: config.id, count: config.pmdCount, ports: topology.ports, bridges: topology.bridges, bridgeSettings: topology.bridgeSettings, previous: data.previous ?? null, portUp };
let stages: PluginStage[] = [];
const pmd = new Pmd(config, shared, log, (counters, bell, wantedBatches): Stage[] => {
  // Each stage's index while it is built: a plugin whose createState never returns is named
  // by the supervisor's watchdog, as one stuck in a burst is.
  stages = plugins.map((plan, i) => {
    bell[DOORBELL_STAGE] = i;
    const builtIn = BUILT_IN_PLUGINS.includes(plan.name) && plan.path === builtInPluginPath(plan.name);
    return new PluginStage(modules[i], plan, { ...where, wantedBatches, portSlots: config.ports.length }, pluginMemory[plan.name], counters, log, takenOut.includes(plan.name) || unloadable.includes(plan.name), builtIn);
  });
  return stages;
}, capture);
const doorbell = pmd.doorbell;
log.info(`polling on CPU ${config.cpu}, ${config.ports.length} port(s)`, 'pmd.started', { cpu: config.cpu });

pmd.onLateReply = (reply) => commands.postMessage(pack(reply));
if (started.standby !== null) {
  if (data.waitForQueues) pmd.onResumed = pollAtNiceZero;
  else pollAtNiceZero();
}
doorbell[DOORBELL_SERVING] = -1;
doorbell[DOORBELL_TABLES_SEEN] = data.tablesGeneration;
// Where the watchdog finds a write to a guest's call eventfd that blocks (notify.ts).
doorbell[DOORBELL_IN_CALL] = 0;
doorbell[DOORBELL_THREAD] = interruptHandlerInstalled() ? threadId() : 0;
if (data.waitForQueues) pmd.waitForQueues();
doorbell[DOORBELL_STAGE] = -1;

function drainCommands(): void {
  for (let m = receiveMessageOnPort(commands); m !== undefined; m = receiveMessageOnPort(commands)) {
    // Packed, but for a memory table: its SharedArrayBuffers come as a structured clone.
    const req = (m.message instanceof Uint8Array ? unpack(m.message) : m.message) as PmdRequest | { id: 0; cmd: { t: 'quiesce' } };
    if (req.cmd.t === 'quiesce') quiesce();
    let reply;
    try {
      const result = pmd.execute(req.id, req.cmd);
      if (result === null) continue;
      reply = { id: req.id, ...result };
    } catch (err) {
      reply = { id: req.id, error: (err as Error).message };
    }
    commands.postMessage(pack(reply));
  }
}

/**
 * Stops for good between two bursts (an upgrade: the process is killed next), so that no
 * frame is half done: its used rings are published, nothing is taken and not given back.
 */
function quiesce(): never {
  commands.postMessage(pack({ id: 0 }));
  const forever = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(forever, 0, 0);
}

/** A plugin's new config and tables, posted by the supervisor after a reload. */
export interface TablesUpdate {
  /** the supervisor's count of table changes: the PMD reports it has taken it (DOORBELL_TABLES_SEEN) */
  generation: number;
  tables: { name: string; config: unknown; shared: Record<string, ArrayBufferLike> }[];
}

function drainTableUpdates(): void {
  for (let m = receiveMessageOnPort(parentPort!); m !== undefined; m = receiveMessageOnPort(parentPort!)) {
    const update = decodeShared(m.message as TablesUpdate);
    for (const t of update.tables) {
      const s = stages.findIndex((stage) => stage.name === t.name);
      if (s < 0) continue;
      // Named, as in a burst: a plugin that never returns from it is taken out by the watchdog.
      doorbell[DOORBELL_STAGE] = s;
      stages[s].tablesChanged(t.config, t.shared);
    }
    doorbell[DOORBELL_STAGE] = -1;
    doorbell[DOORBELL_TABLES_SEEN] = update.generation;
  }
}

/** sleeps grow from this, doubling, up to pmd.sleepMaxUs; any event ends one at once */
const FIRST_SLEEP_US = 20;

/**
 * The poll loop, in a function: its state is then in registers of the optimised loop,
 * where at the module's top level each variable was a slot of the module's context, and
 * V8 compiled the top level as one function that left the stages' small helpers as calls.
 */
function pollForever(): never {
  // The doorbell starts at 0: commands posted while this thread was starting are seen.
  let seen = 0;
  let seenTables = 0;
  let idleRounds = 0;
  let sleepUs = 0;
  for (;;) {
    const ring = Atomics.load(doorbell, DOORBELL_COMMANDS);
    if (ring !== seen) {
      seen = ring;
      drainCommands();
    }
    const tables = Atomics.load(doorbell, DOORBELL_TABLES);
    if (tables !== seenTables) {
      seenTables = tables;
      drainTableUpdates();
    }
    if (pmd.building) pmd.stepBuilds();
    if (pmd.pollOnce() > 0 || pmd.building) {
      idleRounds = 0;
      sleepUs = 0;
    } else if (config.idleSleepMaxUs > 0 && ++idleRounds > config.idleSpinRounds) {
      sleepUs = Math.min(config.idleSleepMaxUs, sleepUs === 0 ? FIRST_SLEEP_US : sleepUs * 2);
      pmd.sleep(sleepUs, seen);
    }
  }
}

pollForever();
