// The plugins' shared memory: every region a plugin asks for (Plugin.sharedMemory) is a
// SharedArrayBuffer allocated here once, by the supervisor, and handed to every PMD thread;
// a restarted PMD gets the same buffers back, so nothing a plugin keeps there is lost.
import type { PluginPlan } from './loader.ts';

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
