// The routing plugin's prepare() on a running router's shared memory, config after config:
// small changes are made in place in the tables in use, big ones compiled whole, and after
// each the tables send every probed address where a table compiled from scratch for the
// same config does (the same members: kind, interface, gateway), with ECMP groups,
// blackholes, metrics, connected routes and the router's own addresses.
import t from 'tap';
import routing from './index.ts';
import { openFib } from './fib.ts';
import { fibHop } from './fib-hop.ts';
import type { PluginSetup, PortInfo, Topology } from '../../src/pipeline/api.ts';
import type { RoutingConfig } from './config.ts';
import { prng } from '../../test/support/prng.ts';
import { routeDraft } from '../../src/admin/route-edits.ts';

const ports: PortInfo[] = [
  { index: 0, name: 'a', bridge: null, settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: '02:00:00:00:0a:01', mtu: 1500 } },
  { index: 1, name: 'b', bridge: null, settings: { addresses: ['10.0.2.1/24', '2001:db8:2::1/64'], routerMac: '02:00:00:00:0b:01', mtu: 1500 } },
  { index: 2, name: 'c', bridge: 'br0', settings: { mtu: 1500 } },
];
const topology: Topology = { ports, bridges: ['br0'], bridgeSettings: { br0: { addresses: ['10.0.3.1/24'], routerMac: '02:00:00:00:0c:01', mtu: 1500 } }, pmdCount: 1 };
const GATEWAYS4 = ['10.0.1.2', '10.0.1.3', '10.0.2.2', '10.0.2.3', '10.0.2.4', '10.0.3.2'];
const GATEWAYS6 = ['2001:db8:1::2', '2001:db8:1::3', '2001:db8:2::2'];

type RawRoute = Record<string, unknown>;

/** A router's shared memory, kept from one prepare() to the next as the supervisor keeps it. */
function sharedMemory(): Record<string, SharedArrayBuffer> {
  const config = routing.parseConfig!({}) as RoutingConfig;
  return Object.fromEntries(Object.entries(routing.sharedMemory!(config, topology)).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]));
}

/** One route per prefix and metric (a blackhole shares its prefix and metric with no other route). */
function valid(routes: RawRoute[]): RawRoute[] {
  const byKey = new Map(routes.map((r) => [`${r.prefix} ${r.metric ?? 0}`, r]));
  return [...byKey.values()];
}

async function prepare(shared: Record<string, SharedArrayBuffer>, routes: RawRoute[], log: string[]): Promise<Record<string, SharedArrayBuffer>> {
  const setup: PluginSetup<RoutingConfig> = {
    config: routing.parseConfig!({ routes }) as RoutingConfig,
    topology,
    shared,
    fresh: () => true,
    log: { info: (m) => log.push(m), warn: (m) => log.push(m) },
    runJob: async <T>(module: string | URL, input: unknown) => ((await import(String(module))) as { default: (i: unknown) => T }).default(input),
  };
  return { ...shared, ...((await routing.prepare!(setup)) as Record<string, SharedArrayBuffer>) };
}

/** Where a table sends an address: "none", "local", or its group's members. */
const opened = new WeakMap<object, ReturnType<typeof openFib>>();

function hop(regions: Record<string, SharedArrayBuffer>, address: string): string {
  const fib = opened.get(regions) ?? openFib(regions);
  opened.set(regions, fib);
  return fibHop(fib, address);
}

function randomRoute(rand: () => number): RawRoute {
  const v6 = rand() % 3 === 0;
  const length = 8 + (rand() % (v6 ? 121 : 25));
  let prefix: string;
  if (v6) {
    const words = Array.from({ length: 8 }, (_, i) => (i < 2 ? [0x2001, 0x0db8][i] : rand() & 0xffff));
    // Never fe00::/7's top half (link-local) nor ff00::/8 (multicast): no route goes there.
    if (rand() % 4 === 0) words[0] = rand() & 0xfdff;
    const bits = words.map((x, i) => x & (length >= 16 * (i + 1) ? 0xffff : length <= 16 * i ? 0 : (0xffff0000 >>> (length - 16 * i)) & 0xffff));
    prefix = `${bits.map((x) => x.toString(16)).join(':')}/${length}`;
  } else {
    let a = (rand() % 4 === 0 ? rand() : 0x0a000000 | (rand() & 0xffffff)) >>> 0;
    // Never 0/8, 127/8 nor 224/3 (the config refuses routes there): flipped into 64/8, 63/8, 160/3.
    const top = a >>> 24;
    if (top === 0 || top === 127 || top >= 224) a = (a ^ 0x40000000) >>> 0;
    const masked = (a & (-1 << (32 - length))) >>> 0;
    prefix = `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${length}`;
  }
  const gateways = v6 ? GATEWAYS6 : GATEWAYS4;
  const kind = rand() % 8;
  const route: RawRoute = { prefix };
  if (kind === 0) route.blackhole = true;
  else if (kind === 1) route.port = ['a', 'b', 'br0'][rand() % (v6 ? 2 : 3)];
  else if (kind === 2) route.via = [gateways[rand() % gateways.length], gateways[rand() % gateways.length]].filter((g, i, all) => all.indexOf(g) === i);
  else route.via = gateways[rand() % gateways.length];
  if (rand() % 4 === 0) route.metric = 10;
  return route;
}

/** Addresses in, at the edges of, and just outside each route, and the router's own. */
function probes(rand: () => number, routes: RawRoute[]): string[] {
  const out = ['10.0.1.1', '10.0.1.77', '10.0.3.1', '10.0.3.200', '2001:db8:1::1', '2001:db8:2::99', '8.8.8.8', '2a00::1'];
  for (const r of routes) {
    const [address, length] = String(r.prefix).split('/');
    if (address.includes(':')) out.push(address.replace(/::$/, '::1').replace(/:0$/, ':1'), address);
    else {
      const a = address.split('.').reduce((x, y) => x * 256 + Number(y), 0);
      const size = 2 ** (32 - Number(length));
      for (const x of [a, a + size - 1, a - 1, a + size, a + (rand() % size)]) {
        const v = x >>> 0;
        out.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
      }
    }
  }
  return out;
}

t.test('configs applied one after the other: in place or compiled, the tables route as a fresh compile', async (t) => {
  for (const seed of [1, 2, 3]) {
    const rand = prng(seed);
    const shared = sharedMemory();
    const log: string[] = [];
    let routes = valid(Array.from({ length: 300 }, () => randomRoute(rand)));
    let regions = await prepare(shared, routes, log);
    for (let step = 1; step <= 12; step++) {
      const before = log.length;
      if (step === 6) {
        // A big change: more routes than are changed in place at once.
        routes = routes.concat(Array.from({ length: 5000 }, () => randomRoute(rand)));
      } else if (step === 9) {
        routes = [{ prefix: '0.0.0.0/0', via: '10.0.2.2' }, ...routes.slice(0, 400)];
      } else {
        routes = routes.filter((r) => r.prefix === '0.0.0.0/0' || rand() % 6 !== 0);
        for (let k = rand() % 40; k > 0; k--) routes.push(randomRoute(rand));
        for (let k = rand() % 10; k > 0; k--) {
          const i = rand() % routes.length;
          let other = randomRoute(rand);
          while (String(other.prefix).includes(':') !== String(routes[i].prefix).includes(':')) other = randomRoute(rand);
          routes[i] = { ...other, prefix: routes[i].prefix };
        }
        if (step === 4 || step === 11) {
          // Some of the same routes in another order too (a prefix's routes are kept in the
          // config's order); rand() is left to the rest, which stays as it was.
          const at = (seed * 37 + step * 11) % (routes.length - 30);
          routes = [...routes.slice(0, at), ...routes.slice(at, at + 30).reverse(), ...routes.slice(at + 30)];
        }
      }
      routes = valid(routes);
      const next = await prepare(shared, routes, log);
      const how = log.slice(before).join('; ');
      if (step === 6 || step === 9) t.match(how, /routes compiled in/, `seed ${seed}, step ${step}: compiled whole (${how})`);
      else {
        t.match(how, /route changes made in place/, `seed ${seed}, step ${step}: changed in place (${how})`);
        t.equal(next['lpm4-tbl24'], regions['lpm4-tbl24'], 'in the tables in use');
      }
      regions = next;
      const fresh = await prepare(sharedMemory(), routes, []);
      const addresses = probes(rand, routes.slice(-600));
      const wrong = addresses.filter((a) => hop(regions, a) !== hop(fresh, a)).slice(0, 5).map((a) => `${a}: ${hop(regions, a)}, compiled ${hop(fresh, a)}`);
      t.same(wrong, [], `seed ${seed}, step ${step}: ${routes.length} routes, ${addresses.length} addresses routed as by a fresh compile`);
    }
  }
});

t.test('a big table given again as new entries (a PUT, a reload), then a route deleted: it is gone from the tables in use', async (t) => {
  // More entries than are compared in order (MOST_IN_PLACE): the tables compare every prefix's routes.
  const table = Array.from({ length: 5000 }, (_, k) => ({ prefix: `172.${16 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}/32`, via: '10.0.2.2' }));
  const shared = sharedMemory();
  const log: string[] = [];
  const regions = await prepare(shared, table, log);
  t.match(hop(regions, '172.16.0.7'), /^1 1 /, 'via b');
  // The same routes as new objects (a document parsed again), one changed.
  const again = structuredClone(table);
  again[3].via = '10.0.1.2';
  await prepare(shared, again, log);
  t.match(hop(regions, '172.16.0.3'), /^1 0 /, 'the changed one via a, in the same tables');
  // Then one removed as an edit does (the list in force, less an entry).
  const draft = routeDraft({ routes: again });
  draft.remove(['172.16.0.7/32']);
  await prepare(shared, draft.routes as RawRoute[], log);
  t.match(log.at(-1), /route changes made in place/, 'in place');
  t.equal(hop(regions, '172.16.0.7'), 'none', 'the route removed is gone from the tables in use');
  t.equal(hop(regions, '172.16.0.7'), hop(await prepare(sharedMemory(), draft.routes as RawRoute[], []), '172.16.0.7'), 'as a fresh compile has it');
  // And added again, as it was, by the next edit: not refused as a twin of the route removed.
  const next = routeDraft({ routes: draft.routes });
  next.add({ prefix: '172.16.0.7/32', via: '10.0.2.2' });
  await prepare(shared, next.routes as RawRoute[], log);
  t.match(hop(regions, '172.16.0.7'), /^1 1 /, 'added back via b');
});

t.test('a route changed in place is used at once by the tables in use; a refused config changes nothing', async (t) => {
  const shared = sharedMemory();
  const log: string[] = [];
  const regions = await prepare(shared, [{ prefix: '192.0.2.0/24', via: '10.0.2.2' }], log);
  t.match(hop(regions, '192.0.2.9'), /^1 1 /, 'via b');
  await prepare(shared, [{ prefix: '192.0.2.0/24', via: ['10.0.1.2', '10.0.2.2'] }, { prefix: '198.51.100.7/32', blackhole: true }], log);
  t.match(hop(regions, '192.0.2.9'), /^1 0 .*, 1 1 /, 'an ECMP group of a and b, in the same tables');
  t.match(hop(regions, '198.51.100.7'), /^2 /, 'a blackhole');
  await t.rejects(prepare(shared, [{ prefix: '203.0.113.0/24', via: '172.16.0.1' }], log), { field: 'routes[0].via', message: /no connected subnet/ });
  // Found in a change in place: named by its place in the config all the same.
  await t.rejects(
    prepare(shared, [{ prefix: '198.51.100.7/32', blackhole: true }, { prefix: '192.0.2.0/24', via: ['10.0.1.2', '10.0.2.2'] }, { prefix: '203.0.113.0/24', via: ['10.0.1.2', '172.16.0.1'] }], log),
    { field: 'routes[2].via[1]', message: /^routes\[2\]\.via\[1\]: .*no connected subnet/ },
  );
  t.match(hop(regions, '192.0.2.9'), /^1 0 .*, 1 1 /, 'the refused config left the tables as they were');
  t.equal(hop(regions, '203.0.113.1'), 'none');
});

t.test('lists made by route edits (the admin endpoint\'s): parsed from the last parse, the same as parsed afresh, and routed as a fresh compile', async (t) => {
  const rand = prng(7);
  const shared = sharedMemory();
  const log: string[] = [];
  let doc: Record<string, unknown> = { routes: valid(Array.from({ length: 400 }, () => randomRoute(rand))) };
  let regions = await prepare(shared, doc.routes as RawRoute[], log);
  for (let step = 1; step <= 40; step++) {
    const draft = routeDraft((doc = { ...doc }));
    const routes = draft.routes as RawRoute[];
    const gone = Array.from({ length: rand() % 12 }, () => String(routes[rand() % routes.length].prefix));
    draft.remove(gone);
    // New prefixes, and new routes to prefixes already there with a metric of their own:
    // each a valid route (as valid() would keep it).
    const prefixes = new Set(routes.map((r) => String(r.prefix)));
    for (let k = rand() % 12; k > 0; k--) {
      let other = randomRoute(rand);
      if (rand() % 3 !== 0) {
        if (!prefixes.has(String(other.prefix))) draft.add(other);
        prefixes.add(String(other.prefix));
        continue;
      }
      const prefix = String(routes[rand() % routes.length].prefix);
      while (String(other.prefix).includes(':') !== prefix.includes(':')) other = randomRoute(rand);
      draft.add({ ...other, prefix, metric: 100 + 16 * step + k });
    }
    const edited = routing.parseConfig!({ routes: draft.routes }) as RoutingConfig;
    t.same(edited.routes, (routing.parseConfig!({ routes: [...draft.routes] }) as RoutingConfig).routes, `step ${step}: parsed as the list parsed afresh`);
    const before = log.length;
    const next = await prepare(shared, draft.routes as RawRoute[], log);
    t.match(log.slice(before).join('; '), /route changes made in place|^$/, `step ${step}: in place`);
    regions = next;
    const fresh = await prepare(sharedMemory(), [...(draft.routes as RawRoute[])], []);
    const addresses = probes(rand, routes.slice(-200));
    const wrong = addresses.filter((a) => hop(regions, a) !== hop(fresh, a)).slice(0, 5).map((a) => `${a}: ${hop(regions, a)}, compiled ${hop(fresh, a)}`);
    t.same(wrong, [], `step ${step}: ${routes.length} routes, ${addresses.length} addresses routed as by a fresh compile`);
  }
});
