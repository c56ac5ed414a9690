// The control thread's side of the PMD command channel: numbered requests, each answered
// by the PMD between two bursts, or failed after a deadline if the PMD does not answer.
import type { MessagePort } from 'node:worker_threads';
import { pack, unpack } from 'msgpackr';
import { eventfdSignal } from '../sys/libc.ts';
import { DOORBELL_COMMANDS, DOORBELL_SLEEPING, type Dataplane, type PmdCommand, type PmdReply } from './dataplane-link.ts';

export interface PmdLink {
  commands: MessagePort;
  doorbell: SharedArrayBuffer;
  wakeFd: number;
}

const REPLY_TIMEOUT_MS = 3000;

export class PmdClient implements Dataplane {
  private links: { commands: MessagePort; doorbell: Int32Array; wakeFd: number }[];
  private readonly queueOwner: readonly (readonly number[])[];
  private readonly waiting = new Map<number, (reply: PmdReply) => void>();
  private readonly pendingPmd = new Map<number, number>();
  private nextId = 1;

  constructor(links: readonly PmdLink[], queueOwner: readonly (readonly number[])[]) {
    this.queueOwner = queueOwner;
    this.links = links.map((l) => ({ commands: l.commands, doorbell: new Int32Array(l.doorbell), wakeFd: l.wakeFd }));
    for (const l of this.links) this.listen(l.commands);
  }

  private listen(commands: MessagePort): void {
    commands.on('message', (data: Uint8Array) => {
      const reply = unpack(data) as PmdReply;
      this.waiting.get(reply.id)?.(reply);
    });
  }

  /**
   * A vring command goes to the PMD that owns its queue pair; a port-wide one (memory,
   * reset) to every PMD owning a queue of the port, and fails if any of them fails.
   */
  async request(cmd: PmdCommand): Promise<PmdReply> {
    const owners = this.queueOwner[cmd.port];
    if (cmd.t === 'memory' || cmd.t === 'port-reset') {
      const replies = await Promise.all([...new Set(owners)].map((pmd) => this.send(pmd, cmd)));
      return replies.find((r) => r.error !== undefined) ?? replies[0];
    }
    return this.send(owners[cmd.vring >> 1], cmd);
  }

  private send(pmd: number, cmd: PmdCommand): Promise<PmdReply> {
    const link = this.links[pmd];
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish({ id, error: `PMD ${pmd} did not answer ${cmd.t} within ${REPLY_TIMEOUT_MS} ms` }), REPLY_TIMEOUT_MS);
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
