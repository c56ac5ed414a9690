// The control thread's side of the PMD command channel: numbered requests, each answered
// by the PMD between two bursts. A request is never given up on while the PMD lives: the
// caller closes fds and unmaps memory only after the answer, so an answer that is merely
// late must not be mistaken for one that will never come. A PMD that dies fails its
// pending requests at once (a dead thread holds nothing).
import type { MessagePort } from 'node:worker_threads';
import type { Log } from '../log.ts';
import { pack, unpack } from 'msgpackr';
import { eventfdSignal } from '../sys/libc.ts';
import { DOORBELL_COMMANDS, DOORBELL_SLEEPING, type Dataplane, type PmdCommand, type PmdReply } from './dataplane-link.ts';

export interface PmdLink {
  commands: MessagePort;
  doorbell: SharedArrayBuffer;
  wakeFd: number;
}

/** A PMD slower than this to answer is reported in the log (it is still waited for). */
const SLOW_REPLY_MS = 1000;

export class PmdClient implements Dataplane {
  private links: { commands: MessagePort; doorbell: Int32Array; wakeFd: number }[];
  private queueOwner: readonly (readonly number[])[];
  private readonly waiting = new Map<number, (reply: PmdReply) => void>();
  private readonly pendingPmd = new Map<number, number>();
  private nextId = 1;
  private readonly log: Log;

  constructor(links: readonly PmdLink[], queueOwner: readonly (readonly number[])[], log: Log) {
    this.queueOwner = queueOwner;
    this.log = log;
    this.links = links.map((l) => ({ commands: l.commands, doorbell: new Int32Array(l.doorbell), wakeFd: l.wakeFd }));
    for (const l of this.links) this.listen(l.commands);
  }

  private listen(commands: MessagePort): void {
    commands.on('message', (data: Uint8Array) => {
      const reply = unpack(data) as PmdReply;
      this.waiting.get(reply.id)?.(reply);
    });
  }

  /** A vring command, to the PMD that owns the vring's queue pair. */
  request(cmd: PmdCommand): Promise<PmdReply> {
    const vring = 'vring' in cmd ? cmd.vring : 0;
    return this.send(this.queueOwner[cmd.port][vring >> 1], cmd);
  }

  ownersOf(port: number): number[] {
    return [...new Set(this.queueOwner[port] ?? [])];
  }

  private send(pmd: number, cmd: PmdCommand): Promise<PmdReply> {
    const link = this.links[pmd];
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.log.warn(`pmd${pmd} has not answered ${cmd.t} (port ${cmd.port}) for ${SLOW_REPLY_MS} ms; still waiting`), SLOW_REPLY_MS);
      const finish = (reply: PmdReply) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        this.pendingPmd.delete(id);
        resolve(reply);
      };
      this.waiting.set(id, finish);
      this.pendingPmd.set(id, pmd);
      link.commands.postMessage(pack({ id, cmd }));
      // The PMD reads the port only when this word changes. The doorbell store comes
      // before the sleeping check: either the PMD sees it before sleeping, or we see it asleep.
      Atomics.add(link.doorbell, DOORBELL_COMMANDS, 1);
      if (Atomics.load(link.doorbell, DOORBELL_SLEEPING) === 1) eventfdSignal(link.wakeFd);
    });
  }

  /** A restarted PMD's new command port: requests to the dead one fail at once. */
  replaceLink(pmd: number, commands: MessagePort): void {
    const old = this.links[pmd];
    old.commands.close();
    for (const [id, pending] of this.waiting) if (this.pendingPmd.get(id) === pmd) pending({ id, error: `PMD ${pmd} restarted` });
    this.links[pmd] = { ...old, commands };
    this.listen(commands);
  }

  /**
   * Every PMD restarted on a new layout (ports added or removed, queues moved): their new
   * command ports, and which PMD now owns each queue pair.
   */
  replaceAll(commands: readonly MessagePort[], queueOwner: readonly (readonly number[])[]): void {
    commands.forEach((c, pmd) => this.replaceLink(pmd, c));
    this.queueOwner = queueOwner;
  }

  /** The PMD that owns a vring's queue pair. */
  ownerOf(port: number, vring: number): number {
    return this.queueOwner[port][vring >> 1];
  }

  /** A command for one PMD only (a restarted one being given its state back). */
  requestOn(pmd: number, cmd: PmdCommand): Promise<PmdReply> {
    return this.send(pmd, cmd);
  }

  close(): void {
    for (const l of this.links) l.commands.close();
  }
}
