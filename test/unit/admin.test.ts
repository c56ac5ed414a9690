// The admin endpoint of a running vrouter, as a client sees it (undici over the UNIX socket,
// and TCP with a token): every resource answers, every route is in the OpenAPI document and
// every documented route answers; routes added and removed live; refusals are 400s naming the
// field and change nothing; dry runs; commit-confirmed rolls back; /metrics passes promtool.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { daemonEnv, startVrouter, VROUTER_BIN, type StartedVrouter } from '../support/vrouter-process.ts';
import { waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { adminClient as client } from '../support/admin-client.ts';
import { testGuest } from '../support/test-guest.ts';
import { udp4 } from '../support/frames.ts';
import { ROUTED } from '../support/routed-config.ts';

t.test('reading: every resource, and the OpenAPI document against the routes', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const api = client(vr);
  const ports = await api.call('GET', '/ports');
  t.equal(ports.status, 200);
  t.same(ports.json.map((p: { name: string }) => p.name), ['a', 'b', 'c', 'd']);
  t.match(ports.json[0], { name: 'a', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], counters: { rx_packets: 0 } });
  t.match((await api.call('GET', '/ports/b')).json, { name: 'b', state: { connected: false, device: null }, counters: { drops: { no_destination: 0 } } });
  const device = await startDevice(vr.sockets.a);
  t.teardown(() => device.close());
  t.match((await api.call('GET', '/ports/a')).json.state, { connected: true, quarantinedForS: 0, device: { features: /^0x/, vrings: [{ index: 0, direction: 'guest rx', size: 256, running: true }, { index: 1, running: true }] } }, 'a connected frontend: its features and running vrings');
  t.match(await api.call('GET', '/ports/zz'), { status: 404, json: { error: { code: 'VR_NOT_FOUND', field: 'name' } } });
  t.match((await api.call('GET', '/counters')).json, { a: { rx_packets: 0, plugins: { routing: { counters: { routed: 0 } } } } });
  t.match((await api.call('GET', '/pmds')).json, [{ cpu: 1, busy_ms: Number, busy_rounds: Number }]);
  t.match((await api.call('GET', '/plugins')).json, [{ name: 'routing', tables: ['routes', 'neighbours'] }, { name: 'bridge' }, { name: 'acl', tables: ['rules'] }, { name: 'ratelimit', tables: ['policers'] }]);
  t.match((await api.call('GET', '/plugins/routing')).json, { name: 'routing', version: String, tables: ['routes', 'neighbours'], config: { routes: ROUTED.routes } }, 'one plugin, with its config as written');
  t.same((await api.call('GET', '/plugins/acl')).json.config, { acl: ROUTED.acl });
  t.match(await api.call('GET', '/plugins/zz'), { status: 404, json: { error: { code: 'VR_NOT_FOUND', field: 'name' } } });
  t.match((await api.call('GET', '/policers')).json, [{ name: 'p', apply: [{ inPort: 'a' }], counters: { green: { packets: 0 } } }]);
  t.match((await api.call('GET', '/routes')).json, [{ prefix: '10.0.1.0/24', type: 'connected' }, {}, { prefix: '10.0.2.0/24' }, { prefix: '192.0.2.0/24', type: 'static', via: ['10.0.2.2'] }]);
  t.same((await api.call('GET', '/neighbours')).json, [], 'no neighbour yet');
  t.same((await api.call('GET', '/config')).json.routes, ROUTED.routes, 'the config in force, as written');
  t.match(await api.call('GET', '/nowhere'), { status: 404, json: { error: { code: 'VR_NOT_FOUND' } } });
  t.match(await api.call('PATCH', '/counters'), { status: 405, json: { error: { code: 'VR_METHOD' } } });

  const doc = (await api.call('GET', '/openapi.json')).json;
  t.equal(doc.openapi, '3.1.0');
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  for (const route of ['GET /ports', 'POST /routes', 'DELETE /routes/{prefix}', 'GET /metrics', 'PUT /config', 'GET /openapi.json', 'PUT /acl', 'GET /policers']) {
    t.ok(documented.includes(route), `${route} is documented`);
  }
  // Every documented route answers: reads with 200 (or 404 for a named thing that is not
  // there), changes with a refusal of the empty body, never 404-no-such-route or 405.
  for (const op of documented) {
    const [method, path] = op.split(' ');
    const concrete = path.replace('{name}', 'routing').replace('{table}', 'routes').replace('{prefix}', encodeURIComponent('203.0.113.0/24')).replace('{address}', '10.0.2.99');
    if (method !== 'GET' && (path === '/config/save' || path === '/reload' || path === '/config/confirm')) continue;
    const res = await api.call(method, concrete);
    t.not(res.status, 405, `${op} answers`);
    t.ok(res.status !== 404 || res.json?.error?.field !== '' || /no (static|change)/.test(res.json?.error?.message), `${op} is routed (${res.status} ${res.json?.error?.message ?? ''})`);
  }
});

t.test('changing routes live, and refusals that change nothing', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const api = client(vr);
  const added = await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.3', metric: 5 });
  t.equal(added.status, 200, added.text);
  t.match(added.json, { mode: 'live', plugins: ['routing'], diff: [{ key: 'routes', added: [{ prefix: '198.51.100.0/24' }], removed: [] }] });
  // A route added is written into the tables the PMDs read: they are not interrupted for it.
  await waitFor('the route in the tables in use', () => /routing: 1 route changes made in place/.test(vr.stderr()) || undefined, 5000);
  t.notMatch(vr.stderr(), /pmd0: plugin routing: new config and tables in use/, 'the PMDs kept their tables');
  t.match((await api.call('GET', '/routes')).json.find((r: { prefix: string }) => r.prefix === '198.51.100.0/24'), { via: ['10.0.2.3'], metric: 5 });

  const before = (await api.call('GET', '/config')).json;
  const cases: [unknown, number, string, string, RegExp][] = [
    [{ prefix: '198.51.100.0/24', via: '172.16.0.1' }, 400, 'VR_CONFIG', 'via', /no connected subnet/],
    [{ prefix: '198.51.100.1/24', via: '10.0.2.3' }, 400, 'VR_CONFIG', 'prefix', /host bits/],
    [{ prefix: '239.1.0.0/16', via: '10.0.2.3' }, 400, 'VR_CONFIG', 'prefix', /239\.1\.0\.0\/16 is in 224\/4 \(multicast\): packets to it are dropped as not routable, never routed/],
    [{ prefix: '198.51.100.0/24', via: '10.0.2.3', metric: -1 }, 400, 'VR_INVALID', 'metric', /must be an integer of at least 0, got -1/],
    [{ via: '10.0.2.3' }, 400, 'VR_INVALID', 'prefix', /got nothing/],
    [{ prefix: '198.51.100.0/24', via: [] }, 400, 'VR_INVALID', 'via', /a string or a non-empty array, got an empty array/],
    [{ prefix: '198.51.100.0/24', gateway: '10.0.2.3' }, 400, 'VR_INVALID', 'gateway', /unknown key/],
    ['{"prefix": ', 400, 'VR_BAD_JSON', '', /not JSON/],
  ];
  for (const [body, status, code, field, message] of cases) {
    const res = await api.call('POST', '/routes', body);
    t.equal(res.status, status, `${JSON.stringify(body)}: ${res.status}`);
    t.match(res.json, { error: { code, field, message } }, `${JSON.stringify(body)}: ${res.text.trim()}`);
  }
  t.same((await api.call('GET', '/config')).json, before, 'the refused requests changed nothing');

  t.equal((await api.call('DELETE', `/routes/${encodeURIComponent('198.51.100.0/24')}`)).status, 200);
  t.notOk((await api.call('GET', '/routes')).json.some((r: { prefix: string }) => r.prefix === '198.51.100.0/24'), 'removed');
  t.match(await api.call('DELETE', `/routes/${encodeURIComponent('198.51.100.0/24')}`), { status: 404, json: { error: { code: 'VR_NOT_FOUND' } } });

  // Changes made at the same time all land, applied together; a bad one among them fails alone.
  const applies = () => (vr.stderr().match(/reloaded from /g) ?? []).length;
  const appliedBefore = applies();
  const many = Array.from({ length: 50 }, (_, k) => ({ prefix: `10.200.${k}.0/24`, via: '10.0.2.3' }));
  const answers = await Promise.all(many.map((r) => api.call('POST', '/routes', r)));
  t.same(answers.map((a) => a.status), many.map(() => 200), '50 routes posted at once: all accepted');
  const routes = (await api.call('GET', '/routes')).json as { prefix: string }[];
  t.equal(many.filter((r) => routes.some((x) => x.prefix === r.prefix)).length, 50, 'and all 50 are in force');
  t.ok(applies() - appliedBefore < 50, `applied in groups: ${applies() - appliedBefore} applies for 50 changes`);
  t.same(answers[7].json.diff, [{ key: 'routes', added: [many[7]], removed: [] }], 'each answer tells its own change, not its group\'s');

  // Many changes in one request.
  const batch = await api.call('PATCH', '/routes', { add: [{ prefix: '10.202.0.0/24', via: '10.0.2.3' }, { prefix: '10.202.1.0/24', via: '10.0.2.3' }], remove: ['10.200.0.0/24', '10.200.1.0/24'] });
  t.match(batch, { status: 200, json: { mode: 'live', diff: [{ key: 'routes', added: [{ prefix: '10.202.0.0/24' }, { prefix: '10.202.1.0/24' }], removed: [{ prefix: '10.200.0.0/24' }, { prefix: '10.200.1.0/24' }] }] } });
  const afterBatch = ((await api.call('GET', '/routes')).json as { prefix: string }[]).map((r) => r.prefix);
  t.ok(afterBatch.includes('10.202.1.0/24') && !afterBatch.includes('10.200.1.0/24'), 'PATCH /routes added and removed in one change');
  t.match(await api.call('PATCH', '/routes', { add: [{ prefix: '10.203.0.0/24', via: '10.0.2.3' }, { prefix: '10.203.1.0/24', via: '172.16.0.1' }] }), { status: 400, json: { error: { code: 'VR_CONFIG', field: 'add[1].via' } } }, 'a refused route named by its place in "add"');
  t.match(await api.call('PATCH', '/routes', { remove: ['10.99.0.0/24'] }), { status: 404, json: { error: { code: 'VR_NOT_FOUND', field: 'remove[0]' } } });
  t.notOk(((await api.call('GET', '/routes')).json as { prefix: string }[]).some((r) => r.prefix === '10.203.0.0/24'), 'a refused batch changes nothing');
  await api.call('PATCH', '/routes', { remove: ['10.202.0.0/24', '10.202.1.0/24', '10.200.0.0/24'].filter((p) => afterBatch.includes(p)) });
  many.splice(0, 2);
  const mixed = await Promise.all([
    api.call('POST', '/routes', { prefix: '10.201.1.0/24', via: '10.0.2.3' }),
    api.call('POST', '/routes', { prefix: '10.201.0.0/24', via: '172.16.0.1' }),
    api.call('POST', '/routes', { prefix: '10.201.2.0/24', via: '10.0.2.3' }),
  ]);
  t.same(mixed.map((a) => a.status), [200, 400, 200], 'a bad change among good ones fails alone');
  t.match(mixed[1].json, { error: { code: 'VR_CONFIG', field: 'via' } });
  for (const prefix of [...many.map((r) => r.prefix), '10.201.1.0/24', '10.201.2.0/24']) await api.call('DELETE', `/routes/${encodeURIComponent(prefix)}`);

  const cores = structuredClone(before);
  cores.pmd = { cores: [0] };
  t.match(await api.call('PUT', '/config', cores), { status: 400, json: { error: { code: 'VR_NEEDS_RESTART', field: 'pmd' } } });

  const acl = await api.call('PUT', '/acl', { rules: [{ action: 'deny', protocol: 'udp', dstPort: 53 }], default: 'permit' });
  t.match(acl, { status: 200, json: { mode: 'live', plugins: ['acl'] } });
  t.match(await api.call('PUT', '/acl', { rules: [{ action: 'drop' }] }), { status: 400, json: { error: { code: 'VR_CONFIG', field: 'rules[0].action' } } }, 'named by its place in the request\'s rules');
  t.ok(vr.alive());
});

t.test('a change refused at its last step leaves the tables as the config in force says', async (t) => {
  const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01' };
  const GUEST = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b' };
  const ports = ROUTED.ports.map((p) => (p.name === 'a' || p.name === 'b' ? { ...p, routerMac: ROUTER[p.name] } : p));
  const statics = [{ address: '10.0.1.2', mac: GUEST.a, port: 'a' }, { address: '10.0.2.2', mac: GUEST.b, port: 'b' }];
  const vr = await startVrouter({ ...ROUTED, ports, neighbours: statics });
  t.teardown(() => vr.stop());
  const api = client(vr);
  const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB)];
  // Whether a packet from a to `dst` leaves by b: a packet to 192.0.2.1 (the config's route
  // via b) follows it, and once that one is out, the first is out too or never will be.
  let marks = 0;
  const forwarded = async (dst: string) => {
    const mark = ++marks;
    const udp = (to: string, srcPort: number) => udp4({ src: '10.0.1.2', dst: to, srcPort, dstPort: 9, payload: 20, srcMac: GUEST.a, dstMac: ROUTER.a });
    await a.send([udp(dst, 5000 + mark), udp('192.0.2.1', 6000 + mark)]);
    await waitFor(`mark ${mark} on b`, () => b.poll().some((f) => f.ip?.dst === '192.0.2.1' && f.l4?.srcPort === 6000 + mark) || undefined, 5000);
    return b.poll().some((f) => f.ip?.dst === dst && f.l4?.srcPort === 5000 + mark);
  };
  const before = (await api.call('GET', '/config')).json;
  // The sockets of new ports are made after the tables are prepared, and the ratelimit
  // stage prepares after the routing stage: a route changed in place, or a table compiled
  // whole (a /7), then the change refused, is undone.
  const unmakeable = [...before.ports, { name: 'e', socket: `${vr.dir}/config.json/e.sock` }];
  const refusals: [string, string, Record<string, unknown>, string][] = [
    ['198.51.100.0/24', '198.51.100.1', { ports: unmakeable, policers: [{ name: 'p', cir: '1mbit', apply: [{ inPort: 'a' }] }] }, 'ports'],
    ['100.0.0.0/7', '100.0.0.1', { ports: unmakeable }, 'ports'],
    ['100.0.0.0/7', '100.0.0.1', { policers: [{ name: 'p', cir: '1mbit', apply: [{ inPort: 'zz' }] }] }, 'policers[0].apply[0].inPort'],
  ];
  for (const [prefix, probe, more, field] of refusals) {
    const refused = await api.call('PUT', '/config', { ...before, routes: [...before.routes, { prefix, via: '10.0.2.2' }], ...more });
    t.match(refused, { status: 400, json: { error: { field } } }, `${prefix}, refused for ${field}: ${refused.text.trim()}`);
    t.same((await api.call('GET', '/config')).json, before, 'the config in force stays');
    t.notOk(await forwarded(probe), `${prefix} is not in the tables the PMDs read`);
  }
  // Directories made for a new port's socket go with the port: refused, or removed later.
  const made = join(vr.dir, 'made');
  const twoNew = [...before.ports, { name: 'e', socket: join(made, 'sub', 'e.sock') }, { name: 'f', socket: `${vr.dir}/config.json/f.sock` }];
  t.match(await api.call('PUT', '/config', { ...before, ports: twoNew }), { status: 400, json: { error: { field: 'ports' } } }, 'a change whose second new socket cannot be made is refused');
  t.notOk(existsSync(made), 'and the directories made for the first are gone');
  t.match(await api.call('POST', '/ports', { name: 'e', socket: join(made, 'sub', 'e.sock') }), { status: 200 });
  t.ok(existsSync(join(made, 'sub', 'e.sock')), 'a port added makes the directories of its socket');
  t.match(await api.call('DELETE', '/ports/e'), { status: 200 });
  t.notOk(existsSync(made), 'and they go with it');
  t.same((await api.call('GET', '/config')).json, before, 'the config is as before');
  // A later change lands in the tables the PMDs read.
  const later = [...before.routes, { prefix: '100.0.0.0/7', via: '10.0.2.2' }, { prefix: '198.18.0.0/24', via: '10.0.2.2' }];
  t.match(await api.call('PUT', '/config', { ...before, routes: later }), { status: 200 });
  t.ok(await forwarded('198.18.0.1'), 'a route added after it is in the tables in force');
  t.ok(await forwarded('100.0.0.1'), 'and the /7 too');
  t.match(await api.call('PUT', '/config', before), { status: 200 });

  // Static neighbours: every entry checked before any is written; one removed is gone.
  const addresses = async () => ((await api.call('GET', '/neighbours')).json as { address: string }[]).map((n) => n.address).sort();
  const more = [{ address: '10.0.2.66', mac: '52:54:00:66:66:66', port: 'b' }, { address: '10.0.9.9', mac: '52:54:00:99:99:99', port: 'c' }];
  t.match(await api.call('PUT', '/config', { ...before, neighbours: [...statics, ...more] }), { status: 400, json: { error: { field: 'neighbours[3].port' } } });
  t.same(await addresses(), ['10.0.1.2', '10.0.2.2'], 'the refused neighbours left nothing');
  t.equal((await api.call('POST', '/neighbours', more[0])).status, 200);
  t.same(await addresses(), ['10.0.1.2', '10.0.2.2', '10.0.2.66']);
  t.equal((await api.call('DELETE', '/neighbours/10.0.2.66')).status, 200);
  t.same(await addresses(), ['10.0.1.2', '10.0.2.2'], 'a static neighbour removed leaves the table');

  // A kept ACL region holds its rules compiled: a new default action does not write it again.
  const compiles = () => (vr.stderr().match(/rules compiled/g) ?? []).length;
  const compiled = compiles();
  t.match(await api.call('PUT', '/acl', { rules: before.acl, default: 'deny' }), { status: 200, json: { mode: 'live' } });
  t.equal(compiles(), compiled, 'the same rules are not compiled again into the region the PMDs read');
  t.ok(vr.alive());
});

t.test('the whole config: dry run, and commit-confirmed that rolls back', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const api = client(vr);
  const before = (await api.call('GET', '/config')).json;
  const next = { ...structuredClone(before), routes: [...before.routes, { prefix: '203.0.113.0/24', blackhole: true }] };
  const dry = await api.call('PUT', '/config?dryRun=1', next);
  t.match(dry, { status: 200, json: { mode: 'live', dryRun: true, diff: [{ key: 'routes', added: [{ prefix: '203.0.113.0/24', blackhole: true }] }] } });
  t.same((await api.call('GET', '/config')).json, before, 'a dry run changes nothing');
  const unreachable = { ...structuredClone(before), routes: [...before.routes, { prefix: '198.51.100.0/24', via: '10.9.9.9' }] };
  const refusal = (await api.call('PUT', '/config', unreachable)).json;
  t.match(refusal, { error: { code: 'VR_CONFIG', field: `routes[${before.routes.length}].via` } }, 'a gateway in no connected subnet: refused by the routing stage as it prepares');
  t.same((await api.call('PUT', '/config?dryRun=1', unreachable)).json, refusal, 'and by a dry run the same: it prepares the tables too, in memory of its own');
  t.match(await api.call('PUT', '/config?dryrun=1', next), { status: 400, json: { error: { code: 'VR_INVALID', field: 'dryrun', message: /takes only dryRun, confirm/ } } }, 'a misspelt dryRun: refused, not applied');
  t.match(await api.call('PUT', '/config?dryRun=yes', next), { status: 400, json: { error: { field: 'dryRun' } } });
  t.match(await api.call('POST', '/routes?dryRun=1', { prefix: '203.0.113.0/24', blackhole: true }), { status: 400, json: { error: { field: 'dryRun', message: /takes no query parameter/ } } });
  // Written out: JSON.stringify of 20,000 levels overflows the stack here as it did there.
  const deep = `{"prefix":${'['.repeat(20_000)}"10.0.0.0/8"${']'.repeat(20_000)},"via":"10.0.2.3"}`;
  t.match(await api.call('POST', '/routes', deep), { status: 400, json: { error: { code: 'VR_INVALID', field: /^prefix(\[0\]){63}$/, message: 'nested more than 64 deep' } } }, 'a value nested 20,000 deep: refused, naming where');
  t.match(await api.call('POST', '/routes', '{"prefix":"203.0.113.0/24","via":"10.0.2.3","prefix":"198.51.100.0/24"}'), { status: 400, json: { error: { code: 'VR_INVALID', field: 'prefix', message: /given twice/ } } }, 'a key given twice: refused, naming it');
  t.same((await api.call('GET', '/config')).json, before, 'none of them changed anything');
  const confirmed = await api.call('PUT', '/config?confirm=1', next);
  t.match(confirmed, { status: 200, json: { mode: 'live', rollbackInSeconds: 1 } });
  t.same((await api.call('GET', '/config')).json, next, 'applied');
  await waitFor('the roll-back', () => /rollback: the change was not confirmed in time/.test(vr.stderr()) || undefined, 5000);
  t.same((await api.call('GET', '/config')).json, before, 'the config in force is the old one again');
  t.pass('without a confirm, the old config came back');
  t.match(await api.call('PUT', '/config?confirm=30', next), { status: 200 });
  t.match(await api.call('POST', '/config/confirm'), { status: 200, json: { confirmed: true } });
  t.match(await api.call('POST', '/config/confirm'), { status: 404 });
  t.same((await api.call('GET', '/config')).json, next, 'confirmed: it stays');
  // A reload replaces a change waiting for its confirm with the file: nothing to roll back.
  const third = { ...structuredClone(next), routes: [...next.routes, { prefix: '198.51.100.0/24', blackhole: true }] };
  t.match(await api.call('PUT', '/config?confirm=1', third), { status: 200 });
  t.match(await api.call('POST', '/reload'), { status: 200 });
  t.match(vr.stderr(), /the change waiting for its confirm is replaced by \S+config\.json: no rollback/, 'said in the log');
  // Well past the 1 s the change waited for its confirm: a rollback left armed would be late on a busy machine, not absent.
  await new Promise((r) => setTimeout(r, 3000));
  t.notMatch(vr.stderr(), /rollback: the change was not confirmed in time[\s\S]*rollback: the change was not confirmed in time/, 'no second rollback');
  t.same((await api.call('GET', '/config')).json, before, 'the file\'s config stays in force');
  t.match(await api.call('POST', '/config/confirm'), { status: 404 });
});

t.test('refusals name the field as the request does, and a change is checked in its turn', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const api = client(vr);
  const before = (await api.call('GET', '/config')).json;
  const patched = await api.call('PATCH', '/counters');
  t.equal(patched.headers.allow, 'GET', 'a 405 says which methods the resource takes');
  t.match(await api.call('POST', '/neighbours', { address: '10.0.2.9', mac: '52:54:00:00:02:09' }), { status: 400, json: { error: { code: 'VR_INVALID', field: 'port', message: /got nothing/ } } }, 'a missing key: named');
  t.match(await api.call('PATCH', '/routes', { add: [{ via: '10.0.2.3' }] }), { status: 400, json: { error: { field: 'add[0].prefix' } } }, 'a missing key in a list entry: named with its place');
  t.match(await api.call('DELETE', '/routes/not-a-prefix'), { status: 400, json: { error: { code: 'VR_INVALID', field: 'prefix' } } }, 'not a prefix: 400, not 404');
  t.match(await api.call('PATCH', '/routes', { remove: ['x'] }), { status: 400, json: { error: { code: 'VR_INVALID', field: 'remove[0]' } } });
  t.match(await api.call('DELETE', '/neighbours/nowhere'), { status: 400, json: { error: { code: 'VR_INVALID', field: 'address' } } });
  t.match(await api.call('GET', '/plugins/nope/routes'), { status: 404, json: { error: { field: 'name' } } });
  t.match(await api.call('GET', '/plugins/routing/nope'), { status: 404, json: { error: { field: 'table' } } });
  t.match(await api.call('POST', '/reload', { dryRun: true }), { status: 400, json: { error: { code: 'VR_INVALID', message: /takes no body/ } } }, 'a body where none is taken: refused, not ignored');
  t.match(await api.call('PUT', '/config?dryRun=1&confirm=60', before), { status: 400, json: { error: { field: 'confirm' } } }, 'a dry run with a confirm: refused');
  t.match(await api.call('PUT', '/acl', { rules: [{ action: 'permit' }, { action: 'deny', protocol: 'tcp', dstPort: '90-80' }] }), { status: 400, json: { error: { code: 'VR_CONFIG', field: /^rules\[1\]\.dstPort/ } } }, 'an ACL rule refused: named by its place in the request\'s rules');
  t.same((await api.call('GET', '/config')).json, before, 'none of them changed anything');

  // Two removals of the same route at once: one removes it, the other finds nothing in its turn.
  const prefix = encodeURIComponent('192.0.2.0/24');
  const both = await Promise.all([api.call('DELETE', `/routes/${prefix}`), api.call('DELETE', `/routes/${prefix}`)]);
  t.same(both.map((r) => r.status).sort(), [200, 404], 'one 200, one 404');
  t.match(both.find((r) => r.status === 200)!.json.diff, [{ key: 'routes', removed: [{ prefix: '192.0.2.0/24' }] }]);
  // Two neighbours added at once: each answer tells its own.
  const added = await Promise.all(['10.0.2.21', '10.0.2.22'].map((address, k) => api.call('POST', '/neighbours', { address, mac: `52:54:00:00:02:2${k}`, port: 'b' })));
  t.same(added.map((r) => r.status), [200, 200]);
  t.same(added.map((r) => r.json.diff), [[{ key: 'neighbours', added: [{ address: '10.0.2.21', mac: '52:54:00:00:02:20', port: 'b' }], removed: [] }], [{ key: 'neighbours', added: [{ address: '10.0.2.22', mac: '52:54:00:00:02:21', port: 'b' }], removed: [] }]], 'each its own diff');
});

t.test('/metrics passes promtool', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  t.equal((await client(vr).call('POST', '/neighbours', { address: '10.0.1.2', mac: '52:54:00:12:12:12', port: 'a' })).status, 200);
  const res = await client(vr).call('GET', '/metrics');
  t.equal(res.status, 200);
  t.match(res.text, /vrouter_plugin_state\{plugin="routing",name="neighbours_static"\} 1\n/, 'neighbours by state');
  t.match(res.text, /vrouter_plugin_state\{plugin="routing",name="neighbours_reachable"\} 0\n/);
  t.match(res.text, /vrouter_port_rx_packets_total\{port="a"\} 0/);
  t.match(res.text, /vrouter_queue_tx_bytes_total\{port="a",queue="0"\} 0/, 'per queue pair');
  t.match(res.text, /vrouter_plugin_events_total\{port="a",plugin="routing",counter="routed"\} 0/);
  t.match(res.text, /vrouter_plugin_state\{plugin="routing",name="routes"\} 4/, 'table sizes');
  t.match(res.text, /vrouter_pmd_busy_seconds_total\{pmd="0",cpu="1"\} \d/, 'PMD load');
  t.match(res.text, /vrouter_plugin_state\{plugin="acl",name="rules"\} 1/);
  t.match(res.text, /vrouter_acl_rule_hits_total\{rule="0",action="deny"\} 0/, 'ACL rule hits');
  t.match(res.text, /vrouter_acl_rule_hits_total\{rule="default",action="permit"\} 0/);
  t.match(res.text, /vrouter_policer_packets_total\{policer="p",colour="green"\} 0/, 'policer colours');
  const check = spawnSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8' });
  if (check.error) t.fail(`promtool cannot run (Debian package prometheus, installed by scripts/setup-peers.sh): ${check.error.message}`);
  else t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
});

t.test("/metrics with an operator plugin's odd gauges: a value that is no number is left out, one that throws costs its own gauges, Infinity is +Inf", async (t) => {
  const plugin = fileURLToPath(new URL('../support/plugins/odd-gauges.ts', import.meta.url));
  const vr = await startVrouter({ ...ROUTED, pipeline: [...ROUTED.pipeline, 'odd', 'broken'], plugins: { odd: { path: plugin }, broken: { path: plugin, throws: true } } });
  t.teardown(() => vr.stop());
  const res = await client(vr).call('GET', '/metrics');
  t.equal(res.status, 200, 'answered');
  t.match(res.text, /vrouter_plugin_state\{plugin="odd",name="items"\} 3\n/);
  t.match(res.text, /vrouter_plugin_state\{plugin="odd",name="unbounded"\} \+Inf\n/);
  t.notMatch(res.text, /name="text"/, 'a string is left out');
  t.notMatch(res.text, /plugin="broken",name=/, "the plugin that throws has no gauges; the others' are there");
  t.match(res.text, /vrouter_plugin_state\{plugin="routing",name="routes"\} 4/);
  t.match(vr.stderr(), /broken: gauges\(\) threw, its gauges left out: no gauges today/);
  const check = spawnSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8' });
  if (check.error) t.fail(`promtool cannot run (Debian package prometheus, installed by scripts/setup-peers.sh): ${check.error.message}`);
  else t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
});

t.test('TCP with a token: reads are open, changes need it', async (t) => {
  const port = 20000 + (process.pid % 20000);
  const vr = await startVrouter({ ...ROUTED, admin: { listen: `127.0.0.1:${port}`, tokenFile: '{dir}/token' } }, 15000, (dir) => writeFileSync(join(dir, 'token'), 'a-token-long-enough-1234\n'));
  t.teardown(() => vr.stop());
  const api = client(vr, `http://127.0.0.1:${port}`);
  t.equal((await api.call('GET', '/ports')).status, 200);
  t.match(await api.call('GET', '/ports/a/capture?count=1&seconds=1'), { status: 401, json: { error: { code: 'VR_UNAUTHORIZED' } } }, 'a capture shows guests\' traffic: it needs the token too');
  t.match(await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.3' }), { status: 401, json: { error: { code: 'VR_UNAUTHORIZED' } } });
  t.match(await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.3' }, { authorization: 'Bearer wrong' }), { status: 401 });
  t.match(await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.3' }, { authorization: 'Bearer a-token-long-enough-1235' }), { status: 401 }, 'a token of the same length, one character off');
  t.match(await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.3' }, { authorization: 'Bearer a-token-long-enough-1234' }), { status: 200 });
  t.match(vr.stderr(), /the admin token file .*token can be read by other users \(mode 0644\): chmod 600 it/, 'a token file others can read is pointed out');

  // What a web page in a browser on the host can send: refused, token or not.
  const token = { authorization: 'Bearer a-token-long-enough-1234' };
  t.match(await api.call('POST', '/routes', { prefix: '198.51.100.0/25', via: '10.0.2.3' }, { ...token, origin: 'http://example.com' }), { status: 403, json: { error: { code: 'VR_FORBIDDEN', message: /web page/ } } }, "a page's POST (Origin): 403");
  t.match(await api.call('GET', '/config', undefined, { 'sec-fetch-site': 'cross-site' }), { status: 403, json: { error: { code: 'VR_FORBIDDEN' } } }, "a page's GET (Sec-Fetch-Site: cross-site): 403");
  t.match(await api.call('GET', '/config', undefined, { host: `rebound.example:${port}` }), { status: 403, json: { error: { code: 'VR_FORBIDDEN', message: /loopback/ } } }, 'a name rebound to 127.0.0.1 (Host): 403');
  const listed = (await api.call('GET', '/routes')).json as { prefix: string }[];
  t.ok(Array.isArray(listed) && listed.some((r) => r.prefix === '198.51.100.0/24') && !listed.some((r) => r.prefix === '198.51.100.0/25'), 'the refused route is not there (the one added before is)');
  t.equal((await api.call('GET', '/ports', undefined, { 'sec-fetch-site': 'none' })).status, 200, 'a URL typed in the address bar is answered');
  for (const host of [`localhost:${port}`, `localhost.:${port}`, `[0:0:0:0:0:0:0:1]:${port}`, `127.0.0.2:${port}`]) {
    t.equal((await api.call('GET', '/ports', undefined, { host })).status, 200, `and a request to ${host}`);
  }
});

t.test('a second vrouter on the same sockets takes none of them from the first', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  // Started by mistake on the same config: it stops, saying why, and the first keeps them all.
  const second = spawnSync(process.execPath, [VROUTER_BIN, '--config', join(vr.dir, 'config.json')], { encoding: 'utf8', env: daemonEnv(), timeout: 30000 });
  t.not(second.status, 0, 'the second one stops');
  t.match(second.stderr, /is a socket in use/, `and says why: ${second.stderr.split('\n').find((l) => /in use/.test(l))}`);
  t.equal((await client(vr).call('GET', '/ports')).status, 200, 'the first one\'s admin endpoint answers');
  const device = await startDevice(vr.sockets.a);
  device.close();
  t.pass('and its ports take frontends');
  t.ok(vr.alive());
});
