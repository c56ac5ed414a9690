// What a new config changes in the ports, as the running router must carry it out: ports
// whose socket comes or goes (an endpoint to open or close), and a new layout of the data
// plane (slots, which PMD polls which queue, the ports and bridges the plugins see).
import type { EndpointSettings } from '../vhost/port-endpoint.ts';
import type { PortConfig, VrouterConfig } from './config.ts';
import { topologyOf } from './config.ts';
import { assignQueues, assignSlots, type PortSlots } from './port-slots.ts';

export interface PortChange {
  slots: PortSlots;
  queueOwner: number[][];
  /** slots whose endpoint opens: new ports, and ports whose socket settings changed */
  open: EndpointSettings[];
  /** slots whose endpoint closes (its frontend is disconnected): removed and changed ports */
  close: number[];
  /** TAP ports (and Linux mirrors) whose MTU alone changed: set on the interface they have, which keeps what the host configured on it */
  retune: EndpointSettings[];
  /** slots taken by a port that did not exist before: their counters start from zero */
  fresh: number[];
}

/** A port's socket side, as the control thread runs it; a VLAN port has none (its parent's carries its frames). */
export function endpointOf(p: PortConfig, index: number): EndpointSettings | null {
  if (p.type === 'vlan') return null;
  return { index, name: p.name, type: p.type, interface: p.interface, queues: p.queues, mtu: p.mtu, socket: p.socket, mode: p.mode, memoryPolicy: p.memoryPolicy, offloads: p.offloads, socketMode: p.socketMode, socketGroup: p.socketGroup, peerUid: p.peerUid, mirror: p.mirror };
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** A TAP interface whose MTU alone changes keeps its fds (closing them would delete it, and what the host configured on it). */
const mtuOnly = (old: EndpointSettings | null, next: EndpointSettings | null) => old !== null && next !== null && old.type === 'tap' && next.type === 'tap' && same({ ...old, mtu: 0 }, { ...next, mtu: 0 });

/**
 * The ports and bridges as the plugins see them, but the queues' pinning: where queues run
 * is the queue layout's (queueOwner), so a pin that moves no queue (`PUT
 * /ports/NAME/queues/Q` to the CPU the queue is on) changes nothing to carry out.
 */
function pipelineView(config: VrouterConfig, slots: PortSlots): unknown {
  const topology = topologyOf(config, slots);
  return { ...topology, ports: topology.ports.map((p) => ({ ...p, settings: { ...p.settings, rxqAffinity: undefined } })) };
}

/**
 * The change from the running ports to the next config's, or null when the data plane's
 * layout stays as it is. Settings only the pipeline reads (addresses, bridge, MACs, queue
 * affinity) change the layout but keep the frontend connected.
 */
export function portChange(running: { config: VrouterConfig; slots: PortSlots; queueOwner: readonly (readonly number[])[] }, next: VrouterConfig): PortChange | null {
  // Most changes are routes or rules: the layout, which ports and bridges alone decide
  // (the PMDs' CPUs cannot change live), is then the same.
  if (same(running.config.ports, next.ports) && same(running.config.bridges, next.bridges)) return null;
  const slots = assignSlots(running.slots, next.ports);
  const before = new Map(running.config.ports.map((p) => [p.name, p]));
  const owners = new Map(running.slots.flatMap((name, slot) => (name === null ? [] : [[name, running.queueOwner[slot]] as const])));
  const queueOwner = assignQueues(next, slots, owners);
  const open: EndpointSettings[] = [];
  const close: number[] = [];
  const retune: EndpointSettings[] = [];
  const fresh: number[] = [];
  // A VLAN port has no endpoint to close.
  running.slots.forEach((name, slot) => {
    if (name !== null && slots[slot] !== name && before.get(name)?.type !== 'vlan') close.push(slot);
  });
  slots.forEach((name, slot) => {
    if (name === null) return;
    const p = next.ports.find((q) => q.name === name)!;
    const old = before.get(name);
    if (old === undefined) fresh.push(slot);
    const endpoint = endpointOf(p, slot);
    const was = old === undefined ? null : endpointOf(old, slot);
    if (old !== undefined && same(was, endpoint)) return;
    if (mtuOnly(was, endpoint)) return void retune.push(endpoint!);
    if (was !== null) close.push(slot);
    if (endpoint !== null) open.push(endpoint);
  });
  const layoutSame = same(slots, running.slots) && same(queueOwner, running.queueOwner) && same(pipelineView(next, slots), pipelineView(running.config, running.slots));
  if (open.length === 0 && close.length === 0 && retune.length === 0 && layoutSame) return null;
  return { slots, queueOwner, open, close, retune, fresh };
}
