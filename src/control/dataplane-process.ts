// The supervisor's handle on the data-plane process: starts it (a child process named
// vrouter-dataplane), hands it the shared memory, and starts, stops and feeds its PMDs.
// When the process dies, `died` is called once; the supervisor starts a new one and gives
// it the same state (the connections, their fds and vring positions are all on this side).
// A death is known as soon as the threads of the process that touch queues have ended
// (dataplane-death-watch.ts), or else when the process has ended, whichever comes first.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { TablesUpdate } from '../pipeline/pmd-thread.ts';
import { closeAll, seqpacketPair, startOnCpus, threadCpus } from '../sys/libc.ts';
import { PacketChannel } from '../sys/packet-channel.ts';
import { arenaAddress, encodeShared, refOf, releaseShared, sharedBuffer } from '../sys/shared-arena.ts';
import { initLifeLocks, LIFE_BLOCK_BYTES } from '../sys/life-locks.ts';
import type { DeathSeen, DeathWatchData, DeathWatching } from './dataplane-death-watch.ts';
import type { DataplaneEvent, PmdSpawnData, SupervisorMessage } from '../dataplane/process-link.ts';
import { COUNTER_LAYOUT } from '../dataplane/counters.ts';
import { DATAPLANE_V8_FLAGS, SPARE_V8_FLAGS } from '../dataplane/jit-flags.ts';
import { createLog } from '../log.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const ENTRY = fileURLToPath(new URL(`../dataplane/process-main${MODULE_EXT}`, import.meta.url));
const DEATH_WATCH = new URL(`./dataplane-death-watch${MODULE_EXT}`, import.meta.url);
const log = createLog('supervisor');
/** how long the data plane has to map the shared memory and say it is ready */
const READY_TIMEOUT_MS = 10_000;

export interface DataplaneHandlers {
  pmdError(pmd: number, incarnation: number, error: string): void;
  pmdExit(pmd: number, incarnation: number, code: number): void;
  /** a PMD started in standby has loaded and waits for go() */
  pmdStandby(pmd: number, incarnation: number, refused: string | null): void;
  /** the process ended (after start resolved), by exit code or signal */
  died(code: number | null, signal: NodeJS.Signals | null): void;
}

/** The error code of ready()'s rejection. */
export const NOT_STARTED = 'VR_DATAPLANE_NOT_STARTED';

export class DataplaneProcess {
  private readonly child: ChildProcess;
  private readonly channel: PacketChannel;
  /** the supervisor's end of the control thread's command socket (the control thread closes it) */
  readonly commandsFd: number;
  private commandsDiscarded = false;
  private readonly handlers: DataplaneHandlers;
  private exited = false;
  /** `died` was called (by the death watch, or at the exit) */
  private dead = false;
  private readonly exitWaiters: (() => void)[] = [];
  /** the process's life locks, in shared memory; freed once it and the death watch are gone */
  private readonly lifeLocks: ArrayBuffer | SharedArrayBuffer;
  private deathWatch: Worker | null = null;
  /** resolves with the watch's exit code once its thread has ended */
  private deathWatchExit: Promise<number> | null = null;
  /** resolved once the watch waits for the locks, or has ended, or the process has (watching()) */
  private readonly watchStarted = Promise.withResolvers<void>();

  /**
   * Starts the process; `ready()` resolves once it mapped the shared memory. A `spare` is
   * named vrouter-dataplane-spare in ps until its PMDs go. `nice`: its main thread's once it
   * serves queues (control.nice); it loads at 0. `loadCpus`: the CPUs it loads on, when not
   * the calling thread's; its threads but the PMDs then go back to the calling thread's once
   * it has loaded.
   */
  constructor(arenaFd: number, arenaBytes: number, nice: number, handlers: DataplaneHandlers, spare = false, loadCpus: readonly number[] | null = null) {
    this.handlers = handlers;
    const made: number[] = [];
    let child: ChildProcess;
    let controlCpus: number[] | null = null;
    try {
      made.push(...seqpacketPair(), ...seqpacketPair());
      // The data plane's V8 flags first: any given to node for vrouter itself come after and win.
      // --disable-sigusr1: a SIGUSR1 (`pkill -USR1 vrouter` matches the data plane's name)
      // would otherwise open Node's inspector on 127.0.0.1:9229, where any local user could
      // run code in the process that maps every guest's memory.
      const start = () =>
        spawn(process.execPath, ['--disable-sigusr1', ...DATAPLANE_V8_FLAGS, ...(spare ? SPARE_V8_FLAGS : []), ...process.execArgv, ENTRY, ...(spare ? ['--spare'] : [])], {
          argv0: spare ? 'vrouter-dataplane-spare' : 'vrouter-dataplane',
          stdio: ['ignore', 'inherit', 'inherit', made[1], made[3]],
        });
      if (loadCpus === null) child = start();
      else {
        controlCpus = threadCpus();
        child = startOnCpus(loadCpus, start);
      }
    } catch (err) {
      // Out of file descriptors, say: none of those made so far is left open.
      closeAll(made);
      throw err;
    }
    const [supervisorEnd, dataplaneEnd, commandsEnd, dataplaneCommands] = made;
    this.child = child;
    this.commandsFd = commandsEnd;
    // The child has its copies now.
    closeAll([dataplaneEnd, dataplaneCommands]);
    this.channel = new PacketChannel(supervisorEnd, {
      // What the data plane says is checked: it must not take the supervisor down with it.
      message: (m, fds) => {
        closeAll(fds);
        if (typeof m === 'object' && m !== null) this.onEvent(m as DataplaneEvent);
      },
      closed: () => undefined,
      invalid: (why) => log.warn(`the data-plane process (pid ${this.child.pid}) sent ${why}`),
    });
    // A process that could not be started at all (EAGAIN, EMFILE) has no exit: it ends here.
    this.child.on('error', (err) => {
      if (this.child.pid !== undefined || this.exited) return void log.warn(`the data-plane process (pid ${this.child.pid}): ${err.message}`);
      log.error(`a data-plane process could not be started: ${err.message}`);
      this.ended(null, null);
    });
    this.lifeLocks = sharedBuffer(LIFE_BLOCK_BYTES);
    initLifeLocks(this.lifeLocks);
    this.child.on('exit', (code, signal) => this.ended(code, signal));
    this.send({ t: 'init', arenaBytes, nice, lifeLocks: refOf(this.lifeLocks), counterLayout: COUNTER_LAYOUT, controlCpus }, [arenaFd]);
  }

  /** The process is gone (or was never started): its waiters wake, its death is reported. */
  private ended(code: number | null, signal: NodeJS.Signals | null): void {
    this.exited = true;
    this.channel.close();
    for (const wake of this.exitWaiters.splice(0)) wake();
    this.watchStarted.resolve();
    this.reportDeath(code, signal);
    // The watch ends by itself now (the kernel has let every lock of the process go), and
    // the supervisor waits for it: a thread stopped while it declares koffi's functions,
    // by terminate() or by the exit, takes the supervisor down (koffi cannot throw into a
    // thread being stopped, and aborts).
    this.deathWatch?.ref();
    void this.deathWatchEnded().then(() => releaseShared(this.lifeLocks));
  }

  private reportDeath(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.dead) return;
    this.dead = true;
    this.handlers.died(code, signal);
  }

  /** watchForDeath() was called */
  private deathWatchWanted = false;

  /**
   * A thread that waits for the process's locks, and reports the death before the process
   * has ended: started once the main thread holds its life lock (it said 'ready'), now if it
   * has. Until then a death is known once the process has ended. The supervisor asks for it
   * when the process serves, or a spare has loaded: the thread's start (about 100 ms of a
   * control CPU) would otherwise slow the spare's loading.
   */
  watchForDeath(): void {
    this.deathWatchWanted = true;
    if (this.isReady) this.startDeathWatch();
  }

  private startDeathWatch(): void {
    if (this.deathWatch !== null || this.exited || this.child.pid === undefined) return;
    const data: DeathWatchData = { arena: arenaAddress(), lifeLocks: refOf(this.lifeLocks), pid: this.child.pid };
    const watch = new Worker(DEATH_WATCH, { workerData: data, name: 'death-watch' });
    // Never what keeps the supervisor running.
    watch.unref();
    watch.on('message', (m: DeathSeen | DeathWatching) => {
      if ('watching' in m) return this.watchStarted.resolve();
      // Not known from /proc: the exit, which comes next, says how.
      if (m.code !== null || m.signal !== null) this.reportDeath(m.code, m.signal);
    });
    // Its death is then known only once the process has ended, as without the watch.
    watch.on('error', (err) => log.warn(`the death watch of the data plane (pid ${this.child.pid}) failed: ${err.message}; its death will be known once the process has ended`));
    this.deathWatch = watch;
    this.deathWatchExit = new Promise((resolve) => watch.once('exit', resolve));
    void this.deathWatchExit.then(() => this.watchStarted.resolve());
  }

  /**
   * Resolves once the death watch has started and waits for the locks (or has ended, or
   * the process has): its start is Node's bootstrap of a thread, about 100 ms of a control
   * CPU at the control threads' nice, which an upgrade lets pass before its pause.
   */
  watching(): Promise<void> {
    return this.watchStarted.promise;
  }

  /** Resolves with the death watch's exit code once its thread has ended; null if none started. */
  deathWatchEnded(): Promise<number | null> {
    return this.deathWatchExit ?? Promise.resolve(null);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private readyWaiters: ((ok: boolean, refused?: string) => void)[] = [];
  private isReady = false;

  /** It said it was ready (mapped the shared memory), whether it lives now or not. */
  get wasReady(): boolean {
    return this.isReady;
  }

  /** Resolves once the process mapped the shared memory; rejects if it died first or took too long. */
  ready(): Promise<void> {
    if (this.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => settle(false), READY_TIMEOUT_MS);
      const settle = (ok: boolean, refused?: string) => {
        clearTimeout(timer);
        if (ok) resolve();
        else if (refused !== undefined) reject(Object.assign(new Error(`the data-plane process refused to serve: ${refused}`), { code: NOT_STARTED, refused: true }));
        else reject(Object.assign(new Error(`the data-plane process did not start (${this.exited ? `exit code ${this.child.exitCode}, signal ${this.child.signalCode}` : `no answer within ${READY_TIMEOUT_MS} ms`})`), { code: NOT_STARTED }));
      };
      this.readyWaiters.push(settle);
      this.exitWaiters.push(() => settle(false));
    });
  }

  private onEvent(event: DataplaneEvent): void {
    if (event.t === 'ready') {
      this.isReady = true;
      if (this.deathWatchWanted) this.startDeathWatch();
      for (const settle of this.readyWaiters.splice(0)) settle(true);
    } else if (event.t === 'refused') {
      for (const settle of this.readyWaiters.splice(0)) settle(false, event.reason);
    } else if (event.t === 'pmd-error') {
      this.handlers.pmdError(event.pmd, event.incarnation, event.error);
    } else if (event.t === 'pmd-exit') {
      this.handlers.pmdExit(event.pmd, event.incarnation, event.code);
    } else if (event.t === 'pmd-standby') {
      this.handlers.pmdStandby(event.pmd, event.incarnation, event.refused);
    } else if (event.t === 'quiesced') {
      for (const done of this.quiesceWaiters.splice(0)) done();
    }
  }

  private send(message: SupervisorMessage, fds: number[] = []): void {
    this.channel.send(message, fds);
  }

  /** Starts a PMD; in `standby` it loads and waits for go(). */
  spawnPmd(pmd: number, incarnation: number, data: PmdSpawnData, standby = false): void {
    this.send({ t: 'spawn', pmd, incarnation, data: encodeShared(data, true), standby });
  }

  /** The PMDs in standby start, each with its data as it is now (by PMD). */
  go(data: PmdSpawnData[]): void {
    this.send({ t: 'go', data: data.map((d) => encodeShared(d, true)) });
  }

  private readonly quiesceWaiters: (() => void)[] = [];

  /** Every PMD stops between two bursts; resolves when all have (or the process is gone). */
  quiesce(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      this.quiesceWaiters.push(resolve);
      this.exitWaiters.push(resolve);
      this.send({ t: 'quiesce' });
    });
  }

  terminatePmd(pmd: number, incarnation: number): void {
    this.send({ t: 'terminate', pmd, incarnation });
  }

  postTables(update: TablesUpdate): void {
    this.send({ t: 'tables', update: encodeShared(update, true) });
  }

  /**
   * Kills the process (SIGKILL: nothing in it needs a clean end); resolves once it and its
   * death watch have ended (the supervisor's exit stops its threads: one still loading would
   * take the exit down as terminate() does).
   */
  async kill(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((resolve) => this.exitWaiters.push(resolve));
      this.child.kill('SIGKILL');
      await gone;
    }
    await this.deathWatchEnded();
  }

  /**
   * kill() of a process whose command socket never went to the control thread (a spare
   * dropped, not promoted): its end is closed here, where nothing else would close it.
   */
  async discard(): Promise<void> {
    this.closeCommands();
    await this.kill();
  }

  /** Closes the supervisor's end of the command socket, which no control thread took. */
  closeCommands(): void {
    if (this.commandsDiscarded) return;
    this.commandsDiscarded = true;
    closeAll([this.commandsFd]);
  }
}
