// A plugin as a stage of a PMD: its per-PMD state, its counters, and a fence around its
// process(): a plugin that throws costs its batch (every packet not yet dropped counts as
// its plugin_error) and never the PMD loop; the exception is logged at most once a second.
// A plugin that hung a PMD, or could not start, runs taken out: bypassed or dropping all
// (its onError).
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import type { Log } from '../log.ts';
import { DROP_REASONS, PLUGIN_BASE, PLUGIN_SLOTS, PORT_SLOTS, portBase } from '../dataplane/counters.ts';
import { EGRESS_CONSUMED, EGRESS_DROP, EGRESS_FLOOD } from '../dataplane/egress-codes.ts';
import type { Batch } from '../dataplane/batch.ts';
import type { Stage } from '../dataplane/pmd.ts';
import type { Plugin, PluginContext, PortInfo, Topology } from './api.ts';
import type { PluginPlan } from './loader.ts';

const ERROR_LOG_INTERVAL_MS = 1000;
/** Drop codes a port's counters hold: vrouter's reasons, then the plugins' slots. */
const DROP_CODES = DROP_REASONS.length + PLUGIN_SLOTS;

export class PluginStage implements Stage {
  readonly name: string;
  private readonly plugin: Plugin;
  private readonly state: unknown = undefined;
  private readonly log: Log;
  /** the plugin_error drop code (its first slot) */
  private readonly errorCode: number;
  private loggedAt = -Infinity;
  private unlogged = 0;
  /** Plugin.stopping was called: the farewell is said once */
  private toldStopping = false;
  /** 'run', or how the plugin is taken out after it hung a PMD, failed to start or to take new tables */
  private mode: 'run' | 'bypass' | 'drop';
  /**
   * Whether its decisions are checked after each batch (an operator's plugin): the egress
   * step trusts them, and a port past the PMD's would end the PMD. The built-ins' are not.
   */
  private readonly checksVerdicts: boolean;
  /** the PMD's ports (slots): a destination is below it */
  private readonly portCount: number;

  constructor(
    plugin: Plugin,
    plan: PluginPlan,
    pmd: { id: number; count: number; ports: readonly PortInfo[]; bridges: readonly string[]; bridgeSettings: Topology['bridgeSettings']; previous?: Topology | null; wantedBatches?: Uint8Array; portSlots?: number; portUp?: (port: number) => boolean },
    shared: Record<string, ArrayBufferLike>,
    counters: Float64Array,
    log: Log,
    takenOut = false,
    builtIn = false,
  ) {
    this.name = plan.name;
    this.plugin = plugin;
    this.log = log;
    this.mode = takenOut ? (plugin.onError ?? 'drop') : 'run';
    const firstCode = DROP_REASONS.length + plan.slot;
    this.errorCode = firstCode;
    this.checksVerdicts = !builtIn;
    this.portCount = pmd.portSlots ?? PORT_SLOTS;
    const counterBase = PLUGIN_BASE + plan.slot + plan.dropReasons.length;
    const lookup = (names: string[], name: string, kind: string) => {
      const i = names.indexOf(name);
      if (i < 0) throw new Error(`plugin ${plan.name} has no ${kind} "${name}" (declared: ${names.join(', ') || 'none'})`);
      return i;
    };
    const ctx: PluginContext<unknown> = {
      config: plan.config,
      pmd: pmd.id,
      pmdCount: pmd.count,
      ports: pmd.ports,
      bridges: pmd.bridges,
      bridgeSettings: pmd.bridgeSettings,
      previous: pmd.previous ?? null,
      shared,
      log: { info: (m) => log.info(`${plan.name}: ${m}`), warn: (m) => log.warn(`${plan.name}: ${m}`) },
      dropCode: (reason) => firstCode + lookup(plan.dropReasons, reason, 'drop reason'),
      counterId: (counter) => counterBase + lookup(plan.counters, counter, 'counter'),
      count: (port, counter, n) => {
        counters[portBase(port) + counter] += n;
      },
      portUp: pmd.portUp ?? (() => true),
      wantBatch: (port) => {
        const wanted = pmd.wantedBatches;
        if (wanted === undefined || !Number.isInteger(port) || port < 0 || port >= PORT_SLOTS) return;
        wanted[port] = 1;
        wanted[PORT_SLOTS] = 1;
      },
    };
    if (this.mode !== 'run') return;
    try {
      this.state = plugin.createState(ctx);
    } catch (err) {
      // A plugin that cannot start would crash its PMD at every restart: it is taken out.
      this.mode = plugin.onError ?? 'drop';
      log.error(`plugin ${plan.name} failed to start, taken out of the pipeline (${this.mode}): ${(err as Error)?.stack ?? String(err)}`, 'plugin.failed', { plugin: plan.name });
    }
  }

  /** the plugin's headerBytes; taken out, it reads nothing */
  get headerBytes(): number | undefined {
    return this.mode === 'run' ? this.plugin.headerBytes : 0;
  }

  process(batch: Batch): void {
    if (this.mode !== 'run') {
      if (this.mode === 'drop') for (let i = 0; i < batch.count; i++) if (!batch.dropped(i)) batch.dropAs(i, this.errorCode);
      return;
    }
    try {
      this.plugin.process(batch, this.state);
    } catch (err) {
      this.failed(batch, err);
      return;
    }
    if (this.checksVerdicts) this.checkVerdicts(batch);
  }

  /**
   * Drops, as its plugin_error, each packet the plugin sent nowhere the egress step knows:
   * not a port of this PMD, EGRESS_FLOOD, EGRESS_CONSUMED, nor a drop code (vrouter's or a
   * plugin's: an earlier stage's drops are left as they are). A code past them would count
   * outside the port's counters.
   */
  private checkVerdicts(batch: Batch): void {
    const egress = batch.egress;
    let bad = 0;
    let first = 0;
    for (let i = 0; i < batch.count; i++) {
      const e = egress[i];
      if (e >= 0 ? e < this.portCount : e === EGRESS_FLOOD || e === EGRESS_CONSUMED || EGRESS_DROP - e < DROP_CODES) continue;
      if (bad++ === 0) first = e;
      batch.dropAs(i, this.errorCode);
    }
    if (bad > 0) {
      this.report('process', `it sent ${bad} packet(s) of a batch to ${first}, which is no port of this PMD (0 to ${this.portCount - 1}), flood, consumed or drop code: dropped as its plugin_error`);
    }
  }

  /** Plugin.describe for a captured packet; null when the plugin has none, is taken out, or throws. */
  describe(batch: Batch, i: number): string | null {
    if (this.mode !== 'run' || this.plugin.describe === undefined) return null;
    try {
      const text = this.plugin.describe(this.state, batch, i);
      return typeof text === 'string' ? text : null;
    } catch (err) {
      this.report('describe', err);
      return null;
    }
  }

  betweenBursts(): void {
    if (this.mode !== 'run' || this.plugin.betweenBursts === undefined) return;
    try {
      this.plugin.betweenBursts(this.state);
    } catch (err) {
      this.report('betweenBursts', err);
    }
  }

  /** vrouter stops (Plugin.stopping, once): the plugin asks for the batches of its last frames. */
  stopping(): void {
    if (this.mode !== 'run' || this.plugin.stopping === undefined || this.toldStopping) return;
    this.toldStopping = true;
    try {
      this.plugin.stopping(this.state);
    } catch (err) {
      this.report('stopping', err);
    }
  }

  /** The PMD is replaced by one on `next` (Plugin.leaving): the plugin asks for the batches of what it owes the ports that change. */
  leaving(next: Topology): void {
    if (this.mode !== 'run' || this.plugin.leaving === undefined || this.toldStopping) return;
    try {
      this.plugin.leaving(this.state, next);
    } catch (err) {
      this.report('leaving', err);
    }
  }

  /** A new config and tables for the plugin (Plugin.tablesChanged), between two bursts. */
  tablesChanged(config: unknown, shared: Record<string, ArrayBufferLike>): void {
    if (this.mode !== 'run' || this.plugin.tablesChanged === undefined) return;
    try {
      this.plugin.tablesChanged(this.state, { config, shared });
      this.log.info(`plugin ${this.name}: new config and tables in use`, 'plugin.tables_swapped', { plugin: this.name });
    } catch (err) {
      // It may still hold views of the tables it had, which the supervisor frees (and
      // gives to other tables) once every PMD says it took the new ones: taken out.
      this.mode = this.plugin.onError ?? 'drop';
      this.log.error(`plugin ${this.name} failed to take its new config and tables, taken out of the pipeline (${this.mode}): ${(err as Error)?.stack ?? String(err)}`, 'plugin.failed', { plugin: this.name });
    }
  }

  private failed(batch: Batch, err: unknown): void {
    for (let i = 0; i < batch.count; i++) if (!batch.dropped(i)) batch.dropAs(i, this.errorCode);
    this.report('process, its batch was dropped', err);
  }

  /** Logs a plugin's exception (or a sentence on what it did wrong) at most once a second. */
  private report(where: string, err: unknown): void {
    const now = performance.now();
    if (now - this.loggedAt < ERROR_LOG_INTERVAL_MS) {
      this.unlogged++;
      return;
    }
    const also = this.unlogged > 0 ? ` (${this.unlogged} more since the last report)` : '';
    const what = typeof err === 'string' ? `failed in ${where}${also}: ${err}` : `threw in ${where}${also}: ${(err as Error)?.stack ?? String(err)}`;
    this.log.warn(`plugin ${this.name} ${what}`, 'plugin.failed', { plugin: this.name });
    this.loggedAt = now;
    this.unlogged = 0;
  }
}
