// The plugins' shared memory: every region a plugin asks for (Plugin.sharedMemory) is a
// SharedArrayBuffer allocated here once, by the supervisor, and handed to every PMD thread;
// a restarted PMD gets the same buffers back, so nothing a plugin keeps there is lost.
import { runJob } from '../control/jobs.ts';
import { createLog } from '../log.ts';
import { importPlugin, PluginLoadError, type PluginPlan } from './loader.ts';
import type { Topology } from './api.ts';

/** Regions by plugin name, then by region name. */
export type PluginMemory = Record<string, Record<string, SharedArrayBuffer>>;

/**
 * The regions of every plan. After a reload (`previous`), a plugin that asks for the same
 * regions as before keeps its buffers, and what it kept there; only the others are new.
 */
export function allocatePluginMemory(plans: readonly PluginPlan[], previous?: { plans: readonly PluginPlan[]; memory: PluginMemory }): PluginMemory {
  return Object.fromEntries(
    plans.map((plan) => {
      const old = previous?.plans.find((p) => p.name === plan.name);
      if (old && JSON.stringify(old.sharedMemory) === JSON.stringify(plan.sharedMemory)) return [plan.name, previous!.memory[plan.name]];
      return [plan.name, Object.fromEntries(Object.entries(plan.sharedMemory).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]))];
    }),
  );
}

/**
 * Runs each plan's prepare() on its fresh shared memory (in plan order), before any PMD
 * maps it. A failure is the plugin's config error: PluginLoadError naming the plugin.
 */
export async function preparePlugins(plans: readonly PluginPlan[], memory: PluginMemory, topology: Topology): Promise<void> {
  for (const plan of plans) {
    const plugin = await importPlugin(plan.path, `plugins.${plan.name}`, plan.version);
    if (plugin.prepare === undefined) continue;
    const log = createLog(plan.name);
    try {
      const regions = memory[plan.name];
      const more = await plugin.prepare({ config: plan.config, topology, shared: regions, log: { info: (m) => log.info(m), warn: (m) => log.warn(m) }, runJob });
      for (const [name, buffer] of Object.entries(more ?? {})) {
        if (!(buffer instanceof SharedArrayBuffer)) throw new Error(`prepare() returned ${name}, which is not a SharedArrayBuffer`);
        if (name in regions) throw new Error(`prepare() returned ${name}, a region sharedMemory() already declared`);
        regions[name] = buffer;
      }
    } catch (err) {
      const e = err as Error & { field?: string };
      throw new PluginLoadError(e.field ?? `plugins.${plan.name}`, `${plan.name} could not prepare its tables: ${e.message}`);
    }
  }
}
