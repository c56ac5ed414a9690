// The plugins' shared memory: every region a plugin asks for (Plugin.sharedMemory) is a
// shared buffer allocated here once, by the supervisor, and handed to every PMD thread;
// a restarted PMD gets the same buffers back, so nothing a plugin keeps there is lost.
import { adoptShared, isSharedBuffer, sharedBuffer } from '../sys/shared-arena.ts';
import { runJob } from './jobs.ts';
import { createLog, type Log } from '../log.ts';
import { importPlugin, pluginField, PluginLoadError, thrownByPlugin, type PluginPlan } from './loader.ts';
import { NO_LEARNED_ROUTES, type ChangedPrefixes, type LearnedRoutes, type Plugin, type PluginSetup, type Topology } from './api.ts';

/** Regions by plugin name, then by region name. */
export type PluginMemory = Record<string, Record<string, ArrayBufferLike>>;

/**
 * The regions of every plan. After a reload (`previous`), a region a plugin asks for again
 * with the same name and size keeps its buffer, and what is in it (a neighbour or
 * connection table survives a change of routes or rules); only the others are new.
 */
export function allocatePluginMemory(plans: readonly PluginPlan[], previous?: PluginMemory): PluginMemory {
  return Object.fromEntries(
    plans.map((plan) => {
      const old = previous?.[plan.name] ?? {};
      const regions = Object.entries(plan.sharedMemory).map(([name, bytes]) => [name, old[name]?.byteLength === bytes ? old[name] : sharedBuffer(bytes)]);
      return [plan.name, Object.fromEntries(regions)];
    }),
  );
}

/**
 * Runs each plan's prepare() on its shared memory, before any PMD maps what it writes;
 * `previous` tells prepare() which regions are kept from before (setup.fresh). What
 * prepare() returns joins the plugin's regions. A failure is the plugin's config error:
 * PluginLoadError naming the plugin or the field.
 *
 * Plugins whose regions are all new go first: they change nothing a PMD reads, so when one
 * refuses, the tables in use are as they were. Those with a region kept from before, which
 * prepare() may change in place (routes, policers), follow in plan order.
 */
export async function preparePlugins(plans: readonly PluginPlan[], memory: PluginMemory, topology: Topology, previous?: PluginMemory, learnedRoutes: LearnedRoutes = NO_LEARNED_ROUTES): Promise<void> {
  const kept = (plan: PluginPlan, name: string) => previous?.[plan.name]?.[name] === memory[plan.name][name];
  const keepsAny = (plan: PluginPlan) => Object.keys(memory[plan.name]).some((name) => kept(plan, name));
  for (const plan of [...plans.filter((p) => !keepsAny(p)), ...plans.filter(keepsAny)]) {
    const plugin = await importPlugin(plan.path, `plugins.${plan.name}`, plan.version);
    if (plugin.prepare === undefined) continue;
    const regions = memory[plan.name];
    const fresh = (name: string) => !kept(plan, name);
    try {
      adoptRegions(plan, regions, await plugin.prepare(setupOf(plan, regions, topology, fresh, learnedRoutes)), 'prepare');
    } catch (err) {
      const e = thrownByPlugin(err);
      const message = String(e.message);
      throw new PluginLoadError(pluginField(plan, e.field), `${plan.name} could not prepare its tables: ${typeof e.field === 'string' ? message.replace(`${e.field}: `, '') : message}`);
    }
  }
}

/**
 * Each plugin's log, one for good: its lines are limited per kind over time (log.ts), as a
 * route change logged by every apply, dozens a second under a busy admin endpoint.
 */
const pluginLogs = new Map<string, Log>();
function pluginLog(name: string): Log {
  let log = pluginLogs.get(name);
  if (log === undefined) {
    log = createLog(name);
    pluginLogs.set(name, log);
  }
  return log;
}

function setupOf(plan: PluginPlan, regions: Record<string, ArrayBufferLike>, topology: Topology, fresh: (region: string) => boolean, learnedRoutes: LearnedRoutes): PluginSetup<unknown> {
  const log = pluginLog(plan.name);
  return { config: plan.config, topology, shared: regions, fresh, log: { info: (m) => log.info(m), warn: (m) => log.warn(m) }, runJob, learnedRoutes };
}

/** Puts the regions a hook returned (prepare, routesLearned) among the plugin's. */
function adoptRegions(plan: PluginPlan, regions: Record<string, ArrayBufferLike>, more: Record<string, ArrayBufferLike> | void, hook: string): void {
  for (const [name, buffer] of Object.entries(more ?? {})) {
    if (!isSharedBuffer(buffer)) throw new Error(`${hook}() returned ${name}, which is not a shared buffer (sharedBuffer())`);
    if (name in plan.sharedMemory) throw new Error(`${hook}() returned ${name}, a region sharedMemory() already declared`);
    // One it made with new SharedArrayBuffer() is copied into the shared memory once.
    if (regions[name] !== buffer) regions[name] = adoptShared(buffer);
  }
}

/**
 * Hands a plugin the prefixes whose learned routes changed (Plugin.routesLearned). Returns
 * its regions afterwards: `regions` itself when its tables were changed in place, a new
 * record when it built some anew (the caller hands those to the PMDs, and frees the old).
 */
export async function learnRoutes(plan: PluginPlan, regions: Record<string, ArrayBufferLike>, topology: Topology, learnedRoutes: LearnedRoutes, prefixes: ChangedPrefixes): Promise<Record<string, ArrayBufferLike>> {
  const plugin: Plugin = await importPlugin(plan.path, `plugins.${plan.name}`, plan.version);
  if (plugin.routesLearned === undefined) return regions;
  const more = await plugin.routesLearned(setupOf(plan, regions, topology, () => false, learnedRoutes), prefixes);
  if (more === undefined || Object.entries(more).every(([name, buffer]) => regions[name] === buffer)) return regions;
  const next = { ...regions };
  adoptRegions(plan, next, more, 'routesLearned');
  return next;
}
