// What the vhost control thread asks of the data plane, and the answers it waits for.
// The PMD that owns a port carries these out between two bursts; they travel as msgpackr
// messages on a MessagePort, with a doorbell word so that a polling PMD notices them.
import type { MemoryRegion } from '../virtio/guest-memory.ts';
import type { QueueLayout } from '../virtio/split-queue.ts';

export type PmdCommand =
  /** the port's guest memory changed: rebuild views and running queues on it ([] = none) */
  | { t: 'memory'; port: number; regions: MemoryRegion[] }
  | { t: 'vring-start'; port: number; vring: number; layout: QueueLayout; callFd: number; kickFd: number; mergeable: boolean }
  /** stop processing a vring and report where it stopped (GET_VRING_BASE) */
  | { t: 'vring-stop'; port: number; vring: number }
  | { t: 'vring-call'; port: number; vring: number; callFd: number }
  /** forget every vring and the memory of a port (frontend gone or reset) */
  | { t: 'port-reset'; port: number };

export interface PmdRequest {
  id: number;
  cmd: PmdCommand;
}

export interface PmdReply {
  id: number;
  /** why the command could not be carried out */
  error?: string;
  /** vring-stop: the next available index the PMD would have processed */
  lastAvailIdx?: number;
}

export interface Dataplane {
  /** to the PMD(s) concerned: the owner of the vring, or every owner of the port's queues */
  request(cmd: PmdCommand): Promise<PmdReply>;
  /** to one PMD only */
  requestOn(pmd: number, cmd: PmdCommand): Promise<PmdReply>;
  ownerOf(port: number, vring: number): number;
}

/** Doorbell layout (Int32Array over a SharedArrayBuffer, one per PMD). */
export const DOORBELL_COMMANDS = 0;
/** 1 while the PMD sleeps: whoever gives it work then signals its wake eventfd */
export const DOORBELL_SLEEPING = 16;
export const DOORBELL_WORDS = 32;

/** What a PMD's peers need to wake it. */
export interface PmdWaker {
  doorbell: SharedArrayBuffer;
  wakeFd: number;
}
