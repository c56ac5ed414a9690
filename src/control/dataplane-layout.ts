// From the config to what the PMDs share: the packet pool, the rings between every ordered
// pair of PMDs, the counters and the capture rings; and to each PMD's view of the ports.
import { sharedBuffer } from '../sys/shared-arena.ts';
import { createCaptureMemory, type CaptureMemory } from '../dataplane/capture.ts';
import { createCounterBuffer, PORT_SLOTS } from '../dataplane/counters.ts';
import { createPoolMemory } from '../dataplane/packet-pool.ts';
import { HANDLE_BITS, LOAD_FIELDS, type PmdConfig, type PmdShared } from '../dataplane/pmd.ts';
import { spscRingBytes } from '../dataplane/spsc-ring.ts';
import { DOORBELL_WORDS } from '../vhost/dataplane-link.ts';
import type { VrouterConfig } from './config.ts';
import { assignQueues, assignSlots, type PortSlots } from './port-slots.ts';

/** Ethernet header and one VLAN tag on top of the MTU. */
const L2_OVERHEAD = 18;
const BUFFERS_PER_PMD = 4096;
/** super-frames (TSO) a PMD may hold at once: a burst of them, and as many on their way out */
const SUPER_BUFFERS_PER_PMD = 64;
const DATA_RING_CAPACITY = 1024;
const IDLE_SPIN_ROUNDS = 2000;

export interface DataplaneLayout {
  pmds: PmdConfig[];
  shared: PmdShared;
  /** queueOwner[slot][queuePair]: the PMD that polls it */
  queueOwner: number[][];
  /** packet capture: per-port control words and a ring per PMD (outlive PMD restarts) */
  capture: CaptureMemory;
}

/** What the PMDs share, sized for every port slot: allocated once, kept across port changes. */
export function sharedMemoryOf(config: VrouterConfig): { shared: PmdShared; capture: CaptureMemory } {
  const pmdCount = config.pmd.cores.length;
  const pairs = (make: () => ArrayBufferLike) => Array.from({ length: pmdCount }, (_, x) => Array.from({ length: pmdCount }, (_, y) => (x === y ? null : make())));
  const pool = createPoolMemory(pmdCount, BUFFERS_PER_PMD, SUPER_BUFFERS_PER_PMD);
  if (pool.handleCount > 2 ** HANDLE_BITS) throw new RangeError(`too many PMDs for ${HANDLE_BITS}-bit handles`);
  const shared: PmdShared = {
    pool,
    counters: createCounterBuffer(pmdCount),
    dataRings: pairs(() => sharedBuffer(spscRingBytes(DATA_RING_CAPACITY))),
    returnRings: pairs(() => sharedBuffer(spscRingBytes(pool.returnCapacity))),
    dataRingCapacity: DATA_RING_CAPACITY,
    rxQueueHolders: sharedBuffer(4 * PORT_SLOTS * pmdCount),
    // Wake eventfds are the data-plane process's own: it fills them in.
    wakers: config.pmd.cores.map(() => ({ doorbell: sharedBuffer(4 * DOORBELL_WORDS), wakeFd: -1 })),
    load: sharedBuffer(pmdCount * LOAD_FIELDS * 8),
  };
  return { shared, capture: createCaptureMemory(pmdCount, PORT_SLOTS) };
}

/** Each PMD's view of the ports, by slot (a free slot is an inert port without queues). */
export function pmdConfigsOf(config: VrouterConfig, slots: PortSlots): PmdConfig[] {
  const pmdCount = config.pmd.cores.length;
  const byName = new Map(config.ports.map((p) => [p.name, p]));
  const ports = slots.map((name) => (name === null ? undefined : byName.get(name)));
  const bridgeNames = [...new Set(ports.map((p) => p?.bridge ?? null).filter((b): b is string => b !== null))];
  const bridges = bridgeNames.map((b) => ports.flatMap((p, i) => (p !== undefined && p.bridge === b ? [i] : [])));
  return config.pmd.cores.map((cpu, id) => ({
    id,
    cpu,
    pmdCount,
    ports: ports.map((p, index) => ({
      index,
      name: p?.name ?? '',
      bridge: p === undefined || p.bridge === null ? -1 : bridgeNames.indexOf(p.bridge),
      maxFrame: p === undefined ? 0 : p.mtu + L2_OVERHEAD,
      parent: p === undefined || p.parent === null ? -1 : slots.indexOf(p.parent),
      vlan: p?.vlan ?? 0,
    })),
    bridges,
    idleSpinRounds: IDLE_SPIN_ROUNDS,
    idleSleepMaxUs: config.pmd.sleepMaxUs,
  }));
}

/** The layout at start: each port in the slot of its place in the config. */
export function dataplaneLayout(config: VrouterConfig): DataplaneLayout {
  const slots = assignSlots([], config.ports);
  return { ...sharedMemoryOf(config), pmds: pmdConfigsOf(config, slots), queueOwner: assignQueues(config, slots) };
}
