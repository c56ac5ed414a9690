// Per-port counters, by construction: each PMD is the only writer of its own block in a
// SharedArrayBuffer, and the supervisor sums the blocks of all PMDs when asked.

/** Drop reasons, declared once: the data path stores an index, stats show name and text. */
export const DROP_REASONS = [
  ['bad_descriptor', 'descriptor chain outside guest memory, looping, too fragmented or in the wrong direction, or a receive buffer too small for any frame'],
  ['frame_too_short', 'frame shorter than an Ethernet header'],
  ['frame_too_long', 'frame longer than the port MTU allows'],
  ['no_buffer', 'packet buffer pool exhausted'],
  ['guest_ring_full', 'the destination guest had no receive buffers posted'],
  ['guest_buffer_too_small', 'the destination guest\'s receive buffers were too small for the frame (one chain without mergeable buffers, 64 chains with)'],
  ['guest_buffers_fragmented', 'the destination guest posted receive buffers so small or fragmented that the burst spent its descriptor budget'],
  ['no_destination', 'no stage of the pipeline gave the frame a destination (the port is in no bridge, or alone in it)'],
  ['port_down', 'the destination port has no running receive queue'],
  ['ring_full', 'the ring to the PMD that holds the destination queue was full'],
] as const;

export type DropReason = (typeof DROP_REASONS)[number][0];
export const DROP = Object.fromEntries(DROP_REASONS.map(([name], i) => [name, i])) as Record<DropReason, number>;

export const RX_PACKETS = 0;
export const RX_BYTES = 1;
export const TX_PACKETS = 2;
export const TX_BYTES = 3;
/** virtqueues found corrupt and stopped */
export const QUEUE_ERRORS = 4;
export const DROPS_BASE = 5;
/**
 * Slots per port for the plugins of the pipeline: each plugin's drop reasons (plugin_error
 * first), then its counters. A plugin drop reason's code continues DROP's numbering, so
 * that the egress step counts it like any other.
 */
export const PLUGIN_BASE = DROPS_BASE + DROP_REASONS.length;
export const PLUGIN_SLOTS = 128;
export const COUNTERS_PER_PORT = PLUGIN_BASE + PLUGIN_SLOTS;

/** Where a plugin's names sit among the plugin slots. */
export interface PluginCounters {
  name: string;
  /** its first slot (0-based, from PLUGIN_BASE) */
  slot: number;
  dropReasons: string[];
  counters: string[];
}

/** The SharedArrayBuffer holding every PMD's counter block. */
export function createCounterBuffer(pmdCount: number, portCount: number): SharedArrayBuffer {
  return new SharedArrayBuffer(pmdCount * portCount * COUNTERS_PER_PORT * 8);
}

/** One PMD's writable block: index with portBase(port) + counter. */
export function pmdCounters(buffer: SharedArrayBuffer, pmd: number, portCount: number): Float64Array {
  const length = portCount * COUNTERS_PER_PORT;
  return new Float64Array(buffer, pmd * length * 8, length);
}

export function portBase(port: number): number {
  return port * COUNTERS_PER_PORT;
}

export interface PortStats {
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
  queue_errors: number;
  drops: Record<DropReason, number>;
  /** per plugin of the pipeline: its drops by reason and its counters */
  plugins: Record<string, { drops: Record<string, number>; counters: Record<string, number> }>;
}

/** Sums the blocks of all PMDs into per-port stats. */
export function readPortStats(buffer: SharedArrayBuffer, pmdCount: number, portNames: readonly string[], plugins: readonly PluginCounters[] = []): Record<string, PortStats> {
  const all = new Float64Array(buffer);
  const perPmd = portNames.length * COUNTERS_PER_PORT;
  const sum = (port: number, counter: number) => {
    let total = 0;
    for (let pmd = 0; pmd < pmdCount; pmd++) total += all[pmd * perPmd + portBase(port) + counter];
    return total;
  };
  const stats: Record<string, PortStats> = {};
  portNames.forEach((name, port) => {
    const drops = {} as Record<DropReason, number>;
    DROP_REASONS.forEach(([reason], i) => (drops[reason] = sum(port, DROPS_BASE + i)));
    const perPlugin: PortStats['plugins'] = {};
    for (const p of plugins) {
      const base = PLUGIN_BASE + p.slot;
      perPlugin[p.name] = {
        drops: Object.fromEntries(p.dropReasons.map((r, i) => [r, sum(port, base + i)])),
        counters: Object.fromEntries(p.counters.map((c, i) => [c, sum(port, base + p.dropReasons.length + i)])),
      };
    }
    stats[name] = {
      rx_packets: sum(port, RX_PACKETS),
      rx_bytes: sum(port, RX_BYTES),
      tx_packets: sum(port, TX_PACKETS),
      tx_bytes: sum(port, TX_BYTES),
      queue_errors: sum(port, QUEUE_ERRORS),
      drops,
      plugins: perPlugin,
    };
  });
  return stats;
}

/** Frames each PMD took from guests (rx) and wrote into guests (tx), over all ports. */
export function readPmdStats(buffer: SharedArrayBuffer, pmdCount: number, portCount: number): { rx_packets: number; tx_packets: number }[] {
  const all = new Float64Array(buffer);
  const perPmd = portCount * COUNTERS_PER_PORT;
  return Array.from({ length: pmdCount }, (_, pmd) => {
    let rx = 0;
    let tx = 0;
    for (let port = 0; port < portCount; port++) {
      rx += all[pmd * perPmd + portBase(port) + RX_PACKETS];
      tx += all[pmd * perPmd + portBase(port) + TX_PACKETS];
    }
    return { rx_packets: rx, tx_packets: tx };
  });
}
