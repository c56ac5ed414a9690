// From the config to what the PMDs share: which PMD owns each queue pair, the packet pool,
// the rings between every ordered pair of PMDs, the MAC tables, the counters and the
// capture rings.
import { createCaptureMemory, type CaptureMemory } from '../dataplane/capture.ts';
import { createCounterBuffer } from '../dataplane/counters.ts';
import { createPoolMemory } from '../dataplane/packet-pool.ts';
import { HANDLE_BITS, LOAD_FIELDS, type PmdConfig, type PmdShared } from '../dataplane/pmd.ts';
import { spscRingBytes } from '../dataplane/spsc-ring.ts';
import { eventfd } from '../sys/libc.ts';
import { DOORBELL_WORDS } from '../vhost/dataplane-link.ts';
import type { VrouterConfig } from './config.ts';

/** Ethernet header and one VLAN tag on top of the MTU. */
const L2_OVERHEAD = 18;
const BUFFERS_PER_PMD = 4096;
const DATA_RING_CAPACITY = 1024;
const IDLE_SPIN_ROUNDS = 2000;

export interface DataplaneLayout {
  pmds: PmdConfig[];
  shared: PmdShared;
  /** queueOwner[port][queuePair]: the PMD that polls it */
  queueOwner: number[][];
  /** packet capture: per-port control words and a ring per PMD (outlive PMD restarts) */
  capture: CaptureMemory;
}

/**
 * Queue pairs go to PMDs round-robin in config order, like OVS; a port's rxqAffinity
 * pins a queue pair to the PMD on a given CPU (OVS pmd-rxq-affinity).
 */
export function assignQueues(config: VrouterConfig): number[][] {
  const cores = config.pmd.cores;
  let next = 0;
  return config.ports.map((p) =>
    Array.from({ length: p.queues }, (_, q) => {
      const pinned = p.rxqAffinity[q];
      if (pinned !== undefined) return cores.indexOf(pinned);
      return next++ % cores.length;
    }),
  );
}

export function dataplaneLayout(config: VrouterConfig): DataplaneLayout {
  const pmdCount = config.pmd.cores.length;
  const bridgeNames = [...new Set(config.ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const bridges = bridgeNames.map((b) => config.ports.flatMap((p, i) => (p.bridge === b ? [i] : [])));
  const pairs = (make: () => SharedArrayBuffer) => Array.from({ length: pmdCount }, (_, x) => Array.from({ length: pmdCount }, (_, y) => (x === y ? null : make())));
  if (BUFFERS_PER_PMD * pmdCount > 2 ** HANDLE_BITS) throw new RangeError(`too many PMDs for ${HANDLE_BITS}-bit handles`);
  const shared: PmdShared = {
    pool: createPoolMemory(pmdCount, BUFFERS_PER_PMD),
    counters: createCounterBuffer(pmdCount, config.ports.length),
    dataRings: pairs(() => new SharedArrayBuffer(spscRingBytes(DATA_RING_CAPACITY))),
    returnRings: pairs(() => new SharedArrayBuffer(spscRingBytes(BUFFERS_PER_PMD))),
    dataRingCapacity: DATA_RING_CAPACITY,
    rxQueueHolders: new SharedArrayBuffer(4 * config.ports.length * pmdCount),
    wakers: config.pmd.cores.map(() => ({ doorbell: new SharedArrayBuffer(4 * DOORBELL_WORDS), wakeFd: eventfd() })),
    load: new SharedArrayBuffer(pmdCount * LOAD_FIELDS * 8),
  };
  const pmds = config.pmd.cores.map((cpu, id) => ({
    id,
    cpu,
    pmdCount,
    ports: config.ports.map((p, index) => ({
      index,
      name: p.name,
      bridge: p.bridge === null ? -1 : bridgeNames.indexOf(p.bridge),
      maxFrame: p.mtu + L2_OVERHEAD,
    })),
    bridges,
    idleSpinRounds: IDLE_SPIN_ROUNDS,
    idleSleepMaxUs: config.pmd.sleepMaxUs,
  }));
  return { pmds, shared, queueOwner: assignQueues(config), capture: createCaptureMemory(pmdCount, config.ports.length) };
}
