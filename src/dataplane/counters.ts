// Per-port counters, by construction: each PMD is the only writer of its own block in a
// shared buffer, and the supervisor sums the blocks of all PMDs when asked.
import { sharedBuffer } from '../sys/shared-arena.ts';


/** Drop reasons, declared once: the data path stores an index, stats show name and text. */
export const DROP_REASONS = [
  ['bad_descriptor', 'descriptor chain outside guest memory, looping, too fragmented or in the wrong direction, or a receive buffer too small for any frame; an AF_XDP receive descriptor outside its receive chunks'],
  ['frame_too_short', 'frame shorter than an Ethernet header'],
  ['frame_too_long', 'frame longer than the port MTU allows'],
  ['no_buffer', 'packet buffer pool exhausted, or the segments a burst may cut spent (a flooded super-frame is cut again for each port that does not take it whole)'],
  ['guest_ring_full', 'the destination guest had no receive buffers posted'],
  ['guest_buffer_too_small', 'the destination guest\'s receive buffers were too small for the frame (one chain without mergeable buffers, 64 chains with)'],
  ['guest_buffers_fragmented', 'the destination guest posted receive buffers so small or fragmented that the burst spent its descriptor budget'],
  ['no_destination', 'no stage of the pipeline gave the frame a destination (the port is in no bridge, or alone in it)'],
  ['port_down', 'the destination port has no running receive queue'],
  ['ring_full', 'the ring to the PMD that holds the destination queue was full'],
  ['interface_refused', 'the kernel interface of an uplink port would not take the frame (its queue full, or the interface down)'],
  ['offload_header_bad', 'the virtio-net header asked for an offload the connection did not negotiate, put the checksum it leaves to do outside the frame, or described a super-frame that does not parse as TCP or would be cut into segments too long or too many'],
  ['receive_ring_full', 'the kernel dropped a frame arriving on an AF_PACKET or AF_XDP port: its receive ring was full, or AF_XDP had no free chunk to write it into (the PMD fell behind)'],
  ['vlan_refused', 'a tagged frame that would cross a port with VLAN ports other than as one of their frames: arriving with a VLAN none of them is, or an 802.1ad or stacked tag; sent to the port tagged from its own segment, or from a VLAN port\'s with a tag inside the VLAN\'s (it would enter a VLAN past its VLAN port)'],
] as const;

export type DropReason = (typeof DROP_REASONS)[number][0];
export const DROP = Object.fromEntries(DROP_REASONS.map(([name], i) => [name, i])) as Record<DropReason, number>;

export const RX_PACKETS = 0;
export const RX_BYTES = 1;
export const TX_PACKETS = 2;
export const TX_BYTES = 3;
/** virtqueues found corrupt and stopped */
export const QUEUE_ERRORS = 4;
/** checksum offload: frames taken with their checksum left to do, frames handed on so, checksums vrouter completed for the port */
export const RX_CSUM_PARTIAL = 5;
export const TX_CSUM_PARTIAL = 6;
export const CSUM_COMPLETED = 7;
/** segmentation offload: super-frames (and their bytes) taken from the port and handed to it as they are, segments vrouter cut for it */
export const RX_GSO_FRAMES = 8;
export const RX_GSO_BYTES = 9;
export const TX_GSO_FRAMES = 10;
export const TX_GSO_BYTES = 11;
export const GSO_SEGMENTS = 12;
export const DROPS_BASE = 13;
/**
 * Slots per port for the plugins of the pipeline: each plugin's drop reasons (plugin_error
 * first), then its counters. A plugin drop reason's code continues DROP's numbering, so
 * that the egress step counts it like any other.
 */
export const PLUGIN_BASE = DROPS_BASE + DROP_REASONS.length;
export const PLUGIN_SLOTS = 128;
/**
 * Slots per port for its queue pairs, after the plugins': QUEUE_FIELDS for each pair, the
 * frames and bytes taken from its guest TX queue (rx) and written into its guest RX queue
 * (tx), added once per burst. The config allows no more pairs than QUEUE_PAIRS_MAX.
 */
export const QUEUES_BASE = PLUGIN_BASE + PLUGIN_SLOTS;
export const QUEUE_PAIRS_MAX = 8;
export const QUEUE_RX_PACKETS = 0;
export const QUEUE_RX_BYTES = 1;
export const QUEUE_TX_PACKETS = 2;
export const QUEUE_TX_BYTES = 3;
export const QUEUE_FIELDS = 4;
export const COUNTERS_PER_PORT = QUEUES_BASE + QUEUE_PAIRS_MAX * QUEUE_FIELDS;

/** Where a plugin's names sit among the plugin slots. */
export interface PluginCounters {
  name: string;
  /** its first slot (0-based, from PLUGIN_BASE) */
  slot: number;
  dropReasons: string[];
  counters: string[];
}

/**
 * Port slots: a port keeps its slot (its index everywhere in the data plane) while it
 * exists, so blocks are sized for the most ports there may be, not for today's: ports
 * added at run time find their counters in place.
 */
export const PORT_SLOTS = 64;

/** The shared buffer holding every PMD's counter block. */
export function createCounterBuffer(pmdCount: number): ArrayBufferLike {
  return sharedBuffer(pmdCount * PORT_SLOTS * COUNTERS_PER_PORT * 8);
}

/** One PMD's writable block: index with portBase(port) + counter. */
export function pmdCounters(buffer: ArrayBufferLike, pmd: number): Float64Array {
  const length = PORT_SLOTS * COUNTERS_PER_PORT;
  return new Float64Array(buffer, pmd * length * 8, length);
}

/** Frames each PMD took from guests (rx) and wrote into guests (tx). */
export interface PmdTotals {
  rx_packets: number;
  tx_packets: number;
}

/**
 * Zeroes a slot's counters in every PMD's block (a slot taken by a new port; no PMD runs).
 * Adds what each PMD had counted there to `retired`, by PMD: readPmdStats() goes on
 * counting it, as a PMD's totals never go back.
 */
export function clearPortCounters(buffer: ArrayBufferLike, pmdCount: number, port: number, retired: PmdTotals[]): void {
  for (let pmd = 0; pmd < pmdCount; pmd++) {
    const block = pmdCounters(buffer, pmd);
    retired[pmd].rx_packets += queueTotal(block, port, QUEUE_RX_PACKETS);
    retired[pmd].tx_packets += queueTotal(block, port, QUEUE_TX_PACKETS);
    block.fill(0, portBase(port), portBase(port) + COUNTERS_PER_PORT);
  }
}

/**
 * A port's `field` (QUEUE_RX_PACKETS...) summed over its queue pairs, in one PMD's block:
 * what the PMD took from and wrote to queues. A VLAN port has none: its frames are counted
 * on its parent's queues, and a PMD's totals count each frame once.
 */
function queueTotal(block: Float64Array, port: number, field: number): number {
  let sum = 0;
  for (let q = 0; q < QUEUE_PAIRS_MAX; q++) sum += block[queueBase(port, q) + field];
  return sum;
}

/**
 * A PMD's plugin counters (`block`, every port's) moved from the slots `before` gave them
 * to those `after` gives the same plugin and name: a plugin file that declares a drop
 * reason more moves the slots of every plugin after it, whose counters would otherwise be
 * read under other names. What `after` has no name for is cleared. No PMD may count in the
 * block meanwhile.
 */
export function movePluginCounters(block: Float64Array, before: readonly PluginCounters[], after: readonly PluginCounters[]): void {
  const names = (layout: readonly PluginCounters[]) =>
    layout.flatMap((p) => [...p.dropReasons.map((n, k) => [`${p.name} drop ${n}`, p.slot + k] as const), ...p.counters.map((n, k) => [`${p.name} count ${n}`, p.slot + p.dropReasons.length + k] as const)]);
  const to = new Map(names(after));
  const moves = names(before).flatMap(([name, from]) => (to.has(name) ? [[from, to.get(name)!] as const] : []));
  const values = new Float64Array(moves.length);
  for (let port = 0; port < PORT_SLOTS; port++) {
    const base = portBase(port) + PLUGIN_BASE;
    moves.forEach(([from], k) => (values[k] = block[base + from]));
    block.fill(0, base, base + PLUGIN_SLOTS);
    moves.forEach(([, into], k) => (block[base + into] = values[k]));
  }
}

export function portBase(port: number): number {
  return port * COUNTERS_PER_PORT;
}

/**
 * Counts `n` frames dropped for `reason` (a DROP code) on the port whose counters start at
 * `base` (portBase) in a PMD's block: where the data path drops a frame itself, on the way
 * in or out. (The stages' drops are counted by the egress step, Egress.transmit.)
 */
export function countDrops(counters: Float64Array, base: number, reason: number, n = 1): void {
  counters[base + DROPS_BASE + reason] += n;
}

/** Where a queue pair's counters start in a PMD's block (pair < QUEUE_PAIRS_MAX). */
export function queueBase(port: number, pair: number): number {
  return portBase(port) + QUEUES_BASE + pair * QUEUE_FIELDS;
}

/** One queue pair's counters, named as the port's: rx from the guest, tx into it. */
export interface QueueStats {
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
}

export interface OffloadStats {
  /** frames taken from the port with their TCP or UDP checksum left to do */
  rx_partial_checksum: number;
  /** frames handed to the port with their checksum left to do (it takes them so) */
  tx_partial_checksum: number;
  /** checksums vrouter completed for frames to the port (it takes none left to do) */
  checksums_completed: number;
  /** super-frames (TSO) taken from the port, and their bytes */
  rx_gso_frames: number;
  rx_gso_bytes: number;
  /** super-frames handed to the port as they are (it takes them), and their bytes */
  tx_gso_frames: number;
  tx_gso_bytes: number;
  /** segments vrouter cut out of super-frames for the port (it takes none) */
  gso_segments: number;
}

export interface PortStats {
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
  queue_errors: number;
  /** checksum offload (VIRTIO_NET_F_CSUM, GUEST_CSUM) */
  offloads: OffloadStats;
  drops: Record<DropReason, number>;
  /** per plugin of the pipeline: its drops by reason and its counters */
  plugins: Record<string, { drops: Record<string, number>; counters: Record<string, number> }>;
  /** by queue pair, every slot (QUEUE_PAIRS_MAX): those past the port's queues stay at zero */
  queues: QueueStats[];
}

/** Sums the blocks of all PMDs into per-port stats; `portNames` by slot, '' for a free one. */
export function readPortStats(buffer: ArrayBufferLike, pmdCount: number, portNames: readonly string[], plugins: readonly PluginCounters[] = []): Record<string, PortStats> {
  const all = new Float64Array(buffer);
  const perPmd = PORT_SLOTS * COUNTERS_PER_PORT;
  const sum = (port: number, counter: number) => {
    let total = 0;
    for (let pmd = 0; pmd < pmdCount; pmd++) total += all[pmd * perPmd + portBase(port) + counter];
    return total;
  };
  const stats: Record<string, PortStats> = {};
  portNames.forEach((name, port) => {
    if (name === '') return;
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
      offloads: {
        rx_partial_checksum: sum(port, RX_CSUM_PARTIAL),
        tx_partial_checksum: sum(port, TX_CSUM_PARTIAL),
        checksums_completed: sum(port, CSUM_COMPLETED),
        rx_gso_frames: sum(port, RX_GSO_FRAMES),
        rx_gso_bytes: sum(port, RX_GSO_BYTES),
        tx_gso_frames: sum(port, TX_GSO_FRAMES),
        tx_gso_bytes: sum(port, TX_GSO_BYTES),
        gso_segments: sum(port, GSO_SEGMENTS),
      },
      drops,
      plugins: perPlugin,
      queues: Array.from({ length: QUEUE_PAIRS_MAX }, (_, pair) => {
        const base = QUEUES_BASE + pair * QUEUE_FIELDS;
        return { rx_packets: sum(port, base + QUEUE_RX_PACKETS), rx_bytes: sum(port, base + QUEUE_RX_BYTES), tx_packets: sum(port, base + QUEUE_TX_PACKETS), tx_bytes: sum(port, base + QUEUE_TX_BYTES) };
      }),
    };
  });
  return stats;
}

/** Frames each PMD took from guests (rx) and wrote into guests (tx), over all ports, those since removed (`retired`) too. */
export function readPmdStats(buffer: ArrayBufferLike, pmdCount: number, retired: readonly PmdTotals[]): PmdTotals[] {
  const all = new Float64Array(buffer);
  const perPmd = PORT_SLOTS * COUNTERS_PER_PORT;
  return Array.from({ length: pmdCount }, (_, pmd) => {
    let rx = retired[pmd].rx_packets;
    let tx = retired[pmd].tx_packets;
    const block = all.subarray(pmd * perPmd, (pmd + 1) * perPmd);
    for (let port = 0; port < PORT_SLOTS; port++) {
      rx += queueTotal(block, port, QUEUE_RX_PACKETS);
      tx += queueTotal(block, port, QUEUE_TX_PACKETS);
    }
    return { rx_packets: rx, tx_packets: tx };
  });
}

/**
 * The layout of the counter blocks, as text. A data plane started from other code (an
 * upgrade) must count where the supervisor reads, or every port's counters would show under
 * other names: one whose layout differs refuses to serve (process-main.ts).
 */
export const COUNTER_LAYOUT = JSON.stringify({ drops: DROP_REASONS.map(([name]) => name), pluginSlots: PLUGIN_SLOTS, queuePairs: QUEUE_PAIRS_MAX, queueFields: QUEUE_FIELDS, ports: PORT_SLOTS, perPort: COUNTERS_PER_PORT });
