// A change refused by one plugin leaves the tables in use as they were: the plugins that may
// change theirs in place (a region kept from before) prepare after those that build anew,
// and a built-in's check against the ports is made before any plugin prepares.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, topologyOf } from '../../src/control/config.ts';
import { builtInPluginPath, planPlugins } from '../../src/pipeline/loader.ts';
import { allocatePluginMemory, preparePlugins } from '../../src/pipeline/shared-memory.ts';
import { createArena } from '../../src/sys/shared-arena.ts';

createArena(2 ** 24);

const API = fileURLToPath(new URL('../../src/pipeline/api.ts', import.meta.url));
const TOPOLOGY = topologyOf(parseConfig({ ports: [{ name: 'a', socket: '/tmp/a.sock', bridge: 'br0' }] }, '/', 2));

/** Two plugins in a temporary folder: `keeper` writes its config's value into its one region, in place; `refuser` refuses when told to. */
function plugins(t: { teardown(fn: () => unknown): void }): { keeper: string; refuser: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-prepare-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const common = `import { PLUGIN_API_VERSION } from ${JSON.stringify(API)};`;
  const keeper = join(dir, 'keeper.ts');
  writeFileSync(keeper, `${common}
export default {
  name: 'keeper', version: '1.0.0', apiVersion: PLUGIN_API_VERSION,
  parseConfig: (raw) => raw,
  sharedMemory: () => ({ table: 64 }),
  prepare(setup) { new Int32Array(setup.shared.table)[0] = setup.config.value; },
  createState: () => null,
  process() {},
  tablesChanged() {},
};
`);
  const refuser = join(dir, 'refuser.ts');
  writeFileSync(refuser, `${common}
export default {
  name: 'refuser', version: '1.0.0', apiVersion: PLUGIN_API_VERSION,
  parseConfig: (raw) => raw,
  prepare(setup) { if (setup.config.refuse) throw Object.assign(new Error('refuse: refused'), { field: 'refuse' }); },
  createState: () => null,
  process() {},
  tablesChanged() {},
};
`);
  return { keeper, refuser };
}

t.test('a plugin that refuses after one that changes its tables in place: those tables are not touched', async (t) => {
  const { keeper, refuser } = plugins(t);
  const specs = (value: number, refuse: boolean) => [
    { name: 'keeper', path: keeper, config: { value } },
    { name: 'refuser', path: refuser, config: { refuse } },
  ];
  const first = await planPlugins(specs(1, false), TOPOLOGY);
  const inUse = allocatePluginMemory(first);
  await preparePlugins(first, inUse, TOPOLOGY);
  const table = new Int32Array(inUse.keeper.table);
  t.equal(table[0], 1, 'the first config is written');

  const refused = await planPlugins(specs(2, true), TOPOLOGY);
  const next = allocatePluginMemory(refused, inUse);
  t.equal(next.keeper.table, inUse.keeper.table, "keeper's region is kept from before: it writes in the table in use");
  await t.rejects(preparePlugins(refused, next, TOPOLOGY, inUse), { field: 'plugins.refuser.refuse', message: /refused/ });
  t.equal(table[0], 1, 'the refused change never reached the table in use');

  const accepted = await planPlugins(specs(3, false), TOPOLOGY);
  await preparePlugins(accepted, allocatePluginMemory(accepted, inUse), TOPOLOGY, inUse);
  t.equal(table[0], 3, 'an accepted change is written in place, after the others prepared');
});

t.test("the rate limiter's ports are checked as the config is planned, before any plugin prepares", async (t) => {
  const spec = { name: 'ratelimit', path: builtInPluginPath('ratelimit'), config: { policers: [{ name: 'p', cir: '1mbit', apply: [{ inPort: 'nope' }] }] } };
  await t.rejects(planPlugins([spec], TOPOLOGY), { field: 'policers[0].apply[0].inPort', message: /no port named "nope"/ });
});

t.test('whatever an operator plugin throws as it plans is a config error naming the plugin', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-prepare-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'throws-null.ts');
  writeFileSync(path, `import { PLUGIN_API_VERSION } from ${JSON.stringify(API)};
export default { name: 'n', version: '1.0.0', apiVersion: PLUGIN_API_VERSION, sharedMemory() { throw null; }, createState: () => null, process() {} };
`);
  await t.rejects(planPlugins([{ name: 'n', path, config: {} }], TOPOLOGY), { field: 'plugins.n', message: /null/ });
});
