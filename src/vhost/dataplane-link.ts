// What the vhost control thread asks of the data plane, and the answers it waits for.
// The PMD that owns a port carries these out between two bursts; they travel as msgpackr
// messages to the data-plane process, which hands each to its PMD on a MessagePort, with a
// doorbell word so that a polling PMD notices them.
import type { MemoryRegion } from '../virtio/guest-memory.ts';
import type { QueueLayout } from '../virtio/split-queue.ts';
import type { PacketRingShape } from '../sys/libc.ts';
import type { XdpLayout, XdpRingName } from '../sys/xdp.ts';
import type { Topology } from '../pipeline/api.ts';

/** An AF_PACKET socket's rings: mapped once by the data plane (by id), viewed by a PMD (hostAddr). */
export interface RingMapping {
  id: number;
  bytes: number;
  /** filled in by the data plane: the mapping's address, as a decimal string */
  hostAddr?: string;
}

/**
 * An AF_XDP socket's UMEM and rings: each mapped once by the data plane (by id), viewed by
 * a PMD (hostAddr, filled in by the data plane).
 */
export type XdpMappings = Record<'umem' | XdpRingName, { id: number; hostAddr?: string }>;

/**
 * Every port command carries the generation of the connection it comes from: a PMD
 * refuses commands of a generation older than the port's, and one that sees a newer
 * generation forgets the older one first. A reset of generation g moves the port to g + 1,
 * so that nothing a closed connection still had in flight (fd numbers that may since have
 * been reused by another tenant) reaches the data path.
 */
export type PmdCommand =
  /** the port's guest memory changed: views built a window per poll round, then queues moved onto it, all or nothing */
  | { t: 'memory'; port: number; gen: number; regions: MemoryRegion[] }
  | { t: 'vring-start'; port: number; gen: number; vring: number; layout: QueueLayout; callFd: number; kickFd: number; mergeable: boolean; offloads: number; inflight: InflightArea | null }
  /** stop processing a vring and report where it stopped (GET_VRING_BASE) */
  | { t: 'vring-stop'; port: number; gen: number; vring: number }
  | { t: 'vring-call'; port: number; gen: number; vring: number; callFd: number }
  | { t: 'vring-kick'; port: number; gen: number; vring: number; kickFd: number }
  /** poll a queue of a TAP port's interface and write frames into it (fd: the queue's; one queue: the interface's) */
  | { t: 'tap-start'; port: number; gen: number; queue: number; fd: number }
  /** poll an AF_PACKET port's rings of one queue and send through them (fd: the queue's socket; ring: its mapping) */
  | { t: 'rings-start'; port: number; gen: number; queue: number; fd: number; shape: PacketRingShape; ring: RingMapping }
  /** poll an AF_XDP port's socket of one queue and send through it (fd: the socket; umemFd: its UMEM's memfd, mapped by the data plane, then closed) */
  | { t: 'xdp-start'; port: number; gen: number; queue: number; fd: number; umemFd: number; layout: XdpLayout; maps: XdpMappings }
  /** forget every vring and the memory of a port (frontend gone or reset) */
  | { t: 'port-reset'; port: number; gen: number }
  /** every port's queues are back: a PMD started to take queues over takes frames again (no port: -1) */
  | { t: 'queues-back'; port: -1; gen: 0 }
  /** vrouter stops (not a restart of the data plane): the stages send their last frames (Plugin.stopping) */
  | { t: 'farewell'; port: -1; gen: 0 }
  /** the PMDs are replaced by ones on the topology `next`: the stages send what the ports that change are owed (Plugin.leaving) */
  | { t: 'leaving'; port: -1; gen: 0; next: Topology };

export const QUEUES_BACK = { t: 'queues-back', port: -1, gen: 0 } as const;
export const FAREWELL = { t: 'farewell', port: -1, gen: 0 } as const;

/** the commands of one port (every one but the PMD's own 'queues-back', 'farewell' and 'leaving') */
export type PortPmdCommand = Exclude<PmdCommand, { t: 'queues-back' } | { t: 'farewell' } | { t: 'leaving' }>;

/** A guest memory region as the control thread names it: the data plane maps its fd. */
export interface GuestRegion {
  /** names the region for as long as it is mapped (the data plane maps each once) */
  id: number;
  guestPhysAddr: number;
  userAddr: number;
  size: number;
  mmapOffset: number;
  fd: number;
}

/** A vring's inflight record (INFLIGHT_SHMFD) as a PMD views it: its area of the mapped file. */
export interface InflightArea {
  /** host address of the area, as a decimal string (a u64) */
  hostAddr: string;
  bytes: number;
}

/** A vring's inflight record as the control thread names it: an area of a file the data plane maps. */
export interface InflightFile {
  region: GuestRegion;
  /** where the vring's area starts in the region, and its length */
  offset: number;
  bytes: number;
}

type VringStart = Extract<PmdCommand, { t: 'vring-start' }>;

/**
 * A PMD command as the control thread sends it: memory as regions of files, and inflight
 * records as areas of a file, not yet mapped.
 */
export type PortCommand =
  | Exclude<PmdCommand, { t: 'memory' } | { t: 'vring-start' }>
  | { t: 'memory'; port: number; gen: number; regions: GuestRegion[] }
  | (Omit<VringStart, 'inflight'> & { inflight: InflightFile | null });

export interface PmdRequest {
  id: number;
  cmd: PmdCommand;
}

export interface PmdReply {
  id: number;
  /** why the command could not be carried out */
  error?: string;
  /**
   * the PMD was gone (it or the data plane restarted): not a refusal. Its successor gets
   * the port's state from the control thread (resync), as it is then.
   */
  restarted?: boolean;
  /** vring-start and vring-stop: the next available index the PMD will process / would have */
  lastAvailIdx?: number;
  /** queues-back: when the PMD took frames again (monotonicMs, comparable across processes) */
  resumedAt?: number;
}

export interface Dataplane {
  /** a vring command, to the PMD that owns the vring's queue pair */
  request(cmd: PortCommand): Promise<PmdReply>;
  /** to one PMD only */
  requestOn(pmd: number, cmd: PortCommand): Promise<PmdReply>;
  /** regions no PMD views any more (each PMD of the port answered a command without them) */
  unmap(ids: readonly number[]): void;
  /** the PMDs that own a queue of the port (port-wide commands go to each) */
  ownersOf(port: number): number[];
  ownerOf(port: number, vring: number): number;
}

/** Doorbell layout (Int32Array over a shared buffer, one per PMD). */
export const DOORBELL_COMMANDS = 0;
/** the port the PMD works on (plain stores): read after a crash to find the likely culprit */
export const DOORBELL_SERVING = 8;
/** counts the PMD's poll rounds (plain stores): a count that stops says the PMD is stuck */
export const DOORBELL_HEARTBEAT = 9;
/** the pipeline stage the PMD is in, or -1: says which plugin a stuck PMD is stuck in */
export const DOORBELL_STAGE = 10;
/** counts the plugin table updates posted to the PMD (its worker port): it drains them when this moves */
export const DOORBELL_TABLES = 11;
/** the generation of the plugin tables the PMD uses (TablesUpdate): older ones may be freed */
export const DOORBELL_TABLES_SEEN = 12;
/**
 * while the PMD writes a guest's call eventfd, its port + 1 (else 0): a heartbeat stopped
 * then is a blocked write (in the line the PMD writes every round, not SLEEPING's, which
 * its peers read)
 */
export const DOORBELL_IN_CALL = 13;
/** the PMD thread's id, to interrupt such a write (interruptThread); 0 if it cannot be */
export const DOORBELL_THREAD = 14;
/** the port + 1 of a call write that was interrupted (it had blocked), until the supervisor takes it */
export const DOORBELL_CALL_INTERRUPTED = 15;
/** 1 while the PMD sleeps: whoever gives it work then signals its wake eventfd */
export const DOORBELL_SLEEPING = 16;
export const DOORBELL_WORDS = 32;

/** What a PMD's peers need to wake it. */
export interface PmdWaker {
  doorbell: ArrayBufferLike;
  wakeFd: number;
}
