// A routed port's Linux mirror without a guest: the TAP interface vrouter makes in the
// mirror's namespace has the port's addresses (given through netlink; IPv6 without DAD),
// and a new MTU for the port is set on the mirror in place, so that what Linux added there
// (a route, as FRR would) stays.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { deleteNamespace } from '../support/netns.ts';
import { waitFor } from '../support/traffic.ts';

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

t.test('a mirror has its port\'s addresses, and takes a new MTU without being made again', async (t) => {
  const netns = `vrmir${process.pid}`;
  t.teardown(() => deleteNamespace(netns));
  const vr = await startVrouter({
    ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], linuxMirror: { netns } }],
    pmd: { cores: [1] },
    pipeline: ['routing'],
  });
  t.teardown(() => vr.stop());
  const show = () => JSON.parse(ip('-j', '-n', netns, 'address', 'show', 'dev', 'a'))[0] as { ifindex: number; mtu: number; addr_info: { local: string; prefixlen: number; tentative?: boolean }[] };
  const mirror = show();
  const has = (local: string, prefixlen: number) => mirror.addr_info.find((a) => a.local === local && a.prefixlen === prefixlen);
  t.ok(has('10.0.1.1', 24), `the port's IPv4 address (${JSON.stringify(mirror.addr_info)})`);
  const v6 = has('2001:db8:1::1', 64);
  t.ok(v6, 'and its IPv6 address');
  t.notOk(v6?.tentative, 'usable at once (no duplicate address detection: it is the router\'s)');
  // Read in the namespace (/proc/sys/net is the reader's), with cat: no procps needed.
  const setting = (name: string) => execFileSync('ip', ['netns', 'exec', netns, 'cat', `/proc/sys/net/ipv6/conf/a/${name}`], { encoding: 'utf8' }).trim();
  t.same([setting('accept_ra'), setting('autoconf')], ['0', '0'], 'it takes no route or address from router advertisements on the link');

  ip('-n', netns, 'route', 'add', '10.70.0.0/16', 'via', '10.0.1.2', 'dev', 'a');
  const admin = adminClient(vr);
  const doc = (await admin.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  doc.ports[0].mtu = 2000;
  const changed = await admin.call('PUT', '/config', doc);
  t.equal(changed.status, 200, `the MTU change applied (${changed.text.slice(0, 200)})`);
  t.match(vr.stderr(), /port a\.linux: TAP interface a: MTU 1500 -> 2000/, 'the mirror took it in place');
  t.match(await admin.call('PUT', '/ports/a.linux/queues/0', { cpu: 1 }), { status: 400, json: { error: { code: 'VR_INVALID', field: 'name', message: /not a port of the config/ } } }, "a mirror's queue cannot be pinned: refused, not \"nothing changed\"");
  const after = show();
  t.same([after.ifindex, after.mtu], [mirror.ifindex, 2000], 'the same interface, with MTU 2000');
  t.match(ip('-n', netns, 'route', 'show', '10.70.0.0/16'), /via 10\.0\.1\.2 dev a/, 'and the route Linux had through it');

  // A route through a nexthop object: Linux removes it with the object without a word.
  ip('-n', netns, 'nexthop', 'add', 'id', '7', 'via', '10.0.1.3', 'dev', 'a');
  ip('-n', netns, 'route', 'add', '10.71.0.0/16', 'nhid', '7');
  const learned = async () => ((await admin.call('GET', '/routes')).json as { prefix: string }[]).some((r) => r.prefix === '10.71.0.0/16');
  await waitFor('the route through the nexthop learned', async () => (await learned()) || undefined, 5000);
  ip('-n', netns, 'nexthop', 'del', 'id', '7');
  t.equal(ip('-n', netns, 'route', 'show', '10.71.0.0/16'), '', 'Linux removed the route with its nexthop');
  await waitFor('the route gone from vrouter too', async () => !(await learned()) || undefined, 5000);
  // The id made again: Linux has no route through it, nor may vrouter.
  ip('-n', netns, 'nexthop', 'add', 'id', '7', 'via', '10.0.1.4', 'dev', 'a');
  ip('-n', netns, 'route', 'add', '10.72.0.0/16', 'nhid', '7');
  await waitFor('a new route through the id learned', async () => ((await admin.call('GET', '/routes')).json as { prefix: string }[]).some((r) => r.prefix === '10.72.0.0/16') || undefined, 5000);
  t.notOk(await learned(), 'the route Linux removed does not come back with the id');
});

t.test("an address Linux adds on a mirror that the config refuses (a route's gateway) is left out: the operator's changes still apply, and it is taken once a change makes room", async (t) => {
  const netns = `vrmis${process.pid}`;
  t.teardown(() => deleteNamespace(netns));
  const vr = await startVrouter({
    ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], linuxMirror: { netns } }],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    routes: [{ prefix: '192.0.2.0/24', via: '10.0.1.5' }],
  });
  t.teardown(() => vr.stop());
  const admin = adminClient(vr);
  const addresses = async () => ((await admin.call('GET', '/ports/a')).json as { addresses: string[] }).addresses;
  ip('-n', netns, 'address', 'add', '10.0.1.5/24', 'dev', 'a');
  await waitFor('the learned address refused', () => /learned routes not applied: .*routes\[0\]\.via/.test(vr.stderr()) || undefined, 5000);
  t.same(await addresses(), ['10.0.1.1/24'], 'left out');
  const added = await admin.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.1.6' });
  t.equal(added.status, 200, `a change of the operator's applies all the same (${added.text.slice(0, 300)})`);
  const removed = await admin.call('DELETE', `/routes/${encodeURIComponent('192.0.2.0/24')}`);
  t.equal(removed.status, 200, 'the route through 10.0.1.5 removed');
  await waitFor('the learned address taken', async () => (await addresses()).includes('10.0.1.5/24') || undefined, 5000);
  t.pass('the address Linux has is taken once the change made room for it');
});
