// The pipeline as configured: plugins loaded into every PMD, their config checked before
// anything starts, their counters in the stats, and a plugin that throws costing only its
// batch.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, parseConfig, topologyOf } from '../../src/control/config.ts';
import { planPlugins } from '../../src/pipeline/loader.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { waitFor } from '../support/traffic.ts';
import { udp4 } from '../support/frames.ts';
import { adminClient } from '../support/admin-client.ts';
import { daemonEnv, startVrouter, VROUTER_BIN, type StartedVrouter } from '../support/vrouter-process.ts';

const FAULTY = fileURLToPath(new URL('../support/plugins/faulty.ts', import.meta.url));
const DSCP = fileURLToPath(new URL('../../examples/plugins/dscp-marker/index.ts', import.meta.url));
const port = (name: string) => ({ name, socket: `/tmp/${name}.sock`, bridge: 'br0' });
const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const TOPOLOGY = topologyOf(parseConfig({ ports: [port('a'), port('b')] }, '/', 2));

/** vrouter with ports a and b in a bridge and the plugin at `path`, named `name`, in `pipeline`; a and b connected. */
async function withPlugin(t: { teardown(fn: () => unknown): void }, name: string, path: string, pipeline: string[]) {
  const vr = await startVrouter({
    ports: ['a', 'b'].map((port) => ({ name: port, socket: `{dir}/${port}.sock`, bridge: 'br0' })),
    pmd: { cores: [1] },
    plugins: { [name]: { path } },
    pipeline,
  });
  t.teardown(() => vr.stop());
  const [a, b] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  return { vr, a, b };
}

/** vrouter with ports a and b and the faulty plugin after the bridge, a and b connected. */
const withFaultyPlugin = (t: { teardown(fn: () => unknown): void }) => withPlugin(t, 'faulty', FAULTY, ['bridge', 'faulty']);

/** The source of a plugin `name`, version `version`, that adds `step` to its counter `steps` for every batch (and declares `drops`, never used). */
const countingPlugin = (name: string, version: string, step: number, drops: string[] = []) => `
import { PLUGIN_API_VERSION, type Plugin } from '../../../src/pipeline/api.ts';
const plugin: Plugin<unknown, { id: number; count: (port: number, id: number, n: number) => void }> = {
  name: '${name}', version: '${version}', apiVersion: PLUGIN_API_VERSION,
  dropReasons: ${JSON.stringify(drops.map((d) => [d, 'declared, never used']))},
  counters: [['steps', 'what each version adds per batch']],
  createState: (ctx) => ({ id: ctx.counterId('steps'), count: ctx.count }),
  process(batch, s) { s.count(batch.ingress, s.id, ${step}); },
};
export default plugin;
`;

/** A frame from a to b whose payload starts with `first` (what the faulty plugin acts on), sent; returns it. */
function sendTrigger(a: VirtioNetDevice, b: VirtioNetDevice, first: number): Uint8Array {
  postRxBuffer(b.rx, 2048);
  const frame = ethernetFrame(MAC_B, MAC_A, 60);
  frame[14] = first;
  sendFrame(a.tx, frame);
  a.kick();
  return frame;
}

/** Whether 10 frames from a, every other one `trigger`, all reach b. */
async function forwardsWith(vr: StartedVrouter, a: VirtioNetDevice, b: VirtioNetDevice, trigger: Uint8Array): Promise<boolean> {
  for (let i = 0; i < 10; i++) postRxBuffer(b.rx, 2048);
  for (let i = 0; i < 10; i++) sendFrame(a.tx, i % 2 ? trigger : ethernetFrame(MAC_B, MAC_A, 60, i));
  a.kick();
  let got = 0;
  await waitFor('frames through', () => (got += b.rx.takeUsed().length) >= 10 || undefined, 10000)
    .catch((err: Error) => { throw new Error(`${err.message} (${got} came); vrouter's log:\n${vr.stderr().slice(-4000)}`); });
  return got >= 10;
}

t.test('pipeline and plugins in the config', async (t) => {
  const c = parseConfig({ ports: [port('a')] }, '/', 2);
  t.same([c.pipeline, c.plugins.map((p) => p.name)], [['bridge'], ['bridge']], 'by default: the built-in bridge alone');
  t.match(c.plugins[0].path, /plugins\/bridge\/index\.(ts|js)$/, 'found beside vrouter');
  const d = parseConfig({ ports: [port('a')], plugins: { dscp: { path: 'x/dscp.ts', dscp: 10 } }, pipeline: ['dscp', 'bridge'] }, '/etc/vr', 2);
  t.same(d.plugins[0], { name: 'dscp', path: '/etc/vr/x/dscp.ts', config: { dscp: 10 } }, 'paths from the config file directory; the rest is the plugin config');
  t.equal(d.plugins[1].name, 'bridge', 'in pipeline order');
  const e = parseConfig({ ports: [port('a')], plugins: { dscp: { path: 'x/dscp.ts' } }, pipeline: ['dscp'] }, '/etc/vr', 2);
  t.same(e.pipeline, ['bridge', 'dscp'], 'ports in bridges: the bridge stage goes first when not named');
  const f = parseConfig({ ports: [port('a')], pipeline: ['routing'], routes: [] }, '/etc/vr', 2);
  t.same(f.pipeline, ['routing', 'bridge'], 'and right after routing');
  t.same(f.plugins[0].config, { routes: [] }, 'the top-level "routes" go to the routing plugin');
  const cases: [object, string, RegExp][] = [
    [{ pipeline: 'bridge' }, 'pipeline', /array/],
    [{ pipeline: ['bridge', 'nat'] }, 'pipeline[1]', /neither a built-in plugin \(bridge, routing, acl, ratelimit\) nor one defined/],
    [{ pipeline: ['bridge', 'bridge'] }, 'pipeline[1]', /listed twice/],
    [{ pipeline: ['bridge'], routes: [] }, 'routes', /needs the "routing" stage/],
    [{ pipeline: ['bridge', 'routing'] }, 'pipeline[1]', /"routing" must come before "bridge"/],
    [{ bridges: { br9: {} } }, 'bridges.br9', /no port is in a bridge of that name/],
    [{ bridges: { br0: { addresses: ['10.0.0.1/24'] } } }, 'bridges.br0.addresses', /needs the "routing" stage/],
    [{ plugins: { dscp: { path: 'd.ts' } } }, 'plugins.dscp', /not in the pipeline/],
    [{ plugins: { DSCP: { path: 'd.ts' } }, pipeline: ['bridge', 'DSCP'] }, 'plugins.DSCP', /a plugin name is/],
    [{ plugins: { bridge: { path: 'b.ts' } } }, 'plugins.bridge.path', /built in: it takes no path/],
    [{ plugins: { dscp: { dscp: 1 } }, pipeline: ['bridge', 'dscp'] }, 'plugins.dscp.path', /path of the plugin module/],
  ];
  for (const [extra, field, reason] of cases) {
    const err = t.throws(() => parseConfig({ ports: [port('a')], ...extra }, '/', 2)) as ConfigError;
    t.equal(err.field, field, `${JSON.stringify(extra)}: field`);
    t.match(err.message, reason);
  }
});

t.test('plugins are loaded and checked before anything starts', async (t) => {
  const plans = await planPlugins([
    { name: 'dscp', path: DSCP, config: { dscp: 46 } },
    { name: 'faulty', path: FAULTY, config: {} },
  ], TOPOLOGY);
  t.same(
    plans.map((p) => [p.name, p.slot, p.dropReasons, p.counters]),
    [['dscp', 0, ['plugin_error'], ['marked', 'not_ip']], ['faulty', 3, ['plugin_error', 'never'], ['batches']]],
    'drop reasons (plugin_error first) and counters get slots one after the other',
  );
  await t.rejects(planPlugins([{ name: 'dscp', path: DSCP, config: { dscp: 99 } }], TOPOLOGY), { message: /^plugins\.dscp\.dscp: must be an integer from 0 to 63/ });
  await t.rejects(planPlugins([{ name: 'x', path: '/nonexistent/x.ts', config: {} }], TOPOLOGY), { message: /^plugins\.x\.path: cannot load/ });
  const notAPlugin = fileURLToPath(new URL('../support/traffic.ts', import.meta.url));
  await t.rejects(planPlugins([{ name: 'x', path: notAPlugin, config: {} }], TOPOLOGY), { message: /^plugins\.x\.path: .* does not export a plugin/ });
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-plugins-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ ports: [{ name: 'a', socket: join(dir, 'a.sock') }], plugins: { dscp: { path: DSCP, dscp: 64 } }, pipeline: ['dscp', 'bridge'] }));
  const run = spawnSync(process.execPath, [VROUTER_BIN, '--config', file], { encoding: 'utf8', timeout: 20000, env: daemonEnv() });
  t.equal(run.status, 2, 'the daemon exits with status 2');
  t.match(run.stderr, /invalid configuration: plugins\.dscp\.dscp: must be an integer from 0 to 63, got 64/);
});

t.test('a drop reason or counter named twice, or a drop reason named plugin_error, is refused as the plugin loads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-plugins-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const api = JSON.stringify(fileURLToPath(new URL('../../src/pipeline/api.ts', import.meta.url)));
  const write = (name: string, tables: string) => {
    const path = join(dir, `${name}.ts`);
    writeFileSync(path, `import { PLUGIN_API_VERSION } from ${api};
export default { name: '${name}', version: '1.0.0', apiVersion: PLUGIN_API_VERSION, ${tables}, createState: () => null, process() {} };
`);
    return path;
  };
  const cases: [string, string, RegExp][] = [
    ['twice', "dropReasons: [['x', 'one'], ['x', 'two']]", /twice: dropReasons names x, a name it has already/],
    ['host', "dropReasons: [['plugin_error', 'mine']]", /host: dropReasons names plugin_error, the host's own drop reason/],
    ['counted', "counters: [['n', 'one'], ['n', 'two']]", /counted: counters names n, a name it has already/],
  ];
  for (const [name, tables, reason] of cases) {
    await t.rejects(planPlugins([{ name, path: write(name, tables), config: {} }], TOPOLOGY), { field: `plugins.${name}.path`, message: reason });
  }
  const apart = await planPlugins([{ name: 'apart', path: write('apart', "dropReasons: [['n', 'a drop']], counters: [['n', 'a count']]"), config: {} }], TOPOLOGY);
  t.same([apart[0].dropReasons, apart[0].counters], [['plugin_error', 'n'], ['n']], 'a drop reason and a counter may share a name: they are counted and read apart');
});

t.test('a plugin that throws costs its batch, not the PMD', async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  const send = async (poison: boolean, n: number) => {
    for (let i = 0; i < n; i++) postRxBuffer(b.rx, 2048);
    for (let i = 0; i < n; i++) {
      const f = ethernetFrame(MAC_B, MAC_A, 60, i);
      if (poison) f[14] = 0xee;
      sendFrame(a.tx, f);
      a.kick();
      await new Promise((r) => setTimeout(r, 2)); // one frame, one batch
    }
  };
  await send(true, 20);
  await waitFor('the error in the log', () => /plugin faulty threw in process, its batch was dropped/.test(vr.stderr()));
  // A slow PMD may still hold poisoned frames: good ones sharing their burst would go with it.
  await waitFor('every poisoned frame taken', async () => (await vr.stats()).a.plugins.faulty.drops.plugin_error === 20);
  await send(false, 10);
  let got = 0;
  await waitFor('the good frames', () => (got += b.rx.takeUsed().length) >= 10 || undefined)
    .catch((err: Error) => { throw new Error(`${err.message} (${got} came); vrouter's log:\n${vr.stderr().slice(-4000)}`); });
  t.equal(got, 10, 'the PMD forwards the batches the plugin does not throw on');
  const s = await vr.stats();
  t.equal(s.a.plugins.faulty.drops.plugin_error, 20, 'each poisoned frame was dropped as the plugin\'s plugin_error');
  t.equal(s.a.plugins.faulty.drops.never, 0);
  const batches = s.a.plugins.faulty.counters.batches;
  t.ok(batches >= 10 && batches <= 30, `its own counter counted the ${batches} batches of the 30 frames`);
  t.equal(s.b.tx_packets, 10);
  const logged = (vr.stderr().match(/plugin faulty threw/g) ?? []).length;
  t.ok(logged >= 1 && logged <= 2, `the exception was logged ${logged} time(s) for 20 batches within a second or so`);
  t.ok(vr.alive());
});

t.test('a plugin that hangs a PMD is taken out of it', async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  const hang = sendTrigger(a, b, 0xdd);
  const started = Date.now();
  await waitFor('the watchdog', () => /pmd0 is stuck in plugin faulty \(no poll round for 1000 ms\): restarting it without the plugin \(bypass: its traffic passes unprocessed\)/.test(vr.stderr()), 5000);
  t.pass(`the supervisor saw the PMD stuck in the plugin after ${Date.now() - started} ms and said so`);
  await waitFor('the restart', () => /pmd0 exited with code \d+: restarting it/.test(vr.stderr()), 5000);
  await waitFor('the queues back', () => /port b: vring 0 \(guest rx\) running, size 256, resumed/.test(vr.stderr()), 5000);
  t.ok(await forwardsWith(vr, a, b, hang), 'the restarted PMD forwards, the frames that hung the plugin too (it is bypassed)');
  t.ok(vr.alive());
});

t.test("a plugin's decisions the egress step cannot carry out cost those packets, not the PMD", async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  for (const first of [0xde, 0xdb]) {
    for (let i = 0; i < 3; i++) postRxBuffer(b.rx, 2048);
    for (let i = 0; i < 3; i++) {
      const f = ethernetFrame(MAC_B, MAC_A, 60, i);
      f[14] = first;
      sendFrame(a.tx, f);
    }
    a.kick();
  }
  await waitFor('the six frames dropped', async () => (await vr.stats()).a.plugins.faulty.drops.plugin_error === 6 || undefined, 5000);
  t.match(vr.stderr(), /plugin faulty failed in process: it sent \d+ packet\(s\) of a batch to (40|-502), which is no port of this PMD \(0 to 1\)/, 'the log says what the plugin did');
  t.ok(await forwardsWith(vr, a, b, ethernetFrame(MAC_B, MAC_A, 60, 99)), 'the PMD forwards on');
  t.notMatch(vr.stderr(), /pmd0 exited|quarantine/, 'no PMD restarted, no port quarantined');
  t.ok(vr.alive());
});

t.test("an operator's plugin after another stage leaves that stage's drops as they are", async (t) => {
  const ROUTER_A = '02:00:00:00:0a:01';
  const vr = await startVrouter({
    ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER_A }, { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] }],
    pmd: { cores: [1] },
    plugins: { faulty: { path: FAULTY } },
    pipeline: ['routing', 'faulty'],
  });
  t.teardown(() => vr.stop());
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  for (let i = 0; i < 3; i++) sendFrame(a.tx, udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1000 + i, dstPort: 9, payload: 8, srcMac: MAC_A, dstMac: ROUTER_A, ttl: 1 }));
  a.kick();
  await waitFor('the routing stage\'s drops', async () => (await vr.stats()).a.plugins.routing.drops.ttl_exceeded === 3 || undefined, 5000);
  const s = await vr.stats();
  t.equal(s.a.plugins.faulty.drops.plugin_error, 0, 'none counted as the later plugin\'s error');
  t.notMatch(vr.stderr(), /plugin faulty failed in process/);
});

t.test('a frame flooded from a port in no bridge goes nowhere, and is counted so', async (t) => {
  const vr = await startVrouter({ ports: ['a', 'b'].map((port) => ({ name: port, socket: `{dir}/${port}.sock` })), pmd: { cores: [1] }, plugins: { faulty: { path: FAULTY } }, pipeline: ['faulty'] });
  t.teardown(() => vr.stop());
  const [a, b] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  for (let i = 0; i < 4; i++) {
    const f = ethernetFrame(MAC_B, MAC_A, 60, i);
    f[14] = 0xd9;
    sendFrame(a.tx, f);
  }
  a.kick();
  await waitFor('the four frames counted', async () => (await vr.stats()).a.drops.no_destination === 4 || undefined, 5000);
  t.equal((await vr.stats()).b.tx_packets, 0, 'none reached b');
});

t.test('a plugin that never returns from betweenBursts is taken out of the PMD', async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  const hang = sendTrigger(a, b, 0xda);
  await waitFor('the watchdog', () => /pmd0 is stuck in plugin faulty \(no poll round for 1000 ms\): restarting it without the plugin/.test(vr.stderr()) || undefined, 5000);
  await waitFor('the queues back', () => /port b: vring 0 \(guest rx\) running, size 256, resumed/.test(vr.stderr()) || undefined, 5000);
  t.ok(await forwardsWith(vr, a, b, hang), 'the restarted PMD forwards (the plugin bypassed)');
  t.notMatch(vr.stderr(), /stuck, not in a plugin/);
  t.ok(vr.alive());
});

t.test('a plugin that fails to take new tables is taken out, not left on the ones freed', async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  const api = adminClient(vr);
  const document = (await api.call('GET', '/config')).json as { plugins: Record<string, Record<string, unknown>> };
  document.plugins.faulty.failTables = true;
  const put = await api.call('PUT', '/config', document);
  t.equal(put.status, 200, put.text);
  await waitFor('the log line', () => /plugin faulty failed to take its new config and tables, taken out of the pipeline \(bypass\): Error: cannot take these tables/.test(vr.stderr()) || undefined, 5000);
  const before = (await vr.stats()).a.plugins.faulty.counters.batches;
  t.ok(await forwardsWith(vr, a, b, ethernetFrame(MAC_B, MAC_A, 60, 98)), 'traffic passes the bypassed plugin');
  t.equal((await vr.stats()).a.plugins.faulty.counters.batches, before, 'which sees no batch');
  t.notMatch(vr.stderr(), /pmd0 exited/);
});

t.test('a PMD blocked in a system call: its process is killed, the spare takes over', async (t) => {
  const { vr, a, b } = await withFaultyPlugin(t);
  const blocks = sendTrigger(a, b, 0xdc);
  await waitFor('the watchdog', () => /pmd0 is stuck in plugin faulty/.test(vr.stderr()) || undefined, 5000);
  // Terminated, a thread blocked in read() never ends: the data plane goes, as in a crash.
  await waitFor('the kill', () => /pmd0 did not end 3000 ms after it was terminated \(blocked in a system call\): killing the data-plane process/.test(vr.stderr()) || undefined, 8000);
  await waitFor('the new data plane', () => /the data-plane process died \(signal SIGKILL\)/.test(vr.stderr()) || undefined, 5000);
  await waitFor('the queues back', () => /port b: vring 0 \(guest rx\) running, size 256, resumed/.test(vr.stderr()) || undefined, 10000);
  t.ok(await forwardsWith(vr, a, b, blocks), 'the new data plane forwards, the frames that blocked the plugin too (it is bypassed)');
  t.ok(vr.alive());
});

/** vrouter bridging a and b behind the plugin `name` of test/support/plugins/`file`. */
async function behindPlugin(t: { teardown(fn: () => unknown): void }, name: string, file: string): Promise<StartedVrouter> {
  const vr = await startVrouter({
    ports: ['a', 'b'].map((port) => ({ name: port, socket: `{dir}/${port}.sock`, bridge: 'br0' })),
    pmd: { cores: [1] },
    plugins: { [name]: { path: fileURLToPath(new URL(`../support/plugins/${file}`, import.meta.url)) } },
    pipeline: [name, 'bridge'],
  });
  t.teardown(() => vr.stop());
  return vr;
}

/** How many of 5 frames from a (connected now, as b) reach b. */
async function framesThrough(t: { teardown(fn: () => unknown): void }, vr: StartedVrouter): Promise<number> {
  const [a, b] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  for (let i = 0; i < 5; i++) postRxBuffer(b.rx, 2048);
  for (let i = 0; i < 5; i++) sendFrame(a.tx, ethernetFrame(MAC_B, MAC_A, 60, i));
  a.kick();
  let got = 0;
  await waitFor('5 frames', () => (got += b.rx.takeUsed().length) >= 5 || undefined, 10_000);
  return got;
}

t.test('a plugin that cannot start is taken out, the PMD runs', async (t) => {
  const vr = await behindPlugin(t, 'broken', 'cannot-start.ts');
  await waitFor('the log line', () => /plugin broken failed to start, taken out of the pipeline \(bypass\): Error: no state for this PMD/.test(vr.stderr()));
  t.equal(await framesThrough(t, vr), 5, 'traffic passes the bypassed plugin');
  t.notMatch(vr.stderr(), /pmd0 exited/, 'and the PMD never crashed');
});

t.test('a plugin whose createState never returns is taken out, the PMD runs', async (t) => {
  const vr = await behindPlugin(t, 'stuck', 'hangs-at-start.ts');
  await waitFor('the watchdog', () => /pmd0 is stuck in plugin stuck \(no poll round 5000 ms after its start\): restarting it without the plugin \(bypass: its traffic passes unprocessed\)/.test(vr.stderr()) || undefined, 10_000);
  t.equal(await framesThrough(t, vr), 5, 'traffic passes the bypassed plugin');
});

t.test('a plugin file broken on disk: a PMD that restarts takes its stage out, dropping, and the data plane runs on; a reload of the fixed file brings it back', async (t) => {
  const file = fileURLToPath(new URL(`../support/plugins/reloadable-broken-${process.pid}.ts`, import.meta.url));
  const counting = (step: number) => countingPlugin('counting', `${step}`, step);
  writeFileSync(file, counting(1));
  t.teardown(() => rmSync(file, { force: true }));
  const { vr, a, b } = await withPlugin(t, 'counting', file, ['counting', 'bridge']);
  const send = () => {
    postRxBuffer(b.rx, 2048);
    sendFrame(a.tx, ethernetFrame(MAC_B, MAC_A, 60));
    a.kick();
  };
  send();
  await waitFor('the frame on b', () => b.rx.takeUsed().length > 0 || undefined, 5000);
  writeFileSync(file, 'export default {');
  vr.proc.kill('SIGUSR2');
  await waitFor('the restarted PMD taking the stage out', () => /plugin counting cannot be imported .*taken out of the pipeline/.test(vr.stderr()) || undefined, 10_000);
  await waitFor('the queues back', () => (vr.stderr().match(/port b: vring 0 \(guest rx\) running, size 256, resumed/g) ?? []).length >= 1, 5000);
  send();
  await waitFor('the frame dropped as plugin_error', async () => (await vr.stats()).a.plugins.counting.drops.plugin_error >= 1 || undefined, 5000);
  t.equal(b.rx.takeUsed().length, 0, 'nothing reached b');
  await new Promise((r) => setTimeout(r, 1500));
  t.ok(vr.alive(), 'vrouter runs');
  t.notMatch(vr.stderr(), /restarts within/, 'no restart loop');
  writeFileSync(file, counting(5));
  vr.proc.kill('SIGHUP');
  await waitFor('the reload', () => /reloaded from .* \(counting 1 -> 5\)/.test(vr.stderr()) || undefined, 5000);
  await waitFor('the queues back again', () => (vr.stderr().match(/port b: vring 0 \(guest rx\) running, size 256, resumed/g) ?? []).length >= 2, 5000);
  const before = (await vr.stats()).a.plugins.counting.counters.steps;
  send();
  await waitFor('the frame on b again', () => b.rx.takeUsed().length > 0 || undefined, 5000);
  t.equal((await vr.stats()).a.plugins.counting.counters.steps - before, 5, 'the fixed file runs');
});

t.test('SIGHUP loads the plugin files again, a route added meanwhile does not; a version that fails leaves the running one, and the file fixed loads', async (t) => {
  const file = fileURLToPath(new URL(`../support/plugins/reloadable-${process.pid}.ts`, import.meta.url));
  // Version 2 declares two drop reasons more: the slots of its counter, and of every plugin after it, move.
  const version = (v: string, step: number) => countingPlugin('reloadable', v, step, v === '2' ? ['first', 'second'] : []);
  writeFileSync(file, version('1', 1));
  t.teardown(() => rmSync(file, { force: true }));
  const { vr, a, b } = await withPlugin(t, 'reloadable', file, ['reloadable', 'routing', 'bridge']);
  const oneBatch = async () => {
    const before = (await vr.stats()).a.plugins.reloadable.counters.steps;
    postRxBuffer(b.rx, 2048);
    sendFrame(a.tx, ethernetFrame(MAC_B, MAC_A, 60));
    a.kick();
    await waitFor('the frame on b', () => b.rx.takeUsed().length > 0 || undefined, 5000);
    return (await vr.stats()).a.plugins.reloadable.counters.steps - before;
  };
  t.equal(await oneBatch(), 1, 'version 1 adds 1 per batch');
  writeFileSync(file, version('2', 1000));
  const added = await adminClient(vr).call('POST', '/routes', { prefix: '192.0.2.0/24', blackhole: true });
  t.same([added.status, added.json?.mode], [200, 'live'], `a route added through the admin endpoint is applied live (${added.text.slice(0, 200)})`);
  t.equal(await oneBatch(), 1, 'and version 1 still runs: a change through the endpoint does not load plugin files');
  // As the config file has it again, so that SIGHUP changes the plugin file alone.
  t.equal((await adminClient(vr).call('DELETE', `/routes/${encodeURIComponent('192.0.2.0/24')}`)).status, 200, 'the route removed');
  const countsBefore = (await vr.stats()).a.plugins;
  vr.proc.kill('SIGHUP');
  await waitFor('the reload', () => /reloaded from .* \(reloadable 1 -> 2\): restarting the PMDs on them/.test(vr.stderr()), 5000);
  await waitFor('the queues back', () => (vr.stderr().match(/port b: vring 0 \(guest rx\) running, size 256, resumed/g) ?? []).length >= 1, 5000);
  const countsAfter = (await vr.stats()).a.plugins;
  t.same([countsAfter.reloadable.counters.steps, countsAfter.reloadable.drops, countsAfter.routing, countsAfter.bridge], [countsBefore.reloadable.counters.steps, { plugin_error: 0, first: 0, second: 0 }, countsBefore.routing, countsBefore.bridge], 'every plugin\'s counts under their names, in the slots the new version moved', { countsBefore, countsAfter });
  t.equal(await oneBatch(), 1000, 'version 2 runs after SIGHUP');
  writeFileSync(file, 'export default {'); // a version that does not even parse
  vr.proc.kill('SIGHUP');
  await waitFor('the refusal', () => /not reloaded, the running config and plugins stay: plugins\.reloadable\.path: cannot load/.test(vr.stderr()), 5000);
  t.equal(await oneBatch(), 1000, 'version 2 still runs');
  // One that throws as it loads, refused too; then the file fixed: the next reload loads it
  // (not the failure the module cache kept).
  writeFileSync(file, "throw new Error('not today');\n");
  vr.proc.kill('SIGHUP');
  await waitFor('the second refusal', () => (vr.stderr().match(/not reloaded, the running config and plugins stay: plugins\.reloadable\.path: cannot load/g) ?? []).length >= 2, 5000);
  writeFileSync(file, version('3', 7));
  vr.proc.kill('SIGHUP');
  await waitFor('the reload of the fixed file', () => /reloaded from .* \(reloadable 2 -> 3\)/.test(vr.stderr()), 5000);
  await waitFor('the queues back again', () => (vr.stderr().match(/port b: vring 0 \(guest rx\) running, size 256, resumed/g) ?? []).length >= 2, 5000);
  t.equal(await oneBatch(), 7, 'version 3 runs');
  t.notMatch(vr.stderr(), /restarts within/, 'reloads are not counted as crashes');
  t.ok(vr.alive());
});
