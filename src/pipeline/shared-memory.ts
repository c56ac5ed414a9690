// The plugins' shared memory: every region a plugin asks for (Plugin.sharedMemory) is a
// SharedArrayBuffer allocated here once, by the supervisor, and handed to every PMD thread;
// a restarted PMD gets the same buffers back, so nothing a plugin keeps there is lost.
import type { PluginPlan } from './loader.ts';

/** Regions by plugin name, then by region name. */
export type PluginMemory = Record<string, Record<string, SharedArrayBuffer>>;

export function allocatePluginMemory(plans: readonly PluginPlan[]): PluginMemory {
  return Object.fromEntries(plans.map((plan) => [plan.name, Object.fromEntries(Object.entries(plan.sharedMemory).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]))]));
}
