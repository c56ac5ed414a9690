// The ports, their counters and the PMDs: `ports`, `port NAME`, `stats [PORT]`, `pmds` and
// `metrics` (the Prometheus text, as it is).
import type { PortStats } from '../dataplane/counters.ts';
import { segment, show, type Command } from './command.ts';
import { inline, keyValues, table, type Cell } from './format.ts';

/** A port's counters as GET /counters and GET /ports/NAME give them. */
export type PortCounters = PortStats;

export interface PmdCounters {
  cpu: number;
  rx_packets: number;
  tx_packets: number;
  /** time spent on bursts since the start, ms */
  busy_ms: number;
  busy_rounds: number;
  /** busy time per packet since the start; null before the first */
  ns_per_packet: number | null;
}

const sum = (values: Readonly<Record<string, number>>) => Object.values(values).reduce((a, b) => a + b, 0);

/** Every drop of a port: the data path's reasons and each plugin's (as the endpoint's port summary counts them). */
export function totalDrops(s: PortCounters): number {
  return sum(s.drops) + Object.values(s.plugins).reduce((a, p) => a + sum(p.drops), 0);
}

/** Each drop reason with its count, plugin reasons as "plugin.reason". */
export function dropsByReason(s: PortCounters): [string, number][] {
  return [...Object.entries(s.drops), ...Object.entries(s.plugins).flatMap(([plugin, p]) => Object.entries(p.drops).map(([r, n]): [string, number] => [`${plugin}.${r}`, n]))];
}

interface PortRow {
  name: string;
  type?: string;
  interface?: string | null;
  parent?: string;
  vlan?: number;
  mode?: string;
  bridge?: string | null;
  addresses?: string[];
  mtu?: number;
  queues?: number;
  socketMode?: number;
  counters: { rx_packets: number; tx_packets: number; drops: number } | null;
}

function attachment(p: PortRow): string {
  if (p.bridge) return `bridge ${p.bridge}`;
  if (p.addresses !== undefined && p.addresses.length > 0) return p.addresses.join(' ');
  return '-';
}

/** How the port reaches its peer: a vhost-user port's mode, an uplink's interface, a VLAN's parent. */
function modeOf(p: PortRow): string {
  if (p.type === 'vlan') return `vlan ${p.vlan} of ${p.parent}`;
  if (p.type === 'tap' || p.type === 'af_packet' || p.type === 'af_xdp') return `${p.type} ${p.interface}`;
  return p.mode ?? '-';
}

function portsTable(ports: PortRow[]): string {
  if (ports.length === 0) return 'no ports';
  return table(
    ['PORT', 'MODE', 'MTU', 'QUEUES', 'RX PACKETS', 'TX PACKETS', 'DROPS', 'ON'],
    ports.map((p) => [p.name, modeOf(p), p.mtu === undefined ? '-' : String(p.mtu), p.queues ?? null, p.counters?.rx_packets ?? null, p.counters?.tx_packets ?? null, p.counters?.drops ?? null, attachment(p)]),
  );
}

/** All of a port's counters (drop reasons and plugin counters only where not zero), then its queue pairs'. */
export function countersDetail(s: PortCounters): string {
  const rows: Cell[][] = [
    ['rx_packets', s.rx_packets],
    ['rx_bytes', s.rx_bytes],
    ['tx_packets', s.tx_packets],
    ['tx_bytes', s.tx_bytes],
    ['queue_errors', s.queue_errors],
    ['rx_partial_checksum', s.offloads.rx_partial_checksum],
    ['tx_partial_checksum', s.offloads.tx_partial_checksum],
    ['checksums_completed', s.offloads.checksums_completed],
    ['rx_gso_frames', s.offloads.rx_gso_frames],
    ['rx_gso_bytes', s.offloads.rx_gso_bytes],
    ['tx_gso_frames', s.offloads.tx_gso_frames],
    ['tx_gso_bytes', s.offloads.tx_gso_bytes],
    ['gso_segments', s.offloads.gso_segments],
    ['drops', totalDrops(s)],
  ];
  let hidden = 0;
  for (const [reason, n] of dropsByReason(s)) {
    if (n === 0) hidden++;
    else rows.push([`  ${reason}`, n]);
  }
  for (const [plugin, p] of Object.entries(s.plugins)) {
    for (const [name, n] of Object.entries(p.counters)) {
      if (n === 0) hidden++;
      else rows.push([`${plugin}.${name}`, n]);
    }
  }
  const note = hidden > 0 ? `\n(${hidden} drop reasons and plugin counters at zero not shown; --json shows them)` : '';
  const queues = table(['QUEUE', 'RX PACKETS', 'RX BYTES', 'TX PACKETS', 'TX BYTES'], s.queues.map((q, i) => [i, q.rx_packets, q.rx_bytes, q.tx_packets, q.tx_bytes]));
  return `${table(['COUNTER', 'VALUE'], rows)}${note}\n\n${queues}`;
}

/** A port's config, one key a line: null and empty as "-", the socket mode in octal. */
function portConfig(port: Record<string, unknown>): string {
  const pairs = Object.entries(port)
    .filter(([k]) => k !== 'counters')
    .map(([k, v]): [string, string] => [k, k === 'socketMode' && typeof v === 'number' ? `0${v.toString(8)}` : typeof v === 'number' ? String(v) : inline(v)]);
  return keyValues(pairs);
}

export const portCommands: Command[] = [
  {
    words: ['ports'], summary: 'the ports: MTU, queues, packets, drops, bridge or addresses',
    run: async (ctx) => show(ctx, await ctx.api.get('/ports'), portsTable),
  },
  {
    words: ['port'], args: 'NAME', min: 1, max: 1, summary: 'one port: its config and all its counters',
    run: async (ctx, [name]) => show(ctx, await ctx.api.get(`/ports/${segment(name)}`), (p) => `${portConfig(p)}\n\n${countersDetail(p.counters)}`),
  },
  {
    words: ['stats'], args: '[PORT]', max: 1, summary: 'counters per port; with PORT, all of its counters',
    run: async (ctx, [name]) => {
      if (name !== undefined) return show(ctx, await ctx.api.get(`/ports/${segment(name)}`), (p) => countersDetail(p.counters));
      show(ctx, await ctx.api.get('/counters'), (all: Record<string, PortCounters>) => {
        const ports = Object.entries(all);
        if (ports.length === 0) return 'no ports';
        const main = table(
          ['PORT', 'RX PACKETS', 'RX BYTES', 'TX PACKETS', 'TX BYTES', 'DROPS', 'QUEUE ERRORS'],
          ports.map(([n, s]) => [n, s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, totalDrops(s), s.queue_errors]),
        );
        const drops = ports.flatMap(([n, s]) => dropsByReason(s).filter(([, c]) => c > 0).map(([r, c]): Cell[] => [n, r, c]));
        return drops.length === 0 ? main : `${main}\n\n${table(['PORT', 'DROP REASON', 'PACKETS'], drops)}`;
      });
    },
  },
  {
    words: ['pmds'], summary: 'the PMD threads: CPU, packets from and into guests',
    run: async (ctx) =>
      show(ctx, await ctx.api.get('/pmds'), (pmds: PmdCounters[]) => table(['PMD', 'CPU', 'RX PACKETS', 'TX PACKETS'], pmds.map((p, i) => [i, p.cpu, p.rx_packets, p.tx_packets]))),
  },
  {
    words: ['metrics'], summary: 'the Prometheus metrics, as they are',
    run: async (ctx) => {
      ctx.stdout.write((await ctx.api.getText('/metrics')).text);
    },
  },
];
