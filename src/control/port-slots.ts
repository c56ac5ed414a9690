// Where each port sits in the data plane, and which PMD polls each of its queues. A port
// keeps its slot (its index in counters, queues, capture and the plugins' tables) for as
// long as it exists, and its queues keep their PMD, so that adding or removing a port at
// run time disturbs no other port's state. A removed port's slot is free for the next one.
import { PORT_SLOTS } from '../dataplane/counters.ts';
import type { PortConfig, VrouterConfig } from './config.ts';

/** Port names by slot; null marks a free slot. */
export type PortSlots = (string | null)[];

/** The slots after a change: ports kept keep theirs, new ones take the first free slots. */
export function assignSlots(previous: readonly (string | null)[], ports: readonly PortConfig[]): PortSlots {
  const names = new Set(ports.map((p) => p.name));
  const slots: PortSlots = previous.map((name) => (name !== null && names.has(name) ? name : null));
  for (const p of ports) {
    if (slots.includes(p.name)) continue;
    const free = slots.indexOf(null);
    if (free >= 0) slots[free] = p.name;
    else slots.push(p.name);
  }
  while (slots.length > 0 && slots[slots.length - 1] === null) slots.pop();
  if (slots.length > PORT_SLOTS) throw new RangeError(`at most ${PORT_SLOTS} ports`);
  return slots;
}

/**
 * queueOwner[slot][queuePair]: the PMD that polls it (`previous`: each port's, by name). A pinned queue (rxqAffinity, OVS's
 * pmd-rxq-affinity) goes to the PMD on its CPU; a queue that had a PMD keeps it; the rest
 * go round-robin in slot order at start, and to the least loaded PMD when added later.
 */
export function assignQueues(config: VrouterConfig, slots: readonly (string | null)[], previous: ReadonlyMap<string, readonly number[]> = new Map()): number[][] {
  const cores = config.pmd.cores;
  const byName = new Map(config.ports.map((p) => [p.name, p]));
  const load = new Array<number>(cores.length).fill(0);
  const fresh = previous.size === 0;
  let next = 0;
  // Pinned and kept queues first, so that new ones see the load they join.
  const owners = slots.map((name) => {
    const p = name === null ? undefined : byName.get(name);
    if (p === undefined) return [];
    return Array.from({ length: p.queues }, (_, q) => {
      const pinned = p.rxqAffinity[q];
      const kept = previous.get(p.name)?.[q];
      const pmd = pinned !== undefined ? cores.indexOf(pinned) : kept !== undefined && kept < cores.length ? kept : -1;
      if (pmd >= 0) load[pmd]++;
      return pmd;
    });
  });
  for (const queues of owners) {
    for (let q = 0; q < queues.length; q++) {
      if (queues[q] >= 0) continue;
      const pmd = fresh ? next++ % cores.length : load.indexOf(Math.min(...load));
      queues[q] = pmd;
      load[pmd]++;
    }
  }
  return owners;
}
