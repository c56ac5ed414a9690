// The acl stage under PluginHarness, for its tests and benchmark: the harness does not run
// prepare(), so this allocates the shared memory, compiles the rules into it (the compile
// job run in this thread) and hands it to the harness, as the supervisor would to a PMD.
import { PluginHarness, type HarnessOptions } from '../../src/pipeline/testing.ts';
import type { PacketBatch, Plugin, PortInfo, Topology } from '../../src/pipeline/api.ts';
import acl, { type AclConfig, type AclState } from './index.ts';

export interface AclHarnessOptions extends HarnessOptions {
  shareWith?: AclHarness;
  /**
   * Stands for the stages before acl (routing): the egress of each frame (a port index,
   * EGRESS_FLOOD...), set before the acl stage runs. Default: left undecided.
   */
  route?: (frame: Uint8Array) => number;
}

export type AclHarness = PluginHarness<AclConfig, AclState>;

/** In-thread stand-in for the control plane's job pool. */
async function runJob<T>(module: string | URL, input: unknown): Promise<T> {
  const job = (await import(String(module))) as { default: (input: unknown) => T };
  return job.default(input);
}

/** A harness over freshly prepared memory; with `shareWith`, another PMD of the same router. */
export async function aclHarness(options: AclHarnessOptions): Promise<AclHarness> {
  const route = options.route;
  const plugin: Plugin<AclConfig, AclState> =
    route === undefined
      ? acl
      : {
          ...acl,
          process(batch: PacketBatch, state: AclState) {
            for (let i = 0; i < batch.count; i++) batch.egress[i] = route(batch.data.subarray(batch.offset(i), batch.offset(i) + batch.length(i)));
            acl.process(batch, state);
          },
        };
  if (options.shareWith !== undefined) return new PluginHarness(plugin, options as HarnessOptions);
  const config = acl.parseConfig!(options.config ?? {});
  // the topology as PluginHarness builds it
  const ports: PortInfo[] = options.ports.map((p, index) => ({ index, name: p.name, bridge: p.bridge ?? null, settings: { name: p.name, bridge: p.bridge ?? null, ...p.settings } }));
  const bridges = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const topology: Topology = { ports, bridges, bridgeSettings: Object.fromEntries(bridges.map((b) => [b, options.bridgeSettings?.[b] ?? {}])), pmdCount: options.pmdCount ?? 1 };
  const shared = Object.fromEntries(Object.entries(acl.sharedMemory!(config, topology)).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]));
  await acl.prepare!({ config, topology, shared, fresh: () => true, log: { info() {}, warn() {} }, runJob });
  // PluginHarness reads only `shared` of the harness it shares with
  return new PluginHarness(plugin, { ...options, shareWith: { shared } as unknown as PluginHarness<unknown, unknown> });
}
