// A route source's table: netlink messages in, routes as the routing stage takes them out.
import t from 'tap';
import { LearnedTable } from '../../src/control/learned-table.ts';
import type { NexthopEvent, RouteEvent } from '../../src/sys/netlink.ts';

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
