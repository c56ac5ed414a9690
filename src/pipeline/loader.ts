// Plugins from the config: each module loaded, its registration record checked, its config
// validated by the plugin itself, and its drop reasons and counters given counter slots.
// The supervisor does this before anything starts (a bad plugin or plugin config is a
// config error naming the field); each PMD thread loads the same modules again.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PLUGIN_SLOTS, type PluginCounters } from '../dataplane/counters.ts';
import { PLUGIN_API_VERSION, type Plugin, type Topology } from './api.ts';

/** The built-in stage: MAC learning and switching among the ports of a bridge. */
export const BRIDGE_STAGE = 'bridge';
/** Plugins that come with vrouter, named in "pipeline" without a path: plugins/NAME/index. */
export const BUILT_IN_PLUGINS = [BRIDGE_STAGE, 'routing', 'acl', 'ratelimit'];
/** Built-ins are found beside this module, as sources or built (dist/). */
const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/** Each built-in's path, made once: every apply of a config asks for them. */
const builtInPaths = new Map<string, string>();

export function builtInPluginPath(name: string): string {
  let path = builtInPaths.get(name);
  if (path === undefined) {
    path = fileURLToPath(new URL(`../../plugins/${name}/index${MODULE_EXT}`, import.meta.url));
    builtInPaths.set(name, path);
  }
  return path;
}

/** A plugin of the pipeline as the config names it: its module and its own config keys. */
export interface PluginSpec {
  name: string;
  /** absolute path of the module */
  path: string;
  config: Record<string, unknown>;
}

/** A plugin that cannot run as configured: the field at fault (plugins.NAME...) and why. */
export class PluginLoadError extends Error {
  readonly code = 'VR_CONFIG';
  readonly field: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'PluginLoadError';
    this.field = field;
  }
}

/** Every plugin counts, as its first drop reason, the batches its process() threw on. */
export const PLUGIN_ERROR: readonly [string, string] = ['plugin_error', 'the plugin threw while processing the batch: the batch was dropped'];
const NAME = /^[a-z][a-z0-9_]{0,31}$/;
/** Fields of built-ins' config that the file has at its top level (config.ts TOP_LEVEL_KEYS). */
const TOP_LEVEL_FIELD = /^(routes|neighbours|acl|aclDefault|policers)(\[|\.|$)/;

/** A plugin ready to run: where it comes from, its validated config, its counter slots. */
export interface PluginPlan extends PluginCounters {
  path: string;
  config: unknown;
  /** what the PMDs get of it (Plugin.pmdConfig) */
  pmdConfig: unknown;
  /** what the PMDs do with it once it hung one (Plugin.onError) */
  onError: 'bypass' | 'drop';
  /** the shared memory regions it asked for, by name, in bytes */
  sharedMemory: Record<string, number>;
  /** which load of the file this is (0 at start, then one more per reload) */
  version: number;
  /** the plugin's own version string */
  pluginVersion: string;
  /** whether it takes a new config live, between bursts (Plugin.tablesChanged) */
  swappable: boolean;
  /** whether it takes the route sources' routes (Plugin.routesLearned) */
  learnsRoutes: boolean;
  /** the names of its tables (Plugin.tables) */
  tables: string[];
  /** whether it has gauges (Plugin.gauges) */
  gauges: boolean;
}

/** The most one plugin may ask for, all its regions together. */
export const MAX_PLUGIN_MEMORY_BYTES = 1 << 30;

/**
 * Imports a plugin module and checks its registration record. `version` > 0 loads the file
 * afresh (a reload: modules are cached by URL, so the URL gets ?v=version).
 */
export function importPlugin(path: string, field: string, version = 0): Promise<Plugin> {
  const key = `${version} ${path}`;
  let plugin = imported.get(key);
  if (plugin === undefined) {
    plugin = loadPlugin(path, pathToFileURL(path).href + (version > 0 ? `?v=${version}` : ''));
    imported.set(key, plugin);
    // One that failed is tried again next time (the file may be there by then).
    plugin.catch(() => imported.delete(key));
  }
  return plugin.catch((err: unknown) => {
    throw new PluginLoadError(`${field}.path`, (err as Error).message);
  });
}

/**
 * Plugins imported and checked, by load and path (as the module's URL): an apply and a
 * scrape of /metrics look up plugins several times, and the module loader's own cache is
 * not free to ask (it resolves the URL).
 */
const imported = new Map<string, Promise<Plugin>>();

/** The module at `url`, its registration record checked; a rejection says why it is no plugin. */
async function loadPlugin(path: string, url: string): Promise<Plugin> {
  let module: { default?: unknown };
  try {
    module = await import(url);
  } catch (err) {
    throw new Error(`cannot load ${path}: ${(err as Error).message}`);
  }
  const p = module.default as Partial<Plugin> | undefined;
  const missing = (['name', 'version', 'apiVersion', 'createState', 'process'] as const).find((k) => p?.[k] === undefined);
  if (p === undefined || missing) throw new Error(`${path} does not export a plugin as its default export${missing ? ` (no "${missing}")` : ''}`);
  if (p.apiVersion !== PLUGIN_API_VERSION) throw new Error(`${p.name} is written for plugin API ${p.apiVersion}; this vrouter has ${PLUGIN_API_VERSION}`);
  for (const [kind, table] of [['dropReasons', p.dropReasons ?? []], ['counters', p.counters ?? []]] as const) {
    // Each name once in its table (and no drop reason plugin_error, the host's): counted in
    // the first slot of a name, its drops would be read from the last.
    const names = new Set(kind === 'dropReasons' ? [PLUGIN_ERROR[0]] : []);
    for (const entry of table) {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !NAME.test(entry[0]) || typeof entry[1] !== 'string') {
        throw new Error(`${p.name}: ${kind} must be [name, meaning] pairs with names of a-z, 0-9 and _, got ${JSON.stringify(entry)}`);
      }
      if (names.has(entry[0])) throw new Error(`${p.name}: ${kind} names ${entry[0]}, ${entry[0] === PLUGIN_ERROR[0] ? "the host's own drop reason" : 'a name it has already'}`);
      names.add(entry[0]);
    }
  }
  return p as Plugin;
}

/** What a plugin threw, as an Error with maybe a field: an operator's plugin may throw anything, null too. */
export function thrownByPlugin(err: unknown): Error & { field?: unknown } {
  return (typeof err === 'object' && err !== null ? err : { message: String(err) }) as Error & { field?: unknown };
}

/**
 * Where in the config a plugin's error is: the field it names within its entry
 * (`plugins.NAME.FIELD`), a built-in's key given at the top level of the config as such
 * ("routes[3].via"), or the plugin's entry when it names none.
 */
export function pluginField(spec: { name: string; path: string }, field: unknown): string {
  if (typeof field !== 'string' || field === '') return `plugins.${spec.name}`;
  return spec.path === builtInPluginPath(spec.name) && TOP_LEVEL_FIELD.test(field) ? field : `plugins.${spec.name}.${field}`;
}

/** A plugin's refusal of its config, as a PluginLoadError naming the field. */
function configError(err: unknown, spec: PluginSpec): PluginLoadError {
  const e = thrownByPlugin(err);
  const message = String(e.message);
  return new PluginLoadError(pluginField(spec, e.field), typeof e.field === 'string' && e.field !== '' ? message.replace(`${e.field}: `, '') : message);
}

/** The names a plugin's counter slots go to, in order: its drop reasons after the host's own (PLUGIN_ERROR), then its counters. */
export function slotNames(plugin: Pick<Plugin, 'dropReasons' | 'counters'>): { dropReasons: string[]; counters: string[] } {
  return { dropReasons: [PLUGIN_ERROR, ...(plugin.dropReasons ?? [])].map(([n]) => n), counters: (plugin.counters ?? []).map(([n]) => n) };
}

/**
 * Loads and validates every plugin of the config, in pipeline order, and lays out their
 * counter slots. Throws PluginLoadError naming the field at fault.
 */
export async function planPlugins(specs: readonly PluginSpec[], topology: Topology, version = 0): Promise<PluginPlan[]> {
  const plans: PluginPlan[] = [];
  let slot = 0;
  for (const spec of specs) {
    const field = `plugins.${spec.name}`;
    const plugin = await importPlugin(spec.path, field, version);
    let config: unknown = {};
    try {
      if (plugin.parseConfig) config = plugin.parseConfig(spec.config);
      else if (Object.keys(spec.config).length > 0) throw Object.assign(new Error('unknown key (the plugin takes no config)'), { field: Object.keys(spec.config)[0] });
    } catch (err) {
      throw configError(err, spec);
    }
    const { dropReasons, counters } = slotNames(plugin);
    const used = dropReasons.length + counters.length;
    if (slot + used > PLUGIN_SLOTS) throw new PluginLoadError(field, `the pipeline's plugins declare more than ${PLUGIN_SLOTS} drop reasons and counters in all`);
    if (plugin.onError !== undefined && plugin.onError !== 'bypass' && plugin.onError !== 'drop') {
      throw new PluginLoadError(`${field}.path`, `${plugin.name}: onError must be "bypass" or "drop", got ${JSON.stringify(plugin.onError)}`);
    }
    if (plugin.headerBytes !== undefined && !(Number.isInteger(plugin.headerBytes) && plugin.headerBytes >= 0)) {
      throw new PluginLoadError(`${field}.path`, `${plugin.name}: headerBytes must be a whole number of bytes, got ${JSON.stringify(plugin.headerBytes)}`);
    }
    if (plugin.routesLearned !== undefined && plugin.tablesChanged === undefined) {
      throw new PluginLoadError(`${field}.path`, `${plugin.name}: a plugin with routesLearned needs tablesChanged (the PMDs take the tables it builds anew between bursts)`);
    }
    // It may check the config against the topology (port names), which parseConfig cannot.
    let sharedMemory: Record<string, number>;
    try {
      sharedMemory = plugin.sharedMemory?.(config, topology) ?? {};
    } catch (err) {
      throw configError(err, spec);
    }
    const sizes = Object.values(sharedMemory);
    if (!sizes.every((n) => Number.isInteger(n) && n > 0) || sizes.reduce((a, b) => a + b, 0) > MAX_PLUGIN_MEMORY_BYTES) {
      throw new PluginLoadError(field, `${plugin.name} asks for shared memory of ${JSON.stringify(sharedMemory)}: whole positive byte counts, at most ${MAX_PLUGIN_MEMORY_BYTES} in all`);
    }
    plans.push({ name: spec.name, path: spec.path, config, pmdConfig: plugin.pmdConfig ? plugin.pmdConfig(config) : config, slot, dropReasons, counters, onError: plugin.onError ?? 'drop', sharedMemory, version, pluginVersion: plugin.version, swappable: typeof plugin.tablesChanged === 'function', learnsRoutes: typeof plugin.routesLearned === 'function', tables: Object.keys(plugin.tables ?? {}), gauges: typeof plugin.gauges === 'function' });
    slot += used;
  }
  return plans;
}
