// GET /metrics: the counters in Prometheus' text format (0.0.4), from the same sums the
// stats come from. Rendering walks the counters once; nothing is kept between scrapes, and
// the PMDs are not involved (they only ever write their own counter blocks).
import type { PortStats, QueueStats } from '../dataplane/counters.ts';

type Stats = { ports: Record<string, PortStats>; pmds: { cpu: number; rx_packets: number; tx_packets: number; busy_ms?: number; busy_rounds?: number }[] };

/** Label values as the text format writes them: a backslash, a quote and a newline escaped (most have none). */
const NEEDS_ESCAPE = /[\\"\n]/;
const escape = (v: string) => (NEEDS_ESCAPE.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v);

class Exposition {
  private readonly families: string[] = [];
  family(name: string, help: string, type: 'counter' | 'gauge', samples: [Record<string, string | number>, number][]): void {
    // Written as one string per family: a scrape has a few hundred samples, ten times a second.
    let out = `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
    for (const [labels, value] of samples) {
      let l = '';
      for (const k in labels) l += `${l === '' ? '' : ','}${k}="${escape(String(labels[k]))}"`;
      out += l === '' ? `${name} ${value}\n` : `${name}{${l}} ${value}\n`;
    }
    this.families.push(out);
  }
  text(): string {
    return this.families.join('');
  }
}

/** What the plugins add: their gauges, the ACL rules' hits, the policers' colour counters. */
export interface PluginMetrics {
  gauges: { plugin: string; name: string; value: number }[];
  rules: Record<string, unknown>[];
  policers: Record<string, unknown>[];
}

export function renderMetrics(stats: Stats, plugins: PluginMetrics = { gauges: [], rules: [], policers: [] }): string {
  const e = new Exposition();
  const ports = Object.entries(stats.ports);
  const per = (f: (s: PortStats) => number): [Record<string, string>, number][] => ports.map(([port, s]) => [{ port }, f(s)]);
  e.family('vrouter_port_rx_packets_total', 'frames taken from the guest (its TX queues)', 'counter', per((s) => s.rx_packets));
  e.family('vrouter_port_rx_bytes_total', 'bytes taken from the guest', 'counter', per((s) => s.rx_bytes));
  e.family('vrouter_port_tx_packets_total', 'frames written into the guest (its RX queues)', 'counter', per((s) => s.tx_packets));
  e.family('vrouter_port_tx_bytes_total', 'bytes written into the guest', 'counter', per((s) => s.tx_bytes));
  e.family('vrouter_port_queue_errors_total', 'virtqueues found corrupt and stopped', 'counter', per((s) => s.queue_errors));
  e.family('vrouter_port_rx_partial_checksum_total', 'frames taken from the port with their TCP or UDP checksum left to do (checksum offload)', 'counter', per((s) => s.offloads.rx_partial_checksum));
  e.family('vrouter_port_tx_partial_checksum_total', 'frames handed to the port with their checksum left to do, as it negotiated', 'counter', per((s) => s.offloads.tx_partial_checksum));
  e.family('vrouter_port_checksums_completed_total', 'checksums vrouter completed for frames to the port, which takes none left to do', 'counter', per((s) => s.offloads.checksums_completed));
  e.family('vrouter_port_rx_gso_frames_total', 'super-frames (TSO) taken from the port', 'counter', per((s) => s.offloads.rx_gso_frames));
  e.family('vrouter_port_rx_gso_bytes_total', 'bytes of the super-frames taken from the port', 'counter', per((s) => s.offloads.rx_gso_bytes));
  e.family('vrouter_port_tx_gso_frames_total', 'super-frames handed to the port as they are, as it negotiated', 'counter', per((s) => s.offloads.tx_gso_frames));
  e.family('vrouter_port_tx_gso_bytes_total', 'bytes of the super-frames handed to the port', 'counter', per((s) => s.offloads.tx_gso_bytes));
  e.family('vrouter_port_gso_segments_total', 'segments vrouter cut out of super-frames for the port, which takes none', 'counter', per((s) => s.offloads.gso_segments));
  e.family('vrouter_port_drops_total', 'frames dropped, by reason', 'counter', ports.flatMap(([port, s]) => Object.entries(s.drops).map(([reason, n]): [Record<string, string>, number] => [{ port, reason }, n])));
  const perQueue = (f: (q: QueueStats) => number): [Record<string, string | number>, number][] => ports.flatMap(([port, s]) => s.queues.map((q, queue): [Record<string, string | number>, number] => [{ port, queue }, f(q)]));
  e.family('vrouter_queue_rx_packets_total', 'frames taken from the guest TX queue of a queue pair', 'counter', perQueue((q) => q.rx_packets));
  e.family('vrouter_queue_rx_bytes_total', 'bytes taken from the guest TX queue of a queue pair', 'counter', perQueue((q) => q.rx_bytes));
  e.family('vrouter_queue_tx_packets_total', 'frames written into the guest RX queue of a queue pair', 'counter', perQueue((q) => q.tx_packets));
  e.family('vrouter_queue_tx_bytes_total', 'bytes written into the guest RX queue of a queue pair', 'counter', perQueue((q) => q.tx_bytes));
  e.family(
    'vrouter_plugin_drops_total',
    'frames a plugin of the pipeline dropped, by its reason',
    'counter',
    ports.flatMap(([port, s]) => Object.entries(s.plugins).flatMap(([plugin, p]) => Object.entries(p.drops).map(([reason, n]): [Record<string, string>, number] => [{ port, plugin, reason }, n]))),
  );
  e.family(
    'vrouter_plugin_events_total',
    'what a plugin of the pipeline counted, by its counter (routed, arp_replies_sent, green, ...)',
    'counter',
    ports.flatMap(([port, s]) => Object.entries(s.plugins).flatMap(([plugin, p]) => Object.entries(p.counters).map(([counter, n]): [Record<string, string>, number] => [{ port, plugin, counter }, n]))),
  );
  e.family('vrouter_pmd_rx_packets_total', 'frames a PMD took from guests', 'counter', stats.pmds.map((p, i) => [{ pmd: i, cpu: p.cpu }, p.rx_packets]));
  e.family('vrouter_pmd_tx_packets_total', 'frames a PMD wrote into guests', 'counter', stats.pmds.map((p, i) => [{ pmd: i, cpu: p.cpu }, p.tx_packets]));
  e.family('vrouter_pmd_busy_seconds_total', 'time a PMD spent on bursts (from a round\'s first burst to the round\'s end); the rest of the wall clock it was idle', 'counter', stats.pmds.map((p, i) => [{ pmd: i, cpu: p.cpu }, (p.busy_ms ?? 0) / 1000]));
  e.family('vrouter_pmd_busy_rounds_total', 'poll rounds in which a PMD had frames to work on', 'counter', stats.pmds.map((p, i) => [{ pmd: i, cpu: p.cpu }, p.busy_rounds ?? 0]));
  e.family('vrouter_plugin_state', 'a number a plugin reports: table sizes, live connections (by plugin and name)', 'gauge', plugins.gauges.map((g) => [{ plugin: g.plugin, name: g.name }, g.value]));
  e.family('vrouter_acl_rule_hits_total', 'packets each ACL rule matched (rule: its place in "acl", or default)', 'counter', plugins.rules.map((r) => [{ rule: String(r.index), action: String(r.action) }, Number(r.hits ?? 0)]));
  type Colours = Record<string, { packets: number; bytes: number }>;
  const colours = (field: 'packets' | 'bytes') =>
    plugins.policers.flatMap((p) => ['green', 'yellow', 'red'].map((colour): [Record<string, string>, number] => [{ policer: String(p.name), colour }, (p.counters as Colours | undefined)?.[colour]?.[field] ?? 0]));
  e.family('vrouter_policer_packets_total', 'packets a policer metered, by colour', 'counter', colours('packets'));
  e.family('vrouter_policer_bytes_total', 'bytes a policer metered, by colour', 'counter', colours('bytes'));
  return e.text();
}
