// The socket side of one port: as server, a listening UNIX socket that takes one frontend
// at a time; as client, a connection to the frontend's socket, retried while it is absent.
// Either way a new connection after a disconnect starts the device from scratch, and the
// frontend's process (SO_PEERCRED) is logged and, if the port names a uid, checked.
import { mkdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { accept, closeAll, peerCredentials, removeStaleSocket, unixConnect, unixListen, watchReadable, type Watch } from '../sys/libc.ts';
import type { MirrorOf } from '../control/config.ts';
import type { Dataplane } from './dataplane-link.ts';
import { VhostConnection, type DeviceState, type Logger, type PortSettings } from './connection.ts';
import { COMMAND_COST, CONNECTION_COST, ControlBudget, MESSAGES_PER_SECOND } from './control-budget.ts';

export interface EndpointSettings extends PortSettings {
  /** vhost-user: a socket and its frontend; tap, af_packet, af_xdp: a kernel interface (src/uplink) */
  type: 'vhost-user' | 'tap' | 'af_packet' | 'af_xdp';
  /** tap, af_packet, af_xdp: the interface's name */
  interface: string | null;
  socket: string;
  mode: 'server' | 'client';
  /** server mode: permission bits and group of the socket file */
  socketMode: number;
  socketGroup: number | null;
  /** the uid a frontend must run as, or null for any */
  peerUid: number | null;
  /** tap: the port this one mirrors in Linux, the TAP interface then made in the mirror's namespace */
  mirror: MirrorOf | null;
}

const RECONNECT_MS = 1000;
/** Quarantine: 5 s the first time, doubling per quarantine within 10 minutes, at most 5 minutes. */
const QUARANTINE_FIRST_S = 5;
const QUARANTINE_MAX_S = 300;
const QUARANTINE_MEMORY_MS = 600_000;
/**
 * Fds of files on FUSE (or where vrouter cannot tell) a port's frontends may make vrouter
 * keep open for good (each costs the control thread an fd: message-reader.ts), eight
 * messages' worth: then the port refuses every frontend until it is removed and added
 * again, or vrouter restarts. A frontend that means well sends none, or a few by mistake,
 * and is told why each time.
 */
export const KEPT_FILES_MAX = 64;
const HOLD_BACK_MS = 1000;
const THROTTLED_LOG_MS = 10_000;

/** A port's connection as the admin endpoint shows it. */
export interface PortState {
  connected: boolean;
  /** seconds the port still refuses frontends (0: none) */
  quarantinedForS: number;
  /** why the port refuses every frontend until it is removed and added again, or null */
  refusedForGood: string | null;
  /** times its frontends had to wait for the port's share of the control thread */
  controlThrottled: number;
  device: DeviceState | null;
}

export class PortEndpoint {
  private readonly settings: EndpointSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private listenFd = -1;
  /** the first directory start() made for the socket (none: undefined), removed with the socket while empty */
  private madeDir: string | undefined;
  private listenWatch: Watch | null = null;
  private connection: VhostConnection | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private waiting: { fd: number; timer: NodeJS.Timeout } | null = null;
  private stopped = false;
  private released = false;
  /** connection generations, one per connection and device reset (see PmdCommand) */
  private generation = 0;
  /** when the port was quarantined recently, and until when it refuses frontends */
  private quarantines: number[] = [];
  private quarantinedUntil = 0;
  /** fds of files on FUSE its frontends sent, which vrouter keeps open for good */
  private filesKept = 0;
  private refusedForGood: string | null = null;
  /** kept across connections: a frontend that reconnects does not get a new one */
  private readonly budget = new ControlBudget(() => this.sayThrottled());
  /** when the log last said the port waits for its budget, and its count then */
  private throttledSaid = { at: -Infinity, count: 0 };
  /** accepting waits for the budget until this timer fires */
  private waitForBudget: NodeJS.Timeout | null = null;

  constructor(settings: EndpointSettings, dataplane: Dataplane, log: Logger) {
    this.settings = settings;
    this.dataplane = dataplane;
    this.log = log;
  }

  get name(): string {
    return this.settings.name;
  }

  /** What a change of ports matches endpoints by: two ports cannot have the same socket. */
  get key(): string {
    return this.settings.socket;
  }

  /** Whether a frontend is connected, its device's state, and any quarantine. */
  state(): PortState {
    const quarantine = Math.max(0, Math.ceil((this.quarantinedUntil - Date.now()) / 1000));
    return { connected: this.connection !== null, quarantinedForS: quarantine, refusedForGood: this.refusedForGood, controlThrottled: this.budget.throttled, device: this.connection?.state() ?? null };
  }

  /**
   * Server: creates the socket (throws if the path is taken by anything but a socket).
   * `held`: frontends wait in the backlog (client mode: no connection is made) until
   * release(): a port added at run time takes none before the PMDs know it.
   */
  start(held = false): void {
    if (this.settings.mode === 'server') {
      this.madeDir = mkdirSync(dirname(this.settings.socket), { recursive: true });
      try {
        removeStaleSocket(this.settings.socket);
        this.listenFd = unixListen(this.settings.socket, { mode: this.settings.socketMode, gid: this.settings.socketGroup });
      } catch (err) {
        this.removeMadeDirs();
        throw err;
      }
      this.log.info(`port ${this.settings.name}: listening on ${this.settings.socket}`, 'port.listening', { port: this.settings.name });
    }
    if (!held) this.release();
  }

  /**
   * The directories start() made, from the socket's up to the first made, each while it is
   * empty (another port's socket may be there): a port refused or removed leaves none behind.
   */
  private removeMadeDirs(): void {
    const top = this.madeDir;
    this.madeDir = undefined;
    if (top === undefined) return;
    for (let dir = dirname(this.settings.socket); ; dir = dirname(dir)) {
      try {
        rmdirSync(dir);
      } catch {
        return;
      }
      if (dir === top) return;
    }
  }

  /** Starts taking frontends (see start). */
  release(): void {
    if (this.stopped || this.released) return;
    this.released = true;
    if (this.settings.mode === 'client') this.connect();
    else this.listenWatch = watchReadable(this.listenFd, () => this.acceptPending());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.waitForBudget) clearTimeout(this.waitForBudget);
    if (this.waiting !== null) {
      clearTimeout(this.waiting.timer);
      closeAll([this.waiting.fd]);
      this.waiting = null;
    }
    this.listenWatch?.stop();
    if (this.listenFd >= 0) {
      closeAll([this.listenFd]);
      this.listenFd = -1;
      try {
        unlinkSync(this.settings.socket);
      } catch {
        // already gone
      }
      this.removeMadeDirs();
    }
    await this.connection?.close('vrouter is shutting down');
  }

  /**
   * Gives a restarted PMD back what it ran for this port, unless the PMD died of an error
   * while serving this port: then the port is quarantined instead (its frontend is
   * disconnected and new ones are refused for a while, longer each time), so that one
   * tenant cannot crash a PMD over and over.
   */
  async resync(pmd: number, culprit: string | null, sent?: () => void): Promise<void> {
    if (culprit === null) {
      await this.connection?.resync(pmd, sent);
      return;
    }
    await this.quarantine(`pmd${pmd} died while serving it (${culprit})`);
  }

  /**
   * After the data-plane process died: a frontend that shrank a memory file under it (the
   * SIGBUS it dies of) is quarantined; returns why, or null.
   */
  async auditMemory(): Promise<string | null> {
    const problem = this.connection?.memoryProblem() ?? null;
    if (problem !== null) await this.quarantine(`its frontend broke its guest memory: ${problem}`);
    return problem;
  }

  /** Disconnects the frontend and refuses new ones for a while, longer each time. */
  async quarantine(why: string): Promise<void> {
    const now = Date.now();
    this.quarantines = this.quarantines.filter((t) => now - t < QUARANTINE_MEMORY_MS);
    this.quarantines.push(now);
    const seconds = Math.min(QUARANTINE_MAX_S, QUARANTINE_FIRST_S * 2 ** (this.quarantines.length - 1));
    this.quarantinedUntil = now + seconds * 1000;
    this.log.warn(`port ${this.settings.name}: quarantined for ${seconds} s: ${why}`, 'port.quarantined', { port: this.settings.name, seconds });
    await this.connection?.close(`quarantined: ${why}`);
  }

  /**
   * Its frontend sent `count` fds of files on FUSE (or where vrouter cannot tell), kept open
   * for good (message-reader.ts), and its connection is closing for it. Once its frontends
   * made vrouter keep KEPT_FILES_MAX the port refuses every frontend: what one port's
   * frontends can make vrouter hold is bounded, and no other port's pays for it.
   */
  private keptFiles(count: number): void {
    this.filesKept += count;
    if (this.filesKept < KEPT_FILES_MAX) return;
    this.refusedForGood = `its frontends sent ${this.filesKept} fds of files whose close may wait for a FUSE daemon, which vrouter keeps open for good: the most a port's may`;
    this.log.warn(`port ${this.settings.name}: refuses every frontend until the port is removed and added again, or vrouter restarts: ${this.refusedForGood}`, 'port.quarantined', { port: this.settings.name, seconds: null });
  }

  /** Whether the port refuses frontends for now (quarantine), or for good. */
  private refusing(fd: number): boolean {
    if (this.refusedForGood !== null) {
      closeAll([fd]);
      this.log.warn(`port ${this.settings.name}: refused a frontend: the port refuses every frontend until it is removed and added again (${this.refusedForGood})`, 'frontend.refused', { port: this.settings.name });
      return true;
    }
    if (Date.now() >= this.quarantinedUntil) return false;
    closeAll([fd]);
    this.log.warn(`port ${this.settings.name}: refused a frontend: quarantined for ${Math.ceil((this.quarantinedUntil - Date.now()) / 1000)} s more`, 'frontend.refused', { port: this.settings.name });
    return true;
  }

  private acceptPending(): void {
    for (;;) {
      if (!this.budget.holds(CONNECTION_COST)) return this.awaitBudget();
      let fd: number;
      try {
        fd = accept(this.listenFd);
      } catch (err) {
        this.log.warn(`port ${this.settings.name}: ${(err as Error).message}`);
        return;
      }
      if (fd < 0) return;
      this.budget.spend(CONNECTION_COST);
      if (this.stopped) {
        closeAll([fd]);
      } else if (this.refusing(fd) || !this.admit(fd)) {
        continue;
      } else if (this.connection === null) {
        this.attach(fd);
      } else {
        this.holdBack(fd);
      }
    }
  }

  /** Said once every THROTTLED_LOG_MS at most, with how often it happened meanwhile. */
  private sayThrottled(): void {
    const now = performance.now();
    if (now - this.throttledSaid.at < THROTTLED_LOG_MS) return;
    const waits = this.budget.throttled - this.throttledSaid.count;
    this.throttledSaid = { at: now, count: this.budget.throttled };
    this.log.warn(
      `port ${this.settings.name}: its frontend connects or sends faster than the port's share of the control thread (${MESSAGES_PER_SECOND} messages a second, a connection counting as ${CONNECTION_COST}, a command to a PMD as ${COMMAND_COST}): it waits (${waits} times since this was last said)`,
      'port.throttled',
      { port: this.settings.name, waits },
    );
  }

  /** Connections wait in the backlog until the port's budget holds another. */
  private awaitBudget(): void {
    this.listenWatch?.pause();
    this.waitForBudget = setTimeout(() => {
      this.waitForBudget = null;
      this.listenWatch?.resume();
    }, Math.ceil(this.budget.msUntil(CONNECTION_COST)));
  }

  /**
   * A frontend that reconnects at once (QEMU restarted) may arrive before the old
   * connection's hang-up has been handled: it waits a moment for the port to be free.
   * One frontend per port: if the old connection stays, the new one is refused. Of two
   * waiting, the newer one is kept: the older has most likely given up already.
   */
  private holdBack(fd: number): void {
    if (this.waiting !== null) {
      clearTimeout(this.waiting.timer);
      closeAll([this.waiting.fd]);
      this.log.warn(`port ${this.settings.name}: refused a waiting frontend for a newer one`, 'frontend.refused', { port: this.settings.name });
    }
    const timer = setTimeout(() => {
      this.waiting = null;
      this.log.warn(`port ${this.settings.name}: refused a second frontend (one is connected)`, 'frontend.refused', { port: this.settings.name });
      closeAll([fd]);
    }, HOLD_BACK_MS);
    this.waiting = { fd, timer };
  }

  private connect(): void {
    if (this.stopped || this.refusedForGood !== null) return;
    let fd: number;
    try {
      fd = unixConnect(this.settings.socket);
    } catch {
      this.retryTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      return;
    }
    this.log.info(`port ${this.settings.name}: connected to ${this.settings.socket}`, 'frontend.connected', { port: this.settings.name });
    if (!this.refusing(fd) && this.admit(fd)) this.attach(fd);
    else this.retryTimer = setTimeout(() => this.connect(), RECONNECT_MS);
  }

  /**
   * Logs who the frontend is and, if the port names a uid, closes the connection at once
   * when the frontend runs as another user. The kernel fills SO_PEERCRED in: the peer
   * cannot forge it.
   */
  private admit(fd: number): boolean {
    const name = this.settings.name;
    let who: string;
    let uid: number;
    try {
      const cred = peerCredentials(fd);
      who = `pid ${cred.pid} uid ${cred.uid} gid ${cred.gid}`;
      uid = cred.uid;
    } catch (err) {
      closeAll([fd]);
      this.log.warn(`port ${name}: refused a frontend whose credentials cannot be read: ${(err as Error).message}`, 'frontend.refused', { port: name });
      return false;
    }
    if (this.settings.peerUid !== null && uid !== this.settings.peerUid) {
      closeAll([fd]);
      this.log.warn(`port ${name}: refused a frontend (${who}): uid ${uid} is not peerUid ${this.settings.peerUid}`, 'frontend.refused', { port: name, uid });
      return false;
    }
    this.log.info(`port ${name}: frontend connected: ${who}`, 'frontend.connected', { port: name });
    return true;
  }

  private attach(fd: number): void {
    const onClosed = (reason: string) => {
      this.connection = null;
      this.log.info(`port ${this.settings.name}: connection closed: ${reason}`, 'frontend.gone', { port: this.settings.name, reason });
      if (this.waiting !== null) {
        const { fd, timer } = this.waiting;
        clearTimeout(timer);
        this.waiting = null;
        // A quarantine refuses the frontend's waiting connection too: it would be its way back.
        if (this.stopped) closeAll([fd]);
        else if (!this.refusing(fd)) {
          this.log.info(`port ${this.settings.name}: frontend connected`, 'frontend.connected', { port: this.settings.name });
          this.attach(fd);
        }
      } else if (this.settings.mode === 'client' && !this.stopped) {
        this.retryTimer = setTimeout(() => this.connect(), Math.max(RECONNECT_MS, this.quarantinedUntil - Date.now()));
      }
    };
    this.connection = new VhostConnection(fd, this.settings, this.dataplane, this.log, { nextGeneration: () => ++this.generation, onClosed, onKeptFiles: (count) => this.keptFiles(count), budget: this.budget });
  }
}
