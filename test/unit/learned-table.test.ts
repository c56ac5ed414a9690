// A route source's table: netlink messages in, routes as the routing stage takes them out.
import t from 'tap';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LearnedTable, MAX_HOPS, MAX_ROUTES, MAX_ROUTES_PER_PREFIX, prefixText } from '../../src/control/learned-table.ts';
import type { NexthopEvent, RouteEvent } from '../../src/sys/netlink.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The prefixes the table says changed, as text, in order. */
const changed = (table: LearnedTable) => [...table.takeChanged()].map(prefixText).sort();

const route = (over: Partial<RouteEvent>): RouteEvent => ({
  kind: 'route', op: 'add', family: 4, prefix: '10.60.0.0/24', nexthops: [], nhid: null, metric: 20, table: 254, protocol: 186, type: 'unicast', ...over,
});
const nexthop = (over: Partial<NexthopEvent>): NexthopEvent => ({ kind: 'nexthop', op: 'add', id: 1, via: null, ifindex: 0, blackhole: false, group: [], ...over });
const link = (ifindex: number, name: string) => ({ kind: 'link' as const, op: 'add' as const, ifindex, name, up: true, carrier: true, mac: null, mtu: 1500 });

t.test('routes through a mirror name its port; others resolve by their gateway', async (t) => {
  const table = new LearnedTable('netlink ns1', new Map([['up', 'uplink']]));
  table.apply([link(5, 'up'), link(6, 'dummy0')]);
  t.ok(table.apply([route({ nexthops: [{ via: '10.77.0.2', ifindex: 5, weight: 1 }] })]), 'a change');
  table.apply([route({ prefix: '10.61.0.0/24', nexthops: [{ via: '10.9.0.2', ifindex: 6, weight: 1 }] })]);
  t.same(table.learned().routes, [
    { prefix: '10.60.0.0/24', metric: 20, source: 'netlink ns1', via: ['10.77.0.2'], port: 'uplink' },
    { prefix: '10.61.0.0/24', metric: 20, source: 'netlink ns1', via: ['10.9.0.2'] },
  ]);
});

t.test("a router advertisement's doings on a mirror are not learned: addresses with a lifetime, routes Linux made from it", async (t) => {
  const table = new LearnedTable('netlink ns1', new Map([['up', 'uplink']]));
  table.apply([link(5, 'up')]);
  const address = (a: string, expires?: boolean) => ({ kind: 'address' as const, op: 'add' as const, family: 6 as const, address: a, prefixLength: 64, ifindex: 5, ...(expires ? { expires } : {}) });
  table.apply([address('2001:db8:7::1'), address('2001:db8:9::5054:ff:fe00:a', true)]);
  t.same([...table.learnedAddresses()], [['uplink', ['2001:db8:7::1/64']]], 'the address given for good, not the one SLAAC made');
  table.apply([route({ prefix: '::/0', family: 6, protocol: 9, nexthops: [{ via: 'fe80::1', ifindex: 5, weight: 1 }] })]);
  t.same(table.learned().routes, [], 'nor the default route through the advertising router');
  t.match(table.learned().leftOut, { kernel: 1 });
});

t.test('ECMP, nexthop objects and groups, blackholes; Linux\'s own and other tables left out', async (t) => {
  const table = new LearnedTable('netlink ns1', new Map([['up', 'uplink']]));
  table.apply([link(5, 'up')]);
  table.apply([
    route({ prefix: '10.1.0.0/16', nexthops: [{ via: '10.77.0.2', ifindex: 5, weight: 1 }, { via: '10.77.0.3', ifindex: 5, weight: 1 }] }),
    nexthop({ id: 7, via: '10.77.0.2', ifindex: 5 }),
    nexthop({ id: 8, via: '10.77.0.3', ifindex: 5 }),
    nexthop({ id: 9, group: [{ id: 7, weight: 1 }, { id: 8, weight: 1 }] }),
    route({ prefix: '10.2.0.0/16', nhid: 9 }),
    route({ prefix: '10.3.0.0/16', nhid: 42 }),
    route({ prefix: '192.0.2.0/24', type: 'blackhole' }),
    route({ prefix: '10.77.0.0/30', protocol: 2, nexthops: [{ via: null, ifindex: 5, weight: 1 }] }),
    route({ prefix: '10.4.0.0/16', table: 100, nexthops: [{ via: '10.77.0.2', ifindex: 5, weight: 1 }] }),
    route({ prefix: '10.5.0.0/16', nexthops: [{ via: 'fe80::1', ifindex: 5, weight: 1 }] }),
    route({ prefix: '10.6.0.0/16', nexthops: [{ via: null, ifindex: 5, weight: 1 }] }),
  ]);
  const { routes, leftOut } = table.learned();
  t.same(routes.map((r) => [r.prefix, r.via ?? null, r.port ?? null, r.blackhole ?? false]), [
    ['10.1.0.0/16', ['10.77.0.2', '10.77.0.3'], 'uplink', false],
    ['10.2.0.0/16', ['10.77.0.2', '10.77.0.3'], 'uplink', false],
    ['192.0.2.0/24', null, null, true],
    ['10.6.0.0/16', null, 'uplink', false],
  ]);
  t.same(leftOut, { 'unknown nexthop': 1, kernel: 1, 'gateway family': 1 }, 'the rest counted by why (another table is not kept at all)');
  table.apply([nexthop({ id: 42, via: '10.77.0.9', ifindex: 5 })]);
  t.ok(table.learned().routes.some((r) => r.prefix === '10.3.0.0/16'), 'a route whose nexthop object came later resolves then');
});

t.test('groups of groups do not multiply: each member once, and no route of more than 1,024 gateways', async (t) => {
  // One FPM frame can hold a group of 8,000 members; 8,000 of those, each 8,000 times, were
  // 64 million hops for one route, built in the supervisor.
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  const k = 2000;
  const repeated = Array.from({ length: k }, () => ({ id: 2, weight: 1 }));
  table.apply([nexthop({ id: 3, via: '10.0.0.3' }), nexthop({ id: 2, group: Array.from({ length: k }, () => ({ id: 3, weight: 1 })) }), nexthop({ id: 1, group: repeated }), route({ prefix: '10.9.0.0/16', nhid: 1 })]);
  const started = performance.now();
  t.same(table.learned().routes.map((r) => [r.prefix, r.via]), [['10.9.0.0/16', ['10.0.0.3']]], 'the same member repeated counts once');
  t.ok(performance.now() - started < 500, `resolved in ${(performance.now() - started).toFixed(0)} ms`);
  const members = Array.from({ length: 1100 }, (_, i) => nexthop({ id: 100 + i, via: `10.1.${i >> 8}.${i & 255}` }));
  table.apply([...members, nexthop({ id: 50, group: members.slice(0, 600).map((m) => ({ id: m.id, weight: 1 })) }), nexthop({ id: 51, group: members.slice(600).map((m) => ({ id: m.id, weight: 1 })) }), nexthop({ id: 52, group: [{ id: 50, weight: 1 }, { id: 51, weight: 1 }] }), route({ prefix: '10.8.0.0/16', nhid: 52 })]);
  t.match(table.learned().leftOut, { 'unknown nexthop': 1 }, 'a route of 1,100 gateways is left out');
});

t.test('groups of the same groups, shared by many routes: walked within a budget, also after a gateway changes', async (t) => {
  // 1,000 gateways; 1,000 groups of all of them; 1,000 groups of all those; a route to each
  // of the last: 10^9 steps to resolve in all, one gateway sent again to do it again.
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  const n = 1000;
  const ids = (from: number) => Array.from({ length: n }, (_, i) => ({ id: from + i, weight: 1 }));
  const gateways = Array.from({ length: n }, (_, i) => nexthop({ id: 1 + i, via: `10.1.${i >> 8}.${i & 255}` }));
  const inner = Array.from({ length: n }, (_, i) => nexthop({ id: 10_000 + i, group: ids(1) }));
  const outer = Array.from({ length: n }, (_, i) => nexthop({ id: 20_000 + i, group: ids(10_000) }));
  const routes = Array.from({ length: n }, (_, i) => route({ prefix: `10.${100 + (i >> 8)}.${i & 255}.0/24`, nhid: 20_000 + i }));
  table.apply([...gateways, ...inner, ...outer, ...routes, nexthop({ id: 30_000, group: ids(1).slice(0, 8) }), route({ prefix: '10.99.0.0/16', nhid: 30_000 })]);
  for (const round of ['first', 'after a gateway changed']) {
    const started = performance.now();
    const learned = table.learned();
    const ms = performance.now() - started;
    t.ok(ms < 2000, `${round}: resolved in ${ms.toFixed(0)} ms`);
    const leftOut = learned.leftOut['unknown nexthop'] ?? 0;
    t.ok(leftOut >= n - 10 && leftOut <= n, `${round}: the routes through groups of groups past the budget are left out (${leftOut} of ${n})`);
    t.same(learned.routes.find((r) => r.prefix === '10.99.0.0/16')?.via?.length, 8, `${round}: a route to a group of gateways resolves`);
    table.apply([nexthop({ id: 1, via: '10.1.9.9' })]);
  }
});

t.test("a nexthop object removed takes Linux's IPv4 routes through it with it, as Linux does without a word", async (t) => {
  const table = new LearnedTable('netlink ns1', new Map(), undefined, true);
  table.apply([nexthop({ id: 5, via: '10.9.0.2' }), route({ prefix: '10.50.0.0/16', nhid: 5 }), route({ prefix: '10.51.0.0/16', nhid: 5 }), route({ prefix: '10.52.0.0/16', nexthops: [{ via: '10.9.0.3', ifindex: 0, weight: 1 }] })]);
  changed(table);
  t.ok(table.apply([nexthop({ id: 5, op: 'remove', via: '10.9.0.2' })]), 'a change');
  t.same(changed(table), ['10.50.0.0/16', '10.51.0.0/16'], 'the routes through it changed');
  t.same(table.learned().routes.map((r) => r.prefix), ['10.52.0.0/16'], 'and are gone; the other stays');
  table.apply([nexthop({ id: 5, via: '10.9.0.9' })]);
  t.same(table.learned().routes.map((r) => r.prefix), ['10.52.0.0/16'], 'the id made again brings none of them back');
  // In one batch: removed, made again, a route added through it: the route stays.
  table.apply([nexthop({ id: 5, op: 'remove', via: '10.9.0.9' }), nexthop({ id: 5, via: '10.9.0.8' }), route({ prefix: '10.53.0.0/16', nhid: 5 })]);
  t.same(table.learned().routes.map((r) => [r.prefix, r.via]), [['10.52.0.0/16', ['10.9.0.3']], ['10.53.0.0/16', ['10.9.0.8']]], 'a route added after the removal stays');
  const fpm = new LearnedTable('fpm 127.0.0.1:2620');
  fpm.apply([nexthop({ id: 5, via: '10.9.0.2' }), route({ prefix: '10.50.0.0/16', nhid: 5 }), nexthop({ id: 5, op: 'remove', via: '10.9.0.2' })]);
  t.match(fpm.learned().leftOut, { 'unknown nexthop': 1 }, 'from FPM (not Linux) the route stays, waiting for its nexthop');
});

t.test('nexthop objects removed by the hundred (a flush, a link down): one pass over the routes for the batch', async (t) => {
  const table = new LearnedTable('netlink ns1', new Map(), undefined, true);
  const objects = 400;
  const setup = [];
  for (let id = 1; id <= objects; id++) setup.push(nexthop({ id, via: `10.9.${id >> 8}.${id & 255}` }));
  for (let k = 0; k < 200_000; k++) setup.push(route({ prefix: `${10 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}.0/24`, nhid: 1 + (k % objects) }));
  table.apply(setup);
  changed(table);
  const flush = [];
  for (let id = 1; id < objects; id++) flush.push(nexthop({ id, op: 'remove' }));
  const started = performance.now();
  t.ok(table.apply(flush), 'a change');
  const ms = performance.now() - started;
  t.equal(table.learned().routes.length, 500, 'only the routes through the one object left stay');
  t.equal(changed(table).length, 199_500, 'the others changed, each once');
  // One pass is tens of ms here; a pass per object was 399 of them (seconds).
  t.ok(ms < 1000, `${objects - 1} objects removed in ${ms.toFixed(0)} ms`);
});

t.test('nexthop ids are u32: those of 2^31 and above resolve too', async (t) => {
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  table.apply([7, 3_000_000_000, 0xffffffff].flatMap((id, k) => [nexthop({ id, via: `10.0.0.${k + 1}` }), route({ prefix: `10.${k}.0.0/16`, nhid: id })]));
  t.same(table.learned().routes.map((r) => [r.prefix, r.via]), [['10.0.0.0/16', ['10.0.0.1']], ['10.1.0.0/16', ['10.0.0.2']], ['10.2.0.0/16', ['10.0.0.3']]]);
});

t.test('a mirror\'s link sent again as it was changes no route', async (t) => {
  const table = new LearnedTable('netlink ns1', new Map([['up', 'uplink']]));
  table.apply([link(5, 'up'), ...Array.from({ length: 100 }, (_, k) => route({ prefix: `10.${k}.0.0/16`, nexthops: [{ via: '10.77.0.2', ifindex: 5, weight: 1 }] }))]);
  table.takeChanged();
  table.apply([link(5, 'up')]);
  t.equal(table.takeChanged().size, 0, 'a promiscuity change, or a resync, is not 100 routes changed');
  table.apply([link(5, 'up2')]);
  t.equal(table.takeChanged().size, 100, 'a rename is');
});

t.test('a source keeps at most so many routes (MAX_ROUTES, here 1,000); more are left out and counted', async (t) => {
  t.equal(MAX_ROUTES, 4_000_000, 'four full tables by default');
  const LIMIT = 1000;
  const table = new LearnedTable('fpm 127.0.0.1:2620', new Map(), { held: 0, most: LIMIT });
  const batch = (from: number, n: number) => Array.from({ length: n }, (_, k) => route({ prefix: `${10 + ((from + k) >> 16)}.${((from + k) >> 8) & 255}.${(from + k) & 255}.0/24`, nexthops: [{ via: '192.0.2.1', ifindex: 0, weight: 1 }] }));
  table.apply(batch(0, LIMIT));
  t.equal(table.size, LIMIT, 'filled');
  t.notOk(table.apply(batch(LIMIT, 10)), 'ten more change nothing');
  t.equal(table.size, LIMIT);
  t.match(table.status(), { leftOut: { 'over limit': 10 } }, 'and are counted');
  table.apply([{ ...batch(0, 1)[0], op: 'remove' }]);
  t.ok(table.apply(batch(LIMIT, 1)), 'one removed makes room for one');
});

t.test("what else a peer sends counts against the same limit: nexthop objects, their members, a route's gateways past the first", async (t) => {
  const LIMIT = 1000;
  const limit = { held: 0, most: LIMIT };
  const table = new LearnedTable('fpm 127.0.0.1:2620', new Map(), limit);
  table.apply(Array.from({ length: 2000 }, (_, k) => nexthop({ id: k + 1, via: '192.0.2.1' })));
  t.equal(limit.held, LIMIT, '2,000 nexthop objects: 1,000 kept, the limit reached');
  t.match(table.status(), { leftOut: { 'over limit': 1000 } }, 'the others left out and counted');
  t.notOk(table.apply([route({ prefix: '10.9.0.0/16', nexthops: [{ via: '192.0.2.1', ifindex: 0, weight: 1 }] })]), 'no room for a route either');
  table.apply(Array.from({ length: 1000 }, (_, k) => nexthop({ op: 'remove', id: k + 1 })));
  t.equal(limit.held, 0, 'removed, they give their room back');
  const group = (id: number, members: number) => nexthop({ id, group: Array.from({ length: members }, (_, m) => ({ id: 5000 + m, weight: 1 })) });
  table.apply([group(1, 10)]);
  t.equal(limit.held, 11, 'a group of 10: the object and its members');
  table.apply([group(1, LIMIT)]);
  t.equal(limit.held, 0, 'a group past the limit is left out, and the one it replaced goes');
  t.match(table.status(), { leftOut: { 'over limit': 1002 } }, 'counted with the 1,000 nexthops and the route left out before');
  const hops = (n: number) => Array.from({ length: n }, (_, k) => ({ via: `192.0.${2 + (k >> 8)}.${k & 255}`, ifindex: 0, weight: 1 }));
  t.ok(table.apply([route({ prefix: '10.8.0.0/16', nexthops: hops(4) })]));
  t.equal(limit.held, 4, 'a route of 4 gateways: the route and 3 more');
  t.notOk(table.apply([route({ prefix: '10.7.0.0/16', nexthops: hops(MAX_HOPS + 1) })]), `a route of more than ${MAX_HOPS} gateways is left out`);
  table.clear();
  t.equal(limit.held, 0, 'cleared: everything given back');
});

t.test('a route replaced by one left out goes: past the limit, or listing too many gateways', async (t) => {
  const limit = { held: 0, most: 100 };
  const table = new LearnedTable('fpm 127.0.0.1:2620', new Map(), limit);
  const hops = (n: number, base = 0) => Array.from({ length: n }, (_, k) => ({ via: `192.0.${2 + ((base + k) >> 8)}.${(base + k) & 255}`, ifindex: 0, weight: 1 }));
  table.apply(Array.from({ length: 100 }, (_, k) => route({ prefix: `10.${k}.0.0/16`, nexthops: hops(1) })));
  t.equal(limit.held, 100, 'full');
  t.ok(table.apply([route({ prefix: '10.1.0.0/16', nexthops: hops(1) })]) === false, 'the same route again: nothing changes');
  t.ok(table.apply([route({ prefix: '10.2.0.0/16', nexthops: hops(50, 10) })]), 'replaced by a route of 50 new gateways, past the limit: a change');
  t.same(table.learned().routes.filter((r) => r.prefix === '10.2.0.0/16'), [], 'the route it would have replaced is gone, not kept as it was');
  t.ok(limit.held <= limit.most, `the limit holds (${limit.held} of ${limit.most})`);
  t.ok(table.apply([route({ prefix: '10.3.0.0/16', nexthops: hops(MAX_HOPS + 1) })]), `replaced by one of more than ${MAX_HOPS} gateways: a change`);
  t.same(table.learned().routes.filter((r) => r.prefix === '10.3.0.0/16'), [], 'and it is gone too');
  t.match(table.status(), { leftOut: { 'over limit': 2 } });

  // Gateways taken away one by one from routes sharing a large set: each route is left a
  // set of its own, and those count too.
  table.clear();
  const shared = hops(60, 100);
  t.ok(table.apply(Array.from({ length: 20 }, (_, k) => route({ prefix: `10.${100 + k}.0.0/16`, nexthops: shared }))), '20 routes through one set of 60 gateways');
  t.equal(limit.held, 20 + 59);
  table.apply(Array.from({ length: 20 }, (_, k) => route({ op: 'remove', prefix: `10.${100 + k}.0.0/16`, nexthops: [shared[k]] })));
  t.ok(limit.held <= limit.most, `each left a set of 59 of its own: the limit holds (${limit.held} of ${limit.most}), the routes past it gone`);
  t.ok(table.size < 20 && table.size > 0, `${table.size} of the 20 routes kept`);
});

t.test(`a prefix keeps at most ${MAX_ROUTES_PER_PREFIX} routes (metrics); adding one walks no more than those`, async (t) => {
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  const started = performance.now();
  for (let frame = 0; frame < 40; frame++) table.apply(Array.from({ length: 1250 }, (_, k) => route({ prefix: '10.0.0.0/8', metric: frame * 1250 + k, nexthops: [{ via: '192.0.2.1', ifindex: 0, weight: 1 }] })));
  const ms = performance.now() - started;
  t.equal(table.size, MAX_ROUTES_PER_PREFIX, `50,000 metrics of one prefix: ${MAX_ROUTES_PER_PREFIX} kept`);
  t.match(table.status(), { leftOut: { 'over limit': 50_000 - MAX_ROUTES_PER_PREFIX } });
  t.ok(ms < 2000, `in ${ms.toFixed(0)} ms`);
  t.ok(table.apply([route({ prefix: '10.0.0.0/8', metric: 0, nexthops: [{ via: '192.0.2.9', ifindex: 0, weight: 1 }] })]), 'one of those kept is still replaced');
});

t.test('a sync removes what it did not repeat', async (t) => {
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  table.apply([route({ prefix: '10.1.0.0/16', nexthops: [{ via: '10.0.0.1', ifindex: 0, weight: 1 }] }), route({ prefix: '10.2.0.0/16', nexthops: [{ via: '10.0.0.1', ifindex: 0, weight: 1 }] })]);
  table.apply([{ kind: 'sync-start' }, route({ prefix: '10.2.0.0/16', nexthops: [{ via: '10.0.0.1', ifindex: 0, weight: 1 }] })]);
  t.equal(table.size, 2, 'nothing goes before the sync ends');
  t.ok(table.apply([{ kind: 'sync-end' }]), 'the end of the sync is a change');
  t.same(table.learned().routes.map((r) => r.prefix), ['10.2.0.0/16']);
  table.apply([route({ op: 'remove', prefix: '10.2.0.0/16' })]);
  t.equal(table.size, 0, 'and a removal removes');
});

t.test('a removal that lists one gateway takes that one away (IPv6 multipath)', async (t) => {
  const table = new LearnedTable('netlink ns1');
  const hop = (via: string) => ({ via, ifindex: 0, weight: 1 });
  table.apply([route({ family: 6, prefix: '2001:db8:9::/48', nexthops: [hop('2001:db8::2'), hop('2001:db8::3')] })]);
  table.apply([route({ op: 'remove', family: 6, prefix: '2001:db8:9::/48', nexthops: [hop('2001:db8::2')] })]);
  t.same(table.learned().routes.map((r) => r.via), [['2001:db8::3']]);
  table.apply([route({ op: 'remove', family: 6, prefix: '2001:db8:9::/48', nexthops: [hop('2001:db8::3')] })]);
  t.equal(table.size, 0, 'the last one takes the route');
});

t.test('what changed is told by prefix, once, and only what changed', async (t) => {
  const table = new LearnedTable('fpm 127.0.0.1:2620', new Map([['up', 'uplink']]));
  const via = (address: string, ifindex = 0) => ({ via: address, ifindex, weight: 1 });
  const routes = Array.from({ length: 1000 }, (_, k) => route({ prefix: `10.${100 + (k >> 8)}.${k & 255}.0/24`, nexthops: [via('10.0.0.1')] }));
  table.apply([link(5, 'up'), link(6, 'other'), ...routes]);
  t.equal(changed(table).length, 1000, 'every prefix added');
  t.same(changed(table), [], 'told once');
  t.notOk(table.apply(routes.slice(0, 10)), 'routes sent again as they were are no change');
  t.same(changed(table), []);
  table.apply([route({ prefix: '10.100.3.0/24', nexthops: [via('10.0.0.2')] }), route({ op: 'remove', prefix: '10.100.4.0/24' }), route({ prefix: '10.100.4.0/24', metric: 30, nexthops: [via('10.0.0.1')] })]);
  t.same(changed(table), ['10.100.3.0/24', '10.100.4.0/24'], 'a changed gateway, a removal and an add to the same prefix: each prefix once');
  t.same(table.learned().routes.filter((r) => r.prefix === '10.100.4.0/24').map((r) => r.metric), [30]);
  t.equal(table.size, 1000);

  // Nexthop objects: the routes that use one (or a group holding it) changed, no others.
  table.apply([
    nexthop({ id: 7, via: '10.0.0.7', ifindex: 6 }),
    nexthop({ id: 8, via: '10.0.0.8', ifindex: 6 }),
    nexthop({ id: 9, group: [{ id: 7, weight: 1 }, { id: 8, weight: 1 }] }),
    route({ prefix: '192.0.2.0/24', nhid: 9 }),
    route({ prefix: '198.51.100.0/24', nhid: 8 }),
    route({ prefix: '203.0.113.0/24', nhid: 7 }),
  ]);
  changed(table);
  table.apply([nexthop({ id: 8, via: '10.0.0.88', ifindex: 6 })]);
  t.same(changed(table), ['192.0.2.0/24', '198.51.100.0/24'], 'the routes through object 8, and through the group holding it');
  t.same(table.learned().routes.find((r) => r.prefix === '192.0.2.0/24')?.via, ['10.0.0.7', '10.0.0.88'], 'resolved anew');
  table.apply([link(6, 'other2')]);
  t.same(changed(table), [], 'a link that is no mirror changes no route');
  table.apply([link(5, 'up2')]);
  t.equal(changed(table).length, 1003, 'the mirror\'s link renamed: every route may name its port, all are told');
  t.ok(table.setMirrors(new Map([['up2', 'uplink']])), 'new mirrors are a change');
  t.equal(changed(table).length, 1003, 'of every route');
  t.notOk(table.setMirrors(new Map([['up2', 'uplink']])), 'the same mirrors are none');

  // A sync that repeats all but one, and clear().
  table.mark();
  table.apply(routes.slice(1).filter((r) => r.prefix !== '10.100.4.0/24').map((r) => (r.prefix === '10.100.3.0/24' ? route({ prefix: r.prefix, nexthops: [via('10.0.0.2')] }) : r)));
  table.apply([route({ prefix: '10.100.4.0/24', metric: 30, nexthops: [via('10.0.0.1')] }), nexthop({ id: 7, via: '10.0.0.7', ifindex: 6 }), nexthop({ id: 8, via: '10.0.0.88', ifindex: 6 }), nexthop({ id: 9, group: [{ id: 7, weight: 1 }, { id: 8, weight: 1 }] })]);
  table.apply([route({ prefix: '192.0.2.0/24', nhid: 9 }), route({ prefix: '198.51.100.0/24', nhid: 8 }), route({ prefix: '203.0.113.0/24', nhid: 7 })]);
  t.ok(table.sweep(), 'the sync left one out');
  t.same(changed(table), ['10.100.0.0/24'], 'that one alone went');
  table.clear();
  t.equal(changed(table).length, 1002, 'cleared: every prefix it had');
  t.equal(table.size, 0);
});

t.test('a full table: a million routes kept compactly, and a change costs a change', async (t) => {
  const table = new LearnedTable('fpm 127.0.0.1:2620');
  const gateways = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'];
  const used = () => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const before = used();
  for (let from = 0; from < 1_000_000; from += 10_000) {
    const events = [];
    for (let k = from; k < from + 10_000; k++) events.push(route({ prefix: `${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}.0/24`, nexthops: [{ via: gateways[k & 3], ifindex: 2, weight: 1 }] }));
    table.apply(events);
  }
  t.equal(changed(table).length, 1_000_000);
  const perRoute = (used() - before) / 1_000_000;
  t.ok(perRoute < 80, `${Math.round(perRoute)} bytes a route (heap and typed arrays)`);
  const started = performance.now();
  table.apply([route({ prefix: '1.0.0.0/24', nexthops: [{ via: '10.0.0.9', ifindex: 2, weight: 1 }] })]);
  t.same(changed(table), ['1.0.0.0/24']);
  const ms = performance.now() - started;
  t.ok(ms < 50, `a change is told without a pass over the table (${ms.toFixed(1)} ms)`);
  t.same(table.status(), { routes: 1_000_000, leftOut: {} });
});
