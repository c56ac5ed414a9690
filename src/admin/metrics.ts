// GET /metrics: the counters in Prometheus' text format (0.0.4), from the same sums the
// stats come from. Rendering walks the counters once; nothing is kept between scrapes, and
// the PMDs are not involved (they only ever write their own counter blocks).
//
// A scrape comes ten times a second to the supervisor, whose CPU on a small host is the
// one a generator or a guest would have: the text is written sample by sample into one
// string, with no list of samples or object of labels made on the way.
import type { PortStats, QueueStats } from '../dataplane/counters.ts';

type Stats = { ports: Record<string, PortStats>; pmds: { cpu: number; rx_packets: number; tx_packets: number; busy_ms?: number; busy_rounds?: number }[] };

/** Label values as the text format writes them: a backslash, a quote and a newline escaped (most have none). */
const NEEDS_ESCAPE = /[\\"\n]/;
const escape = (v: string) => (NEEDS_ESCAPE.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v);

/** One label, as it stands between the braces. */
const label = (name: string, value: string) => `${name}="${escape(value)}"`;

/** A sample's value as the exposition format writes it: Infinity is "+Inf" there, not JavaScript's "Infinity". */
function sampleValue(value: number): string {
  return value === Infinity ? '+Inf' : value === -Infinity ? '-Inf' : String(value);
}

class Exposition {
  private out = '';
  private name = '';
  /** Starts a family: its HELP and TYPE lines; its samples follow. */
  family(name: string, help: string, type: 'counter' | 'gauge'): void {
    this.name = name;
    this.out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
  }
  /** A sample of the family begun last; `labels` as label() writes them, comma-separated. */
  sample(labels: string, value: number): void {
    this.out += labels === '' ? `${this.name} ${sampleValue(value)}\n` : `${this.name}{${labels}} ${sampleValue(value)}\n`;
  }
  text(): string {
    return this.out;
  }
}

/** What the plugins add: their gauges, the ACL rules' hits, the policers' colour counters. */
export interface PluginMetrics {
  gauges: { plugin: string; name: string; value: number }[];
  rules: Record<string, unknown>[];
  policers: Record<string, unknown>[];
}

const PORT_FAMILIES: [string, string, (s: PortStats) => number][] = [
  ['vrouter_port_rx_packets_total', 'frames taken from the guest (its TX queues)', (s) => s.rx_packets],
  ['vrouter_port_rx_bytes_total', 'bytes taken from the guest', (s) => s.rx_bytes],
  ['vrouter_port_tx_packets_total', 'frames written into the guest (its RX queues)', (s) => s.tx_packets],
  ['vrouter_port_tx_bytes_total', 'bytes written into the guest', (s) => s.tx_bytes],
  ['vrouter_port_queue_errors_total', 'virtqueues found corrupt and stopped', (s) => s.queue_errors],
  ['vrouter_port_rx_partial_checksum_total', 'frames taken from the port with their TCP or UDP checksum left to do (checksum offload)', (s) => s.offloads.rx_partial_checksum],
  ['vrouter_port_tx_partial_checksum_total', 'frames handed to the port with their checksum left to do, as it negotiated', (s) => s.offloads.tx_partial_checksum],
  ['vrouter_port_checksums_completed_total', 'checksums vrouter completed for frames to the port, which takes none left to do', (s) => s.offloads.checksums_completed],
  ['vrouter_port_rx_gso_frames_total', 'super-frames (TSO) taken from the port', (s) => s.offloads.rx_gso_frames],
  ['vrouter_port_rx_gso_bytes_total', 'bytes of the super-frames taken from the port', (s) => s.offloads.rx_gso_bytes],
  ['vrouter_port_tx_gso_frames_total', 'super-frames handed to the port as they are, as it negotiated', (s) => s.offloads.tx_gso_frames],
  ['vrouter_port_tx_gso_bytes_total', 'bytes of the super-frames handed to the port', (s) => s.offloads.tx_gso_bytes],
  ['vrouter_port_gso_segments_total', 'segments vrouter cut out of super-frames for the port, which takes none', (s) => s.offloads.gso_segments],
];

const QUEUE_FAMILIES: [string, string, (q: QueueStats) => number][] = [
  ['vrouter_queue_rx_packets_total', 'frames taken from the guest TX queue of a queue pair', (q) => q.rx_packets],
  ['vrouter_queue_rx_bytes_total', 'bytes taken from the guest TX queue of a queue pair', (q) => q.rx_bytes],
  ['vrouter_queue_tx_packets_total', 'frames written into the guest RX queue of a queue pair', (q) => q.tx_packets],
  ['vrouter_queue_tx_bytes_total', 'bytes written into the guest RX queue of a queue pair', (q) => q.tx_bytes],
];

/** A plugin's drops by reason and its own counters, per port: family, meaning, where, and the label of a key. */
const PLUGIN_FAMILIES = [
  ['vrouter_plugin_drops_total', 'frames a plugin of the pipeline dropped, by its reason', 'drops', 'reason'],
  ['vrouter_plugin_events_total', 'what a plugin of the pipeline counted, by its counter (routed, arp_replies_sent, green, ...)', 'counters', 'counter'],
] as const;

type PmdStats = Stats['pmds'][number];
const PMD_FAMILIES: [string, string, (p: PmdStats) => number][] = [
  ['vrouter_pmd_rx_packets_total', 'frames a PMD took from guests', (p) => p.rx_packets],
  ['vrouter_pmd_tx_packets_total', 'frames a PMD wrote into guests', (p) => p.tx_packets],
  ['vrouter_pmd_busy_seconds_total', 'time a PMD spent in poll rounds that found frames, each from its start (the first receive included) to its end; the rest of the wall clock it was idle', (p) => (p.busy_ms ?? 0) / 1000],
  ['vrouter_pmd_busy_rounds_total', 'poll rounds in which a PMD had frames to work on', (p) => p.busy_rounds ?? 0],
];

const COLOURS = ['green', 'yellow', 'red'] as const;
type Colours = Record<string, { packets: number; bytes: number }>;

export function renderMetrics(stats: Stats, plugins: PluginMetrics = { gauges: [], rules: [], policers: [] }): string {
  const e = new Exposition();
  const ports = Object.keys(stats.ports);
  // Each port's label, written once for the families that name it.
  const portLabels = ports.map((port) => label('port', port));
  for (const [name, help, value] of PORT_FAMILIES) {
    e.family(name, help, 'counter');
    for (let i = 0; i < ports.length; i++) e.sample(portLabels[i], value(stats.ports[ports[i]]));
  }
  e.family('vrouter_port_drops_total', 'frames dropped, by reason', 'counter');
  for (let i = 0; i < ports.length; i++) {
    const drops = stats.ports[ports[i]].drops as Record<string, number>;
    for (const reason in drops) e.sample(`${portLabels[i]},${label('reason', reason)}`, drops[reason]);
  }
  for (const [name, help, value] of QUEUE_FAMILIES) {
    e.family(name, help, 'counter');
    for (let i = 0; i < ports.length; i++) {
      const queues = stats.ports[ports[i]].queues;
      for (let q = 0; q < queues.length; q++) e.sample(`${portLabels[i]},queue="${q}"`, value(queues[q]));
    }
  }
  for (const [name, help, field, labelName] of PLUGIN_FAMILIES) {
    e.family(name, help, 'counter');
    for (let i = 0; i < ports.length; i++) {
      const perPlugin = stats.ports[ports[i]].plugins;
      for (const plugin in perPlugin) {
        const values = perPlugin[plugin][field];
        for (const key in values) e.sample(`${portLabels[i]},${label('plugin', plugin)},${label(labelName, key)}`, values[key]);
      }
    }
  }
  for (const [name, help, value] of PMD_FAMILIES) {
    e.family(name, help, 'counter');
    stats.pmds.forEach((p, i) => e.sample(`pmd="${i}",cpu="${p.cpu}"`, value(p)));
  }
  e.family('vrouter_plugin_state', 'a number a plugin reports: table sizes, live connections (by plugin and name)', 'gauge');
  for (const g of plugins.gauges) e.sample(`${label('plugin', g.plugin)},${label('name', g.name)}`, g.value);
  e.family('vrouter_acl_rule_hits_total', 'packets each ACL rule matched (rule: its place in "acl", or default)', 'counter');
  for (const r of plugins.rules) e.sample(`${label('rule', String(r.index))},${label('action', String(r.action))}`, Number(r.hits ?? 0));
  for (const field of ['packets', 'bytes'] as const) {
    e.family(`vrouter_policer_${field}_total`, `${field} a policer metered, by colour`, 'counter');
    for (const p of plugins.policers) {
      const policer = label('policer', String(p.name));
      for (const colour of COLOURS) e.sample(`${policer},colour="${colour}"`, (p.counters as Colours | undefined)?.[colour]?.[field] ?? 0);
    }
  }
  return e.text();
}
