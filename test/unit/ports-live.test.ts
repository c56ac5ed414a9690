// Ports added, removed and changed while vrouter runs, through the admin endpoint: the other
// ports' frontends stay connected and keep forwarding, a new port takes a frontend and
// forwards, a removed one disconnects and its socket goes, its slot is taken again with
// counters from zero, a queue moves to the other PMD without a reconnect, and refusals change
// nothing.
import t from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminClient } from '../support/admin-client.ts';
import { trafficFlows } from '../support/traffic.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { assignQueues, assignSlots } from '../../src/control/port-slots.ts';
import { parseConfig } from '../../src/control/config.ts';
import { closeAll, unixListen } from '../../src/sys/libc.ts';

const MAC = { a: '02:00:00:00:00:0a', b: '02:00:00:00:00:0b', c: '02:00:00:00:00:0c', d: '02:00:00:00:00:0d' };

t.test('slots: kept ports keep theirs, new ones take the first free one', async (t) => {
  const ports = (names: string[]) => names.map((name) => ({ name }) as never);
  t.same(assignSlots([], ports(['a', 'b', 'c'])), ['a', 'b', 'c']);
  t.same(assignSlots(['a', 'b', 'c'], ports(['a', 'c'])), ['a', null, 'c'], 'a removed port leaves its slot free');
  t.same(assignSlots(['a', null, 'c'], ports(['a', 'c', 'd', 'e'])), ['a', 'd', 'c', 'e'], 'new ports fill the free slot, then append');
  t.same(assignSlots(['a', 'b', 'c'], ports(['a'])), ['a'], 'free slots at the end are dropped');
  const config = parseConfig({ ports: ['a', 'b', 'c'].map((name) => ({ name, socket: `/tmp/${name}.sock`, queues: 2 })), pmd: { cores: [0, 1] } }, '/', 2);
  const start = assignQueues(config, ['a', 'b', 'c']);
  t.same(start, [[0, 1], [0, 1], [0, 1]], 'at start: round-robin');
  const moved = structuredClone(config);
  moved.ports[1].rxqAffinity = { 0: 1 };
  const owners = new Map([['a', start[0]], ['b', start[1]], ['c', start[2]]]);
  t.same(assignQueues(moved, ['a', 'b', 'c'], owners), [[0, 1], [1, 1], [0, 1]], 'a pinned queue moves; the others stay');
  const grown = parseConfig({ ports: ['a', 'b', 'c', 'd'].map((name) => ({ name, socket: `/tmp/${name}.sock`, queues: name === 'd' ? 1 : 2 })), pmd: { cores: [0, 1] } }, '/', 2);
  const load = new Map([['a', [0, 0]], ['b', [0, 1]], ['c', [0, 1]]]);
  t.same(assignQueues(grown, ['a', 'b', 'c', 'd'], load)[3], [1], 'a new port\'s queue goes to the least loaded PMD');
});

t.test('ports added, moved and removed at run time', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [0, 1] } }));
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const devices: Record<string, VirtioNetDevice> = {};
  t.teardown(() => Object.values(devices).forEach((d) => d.close()));
  for (const name of ['a', 'b']) devices[name] = await startDevice(vr.sockets[name]);
  t.equal(await trafficFlows(devices.a, devices.b, 20, MAC.a, MAC.b), 20, 'a to b before any change');
  /** the ports whose frontend saw its connection closed by vrouter */
  const closedNow = async () => {
    const names: string[] = [];
    for (const [name, d] of Object.entries(devices)) if (await d.frontend.closedByPeer(50)) names.push(name);
    return names;
  };

  // A new port, in the same bridge.
  const socketC = join(vr.dir, 'c.sock');
  const added = await api.call('POST', '/ports', { name: 'c', socket: socketC, bridge: 'br0' });
  t.match(added, { status: 200, json: { mode: 'restart' } });
  t.same((await api.call('GET', '/ports')).json.map((p: { name: string }) => p.name), ['a', 'b', 'c']);
  devices.c = await startDevice(socketC);
  t.equal(await trafficFlows(devices.a, devices.c, 20, MAC.a, MAC.c), 20, 'the new port forwards');
  t.equal(await trafficFlows(devices.b, devices.a, 20, MAC.b, MAC.a), 20, 'the ports that were there still forward');
  const states = (await api.call('GET', '/ports')).json.map((p: { state: { connected: boolean } }) => p.state.connected);
  t.same(states, [true, true, true], 'every frontend connected: none was dropped by the change');
  t.same(await closedNow(), [], 'no frontend saw its connection close');
  const pause = /PMDs running on the new layout after (\d+) ms: 3 port\(s\)/.exec(vr.stderr());
  t.ok(pause, 'the log says how long the PMDs took to restart on the new layout');
  t.comment(`PMDs restarted on the new layout in ${pause?.[1]} ms`);

  // Refusals: the running ports stay as they were.
  t.match(await api.call('POST', '/ports', { name: 'a', socket: join(vr.dir, 'x.sock') }), { status: 400, json: { error: { code: 'VR_CONFIG', field: 'name' } } });
  t.match(await api.call('POST', '/ports', { name: 'x', socket: join(vr.dir, 'x.sock'), speed: 10 }), { status: 400, json: { error: { code: 'VR_INVALID', field: 'speed' } } });
  t.match(await api.call('POST', '/ports', { name: 'x', socket: join(vr.dir, 'x.sock'), mtu: 20 }), { status: 400, json: { error: { code: 'VR_CONFIG', field: 'mtu' } } });
  const taken = join(vr.dir, 'file');
  writeFileSync(taken, 'not a socket');
  const refused = await api.call('POST', '/ports', { name: 'x', socket: taken });
  t.match(refused, { status: 400, json: { error: { code: 'VR_PORT', field: 'socket', message: /not a socket/ } } }, 'a socket path that cannot be had is refused, naming the request\'s field');
  // A socket something listens on (here the admin endpoint's own) is not taken from it; one
  // nothing listens on any more (left by a process that died) is.
  const inUse = await api.call('POST', '/ports', { name: 'x', socket: join(vr.dir, 'admin.sock') });
  t.match(inUse, { status: 400, json: { error: { code: 'VR_PORT', message: /is a socket in use/ } } }, 'the admin endpoint\'s socket is refused');
  t.equal((await api.call('GET', '/ports')).status, 200, 'and the endpoint still answers on it');
  const stale = join(vr.dir, 'stale.sock');
  const left = unixListen(stale);
  closeAll([left]);
  t.equal((await api.call('POST', '/ports', { name: 'x', socket: stale, bridge: 'br0' })).status, 200, 'a stale socket is replaced');
  t.equal((await api.call('DELETE', '/ports/x')).status, 200);
  t.same((await api.call('GET', '/ports')).json.map((p: { name: string }) => p.name), ['a', 'b', 'c'], 'nothing changed');
  t.match(await api.call('DELETE', '/ports/zz'), { status: 404, json: { error: { code: 'VR_NOT_FOUND', field: 'name' } } });

  // A queue moved to the other PMD: the frontend stays, the queue runs there.
  const before = (await api.call('GET', '/ports/a')).json.queueCpus[0];
  const other = before === 0 ? 1 : 0;
  // Pinned where it runs (no pin before): nothing moves, and the PMDs are not restarted for it.
  const restarts = () => (vr.stderr().match(/restarting the PMDs/g) ?? []).length;
  const restartsBefore = restarts();
  t.match(await api.call('PUT', '/ports/a/queues/0', { cpu: before }), { status: 200, json: { mode: 'none' } }, 'a queue pinned to the CPU it is on: no change to carry out');
  t.equal(restarts(), restartsBefore, 'the PMDs kept running');
  t.match((await api.call('GET', '/ports/a')).json, { queueCpus: [before], rxqAffinity: { 0: before } }, 'the queue where it was, pinned there from now on');
  t.match(await api.call('PUT', '/ports/a/queues/0', { cpu: other }), { status: 200, json: { mode: 'restart' } });
  t.same((await api.call('GET', '/ports/a')).json.queueCpus, [other], `port a's queue pair is polled on CPU ${other}`);
  const pmds = (await api.call('GET', '/pmds')).json as { cpu: number; queues: { port: string; queue: number }[] }[];
  t.same(pmds.find((p) => p.cpu === other)?.queues.filter((q) => q.port === 'a'), [{ port: 'a', queue: 0 }], '/pmds shows the queue on its new PMD');
  t.same(pmds.find((p) => p.cpu === before)?.queues.filter((q) => q.port === 'a'), [], 'and no longer on the old one');
  t.match(await api.call('PUT', '/ports/a/queues/3', { cpu: 0 }), { status: 404, json: { error: { field: 'queue' } } });
  t.match(await api.call('PUT', '/ports/a/queues/0', { cpu: 7 }), { status: 400, json: { error: { code: 'VR_CONFIG', field: 'cpu' } } });
  t.match(await api.call('PUT', '/ports/a/queues/00', { cpu: other }), { status: 200, json: { mode: 'none' } }, 'queue "00" is queue pair 0, where it is already');
  t.equal(await trafficFlows(devices.a, devices.b, 20, MAC.a, MAC.b), 20, 'a still forwards from the other PMD');
  t.same(await closedNow(), [], 'moving the queue kept the frontend connected');

  // Removed: its frontend is disconnected, its socket goes, the others keep forwarding.
  const rxBefore = (await api.call('GET', '/ports/a')).json.counters.rx_packets;
  t.match(await api.call('DELETE', '/ports/b'), { status: 200, json: { mode: 'restart' } });
  t.ok(await devices.b.frontend.closedByPeer(3000), 'the removed port\'s frontend is disconnected');
  t.notOk(existsSync(vr.sockets.b), 'the removed port\'s socket file is gone');
  t.equal(await trafficFlows(devices.a, devices.c, 20, MAC.a, MAC.c), 20, 'a to c after b went');
  t.ok((await api.call('GET', '/ports/a')).json.counters.rx_packets >= rxBefore + 20, 'a\'s counters survived the changes');

  // b's slot is taken by d: its counters start from zero, and the PMDs' totals keep what b counted.
  const pmdTotals = async () => ((await api.call('GET', '/pmds')).json as { rx_packets: number; tx_packets: number }[]).map((p) => [p.rx_packets, p.tx_packets]);
  const totalsBefore = await pmdTotals();
  const socketD = join(vr.dir, 'd.sock');
  t.match(await api.call('POST', '/ports', { name: 'd', socket: socketD, bridge: 'br0' }), { status: 200 });
  t.match((await api.call('GET', '/ports/d')).json.counters, { rx_packets: 0, tx_packets: 0 }, 'the slot b left starts from zero for d');
  const totalsAfter = await pmdTotals();
  t.ok(totalsAfter.every(([rx, tx], pmd) => rx >= totalsBefore[pmd][0] && tx >= totalsBefore[pmd][1]) && totalsBefore.some(([rx]) => rx >= 60), `no PMD's totals went back: ${JSON.stringify(totalsBefore)} then ${JSON.stringify(totalsAfter)}`);
  devices.d = await startDevice(socketD);
  t.equal(await trafficFlows(devices.d, devices.a, 20, MAC.d, MAC.a), 20, 'd forwards');
  devices.b.close();
  delete devices.b;
  t.same(await closedNow(), [], 'only the removed port lost its frontend');
  t.ok(vr.alive());
});

t.test('a router without bridges takes bridged ports at run time', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] }], pmd: { cores: [1] }, pipeline: ['routing'] });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  for (const name of ['x', 'y']) t.match(await api.call('POST', '/ports', { name, socket: join(vr.dir, `${name}.sock`), bridge: 'br9' }), { status: 200, json: { mode: 'restart' } }, `port ${name} added to a new bridge`);
  const x = await startDevice(join(vr.dir, 'x.sock'));
  const y = await startDevice(join(vr.dir, 'y.sock'));
  t.teardown(() => [x, y].forEach((d) => d.close()));
  t.equal(await trafficFlows(x, y, 20, MAC.c, MAC.d), 20, 'the new bridge switches');
  t.same((await api.call('GET', '/plugins')).json.map((p: { name: string }) => p.name), ['routing', 'bridge'], 'the bridge stage was in the pipeline from the start');
});
