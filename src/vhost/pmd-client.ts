// The control thread's side of the PMD commands: numbered requests over the socket to the
// data-plane process, each answered by its PMD between two bursts. The fds a command names
// travel with it (SCM_RIGHTS); the data plane keeps its own copies. A request is never given
// up on while its PMD lives: the caller closes fds and unmaps memory only after the answer,
// so an answer that is merely late must not be mistaken for one that will never come. A PMD
// that dies fails its pending requests at once (a dead thread holds nothing), and so does
// the whole data plane.
import type { Log } from '../log.ts';
import { closeAll } from '../sys/libc.ts';
import { PacketChannel } from '../sys/packet-channel.ts';
import type { CommandMessage, CommandReply, WireCommand } from '../dataplane/process-link.ts';
import type { Dataplane, PortCommand, PmdReply } from './dataplane-link.ts';

/** A PMD slower than this to answer is reported in the log (it is still waited for). */
const SLOW_REPLY_MS = 1000;

export class PmdClient implements Dataplane {
  private channel: PacketChannel | null = null;
  private queueOwner: readonly (readonly number[])[];
  /** per PMD: which start of it requests go to (the data plane refuses them for another) */
  private incarnations: number[];
  private readonly waiting = new Map<number, { pmd: number; finish: (reply: PmdReply) => void }>();
  private nextId = 1;
  private readonly log: Log;

  constructor(commandsFd: number, queueOwner: readonly (readonly number[])[], incarnations: number[], log: Log) {
    this.queueOwner = queueOwner;
    this.incarnations = [...incarnations];
    this.log = log;
    this.connect(commandsFd);
  }

  private connect(fd: number): void {
    const channel: PacketChannel = new PacketChannel(fd, {
      message: (m, fds) => {
        // The data plane's word, checked: it runs guests' traffic, and the control thread must outlive it.
        closeAll(fds);
        const reply = (m as CommandReply | null)?.reply;
        if (typeof reply === 'object' && reply !== null) this.waiting.get(reply.id)?.finish(reply);
      },
      invalid: (why) => this.log.warn(`the data plane sent ${why}`),
      closed: () => {
        if (this.channel !== channel) return;
        this.channel = null;
        this.failWhere(() => true, 'the data plane restarted');
      },
    });
    this.channel = channel;
  }

  /** A vring command, to the PMD that owns the vring's queue pair. */
  request(cmd: PortCommand): Promise<PmdReply> {
    const vring = 'vring' in cmd ? cmd.vring : 0;
    return this.send(this.queueOwner[cmd.port][vring >> 1], cmd);
  }

  /** Every PMD, by index. */
  pmds(): number[] {
    return this.incarnations.map((_, pmd) => pmd);
  }

  ownersOf(port: number): number[] {
    return [...new Set(this.queueOwner[port] ?? [])];
  }

  private send(pmd: number, cmd: PortCommand): Promise<PmdReply> {
    const id = this.nextId++;
    const channel = this.channel;
    if (channel === null) return Promise.resolve({ id, error: 'the data plane is restarting', restarted: true });
    const { wire, fds } = onWire(cmd);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.log.warn(`pmd${pmd} has not answered ${cmd.t} (port ${cmd.port}) for ${SLOW_REPLY_MS} ms; still waiting`), SLOW_REPLY_MS);
      const finish = (reply: PmdReply) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(reply);
      };
      this.waiting.set(id, { pmd, finish });
      const message: CommandMessage = { t: 'command', id, pmd, incarnation: this.incarnations[pmd], cmd: wire };
      channel.send(message, fds);
    });
  }

  private failWhere(which: (pmd: number) => boolean, error: string): void {
    for (const [id, w] of this.waiting) if (which(w.pmd)) w.finish({ id, error, restarted: true });
  }

  /** A PMD started again: requests to the dead one fail at once. */
  replaceLink(pmd: number, incarnation: number): void {
    this.incarnations[pmd] = incarnation;
    this.failWhere((p) => p === pmd, `PMD ${pmd} restarted`);
  }

  /**
   * Every PMD started again, on a new layout (ports added or removed, queues moved) or in
   * a new data-plane process (`commandsFd`): which start of each requests go to, and which
   * PMD owns each queue pair.
   */
  replaceAll(incarnations: readonly number[], queueOwner: readonly (readonly number[])[], commandsFd?: number): void {
    if (commandsFd !== undefined) {
      const old = this.channel;
      this.channel = null;
      old?.close();
      this.failWhere(() => true, 'the data plane restarted');
      this.connect(commandsFd);
    }
    incarnations.forEach((inc, pmd) => this.replaceLink(pmd, inc));
    this.queueOwner = queueOwner;
  }

  /** The PMD that owns a vring's queue pair. */
  ownerOf(port: number, vring: number): number {
    return this.queueOwner[port][vring >> 1];
  }

  /** A command for one PMD only (a restarted one being given its state back). */
  requestOn(pmd: number, cmd: PortCommand): Promise<PmdReply> {
    return this.send(pmd, cmd);
  }

  /** Guest memory regions no PMD views any more: the data plane unmaps them. */
  unmap(ids: readonly number[]): void {
    if (ids.length > 0) this.channel?.send({ t: 'unmap', ids: [...ids] } satisfies CommandMessage);
  }

  close(): void {
    this.channel?.close();
    this.channel = null;
  }
}

/** The command as it travels: each fd it names replaced by its index among the fds sent. */
function onWire(cmd: PortCommand): { wire: WireCommand; fds: number[] } {
  const fds: number[] = [];
  const index = (fd: number) => (fd < 0 ? -1 : fds.push(fd) - 1);
  switch (cmd.t) {
    case 'memory':
      return { wire: { ...cmd, regions: cmd.regions.map((r) => ({ ...r, fd: index(r.fd) })) }, fds };
    case 'vring-start': {
      const inflight = cmd.inflight && { ...cmd.inflight, region: { ...cmd.inflight.region, fd: index(cmd.inflight.region.fd) } };
      return { wire: { ...cmd, callFd: index(cmd.callFd), kickFd: index(cmd.kickFd), inflight }, fds };
    }
    case 'vring-call':
      return { wire: { ...cmd, callFd: index(cmd.callFd) }, fds };
    case 'vring-kick':
      return { wire: { ...cmd, kickFd: index(cmd.kickFd) }, fds };
    case 'tap-start':
    case 'rings-start':
      return { wire: { ...cmd, fd: index(cmd.fd) }, fds };
    case 'xdp-start':
      return { wire: { ...cmd, fd: index(cmd.fd), umemFd: index(cmd.umemFd) }, fds };
    default:
      return { wire: cmd, fds };
  }
}
