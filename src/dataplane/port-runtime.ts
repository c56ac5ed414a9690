// How a PMD is configured, and a port as one PMD sees it: its memory views, the vrings it
// runs and the frames waiting to be written to it in the current burst.
import type { GuestMemory, GuestMemoryBuilder } from '../virtio/guest-memory.ts';
import type { QueueLayout } from '../virtio/split-queue.ts';
import type { PmdWaker, PortPmdCommand } from '../vhost/dataplane-link.ts';
import type { PacketPool, PoolMemory } from './packet-pool.ts';
import type { QueueOwner } from './guest-io.ts';
import { BATCH_MAX } from './batch.ts';

export interface PmdPortConfig {
  index: number;
  name: string;
  /** index into PmdConfig.bridges, or -1 */
  bridge: number;
  /** largest frame without the virtio-net header: MTU + Ethernet header + a VLAN tag */
  maxFrame: number;
  /** a VLAN port's parent (whose queues carry its frames, tagged), or -1 */
  parent: number;
  /** a VLAN port's VLAN ID, or 0 */
  vlan: number;
}

export interface PmdConfig {
  id: number;
  cpu: number;
  pmdCount: number;
  ports: PmdPortConfig[];
  /** port indices of each bridge: where an EGRESS_FLOOD frame goes */
  bridges: number[][];
  /** empty polls before the PMD starts sleeping, and the longest sleep (µs); 0 = pure polling */
  idleSpinRounds: number;
  idleSleepMaxUs: number;
}

/** The SharedArrayBuffers all PMDs work on together. */
export interface PmdShared {
  pool: PoolMemory;
  counters: ArrayBufferLike;
  /** dataRings[x][y]: frames PMD x hands to PMD y (null where x = y) */
  dataRings: (ArrayBufferLike | null)[][];
  /** returnRings[x][y]: buffers of PMD y that PMD x has freed */
  returnRings: (ArrayBufferLike | null)[][];
  dataRingCapacity: number;
  /** Int32 per port and PMD: 1 while that PMD runs a guest RX queue of the port */
  rxQueueHolders: ArrayBufferLike;
  /** each PMD's doorbell and wake eventfd */
  wakers: PmdWaker[];
  /** per PMD, LOAD_FIELDS float64 written by that PMD only: its busy time (ms), the packets it took, its busy rounds */
  load: ArrayBufferLike;
}

/** A kernel interface a PMD polls and writes (tap-io.ts, packet-ring.ts). */
export interface Uplink {
  /** what an idle PMD waits on: readable when a frame waits */
  readonly fd: number;
  /** up to `max` frames into packet buffers, their handles from `start`; returns how many */
  receive(pool: PacketPool, handles: Uint32Array, start: number, max: number): number;
  /** `count` frames out; the buffers stay the caller's */
  transmit(pool: PacketPool, handles: Uint32Array, count: number): void;
}

export interface VringSpec {
  /** lastAvailIdx: where the queue resumes after a memory change, or where it stopped */
  layout: QueueLayout;
  callFd: number;
  kickFd: number;
  mergeable: boolean;
  /** the offloads the connection negotiated (OFFLOAD_* bits, offloads.ts) */
  offloads: number;
  /** the vring's inflight record (INFLIGHT_SHMFD), viewed once */
  inflight: Uint8Array | null;
  /** found corrupt: stays stopped (never revived by a memory change) until set up again */
  failed: boolean;
}

/** A memory table being viewed a window per poll round; `id` is the command to answer. */
export interface MemoryBuild {
  id: number;
  builder: GuestMemoryBuilder;
}

export class PortRuntime {
  readonly cfg: PmdPortConfig;
  mem: GuestMemory | null = null;
  mergeable = false;
  /** by vring index: even = guest RX (we write), odd = guest TX (we read) */
  readonly specs: (VringSpec | null)[] = [];
  readonly owners: (QueueOwner | null)[] = [];
  /** running guest TX queues, polled every round */
  txPoll: QueueOwner[] = [];
  /** the guest RX queue frames for this port are written to */
  rxOut: QueueOwner | null = null;
  /** an uplink port's interface (TAP, AF_PACKET), by queue: those this PMD polls */
  readonly uplinks: (Uplink | null)[] = [];
  /** the uplink queues polled every round, and the one frames to the port are sent through (the first) */
  uplinkPoll: Uplink[] = [];
  uplink: Uplink | null = null;
  /** a parent's VLAN ports by VLAN ID (-1: none); null for a port without VLANs */
  vlanPorts: Int8Array | null = null;
  /** VLAN_NONE, VLAN_PORT or VLAN_PARENT (vlan.ts): one load tells egress whether a frame to the port needs a look at tags */
  vlanRole = 0;
  /** frames for this port collected in the current burst */
  readonly pending = new Uint32Array(BATCH_MAX);
  pendingCount = 0;
  /** one of the pending frames is a super-frame (TSO) */
  superPending = false;
  /** the connection generation whose commands are accepted (see PmdCommand) */
  gen = 0;
  build: MemoryBuild | null = null;
  /**
   * Commands that came behind the memory table being viewed (a vring start sent with its
   * table): carried out in order once the table is applied or refused.
   */
  readonly behindBuild: { id: number; cmd: PortPmdCommand }[] = [];

  constructor(cfg: PmdPortConfig) {
    this.cfg = cfg;
  }
}
