// The socket side of one port: as server, a listening UNIX socket that takes one frontend
// at a time; as client, a connection to the frontend's socket, retried while it is absent.
// Either way a new connection after a disconnect starts the device from scratch.
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { accept, closeAll, unixConnect, unixListen, watchReadable, type Watch } from '../sys/libc.ts';
import type { Dataplane } from './dataplane-link.ts';
import { VhostConnection, type Logger, type PortSettings } from './connection.ts';

export interface EndpointSettings extends PortSettings {
  socket: string;
  mode: 'server' | 'client';
}

const RECONNECT_MS = 1000;
const HOLD_BACK_MS = 1000;

export class PortEndpoint {
  private readonly settings: EndpointSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private listenFd = -1;
  private listenWatch: Watch | null = null;
  private connection: VhostConnection | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private waiting: { fd: number; timer: NodeJS.Timeout } | null = null;
  private stopped = false;

  constructor(settings: EndpointSettings, dataplane: Dataplane, log: Logger) {
    this.settings = settings;
    this.dataplane = dataplane;
    this.log = log;
  }

  /** Server: creates the socket (throws if the path is taken by anything but a socket). */
  start(): void {
    if (this.settings.mode === 'client') {
      this.connect();
      return;
    }
    mkdirSync(dirname(this.settings.socket), { recursive: true });
    removeStaleSocket(this.settings.socket);
    this.listenFd = unixListen(this.settings.socket);
    this.listenWatch = watchReadable(this.listenFd, () => this.acceptPending());
    this.log.info(`port ${this.settings.name}: listening on ${this.settings.socket}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.listenWatch?.stop();
    if (this.listenFd >= 0) {
      closeAll([this.listenFd]);
      this.listenFd = -1;
      try {
        unlinkSync(this.settings.socket);
      } catch {
        // already gone
      }
    }
    await this.connection?.close('vrouter is shutting down');
  }

  /** Gives a restarted PMD back what it ran for this port. */
  async resync(pmd: number): Promise<void> {
    await this.connection?.resync(pmd);
  }

  private acceptPending(): void {
    for (;;) {
      let fd: number;
      try {
        fd = accept(this.listenFd);
      } catch (err) {
        this.log.warn(`port ${this.settings.name}: ${(err as Error).message}`);
        return;
      }
      if (fd < 0) return;
      if (this.stopped) {
        closeAll([fd]);
      } else if (this.connection === null) {
        this.log.info(`port ${this.settings.name}: frontend connected`);
        this.attach(fd);
      } else {
        this.holdBack(fd);
      }
    }
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
      this.log.warn(`port ${this.settings.name}: refused a waiting frontend for a newer one`);
    }
    const timer = setTimeout(() => {
      this.waiting = null;
      this.log.warn(`port ${this.settings.name}: refused a second frontend (one is connected)`);
      closeAll([fd]);
    }, HOLD_BACK_MS);
    this.waiting = { fd, timer };
  }

  private connect(): void {
    if (this.stopped) return;
    let fd: number;
    try {
      fd = unixConnect(this.settings.socket);
    } catch {
      this.retryTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      return;
    }
    this.log.info(`port ${this.settings.name}: connected to ${this.settings.socket}`);
    this.attach(fd);
  }

  private attach(fd: number): void {
    this.connection = new VhostConnection(fd, this.settings, this.dataplane, this.log, (reason) => {
      this.connection = null;
      this.log.info(`port ${this.settings.name}: connection closed: ${reason}`);
      if (this.waiting !== null) {
        const { fd, timer } = this.waiting;
        clearTimeout(timer);
        this.waiting = null;
        if (this.stopped) closeAll([fd]);
        else {
          this.log.info(`port ${this.settings.name}: frontend connected`);
          this.attach(fd);
        }
      } else if (this.settings.mode === 'client' && !this.stopped) {
        this.retryTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      }
    });
  }
}

/** A socket file left by an earlier run is replaced; any other file at the path is an error. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket`);
  unlinkSync(path);
}
